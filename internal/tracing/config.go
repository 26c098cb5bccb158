package tracing

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"sort"
	"strings"
)

// Exporters, protocols and defaults of Config.
const (
	ExporterNone   = "none"   // no tracing (the default)
	ExporterStdout = "stdout" // spans as JSON lines on stdout, for development
	ExporterOTLP   = "otlp"   // OTLP to a collector

	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"

	DefaultExporter      = ExporterNone
	DefaultProtocol      = ProtocolGRPC
	DefaultSamplingRatio = 1.0
	DefaultServiceName   = "loombridge"
)

// Config is the tracing: section of a configuration. Tracing is off unless
// Exporter is stdout or otlp.
type Config struct {
	// Exporter is none, stdout or otlp.
	Exporter string `koanf:"exporter"`
	// Protocol is the OTLP transport: grpc (port 4317) or http (port 4318,
	// protobuf over HTTP).
	Protocol string `koanf:"protocol"`
	// Endpoint is the collector as host:port, or a URL (http://host:4318/v1/traces);
	// empty leaves it to the exporter (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost).
	Endpoint string `koanf:"endpoint"`
	// Headers are sent with every export (an API key, say). Their values are
	// secrets: they are never logged nor printed in errors.
	Headers map[string]string `koanf:"headers"`
	// Insecure sends OTLP without TLS.
	Insecure bool `koanf:"insecure"`
	// SamplingRatio is the share of new traces recorded, from 0 to 1 (nil: 1);
	// a message that arrives with a trace context follows its parent's decision.
	SamplingRatio *float64 `koanf:"sampling_ratio"`
	// ServiceName is the service.name resource attribute.
	ServiceName string `koanf:"service_name"`
}

// Enabled reports whether c turns tracing on.
func (c Config) Enabled() bool { return c.Exporter == ExporterStdout || c.Exporter == ExporterOTLP }

// SetDefaults fills what was left out.
func (c *Config) SetDefaults() {
	c.Exporter = cmp.Or(c.Exporter, DefaultExporter)
	c.Protocol = cmp.Or(c.Protocol, DefaultProtocol)
	if c.SamplingRatio == nil {
		r := DefaultSamplingRatio
		c.SamplingRatio = &r
	}
	c.ServiceName = cmp.Or(c.ServiceName, DefaultServiceName)
}

// Validate reports every problem, joined with errors.Join, each starting with
// its key ("sampling_ratio: must be ..."). Zero values stand for the
// defaults. Header values never appear in an error.
func (c Config) Validate() error {
	var errs []error
	switch c.Exporter {
	case "", ExporterNone, ExporterStdout, ExporterOTLP:
	default:
		errs = append(errs, fmt.Errorf("exporter: must be none, stdout or otlp, got %q", c.Exporter))
	}
	switch c.Protocol {
	case "", ProtocolGRPC, ProtocolHTTP:
	default:
		errs = append(errs, fmt.Errorf("protocol: must be grpc or http, got %q", c.Protocol))
	}
	if c.Endpoint != "" {
		if err := checkEndpoint(c.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("endpoint: %w", err))
		}
	}
	names := make([]string, 0, len(c.Headers))
	for name := range c.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case !validToken(name):
			errs = append(errs, fmt.Errorf("headers[%s]: not a valid header name", name))
		case strings.ContainsAny(c.Headers[name], "\r\n\x00"):
			errs = append(errs, fmt.Errorf("headers[%s]: the value holds a line break or NUL (value not shown)", name))
		}
	}
	if r := c.SamplingRatio; r != nil && (math.IsNaN(*r) || *r < 0 || *r > 1) {
		errs = append(errs, fmt.Errorf("sampling_ratio: must be between 0 and 1, got %v", *r))
	}
	return errors.Join(errs...)
}

// checkEndpoint accepts host:port or an http(s) URL with a host. Its errors
// quote no more than scheme and host, since a URL may hold credentials.
func checkEndpoint(s string) error {
	const want = "want host:port (collector:4317) or a URL (https://collector:4318)"
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%s; not a URL with a host", want)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("%s; the scheme must be http or https, got %q", want, u.Scheme)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%s; got %q", want, s)
	}
	return nil
}

// validToken reports whether s is an HTTP token (RFC 9110), as header names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
