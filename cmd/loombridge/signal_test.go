package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
)

// These tests run the real binary and send it real signals.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "loombridge-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "loombridge")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running loombridge with its log.
type proc struct {
	cmd  *exec.Cmd
	log  *testkit.Buffer
	done chan error
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t), args...), log: &testkit.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("loombridge log:\n%s", p.log.String())
		}
	})
	return p
}

// wait returns the exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(3 * time.Minute):
		t.Fatal("loombridge did not exit")
		return -1
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func uuids(t *testing.T, path string) map[string]int {
	t.Helper()
	out := map[string]int{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct{ UUID string }
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out[l.UUID]++
		}
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// SIGTERM during a 10,000-message run: exit 0, and every message the source
// acked reached both sinks, one of them across a Loom hop (QUIC on loopback).
func TestSIGTERMMidRunLosesNothingAcked(t *testing.T) {
	const n = 10000
	dir := t.TempDir()
	ids := make([]string, n)
	var input []byte
	for i := range n {
		ids[i] = fmt.Sprintf("m%05d", i)
		l, err := file.MarshalLine(message.NewMessage(ids[i], []byte(strconv.Itoa(i))), "loom_key")
		if err != nil {
			t.Fatal(err)
		}
		input = append(input, l...)
	}
	writeFile(t, filepath.Join(dir, "src.jsonl"), string(input))
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, strings.ReplaceAll(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  src:
    from: {type: file, dir: @D@, topic: src}
    to:
      copy: {type: file, dir: @D@/out, topic: copy, fsync: never}
      room: {type: loom, connection: local, room: t, mode: fire_and_forget, format: envelope}
  dst:
    from: {type: loom, connection: local, room: t}
    to:
      through: {type: file, dir: @D@/out, topic: through, fsync: never}
`, "@D@", dir))
	p := start(t, "run", "-c", cfg, "--watch=false")
	waitUntil(t, "the run to be under way", func() bool { return len(uuids(t, filepath.Join(dir, "out", "through.jsonl"))) >= 500 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	b, err := os.ReadFile(filepath.Join(dir, "src.jsonl.offset"))
	if err != nil {
		t.Fatal(err)
	}
	var off struct{ Line int }
	if err := json.Unmarshal(b, &off); err != nil {
		t.Fatal(err)
	}
	if off.Line == 0 || off.Line == n {
		t.Fatalf("source acked %d of %d: the signal did not come mid-run", off.Line, n)
	}
	for _, sink := range []string{"copy", "through"} {
		got := uuids(t, filepath.Join(dir, "out", sink+".jsonl"))
		missing := 0
		for _, id := range ids[:off.Line] {
			if got[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%s: %d of %d messages acked at the source are missing", sink, missing, off.Line)
		}
	}
}

// A second signal ends a graceful stop that waits on a stuck sink at once,
// with a non-zero code.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	stuck := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stuck:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(stuck)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, `
log: {stats_interval: 0}
shutdown_timeout: 5m
pipelines:
  p:
    from: {type: generate, interval: 0, count: 3}
    to:
      hook: {type: webhook, endpoints: [{name: stuck, url: "`+srv.URL+`", timeout: 10m}]}
`)
	p := start(t, "run", "-c", cfg, "--watch=false")
	waitUntil(t, "the pipeline to start", func() bool { return strings.Contains(p.log.String(), "loombridge running") })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, "the graceful stop to begin", func() bool { return strings.Contains(p.log.String(), "stopping") })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 130 {
		t.Fatalf("exit code %d after a second signal, want 130", code)
	}
}

// SIGHUP reloads: a pipeline added to the file starts; an invalid file is
// refused, logged, and the running pipelines go on.
func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	one := fmt.Sprintf(`
log: {stats_interval: 0}
pipelines:
  a:
    from: {type: generate, interval: 5ms}
    to: {f: {type: file, dir: %s, topic: a, fsync: never}}
`, dir)
	writeFile(t, cfg, one)
	p := start(t, "run", "-c", cfg, "--watch=false")
	count := func(topic string) int { return len(uuids(t, filepath.Join(dir, topic+".jsonl"))) }
	waitUntil(t, "pipeline a", func() bool { return count("a") > 10 })

	writeFile(t, cfg, one+"  b: {from: {type: nope}, to: {}}\n")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the refusal in the log", func() bool { return strings.Contains(p.log.String(), "reload refused") })
	before := count("a")
	waitUntil(t, "pipeline a to go on", func() bool { return count("a") > before+10 })

	writeFile(t, cfg, one+fmt.Sprintf("  b:\n    from: {type: generate, interval: 5ms}\n    to: {f: {type: file, dir: %s, topic: b, fsync: never}}\n", dir))
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "pipeline b after the reload", func() bool { return count("b") > 10 })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
