package kinds

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/pipelines"
)

// HTTP is an ingress: a source serving HTTP on addr that turns each POST to
// path into a message. The body is the payload, byte for byte; the header
// named by uuid_header (Idempotency-Key) is the UUID, a new one when absent;
// the headers listed in metadata_headers become metadata (map one to
// loom_key to set the Loom key). It answers 204 only once every sink of the
// pipeline took the message or it went to the dead letters, 500 when not
// (nacked: send it again), 503 once the pipeline is stopping, 413 over
// max_body_bytes and 401 without the bearer token of auth_token_file:
//
//	from: {type: http, addr: "127.0.0.1:8080", path: /ingest, auth_token_file: /run/secrets/ingest}
var HTTP = pipelines.Kind{
	Name:    "http",
	Summary: "HTTP ingress: each request to a route is a message",
	Source:  func() pipelines.SourceConfig { return &HTTPSource{} },
}

// DefaultHTTPUUIDHeader is the header whose value becomes the message's UUID.
const DefaultHTTPUUIDHeader = "Idempotency-Key"

// HTTPSource is the http kind's keys.
type HTTPSource struct {
	Addr string `koanf:"addr"`
	Path string `koanf:"path"`
	// TopicName is the topic of the messages (default the pipeline's name).
	TopicName string `koanf:"topic"`
	// MetadataHeaders maps HTTP header names to metadata keys.
	MetadataHeaders map[string]string `koanf:"metadata_headers"`
	// UUIDHeader names the header that holds the message's UUID.
	UUIDHeader   string `koanf:"uuid_header"`
	MaxBodyBytes int64  `koanf:"max_body_bytes"`
	// AuthTokenFile holds the bearer token requests must carry
	// (Authorization: Bearer <token>); unset accepts any request.
	AuthTokenFile string `koanf:"auth_token_file"`
}

// Check implements pipelines.SourceConfig.
func (c *HTTPSource) Check(d pipelines.Deps) error {
	errs := checkIngress(d, &c.Addr, &c.Path, &c.TopicName, &c.MaxBodyBytes)
	c.UUIDHeader = cmp.Or(c.UUIDHeader, DefaultHTTPUUIDHeader)
	if c.AuthTokenFile != "" {
		if _, err := readSecretFile(c.AuthTokenFile); err != nil {
			errs = append(errs, fmt.Errorf("auth_token_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig.
func (c *HTTPSource) Topic() string { return c.TopicName }

// NewSubscriber listens at once, so a taken port fails the pipeline's start.
func (c *HTTPSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	r := &ingress{name: "http", path: c.Path, maxBodyBytes: c.MaxBodyBytes, idHeader: c.UUIDHeader,
		metadataHeaders: c.MetadataHeaders, okStatus: http.StatusNoContent, logger: d.Logger}
	if c.AuthTokenFile != "" {
		tok, err := readSecretFile(c.AuthTokenFile)
		if err != nil {
			return nil, fmt.Errorf("http: auth_token_file: %w", err)
		}
		want := []byte("Bearer " + string(tok))
		r.authorize = func(h http.Header) error {
			got := []byte(strings.TrimSpace(h.Get("Authorization")))
			if subtle.ConstantTimeCompare(got, want) != 1 {
				return errors.New("missing or wrong bearer token")
			}
			return nil
		}
	}
	if err := r.listen(c.Addr); err != nil {
		return nil, err
	}
	return r, nil
}
