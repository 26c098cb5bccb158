package pipelines_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// phasedReceiver is a webhook endpoint that answers 503 with Retry-After
// while unavailable is set, and records every message it accepted, by
// webhook-id. It also tracks the most requests it had at once.
type phasedReceiver struct {
	unavailable         atomic.Bool
	inFlight, maxFlight atomic.Int64
	mu                  sync.Mutex
	accepted            map[string]int
}

func (r *phasedReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for cur := r.maxFlight.Load(); n > cur && !r.maxFlight.CompareAndSwap(cur, n); cur = r.maxFlight.Load() {
	}
	_, _ = io.Copy(io.Discard, req.Body)
	if r.unavailable.Load() {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.mu.Lock()
	r.accepted[req.Header.Get("webhook-id")]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *phasedReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.accepted)
}

// outagePhase is how long the endpoint refuses connections, then answers
// 503: 60 s each (the acceptance), or LOOMBRIDGE_OUTAGE_SECONDS.
func outagePhase(t *testing.T) time.Duration {
	if s := os.Getenv("LOOMBRIDGE_OUTAGE_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("LOOMBRIDGE_OUTAGE_SECONDS: %v", err)
		}
		return time.Duration(n) * time.Second
	}
	return 60 * time.Second
}

// Loom (embedded router) -> buffer -> a webhook whose endpoint refuses
// connections for a phase, then answers 503 with Retry-After for a phase,
// then recovers; and a healthy file sink beside it. The room never stalls:
// the healthy sink keeps pace with the producer through the outage (at least
// 90 % of what was produced in the outage arrived in it within the outage);
// the webhook gets every message at least once after it recovers; the
// endpoint never has more requests at once than the pipeline's concurrency.
func TestBufferKeepsTheRoomFlowingThroughAWebhookOutage(t *testing.T) {
	t.Parallel()
	phase := outagePhase(t)
	const concurrency = 16
	// The endpoint's address: taken, then let go, so connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	recv := &phasedReceiver{accepted: map[string]int{}}
	dir, buf := t.TempDir(), t.TempDir()
	bridge := fill(`
log: {stats_interval: 0}
buffers: {dir: @BUF@}
connections:
  local: {embedded: true}
pipelines:
  bridge:
    from: {type: loom, connection: local, room: outage}
    buffer: {}
    concurrency: @C@
    retry: {max_retries: 2, initial_interval: 100ms, max_interval: 2s}
    to:
      healthy: {type: file, dir: @DIR@, fsync: never}
      hooks:
        type: webhook
        endpoints:
          - {name: down, url: "http://@ADDR@/hook", timeout: 2s, retry: {initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 3s}, breaker: {failures: 1000000}}
`, "@BUF@", buf, "@DIR@", dir, "@ADDR@", addr, "@C@", strconv.Itoa(concurrency))
	feed := `
  feed:
    from: {type: generate, interval: 10ms, payload: 'msg {{.N}}', pad_to: 1024, in_flight: 16}
    to:
      room: {type: loom, connection: local, room: outage, format: envelope}
`
	cfg := parse(t, bridge+feed)
	e := startEngine(t, cfg)
	healthy := filepath.Join(dir, "outage.jsonl")
	produced := func() uint64 { return e.Stats()["feed"].Done }

	// A first stretch with both sinks healthy would need the endpoint up;
	// the producer's own rate is the measure of "alone" instead: the healthy
	// sink must take what is produced, as it would with no other sink.
	waitFor(t, "the flow to start", func() bool { return countLines(healthy) > 50 })
	var heapMax atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > heapMax.Load() {
				heapMax.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	p0, h0 := produced(), countLines(healthy)
	time.Sleep(phase) // the refusing phase: the outage is the test's subject
	recv.unavailable.Store(true)
	var l2 net.Listener
	waitFor(t, "the endpoint's port", func() bool { l2, err = net.Listen("tcp", addr); return err == nil })
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l2) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("endpoint: %v", err)
		}
	})
	time.Sleep(phase) // the 503 phase
	p1, h1 := produced(), countLines(healthy)
	recv.unavailable.Store(false)
	close(stopSampling)
	<-sampled

	during, got := p1-p0, uint64(h1-h0)
	t.Logf("outage of %s: %d produced, %d reached the healthy sink (%.1f %%); webhook had %d; heap in use at most %d MiB",
		2*phase, during, got, 100*float64(got)/float64(during), recv.count(), heapMax.Load()>>20)
	if during == 0 || float64(got) < 0.9*float64(during) {
		t.Errorf("the healthy sink took %d of the %d messages produced during the outage: it was held back", got, during)
	}
	if recv.count() != 0 {
		t.Errorf("the endpoint accepted %d messages while it was down", recv.count())
	}

	// Stop producing, then every message must reach the recovered endpoint.
	if err := e.Apply(t.Context(), parse(t, bridge)); err != nil {
		t.Fatal(err)
	}
	sent := e.Stats()["feed"].Done
	waitFor(t, "the bridge to take every message produced", func() bool { return e.Stats()["bridge"].Received >= sent })
	total := int(sent)
	waitFor(t, "the webhook to catch up", func() bool { return recv.count() >= total })
	if got := countLines(healthy); got < total {
		t.Errorf("healthy sink has %d of %d", got, total)
	}
	if m := recv.maxFlight.Load(); m > concurrency {
		t.Errorf("the endpoint had %d requests at once; the pipeline's concurrency is %d", m, concurrency)
	}
	var dups int
	recv.mu.Lock()
	for _, c := range recv.accepted {
		dups += c - 1
	}
	recv.mu.Unlock()
	t.Logf("after recovery: %d messages at the webhook, %d accepted twice or more", total, dups)
}
