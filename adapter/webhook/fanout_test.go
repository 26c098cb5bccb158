package webhook

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// TestFanOut1000 sends 1,000 messages to 5 endpoints, one of which is down
// (503) for its first 150 requests. Every healthy endpoint must get every
// message exactly once; the flaky one must get each message once or have
// it in the dead letters, never both, and the counters must agree.
func TestFanOut1000(t *testing.T) {
	const (
		total     = 1000
		downFor   = 150
		callers   = 10
		batchSize = 20
	)
	var flakyHits atomic.Int64
	servers := make([]*server, 5)
	for i := range servers {
		respond := status(http.StatusOK)
		if i == 2 {
			respond = func(_ int, w http.ResponseWriter, _ *http.Request) int {
				if flakyHits.Add(1) <= downFor {
					w.WriteHeader(http.StatusServiceUnavailable)
					return http.StatusServiceUnavailable
				}
				return http.StatusOK
			}
		}
		servers[i] = newServer(t, respond)
	}
	var eps []EndpointConfig
	for i, s := range servers {
		ep := endpointFor("ep"+strconv.Itoa(i), s)
		ep.MaxInFlight = 8
		ep.Retry = RetryConfig{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxElapsedTime: 10 * time.Second, MaxAttempts: 10}
		ep.Breaker = BreakerConfig{Failures: 20, OpenTimeout: 10 * time.Millisecond, HalfOpenRequests: 2}
		eps = append(eps, ep)
	}
	dlq := &dlqRecorder{}
	p := newTestPublisher(t, dlq, nil, eps...)

	ids := make([]string, total)
	for i := range ids {
		ids[i] = watermill.NewUUID()
	}
	var wg sync.WaitGroup
	per := total / callers
	for c := range callers {
		wg.Go(func() {
			for b := c * per; b < (c+1)*per; b += batchSize {
				batch := make([]*message.Message, 0, batchSize)
				for _, id := range ids[b : b+batchSize] {
					batch = append(batch, message.NewMessage(id, []byte(id)))
				}
				if err := p.Publish("t", batch...); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()

	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	dead := map[string]bool{}
	deadZeroAttempts := 0
	for _, m := range dlq.all() {
		if ep := m.Metadata.Get(MetadataEndpoint); ep != "ep2" {
			t.Fatalf("healthy endpoint %s has a dead letter", ep)
		}
		if dead[m.UUID] {
			t.Fatalf("message %s dead-lettered twice", m.UUID)
		}
		dead[m.UUID] = true
		if m.Metadata.Get(MetadataAttempts) == "0" {
			deadZeroAttempts++
		}
	}
	stats := p.Stats()
	for i, s := range servers {
		name := "ep" + strconv.Itoa(i)
		accepted := map[string]bool{}
		for _, r := range s.seen() {
			if r.status != http.StatusOK {
				continue
			}
			id := r.header.Get(HeaderID)
			if accepted[id] {
				t.Fatalf("%s accepted message %s twice", name, id)
			}
			if !want[id] || string(r.body) != id {
				t.Fatalf("%s got unknown message %s or wrong body", name, id)
			}
			accepted[id] = true
		}
		for _, id := range ids {
			switch {
			case accepted[id] && dead[id] && name == "ep2":
				t.Fatalf("%s: message %s both delivered and dead-lettered", name, id)
			case !accepted[id] && !(name == "ep2" && dead[id]):
				t.Fatalf("%s: message %s lost", name, id)
			}
		}
		st := stats.Endpoints[i]
		wantDead := 0
		if name == "ep2" {
			wantDead = len(dead)
		}
		if st.Delivered != uint64(len(accepted)) || st.DeadLettered != uint64(wantDead) {
			t.Errorf("%s stats %+v, server accepted %d, dead letters %d", name, st, len(accepted), wantDead)
		}
		// Every request is either a message's first attempt or a retry.
		if got, want := uint64(s.count()), uint64(total-deadZeroAttempts*b2i(name == "ep2"))+st.Retried; got != want {
			t.Errorf("%s: server saw %d requests, stats say %d", name, got, want)
		}
	}
	if stats.Delivered+stats.DeadLettered != 5*total {
		t.Fatalf("delivered %d + dead-lettered %d != %d", stats.Delivered, stats.DeadLettered, 5*total)
	}
	t.Logf("flaky endpoint: %d delivered, %d dead-lettered, %d retries",
		stats.Endpoints[2].Delivered, stats.Endpoints[2].DeadLettered, stats.Endpoints[2].Retried)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
