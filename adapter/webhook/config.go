package webhook

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"
)

// Defaults applied by the constructor (setDefaults) to zero fields. The
// HTTPClient default is built by the constructor; see
// PublisherConfig.HTTPClient.
const (
	// DefaultContentType is PublisherConfig.ContentType's default.
	DefaultContentType = "application/octet-stream"
	// DefaultDeadLetterTopic is PublisherConfig.DeadLetterTopic's default.
	DefaultDeadLetterTopic = "webhook_dead_letters"
	// DefaultRememberAccepted is PublisherConfig.RememberAccepted's
	// default.
	DefaultRememberAccepted = 10000

	// DefaultMethod is EndpointConfig.Method's default.
	DefaultMethod = http.MethodPost
	// DefaultTimeout is EndpointConfig.Timeout's default.
	DefaultTimeout = 15 * time.Second
	// DefaultMaxInFlight is EndpointConfig.MaxInFlight's default.
	DefaultMaxInFlight = 4
	// DefaultRateBurst is EndpointConfig.RateBurst's default.
	DefaultRateBurst = 1

	// DefaultInitialInterval is RetryConfig.InitialInterval's default.
	DefaultInitialInterval = time.Second
	// DefaultMaxInterval is RetryConfig.MaxInterval's default.
	DefaultMaxInterval = 10 * time.Minute
	// DefaultMultiplier is RetryConfig.Multiplier's default.
	DefaultMultiplier = 2.0
	// DefaultMaxElapsedTime is RetryConfig.MaxElapsedTime's default.
	DefaultMaxElapsedTime = 24 * time.Hour
	// DefaultMaxAttempts is RetryConfig.MaxAttempts's default.
	DefaultMaxAttempts = 100

	// DefaultBreakerFailures is BreakerConfig.Failures's default.
	DefaultBreakerFailures = 5
	// DefaultBreakerOpenTimeout is BreakerConfig.OpenTimeout's default.
	DefaultBreakerOpenTimeout = 30 * time.Second
	// DefaultBreakerHalfOpenRequests is BreakerConfig.HalfOpenRequests's
	// default.
	DefaultBreakerHalfOpenRequests = 1
)

// Upper bounds checked by Validate.
const (
	// MaxRememberAccepted bounds PublisherConfig.RememberAccepted (about
	// 100 MB per endpoint when full).
	MaxRememberAccepted = 1_000_000
	// MaxMaxInFlight bounds EndpointConfig.MaxInFlight: each is a
	// goroutine started by NewPublisher.
	MaxMaxInFlight = 10_000
	// MaxBreakerCount bounds BreakerConfig.Failures and
	// BreakerConfig.HalfOpenRequests, which the breaker counts in 32 bits.
	MaxBreakerCount = math.MaxUint32
)

// ContentTypeMetadata is the message metadata key whose value, when set,
// replaces the configured Content-Type for that message.
const ContentTypeMetadata = "content_type"

// PublisherConfig configures a [Publisher].
type PublisherConfig struct {
	// Endpoints receive every published message. At least one is required.
	Endpoints []EndpointConfig `koanf:"endpoints"`
	// ContentType is sent when the message has no "content_type" metadata
	// (default "application/octet-stream").
	ContentType string `koanf:"content_type"`
	// MetadataHeaders maps message metadata keys to HTTP header names; a
	// key missing from a message sends no header.
	MetadataHeaders map[string]string `koanf:"metadata_headers"`
	// DeadLetterTopic is the topic dead letters are published to (default
	// "webhook_dead_letters").
	DeadLetterTopic string `koanf:"dead_letter_topic"`
	// DeadLetter receives messages an endpoint could not take. Required:
	// without it a failed delivery would be lost. It must be safe for
	// concurrent use, as all Watermill publishers are. Not a config key:
	// set it in code.
	DeadLetter message.Publisher `koanf:"-"`
	// HTTPClient sends the requests. Default: a client with dial, TLS and
	// idle timeouts, TLS verification on, and redirects not followed (a
	// redirected POST would silently turn into a GET).
	HTTPClient *http.Client `koanf:"-"`
	// TracerProvider makes one span per HTTP request (HTTP client semantic
	// conventions), a child of the message's context; the request's
	// traceparent names that span. Default: otel's global provider. Not a
	// config key: set it in code.
	TracerProvider trace.TracerProvider `koanf:"-"`
	// RememberAccepted is how many accepted message UUIDs each endpoint
	// remembers, oldest forgotten first (default 10000, at most
	// MaxRememberAccepted; about 100 bytes each, taken as UUIDs arrive).
	// Publish skips an endpoint that accepted the message's UUID, so a
	// caller retrying a Publish that returned an error does not send the
	// message again to endpoints that already took it.
	RememberAccepted int `koanf:"remember_accepted"`
}

// EndpointConfig configures one receiver of the fan-out.
type EndpointConfig struct {
	// Name identifies the endpoint in dead letters, logs and Stats; Replay
	// finds the endpoint by it. Required and unique.
	Name string `koanf:"name"`
	// URL is the absolute http or https address, with a host. Required.
	URL string `koanf:"url"`
	// Method is the HTTP method (default POST).
	Method string `koanf:"method"`
	// Headers are sent with every request. Values may be secrets
	// (Authorization); they are never logged.
	Headers map[string]string `koanf:"headers"`
	// Secrets sign requests per Standard Webhooks ("whsec_" + base64).
	// Several secrets (during rotation) send several signatures. Empty:
	// requests are not signed.
	Secrets []string `koanf:"secrets"`
	// SecretsFile names a file of more secrets, one a line (blank lines and
	// lines starting with # are skipped), so they need not be in the
	// configuration. It is read when the publisher is built.
	SecretsFile string `koanf:"secrets_file"`
	// Timeout bounds one attempt, response headers and body included
	// (default 15s).
	Timeout time.Duration `koanf:"timeout"`
	// MaxInFlight is the number of concurrent requests to this endpoint
	// (default 4, at most MaxMaxInFlight). 1 keeps messages in order,
	// retries included.
	MaxInFlight int `koanf:"max_in_flight"`
	// RateLimit is the maximum number of requests per second, retries
	// included. 0 means unlimited; NaN and infinities are refused.
	RateLimit float64 `koanf:"rate_limit"`
	// RateBurst is the burst allowed above RateLimit (default 1).
	RateBurst int `koanf:"rate_burst"`
	// Retry is the retry schedule.
	Retry RetryConfig `koanf:"retry"`
	// Breaker is the circuit breaker of this endpoint.
	Breaker BreakerConfig `koanf:"breaker"`
}

// RetryConfig is an exponential backoff with full jitter: the wait before
// retry n is uniform in [0, min(MaxInterval, InitialInterval*Multiplier^n)].
type RetryConfig struct {
	// InitialInterval is the first backoff ceiling (default 1s).
	InitialInterval time.Duration `koanf:"initial_interval"`
	// MaxInterval caps the backoff ceiling (default 10m).
	MaxInterval time.Duration `koanf:"max_interval"`
	// Multiplier grows the ceiling after each retry (default 2; finite,
	// at least 1).
	Multiplier float64 `koanf:"multiplier"`
	// MaxElapsedTime bounds the time spent on one message, waits
	// included (default 24h).
	MaxElapsedTime time.Duration `koanf:"max_elapsed_time"`
	// MaxAttempts bounds the HTTP requests for one message (default 100).
	MaxAttempts int `koanf:"max_attempts"`
	// RetryStatuses are extra 4xx statuses to retry. 408, 425, 429 and all
	// 5xx are always retried; 410 Gone never is (it disables the endpoint).
	RetryStatuses []int `koanf:"retry_statuses"`
}

// BreakerConfig configures the endpoint's circuit breaker. While it is
// open, the endpoint's messages are dead-lettered at once with reason
// ReasonBreakerOpen (Replay sends them later) rather than waiting: a caller
// that publishes one message at a time would otherwise get nothing to the
// healthy endpoints while this one is down. While it is half-open,
// messages beyond the probes wait for the probes' outcome.
type BreakerConfig struct {
	// Failures is the number of consecutive failed attempts that opens the
	// breaker (default 5, at most MaxBreakerCount).
	Failures int `koanf:"failures"`
	// OpenTimeout is how long the breaker stays open before half-open
	// probes (default 30s).
	OpenTimeout time.Duration `koanf:"open_timeout"`
	// HalfOpenRequests is the number of probes allowed while half-open
	// (default 1, at most MaxBreakerCount).
	HalfOpenRequests int `koanf:"half_open_requests"`
}

func (c *PublisherConfig) setDefaults() {
	c.ContentType = cmp.Or(c.ContentType, DefaultContentType)
	c.DeadLetterTopic = cmp.Or(c.DeadLetterTopic, DefaultDeadLetterTopic)
	if c.HTTPClient == nil {
		c.HTTPClient = newDefaultClient()
	}
	c.RememberAccepted = cmp.Or(c.RememberAccepted, DefaultRememberAccepted)
	for i := range c.Endpoints {
		c.Endpoints[i].setDefaults()
	}
}

func (c *EndpointConfig) setDefaults() {
	c.Method = cmp.Or(c.Method, DefaultMethod)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.RateBurst = cmp.Or(c.RateBurst, DefaultRateBurst)
	r := &c.Retry
	r.InitialInterval = cmp.Or(r.InitialInterval, DefaultInitialInterval)
	r.MaxInterval = cmp.Or(r.MaxInterval, DefaultMaxInterval)
	r.Multiplier = cmp.Or(r.Multiplier, DefaultMultiplier)
	r.MaxElapsedTime = cmp.Or(r.MaxElapsedTime, DefaultMaxElapsedTime)
	r.MaxAttempts = cmp.Or(r.MaxAttempts, DefaultMaxAttempts)
	b := &c.Breaker
	b.Failures = cmp.Or(b.Failures, DefaultBreakerFailures)
	b.OpenTimeout = cmp.Or(b.OpenTimeout, DefaultBreakerOpenTimeout)
	b.HalfOpenRequests = cmp.Or(b.HalfOpenRequests, DefaultBreakerHalfOpenRequests)
}

// Validate reports every invalid field, joined with errors.Join in a
// fixed order: the order of the struct fields (which is the YAML key
// order), list elements in order and map entries sorted by key. Each error
// starts with the field's key path, for example "endpoints[2].url: ...".
// Values of secrets never appear. It expects defaults to be set, as
// NewPublisher does.
func (c *PublisherConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Endpoints) == 0 {
		bad("endpoints: at least one endpoint is required")
	}
	names := map[string]int{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if j, dup := names[e.Name]; dup && e.Name != "" {
			bad("endpoints[%d].name: %q already used by endpoints[%d]", i, e.Name, j)
		} else {
			names[e.Name] = i
		}
		errs = append(errs, e.validate(fmt.Sprintf("endpoints[%d].", i))...)
	}
	if !validHeaderValue(c.ContentType) {
		bad("content_type: invalid header value %q: contains control characters", c.ContentType)
	}
	headers := map[string]string{} // canonical header name: metadata key
	for _, k := range slices.Sorted(maps.Keys(c.MetadataHeaders)) {
		h := c.MetadataHeaders[k]
		if !validHeaderName(h) {
			bad("metadata_headers[%s]: invalid header name %q", k, h)
			continue
		}
		// Two keys filling one header would leave it to chance which wins.
		ch := http.CanonicalHeaderKey(h)
		if other, dup := headers[ch]; dup {
			bad("metadata_headers[%s]: header %q already filled by metadata_headers[%s]", k, h, other)
			continue
		}
		headers[ch] = k
	}
	if c.DeadLetterTopic == "" {
		bad("dead_letter_topic: must not be empty")
	}
	if c.DeadLetter == nil {
		// Not a config key: the publisher is a Go value set in code.
		bad("DeadLetter: a dead-letter publisher is required (set PublisherConfig.DeadLetter in code)")
	}
	switch {
	case c.RememberAccepted < 0:
		bad("remember_accepted: must not be negative, got %d", c.RememberAccepted)
	case c.RememberAccepted > MaxRememberAccepted:
		bad("remember_accepted: must be at most %d, got %d", MaxRememberAccepted, c.RememberAccepted)
	}
	return errors.Join(errs...)
}

// validate returns one error per invalid field, each starting with prefix,
// in the order of Validate.
func (e *EndpointConfig) validate(prefix string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(prefix+format, args...)) }
	if e.Name == "" {
		bad("name: required")
	}
	if e.URL == "" {
		bad("url: required")
	} else if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		// The parse error would quote the URL, which may hold a token.
		bad("url: must be an absolute http or https URL")
	} else if u.Hostname() == "" {
		bad("url: must name a host") // "http://:80/x" has a port only
	}
	if !validToken(e.Method) {
		bad("method: invalid HTTP method %q", e.Method)
	}
	for _, h := range slices.Sorted(maps.Keys(e.Headers)) {
		if !validHeaderName(h) {
			bad("headers[%s]: invalid header name", h)
		}
		if !validHeaderValue(e.Headers[h]) {
			bad("headers[%s]: value contains control characters", h) // value not shown: may be a secret
		}
	}
	for i, s := range e.Secrets {
		if _, err := decodeSecret(s); err != nil {
			bad("secrets[%d]: %w", i, err)
		}
	}
	if e.SecretsFile != "" {
		if _, err := ReadSecretsFile(e.SecretsFile); err != nil {
			bad("secrets_file: %w", err)
		}
	}
	if e.Timeout < 0 {
		bad("timeout: must not be negative, got %s", e.Timeout)
	}
	switch {
	case e.MaxInFlight < 0:
		bad("max_in_flight: must not be negative, got %d", e.MaxInFlight)
	case e.MaxInFlight > MaxMaxInFlight:
		bad("max_in_flight: must be at most %d, got %d", MaxMaxInFlight, e.MaxInFlight)
	}
	// NaN passes every comparison, and a NaN rate turned the limit off.
	if math.IsNaN(e.RateLimit) || math.IsInf(e.RateLimit, 0) || e.RateLimit < 0 {
		bad("rate_limit: must be a finite number, 0 (unlimited) or more, got %v", e.RateLimit)
	}
	if e.RateBurst < 0 {
		bad("rate_burst: must not be negative, got %d", e.RateBurst)
	}
	r := e.Retry
	if r.InitialInterval <= 0 {
		bad("retry.initial_interval: must be > 0, got %s", r.InitialInterval)
	}
	if r.MaxInterval < r.InitialInterval {
		bad("retry.max_interval: must be at least retry.initial_interval")
	}
	// A NaN multiplier made every backoff 0: retries without any wait.
	if math.IsNaN(r.Multiplier) || math.IsInf(r.Multiplier, 0) || r.Multiplier < 1 {
		bad("retry.multiplier: must be a finite number, at least 1, got %v", r.Multiplier)
	}
	if r.MaxElapsedTime < 0 {
		bad("retry.max_elapsed_time: must not be negative, got %s", r.MaxElapsedTime)
	}
	if r.MaxAttempts < 1 {
		bad("retry.max_attempts: must be at least 1, got %d", r.MaxAttempts)
	}
	for i, s := range r.RetryStatuses {
		if s < 400 || s > 499 || s == http.StatusGone {
			bad("retry.retry_statuses[%d]: %d is not a retryable 4xx status", i, s)
		}
	}
	b := e.Breaker
	if b.Failures < 1 || uint64(b.Failures) > MaxBreakerCount {
		bad("breaker.failures: must be from 1 to %d, got %d", uint64(MaxBreakerCount), b.Failures)
	}
	if b.OpenTimeout < 0 {
		bad("breaker.open_timeout: must not be negative, got %s", b.OpenTimeout)
	}
	if b.HalfOpenRequests < 1 || uint64(b.HalfOpenRequests) > MaxBreakerCount {
		bad("breaker.half_open_requests: must be from 1 to %d, got %d", uint64(MaxBreakerCount), b.HalfOpenRequests)
	}
	return errs
}

// validToken reports whether s is an RFC 9110 token (method and header
// names).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func validHeaderName(s string) bool { return validToken(s) }

// validHeaderValue reports whether net/http would send v: no control
// characters but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// redactURL keeps only scheme://host[:port] of an endpoint URL, for logs,
// errors and dead letters: user info, query and path may all carry
// credentials (Slack, Discord and Teams webhook URLs hold their token in
// the path). Anything after the host shows as "/…".
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid url)"
	}
	r := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		r += "/…"
	}
	return r
}

func newDefaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.IdleConnTimeout = 90 * time.Second
	// Fan-out keeps several requests in flight per endpoint; the default of
	// 2 idle connections per host would make most of them redial.
	t.MaxIdleConnsPerHost = 64
	// Unlimited in total: the per-host limit times the endpoints bounds it,
	// and a global cap below that makes a wide fan-out redial constantly.
	t.MaxIdleConns = 0
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// secrets returns Secrets and those of SecretsFile.
func (e EndpointConfig) secrets() ([]string, error) {
	if e.SecretsFile == "" {
		return e.Secrets, nil
	}
	more, err := ReadSecretsFile(e.SecretsFile)
	if err != nil {
		return nil, fmt.Errorf("secrets_file: %w", err)
	}
	return append(slices.Clone(e.Secrets), more...), nil
}

// ReadSecretsFile reads one secret a line, as secrets_file keys name them. Errors name the file and the line,
// never the content.
func ReadSecretsFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := decodeSecret(line); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no secret", path)
	}
	return out, nil
}
