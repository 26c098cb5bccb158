package client

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Transports.
const (
	TransportQUIC = "quic" // native Loom over QUIC, ALPN loom/1
	TransportH3   = "h3"   // POST /stream over HTTP/3
)

// ALPN protocol ids.
const (
	ALPNLoom = "loom/1"
	ALPNH3   = "h3"
)

// ErrInsecureTLS is logged when tls.insecure_skip_verify is on.
var ErrInsecureTLS = errors.New("tls.insecure_skip_verify is set: the server's identity is not checked and anyone on the path can read and alter messages")

// Secret holds a token or password. It prints as [redacted] so that a config that is
// logged or wrapped into an error never shows it.
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the secret from %#v too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// TLSConfig says how to verify the server and, for mTLS, who the client is.
type TLSConfig struct {
	// InsecureSkipVerify turns server verification off; a warning is logged.
	InsecureSkipVerify bool `koanf:"insecure_skip_verify"`
	// CAFile is a PEM bundle trusted in place of the system roots.
	CAFile string `koanf:"ca_file"`
	// CertFile and KeyFile are the client certificate for mTLS.
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
	// ServerName overrides the name verified in the server certificate.
	ServerName string `koanf:"server_name"`
}

// Defaults that SetDefaults gives zero-valued Config fields.
const (
	// DefaultTransport is the default Config.Transport.
	DefaultTransport = TransportQUIC
	// DefaultName is the default Config.Name, sent in the hello.
	DefaultName = "loombridge"
	// DefaultChunkSize is the default Config.ChunkSize with the default limits:
	// SetDefaults uses Limits.MaxChunk, which wire.DefaultLimits sets to this.
	DefaultChunkSize = 64 << 10
	// DefaultDialTimeout is the default Config.DialTimeout.
	DefaultDialTimeout = 10 * time.Second
	// DefaultKeepAlive is the default Config.KeepAlive. An idle connection sends a
	// PING this often (about 100 bytes a second with its acknowledgement), so that
	// a server that vanished is suspected within KeepAlive + 0.5 s.
	DefaultKeepAlive = time.Second
	// DefaultIdleTimeout is the default Config.IdleTimeout.
	DefaultIdleTimeout = 15 * time.Second
)

// Config is how a Client reaches a Loom server. Zero fields take their defaults
// (SetDefaults); the koanf tags are the configuration keys.
type Config struct {
	// Addr is host:port of the Loom server (UDP), without a scheme; required.
	Addr string `koanf:"addr"`
	// Transport is "quic" (default) or "h3".
	Transport string `koanf:"transport"`
	// Name identifies this client to the server; default DefaultName.
	Name string `koanf:"name"`
	// Token authenticates the client; TokenFile reads it from a file instead.
	Token     Secret    `koanf:"token"`
	TokenFile string    `koanf:"token_file"`
	TLS       TLSConfig `koanf:"tls"`
	// TLSClientConfig, when set, is used as is instead of TLS (for tests and
	// programs that build their own).
	TLSClientConfig *tls.Config `koanf:"-"`
	// ChunkSize is the largest body chunk sent; default and maximum
	// Limits.MaxChunk (DefaultChunkSize, 64 KiB, with the default limits).
	ChunkSize int `koanf:"chunk_size"`
	// Limits bound what the server may declare; default wire.DefaultLimits().
	Limits wire.Limits `koanf:"-"`
	// DialTimeout bounds the QUIC handshake; default DefaultDialTimeout (10 s).
	DialTimeout time.Duration `koanf:"dial_timeout"`
	// KeepAlive is the QUIC keep-alive period; default DefaultKeepAlive (1 s). A
	// connection that hears nothing for KeepAlive + max(0.5 s, 3 PTO) is suspect:
	// the client dials the server afresh, and if that works while this connection
	// stays silent after a poke, closes it (see Client.Done).
	KeepAlive time.Duration `koanf:"keep_alive"`
	// IdleTimeout closes a connection that has heard nothing for this long, so a dead
	// server is noticed even while it is not back; default DefaultIdleTimeout (15 s).
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// AdminURL is the server's admin listener, where loomd serves its Prometheus
	// metrics ("http://loom.example.com:9091"; a URL with a path names the metrics
	// page itself). When set, a publisher holds each room's messages after every
	// (re)connect until the server reports a consumer stream in the room
	// (loom_streams{role="consumer"}), since loomd discards what reaches a room
	// without one and tells the producer nothing. Unset (default): it sends at
	// once. Subscribers do not use it.
	AdminURL string `koanf:"admin_url"`
}

// SetDefaults fills unset fields with their defaults.
func (c *Config) SetDefaults() {
	c.Transport = cmp.Or(c.Transport, DefaultTransport)
	c.Name = cmp.Or(c.Name, DefaultName)
	if c.Limits == (wire.Limits{}) {
		c.Limits = wire.DefaultLimits()
	}
	c.ChunkSize = cmp.Or(c.ChunkSize, c.Limits.MaxChunk)
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	c.KeepAlive = cmp.Or(c.KeepAlive, DefaultKeepAlive)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
}

// Validate reports every invalid field, joined with errors.Join in the order of
// the fields (the order of the keys in a configuration file), each error starting
// with the field's config key, e.g. "addr: ...". Call it after SetDefaults. It
// reads no file: Check does.
func (c Config) Validate() error { return c.validate(false) }

// Check is Validate plus what only reading files tells: that token_file, tls.ca_file
// and tls.cert_file/tls.key_file can be read and parsed now. Its errors are in the
// same field order. Dial reads the files again on every connection, so rotated
// files are picked up; a changed token_file is read again by a live connection too
// (see tokenSource).
func (c Config) Check() error { return c.validate(true) }

func (c Config) validate(files bool) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(checkAddr(c.Addr))
	if c.Transport != TransportQUIC && c.Transport != TransportH3 {
		add(fmt.Errorf("transport: must be %q or %q, got %q", TransportQUIC, TransportH3, c.Transport))
	}
	if len(c.Name) > c.Limits.MaxName {
		add(fmt.Errorf("name: %d bytes, limit %d", len(c.Name), c.Limits.MaxName))
	}
	if c.Token != "" && c.TokenFile != "" {
		add(errors.New("token, token_file: set one, not both"))
	}
	if len(c.Token) > c.Limits.MaxToken {
		add(fmt.Errorf("token: %d bytes, limit %d", len(c.Token), c.Limits.MaxToken))
	}
	if files && c.TokenFile != "" {
		_, err := c.token()
		add(err)
	}
	pairOK := (c.TLS.CertFile == "") == (c.TLS.KeyFile == "")
	if !pairOK {
		add(errors.New("tls.cert_file, tls.key_file: set both for mTLS, or neither"))
	}
	if files && pairOK && c.TLSClientConfig == nil {
		_, err := c.tlsFiles()
		add(err)
	}
	if c.ChunkSize < 1 || c.ChunkSize > c.Limits.MaxChunk {
		add(fmt.Errorf("chunk_size: must be 1 to %d, got %d", c.Limits.MaxChunk, c.ChunkSize))
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{{"dial_timeout", c.DialTimeout}, {"keep_alive", c.KeepAlive}, {"idle_timeout", c.IdleTimeout}} {
		if d.d <= 0 {
			add(fmt.Errorf("%s: must be > 0, got %s", d.key, d.d))
		}
	}
	if c.KeepAlive > 0 && c.IdleTimeout > 0 && c.KeepAlive >= c.IdleTimeout {
		add(fmt.Errorf("keep_alive: must be shorter than idle_timeout (%s), got %s", c.IdleTimeout, c.KeepAlive))
	}
	if c.AdminURL != "" {
		_, err := metricsURL(c.AdminURL)
		add(err)
	}
	return errors.Join(errs...)
}

// checkAddr wants host:port with a port, and no scheme: a URL or a bare host would
// be accepted by nothing until Dial, which then fails on every attempt.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("addr: must be set (host:port)")
	}
	if strings.Contains(addr, "://") {
		return fmt.Errorf("addr: %q has a scheme; want host:port, e.g. loom.example.com:4433", addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("addr: want host:port: %w", err)
	}
	if port == "" {
		return fmt.Errorf("addr: %q has an empty port; want host:port", addr)
	}
	return nil
}

// token returns the token, reading TokenFile if set. Errors name the file, never
// its content.
func (c Config) token() (string, error) {
	if c.TokenFile == "" {
		return string(c.Token), nil
	}
	b, err := readAtMost(c.TokenFile, int64(c.Limits.MaxToken)+4096) // room for whitespace around it
	if err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) > c.Limits.MaxToken {
		return "", fmt.Errorf("token_file %s: token is %d bytes, limit %d", c.TokenFile, len(tok), c.Limits.MaxToken)
	}
	return tok, nil
}

// tlsConfig builds the TLS client config for the given ALPN.
func (c Config) tlsConfig(alpn string, logger watermill.LoggerAdapter) (*tls.Config, error) {
	var cfg *tls.Config
	if c.TLSClientConfig != nil {
		cfg = c.TLSClientConfig.Clone()
	} else {
		var err error
		if cfg, err = c.tlsFiles(); err != nil {
			return nil, err
		}
	}
	if cfg.InsecureSkipVerify {
		// Watermill's logger has no warning level; Error is the one operators watch.
		logger.Error("WARNING: TLS verification of the Loom server is disabled", ErrInsecureTLS, watermill.LogFields{"addr": c.Addr})
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{alpn}
	return cfg, nil
}

// tlsFiles builds the TLS config from c.TLS, reading its files. It reports every
// file that cannot be used, tls.ca_file first.
func (c Config) tlsFiles() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify}
	var errs []error
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.ca_file: %w", err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("tls.ca_file %s: no PEM certificate found", c.TLS.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.cert_file/tls.key_file: %w", err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readAtMost reads a file, but no more than limit+1 bytes: a token_file
// pointing at /dev/zero or a huge file must fail, not read forever.
func readAtMost(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}
