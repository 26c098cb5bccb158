package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// healthAddr waits for run's log line naming the health listener.
func healthAddr(t *testing.T, stderr *testkit.Buffer) string {
	t.Helper()
	re := regexp.MustCompile(`msg="health and metrics" addr=(\S+)`)
	var addr string
	waitUntil(t, "the health listener", func() bool {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// After a known run, /metrics shows exact counts: 30 received, 30 into the
// file, 20 into Loom, 10 refused by the Loom sink's size limit and
// dead-lettered.
func TestMetricsAfterAKnownRun(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  p:
    from: {type: generate, interval: 0, count: 30, payload: '{{if eq (mod .N 3) 0}}{{range 200}}x{{end}}{{else}}small{{end}}'}
    to:
      all: {type: file, dir: %[1]s, topic: all, fsync: never}
      room: {type: loom, connection: local, room: r, max_message_bytes: 100, buffer: {max_bytes: 100}}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter: {type: file, dir: %[1]s, topic: dead, fsync: never}
`, dir))
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), "run", "-c", cfg, "--watch=false")
	addr := healthAddr(t, stderr)
	want := []string{
		`loombridge_pipeline_received_total{pipeline="p"} 30`,
		`loombridge_pipeline_done_total{pipeline="p"} 20`,
		`loombridge_pipeline_failed_total{pipeline="p"} 10`,
		`loombridge_pipeline_dead_lettered_total{pipeline="p"} 10`,
		`loombridge_sink_published_total{pipeline="p",sink="all"} 30`,
		`loombridge_sink_published_total{pipeline="p",sink="room"} 20`,
		`loombridge_sink_retries_total{pipeline="p",sink="room"} 10`,
		`loombridge_pipeline_handling_seconds_count{pipeline="p"} 30`,
		`loombridge_pipeline_up{pipeline="p"} 1`,
		// Without admin_url nothing waits for a consumer.
		`loombridge_loom_publisher_rooms_waiting{pipeline="p",sink="room"} 0`,
		`loombridge_loom_publisher_held_seconds_total{pipeline="p",sink="room"} 0`,
	}
	var body string
	waitUntil(t, "the counts to settle", func() bool {
		_, body = get(t, "http://"+addr+"/metrics")
		return strings.Contains(body, want[1]) && strings.Contains(body, want[3])
	})
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, st := get(t, "http://"+addr+"/status"); code != http.StatusOK || !strings.Contains(st, `"state": "running"`) || !strings.Contains(st, `"last_error"`) || !strings.Contains(st, `"rooms_waiting": 0`) {
		t.Errorf("/status: %d %s", code, st)
	}
	if r := runCmd(t, context.Background(), "", "healthcheck", "--addr", addr); r.code != exitOK {
		t.Errorf("healthcheck of a ready instance: %d %s", r.code, r.stderr)
	}
	stop()
	if r := waitResult(t, done); r.code != exitOK {
		t.Fatalf("exit %d", r.code)
	}
	if r := runCmd(t, context.Background(), "", "healthcheck", "--addr", addr, "--timeout", "2s"); r.code != exitFailure {
		t.Errorf("healthcheck of a stopped instance: %d", r.code)
	}
}

// /readyz turns 503 when the Loom server a pipeline uses stops, naming it,
// and 200 again once a server is back at that address. The address is a
// relay's, held by the test throughout: the server that comes back is a new
// one on a port of its own (its CA written over the old one's, as clients read
// the CA file on every dial), so the test never binds a port that was just
// freed and may have been taken since.
func TestReadyzFollowsTheLoomServer(t *testing.T) {
	r := startRouter(t)
	relay := startRelay(t, r.srv.Addr())
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {stats_interval: 0}
connections:
  prod: {addr: "%s", tls: {ca_file: "%s"}, keep_alive: 1s, idle_timeout: 3s}
pipelines:
  p:
    from: {type: loom, connection: prod, room: r}
    to: {out: {type: stdout}}
`, relay.addr(), r.ca))
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), "run", "-c", cfg, "--watch=false")
	addr := healthAddr(t, stderr)
	ready := func(want int) func() bool {
		return func() bool { code, _ := get(t, "http://"+addr+"/readyz"); return code == want }
	}
	waitUntil(t, "ready", ready(http.StatusOK))
	if err := r.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	relay.retarget("") // nothing answers at the address any more
	stopped := time.Now()
	waitUntil(t, "not ready after the server stopped", ready(http.StatusServiceUnavailable))
	t.Logf("503 %.1fs after the stop", time.Since(stopped).Seconds())
	if _, body := get(t, "http://"+addr+"/readyz"); !strings.Contains(body, "connection prod: Loom server not reachable") {
		t.Errorf("/readyz body %s does not name the connection", body)
	}
	if rc := runCmd(t, context.Background(), "", "healthcheck", "--addr", addr); rc.code != exitFailure {
		t.Errorf("healthcheck while not ready: %d", rc.code)
	}
	back, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Close() })
	if err := os.WriteFile(r.ca, back.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	relay.retarget(back.Addr())
	waitUntil(t, "ready again once a server is back", ready(http.StatusOK))
	stop()
	if rc := waitResult(t, done); rc.code != exitOK {
		t.Fatalf("exit %d", rc.code)
	}
}

// A pipeline with secrets everywhere, logged at debug level while it fails:
// no secret appears anywhere in the log.
func TestLogsHoldNoSecret(t *testing.T) {
	const (
		token      = "LOOM-TOKEN-s3cr3t"
		hookSecret = "whsec_c2VjcmV0LWhvb2stc2lnbmluZy1rZXk="
		authHeader = "Bearer AUTH-HEADER-s3cr3t"
		urlPass    = "URL-PASSWORD-s3cr3t"
		pathSecret = "PATH-SECRET-s3cr3t"
	)
	srv, err := loomtest.Start(loomtest.Config{Auth: loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{{Token: "another-token"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, token+"\n")
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer failing.Close()
	hookURL := strings.Replace(failing.URL, "http://", "http://user:"+urlPass+"@", 1) + "/services/" + pathSecret + "?token=" + pathSecret
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {level: debug, stats_interval: 0}
connections:
  prod: {addr: "%s", tls: {ca_file: "%s"}, token_file: "%s"}
  inline: {addr: "%s", tls: {ca_file: "%s"}, token: "%s"}
pipelines:
  to-loom:
    from: {type: generate, interval: 10ms, count: 3}
    to:
      room: {type: loom, connection: prod, room: r, publish_timeout: 2s}
      room2: {type: loom, connection: inline, room: r, publish_timeout: 2s}
      hook:
        type: webhook
        endpoints:
          - name: h
            url: "%s"
            headers: {Authorization: "%s"}
            secrets: ["%s"]
            retry: {initial_interval: 1ms, max_interval: 2ms, max_attempts: 2}
    retry: {max_retries: 0}
    dead_letter: {type: file, dir: "%s", topic: dead, fsync: never}
`, srv.Addr(), ca, tokenFile, srv.Addr(), ca, token, hookURL, authHeader, hookSecret, dir))
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), "run", "-c", cfg, "--watch=false")
	waitUntil(t, "the failures to be logged", func() bool {
		l := stderr.String()
		return strings.Contains(l, "webhook") && strings.Count(l, "sink failed after retries") >= 3
	})
	stop()
	waitResult(t, done)
	log := stderr.String()
	for _, secret := range []string{token, hookSecret, strings.TrimPrefix(hookSecret, "whsec_"), authHeader, "AUTH-HEADER", urlPass, pathSecret} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains the secret %q", secret)
		}
	}
	if !strings.Contains(log, "level=DEBUG") {
		t.Error("nothing was logged at debug level: the test proves nothing")
	}
}
