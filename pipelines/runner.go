package pipelines

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/spool"
	"github.com/loombridge/loombridge/internal/tracing"
)

// Metadata set on a message sent to a pipeline's dead letters, next to
// Watermill's PoisonQueue keys (reason_poisoned, topic_poisoned, ...).
const (
	MetadataDeadPipeline = "dlq_pipeline"
	MetadataDeadSinks    = "dlq_failed_sinks"
)

// runner is one running pipeline: a Router with one handler reading the
// source and fanning each message out to the sinks.
type runner struct {
	name    string
	pl      *Pipeline
	topic   string
	router  *message.Router
	source  message.Subscriber
	sinks   []*sink
	dead    message.Publisher // nil when the pipeline has none
	stats   *stats
	jobs    chan job      // to the workers
	quit    chan struct{} // closed when the workers are to stop
	workers sync.WaitGroup
	logger  *slog.Logger
	runDone chan error
	stopped sync.Once
	stopErr error
	tr      *tracer // nil: tracing off (tracing.go)
	// spanName is the receive span's, made once rather than per message;
	// bufferSpanName that of a delivery from a sink's queue of the buffer.
	spanName, bufferSpanName string
	anyWhen                  bool // some sink has a when: without one, every message goes to every sink
	// spool is the pipeline's buffer: the source's messages are stored in it,
	// and each sink reads its own queue of it; nil without a buffer.
	spool *spool.Spool
}

// sink is one of a pipeline's sinks with its retry policy.
type sink struct {
	name  string
	ep    *Endpoint
	pub   message.Publisher
	topic string
	stats *sinkStats
	h     message.HandlerFunc // one attempt, wrapped in the retries; built once
	tr    *tracer
	// spanName is the publish span's, made once rather than per message.
	spanName string
	whenKey  string // "to.<name>.when", for the log of a when that fails
	dead     *deadMarker
	queue    *spool.Subscriber // the sink's queue of the buffer; nil without one
}

// job is one message handed to a worker, and where its result goes.
type job struct {
	msg *message.Message
	err chan error
}

// ErrSinksFailed is wrapped by the error of a message that one or more sinks
// did not take after their retries.
var ErrSinksFailed = errors.New("sinks failed")

func startRunner(ctx context.Context, name string, pl *Pipeline, d Deps, closeTimeout time.Duration, logger *slog.Logger, latency prometheus.Observer, store *nats.Conn) (_ *runner, err error) {
	r := &runner{
		name:    name,
		pl:      pl,
		topic:   pl.From.Source.Topic(),
		stats:   newStats(sortedNames(pl.To)),
		jobs:    make(chan job),
		quit:    make(chan struct{}),
		logger:  logger.With("pipeline", name),
		runDone: make(chan error, 1),
		tr:      d.tracer,
	}
	r.spanName = pl.From.Type + " receive " + r.topic
	r.bufferSpanName = "buffer receive " + r.topic
	r.stats.latency = latency
	defer func() {
		if err != nil {
			if r.router != nil {
				_ = r.router.Close()
			}
			r.stopWorkers()
			r.closeAll()
		}
	}()
	if pl.DeadLetter != nil {
		pub, err := pl.DeadLetter.Sink.NewPublisher(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("dead_letter: %w", err)
		}
		topic := pl.DeadLetter.Sink.Topic()
		topic = cmp.Or(topic, name+"_dead_letters")
		r.dead = &countingPublisher{Publisher: pub, n: &r.stats.deadLettered}
		d.DeadLetter = &fixedTopic{pub: r.dead, topic: topic}
	}
	for _, sname := range sortedNames(pl.To) {
		ep := pl.To[sname]
		sd, dead := d, &deadMarker{pub: d.DeadLetter, uuids: map[string]int{}}
		if d.DeadLetter != nil {
			sd.DeadLetter = dead
		}
		pub, err := ep.Sink.NewPublisher(ctx, sd)
		if err != nil {
			return nil, fmt.Errorf("to.%s: %w", sname, err)
		}
		s := &sink{name: sname, ep: ep, pub: pub, topic: ep.Sink.Topic(), stats: r.stats.sinks[sname], tr: d.tracer, dead: dead}
		s.topic = cmp.Or(s.topic, r.topic)
		s.spanName = ep.Type + " publish " + s.topic
		s.whenKey = "to." + sname + ".when"
		r.anyWhen = r.anyWhen || ep.when != nil
		retry := middleware.Retry{
			MaxRetries:          pl.Retry.MaxRetries,
			InitialInterval:     pl.Retry.InitialInterval,
			MaxInterval:         pl.Retry.MaxInterval,
			Multiplier:          pl.Retry.Multiplier,
			MaxElapsedTime:      pl.Retry.MaxElapsedTime,
			RandomizationFactor: pl.Retry.Jitter,
			OnRetryHook:         func(int, time.Duration) { s.stats.retried.Add(1) },
		}
		s.h = retry.Middleware(s.attempt)
		r.sinks = append(r.sinks, s)
	}
	// The sinks' queues exist before the source takes a first message: a
	// message is kept only for the queues there are when it is stored.
	if pl.Buffer != nil {
		if err := r.openBuffer(ctx, d, store); err != nil {
			return nil, fmt.Errorf("buffer: %w", err)
		}
	}
	r.source, err = pl.From.Source.NewSubscriber(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}

	r.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: closeTimeout}, d.Logger)
	if err != nil {
		return nil, err
	}
	if r.dead != nil {
		pq, err := middleware.PoisonQueue(d.DeadLetter, "dead_letters")
		if r.spool != nil {
			// Only a sink's failure is a dead letter: a message the buffer
			// could not store is nacked to the source.
			pq, err = middleware.PoisonQueueWithFilter(d.DeadLetter, "dead_letters", func(err error) bool { return errors.Is(err, ErrSinksFailed) })
		}
		if err != nil {
			return nil, err
		}
		r.router.AddMiddleware(pq)
	}
	r.router.AddMiddleware(middleware.Recoverer)
	// A consumer handler: the fan-out publishes itself, since Watermill closes a
	// handler's publisher when the handler stops.
	r.router.AddConsumerHandler(name, r.topic, r.source, r.handle)
	for _, s := range r.sinks {
		if s.queue != nil {
			r.router.AddConsumerHandler(name+".to."+s.name, r.topic, s.queue, r.deliver(s))
		}
	}
	// concurrency long-lived workers do the work: their stacks stay grown,
	// where Watermill's goroutine per message grows a new one through the
	// deep sink call chain each time (measured at 8% of a pipeline's CPU).
	for range pl.Concurrency {
		r.workers.Go(func() {
			for {
				select {
				case j := <-r.jobs:
					j.err <- r.process(j.msg)
				case <-r.quit:
					return
				}
			}
		})
	}
	go func() { r.runDone <- r.router.Run(context.Background()) }()
	select {
	case <-r.router.Running():
	case err := <-r.runDone:
		r.runDone <- err
		if err == nil {
			err = errors.New("router stopped at start")
		}
		return nil, fmt.Errorf("from: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return r, nil
}

// handle takes one message from the source: filter, then every matching sink
// at once, each with its retries. It returns nil (the source acks) only when
// every matching sink took the message; otherwise the PoisonQueue middleware
// sends it to the dead letters, or, without one, the source gets a nack.
func (r *runner) handle(msg *message.Message) error {
	j := job{msg: msg, err: make(chan error, 1)}
	select {
	case r.jobs <- j:
	case <-r.quit:
		return errStopping
	}
	return <-j.err
}

// errStopping nacks a message that arrives after the workers stopped.
var errStopping = errors.New("pipeline stopping")

func (r *runner) process(msg *message.Message) (err error) {
	span := r.traceProcess(msg)
	defer func() { endSpan(span, err, true) }()
	start := time.Now()
	r.stats.received.Add(1)
	if r.pl.filter != nil && !r.matches(r.pl.filter, msg, "filter") {
		r.stats.filtered.Add(1)
		return nil
	}
	if r.spool != nil {
		// Each sink's queue evaluates its own when; here only whether one
		// matches, so that what no sink takes is not stored.
		if r.anyWhen && !slices.ContainsFunc(r.sinks, func(s *sink) bool { return s.wants(r, msg) }) {
			r.stats.unmatched.Add(1)
			return nil
		}
		return r.store(msg, start)
	}
	targets := r.sinks
	if r.anyWhen {
		targets = nil
		for _, s := range r.sinks {
			if s.wants(r, msg) {
				targets = append(targets, s)
			}
		}
	}
	if len(targets) == 0 {
		r.stats.unmatched.Add(1)
		return nil
	}
	errs := make([]error, len(targets))
	if len(targets) == 1 {
		errs[0] = targets[0].publish(msg)
	} else {
		var wg sync.WaitGroup
		for i, s := range targets {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.publish(msg) }()
		}
		wg.Wait()
	}
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, targets[i].name)
			r.logger.Warn("sink failed after retries", "sink", targets[i].name, "message_uuid", msg.UUID, "error", err)
		}
	}
	r.stats.observe(time.Since(start))
	if len(failed) > 0 {
		return r.sinksFailed(msg, strings.Join(failed, ","), errors.Join(errs...))
	}
	r.stats.done.Add(1)
	return nil
}

// sinksFailed records that the named sinks failed msg after their retries
// and returns the handler's error: the PoisonQueue middleware sends msg to
// the dead letters, with the pipeline and sinks in its metadata, or, without
// them, the source (or the sink's queue) gets a nack.
func (r *runner) sinksFailed(msg *message.Message, names string, err error) error {
	r.stats.failed.Add(1)
	r.stats.setErr(fmt.Errorf("sinks %s: %w", names, err))
	msg.Metadata.Set(MetadataDeadPipeline, r.name)
	msg.Metadata.Set(MetadataDeadSinks, names)
	return fmt.Errorf("%w: %s: %w", ErrSinksFailed, names, err)
}

// wants reports whether the sink's when (if any) matches msg.
func (s *sink) wants(r *runner, msg *message.Message) bool {
	return s.ep.when == nil || r.matches(s.ep.when, msg, s.whenKey)
}

// matches evaluates a filter or when; an expression that fails on a message
// (say payload.x of a payload that is not JSON) does not match it.
func (r *runner) matches(p predicate, msg *message.Message, what string) bool {
	ok, err := p.match(r.topic, msg)
	if err != nil {
		r.stats.exprErrors.Add(1)
		r.logger.Debug("expression failed; taken as no match", "expression", what, "message_uuid", msg.UUID, "error", err)
	}
	return ok
}

// attempt is one try at publishing msg.
func (s *sink) attempt(m *message.Message) ([]*message.Message, error) {
	c := m.Copy() // each sink gets its own metadata map
	c.SetContext(m.Context())
	s.injectTrace(c)
	if err := s.pub.Publish(s.topic, c); err != nil {
		s.stats.failed.Add(1)
		trace.SpanFromContext(m.Context()).RecordError(err) // an attempt's error, on the sink's span
		return nil, err
	}
	return nil, nil
}

func (s *sink) publish(msg *message.Message) error {
	msg, span := s.tracePublish(msg)
	_, err := s.h(msg)
	endSpan(span, err, false) // attempts recorded theirs
	switch dead := s.dead.took(msg.UUID); {
	case err != nil:
	case dead: // the sink put it in the dead letters itself (a webhook endpoint's)
		s.stats.deadLettered.Add(1)
	default:
		s.stats.published.Add(1)
	}
	return err
}

// deadMarker passes a sink's own dead letters (a webhook's, per endpoint) on
// to the pipeline's, noting their UUIDs, so that a message the sink took
// only into the dead letters is not counted as published.
type deadMarker struct {
	pub   message.Publisher
	n     atomic.Int64 // len(uuids): took's lock-free way out, per message
	mu    sync.Mutex
	uuids map[string]int
}

func (m *deadMarker) Publish(topic string, msgs ...*message.Message) error {
	if err := m.pub.Publish(topic, msgs...); err != nil {
		return err
	}
	m.mu.Lock()
	for _, msg := range msgs {
		m.uuids[msg.UUID]++
	}
	m.n.Store(int64(len(m.uuids)))
	m.mu.Unlock()
	return nil
}

// Close does nothing: the runner closes the dead letters behind it.
func (m *deadMarker) Close() error { return nil }

// took reports, and forgets, whether the message went to the dead letters.
func (m *deadMarker) took(uuid string) bool {
	if m.n.Load() == 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.uuids[uuid]
	delete(m.uuids, uuid)
	m.n.Store(int64(len(m.uuids)))
	return ok
}

// stop closes the router (the source stops delivering; messages in flight are
// finished within the close timeout), then flushes and closes the sinks and
// the dead letters.
func (r *runner) stop(ctx context.Context) error {
	r.stopped.Do(func() {
		var errs []error
		if r.spool != nil {
			r.spool.Close() // a source waiting for room gives up: its message is nacked
		}
		if err := r.router.Close(); err != nil {
			errs = append(errs, err)
		}
		select {
		case err := <-r.runDone:
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("router did not stop: %w", ctx.Err()))
		}
		r.stopWorkers()
		errs = append(errs, r.closeAll())
		r.stopErr = errors.Join(errs...)
	})
	return r.stopErr
}

// stopWorkers stops the workers once they finished what they were doing; a
// handler still waiting (the router's close timed out) gets errStopping.
func (r *runner) stopWorkers() {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	r.workers.Wait()
}

// closeAll closes source, sinks and dead letters, the sinks at once (each may
// take its own close timeout to flush) and the dead letters last, since a
// sink may still dead-letter while it closes.
func (r *runner) closeAll() error {
	var errs []error
	if r.source != nil {
		if err := r.source.Close(); err != nil {
			errs = append(errs, fmt.Errorf("from: %w", err))
		}
	}
	for _, s := range r.sinks {
		if s.queue != nil {
			_ = s.queue.Close() // never fails; nacks what a handler still held
		}
	}
	if r.spool != nil {
		_ = r.spool.Close() // again after stop: idempotent; at a failed start, the first time
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range r.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.pub.Close(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("to.%s: %w", s.name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if r.dead != nil {
		if err := r.dead.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dead_letter: %w", err))
		}
	}
	return errors.Join(errs...)
}

// fixedTopic publishes to one topic whatever it is asked, so the pipeline's
// PoisonQueue and a webhook sink's own dead letters land in one place. Its
// Close does nothing: the runner closes the publisher behind it last.
type fixedTopic struct {
	pub   message.Publisher
	topic string
}

func (f *fixedTopic) Publish(_ string, msgs ...*message.Message) error {
	return f.pub.Publish(f.topic, msgs...)
}

func (f *fixedTopic) Close() error { return nil }

// openBuffer opens the pipeline's spool on the store's server, drops the
// queues of sinks no longer configured and opens one queue per sink.
func (r *runner) openBuffer(ctx context.Context, d Deps, store *nats.Conn) error {
	if store == nil {
		return errors.New("no store connection")
	}
	sp, err := spool.Open(ctx, store, r.pl.Buffer.spoolConfig(r.name), d.Logger)
	if err != nil {
		return err
	}
	r.spool = sp
	if err := sp.KeepConsumers(ctx, sortedNames(r.pl.To)); err != nil {
		return err
	}
	for _, s := range r.sinks {
		s.queue, err = sp.NewSubscriber(ctx, spool.SubscriberConfig{
			Durable:     s.name,
			Concurrency: r.pl.Concurrency,
			AckWait:     r.pl.Buffer.AckWait,
			NakDelay:    r.pl.Retry.InitialInterval,
			MaxNakDelay: r.pl.Retry.MaxInterval,
		})
		if err != nil {
			return fmt.Errorf("to.%s: %w", s.name, err)
		}
	}
	return nil
}

// store puts a source message into the buffer; the source is acked once it
// is on disk, nacked when it could not be stored (never dead-lettered:
// nothing is wrong with the message).
func (r *runner) store(msg *message.Message, start time.Time) error {
	if r.tr != nil {
		tracing.Inject(msg.Context(), msg.Metadata) // the sinks' spans continue the trace
	}
	if err := r.spool.Store(msg.Context(), msg); err != nil {
		r.stats.failed.Add(1)
		r.stats.setErr(err)
		r.logger.Warn("buffer did not store a message; the source gets a nack", "message_uuid", msg.UUID, "error", err)
		return err
	}
	r.stats.observe(time.Since(start))
	r.stats.done.Add(1)
	return nil
}

// deliver is the handler of a sink's queue: its when, then its publish with
// the pipeline's retries. A failure goes to the dead letters, or, without
// them, back to the queue, which delivers it again after a delay.
func (r *runner) deliver(s *sink) message.NoPublishHandlerFunc {
	return func(msg *message.Message) (err error) {
		span := r.traceDeliver(msg)
		defer func() { endSpan(span, err, true) }()
		if !s.wants(r, msg) {
			return nil
		}
		if err := s.publish(msg); err != nil {
			r.logger.Warn("sink failed after retries", "sink", s.name, "message_uuid", msg.UUID, "error", err)
			return r.sinksFailed(msg, s.name, err)
		}
		return nil
	}
}
