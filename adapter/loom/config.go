package loom

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/internal/buffer"
)

// Publishing modes.
const (
	// ModeConfirm: Publish returns when the server is done with every message.
	ModeConfirm = "confirm"
	// ModeFireAndForget: Publish returns once the messages are buffered.
	ModeFireAndForget = "fire_and_forget"
)

// KeyFunc picks the Loom key of a message published to topic.
type KeyFunc func(topic string, msg *message.Message) string

// DefaultKey uses metadata loom_key when set, else the message UUID.
func DefaultKey(_ string, msg *message.Message) string {
	if k := msg.Metadata.Get(MetadataKey); k != "" {
		return k
	}
	return msg.UUID
}

// BufferConfig bounds the publisher's buffer. When it is full, Policy decides:
// "block" (Publish waits for room until its timeout), "error" (Publish fails at once)
// or "drop_oldest" (the oldest buffered message is dropped and reported).
type BufferConfig struct {
	MaxMessages int    `koanf:"max_messages"` // default 10,000
	MaxBytes    int64  `koanf:"max_bytes"`    // default 64 MiB
	Policy      string `koanf:"policy"`       // default "block"
}

// DropReason says why a published message was dropped: a string, so it can be
// logged and compared as it is. It is the buffer's own type, so reporting a drop
// translates nothing.
type DropReason = buffer.DropReason

// Drop reasons, reported to PublisherConfig.OnDrop and counted in
// PublisherStats.Dropped. A reported drop is always a real loss: the message was
// never written to a producer stream.
const (
	// DropFull ("buffer_full"): the buffer was full under the drop_oldest policy;
	// the message was the oldest never sent, or the new one when only messages
	// already sent (which may have arrived) were left to evict.
	DropFull = buffer.DropFull
	// DropClosed ("closed"): not sent before Close's close_timeout.
	DropClosed = buffer.DropClosed
	// DropExpired ("expired"): its confirm Publish gave up (publish_timeout)
	// before it was sent.
	DropExpired = buffer.DropExpired
)

// PublisherConfig configures a Publisher. Zero fields take their defaults.
type PublisherConfig struct {
	// Client is how to reach the server: addr, transport, name, token, tls, ...
	Client client.Config `koanf:",squash"`
	// Mode is "confirm" (default) or "fire_and_forget".
	Mode string `koanf:"mode"`
	// Format is "raw" (default) or "envelope"; Marshaler overrides it.
	Format    string    `koanf:"format"`
	Marshaler Marshaler `koanf:"-"`
	// Key picks the Loom key; default DefaultKey.
	Key KeyFunc `koanf:"-"`
	// Streams is how many producer streams send at once; default 4.
	Streams int `koanf:"streams"`
	// BatchSize is the most messages one stream carries before it is closed and
	// confirmed; default 256.
	BatchSize int `koanf:"batch_size"`
	// PublishTimeout bounds how long Publish waits: for room in the buffer under the
	// block policy, and in confirm mode for the confirmation; default 30 s.
	PublishTimeout time.Duration `koanf:"publish_timeout"`
	// StreamTimeout bounds, per message, how long a batch may take from open to
	// confirmed: a batch of n messages is given n × StreamTimeout. The server reads
	// a producer stream one message per consumer acknowledgement, so a batch takes
	// as long as its consumers' handlers together; a bound per batch would make a
	// slow consumer's batches time out and be resent forever. It keeps a message
	// the server strands from holding a stream forever; default 30 s.
	StreamTimeout time.Duration `koanf:"stream_timeout"`
	// CloseTimeout bounds how long Close keeps sending what is buffered; default 30 s.
	CloseTimeout time.Duration `koanf:"close_timeout"`
	// MaxMessageBytes refuses larger bodies at Publish; default 64 MiB.
	MaxMessageBytes int64         `koanf:"max_message_bytes"`
	Buffer          BufferConfig  `koanf:"buffer"`
	Reconnect       BackoffConfig `koanf:"reconnect"`
	// OnDrop is told of every message dropped, with the reason.
	OnDrop func(msg *message.Message, reason DropReason) `koanf:"-"`
}

func (c *PublisherConfig) setDefaults() {
	c.Client.SetDefaults()
	if c.Mode == "" {
		c.Mode = ModeConfirm
	}
	if c.Format == "" {
		c.Format = FormatRaw
	}
	if c.Key == nil {
		c.Key = DefaultKey
	}
	if c.Streams == 0 {
		c.Streams = 4
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = 30 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 20
	}
	if c.Buffer.MaxMessages == 0 {
		c.Buffer.MaxMessages = buffer.DefaultMaxMessages
	}
	if c.Buffer.MaxBytes == 0 {
		c.Buffer.MaxBytes = buffer.DefaultMaxBytes
	}
	if c.Buffer.Policy == "" {
		c.Buffer.Policy = string(buffer.PolicyBlock)
	}
	c.Reconnect.setDefaults()
}

// Validate names every invalid field by its config key. It also checks that the
// token and TLS files can be read.
func (c PublisherConfig) Validate() error {
	errs := []error{c.Client.Check()}
	if c.Mode != ModeConfirm && c.Mode != ModeFireAndForget {
		errs = append(errs, fmt.Errorf("mode: must be %q or %q, got %q", ModeConfirm, ModeFireAndForget, c.Mode))
	}
	if c.Marshaler == nil {
		if _, err := NewMarshaler(c.Format); err != nil {
			errs = append(errs, err)
		}
	}
	for key, n := range map[string]int{"streams": c.Streams, "batch_size": c.BatchSize, "buffer.max_messages": c.Buffer.MaxMessages} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%s: must be >= 1, got %d", key, n))
		}
	}
	for key, d := range map[string]time.Duration{"publish_timeout": c.PublishTimeout, "stream_timeout": c.StreamTimeout, "close_timeout": c.CloseTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", key, d))
		}
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > c.Client.Limits.MaxMessage {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be 1 to %d, got %d", c.Client.Limits.MaxMessage, c.MaxMessageBytes))
	}
	if c.Buffer.MaxBytes < c.MaxMessageBytes {
		errs = append(errs, fmt.Errorf("buffer.max_bytes: %d is below max_message_bytes %d", c.Buffer.MaxBytes, c.MaxMessageBytes))
	}
	if _, err := buffer.ParsePolicy(c.Buffer.Policy); err != nil {
		errs = append(errs, fmt.Errorf("buffer.policy: %w", err))
	}
	errs = append(errs, c.Reconnect.validate("reconnect."))
	return errors.Join(errs...)
}

// SubscriberConfig configures a Subscriber. Zero fields take their defaults.
type SubscriberConfig struct {
	// Client is how to reach the server: addr, transport, name, token, tls, ...
	Client client.Config `koanf:",squash"`
	// Consumers is how many consumer streams each Subscribe opens; each counts as one
	// Loom consumer, so more streams take a larger share of the room; default 4.
	Consumers int `koanf:"consumers"`
	// Marshaler decodes bodies; default detects envelope or raw.
	Marshaler Marshaler `koanf:"-"`
	// NackResendDelay is how long a nacked message waits before it is delivered
	// again; default 1 s.
	NackResendDelay time.Duration `koanf:"nack_resend_delay"`
	// MaxMessageBytes: larger messages are skipped, acknowledged and reported, never
	// loaded into memory; default 64 MiB.
	MaxMessageBytes int64         `koanf:"max_message_bytes"`
	Reconnect       BackoffConfig `koanf:"reconnect"`
	// OnSkip is told of every message skipped: truncated, too large or undecodable.
	OnSkip func(s Skipped) `koanf:"-"`
}

// Skipped describes a received message that was acknowledged but not delivered.
type Skipped struct {
	Room, Key string
	ID        uint64
	Reason    string // "truncated", "too_large" or "undecodable"
	Err       error
}

func (c *SubscriberConfig) setDefaults() {
	c.Client.SetDefaults()
	if c.Consumers == 0 {
		c.Consumers = 4
	}
	if c.Marshaler == nil {
		c.Marshaler = RawMarshaler{}
	}
	if c.NackResendDelay == 0 {
		c.NackResendDelay = time.Second
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 20
	}
	c.Reconnect.setDefaults()
}

// Validate names every invalid field by its config key. It also checks that the
// token and TLS files can be read.
func (c SubscriberConfig) Validate() error {
	errs := []error{c.Client.Check()}
	if c.Consumers < 1 {
		errs = append(errs, fmt.Errorf("consumers: must be >= 1, got %d", c.Consumers))
	}
	if c.NackResendDelay < 0 {
		errs = append(errs, fmt.Errorf("nack_resend_delay: must be >= 0, got %s", c.NackResendDelay))
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > c.Client.Limits.MaxMessage {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be 1 to %d, got %d", c.Client.Limits.MaxMessage, c.MaxMessageBytes))
	}
	errs = append(errs, c.Reconnect.validate("reconnect."))
	return errors.Join(errs...)
}
