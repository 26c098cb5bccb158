package loom_test

import (
	"strings"
	"testing"

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
