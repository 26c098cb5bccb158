package webhook

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"
)

func TestRetriesUntilSuccess(t *testing.T) {
	s := newServer(t, failFirst(2, http.StatusInternalServerError))
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("a", s))

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"n":1}`))
	if err := p.Publish("orders", msg); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	reqs := s.seen()
	if len(reqs) != 3 {
		t.Fatalf("server saw %d requests, want 2 failures + 1 success", len(reqs))
	}
	for i, r := range reqs {
		if got := r.header.Get(HeaderID); got != msg.UUID {
			t.Errorf("attempt %d: webhook-id %q, want the message UUID %q", i+1, got, msg.UUID)
		}
		if err := Verify(r.body, r.header, time.Minute, testSecret); err != nil {
			t.Errorf("attempt %d: signature does not verify: %v", i+1, err)
		}
	}
	if len(dlq.all()) != 0 {
		t.Fatalf("delivered message was dead-lettered")
	}
	st := endpointStats(t, p, "a")
	if st.Delivered != 1 || st.Retried != 2 || st.DeadLettered != 0 {
		t.Fatalf("stats = %+v, want delivered 1, retried 2", st)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	tests := []struct {
		name   string
		status int
		value  func() string
	}{
		{"429 seconds", http.StatusTooManyRequests, func() string { return "1" }},
		{"503 http-date", http.StatusServiceUnavailable, func() string {
			return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) int {
				if n == 1 {
					w.Header().Set("Retry-After", tt.value())
					w.WriteHeader(tt.status)
					return tt.status
				}
				return 200
			})
			p := newTestPublisher(t, &dlqRecorder{}, nil, endpointFor("a", s))
			if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
				t.Fatal(err)
			}
			reqs := s.seen()
			if len(reqs) != 2 {
				t.Fatalf("server saw %d requests, want 2", len(reqs))
			}
			// The backoff alone waits at most 5ms: a gap near a second
			// can only come from Retry-After. (Lower bound only.)
			if gap := reqs[1].at.Sub(reqs[0].at); gap < 900*time.Millisecond {
				t.Fatalf("retried after %v, before Retry-After", gap)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-5", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTimeoutIsRetriedThenDeadLettered(t *testing.T) {
	s := newServer(t, hang)
	ep := endpointFor("slow", s)
	ep.Timeout = 50 * time.Millisecond
	ep.Retry.MaxAttempts = 2
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, ep)

	msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
	if err := p.Publish("t", msg); err != nil {
		t.Fatal(err)
	}
	// Two attempts, both timed out. Under load the second may time out before
	// the server even sees it, so the count of attempts comes from the dead
	// letter, and the server must have seen at least the first.
	if n := s.count(); n < 1 || n > 2 {
		t.Fatalf("server saw %d requests, want 1 or 2", n)
	}
	dl := dlq.all()
	if len(dl) == 1 && dl[0].Metadata.Get(MetadataAttempts) != "2" {
		t.Fatalf("dead letter after %s attempts, want 2 (timeouts are retried)", dl[0].Metadata.Get(MetadataAttempts))
	}
	if len(dl) != 1 || dl[0].UUID != msg.UUID {
		t.Fatalf("dead letters = %v, want the message", dl)
	}
	md := dl[0].Metadata
	if DeadLetterReason(md.Get(MetadataReason)) != ReasonExhausted || md.Get(MetadataAttempts) != "2" || md.Get(MetadataLastStatus) != "0" {
		t.Fatalf("metadata = %v", md)
	}
	if !strings.Contains(md.Get(MetadataLastError), "deadline exceeded") {
		t.Fatalf("last error %q does not say it timed out", md.Get(MetadataLastError))
	}
}

func TestGoneDisablesEndpoint(t *testing.T) {
	gone := newServer(t, status(http.StatusGone))
	ok := newServer(t, status(http.StatusNoContent))
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("gone", gone), endpointFor("ok", ok))

	for i := range 2 {
		if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if n := gone.count(); n != 1 {
		t.Fatalf("gone endpoint saw %d requests, want 1: 410 is not retried and disables it", n)
	}
	if n := ok.count(); n != 2 {
		t.Fatalf("healthy endpoint saw %d requests, want 2", n)
	}
	dl := dlq.all()
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for _, m := range dl {
		if m.Metadata.Get(MetadataEndpoint) != "gone" || DeadLetterReason(m.Metadata.Get(MetadataReason)) != ReasonGone {
			t.Errorf("dead letter metadata = %v", m.Metadata)
		}
	}
	if a := dl[0].Metadata.Get(MetadataAttempts); a != "1" {
		t.Errorf("first dead letter made %s attempts, want 1", a)
	}
	if st := endpointStats(t, p, "gone"); !st.Disabled || st.DeadLettered != 2 {
		t.Fatalf("stats = %+v, want disabled with 2 dead letters", st)
	}
}

func TestStatusClassification(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		extra      []int
		wantHits   int
		wantReason DeadLetterReason
	}{
		{"400 not retried", 400, nil, 1, ReasonRejected},
		{"404 not retried", 404, nil, 1, ReasonRejected},
		{"400 retried when configured", 400, []int{400}, 3, ReasonExhausted},
		{"408 retried", 408, nil, 3, ReasonExhausted},
		{"425 retried", 425, nil, 3, ReasonExhausted},
		{"429 without Retry-After retried", 429, nil, 3, ReasonExhausted},
		{"500 retried", 500, nil, 3, ReasonExhausted},
		{"302 is no success", 302, nil, 1, ReasonRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, status(tt.status))
			ep := endpointFor("e", s)
			ep.Retry.MaxAttempts = 3
			ep.Retry.RetryStatuses = tt.extra
			dlq := &dlqRecorder{}
			p := newTestPublisher(t, dlq, nil, ep)
			if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
				t.Fatal(err)
			}
			if n := s.count(); n != tt.wantHits {
				t.Errorf("server saw %d requests, want %d", n, tt.wantHits)
			}
			dl := dlq.all()
			if len(dl) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dl))
			}
			md := dl[0].Metadata
			if DeadLetterReason(md.Get(MetadataReason)) != tt.wantReason || md.Get(MetadataLastStatus) != strconv.Itoa(tt.status) {
				t.Fatalf("metadata = %v", md)
			}
		})
	}
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	s := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) int {
		if n <= 2 {
			// Drop the connection without an answer.
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return 0
		}
		return 200
	})
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("a", s))
	if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	if n := s.count(); n != 3 {
		t.Fatalf("server saw %d requests, want 3", n)
	}
	if st := endpointStats(t, p, "a"); st.Delivered != 1 || len(dlq.all()) != 0 {
		t.Fatalf("stats = %+v, dead letters %d; want delivered", st, len(dlq.all()))
	}
}

func TestMaxElapsedTimeBoundsRetries(t *testing.T) {
	s := newServer(t, status(500))
	ep := endpointFor("a", s)
	ep.Retry = RetryConfig{InitialInterval: 5 * time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: 100 * time.Millisecond, MaxAttempts: 1000}
	ep.Breaker.Failures = 1000
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, ep)
	if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	dl := dlq.all()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	attempts, _ := strconv.Atoi(dl[0].Metadata.Get(MetadataAttempts))
	if attempts < 2 || attempts >= 1000 || attempts != s.count() {
		t.Fatalf("attempts %d (server saw %d): want several, stopped by time not by count", attempts, s.count())
	}
}

func TestEndpointsAreIndependent(t *testing.T) {
	good := newServer(t, status(200))
	bad := newServer(t, status(500))
	epBad := endpointFor("bad", bad)
	epBad.Retry.MaxAttempts = 3
	epBad.URL += "/hook?token=TOPSECRET"
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("good", good), epBad)

	msg := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	msg.Metadata.Set("tenant", "t1")
	if err := p.Publish("orders", msg); err != nil {
		t.Fatalf("Publish must succeed once the failure is dead-lettered: %v", err)
	}
	if n := good.count(); n != 1 {
		t.Fatalf("good endpoint saw %d requests, want exactly 1 although bad failed", n)
	}
	if n := bad.count(); n != 3 {
		t.Fatalf("bad endpoint saw %d requests, want 3", n)
	}
	dl := dlq.all()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d := dl[0]
	if d.UUID != msg.UUID || string(d.Payload) != "payload" || d.Metadata.Get("tenant") != "t1" {
		t.Fatalf("dead letter lost the original: uuid %s payload %q metadata %v", d.UUID, d.Payload, d.Metadata)
	}
	want := map[string]string{
		MetadataEndpoint:   "bad",
		MetadataURL:        bad.URL + "/…",
		MetadataTopic:      "orders",
		MetadataAttempts:   "3",
		MetadataLastStatus: "500",
		MetadataLastError:  "unexpected status 500",
		MetadataReason:     string(ReasonExhausted),
	}
	for k, v := range want {
		if got := d.Metadata.Get(k); got != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
}

func TestSlowEndpointDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	slow := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return 200
	})
	fastSrv := newServer(t, status(200))
	epSlow := endpointFor("slow", slow)
	epSlow.MaxInFlight = 1
	p := newTestPublisher(t, &dlqRecorder{}, nil, epSlow, endpointFor("fast", fastSrv))

	msgs := make([]*message.Message, 20)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	done := make(chan error, 1)
	go func() { done <- p.Publish("t", msgs...) }()
	// All 20 reach the fast endpoint while the slow one holds its first.
	waitFor(t, "fast endpoint to get every message", func() bool { return fastSrv.count() == 20 })
	waitFor(t, "slow endpoint to get its first message", func() bool { return slow.count() >= 1 })
	if n := slow.count(); n != 1 {
		t.Fatalf("slow endpoint with max_in_flight 1 saw %d requests", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := slow.count(); n != 20 {
		t.Fatalf("slow endpoint got %d messages, want 20", n)
	}
}

func TestCircuitBreakerStopsRequests(t *testing.T) {
	s := newServer(t, status(500))
	ep := endpointFor("a", s)
	ep.Retry.MaxAttempts = 10
	ep.Retry.MaxElapsedTime = 200 * time.Millisecond
	ep.Breaker = BreakerConfig{Failures: 3, OpenTimeout: time.Hour}
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, ep)
	if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	if n := s.count(); n != 3 {
		t.Fatalf("server saw %d requests, want 3: the breaker opens after 3 failures", n)
	}
	if st := endpointStats(t, p, "a"); st.Breaker != "open" {
		t.Fatalf("breaker is %q, want open", st.Breaker)
	}
	// The message is dead-lettered as soon as the breaker opens, not when
	// its retry budget runs out.
	dl := dlq.all()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if md := dl[0].Metadata; md.Get(MetadataAttempts) != "3" || md.Get(MetadataLastStatus) != "500" || DeadLetterReason(md.Get(MetadataReason)) != ReasonBreakerOpen {
		t.Fatalf("dead letter metadata %v, want 3 attempts, last status 500, reason %s", md, ReasonBreakerOpen)
	}
}

func TestCircuitBreakerHalfOpenProbe(t *testing.T) {
	const openFor = 100 * time.Millisecond
	s := newServer(t, failFirst(3, 500))
	ep := endpointFor("a", s)
	ep.Retry.MaxAttempts = 10
	ep.Breaker = BreakerConfig{Failures: 3, OpenTimeout: openFor}
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, ep)
	first, second, third := message.NewMessage(watermill.NewUUID(), nil), message.NewMessage(watermill.NewUUID(), nil),
		message.NewMessage(watermill.NewUUID(), nil)
	// The first opens the breaker; the second finds it open.
	for _, m := range []*message.Message{first, second} {
		if err := p.Publish("t", m); err != nil {
			t.Fatal(err)
		}
	}
	dl := dlq.all()
	if len(dl) != 2 || dl[1].UUID != second.UUID || dl[1].Metadata.Get(MetadataAttempts) != "0" ||
		DeadLetterReason(dl[1].Metadata.Get(MetadataReason)) != ReasonBreakerOpen {
		t.Fatalf("dead letters = %v, want both messages, the second with 0 attempts and reason %s", dl, ReasonBreakerOpen)
	}
	time.Sleep(openFor)
	if err := p.Publish("t", third); err != nil {
		t.Fatal(err)
	}
	reqs := s.seen()
	if len(reqs) != 4 || reqs[3].status != 200 || reqs[3].header.Get(HeaderID) != third.UUID {
		t.Fatalf("server saw %d requests, want 3 failures then one successful probe", len(reqs))
	}
	if gap := reqs[3].at.Sub(reqs[2].at); gap < openFor*9/10 {
		t.Fatalf("probe came %v after the breaker opened, want >= %v", gap, openFor)
	}
	if st := endpointStats(t, p, "a"); st.Breaker != "closed" || st.Delivered != 1 {
		t.Fatalf("stats = %+v, want delivered with the breaker closed again", st)
	}
	// Replay delivers what the open breaker dead-lettered.
	if err := p.Replay(context.Background(), dl); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if n := s.count(); n != 6 {
		t.Fatalf("server saw %d requests, want 6 after replaying 2", n)
	}
}

// A Watermill handler publishes one message at a time: while one endpoint
// is down, its open breaker must not hold every message back from the
// healthy endpoint for the retry budget.
func TestDeadEndpointDoesNotHoldSequentialPublisher(t *testing.T) {
	const n = 20
	healthy := newServer(t, status(http.StatusOK))
	dead := newServer(t, status(http.StatusServiceUnavailable))
	epDead := endpointFor("dead", dead)
	epDead.Retry = RetryConfig{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxElapsedTime: time.Hour, MaxAttempts: 1000}
	epDead.Breaker = BreakerConfig{Failures: 3, OpenTimeout: time.Hour}
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("healthy", healthy), epDead)

	done := make(chan struct{})
	var pubErr error // read after done; t is not used by the goroutine, which may outlive a failed test
	go func() {
		defer close(done)
		for range n {
			if pubErr = p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); pubErr != nil {
				return
			}
		}
	}()
	waitFor(t, "the healthy endpoint to get every message", func() bool { return healthy.count() == n })
	<-done
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	dl := dlq.all()
	if len(dl) != n {
		t.Fatalf("%d dead letters for the dead endpoint, want %d", len(dl), n)
	}
	for _, m := range dl[1:] {
		if r := DeadLetterReason(m.Metadata.Get(MetadataReason)); r != ReasonBreakerOpen || m.Metadata.Get(MetadataEndpoint) != "dead" {
			t.Fatalf("dead letter for %s with reason %s, want dead and %s", m.Metadata.Get(MetadataEndpoint), r, ReasonBreakerOpen)
		}
	}
	if c := dead.count(); c != 3 {
		t.Fatalf("dead endpoint saw %d requests, want 3 (then the breaker is open)", c)
	}
}

// A failed dead-letter publish makes Publish return an error; the caller
// (router nack, retry middleware) publishes again. Endpoints that accepted
// the message the first time must not get it twice.
func TestRetriedPublishSkipsAcceptedEndpoints(t *testing.T) {
	a := newServer(t, status(http.StatusOK))
	b := newServer(t, status(http.StatusBadRequest))
	dlq := &dlqRecorder{err: errors.New("dlq down")}
	p := newTestPublisher(t, dlq, nil, endpointFor("a", a), endpointFor("b", b))
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	if err := p.Publish("t", m); err == nil || !strings.Contains(err.Error(), "dlq down") {
		t.Fatalf("first Publish = %v, want the dead-letter error", err)
	}
	dlq.mu.Lock()
	dlq.err = nil
	dlq.mu.Unlock()
	if err := p.Publish("t", m); err != nil {
		t.Fatalf("retried Publish: %v", err)
	}
	if n := a.count(); n != 1 {
		t.Fatalf("endpoint a received message %s %d times; it accepted it the first time", m.UUID, n)
	}
	if n := b.count(); n != 2 {
		t.Fatalf("endpoint b saw %d requests, want 2 (it never accepted)", n)
	}
	if dl := dlq.all(); len(dl) != 1 || dl[0].Metadata.Get(MetadataEndpoint) != "b" {
		t.Fatalf("dead letters = %v, want one for b", dl)
	}
}

// The memory of accepted messages is bounded: the oldest is forgotten.
func TestRememberAcceptedIsBounded(t *testing.T) {
	a := newServer(t, status(http.StatusOK))
	p, err := NewPublisher(PublisherConfig{Endpoints: []EndpointConfig{endpointFor("a", a)}, DeadLetter: &dlqRecorder{}, RememberAccepted: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ms := []*message.Message{
		message.NewMessage("m1", nil), message.NewMessage("m2", nil), message.NewMessage("m3", nil),
	}
	for _, m := range ms {
		if err := p.Publish("t", m); err != nil {
			t.Fatal(err)
		}
	}
	// m2 and m3 are remembered, m1 was evicted by m3.
	for _, m := range []*message.Message{ms[2], ms[0]} {
		if err := p.Publish("t", m); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, r := range a.seen() {
		ids = append(ids, r.header.Get(HeaderID))
	}
	if got := strings.Join(ids, ","); got != "m1,m2,m3,m1" {
		t.Fatalf("requests %s, want m1,m2,m3,m1", got)
	}
}

func TestMaxInFlight(t *testing.T) {
	var cur, peak atomic.Int32
	s := newServer(t, func(int, http.ResponseWriter, *http.Request) int {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
		cur.Add(-1)
		return 200
	})
	ep := endpointFor("a", s)
	ep.MaxInFlight = 3
	p := newTestPublisher(t, &dlqRecorder{}, nil, ep)
	msgs := make([]*message.Message, 30)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	if err := p.Publish("t", msgs...); err != nil {
		t.Fatal(err)
	}
	if got := peak.Load(); got > 3 || got < 2 {
		t.Fatalf("peak concurrency %d, want up to max_in_flight 3 (and more than 1)", got)
	}
	if n := s.count(); n != 30 {
		t.Fatalf("server saw %d requests, want 30", n)
	}
}

func TestRateLimit(t *testing.T) {
	s := newServer(t, status(200))
	ep := endpointFor("a", s)
	ep.RateLimit = 50 // one request per 20ms
	ep.MaxInFlight = 6
	p := newTestPublisher(t, &dlqRecorder{}, nil, ep)
	msgs := make([]*message.Message, 6)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	start := time.Now()
	if err := p.Publish("t", msgs...); err != nil {
		t.Fatal(err)
	}
	reqs := s.seen()
	last := reqs[len(reqs)-1].at
	// Burst 1: the 5 requests after the first need 5 more tokens.
	if took := last.Sub(start); took < 90*time.Millisecond {
		t.Fatalf("6 requests at 50/s took %v, want >= 100ms", took)
	}
}

func TestHeadersAndBody(t *testing.T) {
	newSecret := "whsec_" + "c2VjcmV0LXR3by1mb3ItdGVzdHM="
	s := newServer(t, status(202))
	ep := endpointFor("a", s)
	ep.Method = http.MethodPut
	ep.Headers = map[string]string{"Authorization": "Bearer abc", "X-Static": "1"}
	ep.Secrets = []string{testSecret, newSecret}
	p, err := NewPublisher(PublisherConfig{
		Endpoints:       []EndpointConfig{ep},
		DeadLetter:      &dlqRecorder{},
		MetadataHeaders: map[string]string{"tenant": "X-Tenant", "Authorization": "Authorization"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	traced := msgWithContext(trace.ContextWithSpanContext(context.Background(), sc), `{"a":1}`)
	traced.Metadata.Set("tenant", "acme")
	traced.Metadata.Set("Authorization", "Bearer from-message")
	traced.Metadata.Set(ContentTypeMetadata, "text/plain\r\nX-Injected: 1") // refused, default used
	typed := message.NewMessage(watermill.NewUUID(), []byte("<x/>"))
	typed.Metadata.Set(ContentTypeMetadata, "application/xml")

	if err := p.Publish("t", traced); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish("t", typed); err != nil {
		t.Fatal(err)
	}
	reqs := s.seen()
	if len(reqs) != 2 {
		t.Fatalf("server saw %d requests", len(reqs))
	}
	r := reqs[0]
	checks := map[string]string{
		"method":        r.method,
		"body":          string(r.body),
		"Content-Type":  r.header.Get("Content-Type"),
		"X-Tenant":      r.header.Get("X-Tenant"),
		"X-Static":      r.header.Get("X-Static"),
		"Authorization": r.header.Get("Authorization"),
		"traceparent":   r.header.Get("traceparent"),
		HeaderID:        r.header.Get(HeaderID),
	}
	want := map[string]string{
		"method":        "PUT",
		"body":          `{"a":1}`,
		"Content-Type":  DefaultContentType,
		"X-Tenant":      "acme",
		"X-Static":      "1",
		"Authorization": "Bearer abc", // the endpoint's, not the message's
		"traceparent":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		HeaderID:        traced.UUID,
	}
	for k, v := range want {
		if checks[k] != v {
			t.Errorf("%s = %q, want %q", k, checks[k], v)
		}
	}
	if n := len(strings.Fields(r.header.Get(HeaderSignature))); n != 2 {
		t.Errorf("%d signatures, want one per secret", n)
	}
	for _, sec := range []string{testSecret, newSecret} {
		if err := Verify(r.body, r.header, time.Minute, sec); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if inj := r.header.Get("X-Injected"); inj != "" {
		t.Errorf("header injected from metadata")
	}
	if ct := reqs[1].header.Get("Content-Type"); ct != "application/xml" {
		t.Errorf("Content-Type from metadata = %q", ct)
	}
	if tp := reqs[1].header.Get("traceparent"); tp != "" {
		t.Errorf("traceparent %q sent without a span", tp)
	}
}

// Secrets in the URL (user info, query, and the path, where Slack, Discord
// and Teams put theirs) and in headers never reach logs, dead letters or
// errors.
func TestSecretsNeverLogged(t *testing.T) {
	const token, auth, pathSecret = "TOKEN-IN-QUERY", "Bearer AUTH-HEADER-VALUE", "PATH-SECRET"
	bad := newServer(t, status(500))
	dead := newServer(t, status(200))
	deadURL := dead.URL
	dead.Close() // connection refused: the error quotes the URL
	logger := watermill.NewCaptureLogger()
	dlq := &dlqRecorder{}
	var eps []EndpointConfig
	for i, u := range []string{bad.URL, deadURL} {
		ep := endpointFor("e"+strconv.Itoa(i), bad)
		ep.URL = strings.Replace(u, "http://", "http://user:PASSWORD@", 1) + "/services/T0/" + pathSecret + "?token=" + token
		ep.Headers = map[string]string{"Authorization": auth}
		ep.Retry.MaxAttempts = 2
		eps = append(eps, ep)
	}
	p := newTestPublisher(t, dlq, logger, eps...)
	if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, msgs := range logger.Captured() {
		for _, m := range msgs {
			all.WriteString(m.Msg + " " + errString(m.Err) + " ")
			for k, v := range m.Fields {
				all.WriteString(k + "=" + toString(v) + " ")
			}
		}
	}
	dl := dlq.all()
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for _, m := range dl {
		for k, v := range m.Metadata {
			all.WriteString(k + "=" + v + " ")
		}
	}
	// Errors: a replay that fails again returns the last error of each.
	err := p.Replay(context.Background(), dl)
	if err == nil {
		t.Fatal("Replay to failing endpoints returned nil")
	}
	all.WriteString(err.Error())
	text := all.String()
	if !strings.Contains(text, "connection refused") {
		t.Fatalf("expected the network error to be logged, got %q", text)
	}
	for _, secret := range []string{token, auth, pathSecret, "AUTH-HEADER-VALUE", "PASSWORD", strings.TrimPrefix(testSecret, "whsec_")} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q leaked into logs or dead letters: %s", secret, text)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if i, ok := v.(int); ok {
		return strconv.Itoa(i)
	}
	return ""
}

func TestCloseDeadLettersPending(t *testing.T) {
	s := newServer(t, hang)
	dlq := &dlqRecorder{}
	p, err := NewPublisher(PublisherConfig{Endpoints: []EndpointConfig{endpointFor("a", s)}, DeadLetter: dlq}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*message.Message{
		message.NewMessage(watermill.NewUUID(), nil),
		message.NewMessage(watermill.NewUUID(), nil),
		message.NewMessage(watermill.NewUUID(), nil),
	}
	done := make(chan error, 1)
	go func() { done <- p.Publish("t", msgs...) }()
	waitFor(t, "the first request", func() bool { return s.count() > 0 })

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish after Close dead-lettered everything, want nil, got %v", err)
	}
	dl := dlq.all()
	if len(dl) != len(msgs) {
		t.Fatalf("%d dead letters, want %d: nothing may be lost on Close", len(dl), len(msgs))
	}
	for _, m := range dl {
		if DeadLetterReason(m.Metadata.Get(MetadataReason)) != ReasonClosed {
			t.Errorf("reason %q, want closed", DeadLetterReason(m.Metadata.Get(MetadataReason)))
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
}

func TestMessageContextCancels(t *testing.T) {
	s := newServer(t, hang)
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, endpointFor("a", s))
	ctx, cancel := context.WithCancel(context.Background())
	msg := msgWithContext(ctx, "x")
	done := make(chan error, 1)
	go func() { done <- p.Publish("t", msg) }()
	waitFor(t, "the request", func() bool { return s.count() > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v, want nil (dead-lettered)", err)
	}
	dl := dlq.all()
	if len(dl) != 1 || DeadLetterReason(dl[0].Metadata.Get(MetadataReason)) != ReasonCanceled {
		t.Fatalf("dead letters = %v, want one with reason canceled", dl)
	}
	if n := s.count(); n != 1 {
		t.Fatalf("server saw %d requests after cancel, want 1", n)
	}
}

func TestDeadLetterFailureIsReturned(t *testing.T) {
	s := newServer(t, status(400))
	dlq := &dlqRecorder{err: errors.New("disk full")}
	p := newTestPublisher(t, dlq, nil, endpointFor("a", s))
	err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Publish = %v, want the dead-letter error", err)
	}
}

func TestReplay(t *testing.T) {
	var up atomic.Bool
	flaky := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) int {
		if up.Load() {
			return 200
		}
		w.WriteHeader(500)
		return 500
	})
	good := newServer(t, status(200))
	epFlaky := endpointFor("flaky", flaky)
	epFlaky.Retry.MaxAttempts = 2
	dlq := &dlqRecorder{}
	p, err := NewPublisher(PublisherConfig{
		Endpoints:       []EndpointConfig{endpointFor("good", good), epFlaky},
		DeadLetter:      dlq,
		MetadataHeaders: map[string]string{"tenant": "X-Tenant"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	msg := message.NewMessage(watermill.NewUUID(), []byte("hello"))
	msg.Metadata.Set("tenant", "acme")
	if err := p.Publish("t", msg); err != nil {
		t.Fatal(err)
	}
	dl := dlq.all()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}

	// Still down: the replay fails, is reported, and is not dead-lettered again.
	if err := p.Replay(context.Background(), dl); err == nil || !strings.Contains(err.Error(), msg.UUID) {
		t.Fatalf("failed Replay = %v, want an error naming the message", err)
	}
	if n := len(dlq.all()); n != 1 {
		t.Fatalf("failed replay added dead letters: %d", n)
	}

	up.Store(true)
	before := flaky.count()
	if err := p.Replay(context.Background(), dl); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	reqs := flaky.seen()[before:]
	if len(reqs) != 1 {
		t.Fatalf("flaky endpoint saw %d replayed requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.header.Get(HeaderID) != msg.UUID || string(r.body) != "hello" || r.header.Get("X-Tenant") != "acme" {
		t.Fatalf("replayed request differs from the original: id %q body %q tenant %q",
			r.header.Get(HeaderID), r.body, r.header.Get("X-Tenant"))
	}
	if n := good.count(); n != 1 {
		t.Fatalf("good endpoint saw %d requests, want 1: replay goes to the failed endpoint only", n)
	}

	unknown := message.NewMessage(watermill.NewUUID(), nil)
	unknown.Metadata.Set(MetadataEndpoint, "nope")
	if err := p.Replay(context.Background(), []*message.Message{unknown}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("Replay to unknown endpoint = %v", err)
	}
}

func TestFullJitter(t *testing.T) {
	j := newFullJitter(RetryConfig{InitialInterval: 10 * time.Millisecond, MaxInterval: 80 * time.Millisecond, Multiplier: 2})
	j.Reset()
	ceilings := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, c := range ceilings {
		c *= time.Millisecond
		if d := j.NextBackOff(); d < 0 || d > c {
			t.Fatalf("wait %d = %v, want within [0, %v]", i, d, c)
		}
	}
	// Full jitter spreads over the whole range, not around the ceiling.
	low := 0
	for range 1000 {
		if j.NextBackOff() < 40*time.Millisecond {
			low++
		}
	}
	if low == 0 || low == 1000 {
		t.Fatalf("%d of 1000 waits below half the ceiling: not uniform over [0, ceiling]", low)
	}
}

// TestConcurrentPublish covers concurrent callers sharing the queues.
func TestConcurrentPublish(t *testing.T) {
	s := newServer(t, status(200))
	p := newTestPublisher(t, &dlqRecorder{}, nil, endpointFor("a", s))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				if err := p.Publish("t", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := s.count(); n != 80 {
		t.Fatalf("server saw %d requests, want 80", n)
	}
}

// secrets_file adds secrets from a file, one a line; each signs, and a bad
// line is reported by file and line, never by content.
func TestSecretsFile(t *testing.T) {
	const a, b = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
	dir := t.TempDir()
	path := filepath.Join(dir, "secrets")
	if err := os.WriteFile(path, []byte("# rotated 2026-12\n\n"+b+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, status(204))
	ep := endpointFor("e", srv)
	ep.Secrets = []string{a}
	ep.SecretsFile = path
	p := newTestPublisher(t, &dlqRecorder{}, watermill.NopLogger{}, ep)
	if err := p.Publish("t", message.NewMessage("id-1", []byte("body"))); err != nil {
		t.Fatal(err)
	}
	req := srv.seen()[0]
	for _, s := range []string{a, b} {
		if err := Verify(req.body, req.header, time.Minute, s); err != nil {
			t.Errorf("not signed with one of the secrets: %v", err)
		}
	}

	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(a+"\nNOT-A-SECRET-VALUE\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{bad: "secrets_file: " + bad + " line 2", filepath.Join(dir, "none"): "secrets_file: open"} {
		cfg := PublisherConfig{Endpoints: []EndpointConfig{{Name: "e", URL: "http://127.0.0.1:1/x", SecretsFile: file}}, DeadLetter: &dlqRecorder{}}
		cfg.SetDefaults()
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "NOT-A-SECRET") {
			t.Errorf("secrets_file %s: error %v, want %q without the content", file, err, want)
		}
	}
}
