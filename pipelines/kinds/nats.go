package kinds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// NATS is a NATS JetStream subject, as source (a durable consumer) or sink,
// over watermill-nats/v2 (pkg/nats with JetStream on). The server is named by
// a connection of type nats:
//
//	connections:
//	  bus: {type: nats, url: "nats://127.0.0.1:4222", token_file: /run/secrets/nats}
//	pipelines:
//	  in:  {from: {type: nats, connection: bus, subject: orders.eu, stream: ORDERS, durable: loombridge_in}, ...}
//	  out: {..., to: {bus: {type: nats, connection: bus, subject: audit.all, stream: AUDIT}}}
//
// Rooms, subjects and streams are mapped explicitly: subject is required on
// both sides (a room's name is not used as a subject), and stream names the
// JetStream stream holding it (default: the subject with every character but
// letters, digits, _ and - made _, since stream names cannot hold '.'). With
// auto_provision (the default) the stream is created once, at start, when it
// does not exist, with the subject as its only subject; an existing stream is
// used as it is. The UUID travels in the _watermill_message_uuid header (and
// Nats-Msg-Id, with track_msg_id, for the stream's duplicate window), each
// metadata entry in a header of its own name (loom_key among them), the
// payload as the message's data. A message is at most the server's
// max_payload (1 MiB by default) counting its headers: a larger one fails
// whole and goes to the dead letters.
var NATS = pipelines.Kind{
	Name:       "nats",
	Summary:    "NATS JetStream subjects",
	Source:     func() pipelines.SourceConfig { return &NATSSource{} },
	Sink:       func() pipelines.SinkConfig { return &NATSSink{} },
	Connection: func() pipelines.ConnectionConfig { return &NATSConnection{} },
}

// Defaults of the nats kind.
const (
	DefaultNATSURL           = "nats://127.0.0.1:4222"
	DefaultNATSTimeout       = 5 * time.Second
	DefaultNATSReconnectWait = time.Second
	DefaultNATSAckWait       = 30 * time.Second
	DefaultNATSCloseTimeout  = 30 * time.Second
	DefaultNATSSubscribers   = 16
)

// NATSConnection is connections.<name> with type: nats.
type NATSConnection struct {
	// URL is the server, or several separated by commas.
	URL string `koanf:"url"`
	// Name is the client's name, shown by the server; default "loombridge".
	Name string `koanf:"name"`
	// User and Password (or PasswordFile) authenticate by user and password;
	// Token (or TokenFile) by token; CredsFile by a JWT and NKey creds file.
	User         string        `koanf:"user"`
	Password     client.Secret `koanf:"password"`
	PasswordFile string        `koanf:"password_file"`
	Token        client.Secret `koanf:"token"`
	TokenFile    string        `koanf:"token_file"`
	CredsFile    string        `koanf:"creds_file"`
	TLS          BrokerTLS     `koanf:"tls"`
	// Timeout bounds the connection's dial.
	Timeout time.Duration `koanf:"timeout"`
	// MaxReconnects is how often a lost connection is tried again; -1 (the
	// default) is for ever.
	MaxReconnects *int `koanf:"max_reconnects"`
	// ReconnectWait is the pause between two tries.
	ReconnectWait time.Duration `koanf:"reconnect_wait"`
}

// Check implements pipelines.ConnectionConfig.
func (c *NATSConnection) Check() error {
	c.URL = cmp.Or(c.URL, DefaultNATSURL)
	c.Name = cmp.Or(c.Name, "loombridge")
	c.Timeout = cmp.Or(c.Timeout, DefaultNATSTimeout)
	c.ReconnectWait = cmp.Or(c.ReconnectWait, DefaultNATSReconnectWait)
	if c.MaxReconnects == nil {
		forever := -1
		c.MaxReconnects = &forever
	}
	var errs []error
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") && !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			errs = append(errs, fmt.Errorf("url: want nats://host:port (or tls://, ws://, wss://), got %q", redactURI(u)))
		}
	}
	if c.Timeout < 0 || c.ReconnectWait < 0 {
		errs = append(errs, errors.New("timeout, reconnect_wait: must not be negative"))
	}
	if *c.MaxReconnects < -1 {
		errs = append(errs, fmt.Errorf("max_reconnects: -1 (for ever) or more, got %d", *c.MaxReconnects))
	}
	_, err := c.options()
	return errors.Join(append(errs, err)...)
}

// options are nats.go's options for this connection; the secrets are read here.
func (c *NATSConnection) options() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(c.Name), nats.Timeout(c.Timeout), nats.ReconnectWait(c.ReconnectWait)}
	if c.MaxReconnects != nil {
		opts = append(opts, nats.MaxReconnects(*c.MaxReconnects))
	}
	var errs []error
	pw, err := secret("password", c.Password, c.PasswordFile)
	errs = append(errs, err)
	if c.User != "" || pw != "" {
		if c.User == "" {
			errs = append(errs, errors.New("user: must be set with password"))
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	tok, err := secret("token", c.Token, c.TokenFile)
	errs = append(errs, err)
	if tok != "" {
		opts = append(opts, nats.Token(tok))
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	n := 0
	for _, set := range []bool{c.User != "", tok != "" || c.TokenFile != "", c.CredsFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("user, token, creds_file: choose one way to authenticate"))
	}
	tlsCfg, err := c.TLS.config()
	errs = append(errs, err)
	if tlsCfg != nil {
		opts = append(opts, nats.Secure(tlsCfg))
	}
	return opts, errors.Join(errs...)
}

// connectStream connects a source or sink to its connection's server and,
// with autoProvision, makes sure its stream exists.
func connectStream(d pipelines.Deps, connection string, autoProvision bool, stream, subject string) (*nats.Conn, chan struct{}, error) {
	conn, err := connectionOf[*NATSConnection](d, connection, "nats")
	if err != nil {
		return nil, nil, err
	}
	nc, closed, err := conn.connect()
	if err != nil {
		return nil, nil, err
	}
	if autoProvision {
		if err := ensureStream(nc, stream, subject); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	return nc, closed, nil
}

// redactURLs is a comma-separated list of server URLs without their passwords.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = redactURI(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// connect dials the server; closed is closed once the connection is closed
// for good (after a Drain, too).
func (c *NATSConnection) connect() (nc *nats.Conn, closed chan struct{}, err error) {
	opts, err := c.options()
	if err != nil {
		return nil, nil, err
	}
	closed = make(chan struct{})
	opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	nc, err = nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: connect to %s: %w", redactURLs(c.URL), err)
	}
	return nc, closed, nil
}

// NATSSource reads a subject through a durable JetStream consumer.
type NATSSource struct {
	Connection string `koanf:"connection"`
	// Subject is what is read; wildcards (orders.*, orders.>) are allowed.
	Subject string `koanf:"subject"`
	// Stream is the stream holding the subject; default derived from it.
	Stream string `koanf:"stream"`
	// Durable is the consumer's name: a restart with the same name resumes
	// after the last acked message. Default loombridge_<pipeline>. It is also
	// the queue group, so loombridge instances sharing it share the work.
	Durable string `koanf:"durable"`
	// AutoProvision creates the stream at start when it does not exist.
	AutoProvision *bool `koanf:"auto_provision"`
	// SubscribersCount is how many subscriptions take messages at once (in
	// the queue group named durable); each handles one message at a time,
	// waiting for its ack, so 1 keeps the stream's order and the default,
	// DefaultNATSSubscribers, trades order for throughput.
	SubscribersCount int `koanf:"subscribers_count"`
	// AckWaitTimeout is how long a message may be in the pipeline before it is
	// left unacked (the server delivers it again after the consumer's AckWait).
	AckWaitTimeout time.Duration `koanf:"ack_wait_timeout"`
	// AckAsync acks without waiting for the server's confirmation: faster, but
	// an ack lost with the connection means the message comes again.
	AckAsync bool `koanf:"ack_async"`
	// NakDelay asks the server to wait before delivering a nacked message again.
	NakDelay time.Duration `koanf:"nak_delay"`
	// CloseTimeout bounds the wait for messages in flight at Close.
	CloseTimeout time.Duration `koanf:"close_timeout"`
}

// NATSSink publishes to a subject of a JetStream stream.
type NATSSink struct {
	Connection string `koanf:"connection"`
	// Subject is what is published to (no wildcards).
	Subject string `koanf:"subject"`
	// Stream holds the subject; default derived from it.
	Stream string `koanf:"stream"`
	// AutoProvision creates the stream at start when it does not exist (once:
	// not checked again on every publish).
	AutoProvision *bool `koanf:"auto_provision"`
	// TrackMsgId sends the UUID as Nats-Msg-Id, so the stream drops a copy
	// published again within its duplicate window (2 minutes by default).
	TrackMsgId *bool `koanf:"track_msg_id"` //nolint:revive // the adapter's name
}

// streamName derives a stream's name from a subject.
var notStreamChar = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func defaultStream(subject string) string { return notStreamChar.ReplaceAllString(subject, "_") }

func checkSubject(subject string, wildcards bool) error {
	if subject == "" {
		return errors.New("subject: must be set (rooms are not subjects: name the NATS subject)")
	}
	if strings.ContainsAny(subject, " \t\r\n") || strings.HasPrefix(subject, ".") || strings.HasSuffix(subject, ".") || strings.Contains(subject, "..") {
		return fmt.Errorf("subject: %q is not a NATS subject (tokens separated by single dots, no spaces)", subject)
	}
	if !wildcards && strings.ContainsAny(subject, "*>") {
		return fmt.Errorf("subject: %q has a wildcard; a sink publishes to one subject", subject)
	}
	return nil
}

func checkStream(stream string) error {
	if stream != "" && notStreamChar.MatchString(stream) {
		return fmt.Errorf("stream: %q may hold only letters, digits, _ and - (no '.', '*', '>', spaces)", stream)
	}
	return nil
}

func boolOr(b *bool, def bool) *bool {
	if b == nil {
		return &def
	}
	return b
}

// Check implements pipelines.SourceConfig.
func (c *NATSSource) Check(d pipelines.Deps) error {
	if c.Stream == "" && c.Subject != "" {
		c.Stream = defaultStream(c.Subject)
	}
	c.Durable = cmp.Or(c.Durable, "loombridge_"+d.Pipeline)
	c.AutoProvision = boolOr(c.AutoProvision, true)
	c.SubscribersCount = cmp.Or(c.SubscribersCount, DefaultNATSSubscribers)
	c.AckWaitTimeout = cmp.Or(c.AckWaitTimeout, DefaultNATSAckWait)
	c.CloseTimeout = cmp.Or(c.CloseTimeout, DefaultNATSCloseTimeout)
	_, err := connectionOf[*NATSConnection](d, c.Connection, "nats")
	errs := []error{err, checkSubject(c.Subject, true), checkStream(c.Stream)}
	if notStreamChar.MatchString(c.Durable) {
		errs = append(errs, fmt.Errorf("durable: %q may hold only letters, digits, _ and -", c.Durable))
	}
	if c.SubscribersCount < 1 {
		errs = append(errs, fmt.Errorf("subscribers_count: must be at least 1, got %d", c.SubscribersCount))
	}
	for _, v := range []struct {
		key string
		d   time.Duration
	}{{"ack_wait_timeout", c.AckWaitTimeout}, {"close_timeout", c.CloseTimeout}, {"nak_delay", c.NakDelay + 1}} {
		if v.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", v.key))
		}
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig: the subject.
func (c *NATSSource) Topic() string { return c.Subject }

// NewSubscriber implements pipelines.SourceConfig. The durable consumer is
// created here, once, when it does not exist (see ensureConsumer), and the
// subscriptions bind to it.
func (c *NATSSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	nc, closed, err := connectStream(d, c.Connection, *c.AutoProvision, c.Stream, c.Subject)
	if err != nil {
		return nil, err
	}
	js, err := nc.JetStream()
	if err == nil {
		err = ensureConsumer(js, c.Stream, c.Durable, c.Subject)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsSubscriber{c: c, nc: nc, js: js, closed: closed, logger: d.Logger, closing: make(chan struct{})}, nil
}

// natsDeliverSubject is where the server pushes a durable consumer's
// messages. It is fixed by stream and durable, not a random inbox, so that
// instances creating the same consumer at once ask for the same
// configuration, and the second creation is a no-op.
func natsDeliverSubject(stream, durable string) string {
	return "_INBOX.loombridge." + stream + "." + durable
}

// ensureConsumer creates the durable push consumer the source reads through,
// when it does not exist, and checks that an existing one fits.
//
// loombridge creates it itself and binds its subscriptions to it (nats.Bind)
// instead of letting nats.go create it on the first subscribe, because
// nats.go deletes a consumer it created when that subscription is
// unsubscribed: a source that stopped took its durable's position with it
// (a restart began again at the start of the stream), and while one
// subscriber with a durable was closing, another subscribing with the same
// durable failed with "nats: consumer not found" (Watermill's universal
// suite does that in TestContinueAfterErrors and TestConcurrentClose). A
// consumer created here is never deleted by loombridge: remove it with
// `nats consumer rm STREAM DURABLE` when it is no longer wanted.
func ensureConsumer(js nats.JetStreamManager, stream, durable, subject string) error {
	want := &nats.ConsumerConfig{
		Durable:        durable,
		DeliverSubject: natsDeliverSubject(stream, durable),
		DeliverGroup:   durable,
		FilterSubject:  subject,
		DeliverPolicy:  nats.DeliverAllPolicy,
		AckPolicy:      nats.AckExplicitPolicy,
	}
	info, err := js.ConsumerInfo(stream, durable)
	if errors.Is(err, nats.ErrConsumerNotFound) {
		info, err = js.AddConsumer(stream, want)
		if err != nil {
			// Another instance may have created it a moment before.
			if again, err2 := js.ConsumerInfo(stream, durable); err2 == nil {
				info, err = again, nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("nats: durable %s on stream %s: %w", durable, stream, err)
	}
	got := info.Config
	var problem string
	switch {
	case got.DeliverSubject == "":
		problem = "is a pull consumer"
	case got.DeliverGroup != durable:
		problem = fmt.Sprintf("has deliver group %q, not %q", got.DeliverGroup, durable)
	case got.FilterSubject != subject:
		problem = fmt.Sprintf("reads subject %q, not %q", got.FilterSubject, subject)
	case got.AckPolicy != nats.AckExplicitPolicy:
		problem = fmt.Sprintf("has ack policy %s, not explicit", got.AckPolicy)
	default:
		return nil
	}
	return fmt.Errorf("durable: the existing consumer %s on stream %s %s; name another durable or remove it (nats consumer rm %s %s)",
		durable, stream, problem, stream, durable)
}

// natsSubscriber reads a durable JetStream push consumer through
// SubscribersCount queue subscriptions, each handling one message at a time,
// in watermill-nats's wire format (NATSMarshaler). It is loombridge's own
// rather than watermill-nats v2.1.3's Subscriber, whose Subscribe closes its
// output channel once the subscriptions are unsubscribed while nats.go may
// still be running their callbacks, which send on that channel: the race
// detector reports it in Watermill's universal suite (TestSubscribeCtx,
// TestContinueAfterErrors), and a send that loses the race panics the
// process. Here a Subscribe's channel is closed only after every callback
// has returned.
type natsSubscriber struct {
	c      *NATSSource
	nc     *nats.Conn
	js     nats.JetStreamContext
	closed chan struct{} // closed with the connection
	logger watermill.LoggerAdapter

	mu      sync.Mutex     // orders running.Add before Close's Wait
	closing chan struct{}  // closed by Close
	running sync.WaitGroup // one per Subscribe, until its channel is closed
}

// Subscribe implements message.Subscriber: topic is the source's subject.
func (s *natsSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.c.Subject {
		return nil, fmt.Errorf("nats: this source reads subject %q, not %q", s.c.Subject, topic)
	}
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return nil, errors.New("nats: subscriber closed")
	default:
	}
	s.running.Add(1)
	s.mu.Unlock()
	r := &natsRun{s: s, ctx: ctx, out: make(chan *message.Message), stop: make(chan struct{}), hard: make(chan struct{})}
	for range s.c.SubscribersCount {
		sub, err := s.js.QueueSubscribe(s.c.Subject, s.c.Durable, r.receive,
			nats.Bind(s.c.Stream, s.c.Durable), nats.ManualAck())
		if err != nil {
			r.end()
			return nil, fmt.Errorf("nats: subscribe to %s through durable %s: %w", s.c.Subject, s.c.Durable, err)
		}
		r.subs = append(r.subs, sub)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		r.end()
	}()
	return r.out, nil
}

// natsRun is one Subscribe: its subscriptions and the callbacks in flight.
type natsRun struct {
	s    *natsSubscriber
	ctx  context.Context
	out  chan *message.Message
	subs []*nats.Subscription

	mu       sync.Mutex
	stopping bool
	handlers sync.WaitGroup // callbacks running, counted while !stopping
	stop     chan struct{}  // closed at the run's end: nothing more is handed over
	hard     chan struct{}  // closed when close_timeout passed: stop waiting for acks
}

// receive is the callback of every subscription of the run.
func (r *natsRun) receive(m *nats.Msg) {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		r.nak(m, 0) // back to the consumer at once, for another member or the next start
		return
	}
	r.handlers.Add(1)
	r.mu.Unlock()
	defer r.handlers.Done()

	msg, err := (&wmnats.NATSMarshaler{}).Unmarshal(m)
	if err != nil {
		// Left unacked: the server delivers it again after the consumer's AckWait.
		r.s.logger.Error("nats: cannot read message", err, watermill.LogFields{"subject": m.Subject})
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	msg.SetContext(ctx)
	select {
	case r.out <- msg:
	case <-r.stop:
		r.nak(m, 0)
		return
	}
	timeout := time.NewTimer(r.s.c.AckWaitTimeout)
	defer timeout.Stop()
	stop := r.stop
	for {
		select {
		case <-msg.Acked():
			if r.s.c.AckAsync {
				err = m.Ack()
			} else {
				err = m.AckSync()
			}
			if err != nil {
				r.s.logger.Error("nats: ack failed; the message will come again", err, watermill.LogFields{"message_uuid": msg.UUID})
			}
			return
		case <-msg.Nacked():
			r.nak(m, r.s.c.NakDelay)
			return
		case <-timeout.C:
			// Left unacked: the server delivers it again after the consumer's AckWait.
			r.s.logger.Info("nats: no ack within ack_wait_timeout", watermill.LogFields{"message_uuid": msg.UUID})
			return
		case <-stop:
			// The run ends: the message's context is cancelled at once, and
			// an ack or nack still counts until close_timeout.
			cancel()
			stop = nil
		case <-r.hard:
			return
		}
	}
}

func (r *natsRun) nak(m *nats.Msg, delay time.Duration) {
	var err error
	if delay > 0 {
		err = m.NakWithDelay(delay)
	} else {
		err = m.Nak()
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		r.s.logger.Error("nats: nak failed; the message comes again after the consumer's AckWait", err, nil)
	}
}

// end stops the run: no message is handed over any more; the subscriptions
// are drained (the server stops delivering, and what nats.go holds already
// passes through receive, which naks it, so it comes again at once rather
// than after the consumer's AckWait); messages handed over get until
// close_timeout for their ack or nack; then the channel is closed, once
// every callback that could send on it has returned. (A callback that finds
// the run stopping only naks: Close waits for those by draining the
// connection.)
func (r *natsRun) end() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	close(r.stop)
	for _, sub := range r.subs {
		if err := sub.Drain(); err != nil {
			_ = sub.Unsubscribe()
		}
	}
	done := make(chan struct{})
	go func() { r.handlers.Wait(); close(done) }()
	deadline := time.NewTimer(r.s.c.CloseTimeout)
	defer deadline.Stop()
	select {
	case <-done:
	case <-deadline.C:
		close(r.hard)
		<-done
	}
	close(r.out)
	r.s.running.Done()
}

// Close implements message.Subscriber: it ends every Subscribe (each within
// close_timeout), then drains the connection, so that acks sent without
// waiting (ack_async) reach the server, and waits until it is closed: no
// goroutine outlives it.
func (s *natsSubscriber) Close() error {
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return nil
	default:
	}
	close(s.closing)
	s.mu.Unlock()
	s.running.Wait()
	if err := s.nc.Drain(); err != nil {
		s.nc.Close()
	}
	select {
	case <-s.closed:
	case <-time.After(s.c.CloseTimeout):
		s.nc.Close()
		<-s.closed
	}
	return nil
}

// Check implements pipelines.SinkConfig.
func (c *NATSSink) Check(d pipelines.Deps) error {
	if c.Stream == "" && c.Subject != "" {
		c.Stream = defaultStream(c.Subject)
	}
	c.AutoProvision = boolOr(c.AutoProvision, true)
	c.TrackMsgId = boolOr(c.TrackMsgId, true)
	_, err := connectionOf[*NATSConnection](d, c.Connection, "nats")
	return errors.Join(err, checkSubject(c.Subject, false), checkStream(c.Stream))
}

// Topic implements pipelines.SinkConfig: the subject.
func (c *NATSSink) Topic() string { return c.Subject }

// NewPublisher implements pipelines.SinkConfig.
func (c *NATSSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	nc, closed, err := connectStream(d, c.Connection, *c.AutoProvision, c.Stream, c.Subject)
	if err != nil {
		return nil, err
	}
	pub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream: wmnats.JetStreamConfig{
			// Provisioned once above: the adapter's AutoProvision would ask
			// the server about the stream on every Publish.
			AutoProvision:  false,
			TrackMsgId:     *c.TrackMsgId,
			PublishOptions: []nats.PubOpt{nats.ExpectStream(c.Stream)},
		},
	}, d.Logger)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	p := &natsPublisher{nc: nc, closed: closed, track: *c.TrackMsgId}
	p.sizeLimited = sizeLimited{Publisher: pub, limit: p.fits}
	return p, nil
}

// natsPublisher refuses, before sending, what NATS headers or max_payload
// cannot carry whole.
type natsPublisher struct {
	sizeLimited // limit is fits
	nc          *nats.Conn
	closed      chan struct{}
	track       bool
}

// fits checks the headers the marshaler will write and the message's size as
// the server counts it (data and headers).
func (p *natsPublisher) fits(m *message.Message) error {
	size := len("NATS/1.0\r\n\r\n") + len(wmnats.WatermillUUIDHdr) + len(m.UUID) + 4
	if p.track {
		size += len(nats.MsgIdHdr) + len(m.UUID) + 4
	}
	size += len(nats.ExpectedStreamHdr) + 64
	for k, v := range m.Metadata {
		if k == "" || strings.ContainsAny(k, ": \t\r\n") || strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("nats: metadata %q of message %s cannot be a NATS header (no ':', spaces or line breaks in keys, no line breaks in values)", k, m.UUID)
		}
		size += len(k) + len(v) + 4
	}
	size += len(m.Payload)
	if limit := p.nc.MaxPayload(); int64(size) > limit {
		return &TooLargeError{Backend: "nats", UUID: m.UUID, Size: size, Limit: int(limit),
			Setting: "the server's max_payload, 1 MiB by default, at most 64 MiB; a message is never split"}
	}
	return nil
}

// Close waits until the connection is closed too: the adapter closes it,
// and no goroutine outlives Close.
func (p *natsPublisher) Close() error {
	err := p.Publisher.Close()
	<-p.closed
	return err
}

// ensureStream creates the stream, holding subject, when it does not exist.
func ensureStream(nc *nats.Conn, stream, subject string) error {
	js, err := nc.JetStream()
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if _, err := js.StreamInfo(stream); err == nil {
		return nil
	} else if !errors.Is(err, nats.ErrStreamNotFound) {
		return fmt.Errorf("nats: stream %s: %w", stream, err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: stream, Subjects: []string{subject}}); err != nil {
		return fmt.Errorf("nats: create stream %s for subject %s: %w", stream, subject, err)
	}
	return nil
}

// ConnectNATS implements pipelines.NATSConnector: a buffers.connection naming
// this connection keeps the queues of buffered pipelines on its server.
func (c *NATSConnection) ConnectNATS() (*nats.Conn, error) {
	nc, _, err := c.connect()
	return nc, err
}
