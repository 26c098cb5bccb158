package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// --addr takes HOST:PORT and a URL alike (http://HOST:PORT, with or without
// /readyz), and asks HOST:PORT/readyz.
func TestHealthcheckAddrForms(t *testing.T) {
	var asked atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ready":true}`))
	}))
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	for _, addr := range []string{hostPort, "http://" + hostPort, "http://" + hostPort + "/", "http://" + hostPort + "/readyz"} {
		asked.Store("")
		r := runCmd(t, context.Background(), "", "healthcheck", "--addr", addr)
		if r.code != exitOK {
			t.Errorf("--addr %s: code %d, stderr %q", addr, r.code, r.stderr)
		}
		if p := asked.Load(); p != "/readyz" {
			t.Errorf("--addr %s: asked %q, want /readyz", addr, p)
		}
	}
	for _, addr := range []string{"https://" + hostPort, "http://" + hostPort + "/metrics", "no-port"} {
		r := runCmd(t, context.Background(), "", "healthcheck", "--addr", addr)
		if r.code != exitUsage || !strings.Contains(r.stderr, "--addr") {
			t.Errorf("--addr %s: code %d, stderr %q; want a usage error", addr, r.code, r.stderr)
		}
	}
}

// --loom checks a Loom server by a QUIC handshake: 0 for a server whose
// certificate the CA verifies, 1 for an untrusted one or none at all.
func TestHealthcheckLoom(t *testing.T) {
	r := startRouter(t)
	ok := runCmd(t, context.Background(), "", "healthcheck", "--loom", r.srv.Addr(), "--ca-file", r.ca)
	if ok.code != exitOK || !strings.Contains(ok.stdout, "Loom server answers") {
		t.Errorf("a running router: code %d, stdout %q, stderr %q", ok.code, ok.stdout, ok.stderr)
	}
	untrusted := runCmd(t, context.Background(), "", "healthcheck", "--loom", r.srv.Addr())
	if untrusted.code != exitFailure || !strings.Contains(untrusted.stderr, "not signed by a CA") {
		t.Errorf("without its CA: code %d, stderr %q", untrusted.code, untrusted.stderr)
	}
	none := runCmd(t, context.Background(), "", "healthcheck", "--loom", silentUDP(t), "--ca-file", r.ca, "--timeout", "1s")
	if none.code != exitFailure || !strings.Contains(none.stderr, "no Loom server answered within 1s") {
		t.Errorf("nothing answering: code %d, stderr %q", none.code, none.stderr)
	}
	bad := runCmd(t, context.Background(), "", "healthcheck", "--ca-file", r.ca)
	if bad.code != exitUsage {
		t.Errorf("--ca-file without --loom: code %d, stderr %q", bad.code, bad.stderr)
	}
}
