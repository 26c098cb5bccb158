package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/time/rate"
)

// DeadLetterReason says why a message was dead-lettered for an endpoint:
// the value of a dead letter's MetadataReason. Read it back with
// DeadLetterReason(msg.Metadata.Get(MetadataReason)).
type DeadLetterReason string

// Reasons a message is dead-lettered for an endpoint.
const (
	ReasonExhausted DeadLetterReason = "exhausted" // retry attempts or time used up
	ReasonRejected  DeadLetterReason = "rejected"  // non-retryable status (4xx)
	ReasonGone      DeadLetterReason = "gone"      // 410 Gone: the endpoint is disabled
	ReasonClosed    DeadLetterReason = "closed"    // the Publisher was closed first
	ReasonCanceled  DeadLetterReason = "canceled"  // the message's context was canceled
	// ReasonBreakerOpen: the endpoint's circuit breaker was open. Such
	// messages are not held back; Replay sends them once it recovers.
	ReasonBreakerOpen DeadLetterReason = "breaker_open"
)

// errGone is the last error of messages refused because an earlier 410
// disabled the endpoint.
var errGone = errors.New("endpoint disabled after 410 Gone")

// maxDrain bounds how much of a response body is read so the connection
// can be reused; webhook responses carry nothing we need.
const maxDrain = 64 << 10

// endpoint is one receiver: its queue, workers' limits, breaker and counters.
type endpoint struct {
	cfg     EndpointConfig
	url     string               // redacted, for logs and dead letters
	attrs   []attribute.KeyValue // of every request's span
	keys    [][]byte
	breaker *gobreaker.CircuitBreaker[struct{}]
	limiter *rate.Limiter
	// queue is unbuffered: a job is handed straight to one of MaxInFlight
	// workers, so no job sits in a buffer when the workers stop.
	queue    chan job
	disabled atomic.Bool
	accepted *acceptedSet

	delivered, retried, deadLettered atomic.Uint64
	// attempts counts HTTP attempts by outcome: index 0 no response, 1-5 the
	// status class (1xx to 5xx).
	attempts [6]atomic.Uint64
}

// job is one message for one endpoint.
type job struct {
	msg   *message.Message
	topic string
	ctx   context.Context // cancels the delivery; carries the trace span
	// deadLetter is false for Replay: a failure is returned, not
	// dead-lettered again.
	deadLetter bool
	result     chan<- error
}

// delivery tracks one job's attempts for the dead-letter metadata.
type delivery struct {
	attempts   int
	lastStatus int
	lastErr    error
	reason     DeadLetterReason
}

// attemptError is a failed HTTP attempt.
type attemptError struct {
	status     int // 0: no response
	err        error
	retry      bool
	retryAfter time.Duration // > 0: the server's Retry-After
}

func (e *attemptError) Error() string {
	if e.status == 0 {
		return e.err.Error()
	}
	return fmt.Sprintf("unexpected status %d", e.status)
}

func (e *attemptError) Unwrap() error { return e.err }

func newEndpoint(cfg EndpointConfig, remember int) (*endpoint, error) {
	ep := &endpoint{cfg: cfg, url: redactURL(cfg.URL), queue: make(chan job), accepted: newAcceptedSet(remember)}
	ep.attrs = spanAttrs(cfg)
	secrets, err := cfg.secrets()
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", cfg.Name, err)
	}
	if len(secrets) > 0 {
		keys, err := decodeSecrets(secrets)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", cfg.Name, err)
		}
		ep.keys = keys
	}
	limit := rate.Inf
	if cfg.RateLimit > 0 {
		limit = rate.Limit(cfg.RateLimit)
	}
	ep.limiter = rate.NewLimiter(limit, cfg.RateBurst)
	failures := uint32(cfg.Breaker.Failures)
	ep.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: uint32(cfg.Breaker.HalfOpenRequests),
		Timeout:     cfg.Breaker.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// A rejected request (400) proves the endpoint is up: only
		// retryable failures say it is unhealthy.
		IsSuccessful: func(err error) bool {
			var ae *attemptError
			return err == nil || errors.As(err, &ae) && !ae.retry && ae.status != http.StatusGone
		},
		// Our own cancellation says nothing about the endpoint.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	return ep, nil
}

// work runs one of the endpoint's MaxInFlight workers until Close.
func (p *Publisher) work(ep *endpoint) {
	defer p.workers.Done()
	for {
		select {
		case j := <-ep.queue:
			j.result <- p.process(ep, j)
		case <-p.closing.Done():
			return
		}
	}
}

// process delivers a job with retries, then dead-letters it on failure.
// A nil result means delivered or dead-lettered.
func (p *Publisher) process(ep *endpoint, j job) error {
	ctx, cancel := context.WithCancelCause(j.ctx)
	defer cancel(nil)
	// Close cancels every delivery at once. AfterFunc runs asynchronously,
	// so an already closed publisher is checked here as well.
	stop := context.AfterFunc(p.closing, func() { cancel(ErrClosed) })
	defer stop()
	if p.closing.Err() != nil {
		cancel(ErrClosed)
	}

	var d delivery
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, p.attempt(ctx, ep, j, &d)
	},
		backoff.WithBackOff(newFullJitter(ep.cfg.Retry)),
		backoff.WithMaxElapsedTime(ep.cfg.Retry.MaxElapsedTime),
	)
	if err == nil {
		ep.delivered.Add(1)
		ep.accepted.add(j.msg.UUID)
		p.logger.Trace("webhook: delivered", p.fields(ep, j, &d))
		return nil
	}
	if ctx.Err() != nil {
		d.reason = ReasonCanceled
		if errors.Is(context.Cause(ctx), ErrClosed) {
			d.reason = ReasonClosed
		}
		if d.lastErr == nil {
			d.lastErr = context.Cause(ctx)
		}
	}
	if d.reason == "" {
		d.reason = ReasonExhausted
	}
	if d.lastErr == nil {
		d.lastErr = err
	}
	return p.fail(ep, j, &d)
}

// attempt makes one HTTP request through the rate limiter and the breaker
// and tells backoff.Retry whether and when to try again.
func (p *Publisher) attempt(ctx context.Context, ep *endpoint, j job, d *delivery) error {
	if ep.disabled.Load() {
		d.reason, d.lastErr = ReasonGone, errGone
		return backoff.Permanent(errGone)
	}
	if err := ep.limiter.Wait(ctx); err != nil {
		return backoff.Permanent(fmt.Errorf("rate limit: %w", err))
	}
	_, err := ep.breaker.Execute(func() (struct{}, error) {
		return struct{}{}, p.send(ctx, ep, j, d)
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		if d.lastErr == nil {
			d.lastErr = err
		}
		if errors.Is(err, gobreaker.ErrOpenState) {
			// Waiting up to the retry budget would hold a caller that
			// publishes one message at a time, and with it the healthy
			// endpoints; the dead letter is replayed later.
			d.reason = ReasonBreakerOpen
			return backoff.Permanent(err)
		}
		// Half-open: the probes in flight decide soon. Waiting costs no
		// attempt; poll at the initial interval.
		return &backoff.RetryAfterError{Duration: min(ep.cfg.Retry.InitialInterval, ep.cfg.Breaker.OpenTimeout)}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return backoff.Permanent(context.Cause(ctx))
	}
	var ae *attemptError
	if !errors.As(err, &ae) {
		return backoff.Permanent(err)
	}
	switch {
	case ae.status == http.StatusGone:
		if !ep.disabled.Swap(true) {
			p.logger.Error("webhook: endpoint answered 410 Gone and is disabled until restart", err,
				watermill.LogFields{"endpoint": ep.cfg.Name, "url": ep.url, "message_uuid": j.msg.UUID}) // the message it answered
		}
		d.reason = ReasonGone
		return backoff.Permanent(err)
	case !ae.retry:
		d.reason = ReasonRejected
		return backoff.Permanent(err)
	case d.attempts >= ep.cfg.Retry.MaxAttempts:
		return backoff.Permanent(err)
	case ae.retryAfter > 0:
		return &backoff.RetryAfterError{Duration: ae.retryAfter}
	}
	p.logger.Debug("webhook: attempt failed, will retry", p.fields(ep, j, d))
	return err
}

// send makes one signed HTTP request, in a span of its own. Its errors are
// *attemptError.
func (p *Publisher) send(ctx context.Context, ep *endpoint, j job, d *delivery) (err error) {
	d.attempts++
	if d.attempts > 1 {
		ep.retried.Add(1)
	}
	ctx, span := p.startSpan(ctx, ep, j, d)
	defer func() { endSpan(span, d, err) }()
	ctx, cancel := context.WithTimeout(ctx, ep.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, ep.cfg.Method, ep.cfg.URL, bytes.NewReader(j.msg.Payload))
	if err != nil {
		// Validate makes this unreachable; the error may quote the URL.
		d.lastErr = errors.New("cannot build request")
		return &attemptError{err: d.lastErr}
	}
	p.setHeaders(req.Header, ep, j)
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))

	resp, err := p.client.Do(req)
	if err != nil {
		ep.attempts[0].Add(1)
		d.lastStatus, d.lastErr = 0, redactErr(err, ep.url)
		return &attemptError{err: d.lastErr, retry: true}
	}
	if class := resp.StatusCode / 100; class >= 1 && class <= 5 {
		ep.attempts[class].Add(1)
	}
	// Drain so the connection is reused; a slow body counts in Timeout.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
	d.lastStatus = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		d.lastErr = nil
		return nil
	}
	ae := &attemptError{status: resp.StatusCode, retry: retryable(resp.StatusCode, ep.cfg.Retry.RetryStatuses)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			// A 0 wait still goes through Retry-After so the backoff does
			// not add its own delay on top.
			ae.retryAfter = max(wait, time.Nanosecond)
		}
	}
	d.lastErr = ae
	return ae
}

func (p *Publisher) setHeaders(h http.Header, ep *endpoint, j job) {
	// Metadata values net/http would refuse are skipped: retrying could
	// never make such a request succeed.
	ct := j.msg.Metadata.Get(ContentTypeMetadata)
	if ct == "" || !validHeaderValue(ct) {
		ct = p.cfg.ContentType
	}
	h.Set("Content-Type", ct)
	for key, name := range p.cfg.MetadataHeaders {
		if v := j.msg.Metadata.Get(key); v != "" && validHeaderValue(v) {
			h.Set(name, v)
		}
	}
	// Static headers come after metadata so a message cannot override
	// the endpoint's Authorization.
	for name, v := range ep.cfg.Headers {
		h.Set(name, v)
	}
	now := time.Now().Unix()
	h.Set(HeaderID, j.msg.UUID)
	h.Set(HeaderTimestamp, strconv.FormatInt(now, 10))
	if ep.keys != nil {
		h.Set(HeaderSignature, sign(ep.keys, j.msg.UUID, now, j.msg.Payload))
	}
}

// fail dead-letters a job, or for Replay returns its error. A non-nil
// result means the message is neither delivered nor dead-lettered.
func (p *Publisher) fail(ep *endpoint, j job, d *delivery) error {
	fields := p.fields(ep, j, d)
	if !j.deadLetter {
		return fmt.Errorf("replay of message %s to endpoint %q failed (%s after %d attempts, last status %d): %w",
			j.msg.UUID, ep.cfg.Name, d.reason, d.attempts, d.lastStatus, d.lastErr)
	}
	dl := message.NewMessage(j.msg.UUID, j.msg.Payload)
	for k, v := range j.msg.Metadata {
		dl.Metadata.Set(k, v)
	}
	dl.Metadata.Set(MetadataEndpoint, ep.cfg.Name)
	dl.Metadata.Set(MetadataURL, ep.url)
	dl.Metadata.Set(MetadataTopic, j.topic)
	dl.Metadata.Set(MetadataAttempts, strconv.Itoa(d.attempts))
	dl.Metadata.Set(MetadataLastStatus, strconv.Itoa(d.lastStatus))
	dl.Metadata.Set(MetadataLastError, d.lastErr.Error())
	dl.Metadata.Set(MetadataReason, string(d.reason))
	if err := p.cfg.DeadLetter.Publish(p.cfg.DeadLetterTopic, dl); err != nil {
		p.logger.Error("webhook: dead-letter publish failed, message not delivered", err, fields)
		return fmt.Errorf("dead-lettering message %s for endpoint %q: %w", j.msg.UUID, ep.cfg.Name, err)
	}
	ep.deadLettered.Add(1)
	p.logger.Error("webhook: message dead-lettered", d.lastErr, fields)
	return nil
}

func (p *Publisher) fields(ep *endpoint, j job, d *delivery) watermill.LogFields {
	return watermill.LogFields{
		"endpoint":     ep.cfg.Name,
		"url":          ep.url,
		"message_uuid": j.msg.UUID,
		"attempts":     d.attempts,
		"last_status":  d.lastStatus,
		"reason":       d.reason,
	}
}

// redactErr replaces the URL that net/http quotes in its errors with the
// redacted one (net/http hides only the password; path and query may
// hold tokens).
func redactErr(err error, redacted string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redacted, Err: ue.Err}
	}
	return err
}

// acceptedSet remembers the last n message UUIDs an endpoint accepted, so
// that a Publish the caller retries (it returned an error because of
// another endpoint) skips this one. A ring evicts the oldest; it grows as
// UUIDs arrive, so a large n costs nothing until it is used.
type acceptedSet struct {
	mu   sync.Mutex
	n    int
	ids  map[string]struct{}
	ring []string // once full, the oldest is at next
	next int
}

func newAcceptedSet(n int) *acceptedSet {
	return &acceptedSet{n: n, ids: map[string]struct{}{}}
}

func (s *acceptedSet) add(id string) {
	if id == "" || s.n <= 0 {
		return // an empty UUID identifies nothing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return
	}
	s.ids[id] = struct{}{}
	if len(s.ring) < s.n {
		s.ring = append(s.ring, id)
		return
	}
	delete(s.ids, s.ring[s.next])
	s.ring[s.next] = id
	s.next = (s.next + 1) % s.n
}

func (s *acceptedSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
