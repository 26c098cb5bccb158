package client_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// TestConfigAddr: addr must be host:port with a port and no scheme. A bare host or a
// URL used to pass, and Dial then failed on every attempt ("missing port").
func TestConfigAddr(t *testing.T) {
	for _, addr := range []string{"", "localhost", "http://x:1", "quic://loom:4433", "x:", "[::1]", "a:b:c"} {
		c := client.Config{Addr: addr}
		c.SetDefaults()
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "addr: ") {
			t.Errorf("addr %q: got %v, want an error naming addr", addr, err)
		}
	}
	for _, addr := range []string{"localhost:4433", "127.0.0.1:1", "[::1]:4433", ":4433", "loom.example.com:https"} {
		c := client.Config{Addr: addr}
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("addr %q: %v", addr, err)
		}
	}
}

// TestConfigReportsEveryProblemInOrder: all problems at once, in field order (the
// order of the keys in a configuration file), the same on every run. The durations
// used to be checked by ranging over a map, so their order changed between runs.
func TestConfigReportsEveryProblemInOrder(t *testing.T) {
	c := client.Config{
		Addr:        "localhost",
		Transport:   "tcp",
		Name:        strings.Repeat("n", 200),
		Token:       "t",
		TokenFile:   "/nonexistent/token",
		TLS:         client.TLSConfig{CertFile: "/nonexistent/cert.pem"},
		ChunkSize:   -1,
		DialTimeout: -time.Second,
		KeepAlive:   -time.Second,
		IdleTimeout: -time.Second,
	}
	c.SetDefaults()
	want := []string{"addr: ", "transport: ", "name: ", "token, token_file: ", "token_file: ", "tls.cert_file, tls.key_file: ",
		"chunk_size: ", "dial_timeout: ", "keep_alive: ", "idle_timeout: "}
	first := c.Check().Error()
	for run := range 30 {
		err := c.Check()
		if err == nil {
			t.Fatal("Check passed")
		}
		if err.Error() != first {
			t.Fatalf("run %d: errors differ between runs:\n%s\n---\n%s", run, err, first)
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(want) {
			t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(want), err)
		}
		for i, line := range lines {
			if !strings.HasPrefix(line, want[i]) {
				t.Fatalf("error %d is %q, want it to start with %q; all:\n%s", i, line, want[i], err)
			}
		}
	}
	// keep_alive must be shorter than idle_timeout, which is only said when both are set.
	c = client.Config{Addr: "localhost:1", KeepAlive: 20 * time.Second}
	c.SetDefaults()
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "keep_alive: must be shorter than idle_timeout") {
		t.Fatalf("keep_alive >= idle_timeout: %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	var c client.Config
	c.SetDefaults()
	if c.Transport != client.DefaultTransport || c.Name != client.DefaultName || c.ChunkSize != client.DefaultChunkSize ||
		c.DialTimeout != client.DefaultDialTimeout || c.KeepAlive != client.DefaultKeepAlive || c.IdleTimeout != client.DefaultIdleTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	if client.DefaultChunkSize != wire.DefaultLimits().MaxChunk {
		t.Fatal("DefaultChunkSize is not wire.DefaultLimits().MaxChunk")
	}
}

// A token_file that never ends (/dev/zero) is refused, not read forever.
func TestTokenFileEndless(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	c := client.Config{Addr: "127.0.0.1:1", TokenFile: "/dev/zero"}
	c.SetDefaults()
	err := c.Check()
	if err == nil || !strings.Contains(err.Error(), "token_file /dev/zero: token is") {
		t.Fatalf("error %v", err)
	}
}
