package pipelines_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loombridge/loombridge/pipelines"
)

// A buffer of 5 messages in front of an endpoint that answers 503: the
// sixth message finds it full, and each when_full policy does what it says,
// with its counter in /metrics.
func TestFullBufferPolicies(t *testing.T) {
	for _, policy := range []string{"reject", "drop_oldest", "block"} {
		t.Run(policy, func(t *testing.T) {
			recv := &phasedReceiver{accepted: map[string]int{}}
			recv.unavailable.Store(true)
			hook := httptest.NewServer(recv)
			t.Cleanup(hook.Close)
			addr := freeAddr(t)
			e := startEngine(t, parse(t, fill(`
log: {stats_interval: 0}
buffers: {dir: @BUF@}
pipelines:
  full:
    from: {type: http, addr: "@ADDR@", path: /in}
    buffer: {max_messages: 5, when_full: @POLICY@}
    retry: {max_retries: 0, initial_interval: 10ms, max_interval: 50ms}
    to:
      hooks:
        type: webhook
        endpoints: [{name: r, url: "@URL@", retry: {max_attempts: 1}, breaker: {failures: 1000000}}]
`, "@BUF@", t.TempDir(), "@ADDR@", addr, "@POLICY@", policy, "@URL@", hook.URL)))
			post := func(i int) int {
				req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/in", bytes.NewReader(nil))
				req.Header.Set("Idempotency-Key", fmt.Sprint(i))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			for i := range 5 {
				if code := post(i); code != http.StatusNoContent {
					t.Fatalf("message %d: HTTP %d with room in the buffer", i, code)
				}
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(e.Collector())
			switch policy {
			case "reject":
				if code := post(5); code != http.StatusInternalServerError {
					t.Errorf("the sixth message: HTTP %d, want 500 (nacked: send it again)", code)
				}
				if got := metricValue(t, reg, "loombridge_buffer_rejected_total", "full"); got != 1 {
					t.Errorf("rejected_total = %v, want 1", got)
				}
				recv.unavailable.Store(false)
				waitFor(t, "the five stored", func() bool { return recv.count() == 5 })
			case "drop_oldest":
				for i := 5; i < 8; i++ {
					if code := post(i); code != http.StatusNoContent {
						t.Errorf("message %d: HTTP %d, want 204 (the oldest makes room)", i, code)
					}
				}
				if got := metricValue(t, reg, "loombridge_buffer_dropped_total", "full"); got != 3 {
					t.Errorf("dropped_total = %v, want 3", got)
				}
				recv.unavailable.Store(false)
				waitFor(t, "the five kept", func() bool { return recv.count() == 5 })
				recv.mu.Lock()
				for i := 3; i < 8; i++ {
					if recv.accepted[fmt.Sprint(i)] == 0 {
						t.Errorf("message %d, one of the five newest, was not delivered", i)
					}
				}
				recv.mu.Unlock()
			case "block":
				done := make(chan int, 1)
				go func() { done <- post(5) }()
				waitFor(t, "the source to wait", func() bool {
					return metricValue(t, reg, "loombridge_buffer_blocked_total", "full") == 1
				})
				select {
				case code := <-done:
					t.Fatalf("the sixth message was answered (HTTP %d) while the buffer was full", code)
				case <-time.After(200 * time.Millisecond): // it still waits
				}
				recv.unavailable.Store(false)
				if code := <-done; code != http.StatusNoContent {
					t.Errorf("the sixth message: HTTP %d once there was room, want 204", code)
				}
				waitFor(t, "all six", func() bool { return recv.count() == 6 })
			}
		})
	}
}

// A buffered pipeline restarted by a reload keeps its queue: what a down
// endpoint had not taken before the reload reaches it after.
func TestBufferKeepsItsQueueAcrossAReload(t *testing.T) {
	recv := &phasedReceiver{accepted: map[string]int{}}
	recv.unavailable.Store(true)
	hook := httptest.NewServer(recv)
	t.Cleanup(hook.Close)
	addr, buf := freeAddr(t), t.TempDir()
	conf := func(concurrency int) string {
		return fill(`
log: {stats_interval: 0}
buffers: {dir: @BUF@}
pipelines:
  q:
    from: {type: http, addr: "@ADDR@", path: /in}
    buffer: {}
    concurrency: @C@
    retry: {max_retries: 0, initial_interval: 10ms, max_interval: 50ms}
    to:
      hooks:
        type: webhook
        endpoints: [{name: r, url: "@URL@", retry: {max_attempts: 1}, breaker: {failures: 1000000}}]
`, "@BUF@", buf, "@ADDR@", addr, "@URL@", hook.URL, "@C@", fmt.Sprint(concurrency))
	}
	e := startEngine(t, parse(t, conf(4)))
	const n = 20
	for i := range n {
		postOne(t, addr, fmt.Sprint(i))
	}
	if err := e.Apply(t.Context(), parse(t, conf(8))); err != nil {
		t.Fatal(err)
	}
	if got := e.Running(); len(got) != 1 {
		t.Fatalf("running after the reload: %v", got)
	}
	recv.unavailable.Store(false)
	waitFor(t, "every message stored before the reload", func() bool { return recv.count() == n })
}

// A sink that fails every attempt sends each buffered message to the dead
// letters, once, with the failed sink named, and its queue drains; the other
// sink gets every message.
func TestBufferedFailuresGoToTheDeadLetters(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	// The stdout sink writes to the engine's Stdout: here a writer that fails.
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), Stdout: failingWriter{}})
	t.Cleanup(func() { closeEngine(t, e) })
	cfg := parse(t, fill(`
log: {stats_interval: 0}
buffers: {dir: @DIR@/buffer}
pipelines:
  dl:
    from: {type: http, addr: "@ADDR@", path: /in}
    buffer: {}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 2ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead}
    to:
      ok: {type: file, dir: @DIR@, topic: ok, fsync: never}
      broken: {type: stdout}
`, "@DIR@", dir, "@ADDR@", addr))
	if err := e.Start(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		postOne(t, addr, fmt.Sprint(i))
	}
	waitFor(t, "every message in ok and in the dead letters", func() bool {
		return len(readLines(t, filepath.Join(dir, "ok.jsonl"))) == n && len(readLines(t, filepath.Join(dir, "dead.jsonl"))) == n
	})
	seen := map[string]bool{}
	for _, l := range readLines(t, filepath.Join(dir, "dead.jsonl")) {
		if seen[l.UUID] {
			t.Errorf("message %s dead-lettered twice", l.UUID)
		}
		seen[l.UUID] = true
		if l.Metadata["dlq_failed_sinks"] != "broken" || l.Metadata["dlq_pipeline"] != "dl" {
			t.Errorf("dead letter %s: metadata %v, want the failed sink named", l.UUID, l.Metadata)
		}
	}
	waitFor(t, "the broken sink's queue to drain", func() bool {
		b := e.Status().(pipelines.Status).Pipelines["dl"].Buffer
		return b != nil && b.Queues["broken"].Messages == 0
	})
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

// postOne posts one message with the given Idempotency-Key and wants 204.
func postOne(t *testing.T, addr, key string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/in", bytes.NewReader([]byte(key)))
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("message %s: HTTP %d", key, resp.StatusCode)
	}
}
