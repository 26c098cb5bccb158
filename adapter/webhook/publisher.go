// Package webhook is a Watermill publisher that fans every message out to
// several HTTP endpoints (webhooks).
//
// Each endpoint is delivered to independently: its own workers
// (max_in_flight), rate limit, circuit breaker and retry schedule
// (exponential backoff with full jitter, bounded by attempts and total
// time, honouring Retry-After). A message an endpoint cannot take is
// published to a dead-letter publisher for that endpoint only, so an
// endpoint that accepted it never receives it twice; Replay sends dead
// letters again. Requests are signed per Standard Webhooks (Sign, Verify)
// and carry the W3C trace context (traceparent, tracestate, baggage) of a
// span made for each request (HTTP client semantic conventions), a child of
// the message's context.
//
// Publish returns nil once every endpoint has accepted each message or it
// has been dead-lettered for that endpoint. Because of the retry budget
// (24h by default) that can take long; endpoints progress concurrently, so
// a slow one does not delay the others. An endpoint that keeps failing
// opens its circuit breaker; while it is open, its messages are
// dead-lettered at once with reason ReasonBreakerOpen instead of waiting, so
// a caller that publishes one message at a time (a Watermill handler)
// keeps delivering to the healthy endpoints. Replay sends those dead
// letters once the endpoint is back.
//
// Logs, errors and dead letters show an endpoint URL only as
// scheme://host[:port] followed by "/…": user info, path and query may
// hold secrets (Slack, Discord and Teams put their token in the path).
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Metadata set on dead letters, next to the original message's metadata.
// Replay reads MetadataEndpoint and strips all of them.
const (
	MetadataEndpoint   = "dlq_endpoint"    // endpoint name
	MetadataURL        = "dlq_url"         // endpoint URL as scheme://host[:port], the rest redacted
	MetadataTopic      = "dlq_topic"       // topic given to Publish
	MetadataAttempts   = "dlq_attempts"    // HTTP requests made
	MetadataLastStatus = "dlq_last_status" // last HTTP status, 0 if none
	MetadataLastError  = "dlq_last_error"  // last error, without secrets
	MetadataReason     = "dlq_reason"      // a DeadLetterReason
)

const metadataPrefix = "dlq_"

// ErrClosed is returned by Publish and Replay after Close.
var ErrClosed = errors.New("webhook: publisher closed")

// Publisher is a Watermill message.Publisher delivering every message to
// all configured endpoints. It is safe for concurrent use.
type Publisher struct {
	cfg       PublisherConfig
	logger    watermill.LoggerAdapter
	client    *http.Client
	ownClient bool
	tracer    trace.Tracer
	endpoints []*endpoint
	byName    map[string]*endpoint

	closing  context.Context
	close    context.CancelFunc
	mu       sync.RWMutex // guards closed against inflight.Add
	closed   bool
	inflight sync.WaitGroup // Publish and Replay calls
	workers  sync.WaitGroup
	once     sync.Once
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher validates cfg and starts each endpoint's workers.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	ownClient := cfg.HTTPClient == nil
	// Copy what setDefaults modifies so the caller's config stays as given.
	cfg.Endpoints = append([]EndpointConfig(nil), cfg.Endpoints...)
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: invalid config: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		cfg:       cfg,
		logger:    logger,
		client:    cfg.HTTPClient,
		ownClient: ownClient,
		byName:    map[string]*endpoint{},
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	p.tracer = tp.Tracer("github.com/loombridge/loombridge/adapter/webhook")
	for _, ec := range cfg.Endpoints {
		ep, err := newEndpoint(ec, cfg.RememberAccepted)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		p.endpoints = append(p.endpoints, ep)
		p.byName[ec.Name] = ep
	}
	p.closing, p.close = context.WithCancel(context.Background())
	for _, ep := range p.endpoints {
		for range ep.cfg.MaxInFlight {
			p.workers.Add(1)
			go p.work(ep)
		}
	}
	return p, nil
}

// Publish delivers msgs to every endpoint and returns when each message has
// been accepted by, or dead-lettered for, each endpoint. The topic is only
// recorded in dead letters. Each message's context cancels its delivery;
// what is then undelivered is dead-lettered with reason "canceled" (and
// "closed" on Close), so Publish still returns nil and nothing is lost or
// sent twice. An error means a dead letter could not be published: that
// message may be lost for that endpoint unless the caller retries it. A
// retry (the same UUID) skips the endpoints that accepted the message,
// within the last remember_accepted messages of each endpoint.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	jobs := make(map[*endpoint][]job, len(p.endpoints))
	for _, ep := range p.endpoints {
		for _, m := range msgs {
			if ep.accepted.has(m.UUID) {
				p.logger.Debug("webhook: endpoint accepted this message before, not sending it again",
					watermill.LogFields{"endpoint": ep.cfg.Name, "message_uuid": m.UUID})
				continue
			}
			jobs[ep] = append(jobs[ep], job{msg: m, topic: topic, ctx: m.Context(), deadLetter: true})
		}
	}
	if err := p.run(jobs); err != nil {
		return fmt.Errorf("webhook: publish to topic %q: %w", topic, err)
	}
	return nil
}

// Replay sends dead letters (as published by this package) again, each to
// the endpoint named in its MetadataEndpoint only, with that endpoint's
// retries. The message keeps its UUID (the webhook-id), payload and
// original metadata; ctx cancels it. A dead letter whose endpoint has
// accepted that UUID since (a retried Publish) is skipped as done. A replay
// that fails again is not dead-lettered again: the returned error lists
// each failed or unknown message so the caller can keep it.
func (p *Publisher) Replay(ctx context.Context, deadLetters []*message.Message) error {
	jobs := map[*endpoint][]job{}
	var errs []error
	for _, dl := range deadLetters {
		name := dl.Metadata.Get(MetadataEndpoint)
		ep := p.byName[name]
		if ep == nil {
			errs = append(errs, fmt.Errorf("replay of message %s: unknown endpoint %q", dl.UUID, name))
			continue
		}
		if ep.accepted.has(dl.UUID) {
			continue
		}
		m := message.NewMessage(dl.UUID, dl.Payload)
		for k, v := range dl.Metadata {
			if !strings.HasPrefix(k, metadataPrefix) {
				m.Metadata.Set(k, v)
			}
		}
		m.SetContext(ctx)
		jobs[ep] = append(jobs[ep], job{msg: m, topic: dl.Metadata.Get(MetadataTopic), ctx: ctx})
	}
	errs = append(errs, p.run(jobs))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("webhook: replay: %w", err)
	}
	return nil
}

// run hands the jobs to the endpoints' workers and waits for every
// result. One feeder per endpoint keeps a slow endpoint, whose workers are
// busy, from holding back the jobs of the others.
func (p *Publisher) run(jobs map[*endpoint][]job) error {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrClosed
	}
	p.inflight.Add(1)
	p.mu.RUnlock()
	defer p.inflight.Done()

	n := 0
	for _, js := range jobs {
		n += len(js)
	}
	results := make(chan error, n)
	var feeders sync.WaitGroup
	for ep, js := range jobs {
		feeders.Go(func() {
			for _, j := range js {
				j.result = results
				select {
				case ep.queue <- j:
				case <-p.closing.Done():
					results <- p.fail(ep, j, &delivery{reason: ReasonClosed, lastErr: ErrClosed})
				case <-j.ctx.Done():
					results <- p.fail(ep, j, &delivery{reason: ReasonCanceled, lastErr: context.Cause(j.ctx)})
				}
			}
		})
	}
	var errs []error
	for range n {
		if err := <-results; err != nil {
			errs = append(errs, err)
		}
	}
	feeders.Wait()
	return errors.Join(errs...)
}

// Close stops all deliveries promptly: messages not yet delivered are
// dead-lettered with reason "closed" and the pending Publish calls return.
// Close waits for that, leaves no goroutine behind and is idempotent. It
// does not close the dead-letter publisher, which the caller owns.
func (p *Publisher) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.close()
		p.inflight.Wait()
		p.workers.Wait()
		if p.ownClient {
			p.client.CloseIdleConnections()
		}
	})
	return nil
}

// Stats are the publisher's counters since NewPublisher.
type Stats struct {
	Delivered    uint64 // message deliveries accepted (2xx), all endpoints
	Retried      uint64 // HTTP attempts after the first, all endpoints
	DeadLettered uint64 // dead letters published, all endpoints
	Endpoints    []EndpointStats
}

// EndpointStats are one endpoint's counters and state.
type EndpointStats struct {
	Name         string
	Delivered    uint64
	Retried      uint64
	DeadLettered uint64
	Disabled     bool   // after 410 Gone
	Breaker      string // "closed", "half-open" or "open"
	// Attempts counts HTTP attempts by outcome: "1xx" to "5xx" by status class,
	// "error" when no response came (refused, timeout, TLS).
	Attempts map[string]uint64
}

// Stats returns a snapshot of the counters, endpoints in config order.
func (p *Publisher) Stats() Stats {
	var s Stats
	for _, ep := range p.endpoints {
		e := EndpointStats{
			Name:         ep.cfg.Name,
			Delivered:    ep.delivered.Load(),
			Retried:      ep.retried.Load(),
			DeadLettered: ep.deadLettered.Load(),
			Disabled:     ep.disabled.Load(),
			Breaker:      ep.breaker.State().String(),
			Attempts:     map[string]uint64{"error": ep.attempts[0].Load()},
		}
		for class := 1; class <= 5; class++ {
			e.Attempts[fmt.Sprintf("%dxx", class)] = ep.attempts[class].Load()
		}
		s.Delivered += e.Delivered
		s.Retried += e.Retried
		s.DeadLettered += e.DeadLettered
		s.Endpoints = append(s.Endpoints, e)
	}
	return s
}
