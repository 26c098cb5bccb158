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
