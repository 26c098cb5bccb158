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
// Every message goes through a bounded buffer. Streams sender goroutines take
// batches of up to BatchSize messages for one room, send each batch on a producer
// stream of its own, end it, and count the batch as confirmed when the server ends
// its side: Loom reads a producer stream one message at a time and closes it only
// after the last message was acknowledged by a consumer or discarded. A batch that
// fails (connection lost, refused, StreamTimeout) goes back to the front of the
// buffer and is sent again once reconnected, so delivery is at least once. Messages
// with the same key are never in two batches at once, so they keep their order.
//
// In confirm mode Publish waits until its messages are confirmed; in
// fire_and_forget mode it returns once they are buffered.
type Publisher struct {
	cfg       PublisherConfig
	logger    watermill.LoggerAdapter
	marshaler Marshaler
	// conns holds one connection per sender. Senders write a batch ahead of what
	// the server reads (it reads a producer stream one message at a time); on a
	// shared connection that unread data would fill the connection's flow-control
	// window and could starve the body a consumer is waiting for.
	conns []*connector
	buf   *buffer.Buffer[*outgoing]

	ctx    context.Context // senders' lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	sent, batches, failedBatches, resent, unconfirmed atomic.Uint64
	droppedFull, droppedClosed, droppedExpired        atomic.Uint64
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
}

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
	p := &Publisher{cfg: cfg, logger: logger.With(watermill.LogFields{"loom_addr": cfg.Client.Addr}), marshaler: m}
	policy, _ := buffer.ParsePolicy(cfg.Buffer.Policy)
	buf, err := buffer.New(buffer.Config[*outgoing]{
		MaxMessages: cfg.Buffer.MaxMessages,
		MaxBytes:    cfg.Buffer.MaxBytes,
		Policy:      policy,
		OnDrop:      p.onDrop,
		Expired:     func(o *outgoing) bool { return o.abandoned() && !o.written.Load() },
		Key:         (*outgoing).streamKey,
	})
	if err != nil {
		return nil, fmt.Errorf("loom publisher config: %w", err)
	}
	p.buf = buf
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range cfg.Streams {
		conn := newConnector(cfg.Client, cfg.Reconnect, p.logger)
		p.conns = append(p.conns, conn)
		p.wg.Go(func() { p.sender(conn) })
	}
	return p, nil
}

func (p *Publisher) onDrop(o *outgoing, reason DropReason) {
	switch reason {
	case DropFull:
		p.droppedFull.Add(1)
	case DropClosed:
		p.droppedClosed.Add(1)
	case DropExpired:
		p.droppedExpired.Add(1)
	}
	p.logger.Debug("Loom message dropped", watermill.LogFields{"message_uuid": o.msg.UUID, "room": o.room, "reason": string(reason)})
	if p.cfg.OnDrop != nil {
		p.cfg.OnDrop(o.msg, reason)
	}
	o.call.finish(fmt.Errorf("loom: message %s dropped: %s", o.msg.UUID, reason))
}

// Publish sends msgs to the room named by topic. In confirm mode it returns nil once
// the server is done with every message: each was acknowledged by a consumer of the
// room, or discarded by the server (no consumer connected, backlog full under
// drop_newest, too large). Loom tells producers nothing more, so a confirm does not
// prove that a consumer processed the message. In fire_and_forget mode Publish
// returns once the messages are buffered.
//
// When the buffer is full, the buffer policy decides; block waits at most
// PublishTimeout. Publish may be called concurrently.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	if len(msgs) == 0 {
		return nil
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

// sender drains the buffer in batches until it is closed and empty or the
// publisher stops.
func (p *Publisher) sender(conn *connector) {
	bo := p.cfg.Reconnect.newBackOff()
	var batch []*outgoing
	var body bytes.Reader
	for {
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
		first, err := p.buf.Pop(p.ctx)
		if err != nil {
			return
		}
		batch = append(batch[:0], first)
		for len(batch) < p.cfg.BatchSize {
			o, ok := p.buf.TryPop()
			if !ok {
				break
			}
			if o.room != first.room {
				p.putBack(o)
				p.buf.Done(o.streamKey())
				break
			}
			batch = append(batch, o)
		}
		var written int
		batch, written, err = p.sendBatch(cl, batch, &body)
		if err == nil {
			bo.Reset()
			p.batches.Add(1)
			p.sent.Add(uint64(len(batch)))
			for _, o := range batch {
				o.call.finish(nil)
				p.buf.Done(o.streamKey())
			}
			continue
		}
		p.failedBatches.Add(1)
		unsent := batch
		if p.ctx.Err() != nil {
			// Close gave up waiting. What was written may have arrived: count it as
			// unconfirmed rather than report a loss that may be none; only what was
			// never written goes back, to be dropped as "closed".
			p.unconfirmed.Add(uint64(written))
			for _, o := range batch[:written] {
				o.call.finish(fmt.Errorf("loom: message %s: publisher closed before the server confirmed it", o.msg.UUID))
				p.buf.Done(o.streamKey())
			}
			unsent = batch[written:]
		} else {
			p.resent.Add(uint64(len(batch)))
		}
		// Back to the front, oldest first, before the keys are released.
		for i := len(unsent) - 1; i >= 0; i-- {
			p.putBack(unsent[i])
		}
		for _, o := range unsent {
			p.buf.Done(o.streamKey())
		}
		if p.ctx.Err() != nil {
			return
		}
		wait := bo.NextBackOff()
		fields := watermill.LogFields{"room": first.room, "messages": len(batch), "retry_in": wait.String()}
		if se, ok := errors.AsType[*sendError](err); ok {
			fields["message_uuid"] = se.uuid // its key is in the error: name the message too
		}
		p.logger.Error("Loom batch not confirmed, will resend", err, fields)
		// The batch's line names no message; one line each does, so that a
		// message can be followed by its UUID.
		for _, o := range batch {
			p.logger.Debug("Loom message will be resent", watermill.LogFields{"message_uuid": o.msg.UUID, "room": o.room})
		}
		select {
		case <-time.After(wait):
		case <-p.ctx.Done():
			return
		}
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

// sendBatch sends batch on a stream of its own and waits for the server to end it.
// Messages whose confirm Publish gave up meanwhile are not sent again: dropped as
// expired if never written, else counted as unconfirmed (they may have arrived).
// It returns the batch without them and how many of it were written to the stream.
func (p *Publisher) sendBatch(cl *client.Client, batch []*outgoing, body *bytes.Reader) (live []*outgoing, written int, err error) {
	live = batch[:0]
	for _, o := range batch {
		switch {
		case !o.abandoned():
			live = append(live, o)
			continue
		case o.written.Load():
			p.unconfirmed.Add(1)
			o.call.finish(fmt.Errorf("loom: message %s: not confirmed, not resent after publish_timeout", o.msg.UUID))
		default:
			p.onDrop(o, DropExpired)
		}
		p.buf.Done(o.streamKey())
	}
	if len(live) == 0 {
		return live, 0, nil
	}
	// The server takes one message per consumer acknowledgement: the bound grows
	// with the batch.
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.StreamTimeout*time.Duration(len(live)))
	defer cancel()
	prod, err := cl.Produce(ctx, live[0].room)
	if err != nil {
		return live, 0, err
	}
	for _, o := range live {
		body.Reset(o.body)
		if err := prod.Send(ctx, o.key, uint64(len(o.body)), body); err != nil {
			prod.Abort()
			return live, written, &sendError{uuid: o.msg.UUID, err: err}
		}
		o.written.Store(true)
		written++
	}
	return live, written, prod.Close(ctx)
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
	FailedBatches uint64 // streams that failed and were requeued
	Resent        uint64 // messages requeued after a failed stream
	// Unconfirmed counts messages written to a stream whose confirm had not come
	// when Close gave up, or whose confirm Publish gave up before a resend: they
	// may or may not have arrived, and are not sent again.
	Unconfirmed uint64
	// Dropped counts messages dropped, by reason (DropFull, DropClosed,
	// DropExpired; each is present): the same drops OnDrop is told of.
	Dropped    map[DropReason]uint64
	Dials      uint64 // connection attempts, over all sender connections
	Reconnects uint64 // connections made after a sender's first
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	var dials, reconnects uint64
	for _, c := range p.conns {
		d, r := c.stats()
		dials, reconnects = dials+d, reconnects+r
	}
	return PublisherStats{
		Buffered:      p.buf.Len(),
		BufferedBytes: p.buf.Bytes(),
		Sent:          p.sent.Load(),
		Batches:       p.batches.Load(),
		FailedBatches: p.failedBatches.Load(),
		Resent:        p.resent.Load(),
		Unconfirmed:   p.unconfirmed.Load(),
		Dropped: map[DropReason]uint64{
			DropFull:    p.droppedFull.Load(),
			DropClosed:  p.droppedClosed.Load(),
			DropExpired: p.droppedExpired.Load(),
		},
		Dials:      dials,
		Reconnects: reconnects,
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
		if n := p.buf.DropRemaining(); n > 0 {
			p.closeErr = fmt.Errorf("loom publisher: %d messages not sent within close_timeout %s", n, p.cfg.CloseTimeout)
		}
		if n := p.unconfirmed.Load(); n > 0 {
			p.logger.Info("Loom publisher closed with messages sent but not confirmed (a consumer still held them, or the server did not answer)", watermill.LogFields{"unconfirmed": n})
		}
		for _, c := range p.conns {
			c.close()
		}
	})
	return p.closeErr
}

var _ message.Publisher = (*Publisher)(nil)
