package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Every run in these tests (and the binaries they start, which inherit the
	// environment) serves health on a free port, not the default one, so tests
	// never fight over it.
	os.Setenv("LOOMBRIDGE_HTTP__ADDR", "127.0.0.1:0")
	goleak.VerifyTestMain(m)
}

// wait is the generous deadline of every wait: the machine is shared and slow.
const wait = 60 * time.Second

// result is what a command did.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs loombridge with args in-process and waits for it.
func runCmd(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb testkit.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// startCmd runs loombridge in a goroutine until the returned stop is called
// (which cancels its context) or it ends by itself; done yields the result.
func startCmd(t *testing.T, stdin io.Reader, args ...string) (stdout, stderr *testkit.Buffer, stop func(), done <-chan result) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &testkit.Buffer{}, &testkit.Buffer{}
	ch, fin := make(chan result, 1), make(chan struct{})
	go func() {
		defer close(fin)
		code := run(ctx, args, stdin, stdout, stderr)
		ch <- result{code, stdout.String(), stderr.String()}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-fin:
		case <-time.After(wait):
			t.Errorf("loombridge %s did not stop", strings.Join(args, " "))
		}
	})
	return stdout, stderr, cancel, ch
}

// waitResult waits for a started command to end.
func waitResult(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(wait):
		t.Fatal("command did not end")
		return result{}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		n++
	}
	return n
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		r := runCmd(t, context.Background(), "", args...)
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "loombridge ") || !strings.Contains(r.stdout, "go1.") {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	r := runCmd(t, context.Background(), "")
	if r.code != exitUsage || !strings.Contains(r.stderr, "Usage: loombridge <command>") || r.stdout != "" {
		t.Errorf("no args: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, context.Background(), "", "frobnicate")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: code %d, stderr %q", r.code, r.stderr)
	}
	r = runCmd(t, context.Background(), "", "help")
	if r.code != exitOK || !strings.Contains(r.stdout, "publish") {
		t.Errorf("help: code %d, stdout %q", r.code, r.stdout)
	}
}

func TestEveryCommandHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			r := runCmd(t, context.Background(), "", args...)
			if r.code != exitOK || !strings.Contains(r.stdout, "Usage: loombridge "+c.name) || r.stderr != "" {
				t.Errorf("%s: code %d, stdout %q, stderr %q", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	}
	r := runCmd(t, context.Background(), "", "help", "frobnicate")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("help frobnicate: code %d, stderr %q", r.code, r.stderr)
	}
}

// validate takes the file as -c FILE or as its one argument.
func TestValidateFileArgument(t *testing.T) {
	r := runCmd(t, context.Background(), "", "validate", "../../config.example.yaml")
	if r.code != exitOK || !strings.Contains(r.stdout, "ok, 3 pipeline(s)") {
		t.Fatalf("validate FILE: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, context.Background(), "", "validate", "a.yaml", "b.yaml")
	if r.code != exitUsage || !strings.Contains(r.stderr, "unexpected arguments") {
		t.Fatalf("validate A B: code %d, stderr %q", r.code, r.stderr)
	}
	r = runCmd(t, context.Background(), "", "validate")
	if r.code != exitUsage || !strings.Contains(r.stderr, "-c FILE is required") {
		t.Fatalf("validate: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestBadFlag(t *testing.T) {
	for _, c := range commands() {
		r := runCmd(t, context.Background(), "", c.name, "--no-such-flag")
		if r.code != exitUsage || !strings.Contains(r.stderr, "flag provided but not defined") {
			t.Errorf("%s: code %d, stderr %q", c.name, r.code, r.stderr)
		}
	}
}

func TestValidateExample(t *testing.T) {
	r := runCmd(t, context.Background(), "", "validate", "-c", "../../config.example.yaml")
	if r.code != exitOK || !strings.Contains(r.stdout, "ok, 3 pipeline(s)") {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken.yaml")
	err := os.WriteFile(path, []byte(`
log: {level: loud}
shutdown_timeout: soon
pipelines:
  p:
    from: {type: generate, interval: -1s}
    to:
      out: {type: file, topic: x}
      hook: {type: nope}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, context.Background(), "", "validate", "-c", path)
	if r.code != exitUsage {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"log.level:",
		"shutdown_timeout:",
		"pipelines.p.from.interval: must not be negative",
		"pipelines.p.to.out.dir: must not be empty",
		`pipelines.p.to.hook.type: unknown sink kind "nope"`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "5 problem(s)") {
		t.Errorf("want 5 problems:\n%s", r.stderr)
	}
}

func TestRunMissingConfig(t *testing.T) {
	r := runCmd(t, context.Background(), "", "run", "-c", filepath.Join(t.TempDir(), "nope.yaml"))
	if r.code != exitUsage || !strings.Contains(r.stderr, "no such file") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	r = runCmd(t, context.Background(), "", "run")
	if r.code != exitUsage || !strings.Contains(r.stderr, "-c FILE is required") {
		t.Fatalf("no -c: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestRunGenerateToFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	err := os.WriteFile(path, []byte(`
log: {level: warn, stats_interval: 0}
pipelines:
  gen:
    from: {type: generate, count: 20, interval: 0, key: 'k{{.N}}'}
    to:
      out: {type: file, dir: `+dir+`, topic: out, fsync: never}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), "run", "-c", path, "--watch=false")
	out := filepath.Join(dir, "out.jsonl")
	eventually(t, "20 lines in out.jsonl", func() bool { return countLines(out) >= 20 })
	stop()
	r := waitResult(t, done)
	if r.code != exitOK {
		t.Fatalf("code %d, stderr %s", r.code, stderr.String())
	}
	if n := countLines(out); n != 20 {
		t.Fatalf("%d lines, want 20", n)
	}
}
