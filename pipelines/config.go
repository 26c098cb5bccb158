package pipelines

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/internal/tracing"
)

// Defaults of the top-level and pipeline keys.
const (
	DefaultShutdownTimeout = 30 * time.Second
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
	DefaultStatsInterval   = 10 * time.Second
	DefaultHTTPAddr        = "127.0.0.1:9464"
	DefaultConcurrency     = 64
	DefaultMaxRetries      = 3
	DefaultRetryInitial    = 100 * time.Millisecond
	DefaultRetryMax        = 10 * time.Second
	DefaultRetryMultiplier = 2.0
	DefaultRetryJitter     = 0.2
)

// names are the only names allowed for connections, pipelines and sinks: they
// become parts of key paths, environment variable names and metric labels.
var validName = regexp.MustCompile(`^[a-z0-9_-]+$`)

// Config is one loombridge configuration file, loaded and checked.
type Config struct {
	// Log configures log/slog.
	Log LogConfig `koanf:"log"`
	// HTTP is the health and metrics listener (/healthz, /readyz, /metrics,
	// /status), served by cmd/loombridge with internal/health.
	HTTP HTTPConfig `koanf:"http"`
	// Tracing is OpenTelemetry tracing: off unless tracing.exporter is stdout
	// or otlp.
	Tracing tracing.Config `koanf:"tracing"`
	// ShutdownTimeout bounds a graceful stop: messages in flight are finished and
	// sinks flushed within it.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// Connections are the named servers: Loom's, and those of broker kinds.
	Connections map[string]*Connection `koanf:"connections"`
	// Buffers is where the queues of buffered pipelines are kept.
	Buffers BuffersConfig `koanf:"buffers"`
	// Pipelines are the named bridges, each from one source to its sinks.
	Pipelines map[string]*Pipeline `koanf:"pipelines"`

	// fingerprints of each pipeline's own keys and of the connections it uses,
	// to restart only what changed on reload.
	fingerprint map[string]string
	hash        string // of the file's bytes (HashConfig)
}

// Hash is the SHA-256 of the configuration file's bytes, in hex as sha256sum
// prints it ("" when the Config was not parsed from a file); environment
// overrides are not in it.
func (c *Config) Hash() string { return c.hash }

// LogConfig configures the logger.
type LogConfig struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // text or json
	// StatsInterval is how often each pipeline's counts are logged; 0 turns it off.
	StatsInterval time.Duration `koanf:"stats_interval"`
}

// SlogLevel is the configured level.
func (l LogConfig) SlogLevel() slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level)) // checked by Load
	return lv
}

// HTTPConfig is the health and metrics listener.
type HTTPConfig struct {
	Addr string `koanf:"addr"`
}

// Connection is a named Loom server: its client keys (addr, transport, token,
// tls, ...) as adapter/loom/client reads them, or embedded: true for a router
// run inside loombridge on loopback.
type Connection struct {
	// Type is "loom" (the default) or the name of a kind that defines a
	// connection of its own (a broker); the keys are then that kind's.
	Type string `koanf:"type"`
	// Broker is the decoded keys of a connection that is not Loom's.
	Broker ConnectionConfig `koanf:"-"`
	// Embedded runs a Loom-compatible router in this process (adapter/loom/server)
	// instead of dialling one; addr, if set, is where it listens (default a free
	// loopback port). Clients trust its self-signed certificate automatically.
	Embedded bool          `koanf:"embedded"`
	Client   client.Config `koanf:",squash"`

	invalid bool // its problems are reported at its own keys
}

// Pipeline moves messages from one source to one or more sinks.
type Pipeline struct {
	// From is the source: {type: <kind>, ...its keys}.
	From *Endpoint `koanf:"-"`
	// Filter, when set, is an expression a message must satisfy to be handled;
	// others are acked and counted as filtered.
	Filter string `koanf:"filter"`
	// To are the sinks by name; each gets every message its when matches.
	To map[string]*Endpoint `koanf:"-"`
	// Retry is how often a failing sink is tried again before the message goes
	// to the dead letters.
	Retry RetryConfig `koanf:"retry"`
	// DeadLetter, when set, takes messages a sink failed after the retries;
	// without it such a message is nacked and the source delivers it again.
	DeadLetter *Endpoint `koanf:"-"`
	// Concurrency is the most messages handled at once (per sink, with a
	// buffer).
	Concurrency int `koanf:"concurrency"`
	// Buffer, when set, puts a durable queue between the source and each
	// sink (buffer.go); nil: each message goes from the source to every sink
	// before the source is acked.
	Buffer *BufferConfig `koanf:"-"`

	filter predicate
}

// Endpoint is one source or sink: its kind and that kind's decoded config.
type Endpoint struct {
	Type   string
	When   string // sinks only: an expression selecting the messages it gets
	Source SourceConfig
	Sink   SinkConfig

	when predicate
}

// RetryConfig maps to Watermill's Retry middleware, applied to each sink.
type RetryConfig struct {
	MaxRetries      int           `koanf:"max_retries"`
	InitialInterval time.Duration `koanf:"initial_interval"`
	MaxInterval     time.Duration `koanf:"max_interval"`
	Multiplier      float64       `koanf:"multiplier"`
	// Jitter is the randomization factor: each wait is within ±Jitter of itself.
	Jitter float64 `koanf:"jitter"`
	// MaxElapsedTime bounds all attempts of one message at one sink; 0 is no bound.
	MaxElapsedTime time.Duration `koanf:"max_elapsed_time"`
}

// setDefaults fills what the file left out; top and log are the keys given
// at the top level and under log:, so a key set to 0 is told from one unset.
func (c *Config) setDefaults(top, log map[string]bool) {
	if !log["stats_interval"] {
		c.Log.StatsInterval = DefaultStatsInterval
	}
	c.Log.Level = cmp.Or(c.Log.Level, DefaultLogLevel)
	c.Log.Format = cmp.Or(c.Log.Format, DefaultLogFormat)
	c.HTTP.Addr = cmp.Or(c.HTTP.Addr, DefaultHTTPAddr)
	if !top["shutdown_timeout"] {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
}

// setDefaults fills the pipeline keys the file left out, one by one: a key
// that is given keeps its value, 0 included (max_retries: 0 is no retries,
// concurrency: 0 is refused), and a multiplier alone keeps the other retry
// defaults.
func (p *Pipeline) setDefaults(concurrencySet bool, retrySet map[string]bool) {
	if !concurrencySet {
		p.Concurrency = DefaultConcurrency
	}
	r := &p.Retry
	if !retrySet["max_retries"] {
		r.MaxRetries = DefaultMaxRetries
	}
	if !retrySet["initial_interval"] {
		r.InitialInterval = DefaultRetryInitial
	}
	if !retrySet["max_interval"] {
		r.MaxInterval = max(DefaultRetryMax, r.InitialInterval)
	}
	if !retrySet["multiplier"] {
		r.Multiplier = DefaultRetryMultiplier
	}
	if !retrySet["jitter"] {
		r.Jitter = DefaultRetryJitter
	}
}

func (c *Config) validate(p *problems, pipelinesGiven bool) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Log.Level)); err != nil {
		p.addf("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		p.addf("log.format", "must be text or json, got %q", c.Log.Format)
	}
	if c.Log.StatsInterval < 0 {
		p.addf("log.stats_interval", "must not be negative, got %s", c.Log.StatsInterval)
	}
	if err := checkAddr(c.HTTP.Addr); err != nil {
		p.add("http.addr", err)
	}
	p.add("tracing", c.Tracing.Validate())
	if c.ShutdownTimeout <= 0 {
		p.addf("shutdown_timeout", "must be positive, got %s (leave it out for %s)", c.ShutdownTimeout, DefaultShutdownTimeout)
	}
	if len(c.Pipelines) == 0 && !pipelinesGiven {
		p.addf("pipelines", "no pipeline defined: add at least one under pipelines:")
	}
}

func (r RetryConfig) validate(path string, p *problems) {
	if r.MaxRetries < 0 {
		p.addf(path+".max_retries", "must not be negative, got %d", r.MaxRetries)
	}
	if r.InitialInterval < 0 {
		p.addf(path+".initial_interval", "must not be negative, got %s", r.InitialInterval)
	}
	if r.MaxInterval < r.InitialInterval {
		p.addf(path+".max_interval", "must be at least initial_interval (%s), got %s", r.InitialInterval, r.MaxInterval)
	}
	if math.IsNaN(r.Multiplier) || math.IsInf(r.Multiplier, 0) || r.Multiplier < 1 {
		p.addf(path+".multiplier", "must be a number >= 1, got %v", r.Multiplier)
	}
	if math.IsNaN(r.Jitter) || r.Jitter < 0 || r.Jitter > 1 {
		p.addf(path+".jitter", "must be between 0 and 1, got %v", r.Jitter)
	}
	if r.MaxElapsedTime < 0 {
		p.addf(path+".max_elapsed_time", "must not be negative, got %s", r.MaxElapsedTime)
	}
}

// checkAddr accepts host:port with a port number from 0 to 65535; an empty
// host listens on every interface.
func checkAddr(addr string) error {
	const want = "want host:port, such as 127.0.0.1:9464"
	if strings.Contains(addr, "://") {
		return fmt.Errorf("%s, without a scheme; got %q", want, addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s; got %q", want, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || n > 65535 {
		return fmt.Errorf("port must be a number from 0 to 65535; got %q", addr)
	}
	return nil
}

// predicate is a compiled filter or when expression; nil matches everything.
type predicate interface {
	match(topic string, msg *message.Message) (bool, error)
}
