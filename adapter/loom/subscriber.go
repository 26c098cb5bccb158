package loom

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/wire"

	"github.com/loombridge/loombridge/internal/heap"
)

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("loom: subscriber closed")

// Subscriber consumes Loom rooms as Watermill topics.
//
// Each Subscribe opens Consumers streams; each is one Loom consumer, so the room's
// partitions spread over them. The server sends a stream its next message only after
// the previous one was acknowledged, so a message stays in flight on its stream until
// it is acked: Ack sends the ACK frame, Nack delivers the same message again after
// NackResendDelay. A stream or connection that dies is reopened with back-off; the
// message that was in flight is lost at the server (Loom never redelivers).
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter
	conn   *connector

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	mu        sync.Mutex
	closed    bool

	received, acked, nacked, reopened atomic.Uint64
	refused                           atomic.Uint64
	truncated, tooLarge, unreadable   atomic.Uint64
	undecodable                       atomic.Uint64
}

// NewSubscriber returns a subscriber; it connects in the background and reconnects
// with back-off whenever the connection is lost.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loom subscriber config: %w", err)
	}
	s := &Subscriber{cfg: cfg, logger: logger.With(watermill.LogFields{"loom_addr": cfg.Client.Addr}), closing: make(chan struct{})}
	s.conn = newConnector(cfg.Client, cfg.Reconnect, s.logger)
	return s, nil
}

// Subscribe consumes room until ctx ends or Close. The channel is closed then.
//
// Subscribe waits for the verdict on its first streams: a stream the server refuses
// (a token it does not accept for this room: HTTP/3 401, or on QUIC the stream closed
// right after the hello) is not transient, so Subscribe returns the refusal, an
// error wrapping client.ErrRefused (and client.ErrUnauthorized on HTTP/3), and stops
// the subscription. Loom says nothing on success: over QUIC a stream counts as
// accepted when no refusal came within a short window (refusalWindow) or a message
// arrived; over HTTP/3 the server's status says it. While there is no connection,
// Subscribe waits for one at most the client's dial_timeout and then returns the
// channel, the streams still reconnecting in the background. A refusal later on (a
// token rotated wrongly) is logged as an error, counted in SubscriberStats.Refused
// and retried with back-off.
func (s *Subscriber) Subscribe(ctx context.Context, room string) (<-chan *message.Message, error) {
	if len(room) > s.cfg.Client.Limits.MaxRoom {
		return nil, fmt.Errorf("loom: subscribe: room %q is %d bytes, limit %d", room, len(room), s.cfg.Client.Limits.MaxRoom)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *message.Message)
	// Each stream's first attempt reports its verdict once: the refusal, or nil.
	verdicts := make(chan error, s.cfg.Consumers)
	var streams sync.WaitGroup
	for range s.cfg.Consumers {
		var once sync.Once
		report := func(err error) (told bool) {
			once.Do(func() {
				verdicts <- err
				told = true
			})
			return told
		}
		streams.Go(func() { s.consume(ctx, room, out, report) })
	}
	s.wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		cancel()
		streams.Wait()
		close(out)
	})
	s.mu.Unlock()

	for range s.cfg.Consumers {
		select {
		case err := <-verdicts:
			if err != nil {
				cancel()
				return nil, fmt.Errorf("loom: subscribe %q: %w", room, err)
			}
		case <-ctx.Done():
			return out, nil // the channel closes
		}
	}
	return out, nil
}

// defaultRefusalWindow is how long a QUIC consumer stream waits after its hello for a
// refusal before it counts as accepted. Loom refuses by closing the stream, which a
// client sees one round trip after the hello (3 to 6 ms on a LAN).
const defaultRefusalWindow = 100 * time.Millisecond

// refusalWindowNs overrides defaultRefusalWindow when not 0 (tests).
var refusalWindowNs atomic.Int64

func (s *Subscriber) refusalWindow() time.Duration {
	if s.cfg.Client.Transport == client.TransportH3 {
		return 0 // Consume waited for the status
	}
	if d := refusalWindowNs.Load(); d != 0 {
		return time.Duration(d)
	}
	return defaultRefusalWindow
}

// refused reports whether a stream's end is the server's refusal of the hello.
func refused(err error) bool { return errors.Is(err, client.ErrRefused) }

// consume runs one consumer stream, reopening it with back-off until ctx ends. The
// first attempt reports its verdict to report (see Subscribe).
func (s *Subscriber) consume(ctx context.Context, room string, out chan<- *message.Message, report func(error) bool) {
	bo := s.cfg.Reconnect.newBackOff()
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			s.reopened.Add(1)
		}
		delivered, err := s.session(ctx, room, out, report)
		if first {
			if refused(err) && ctx.Err() == nil && report(err) {
				return // Subscribe returns the refusal and ends the subscription
			}
			report(nil) // transient, or after the verdict: retried below
		}
		if ctx.Err() != nil {
			return
		}
		if delivered {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		if refused(err) {
			s.refused.Add(1)
			s.logger.Error("Loom refused the consumer stream (is the token right for this room?), retrying", err, watermill.LogFields{"room": room, "retry_in": wait.String()})
		} else if cleanEnd(err) {
			s.logger.Info("Loom server closed the consumer stream, reopening", watermill.LogFields{"room": room, "retry_in": wait.String(), "reason": err.Error()})
		} else {
			s.logger.Error("Loom consumer stream ended, reopening", err, watermill.LogFields{"room": room, "retry_in": wait.String()})
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// cleanEnd reports whether a consumer stream ended in order, not by a fault:
// the server stopping or closing the connection (QUIC application error 0),
// the stream closed between two messages, or this side's Close. Those are no
// corruption, so they are not logged as errors.
func cleanEnd(err error) bool {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.ErrorCode == 0 {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, client.ErrClosed)
}

// session runs one consumer stream until it fails; delivered says whether any
// message came through, to reset the back-off. report is told nil once the stream is
// deemed accepted, or when no connection came within the dial timeout; once told,
// later calls do nothing.
func (s *Subscriber) session(ctx context.Context, room string, out chan<- *message.Message, report func(error) bool) (delivered bool, err error) {
	pending := time.AfterFunc(s.cfg.Client.DialTimeout, func() { report(nil) })
	cl, err := s.conn.get(ctx)
	if err != nil {
		pending.Stop()
		return false, err
	}
	k, err := cl.Consume(ctx, room)
	pending.Stop()
	if err != nil {
		return false, err
	}
	defer k.Close()
	accepted := time.AfterFunc(s.refusalWindow(), func() { report(nil) })
	defer accepted.Stop()
	// Reading a body takes no context; closing the consumer when ctx ends stops a
	// read stalled on a producer that stopped mid-message.
	defer context.AfterFunc(ctx, func() { _ = k.Close() })()
	for {
		m, err := k.Next(ctx)
		if err != nil {
			return delivered, err
		}
		report(nil)
		delivered = true
		s.received.Add(1)
		msg, skip := s.read(room, m)
		if ctx.Err() != nil {
			// Closing aborted the body: that is no skip to report.
			return delivered, ctx.Err()
		}
		if skip != nil {
			s.skip(*skip)
		} else if err := s.deliver(ctx, msg, out); err != nil {
			return delivered, err
		}
		if err := k.Ack(ctx, m.ID); err != nil {
			return delivered, err
		}
	}
}

// read loads a message body, bounded by MaxMessageBytes, and decodes it. A message
// that cannot be delivered whole is returned as skipped.
func (s *Subscriber) read(room string, m *client.Message) (*message.Message, *Skipped) {
	skipped := func(reason SkipReason, err error) *Skipped {
		return &Skipped{Room: room, Key: m.Key, ID: m.ID, Reason: reason, Err: err}
	}
	limit := s.cfg.MaxMessageBytes
	if m.Size > uint64(limit) {
		err := m.Body.Discard()
		return nil, skipped(SkipTooLarge, errors.Join(fmt.Errorf("declared %d bytes, max_message_bytes is %d", m.Size, limit), err))
	}
	r := &summingReader{bodyReader: m.Body}
	body, err := readBody(r, m.Size, limit)
	switch {
	case errors.Is(err, errTooLarge):
		derr := m.Body.Discard()
		return nil, skipped(SkipTooLarge, errors.Join(fmt.Errorf("more than max_message_bytes %d", limit), derr))
	case errors.Is(err, wire.ErrTruncated):
		return nil, skipped(SkipTruncated, err)
	case err != nil:
		return nil, skipped(SkipUnreadable, err)
	}
	msg, err := s.cfg.Marshaler.Unmarshal(Received{Room: room, Key: m.Key, ID: m.ID, Body: body, sums: &r.sums})
	if err != nil {
		return nil, skipped(SkipUndecodable, err)
	}
	return msg, nil
}

// errTooLarge: a body of unknown size went on beyond max_message_bytes.
var errTooLarge = errors.New("body above max_message_bytes")

// bodyReader is what readBody reads: a message body that ends with io.EOF, and
// Discard to skip what is left of it.
type bodyReader interface {
	io.Reader
	Discard() error
}

// readBody reads a whole body into a buffer of its own, which the Watermill message
// keeps: nothing is copied after, and no memory is pinned once the message is gone.
//
// With a declared size (at most limit; the caller skips larger ones unread) the buffer
// is allocated once, at that size, and filled; the body must then end. A body longer
// than declared is read on and dropped, never stored, and reported as truncated: the
// buffer never grows beyond what was declared.
//
// With size 0 (unknown) nothing was declared to size the buffer: the body is read
// into blocks that grow with what arrives, up to limit (beyond it errTooLarge, the
// rest of the body unread), then copied once into a buffer of the exact length. A
// doubling buffer would hold up to three times the body at its last growth and
// copy it about twice; blocks hold it twice for one copy.
func readBody(r bodyReader, size uint64, limit int64) ([]byte, error) {
	if size == 0 {
		return readUnknown(r, limit)
	}
	body := makeBody(int(size))
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	// The body must end here: Discard reads the end chunk, or whatever came beyond
	// the declared size (without storing it) and then reports the mismatch.
	if err := r.Discard(); err != nil {
		return nil, err
	}
	return body, nil
}

// Block sizes of readUnknown: the first is small, so a small body costs little;
// each next one doubles, up to maxBlock.
const (
	firstBlock = 16 << 10
	maxBlock   = 4 << 20
)

func readUnknown(r io.Reader, limit int64) ([]byte, error) {
	var (
		blocks [][]byte
		total  int64
		next   = firstBlock
	)
	for {
		n := int(min(int64(next), limit+1-total))
		var blk []byte
		if total >= heap.Large {
			blk = makeBody(n) // a large body: see makeBody
		} else {
			blk = make([]byte, n)
		}
		got, err := io.ReadFull(r, blk)
		total += int64(got)
		if got > 0 {
			blocks = append(blocks, blk[:got])
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if total > limit {
			return nil, errTooLarge
		}
		next = min(2*next, maxBlock)
	}
	if len(blocks) == 1 && len(blocks[0]) == cap(blocks[0]) {
		return blocks[0], nil
	}
	body := makeBody(int(total))[:0]
	for _, b := range blocks {
		body = append(body, b...)
	}
	return body, nil
}

// makeBody allocates n bytes for a body, which the caller overwrites whole. A body
// above 32 KiB and up to 1 MiB comes from the recycled buffers of pooledBody; a
// large one may collect the previous message's garbage first (internal/heap).
func makeBody(n int) []byte {
	if n >= minPooledBody && n <= maxPooledBody {
		return pooledBody(n)
	}
	return heap.Make(n)
}

func (s *Subscriber) skip(sk Skipped) {
	switch sk.Reason {
	case SkipTruncated:
		s.truncated.Add(1)
	case SkipTooLarge:
		s.tooLarge.Add(1)
	case SkipUnreadable:
		s.unreadable.Add(1)
	case SkipUndecodable:
		s.undecodable.Add(1)
	}
	s.logger.Error("Loom message skipped", sk.Err, watermill.LogFields{"room": sk.Room, "key": sk.Key, "id": sk.ID, "reason": string(sk.Reason)})
	if s.cfg.OnSkip != nil {
		s.cfg.OnSkip(sk)
	}
}

// deliver hands msg to the subscriber's channel until it is acked, delivering it
// again after each Nack. It returns an error only when ctx ends or the subscriber
// closes before the Ack.
func (s *Subscriber) deliver(ctx context.Context, msg *message.Message, out chan<- *message.Message) error {
	for {
		mctx, cancel := context.WithCancel(msg.Context())
		m := msg.Copy()
		m.SetContext(mctx)
		select {
		case out <- m:
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		}
		select {
		case <-m.Acked():
			cancel()
			s.acked.Add(1)
			return nil
		case <-m.Nacked():
			cancel()
			s.nacked.Add(1)
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		}
		t := time.NewTimer(s.cfg.NackResendDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// SubscriberStats are the subscriber's counters.
type SubscriberStats struct {
	Received    uint64 // messages read from streams
	Acked       uint64 // Watermill Acks, each sent to the server as an ACK frame
	Nacked      uint64 // Watermill Nacks, each followed by a local redelivery
	Truncated   uint64 // skipped, SkipTruncated: body shorter or longer than declared
	TooLarge    uint64 // skipped, SkipTooLarge: above max_message_bytes
	Unreadable  uint64 // skipped, SkipUnreadable: reading the body failed otherwise
	Undecodable uint64 // skipped, SkipUndecodable: the Marshaler refused it (bad envelope)
	Reopened    uint64 // consumer streams reopened after a failure
	// Refused counts consumer streams the server refused after the first verdict
	// (see Subscribe), each logged as an error and retried with back-off. On QUIC a
	// stream the server closes before its first message looks the same.
	Refused    uint64
	Dials      uint64 // connection attempts
	Reconnects uint64 // connections made after the first
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	dials, reconnects := s.conn.stats()
	return SubscriberStats{
		Received: s.received.Load(), Acked: s.acked.Load(), Nacked: s.nacked.Load(),
		Truncated: s.truncated.Load(), TooLarge: s.tooLarge.Load(), Unreadable: s.unreadable.Load(), Undecodable: s.undecodable.Load(),
		Reopened: s.reopened.Load(), Refused: s.refused.Load(), Dials: dials, Reconnects: reconnects,
	}
}

// Close stops every subscription, closes their channels and the connection, and
// returns when no goroutine is left. A message not yet acked is lost at the server.
// Close is idempotent.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		s.wg.Wait()
		s.conn.close()
	})
	return nil
}

var _ message.Subscriber = (*Subscriber)(nil)
