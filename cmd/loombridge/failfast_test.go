package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// failFastBound is what the issue asks of a permanent failure: exit 1 within
// 5 s. The connect timeout (3 s by default) is the longest part of it.
const failFastBound = 5 * time.Second

// silentUDP holds a UDP port open that never answers, as a host whose Loom
// server is down looks to QUIC: no refusal comes, the handshake never completes.
func silentUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() { // read and drop, so the socket's buffer never fills
		b := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// failFastTargets are the command lines of publish and consume against a
// server they must give up on at once, each with what its one line must say.
func failFastTargets(t *testing.T) []struct {
	name string
	args []string
	want string
} {
	dir := t.TempDir()
	// An untrusted CA: the router's certificate, checked against another's.
	good := startRouter(t)
	other, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(otherCA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = other.Close()
	// A router that refuses the token given.
	auth, err := loomtest.Start(loomtest.Config{Auth: loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{{Token: "the-right-token", Principal: "p", Rooms: []string{"*"}, Roles: []string{"produce", "consume"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = auth.Close() })
	authCA := filepath.Join(dir, "auth-ca.pem")
	if err := os.WriteFile(authCA, auth.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	wrongToken := filepath.Join(dir, "token")
	if err := os.WriteFile(wrongToken, []byte("a-wrong-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []struct {
		name string
		args []string
		want string
	}{
		{"bad CA", []string{"--addr", good.srv.Addr(), "--ca-file", otherCA, "--room", "r"}, "not signed by a CA"},
		{"no server", []string{"--addr", silentUDP(t), "--ca-file", good.ca, "--room", "r"}, "no Loom server answered"},
		// A port out of range: a bad address found without asking a DNS server,
		// which might be slow or absent where the tests run.
		{"bad address", []string{"--addr", "127.0.0.1:99999", "--room", "r"}, "bad address"},
		{"refused token", []string{"--addr", auth.Addr(), "--ca-file", authCA, "--token-file", wrongToken, "--room", "r"}, "refused"},
	}
}

// checkFailFast runs one command line and checks that it failed at once with
// exit 1 and one line naming the problem.
func checkFailFast(t *testing.T, want string, args ...string) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res := runCmd(t, ctx, "a message\n", args...)
	took := time.Since(start)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != exitFailure {
		t.Errorf("exit %d, want %d; stderr:\n%s", res.code, exitFailure, res.stderr)
	}
	if took > failFastBound {
		t.Errorf("took %s, want at most %s", took.Round(time.Millisecond), failFastBound)
	}
	if len(lines) != 1 || lines[0] == "" {
		t.Errorf("stderr has %d lines, want one:\n%s", len(lines), res.stderr)
	}
	if !strings.Contains(res.stderr, want) {
		t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
	}
	if res.stdout != "" {
		t.Errorf("stdout %q, want nothing", res.stdout)
	}
	t.Logf("%s: exit %d in %s: %s", args[0], res.code, took.Round(time.Millisecond), strings.TrimSpace(res.stderr))
}

// A permanent failure (an untrusted certificate, a bad address, a refused
// token) or a server that does not answer ends publish at once: exit 1, one
// line, no retries in the background.
func TestPublishFailsFast(t *testing.T) {
	for _, tc := range failFastTargets(t) {
		t.Run(tc.name, func(t *testing.T) {
			checkFailFast(t, tc.want, append([]string{"publish"}, tc.args...)...)
		})
	}
}

// The same for consume, with --timeout (a script would read exit 0 as "the
// room was empty") and without it (it would wait for ever).
func TestConsumeFailsFast(t *testing.T) {
	for _, tc := range failFastTargets(t) {
		t.Run(tc.name, func(t *testing.T) {
			checkFailFast(t, tc.want, append([]string{"consume", "--timeout", "5s"}, tc.args...)...)
			checkFailFast(t, tc.want, append([]string{"consume"}, tc.args...)...)
		})
	}
}
