package kinds

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/webhook"
	"github.com/loombridge/loombridge/pipelines"
)

// Webhook fans each message out to HTTP endpoints, each with its own retries,
// signature secrets, circuit breaker and rate limit (adapter/webhook):
//
//	to:
//	  hooks:
//	    type: webhook
//	    endpoints:
//	      - {name: billing, url: "https://billing.example/hook", secrets: ["${BILLING_SECRET}"]}
//
// What an endpoint fails after its own retries goes to the pipeline's
// dead_letter with dlq_* metadata; without a dead_letter the message is
// nacked, and delivered again by the source (endpoints that took it are
// skipped: remember_accepted).
var Webhook = pipelines.Kind{
	Name:    "webhook",
	Summary: "HTTP POSTs, fanned out to endpoints",
	Sink:    func() pipelines.SinkConfig { return &WebhookSink{} },
}

// WebhookSink is the adapter's publisher config.
type WebhookSink struct {
	webhook.PublisherConfig `koanf:",squash"`
}

// errNoDeadLetter fails a webhook dead letter when the pipeline has none, so
// the message is nacked rather than lost.
var errNoDeadLetter = errors.New("the pipeline has no dead_letter: message nacked for redelivery")

// Check implements pipelines.SinkConfig.
func (c *WebhookSink) Check(pipelines.Deps) error {
	if c.DeadLetterTopic != "" {
		return errors.New("dead_letter_topic: an endpoint's dead letters go to the pipeline's dead_letter; set its topic there")
	}
	cfg := c.PublisherConfig
	cfg.SetDefaults()
	cfg.DeadLetter = nowhere{} // given at run time
	return cfg.Validate()
}

// RefusedKeys implements pipelines.RefusedKeys: Check refuses
// dead_letter_topic, so a typo's message does not offer it.
func (*WebhookSink) RefusedKeys() []string { return []string{"dead_letter_topic"} }

// Topic implements pipelines.SinkConfig: the endpoints ignore topics.
func (c *WebhookSink) Topic() string { return "" }

// NewPublisher implements pipelines.SinkConfig.
func (c *WebhookSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	cfg := c.PublisherConfig
	cfg.DeadLetter = d.DeadLetter
	cfg.TracerProvider = d.TracerProvider() // a span per request
	if cfg.DeadLetter == nil {
		cfg.DeadLetter = nowhere{}
	}
	p, err := webhook.NewPublisher(cfg, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return p, nil
}

type nowhere struct{}

func (nowhere) Publish(string, ...*message.Message) error { return errNoDeadLetter }
func (nowhere) Close() error                              { return nil }
