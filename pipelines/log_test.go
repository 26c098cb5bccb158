package pipelines_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
	"github.com/loombridge/loombridge/pipelines"
)

// testLogger sends the engine's log to the test's log, shown on failure.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// Every line about a message carries the pipeline and the message's UUID,
// under the same keys, whoever logs it: the engine (slog), Watermill's
// router and the adapters (through the engine's watermill.LoggerAdapter). A
// pipeline logs at debug level, as JSON, while its messages fail: a webhook
// that answers 500 (its own retries, then its dead letters), a Loom sink
// that refuses every message as too large, one whose router is unreachable
// (its copies dropped at close), one whose token the router refuses (its
// batches resent), and a when that fails on every payload.
func TestEveryMessageLogLineNamesPipelineAndMessage(t *testing.T) {
	const n = 6
	dir := t.TempDir()
	_, hook := newFlakyReceiver(t, -1)
	srv, err := loomtest.Start(loomtest.Config{Auth: loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{{Token: "another-token"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fill(`
log: {level: debug, format: json, stats_interval: 0}
connections:
  local: {embedded: true}
  gone: {addr: "127.0.0.1:9", dial_timeout: 100ms}
  refused: {addr: "@LOOM@", tls: {ca_file: "@CA@"}, token: wrong-token}
pipelines:
  p:
    from: {type: generate, interval: 0, count: @N@, in_flight: 2, payload: 'not json {{.N}}', pad_to: 2000}
    to:
      hook:
        type: webhook
        endpoints:
          - {name: down, url: @URL@, retry: {initial_interval: 1ms, max_interval: 2ms, max_attempts: 2}, breaker: {failures: 1000000}}
      big: {type: loom, connection: local, room: r, max_message_bytes: 1000, buffer: {max_bytes: 1000}}
      away: {type: loom, connection: gone, room: r, publish_timeout: 200ms, close_timeout: 100ms}
      denied: {type: loom, connection: refused, room: r, publish_timeout: 500ms, close_timeout: 100ms}
      picky: {type: file, dir: @DIR@, topic: picky, fsync: never, when: 'payload.x > 1'}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead, fsync: never}
`, "@N@", fmt.Sprint(n), "@DIR@", dir, "@URL@", hook.URL, "@LOOM@", srv.Addr(), "@CA@", ca))
	var out testkit.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: cfg.Log.SlogLevel()}))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: logger})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	deadPath := filepath.Join(dir, "dead.jsonl")
	// The webhook's dead letters and the pipeline's: two per message.
	waitFor(t, "the dead letters", func() bool { return len(readLines(t, deadPath)) >= 2*n })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The unreachable sink's copies are dropped at close, logged, and named in
	// Close's error.
	if err := e.Close(ctx); err == nil || !strings.Contains(err.Error(), "not sent within close_timeout") {
		t.Errorf("close: %v, want the away sink's unsent messages", err)
	}

	uuids := map[string]bool{}
	for _, d := range readLines(t, deadPath) {
		uuids[d.UUID] = true
	}
	if len(uuids) != n {
		t.Fatalf("%d distinct messages dead-lettered, want %d", len(uuids), n)
	}

	// Lines that must be there for every message, or the test proves little.
	want := []string{
		"Loom message dropped",                 // adapter/loom, debug
		"sink failed after retries",            // the engine
		"expression failed; taken as no match", // the engine, debug
		"webhook: attempt failed, will retry",  // adapter/webhook, debug
		"webhook: message dead-lettered",       // adapter/webhook
	}
	seen := map[string]map[string]bool{} // msg -> UUIDs
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("a log line that is not JSON: %q: %v", sc.Text(), err)
		}
		msg, _ := rec["msg"].(string)
		id, hasID := rec["message_uuid"].(string)
		// A line about a message: it names one of them anywhere (a field, the
		// error text), or it has the key at all.
		mentioned := ""
		for u := range uuids {
			if strings.Contains(sc.Text(), u) {
				mentioned = u
				break
			}
		}
		if mentioned == "" && !hasID {
			continue
		}
		if !hasID || !uuids[id] {
			t.Errorf("line about message %s without its message_uuid: %s", mentioned, sc.Text())
			continue
		}
		if rec["pipeline"] != "p" {
			t.Errorf("line about message %s without pipeline=p: %s", id, sc.Text())
		}
		if seen[msg] == nil {
			seen[msg] = map[string]bool{}
		}
		seen[msg][id] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range want {
		if len(seen[m]) != n {
			t.Errorf("%q logged for %d messages, want all %d", m, len(seen[m]), n)
		}
	}
	// The refusing router's refusal drops each message at once (reason
	// refused: one "Loom message dropped" line each, checked above), so no
	// batch is resent here; a resent batch logs "Loom message will be resent"
	// with the same fields.
	kinds := make([]string, 0, len(seen))
	for m := range seen {
		kinds = append(kinds, m)
	}
	t.Logf("%d log lines; about messages: %q", lines, kinds)
	if t.Failed() {
		t.Log(out.String())
	}
}
