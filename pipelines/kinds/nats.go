package kinds

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

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
	if c.URL == "" {
		c.URL = DefaultNATSURL
	}
	if c.Name == "" {
		c.Name = "loombridge"
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultNATSTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultNATSReconnectWait
	}
	if c.MaxReconnects == nil {
		forever := -1
		c.MaxReconnects = &forever
	}
	var errs []error
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") && !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			errs = append(errs, fmt.Errorf("url: want nats://host:port (or tls://, ws://, wss://), got %q", u))
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
		return nil, nil, fmt.Errorf("nats: connect to %s: %w", c.URL, err)
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

func checkNATSConn(d pipelines.Deps, name string) (*NATSConnection, error) {
	if name == "" {
		return nil, connectionProblem(name, nil)
	}
	cc, err := d.Connection(name, "nats")
	if err != nil {
		return nil, connectionProblem(name, err)
	}
	return cc.(*NATSConnection), nil
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
	if c.Durable == "" {
		c.Durable = "loombridge_" + d.Pipeline
	}
	c.AutoProvision = boolOr(c.AutoProvision, true)
	if c.SubscribersCount == 0 {
		c.SubscribersCount = DefaultNATSSubscribers
	}
	if c.AckWaitTimeout == 0 {
		c.AckWaitTimeout = DefaultNATSAckWait
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultNATSCloseTimeout
	}
	_, err := checkNATSConn(d, c.Connection)
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

// NewSubscriber implements pipelines.SourceConfig.
func (c *NATSSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	conn, err := checkNATSConn(d, c.Connection)
	if err != nil {
		return nil, err
	}
	nc, closed, err := conn.connect()
	if err != nil {
		return nil, err
	}
	if *c.AutoProvision {
		if err := ensureStream(nc, c.Stream, c.Subject); err != nil {
			nc.Close()
			return nil, err
		}
	}
	var nak wmnats.Delay
	if c.NakDelay > 0 {
		nak = wmnats.NewStaticDelay(c.NakDelay)
	}
	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:      &wmnats.NATSMarshaler{},
		SubscribersCount: c.SubscribersCount,
		AckWaitTimeout:   c.AckWaitTimeout,
		CloseTimeout:     c.CloseTimeout,
		NakDelay:         nak,
		// The durable is the queue group too, so the subscriptions (and other
		// instances with the same durable) share one consumer.
		QueueGroupPrefix: c.Durable,
		JetStream: wmnats.JetStreamConfig{
			AckAsync:      c.AckAsync,
			DurablePrefix: c.Durable,
			// ManualAck: without it nats.go acks whatever the callback returns
			// from, a message the adapter dropped at Close included.
			SubscribeOptions: []nats.SubOpt{nats.ManualAck(), nats.AckExplicit(), nats.BindStream(c.Stream)},
		},
	}, d.Logger)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	return &natsSubscriber{Subscriber: sub, nc: nc, closed: closed, timeout: c.CloseTimeout}, nil
}

// natsSubscriber waits, at Close, for the connection the adapter drains in
// the background, so no goroutine outlives it.
type natsSubscriber struct {
	*wmnats.Subscriber
	nc      *nats.Conn
	closed  chan struct{}
	timeout time.Duration
}

func (s *natsSubscriber) Close() error {
	err := s.Subscriber.Close()
	if err != nil {
		s.nc.Close()
	}
	select {
	case <-s.closed:
	case <-time.After(s.timeout):
		s.nc.Close()
		<-s.closed
	}
	return err
}

// Check implements pipelines.SinkConfig.
func (c *NATSSink) Check(d pipelines.Deps) error {
	if c.Stream == "" && c.Subject != "" {
		c.Stream = defaultStream(c.Subject)
	}
	c.AutoProvision = boolOr(c.AutoProvision, true)
	c.TrackMsgId = boolOr(c.TrackMsgId, true)
	_, err := checkNATSConn(d, c.Connection)
	return errors.Join(err, checkSubject(c.Subject, false), checkStream(c.Stream))
}

// Topic implements pipelines.SinkConfig: the subject.
func (c *NATSSink) Topic() string { return c.Subject }

// NewPublisher implements pipelines.SinkConfig.
func (c *NATSSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	conn, err := checkNATSConn(d, c.Connection)
	if err != nil {
		return nil, err
	}
	nc, closed, err := conn.connect()
	if err != nil {
		return nil, err
	}
	if *c.AutoProvision {
		if err := ensureStream(nc, c.Stream, c.Subject); err != nil {
			nc.Close()
			return nil, err
		}
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
	return &natsPublisher{pub: pub, nc: nc, closed: closed, track: *c.TrackMsgId}, nil
}

// natsPublisher refuses, before sending, what NATS headers or max_payload
// cannot carry whole.
type natsPublisher struct {
	pub    *wmnats.Publisher
	nc     *nats.Conn
	closed chan struct{}
	track  bool
}

func (p *natsPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := p.fits(m); err != nil {
			return err
		}
	}
	return p.pub.Publish(topic, msgs...)
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

func (p *natsPublisher) Close() error {
	err := p.pub.Close()
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
