package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("file subscriber: closed")

// Metadata set on dead-letter messages. Their payload is the raw line.
const (
	DeadLetterFileMetadata  = "file"
	DeadLetterLineMetadata  = "line"
	DeadLetterErrorMetadata = "error"
)

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
}

// NewSubscriber validates cfg after applying defaults.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("file subscriber config: %w", err)
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
			msg, l.bad = UnmarshalLine(l.data, s.cfg.KeyMetadata)
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
			return true
		case <-m.Nacked():
			if !sleep(ctx, s.closing, s.cfg.NackResendDelay) {
				return false
			}
		case <-ctx.Done():
			return acked(m)
		case <-s.closing:
			return acked(m)
		}
	}
}

// acked tells whether m was acked. When both the Ack and the stop signal
// are ready, select picks at random; checking again keeps an Ack that came
// before Close from being forgotten (and redelivered after a restart).
func acked(m *message.Message) bool {
	select {
	case <-m.Acked():
		return true
	default:
		return false
	}
}

func (s *Subscriber) deadLetter(logger watermill.LoggerAdapter, path string, l rawLine) {
	err := fmt.Errorf("%s:%d: %w", path, l.no, l.bad)
	logger.Error("Skipping bad line", err, watermill.LogFields{"line": l.no})
	if s.cfg.DeadLetterPublisher == nil {
		return
	}
	dl := message.NewMessage(watermill.NewUUID(), l.data)
	dl.Metadata.Set(DeadLetterFileMetadata, path)
	dl.Metadata.Set(DeadLetterLineMetadata, strconv.FormatInt(l.no, 10))
	dl.Metadata.Set(DeadLetterErrorMetadata, err.Error())
	if perr := s.cfg.DeadLetterPublisher.Publish(s.cfg.DeadLetterTopic, dl); perr != nil {
		// The line stays in the file; blocking the reader on it would stop
		// every good line behind it.
		logger.Error("Publishing dead letter failed", perr, watermill.LogFields{"line": l.no})
	}
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
