package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("file subscriber: closed")

// Metadata set on dead-letter messages. Their payload is the raw line.
const (
	DeadLetterFileMetadata   = "file"   // path of the file
	DeadLetterLineMetadata   = "line"   // 1-based line number
	DeadLetterErrorMetadata  = "error"  // what is wrong, with file and line
	DeadLetterReasonMetadata = "reason" // a DeadLetterReason
)

// DeadLetterReason says why a line was not delivered but dead-lettered (the
// DeadLetterReasonMetadata of the dead letter, and the key of
// SubscriberStats.BadLines).
type DeadLetterReason string

// Reasons a line is dead-lettered.
const (
	// ReasonInvalid: not a message as written by MarshalLine (bad JSON or
	// UTF-8, missing uuid or payload, bad base64).
	ReasonInvalid DeadLetterReason = "invalid"
	// ReasonTooLong: longer than max_line_bytes; the dead letter holds its
	// first max_line_bytes bytes.
	ReasonTooLong DeadLetterReason = "too_long"
	// ReasonTorn: the last line of a file that is no longer written has no
	// newline at its end (the writer died mid-line).
	ReasonTorn DeadLetterReason = "torn"
)

// deadLetterReasons lists every DeadLetterReason, in Stats order.
var deadLetterReasons = [...]DeadLetterReason{ReasonInvalid, ReasonTooLong, ReasonTorn}

// Subscriber reads JSONL files written by the jsonl [Publisher]; see the
// package documentation. It is safe for concurrent use.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	topics  map[string]bool // subscribed topics; each owns its offset file
	closing chan struct{}
	wg      sync.WaitGroup

	acked, nacked, deadLettered atomic.Uint64
	badLines                    [len(deadLetterReasons)]atomic.Uint64 // by deadLetterReasons index
}

// NewSubscriber validates cfg after applying defaults and, unless
// NoOffset is set, creates OffsetDir and checks that it can write in it:
// otherwise every Ack would fail to store its offset and a restart would
// read everything again.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("file subscriber config: %w", err)
	}
	if !cfg.NoOffset {
		if err := prepareOffsetDir(cfg.OffsetDir); err != nil {
			return nil, fmt.Errorf("file subscriber config: offset_dir: %w", err)
		}
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Subscriber{
		cfg:     cfg,
		logger:  logger.With(watermill.LogFields{"dir": cfg.Dir}),
		topics:  map[string]bool{},
		closing: make(chan struct{}),
	}, nil
}

// Subscribe reads <dir>/<topic>.jsonl from the stored offset (or the start).
// The channel is closed when ctx is done, on Close, on a read error, and
// without follow after the last line was acked. Without follow the file must
// exist; with follow it is waited for. A topic can only be subscribed once
// at a time per Subscriber, because the subscription owns its offset file.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("file subscriber: %w", err)
	}
	t := &tail{
		topic:   topic,
		path:    filepath.Join(s.cfg.Dir, currentFileName(topic)),
		max:     s.cfg.MaxLineBytes,
		follow:  s.cfg.Follow,
		poll:    s.cfg.PollInterval,
		closing: s.closing,
	}
	if !s.cfg.NoOffset {
		t.offPath = filepath.Join(s.cfg.OffsetDir, currentFileName(topic)+".offset")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSubscriberClosed
	}
	if s.topics[topic] {
		return nil, fmt.Errorf("file subscriber: topic %q is already subscribed", topic)
	}
	if err := t.loadOffset(); err != nil {
		return nil, err
	}
	if err := t.open(s.logger); err != nil && !(t.follow && errors.Is(err, fs.ErrNotExist)) {
		return nil, err
	}
	s.topics[topic] = true
	out := make(chan *message.Message)
	s.wg.Add(1)
	go s.run(ctx, topic, t, out)
	return out, nil
}

func (s *Subscriber) run(ctx context.Context, topic string, t *tail, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	defer func() {
		t.close()
		s.mu.Lock()
		delete(s.topics, topic)
		s.mu.Unlock()
	}()
	logger := s.logger.With(watermill.LogFields{"topic": topic, "file": t.path})
	for {
		l, err := t.next(ctx, logger)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				logger.Debug("End of file, closing subscription", nil)
			case ctx.Err() == nil && !s.isClosing():
				logger.Error("Reading failed, closing subscription", err, nil)
			}
			return
		}
		if l.bad == nil && len(l.data) == 0 {
			continue // blank line, e.g. after a repaired torn line
		}
		var msg *message.Message
		if l.bad == nil {
			if msg, l.bad = UnmarshalLine(l.data, s.cfg.KeyMetadata); l.bad != nil {
				l.reason = ReasonInvalid
			}
		}
		if l.bad != nil {
			s.deadLetter(logger, t.name(), l)
		} else if !s.deliver(ctx, msg, out) {
			return
		}
		if err := t.saveOffset(l.end, l.no); err != nil {
			// At-least-once still holds: a restart re-reads from the older offset.
			logger.Error("Saving offset failed", err, nil)
		}
		if ctx.Err() != nil || s.isClosing() {
			return
		}
	}
}

// deliver sends msg until it is acked; false means the subscription ends.
func (s *Subscriber) deliver(ctx context.Context, msg *message.Message, out chan<- *message.Message) bool {
	for {
		// A nacked message cannot be acked again, so every attempt is a copy.
		m := msg.Copy()
		m.SetContext(ctx)
		select {
		case out <- m:
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		}
		select {
		case <-m.Acked():
			s.acked.Add(1)
			return true
		case <-m.Nacked():
			s.nacked.Add(1)
			if !sleep(ctx, s.closing, s.cfg.NackResendDelay) {
				return false
			}
		case <-ctx.Done():
			return s.ackedLate(m)
		case <-s.closing:
			return s.ackedLate(m)
		}
	}
}

// ackedLate tells whether m was acked. When both the Ack and the stop
// signal are ready, select picks at random; checking again keeps an Ack that
// came before Close from being forgotten (and redelivered after a restart).
func (s *Subscriber) ackedLate(m *message.Message) bool {
	select {
	case <-m.Acked():
		s.acked.Add(1)
		return true
	default:
		return false
	}
}

func (s *Subscriber) deadLetter(logger watermill.LoggerAdapter, path string, l rawLine) {
	err := fmt.Errorf("%s:%d: %w", path, l.no, l.bad)
	if i := slices.Index(deadLetterReasons[:], l.reason); i >= 0 {
		s.badLines[i].Add(1)
	}
	logger.Error("Skipping bad line", err, watermill.LogFields{"line": l.no, "reason": l.reason})
	if s.cfg.DeadLetter == nil {
		return
	}
	dl := message.NewMessage(watermill.NewUUID(), l.data)
	dl.Metadata.Set(DeadLetterFileMetadata, path)
	dl.Metadata.Set(DeadLetterLineMetadata, strconv.FormatInt(l.no, 10))
	dl.Metadata.Set(DeadLetterErrorMetadata, err.Error())
	dl.Metadata.Set(DeadLetterReasonMetadata, string(l.reason))
	if perr := s.cfg.DeadLetter.Publish(s.cfg.DeadLetterTopic, dl); perr != nil {
		// The line stays in the file; blocking the reader on it would stop
		// every good line behind it.
		logger.Error("Publishing dead letter failed", perr, watermill.LogFields{"line": l.no, "message_uuid": dl.UUID})
		return
	}
	s.deadLettered.Add(1)
}

// SubscriberStats are a Subscriber's counters since NewSubscriber, all
// topics together.
type SubscriberStats struct {
	Acked        uint64 // messages acked (their offset is then stored)
	Nacked       uint64 // nacks; each sends the message again
	DeadLettered uint64 // bad lines published to DeadLetter
	// BadLines counts the lines skipped as bad, by reason; every reason is
	// present.
	BadLines map[DeadLetterReason]uint64
}

// Stats returns a snapshot of the counters.
func (s *Subscriber) Stats() SubscriberStats {
	st := SubscriberStats{
		Acked:        s.acked.Load(),
		Nacked:       s.nacked.Load(),
		DeadLettered: s.deadLettered.Load(),
		BadLines:     make(map[DeadLetterReason]uint64, len(deadLetterReasons)),
	}
	for i, r := range deadLetterReasons {
		st.BadLines[r] = s.badLines[i].Load()
	}
	return st
}

func (s *Subscriber) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// Close ends all subscriptions, closing their channels, and waits for their
// goroutines. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// sleep waits d; false if ctx or closing ended first.
func sleep(ctx context.Context, closing <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-closing:
		return false
	}
}
