package pipelines_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/loombridge/loombridge/pipelines"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// quic-go's and net/http's idle machinery outlive a test by a moment.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// watermill-redisstream's reader sleeps 500 ms after a failed read (the
		// one Close causes) before it sees the subscriber closed and returns:
		// upstream's, and it ends by itself; seen outliving a loaded run.
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream.(*Subscriber).read"),
	)
}

func startEngine(t testing.TB, cfg *pipelines.Config) *pipelines.Engine {
	t.Helper()
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t)})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeEngine(t, e) })
	return e
}

func closeEngine(t testing.TB, e *pipelines.Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// line is what the file sink writes per message.
type line struct {
	UUID     string            `json:"uuid"`
	Key      string            `json:"key"`
	Metadata map[string]string `json:"metadata"`
	Payload  string            `json:"payload"`
}

func readLines(t testing.TB, path string) []line {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// A sink may be writing as we read: a last line without its newline is not
	// written yet.
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	var out []line
	for _, raw := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("%s: bad line %q: %v", path, raw, err)
		}
		out = append(out, l)
	}
	return out
}

// waitFor polls cond until it holds; the deadline only catches a hang.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// flakyReceiver answers 500 to the first fails attempts of every message,
// then 204, and records each message once it accepted it.
type flakyReceiver struct {
	fails    int
	mu       sync.Mutex
	attempts map[string]int
	accepted map[string]int
}

func newFlakyReceiver(t testing.TB, fails int) (*flakyReceiver, *httptest.Server) {
	r := &flakyReceiver{fails: fails, attempts: map[string]int{}, accepted: map[string]int{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *flakyReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[id]++
	if r.fails < 0 || r.attempts[id] <= r.fails {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.accepted[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *flakyReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.accepted)
}

func fill(s string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(s)
}

// Generate -> Loom (real QUIC on loopback, embedded router) -> file + a
// webhook that fails every message's first two attempts: every message lands
// in both, once in the file, and the counts say so.
func TestEndToEndLoomToFileAndWebhook(t *testing.T) {
	const n = 300
	dir := t.TempDir()
	recv, srv := newFlakyReceiver(t, 2)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  feed:
    from: {type: generate, interval: 0, count: @N@, key: 'k{{mod .N 7}}', payload: 'msg {{.N}}', in_flight: 16}
    to:
      room: {type: loom, connection: local, room: e2e, format: envelope}
  bridge:
    from: {type: loom, connection: local, room: e2e}
    to:
      archive: {type: file, dir: @DIR@, fsync: never}
      hooks:
        type: webhook
        endpoints:
          - {name: flaky, url: @URL@, retry: {initial_interval: 1ms, max_interval: 5ms}, breaker: {failures: 1000000}}
    retry: {initial_interval: 1ms, max_interval: 10ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead}
`, "@N@", fmt.Sprint(n), "@DIR@", dir, "@URL@", srv.URL))
	e := startEngine(t, cfg)
	archive := filepath.Join(dir, "e2e.jsonl")
	waitFor(t, "every message in the file and at the webhook", func() bool {
		return len(readLines(t, archive)) >= n && recv.count() >= n
	})
	waitFor(t, "the pipeline's counts", func() bool { return e.Stats()["bridge"].Done == n })
	closeEngine(t, e)

	lines := readLines(t, archive)
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l.UUID] {
			t.Errorf("message %s written twice", l.UUID)
		}
		seen[l.UUID] = true
		if l.Key == "" || l.Metadata["loom_key"] != l.Key {
			t.Errorf("message %s: key %q, metadata %v: the Loom key did not cross", l.UUID, l.Key, l.Metadata)
		}
		if recv.accepted[l.UUID] != 1 {
			t.Errorf("message %s accepted %d times by the webhook", l.UUID, recv.accepted[l.UUID])
		}
	}
	if len(lines) != n || len(recv.accepted) != n {
		t.Errorf("file has %d lines, webhook accepted %d messages; want %d each", len(lines), len(recv.accepted), n)
	}
	st := e.Stats()
	if st["bridge"].Received != n || st["bridge"].Failed != 0 || st["bridge"].DeadLettered != 0 {
		t.Errorf("bridge stats %+v", st["bridge"])
	}
	if got := st["bridge"].Sinks["hooks"].Published; got != n {
		t.Errorf("hooks published %d, want %d", got, n)
	}
	if lines := readLines(t, filepath.Join(dir, "dead.jsonl")); len(lines) != 0 {
		t.Errorf("%d dead letters, want none", len(lines))
	}
}

// A sink that fails every attempt sends each message to the dead letters
// after its retries, the healthy sink still gets it, and the source acks it
// (the generator, which makes a message again on a nack, stops at count).
func TestPermanentlyFailingSinkGoesToDeadLetters(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	_, srv := newFlakyReceiver(t, -1)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
pipelines:
  p:
    from: {type: generate, interval: 0, count: @N@, in_flight: 4}
    to:
      good: {type: file, dir: @DIR@, topic: good, fsync: never}
      broken:
        type: webhook
        endpoints:
          - {name: down, url: @URL@, retry: {initial_interval: 1ms, max_interval: 2ms, max_attempts: 2}, breaker: {failures: 1000000}}
    retry: {max_retries: 2, initial_interval: 1ms, max_interval: 2ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead, fsync: never}
`, "@N@", fmt.Sprint(n), "@DIR@", dir, "@URL@", srv.URL))
	e := startEngine(t, cfg)
	waitFor(t, "all messages handled", func() bool {
		return e.Stats()["p"].Received-e.Stats()["p"].Failed >= 0 && len(readLines(t, filepath.Join(dir, "dead.jsonl"))) >= n
	})
	waitFor(t, "the good sink", func() bool { return len(readLines(t, filepath.Join(dir, "good.jsonl"))) >= n })
	closeEngine(t, e)

	good := readLines(t, filepath.Join(dir, "good.jsonl"))
	dead := readLines(t, filepath.Join(dir, "dead.jsonl"))
	deadIDs := map[string]bool{}
	for _, d := range dead {
		deadIDs[d.UUID] = true
		if d.Metadata["dlq_endpoint"] != "down" {
			t.Errorf("dead letter %s: metadata %v, want dlq_endpoint=down", d.UUID, d.Metadata)
		}
	}
	for _, g := range good {
		if !deadIDs[g.UUID] {
			t.Errorf("message %s reached the good sink but is not among the dead letters", g.UUID)
		}
	}
	// Each message was made once: acked at the source although a sink failed.
	if st := e.Stats()["p"]; st.Received != n || len(deadIDs) != n {
		t.Errorf("received %d, %d distinct dead letters; want %d each (stats %+v)", st.Received, len(deadIDs), n, st)
	}
}

// A sink whose Publish fails makes the handler fail after the retries:
// Watermill's PoisonQueue puts the message in the pipeline's dead letters,
// naming the pipeline and the sink, and the source acks it.
func TestFailedSinkNamedInDeadLetter(t *testing.T) {
	dir := t.TempDir()
	cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  p:
    from: {type: generate, interval: 0, count: 5, pad_to: 2000}
    to:
      ok: {type: file, dir: @DIR@, topic: ok, fsync: never}
      bad: {type: loom, connection: local, room: r, max_message_bytes: 1000, buffer: {max_bytes: 1000}}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead, fsync: never}
`, "@DIR@", dir))
	e := startEngine(t, cfg)
	waitFor(t, "dead letters", func() bool { return len(readLines(t, filepath.Join(dir, "dead.jsonl"))) >= 5 })
	closeEngine(t, e)
	dead := readLines(t, filepath.Join(dir, "dead.jsonl"))
	for _, d := range dead {
		if d.Metadata[pipelines.MetadataDeadSinks] != "bad" || d.Metadata[pipelines.MetadataDeadPipeline] != "p" || !strings.Contains(d.Metadata["reason_poisoned"], "max_message_bytes") {
			t.Errorf("dead letter metadata %v", d.Metadata)
		}
	}
	st := e.Stats()["p"]
	if len(dead) != 5 || st.Received != 5 || st.Failed != 5 || st.DeadLettered != 5 || st.Sinks["bad"].Retried != 5 || st.Sinks["ok"].Published != 5 {
		t.Errorf("%d dead letters; stats %+v", len(dead), st)
	}
}
