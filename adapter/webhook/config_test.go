package webhook

import (
	"strings"
	"testing"
	"time"
)

func validConfig() PublisherConfig {
	return PublisherConfig{
		DeadLetter: &dlqRecorder{},
		Endpoints: []EndpointConfig{
			{Name: "a", URL: "https://a.example/hook"},
			{Name: "b", URL: "http://b.example:8080/hook"},
			{Name: "c", URL: "https://c.example/hook"},
		},
	}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig()
	c.setDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	e := c.Endpoints[0]
	if e.Timeout != 15*time.Second || e.Method != "POST" || e.MaxInFlight != DefaultMaxInFlight || e.RateBurst != 1 {
		t.Errorf("endpoint defaults: %+v", e)
	}
	want := RetryConfig{InitialInterval: time.Second, MaxInterval: 10 * time.Minute, Multiplier: 2, MaxElapsedTime: 24 * time.Hour, MaxAttempts: DefaultMaxAttempts}
	if r := e.Retry; r.InitialInterval != want.InitialInterval || r.MaxInterval != want.MaxInterval ||
		r.Multiplier != want.Multiplier || r.MaxElapsedTime != want.MaxElapsedTime || r.MaxAttempts != want.MaxAttempts {
		t.Errorf("retry defaults %+v, want %+v", r, want)
	}
	if e.Breaker != (BreakerConfig{Failures: 5, OpenTimeout: 30 * time.Second, HalfOpenRequests: 1}) {
		t.Errorf("breaker defaults %+v", e.Breaker)
	}
	if c.ContentType != DefaultContentType || c.DeadLetterTopic != DefaultDeadLetterTopic || c.HTTPClient == nil ||
		c.RememberAccepted != DefaultRememberAccepted {
		t.Errorf("publisher defaults: content type %q, topic %q, remember_accepted %d", c.ContentType, c.DeadLetterTopic, c.RememberAccepted)
	}
	if c.HTTPClient.CheckRedirect == nil {
		t.Errorf("default client follows redirects")
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*PublisherConfig)
		want   string
	}{
		{"no endpoints", func(c *PublisherConfig) { c.Endpoints = nil }, "endpoints: at least one"},
		{"no dead letter", func(c *PublisherConfig) { c.DeadLetter = nil }, "dead_letter: "},
		{"bad url", func(c *PublisherConfig) { c.Endpoints[2].URL = "ftp://x?token=TOPSECRET" }, "endpoints[2].url: "},
		{"relative url", func(c *PublisherConfig) { c.Endpoints[1].URL = "/hook" }, "endpoints[1].url: "},
		{"missing url", func(c *PublisherConfig) { c.Endpoints[0].URL = "" }, "endpoints[0].url: required"},
		{"missing name", func(c *PublisherConfig) { c.Endpoints[1].Name = "" }, "endpoints[1].name: required"},
		{"duplicate name", func(c *PublisherConfig) { c.Endpoints[2].Name = "a" }, `endpoints[2].name: "a" already used by endpoints[0]`},
		{"bad secret", func(c *PublisherConfig) { c.Endpoints[0].Secrets = []string{testSecret, "whsec_TOPSECRET!!"} }, "endpoints[0].secrets[1]: "},
		{"bad method", func(c *PublisherConfig) { c.Endpoints[0].Method = "PO ST" }, "endpoints[0].method: "},
		{"bad header", func(c *PublisherConfig) { c.Endpoints[0].Headers = map[string]string{"X Bad": "TOPSECRET"} }, "endpoints[0].headers[X Bad]: "},
		{"bad header value", func(c *PublisherConfig) {
			c.Endpoints[1].Headers = map[string]string{"Authorization": "TOPSECRET\r\nX: y"}
		}, "endpoints[1].headers[Authorization]: "},
		{"bad metadata header", func(c *PublisherConfig) { c.MetadataHeaders = map[string]string{"k": "a:b"} }, "metadata_headers[k]: "},
		{"bad content type", func(c *PublisherConfig) { c.ContentType = "text/plain\r\nX-Injected: 1" }, "content_type: invalid header value"},
		{"negative remember_accepted", func(c *PublisherConfig) { c.RememberAccepted = -1 }, "remember_accepted: "},
		{"negative timeout", func(c *PublisherConfig) { c.Endpoints[1].Timeout = -1 }, "endpoints[1].timeout: "},
		{"negative max_in_flight", func(c *PublisherConfig) { c.Endpoints[1].MaxInFlight = -1 }, "endpoints[1].max_in_flight: "},
		{"negative rate", func(c *PublisherConfig) { c.Endpoints[1].RateLimit = -1 }, "endpoints[1].rate_limit: "},
		{"max below initial", func(c *PublisherConfig) {
			c.Endpoints[2].Retry.InitialInterval = time.Minute
			c.Endpoints[2].Retry.MaxInterval = time.Second
		}, "endpoints[2].retry.max_interval: "},
		{"multiplier", func(c *PublisherConfig) { c.Endpoints[0].Retry.Multiplier = 0.5 }, "endpoints[0].retry.multiplier: "},
		{"attempts", func(c *PublisherConfig) { c.Endpoints[0].Retry.MaxAttempts = -3 }, "endpoints[0].retry.max_attempts: "},
		{"retry 410", func(c *PublisherConfig) { c.Endpoints[0].Retry.RetryStatuses = []int{409, 410} }, "endpoints[0].retry.retry_statuses[1]: "},
		{"breaker failures", func(c *PublisherConfig) { c.Endpoints[1].Breaker.Failures = -1 }, "endpoints[1].breaker.failures: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.modify(&c)
			_, err := NewPublisher(c, nil)
			if err == nil {
				t.Fatal("NewPublisher accepted an invalid config")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error leaks a secret: %q", err)
			}
		})
	}
}

func TestConfigReportsEveryError(t *testing.T) {
	c := validConfig()
	c.Endpoints[0].URL = ""
	c.Endpoints[2].Name = ""
	c.setDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"endpoints[0].url: required", "endpoints[2].name: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// Slack, Discord and Teams webhook URLs carry their secret in the path:
// only scheme, host and port may appear in logs, errors and dead letters.
func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"https://user:pass@h.example:8443/p/a?token=s3cret#frag": "https://h.example:8443/…",
		"https://hooks.slack.com/services/T0/B0/XXXXSECRETXXXX":  "https://hooks.slack.com/…",
		"https://discord.com/api/webhooks/123/SECRET-TOKEN":      "https://discord.com/…",
		"http://h.example:8080":                                  "http://h.example:8080",
		"http://h.example/":                                      "http://h.example",
		"https://h.example?sig=SECRET":                           "https://h.example/…",
		"https://h.example/%2Fescaped%2FSECRET":                  "https://h.example/…",
		"::not a url":                                            "(invalid url)",
	}
	for in, want := range cases {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
