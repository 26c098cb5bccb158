package loom_test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
)

// TestConfigErrorsNameTheKey: each bad setting is refused at construction with its
// config key, including files that cannot be read (which a reconnect loop would
// otherwise retry forever behind a generic timeout).
func TestConfigErrorsNameTheKey(t *testing.T) {
	base := client.Config{Addr: "127.0.0.1:1", Transport: client.TransportQUIC}
	pubCases := map[string]func(*loom.PublisherConfig){
		"mode":              func(c *loom.PublisherConfig) { c.Mode = "maybe" },
		"buffer.policy":     func(c *loom.PublisherConfig) { c.Buffer.Policy = "fifo" },
		"max_message_bytes": func(c *loom.PublisherConfig) { c.MaxMessageBytes = 1 << 40 },
		"token_file":        func(c *loom.PublisherConfig) { c.Client.TokenFile = "/nonexistent/token" },
		"tls.ca_file":       func(c *loom.PublisherConfig) { c.Client.TLS.CAFile = "/nonexistent/ca.pem" },
	}
	for key, mod := range pubCases {
		cfg := loom.PublisherConfig{Client: base}
		mod(&cfg)
		_, err := loom.NewPublisher(cfg, nil)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("publisher %s: got %v, want an error naming %s", key, err, key)
		}
	}
	subCases := map[string]func(*loom.SubscriberConfig){
		"consumers":         func(c *loom.SubscriberConfig) { c.Consumers = -1 },
		"max_message_bytes": func(c *loom.SubscriberConfig) { c.MaxMessageBytes = 1 << 40 },
		"token_file":        func(c *loom.SubscriberConfig) { c.Client.TokenFile = "/nonexistent/token" },
		"tls.cert_file": func(c *loom.SubscriberConfig) {
			c.Client.TLS.CertFile, c.Client.TLS.KeyFile = "/nonexistent/c", "/nonexistent/k"
		},
	}
	for key, mod := range subCases {
		cfg := loom.SubscriberConfig{Client: base}
		mod(&cfg)
		_, err := loom.NewSubscriber(cfg, nil)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("subscriber %s: got %v, want an error naming %s", key, err, key)
		}
	}
}

// configErrorKeys returns the key each line of a config error starts with, after
// the constructor's prefix.
func configErrorKeys(t *testing.T, err error, prefix string) []string {
	t.Helper()
	if err == nil {
		t.Fatal("config accepted")
	}
	msg, ok := strings.CutPrefix(err.Error(), prefix)
	if !ok {
		t.Fatalf("error %q does not start with %q", err, prefix)
	}
	var keys []string
	for _, line := range strings.Split(msg, "\n") {
		key, _, _ := strings.Cut(line, ":")
		keys = append(keys, key)
	}
	return keys
}

// TestConfigReportsEveryProblemInOrder: a config with many problems reports all of
// them, in the documented order (field order, the client's keys first), the same
// on every run. Some checks used to range over maps, so the order changed between
// runs.
func TestConfigReportsEveryProblemInOrder(t *testing.T) {
	pub := loom.PublisherConfig{
		Client:          client.Config{Addr: "localhost", Transport: "tcp"},
		Mode:            "maybe",
		Format:          "xml",
		Streams:         -1,
		BatchSize:       -1,
		PublishTimeout:  -1,
		StreamTimeout:   -1,
		CloseTimeout:    -1,
		MaxMessageBytes: 1 << 40,
		Buffer:          loom.BufferConfig{MaxMessages: -1, MaxBytes: 1, Policy: "fifo"},
		Reconnect:       loom.BackoffConfig{Initial: -1, Multiplier: math.NaN(), Jitter: math.Inf(1), MaxElapsed: -1},
	}
	wantPub := []string{"addr", "transport", "mode", "format", "streams", "batch_size", "publish_timeout",
		"stream_timeout", "close_timeout", "max_message_bytes", "buffer.max_messages", "buffer.max_bytes",
		"buffer.policy", "reconnect.initial, reconnect.max", "reconnect.multiplier", "reconnect.jitter",
		"reconnect.max_elapsed"}
	_, first := loom.NewPublisher(pub, nil)
	for run := range 30 {
		_, err := loom.NewPublisher(pub, nil)
		if got := configErrorKeys(t, err, "loom publisher config: "); !slices.Equal(got, wantPub) {
			t.Fatalf("publisher error keys\n got %q\nwant %q\n%v", got, wantPub, err)
		}
		if err.Error() != first.Error() {
			t.Fatalf("run %d: publisher errors differ between runs", run)
		}
	}

	sub := loom.SubscriberConfig{
		Client:          client.Config{Addr: "http://loom:4433", DialTimeout: -1, KeepAlive: -1, IdleTimeout: -1},
		Consumers:       -1,
		NackResendDelay: -1,
		MaxMessageBytes: -1,
		Reconnect:       loom.BackoffConfig{Initial: 2 * time.Second, Max: time.Second, Multiplier: 0.5, Jitter: -1},
	}
	wantSub := []string{"addr", "dial_timeout", "keep_alive", "idle_timeout", "consumers", "nack_resend_delay",
		"max_message_bytes", "reconnect.initial, reconnect.max", "reconnect.multiplier", "reconnect.jitter"}
	for range 30 {
		_, err := loom.NewSubscriber(sub, nil)
		if got := configErrorKeys(t, err, "loom subscriber config: "); !slices.Equal(got, wantSub) {
			t.Fatalf("subscriber error keys\n got %q\nwant %q\n%v", got, wantSub, err)
		}
	}
}

// TestBackoffRejectsNaNAndInf: NaN fails every comparison, so "multiplier < 1" and
// "jitter outside 0..1" let it through; ±Inf multipliers passed as well.
func TestBackoffRejectsNaNAndInf(t *testing.T) {
	base := client.Config{Addr: "127.0.0.1:1"}
	for _, tc := range []struct {
		key string
		bo  loom.BackoffConfig
	}{
		{"reconnect.multiplier", loom.BackoffConfig{Multiplier: math.NaN()}},
		{"reconnect.multiplier", loom.BackoffConfig{Multiplier: math.Inf(1)}},
		{"reconnect.multiplier", loom.BackoffConfig{Multiplier: math.Inf(-1)}},
		{"reconnect.jitter", loom.BackoffConfig{Jitter: math.NaN()}},
		{"reconnect.jitter", loom.BackoffConfig{Jitter: math.Inf(1)}},
		{"reconnect.jitter", loom.BackoffConfig{Jitter: math.Inf(-1)}},
	} {
		_, err := loom.NewSubscriber(loom.SubscriberConfig{Client: base, Reconnect: tc.bo}, nil)
		if err == nil || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "loom subscriber config: "), tc.key+":") {
			t.Errorf("%+v: got %v, want an error naming %s", tc.bo, err, tc.key)
		}
		_, err = loom.NewPublisher(loom.PublisherConfig{Client: base, Reconnect: tc.bo}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("publisher %+v: got %v, want an error naming %s", tc.bo, err, tc.key)
		}
	}
}

// TestAddrMustBeHostPort: a bare host or a URL is refused at construction, naming
// addr; it used to be accepted, and Publish then timed out while the log repeated
// "missing port".
func TestAddrMustBeHostPort(t *testing.T) {
	for _, addr := range []string{"localhost", "http://x:1", "loom:"} {
		_, err := loom.NewPublisher(loom.PublisherConfig{Client: client.Config{Addr: addr}}, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "loom publisher config: addr: ") {
			t.Errorf("publisher addr %q: got %v", addr, err)
		}
		_, err = loom.NewSubscriber(loom.SubscriberConfig{Client: client.Config{Addr: addr}}, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "loom subscriber config: addr: ") {
			t.Errorf("subscriber addr %q: got %v", addr, err)
		}
	}
}

// TestDefaults: zero fields take the documented Default* constants.
func TestDefaults(t *testing.T) {
	if loom.DefaultBufferMaxMessages != 10_000 || loom.DefaultBufferMaxBytes != 64<<20 || loom.DefaultBufferPolicy != "block" ||
		loom.DefaultMaxMessageBytes != 64<<20 || loom.DefaultMode != loom.ModeConfirm || loom.DefaultFormat != loom.FormatRaw {
		t.Fatal("Default* constants differ from the documented defaults")
	}
}
