package webhook

import (
	"errors"
	"math"
	"strconv"
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
		{"no dead letter", func(c *PublisherConfig) { c.DeadLetter = nil }, "DeadLetter: a dead-letter publisher is required"},
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
		// NaN passed every comparison: a NaN multiplier retried without
		// waiting, a NaN rate limit turned the limit off.
		{"NaN multiplier", func(c *PublisherConfig) { c.Endpoints[0].Retry.Multiplier = math.NaN() }, "endpoints[0].retry.multiplier: must be a finite number, at least 1, got NaN"},
		{"Inf multiplier", func(c *PublisherConfig) { c.Endpoints[0].Retry.Multiplier = math.Inf(1) }, "endpoints[0].retry.multiplier: "},
		{"NaN rate", func(c *PublisherConfig) { c.Endpoints[2].RateLimit = math.NaN() }, "endpoints[2].rate_limit: must be a finite number, 0 (unlimited) or more, got NaN"},
		{"Inf rate", func(c *PublisherConfig) { c.Endpoints[2].RateLimit = math.Inf(1) }, "endpoints[2].rate_limit: "},
		{"-Inf rate", func(c *PublisherConfig) { c.Endpoints[2].RateLimit = math.Inf(-1) }, "endpoints[2].rate_limit: "},
		// Allocated at once, 1<<40 killed the process.
		{"huge remember_accepted", func(c *PublisherConfig) { c.RememberAccepted = 1 << 40 }, "remember_accepted: must be at most 1000000, got 1099511627776"},
		{"huge max_in_flight", func(c *PublisherConfig) { c.Endpoints[1].MaxInFlight = 1 << 40 }, "endpoints[1].max_in_flight: must be at most 10000"},
		// Counted in 32 bits, 1<<32 wrapped to 0.
		{"huge breaker failures", func(c *PublisherConfig) { c.Endpoints[1].Breaker.Failures = int(big32) }, "endpoints[1].breaker.failures: must be from 1 to 4294967295, got 4294967296"},
		{"huge half_open_requests", func(c *PublisherConfig) { c.Endpoints[1].Breaker.HalfOpenRequests = int(big32) }, "endpoints[1].breaker.half_open_requests: "},
		{"no host", func(c *PublisherConfig) { c.Endpoints[0].URL = "http://:80/x" }, "endpoints[0].url: must name a host"},
		{"no host with user", func(c *PublisherConfig) { c.Endpoints[0].URL = "https://TOPSECRET@/x" }, "endpoints[0].url: must name a host"},
		{"two keys, one header", func(c *PublisherConfig) {
			c.MetadataHeaders = map[string]string{"b": "x-trace", "a": "X-Trace"}
		}, `metadata_headers[b]: header "x-trace" already filled by metadata_headers[a]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.name, "huge") && strconv.IntSize < 64 {
				t.Skip("needs 64-bit int")
			}
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

// big32 does not fit the breaker's 32-bit counters. A variable, so that
// int(big32) compiles where int has 32 bits (the tests using it skip).
var big32 = int64(1) << 32

// Validate reports every problem, in the order of the struct's fields
// (which is the YAML key order), list elements in order and map entries
// sorted by key, the same every time.
func TestConfigReportsEveryErrorInOrder(t *testing.T) {
	c := validConfig()
	c.Endpoints[0].URL = ""
	c.Endpoints[0].Headers = map[string]string{"Z Bad": "v", "A Bad": "v", "M": "bad\nvalue"}
	c.Endpoints[0].Retry.Multiplier = math.NaN()
	c.Endpoints[0].Breaker.Failures = -1
	c.Endpoints[1].RateLimit = math.NaN()
	c.Endpoints[2].Name = ""
	c.ContentType = "a\nb"
	c.MetadataHeaders = map[string]string{"z": "bad header", "a": "bad header"}
	c.DeadLetter = nil
	c.RememberAccepted = MaxRememberAccepted + 1
	c.setDefaults()
	want := []string{
		"endpoints[0].url: required",
		"endpoints[0].headers[A Bad]: invalid header name",
		"endpoints[0].headers[M]: value contains control characters",
		"endpoints[0].headers[Z Bad]: invalid header name",
		"endpoints[0].retry.multiplier: ",
		"endpoints[0].breaker.failures: ",
		"endpoints[1].rate_limit: ",
		"endpoints[2].name: required",
		"content_type: ",
		"metadata_headers[a]: ",
		"metadata_headers[z]: ",
		"DeadLetter: ",
		"remember_accepted: ",
	}
	for range 20 { // map order differs between runs; the errors may not
		err := c.Validate()
		var joined interface{ Unwrap() []error }
		if !errors.As(err, &joined) {
			t.Fatalf("Validate() = %v, want joined errors", err)
		}
		got := joined.Unwrap()
		if len(got) != len(want) {
			t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
		}
		for i := range want {
			if !strings.HasPrefix(got[i].Error(), want[i]) {
				t.Fatalf("error %d = %q, want prefix %q; all:\n%v", i, got[i], want[i], err)
			}
		}
	}
}

// The accepted set takes memory as UUIDs arrive, not remember_accepted at
// once, and still forgets the oldest first.
func TestAcceptedSetGrowsLazily(t *testing.T) {
	s := newAcceptedSet(MaxRememberAccepted)
	s.add("a")
	s.add("b")
	s.add("a")
	if len(s.ring) != 2 || cap(s.ring) > 16 || !s.has("a") || !s.has("b") {
		t.Fatalf("ring len %d cap %d after two UUIDs", len(s.ring), cap(s.ring))
	}
	s = newAcceptedSet(2)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		s.add(id)
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": false, "d": true, "e": true} {
		if s.has(id) != want {
			t.Errorf("has(%q) = %v, want %v", id, !want, want)
		}
	}
	if len(s.ids) != 2 {
		t.Errorf("%d UUIDs remembered, want 2", len(s.ids))
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
