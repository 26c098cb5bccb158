package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loombridge/loombridge/internal/heap"
)

// Defaults of SubscriberConfig.
const (
	DefaultAckWait     = 30 * time.Second
	DefaultNakDelay    = time.Second
	DefaultMaxNakDelay = time.Minute
)

// SubscriberConfig is one sink's reading of a spool.
type SubscriberConfig struct {
	// Durable names the sink's consumer; processes using the same name share
	// its messages.
	Durable string
	// Concurrency is how many messages are handed out unacked at once.
	Concurrency int
	// AckWait is how long the server waits for an ack, or a sign of progress,
	// before it delivers a message again; progress is sent every third of it
	// while a handler works on the message.
	AckWait time.Duration
	// NakDelay and MaxNakDelay: a nacked message comes again after NakDelay,
	// doubled for each delivery, at most MaxNakDelay.
	NakDelay, MaxNakDelay time.Duration
}

func (c *SubscriberConfig) setDefaults() {
	c.Concurrency = max(c.Concurrency, 1)
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.NakDelay == 0 {
		c.NakDelay = DefaultNakDelay
	}
	if c.MaxNakDelay == 0 {
		c.MaxNakDelay = DefaultMaxNakDelay
	}
}

// Validate reports what is wrong with the config.
func (c SubscriberConfig) Validate() error {
	var errs []error
	if !validName.MatchString(c.Durable) {
		errs = append(errs, fmt.Errorf("durable: must be letters, digits, _ and -, got %q", c.Durable))
	}
	if c.AckWait < 3*time.Millisecond {
		errs = append(errs, fmt.Errorf("ack_wait: must be at least 3ms, got %s", c.AckWait))
	}
	if c.NakDelay < 0 || c.MaxNakDelay < c.NakDelay {
		errs = append(errs, fmt.Errorf("nak delays: want 0 <= nak_delay <= max_nak_delay, got %s and %s", c.NakDelay, c.MaxNakDelay))
	}
	return errors.Join(errs...)
}

// Subscriber delivers one sink's messages of a spool. Subscribe may be
// called once.
type Subscriber struct {
	sp       *Spool
	cfg      SubscriberConfig
	consumer jetstream.Consumer
	logger   watermill.LoggerAdapter

	redelivered, expired, lost atomic.Uint64

	workMu sync.Mutex
	work   map[jetstream.Msg]struct{} // handed out, not yet settled

	mu        sync.Mutex
	closing   chan struct{}
	wg        sync.WaitGroup
	subscribe sync.Once
}

// NewSubscriber creates (or updates) the sink's durable consumer.
func (s *Spool) NewSubscriber(ctx context.Context, cfg SubscriberConfig) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.cfg.Name, err)
	}
	c, err := s.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "loombridge sink " + cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: cfg.Concurrency,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: consumer for sink %s: %w", s.cfg.Name, cfg.Durable, err)
	}
	return &Subscriber{sp: s, cfg: cfg, consumer: c, closing: make(chan struct{}), work: map[jetstream.Msg]struct{}{},
		logger: s.logger.With(watermill.LogFields{"sink": cfg.Durable})}, nil
}

// Subscribe starts delivering; the topic is not used. The channel is closed
// when ctx ends or the subscriber is closed.
func (sub *Subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	var (
		out = make(chan *message.Message)
		err = errors.New("spool: Subscribe called twice")
	)
	sub.subscribe.Do(func() {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		select {
		case <-sub.closing:
			err = errors.New("spool: subscriber closed")
			return
		default:
		}
		var it jetstream.MessagesContext
		it, err = sub.consumer.Messages(jetstream.PullMaxMessages(sub.cfg.Concurrency))
		if err != nil {
			err = fmt.Errorf("spool %s: sink %s: %w", sub.sp.cfg.Name, sub.cfg.Durable, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		sub.wg.Add(3)
		go func() { defer sub.wg.Done(); sub.progress() }()
		go func() { // ends the iteration when ctx ends or at Close
			defer sub.wg.Done()
			select {
			case <-ctx.Done():
			case <-sub.closing:
			}
			it.Stop()
		}()
		go func() {
			defer sub.wg.Done()
			defer cancel()
			sub.run(ctx, it, out)
		}()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// run takes messages off the iterator and hands each to a goroutine of its
// own, at most Concurrency at once.
func (sub *Subscriber) run(ctx context.Context, it jetstream.MessagesContext, out chan<- *message.Message) {
	var handlers sync.WaitGroup
	defer func() { handlers.Wait(); close(out) }()
	slots := make(chan struct{}, sub.cfg.Concurrency)
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			// Missing heartbeats and the like: the iterator recovers by itself.
			sub.logger.Debug("Spool consumer: pull failed; retrying", watermill.LogFields{"error": err.Error()})
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			_ = m.Nak()
			return
		case <-sub.closing:
			_ = m.Nak()
			return
		}
		handlers.Go(func() {
			defer func() { <-slots }()
			sub.handle(ctx, m, out)
		})
	}
}

// handle delivers one stored message and settles it with the server.
func (sub *Subscriber) handle(ctx context.Context, m jetstream.Msg, out chan<- *message.Message) {
	md, err := m.Metadata()
	if err != nil {
		sub.logger.Error("Spool consumer: message without metadata; terminated", err, nil)
		_ = m.Term()
		return
	}
	if md.NumDelivered > 1 {
		sub.redelivered.Add(1)
	}
	obj := m.Headers().Get(hdrObject)
	if sub.sp.cfg.MaxAge > 0 && time.Since(md.Timestamp) > sub.sp.cfg.MaxAge {
		sub.expired.Add(1)
		sub.logger.Info("Spool: message older than max_age acked without delivery", watermill.LogFields{"message_uuid": m.Headers().Get(hdrUUID), "stored": md.Timestamp})
		sub.settled(m, md.Sequence.Stream)
		return
	}
	msg, release, err := sub.decode(ctx, m, obj)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Its payload is gone for good: delivering it again cannot help.
			sub.lost.Add(1)
			sub.logger.Error("Spool: the payload of a stored message is missing; message terminated", err, watermill.LogFields{"seq": md.Sequence.Stream})
			_ = m.Term()
			return
		}
		sub.logger.Error("Spool: cannot read a stored message; it comes again", err, watermill.LogFields{"seq": md.Sequence.Stream})
		_ = m.NakWithDelay(sub.nakDelay(md.NumDelivered))
		return
	}
	defer release()
	msg.SetContext(ctx)
	select {
	case out <- msg:
	case <-ctx.Done():
		_ = m.Nak()
		return
	case <-sub.closing:
		_ = m.Nak()
		return
	}
	sub.working(m, true)
	defer sub.working(m, false)
	select {
	case <-msg.Acked():
		sub.settled(m, md.Sequence.Stream)
	case <-msg.Nacked():
		_ = m.NakWithDelay(sub.nakDelay(md.NumDelivered))
	case <-sub.closing:
		// The handler did not finish in the router's close timeout: the
		// message comes again, here after a restart or at another process.
		_ = m.Nak()
	}
}

// working adds m to, or takes it off, the messages a handler works on.
func (sub *Subscriber) working(m jetstream.Msg, on bool) {
	sub.workMu.Lock()
	if on {
		sub.work[m] = struct{}{}
	} else {
		delete(sub.work, m)
	}
	sub.workMu.Unlock()
}

// progress tells the server, every third of the ack wait, that each message
// a handler works on is still in work, so that a sink taking long (a webhook
// retrying for hours) does not get it again. One ticker for all: one per
// message cost a timer per message.
func (sub *Subscriber) progress() {
	t := time.NewTicker(sub.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-sub.closing:
			return
		case <-t.C:
		}
		sub.workMu.Lock()
		for m := range sub.work {
			_ = m.InProgress()
		}
		sub.workMu.Unlock()
	}
}

// settled acks m. The ack is not confirmed: a lost one only brings the
// message again after the ack wait, and waiting for each confirmation halved
// the rate. The spool's purge removes the message (and its object) once
// every sink acked it.
func (sub *Subscriber) settled(m jetstream.Msg, seq uint64) {
	if err := m.Ack(); err != nil {
		sub.logger.Error("Spool: ack not sent; the message may come again", err, watermill.LogFields{"seq": seq})
	}
}

func (sub *Subscriber) nakDelay(deliveries uint64) time.Duration {
	d := sub.cfg.NakDelay
	for i := uint64(1); i < deliveries && d < sub.cfg.MaxNakDelay; i++ {
		d *= 2
	}
	return min(d, sub.cfg.MaxNakDelay)
}

// decode turns a stored message back into a Watermill message, reading its
// payload from the Object Store when it is there. release gives back the
// memory budget a large payload took.
func (sub *Subscriber) decode(ctx context.Context, m jetstream.Msg, obj string) (_ *message.Message, release func(), err error) {
	msg, size, err := decodeRecord(m.Headers(), m.Data(), sub.sp.cfg.MaxBytes)
	if err != nil || obj == "" {
		return msg, func() {}, err
	}
	// A payload larger than the whole budget is let through alone.
	weight := min(size, sub.sp.cfg.LargeMemory)
	if err := sub.sp.large.Acquire(ctx, weight); err != nil {
		return nil, nil, err
	}
	release = func() { sub.sp.large.Release(weight) }
	defer func() {
		if err != nil {
			release()
		}
	}()
	r, err := sub.sp.objects.Get(ctx, obj)
	if err != nil {
		return nil, nil, fmt.Errorf("object %s: %w", obj, err)
	}
	defer r.Close()
	info, err := r.Info()
	if err != nil {
		return nil, nil, fmt.Errorf("object %s: %w", obj, err)
	}
	if int64(info.Size) != size {
		return nil, nil, fmt.Errorf("object %s: %d bytes, its record says %d", obj, info.Size, size)
	}
	msg.Payload = heap.Make(int(size)) // the source's copy may be collected first
	for off := int64(0); off < size; {
		end := min(off+collectEvery, size)
		if _, err := io.ReadFull(r, msg.Payload[off:end]); err != nil {
			return nil, nil, fmt.Errorf("object %s: %w", obj, err)
		}
		if off = end; off < size {
			collectIfGrown()
		}
	}
	// The digest is checked at the end of the object: read up to it.
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return nil, nil, fmt.Errorf("object %s: does not end where its size says, or its digest differs: %v", obj, err)
	}
	return msg, release, nil
}

// decodeRecord reads a stored message: its UUID (a header), its metadata
// (at the start of data), and, when its payload is an object, the object's
// size, which must be within maxBytes (the spool's bound; -1: none) before
// anything that size is made. Without an object, the payload is the rest of
// data.
func decodeRecord(h nats.Header, data []byte, maxBytes int64) (_ *message.Message, size int64, err error) {
	msg := message.NewMessage(h.Get(hdrUUID), nil)
	msg.Metadata, data, err = readMetadata(data)
	if err != nil {
		return nil, 0, fmt.Errorf("data: %w", err)
	}
	if h.Get(hdrObject) == "" {
		msg.Payload = data
		return msg, 0, nil
	}
	size, err = strconv.ParseInt(h.Get(hdrSize), 10, 64)
	if err != nil || size < 0 {
		return nil, 0, fmt.Errorf("header %s: not a size: %q", hdrSize, h.Get(hdrSize))
	}
	if maxBytes > 0 && size > maxBytes {
		return nil, 0, fmt.Errorf("header %s: %d bytes is over the spool's max_bytes (%d)", hdrSize, size, maxBytes)
	}
	return msg, size, nil
}

// While a large payload moves through the store, the NATS client and server
// copy each of its chunks, and that garbage would grow the heap to twice the
// live heap (the payload included) before the pacer collects it: a 256 MiB
// message peaked near 700 MiB. So every collectEvery bytes moved, the heap is
// collected once it has grown collectSlack past the live heap.
const (
	collectEvery = 16 << 20
	collectSlack = 32 << 20
)

func collectIfGrown() { heap.CollectIfGrown(collectSlack) }

// collectingReader reads a large payload into the store, collecting as
// collectIfGrown says.
type collectingReader struct {
	r       io.Reader
	n, next int64
}

func (c *collectingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n >= c.next {
		c.next = c.n + collectEvery
		collectIfGrown()
	}
	return n, err
}

// SubscriberStats are a sink's counts in this process.
type SubscriberStats struct {
	Redelivered uint64 // messages delivered more than once
	Expired     uint64 // older than max_age: acked, not delivered
	Lost        uint64 // payload missing from the Object Store: terminated
}

// Stats returns the subscriber's counts.
func (sub *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{Redelivered: sub.redelivered.Load(), Expired: sub.expired.Load(), Lost: sub.lost.Load()}
}

// Close stops delivering and waits for the handlers; a message still being
// handled is nacked so that it comes again. It can be called more than once.
func (sub *Subscriber) Close() error {
	// Under mu: a Subscribe either saw closing and started nothing, or its
	// wg.Add came before this Wait.
	sub.mu.Lock()
	select {
	case <-sub.closing:
	default:
		close(sub.closing)
	}
	sub.mu.Unlock()
	sub.wg.Wait()
	return nil
}
