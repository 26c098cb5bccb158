package kinds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/webhook"
	"github.com/loombridge/loombridge/pipelines"
)

// Echo is a webhook receiver: a source that serves HTTP on addr and turns each
// POST to path into a message (body = payload, webhook-id = UUID, headers
// named in metadata_headers = metadata). With secrets it verifies Standard
// Webhooks signatures and answers 401 to a bad one. It answers 204 once the
// pipeline handled the message, 500 if it did not. It is what the demo
// configuration sends its webhooks to, and a way to watch a webhook sink's
// output:
//
//	from: {type: echo, addr: "127.0.0.1:8099", path: /hook, secrets: ["${HOOK_SECRET}"]}
var Echo = pipelines.Kind{
	Name:    "echo",
	Summary: "a webhook receiver: each POST to path is a message",
	Source:  func() pipelines.SourceConfig { return &EchoSource{} },
}

// Defaults of the echo source.
const (
	DefaultEchoPath         = "/"
	DefaultEchoMaxBodyBytes = 64 << 20
)

// EchoSource is the echo kind's keys.
type EchoSource struct {
	Addr string `koanf:"addr"`
	Path string `koanf:"path"`
	// TopicName is the topic of the messages (default the pipeline's name).
	TopicName string `koanf:"topic"`
	// Secrets verify signatures ("whsec_..."); empty accepts any request.
	Secrets []string `koanf:"secrets"`
	// SecretsFile holds more secrets, one a line.
	SecretsFile string `koanf:"secrets_file"`
	// MetadataHeaders maps HTTP header names to metadata keys.
	MetadataHeaders map[string]string `koanf:"metadata_headers"`
	MaxBodyBytes    int64             `koanf:"max_body_bytes"`
}

// Check implements pipelines.SourceConfig.
func (c *EchoSource) Check(d pipelines.Deps) error {
	errs := checkIngress(d, &c.Addr, &c.Path, &c.TopicName, &c.MaxBodyBytes)
	if len(c.Secrets) > 0 {
		if _, err := webhook.Sign("check", time.Now(), nil, c.Secrets...); err != nil {
			errs = append(errs, fmt.Errorf("secrets: %w", err))
		}
	}
	if c.SecretsFile != "" {
		if _, err := webhook.ReadSecretsFile(c.SecretsFile); err != nil {
			errs = append(errs, fmt.Errorf("secrets_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkIngress applies the defaults of the keys an HTTP receiver shares and
// reports their problems.
func checkIngress(d pipelines.Deps, addr, path, topic *string, maxBody *int64) []error {
	if *path == "" {
		*path = DefaultEchoPath
	}
	if *topic == "" {
		*topic = d.Pipeline
	}
	if *maxBody == 0 {
		*maxBody = DefaultEchoMaxBodyBytes
	}
	var errs []error
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		errs = append(errs, fmt.Errorf("addr: want host:port, got %q", *addr))
	}
	if (*path)[0] != '/' {
		errs = append(errs, fmt.Errorf("path: must start with /, got %q", *path))
	}
	if *maxBody < 0 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be positive, got %d", *maxBody))
	}
	return errs
}

// Topic implements pipelines.SourceConfig.
func (c *EchoSource) Topic() string { return c.TopicName }

// NewSubscriber listens at once, so a taken port fails the pipeline's start.
func (c *EchoSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	secrets := c.Secrets
	if c.SecretsFile != "" {
		more, err := webhook.ReadSecretsFile(c.SecretsFile)
		if err != nil {
			return nil, fmt.Errorf("echo: secrets_file: %w", err)
		}
		secrets = append(append([]string(nil), secrets...), more...)
	}
	r := &ingress{name: "echo", path: c.Path, maxBodyBytes: c.MaxBodyBytes, idHeader: "webhook-id",
		metadataHeaders: c.MetadataHeaders, okStatus: http.StatusNoContent, logger: d.Logger}
	if len(secrets) > 0 {
		r.verify = func(body []byte, h http.Header) error { return webhook.Verify(body, h, 5*time.Minute, secrets...) }
	}
	if err := r.listen(c.Addr); err != nil {
		return nil, err
	}
	return r, nil
}
