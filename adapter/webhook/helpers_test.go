package webhook

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"
)

// TestMain proves, after all tests, that Close (and the closed test
// servers) left no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// dlqRecorder is an in-memory dead-letter message.Publisher.
type dlqRecorder struct {
	mu   sync.Mutex
	msgs []*message.Message
	err  error // returned by Publish when set
}

func (d *dlqRecorder) Publish(topic string, msgs ...*message.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	d.msgs = append(d.msgs, msgs...)
	return nil
}

func (d *dlqRecorder) Close() error { return nil }

func (d *dlqRecorder) all() []*message.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*message.Message(nil), d.msgs...)
}

// request is what a test server saw.
type request struct {
	at     time.Time
	method string
	header http.Header
	body   []byte
	status int
}

// server is a real httptest server whose answers are chosen by respond,
// called with the 1-based number of the request.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	requests []request
}

func newServer(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request) int) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		n := len(s.requests) + 1
		s.requests = append(s.requests, request{at: time.Now(), method: r.Method, header: r.Header.Clone(), body: body})
		s.mu.Unlock()
		status := respond(n, w, r)
		s.mu.Lock()
		s.requests[n-1].status = status
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

// status answers every request with code.
func status(code int) func(int, http.ResponseWriter, *http.Request) int {
	return func(_ int, w http.ResponseWriter, _ *http.Request) int {
		w.WriteHeader(code)
		return code
	}
}

// failFirst answers the first n requests with code, then 200.
func failFirst(n, code int) func(int, http.ResponseWriter, *http.Request) int {
	return func(i int, w http.ResponseWriter, _ *http.Request) int {
		if i <= n {
			w.WriteHeader(code)
			return code
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
}

// hang answers only when the client gives up.
func hang(_ int, _ http.ResponseWriter, r *http.Request) int {
	<-r.Context().Done()
	return 0
}

func (s *server) seen() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...)
}

func (s *server) count() int { return len(s.seen()) }

// fast is a retry schedule of milliseconds so tests stay quick.
func fast() RetryConfig {
	return RetryConfig{
		InitialInterval: time.Millisecond,
		MaxInterval:     5 * time.Millisecond,
		MaxElapsedTime:  10 * time.Second,
		MaxAttempts:     5,
	}
}

func endpointFor(name string, s *server) EndpointConfig {
	// The attempt timeout is a hang detector: on a loaded machine a shorter one
	// times out requests the server then accepts, and the retry is a duplicate.
	// Tests of timeouts set their own.
	return EndpointConfig{Name: name, URL: s.URL, Secrets: []string{testSecret}, Retry: fast(), Timeout: 2 * time.Minute}
}

func newTestPublisher(t *testing.T, dlq *dlqRecorder, logger watermill.LoggerAdapter, eps ...EndpointConfig) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{Endpoints: eps, DeadLetter: dlq}, logger)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// waitFor polls cond; it fails the test only if cond never holds, so it
// is a liveness check, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func endpointStats(t *testing.T, p *Publisher, name string) EndpointStats {
	t.Helper()
	for _, e := range p.Stats().Endpoints {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no stats for endpoint %q", name)
	return EndpointStats{}
}

func msgWithContext(ctx context.Context, payload string) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(payload))
	m.SetContext(ctx)
	return m
}
