package loom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom/client"

	"github.com/loombridge/loombridge/internal/buffer"
)

// Errors Publish may return, for errors.Is.
var (
	// ErrPublisherClosed: Publish after Close.
	ErrPublisherClosed = errors.New("loom: publisher closed")
	// ErrBufferFull: the buffer had no room (policy "error", or "block" past
	// publish_timeout).
	ErrBufferFull = buffer.ErrFull
)

// Publisher publishes Watermill messages to Loom rooms (topic = room).
//
// Every message goes through a bounded buffer. Sender goroutines take batches of
// up to BatchSize messages of one room, wherever they sit in the buffer, send each
// batch on a producer stream of its own, end it, and count the batch as confirmed
// when the server ends its side: Loom reads a producer stream one message at a time
// and closes it only after the last message was acknowledged by a consumer or
// discarded. Each room has at most Streams batches in flight, and each batch has a
// sender and a connection of its own; when every sender is busy another is started,
// so a room whose consumers are slow or stuck holds only its own senders and never
// delays another room. A batch is sent again only on evidence that it failed
// (connection lost, stream reset, stream ended by the server before it read it all,
// as a server stopping does): it goes back to the front of the buffer and is sent
// again once reconnected, so delivery is at least once. After an early end every
// sender connection is dialled afresh before its next batch, since a server that
// stops gracefully closes none of them. A slow stream is
// waited for, however long: it is never resent. Messages with the same key are
// never in two batches at once, so they keep their order.
//
// A refusal (HTTP/3 401; on QUIC the server closing a stream on a room not yet
// accepted on that connection) is not transient: the batch and every buffered
// message of the room fail at once (reason "refused"), and then Publish to that
// room fails fast, with an error wrapping client.ErrRefused, until a fresh connection
// (which reads the token file again) is accepted on the room; that is tried with
// the reconnect back-off.
//
// Loom discards messages for a room without a consumer stream and says nothing.
// With client.Config.AdminURL set, a sender takes no batch of a room after each
// (re)connect until the server's metrics show a consumer stream there (see
// admission); the room's messages wait in the buffer meanwhile.
//
// In confirm mode Publish waits until its messages are confirmed; in
// fire_and_forget mode it returns once they are buffered.
type Publisher struct {
	cfg       PublisherConfig
	logger    watermill.LoggerAdapter
	marshaler Marshaler
	buf       *buffer.Buffer[*outgoing]
	gate      *admission // nil without admin_url

	ctx    context.Context // senders' lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex // guards the fields below; never held while calling buf
	rooms map[string]*roomState
	// senders is how many sender goroutines run, free how many of them hold no
	// batch. At least one sender is kept free, so a room always finds one.
	senders, free int
	// conns are the live senders' connections; each sender has its own, since a
	// batch is written ahead of what the server reads, and on a shared connection a
	// stuck stream's unread data would fill the connection's flow-control window.
	// Each maps to the cancel of its connection's context (see replaceConns).
	conns                 map[*connector]context.CancelFunc
	pastDials, pastRedial uint64 // of connections closed

	sent, batches, failedBatches, resent, unconfirmed, slowStreams atomic.Uint64
	droppedFull, droppedClosed, droppedExpired, droppedRefused     atomic.Uint64
}

// roomState is a room's batches in flight and its refusal, if any.
type roomState struct {
	inflight int
	// refused wraps client.ErrRefused while the room is refused: from the moment it
	// is set no batch of the room is taken, and messages put back are dropped.
	refused error
	// failFast is set once the refusal's drops are done (the refused batch and the
	// room's buffered messages): from then on Publish fails at once. Set later than
	// refused, so that a Publish failing fast never sees earlier messages of the
	// room still buffered.
	failFast bool
	probing  bool
}

// outgoing is one buffered message.
type outgoing struct {
	msg  *message.Message
	room string
	key  string
	body []byte
	call *call // nil in fire_and_forget mode
	// written is set once the message was written whole to a stream: from then on
	// it may have arrived, so it is never reported as dropped.
	written atomic.Bool
	// settled is set by the one outcome the message gets: confirmed, dropped,
	// failed, or unconfirmed.
	settled atomic.Bool
}

// settle claims the message's outcome; false if it already has one.
func (o *outgoing) settle() bool { return o.settled.CompareAndSwap(false, true) }

// streamKey is the buffer key that keeps a room's messages of one key in order.
func (o *outgoing) streamKey() string { return o.room + "\x00" + o.key }

// call is one confirm-mode Publish waiting for its messages.
type call struct {
	remaining atomic.Int64
	done      chan struct{}
	abandoned atomic.Bool // Publish gave up: unsent messages expire
	mu        sync.Mutex
	err       error
}

func newCall(n int) *call {
	c := &call{done: make(chan struct{})}
	c.remaining.Store(int64(n))
	return c
}

// finish records one message's outcome.
func (c *call) finish(err error) {
	if c == nil {
		return
	}
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	if c.remaining.Add(-1) == 0 {
		close(c.done)
	}
}

// NewPublisher starts a publisher; it connects in the background and reconnects
// with back-off whenever the connection is lost.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loom publisher config: %w", err)
	}
	m := cfg.Marshaler
	if m == nil {
		m, _ = NewMarshaler(cfg.Format)
	}
	p := &Publisher{
		cfg:       cfg,
		logger:    logger.With(watermill.LogFields{"loom_addr": cfg.Client.Addr}),
		marshaler: m,
		rooms:     map[string]*roomState{},
		conns:     map[*connector]context.CancelFunc{},
	}
	policy, _ := buffer.ParsePolicy(cfg.Buffer.Policy)
	buf, err := buffer.New(buffer.Config[*outgoing]{
		MaxMessages: cfg.Buffer.MaxMessages,
		MaxBytes:    cfg.Buffer.MaxBytes,
		Policy:      policy,
		OnDrop:      p.onDrop,
		Expired:     func(o *outgoing) bool { return o.abandoned() && !o.written.Load() },
		Key:         (*outgoing).streamKey,
		Group:       func(o *outgoing) string { return o.room },
	})
	if err != nil {
		return nil, fmt.Errorf("loom publisher config: %w", err)
	}
	p.buf = buf
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.Client.AdminURL != "" {
		if p.gate, err = newAdmission(cfg.Client.AdminURL, p.logger); err != nil {
			p.cancel()
			return nil, fmt.Errorf("loom publisher config: %w", err)
		}
		p.wg.Go(func() { p.gate.run(p.ctx, p.buf.Wake) })
	}
	p.mu.Lock()
	p.senders, p.free = cfg.Streams, cfg.Streams
	p.mu.Unlock()
	for range cfg.Streams {
		p.startSender()
	}
	return p, nil
}

// startSender starts a sender with a connection of its own; the caller has
// counted it in senders and free.
func (p *Publisher) startSender() {
	conn, stale := p.newConn()
	p.wg.Go(func() { p.sender(conn, stale) })
}

// newConn starts a sender connection. stale is cancelled when the connection must
// be replaced before its sender takes another batch (see replaceConns); it never
// ends a batch in flight.
func (p *Publisher) newConn() (conn *connector, stale context.Context) {
	conn = newConnector(p.cfg.Client, p.cfg.Reconnect, p.logger)
	stale, cancel := context.WithCancel(p.ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[conn] = cancel
	return conn, stale
}

// replaceConns has every sender connection open now replaced before its next
// batch: after a refusal or an accepted probe (a new connection reads the token
// file again), and after a stream the server ended early without refusing it (a
// server stopping gracefully ends its streams so and then vanishes without closing
// its connections, which then look alive until the server is back). A sender whose
// connection is stale takes no batch from the moment this returns (its eligible
// function says no), so a batch requeued after this call stays buffered until a
// fresh connection is up.
func (p *Publisher) replaceConns() {
	p.mu.Lock()
	for _, cancel := range p.conns {
		cancel()
	}
	p.mu.Unlock()
}

// dropConn closes a sender's connection and keeps its counts.
func (p *Publisher) dropConn(conn *connector) {
	conn.close()
	d, r := conn.stats()
	p.mu.Lock()
	if cancel := p.conns[conn]; cancel != nil {
		cancel()
	}
	delete(p.conns, conn)
	p.pastDials += d
	p.pastRedial += r
	p.mu.Unlock()
}

func (p *Publisher) onDrop(o *outgoing, reason DropReason) {
	if !o.settle() {
		return
	}
	switch reason {
	case DropFull:
		p.droppedFull.Add(1)
	case DropClosed:
		p.droppedClosed.Add(1)
	case DropExpired:
		p.droppedExpired.Add(1)
	case DropRefused:
		p.droppedRefused.Add(1)
	}
	p.logger.Debug("Loom message dropped", watermill.LogFields{"message_uuid": o.msg.UUID, "room": o.room, "reason": string(reason)})
	if p.cfg.OnDrop != nil {
		p.cfg.OnDrop(o.msg, reason)
	}
	err := fmt.Errorf("loom: message %s dropped: %s", o.msg.UUID, reason)
	if reason == DropRefused {
		if rerr, _ := p.refusal(o.room); rerr != nil {
			err = fmt.Errorf("loom: message %s dropped: %w", o.msg.UUID, rerr)
		}
	}
	o.call.finish(err)
}

// refusal returns the room's refusal, or nil when it is not refused, and whether
// Publish fails fast on it yet (see roomState.failFast).
func (p *Publisher) refusal(room string) (err error, failFast bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.rooms[room]; r != nil {
		return r.refused, r.failFast
	}
	return nil, false
}

// Publish sends msgs to the room named by topic. In confirm mode it returns nil once
// the server is done with every message: each was acknowledged by a consumer of the
// room, or discarded by the server (no consumer connected, backlog full under
// drop_newest, too large). Loom tells producers nothing more, so a confirm does not
// prove that a consumer processed the message. In fire_and_forget mode Publish
// returns once the messages are buffered.
//
// When the server refused the room (see Publisher), Publish fails at once with an
// error wrapping client.ErrRefused (and client.ErrUnauthorized for an HTTP/3 401).
// When the buffer is full, the buffer policy decides; block waits at most
// PublishTimeout. Publish may be called concurrently.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	if err, fast := p.refusal(topic); fast {
		return fmt.Errorf("loom: publish to %q: %w", topic, err)
	}
	items := make([]*outgoing, len(msgs))
	for i, msg := range msgs {
		o, err := p.prepare(topic, msg)
		if err != nil {
			return err
		}
		items[i] = o
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.PublishTimeout)
	defer cancel()
	var c *call
	if p.cfg.Mode == ModeConfirm {
		c = newCall(len(items))
	}
	for i, o := range items {
		o.call = c
		if err := p.buf.Push(ctx, o, len(o.body)); err != nil {
			if c != nil {
				c.abandoned.Store(true)
			}
			if errors.Is(err, buffer.ErrClosed) {
				err = ErrPublisherClosed
			}
			return fmt.Errorf("loom: publish to %q: buffered %d of %d messages: %w", topic, i, len(items), err)
		}
	}
	// A refusal that came while we pushed dropped the room's messages before ours
	// arrived: ours go the same way, and the caller hears of it.
	if rerr, _ := p.refusal(topic); rerr != nil {
		p.buf.DropGroup(topic, DropRefused)
		if c == nil {
			return fmt.Errorf("loom: publish to %q: %w", topic, rerr)
		}
	}
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil {
			return fmt.Errorf("loom: publish to %q: %w", topic, c.err)
		}
		return nil
	case <-ctx.Done():
		c.abandoned.Store(true)
		// Those on a stream may arrive or not; the caller hears "not confirmed" and
		// they are not sent again.
		for _, o := range items {
			if o.written.Load() && o.settle() {
				p.unconfirmed.Add(1)
			}
		}
		return fmt.Errorf("loom: publish to %q: not confirmed within publish_timeout %s (messages already on a stream may still arrive)", topic, p.cfg.PublishTimeout)
	}
}

func (p *Publisher) prepare(topic string, msg *message.Message) (*outgoing, error) {
	body, err := p.marshaler.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("loom: publish to %q: marshal message %s: %w", topic, msg.UUID, err)
	}
	if int64(len(body)) > p.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("loom: publish to %q: message %s is %d bytes, max_message_bytes is %d", topic, msg.UUID, len(body), p.cfg.MaxMessageBytes)
	}
	key := p.cfg.Key(topic, msg)
	if key == "" || len(key) > p.cfg.Client.Limits.MaxKey {
		return nil, fmt.Errorf("loom: publish to %q: message %s: key must be 1 to %d bytes, got %d", topic, msg.UUID, p.cfg.Client.Limits.MaxKey, len(key))
	}
	if len(topic) > p.cfg.Client.Limits.MaxRoom {
		return nil, fmt.Errorf("loom: publish: room %q is %d bytes, limit %d", topic, len(topic), p.cfg.Client.Limits.MaxRoom)
	}
	return &outgoing{msg: msg, room: topic, key: key, body: body}, nil
}

// eligible reports whether a sender may take a batch of room: fewer than Streams
// of its batches are in flight and it is not refused. Called by the buffer with
// its lock held.
func (p *Publisher) eligible(room string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rooms[room]
	return r == nil || (r.inflight < p.cfg.Streams && r.refused == nil)
}

// took counts a batch of room in flight. Called by the buffer with its lock held.
func (p *Publisher) took(room string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rooms[room]
	if r == nil {
		r = &roomState{}
		p.rooms[room] = r
	}
	r.inflight++
}

// landed counts a batch of room no longer in flight. The caller then releases the
// batch's keys, which wakes the senders waiting for work.
func (p *Publisher) landed(room string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rooms[room]
	r.inflight--
	if r.inflight == 0 && r.refused == nil {
		delete(p.rooms, room)
	}
}

// busy marks a sender as holding a batch, and starts another when none is left
// free, so that other rooms are never left waiting behind this one.
func (p *Publisher) busy() {
	p.mu.Lock()
	p.free--
	spawn := p.free == 0 && p.ctx.Err() == nil
	if spawn {
		p.senders++
		p.free++
	}
	p.mu.Unlock()
	if spawn {
		p.startSender()
	}
}

// idle marks a sender as free again; it reports true when the sender should end
// instead: more than Streams run and two others are free. (With one other free, a
// room busy on all its streams would start a sender, and end one, per batch.)
func (p *Publisher) idle() (exit bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.senders > p.cfg.Streams && p.free >= 2 {
		p.senders--
		return true
	}
	p.free++
	return false
}

// sender takes batches and sends them until the buffer is closed and empty or the
// publisher stops.
func (p *Publisher) sender(conn *connector, stale context.Context) {
	defer func() { p.dropConn(conn) }()
	bo := p.cfg.Reconnect.newBackOff()
	var body bytes.Reader
	// verified holds the rooms a batch was confirmed on over cl: the server checks
	// token and room at the hello, so a stream closed there later is no refusal.
	var verified map[string]bool
	var verifiedOn *client.Client
	// connected is when this sender first saw verifiedOn: with admin_url, a room is
	// sent to on it only once a consumer was seen there by a check begun after.
	var connected time.Time
	// eligible is p.eligible, and no room at all once the connection is stale: a
	// stale sender takes nothing, so what is requeued after replaceConns waits for
	// a fresh connection. With admin_url, a room must also have passed the gate for
	// this connection. Evaluated by the buffer under its lock.
	eligible := func(room string) bool {
		return stale.Err() == nil && p.eligible(room) && (p.gate == nil || p.gate.admitted(room, connected))
	}
	for {
		if stale.Err() != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.dropConn(conn)
			conn, stale = p.newConn()
		}
		// Take messages only when connected: while disconnected they all stay in the
		// buffer, so its bounds hold.
		cl, err := conn.get(p.ctx)
		if err != nil {
			if p.ctx.Err() == nil {
				p.logger.Error("Loom publisher cannot connect; messages stay buffered until Close", err, nil)
				<-p.ctx.Done()
			}
			return
		}
		if cl != verifiedOn {
			verified, verifiedOn, connected = map[string]bool{}, cl, time.Now()
		}
		// The stale context ends the wait when the connection must be replaced.
		batch, err := p.buf.TakeBatch(stale, p.cfg.BatchSize, eligible, p.took)
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, buffer.ErrClosed) {
				continue // stale: replace the connection, then wait again
			}
			return
		}
		room := batch[0].room
		p.busy()
		batch, written, err := p.sendBatch(cl, batch, &body)
		if err == nil {
			bo.Reset()
			if len(batch) > 0 {
				verified[room] = true
				p.batches.Add(1)
			}
			for _, o := range batch {
				if o.settle() {
					p.sent.Add(1)
					o.call.finish(nil)
				}
			}
			p.release(room, batch)
		} else {
			p.failedBatches.Add(1)
			switch {
			case p.ctx.Err() != nil:
				p.closedBatch(room, batch, written)
				return
			case p.isRefusal(cl, room, err, verified[room]):
				p.refused(room, batch, err)
			default:
				if cl.Gone() {
					// The server restarted: the other senders' connections are dead too,
					// though their watchdogs may not know yet. Replaced first, so the
					// batch is not sent again on one of them and resent once more.
					p.replaceConns()
				}
				p.failedBatch(room, batch, err, bo)
			}
		}
		if p.idle() {
			return
		}
	}
}

// isRefusal tells a refusal of the hello from a stream that failed otherwise. On
// HTTP/3 a refusal is a 401. On QUIC the client cannot tell a refusal (the server
// closes the stream) from a stream the server reset as it stopped or was cut off,
// so a stream that stopped on a room not yet confirmed over this connection (auth
// depends on token, room and role only) is a refusal only if the connection is
// still up and an empty stream on the room is refused as well.
func (p *Publisher) isRefusal(cl *client.Client, room string, err error, verified bool) bool {
	if errors.Is(err, client.ErrUnauthorized) {
		return true
	}
	if verified || !errors.Is(err, client.ErrRefused) || cl.Err() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(p.ctx, refusalCheckTimeout)
	defer cancel()
	prod, err := cl.Produce(ctx, room)
	if err == nil {
		err = prod.Close(ctx)
	}
	return errors.Is(err, client.ErrRefused) && ctx.Err() == nil && cl.Err() == nil
}

// refusalCheckTimeout bounds isRefusal's empty stream. A refusal comes within a
// round trip and the client's refusal window; a check that runs out counts as no
// refusal, and the batch is resent after a back-off (and checked again if it fails
// the same way).
const refusalCheckTimeout = 5 * time.Second

// release ends a batch: its room's count first, then its keys, whose release
// wakes the senders waiting for work.
func (p *Publisher) release(room string, batch []*outgoing) {
	p.landed(room)
	for _, o := range batch {
		p.buf.Done(o.streamKey())
	}
	if len(batch) == 0 {
		p.buf.Wake()
	}
}

// closedBatch handles a batch cut off by Close giving up. What was written may have
// arrived: counted as unconfirmed rather than reported as a loss that may be none;
// only what was never written goes back, to be dropped as "closed".
func (p *Publisher) closedBatch(room string, batch []*outgoing, written int) {
	for _, o := range batch[:written] {
		if o.settle() {
			p.unconfirmed.Add(1)
			o.call.finish(fmt.Errorf("loom: message %s: publisher closed before the server confirmed it", o.msg.UUID))
		}
	}
	p.requeue(room, batch[written:])
	p.release(room, batch)
}

// failedBatch puts a batch that failed (connection lost, stream reset, stream
// ended early by a server stopping) back at the front, oldest first, to be sent
// again; then it waits a back-off. Messages whose confirm Publish gave up are not
// sent again.
//
// A stream the server ended before reading it all, without refusing it
// (client.ErrStreamEnded), or whose end the server did not confirm by answering
// afterwards (client.ErrUnconfirmed), is what a server stopping gracefully does
// before it vanishes: it closes no connection, so every sender connection would
// look alive and a batch taken now would wait on a dead stream until the server is
// back. Every connection is replaced first (replaceConns), so the batch stays
// buffered, within the buffer's bounds, until a fresh connection is up.
func (p *Publisher) failedBatch(room string, batch []*outgoing, err error, bo interface{ NextBackOff() time.Duration }) {
	if errors.Is(err, client.ErrStreamEnded) || errors.Is(err, client.ErrUnconfirmed) {
		p.replaceConns()
	}
	again := make([]*outgoing, 0, len(batch))
	for _, o := range batch {
		if o.abandoned() && o.written.Load() {
			if o.settle() {
				p.unconfirmed.Add(1)
				o.call.finish(fmt.Errorf("loom: message %s: not confirmed, not resent after publish_timeout", o.msg.UUID))
			}
			continue
		}
		if o.settled.Load() {
			continue
		}
		p.resent.Add(1)
		again = append(again, o)
	}
	p.requeue(room, again)
	p.release(room, batch)
	wait := bo.NextBackOff()
	fields := watermill.LogFields{"room": room, "messages": len(batch), "retry_in": wait.String()}
	if se, ok := errors.AsType[*sendError](err); ok {
		fields["message_uuid"] = se.uuid // its key is in the error: name the message too
	}
	p.logger.Error("Loom batch failed, will resend", err, fields)
	// The batch's line names no message; one line each does, so that a message
	// can be followed by its UUID.
	for _, o := range again {
		p.logger.Debug("Loom message will be resent", watermill.LogFields{"message_uuid": o.msg.UUID, "room": o.room})
	}
	select {
	case <-time.After(wait):
	case <-p.ctx.Done():
	}
}

// refused fails a refused batch and every buffered message of its room at once,
// marks the room refused (Publish fails fast), has every connection dialled again
// (reading the token anew) and starts probing the room with back-off.
func (p *Publisher) refused(room string, batch []*outgoing, err error) {
	rerr := fmt.Errorf("loom: the server refused room %q (publishing there fails until a new connection is accepted, tried with back-off): %w", room, err)
	p.mu.Lock()
	r := p.rooms[room]
	r.refused = rerr
	probe := !r.probing && p.ctx.Err() == nil
	r.probing = r.probing || probe
	p.mu.Unlock()
	p.replaceConns()
	if probe {
		p.wg.Go(func() { p.probe(room) })
	}
	p.logger.Error("Loom refused the publisher", err, watermill.LogFields{"room": room, "messages": len(batch)})
	// Refused at the hello: the server read none of the batch.
	for _, o := range batch {
		p.onDrop(o, DropRefused)
	}
	p.release(room, batch)
	p.buf.DropGroup(room, DropRefused)
	// Only now does Publish fail fast: a caller told "refused" finds no earlier
	// message of the room still buffered. (What a concurrent Publish or a failed
	// batch puts in from here on is dropped by them, since refused is set.)
	p.mu.Lock()
	if r.refused != nil {
		r.failFast = true
	}
	p.mu.Unlock()
}

// probe dials a fresh connection (which reads the token file again) and opens an
// empty producer stream on room, with back-off, until it is accepted; then the
// room takes messages again.
func (p *Publisher) probe(room string) {
	bo := p.cfg.Reconnect.newBackOff()
	for {
		wait := bo.NextBackOff()
		select {
		case <-time.After(wait):
		case <-p.ctx.Done():
			return
		}
		err := p.tryRoom(room)
		if err == nil {
			p.mu.Lock()
			r := p.rooms[room]
			r.refused, r.failFast, r.probing = nil, false, false
			if r.inflight == 0 {
				delete(p.rooms, room)
			}
			p.mu.Unlock()
			p.replaceConns()
			p.buf.Wake()
			p.logger.Info("Loom accepts the publisher again", watermill.LogFields{"room": room})
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		if errors.Is(err, client.ErrRefused) {
			p.mu.Lock()
			p.rooms[room].refused = fmt.Errorf("loom: the server refused room %q (publishing there fails until a new connection is accepted, tried with back-off): %w", room, err)
			p.mu.Unlock()
		}
		p.logger.Error("Loom room still not accepted", err, watermill.LogFields{"room": room})
	}
}

// tryRoom opens and ends an empty producer stream on room over a new connection.
func (p *Publisher) tryRoom(room string) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Client.DialTimeout+p.cfg.StreamTimeout)
	defer cancel()
	cl, err := client.Dial(ctx, p.cfg.Client, p.logger)
	if err != nil {
		return err
	}
	defer cl.Close()
	prod, err := cl.Produce(ctx, room)
	if err != nil {
		return err
	}
	return prod.Close(ctx)
}

// requeue puts popped messages of room back at the front of the buffer, oldest
// first (see putBack). If the room is refused by then they are dropped as refused
// instead: refused sets the refusal before it drops the room's buffered messages,
// so whichever of the two comes second drops them, and none stays buffered in a
// refused room. The caller releases the batch afterwards.
func (p *Publisher) requeue(room string, msgs []*outgoing) {
	if len(msgs) == 0 {
		return
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		p.putBack(msgs[i])
	}
	if rerr, _ := p.refusal(room); rerr != nil {
		p.buf.DropGroup(room, DropRefused)
	}
}

// putBack returns a popped message to the front of the buffer: as requeued (spared
// by drop_oldest) once it was written to a stream, as never sent otherwise.
func (p *Publisher) putBack(o *outgoing) {
	if o.written.Load() {
		p.buf.Requeue(o, len(o.body))
	} else {
		p.buf.PutBack(o, len(o.body))
	}
}

// abandoned reports whether the confirm Publish of o gave up waiting.
func (o *outgoing) abandoned() bool { return o.call != nil && o.call.abandoned.Load() }

// sendBatch sends batch on a stream of its own and waits for the server to end it,
// however long that takes: the server takes one message per consumer
// acknowledgement, so a slow consumer makes a slow stream, and only failure
// evidence (connection lost, stream reset, refused) ends the wait early. A stream
// open longer than StreamTimeout per message is logged and counted as slow.
// Messages whose confirm Publish gave up meanwhile are not sent: dropped as expired
// if never written, left out if already settled. It returns the batch without them
// and how many of it were written to the stream.
func (p *Publisher) sendBatch(cl *client.Client, batch []*outgoing, body *bytes.Reader) (live []*outgoing, written int, err error) {
	live = batch[:0]
	for _, o := range batch {
		switch {
		case !o.abandoned():
			live = append(live, o)
			continue
		case o.written.Load():
			if o.settle() {
				p.unconfirmed.Add(1)
				o.call.finish(fmt.Errorf("loom: message %s: not confirmed, not resent after publish_timeout", o.msg.UUID))
			}
		default:
			p.onDrop(o, DropExpired)
		}
		p.buf.Done(o.streamKey())
	}
	if len(live) == 0 {
		return live, 0, nil
	}
	room := live[0].room
	slow := time.AfterFunc(p.cfg.StreamTimeout*time.Duration(len(live)), func() {
		p.slowStreams.Add(1)
		p.logger.Info("Loom producer stream slow: its consumers have not acknowledged it yet; waiting, not resending", watermill.LogFields{"room": room, "messages": len(live)})
	})
	defer slow.Stop()
	prod, err := cl.Produce(p.ctx, room)
	if err != nil {
		return live, 0, err
	}
	for _, o := range live {
		body.Reset(o.body)
		if err := prod.Send(p.ctx, o.key, uint64(len(o.body)), body); err != nil {
			prod.Abort()
			return live, written, &sendError{uuid: o.msg.UUID, err: err}
		}
		o.written.Store(true)
		written++
	}
	return live, written, prod.Close(p.ctx)
}

// sendError is a failed Send of one message of a batch: the batch's log line
// names that message.
type sendError struct {
	uuid string
	err  error
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// PublisherStats are the publisher's counters.
type PublisherStats struct {
	Buffered      int    // messages waiting now
	BufferedBytes int64  // their bytes
	Sent          uint64 // messages confirmed by the server
	Batches       uint64 // streams confirmed
	FailedBatches uint64 // streams that failed: requeued, refused, or cut off by Close
	Resent        uint64 // messages requeued after a failed stream
	// SlowStreams counts streams still open StreamTimeout per message after they
	// were opened: their consumers were slow or stuck. They were waited for, not
	// resent.
	SlowStreams uint64
	// Unconfirmed counts messages written to a stream whose confirm had not come
	// when Close gave up, or whose confirm Publish gave up before a resend: they
	// may or may not have arrived, and are not sent again.
	Unconfirmed uint64
	// Dropped counts messages dropped, by reason (DropFull, DropClosed,
	// DropExpired, DropRefused; each is present): the same drops OnDrop is told of.
	Dropped    map[DropReason]uint64
	Dials      uint64 // connection attempts, over all sender connections
	Reconnects uint64 // connections made after a sender connection's first
	// Connections is how many sender connections are open now: Streams, plus
	// those of senders started while every other one was busy.
	Connections int
	// With admin_url (see client.Config.AdminURL): RoomsWaiting is how many rooms
	// are held now because no check since a sender's (re)connect found a consumer
	// stream there; Held is how long rooms have been held in all (two rooms held
	// for a second make 2 s), holds under way included; ConsumerChecks counts
	// reads of the admin listener, ConsumerCheckFailures those that failed (the
	// rooms then stay held).
	RoomsWaiting          int
	Held                  time.Duration
	ConsumerChecks        uint64
	ConsumerCheckFailures uint64
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	dials, reconnects := p.pastDials, p.pastRedial
	conns := make([]*connector, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		d, r := c.stats()
		dials, reconnects = dials+d, reconnects+r
	}
	var gate struct {
		waiting          int
		held             time.Duration
		checks, failures uint64
	}
	if p.gate != nil {
		gate.waiting, gate.held = p.gate.stats()
		gate.checks, gate.failures = p.gate.checks.Load(), p.gate.failures.Load()
	}
	return PublisherStats{
		RoomsWaiting:          gate.waiting,
		Held:                  gate.held,
		ConsumerChecks:        gate.checks,
		ConsumerCheckFailures: gate.failures,
		Buffered:              p.buf.Len(),
		BufferedBytes:         p.buf.Bytes(),
		Sent:                  p.sent.Load(),
		Batches:               p.batches.Load(),
		FailedBatches:         p.failedBatches.Load(),
		Resent:                p.resent.Load(),
		SlowStreams:           p.slowStreams.Load(),
		Unconfirmed:           p.unconfirmed.Load(),
		Dropped: map[DropReason]uint64{
			DropFull:    p.droppedFull.Load(),
			DropClosed:  p.droppedClosed.Load(),
			DropExpired: p.droppedExpired.Load(),
			DropRefused: p.droppedRefused.Load(),
		},
		Dials:       dials,
		Reconnects:  reconnects,
		Connections: len(conns),
	}
}

// Close stops accepting messages and keeps sending, and waiting for confirms, for
// at most CloseTimeout. Then messages never sent are dropped (reported to OnDrop
// with reason "closed") and Close returns an error saying how many. Messages already
// written to a stream whose confirm had not come (say, a consumer still held one
// unacknowledged) are not drops: they may have arrived; Stats().Unconfirmed counts
// them and a confirm Publish waiting for them returns an error. Close is idempotent.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.buf.Close()
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CloseTimeout)
		_ = p.buf.WaitEmpty(ctx)
		cancel()
		p.cancel()
		p.wg.Wait()
		if p.gate != nil {
			p.gate.close()
		}
		if n := p.buf.DropRemaining(); n > 0 {
			p.closeErr = fmt.Errorf("loom publisher: %d messages not sent within close_timeout %s", n, p.cfg.CloseTimeout)
		}
		if n := p.unconfirmed.Load(); n > 0 {
			p.logger.Info("Loom publisher closed with messages sent but not confirmed (a consumer still held them, or the server did not answer)", watermill.LogFields{"unconfirmed": n})
		}
	})
	return p.closeErr
}

var _ message.Publisher = (*Publisher)(nil)
