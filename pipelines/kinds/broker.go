package kinds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// What the broker kinds (nats, amqp, kafka) share: secrets given inline or
// by file, TLS files, and the error of a message a broker cannot take whole.

// secret returns the secret given inline (value) or in a file (file); see
// secretOrFile.
func secret(key string, value client.Secret, file string) (string, error) {
	s, err := secretOrFile(key, value, file)
	return string(s), err
}

// BrokerTLS is the tls: block of a broker connection.
type BrokerTLS struct {
	// Enabled turns TLS on with the system roots when no file is given; any
	// file below turns it on too.
	Enabled bool `koanf:"enabled"`
	// CAFile is a PEM bundle trusted in place of the system roots.
	CAFile string `koanf:"ca_file"`
	// CertFile and KeyFile are the client certificate, for mutual TLS.
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
	// ServerName overrides the name verified in the server's certificate.
	ServerName string `koanf:"server_name"`
	// InsecureSkipVerify turns verification of the server off (tests only).
	InsecureSkipVerify bool `koanf:"insecure_skip_verify"`
}

func (t BrokerTLS) on() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// config builds the client TLS config, nil when TLS is off; errors are keyed
// under tls.
func (t BrokerTLS) config() (*tls.Config, error) {
	if !t.on() {
		return nil, nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("tls.cert_file, tls.key_file: set both for mutual TLS, or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // the user's explicit choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file, tls.key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// errTooLarge is the error of every message a sink refuses for its size (it
// goes to the dead letters whole, never truncated): the redis and sql sinks
// wrap it, and a TooLargeError is it too, so one errors.Is finds both.
var errTooLarge = errors.New("message too large")

// TooLargeError is a message a broker cannot take whole: it is refused before
// it is sent (never truncated), the sink fails, and the pipeline's
// dead_letter gets it.
type TooLargeError struct {
	Backend string // nats, amqp, kafka
	UUID    string
	Size    int    // bytes as the broker counts them (payload, headers, ...)
	Limit   int    // the limit
	Setting string // where the limit comes from, and how to raise it
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: message %s is %d bytes, over the limit of %d bytes (%s); refused whole, not truncated",
		e.Backend, e.UUID, e.Size, e.Limit, e.Setting)
}

// Is reports errTooLarge as a match.
func (e *TooLargeError) Is(target error) bool { return target == errTooLarge }

// connectionOf returns the connection called name, which must be of the given
// kind (its type under connections).
func connectionOf[C pipelines.ConnectionConfig](d pipelines.Deps, name, kind string) (C, error) {
	var none C
	if name == "" {
		return none, fmt.Errorf("connection: must name a connection of type %s under connections", kind)
	}
	c, err := d.Connection(name, kind)
	if err != nil {
		return none, fmt.Errorf("connection: %w", err)
	}
	return c.(C), nil
}

// redactURI is a broker URL without its password, for errors and logs; one
// that does not parse is not shown at all.
func redactURI(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}

// sizeLimited refuses a whole Publish call when one of its messages is over
// the backend's limit, before any of them is sent.
type sizeLimited struct {
	message.Publisher
	limit func(*message.Message) error
}

func (p sizeLimited) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := p.limit(m); err != nil {
			return err
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

// duration is a config key and its value, for negativeDurations.
type duration struct {
	key string
	d   time.Duration
}

// negativeDurations reports each of ds that is negative, in the order given
// (the order of the keys in the reference), one error a key.
func negativeDurations(ds ...duration) []error {
	var errs []error
	for _, v := range ds {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", v.key, v.d))
		}
	}
	return errs
}
