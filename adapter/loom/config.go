package loom

import (
	"cmp"
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

// Defaults that zero-valued config fields take. Client defaults are in package
// client (client.DefaultTransport, client.DefaultDialTimeout, ...).
const (
	// DefaultMode is the default PublisherConfig.Mode.
	DefaultMode = ModeConfirm
	// DefaultFormat is the default PublisherConfig.Format.
	DefaultFormat = FormatRaw
	// DefaultStreams is the default PublisherConfig.Streams.
	DefaultStreams = 4
	// DefaultBatchSize is the default PublisherConfig.BatchSize.
	DefaultBatchSize = 256
	// DefaultPublishTimeout is the default PublisherConfig.PublishTimeout.
	DefaultPublishTimeout = 30 * time.Second
	// DefaultStreamTimeout is the default PublisherConfig.StreamTimeout.
	DefaultStreamTimeout = 30 * time.Second
	// DefaultCloseTimeout is the default PublisherConfig.CloseTimeout.
	DefaultCloseTimeout = 30 * time.Second
	// DefaultMaxMessageBytes is the default MaxMessageBytes of both
	// PublisherConfig and SubscriberConfig: 64 MiB.
	DefaultMaxMessageBytes = 64 << 20
	// DefaultBufferMaxMessages is the default BufferConfig.MaxMessages.
	DefaultBufferMaxMessages = buffer.DefaultMaxMessages
	// DefaultBufferMaxBytes is the default BufferConfig.MaxBytes: 64 MiB.
	DefaultBufferMaxBytes = buffer.DefaultMaxBytes
	// DefaultBufferPolicy is the default BufferConfig.Policy.
	DefaultBufferPolicy = string(buffer.DefaultPolicy)
	// DefaultConsumers is the default SubscriberConfig.Consumers.
	DefaultConsumers = 4
	// DefaultNackResendDelay is the default SubscriberConfig.NackResendDelay.
	DefaultNackResendDelay = time.Second
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
// "block" (Publish waits for room until its timeout), "error" (Publish fails at once
// with ErrBufferFull) or "drop_oldest" (the oldest message never sent is dropped and
// reported with DropFull; see DropFull for when the new one is dropped instead).
type BufferConfig struct {
	// MaxMessages bounds the buffer by count; default DefaultBufferMaxMessages (10,000).
	MaxMessages int `koanf:"max_messages"`
	// MaxBytes bounds the buffer by bytes, at least MaxMessageBytes; default
	// DefaultBufferMaxBytes (64 MiB).
	MaxBytes int64 `koanf:"max_bytes"`
	// Policy is "block" (default), "error" or "drop_oldest".
	Policy string `koanf:"policy"`
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
	// DropRefused ("refused"): the server refused the publisher on the message's
	// room (HTTP/3 401; on QUIC the stream closed at the hello): the messages of
	// the refused stream and every message of the room still buffered. In confirm
	// mode Publish returns an error wrapping client.ErrRefused as well.
	DropRefused = buffer.DropRefused
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
	// Streams is how many producer streams, each with a connection of its own, send
	// one room's batches at once; default DefaultStreams (4). Rooms do not share
	// them: while every sender is busy another one is started, so a room whose
	// consumers are slow or stuck never delays another room. Streams connections
	// are kept open, and one or two more while all are busy; those started beyond
	// them end when idle.
	Streams int `koanf:"streams"`
	// BatchSize is the most messages one stream carries before it is closed and
	// confirmed; default DefaultBatchSize (256).
	BatchSize int `koanf:"batch_size"`
	// PublishTimeout bounds how long Publish waits: for room in the buffer under the
	// block policy, and in confirm mode for the confirmation; default
	// DefaultPublishTimeout (30 s).
	PublishTimeout time.Duration `koanf:"publish_timeout"`
	// StreamTimeout is when a batch's stream counts as slow: still open n ×
	// StreamTimeout after it was opened, for a batch of n. A slow stream is logged
	// and counted (PublisherStats.SlowStreams), and waited for: it is never given
	// up or resent. The server reads a producer stream one message per consumer
	// acknowledgement, so a batch takes as long as its consumers' handlers
	// together, and Loom gives a producer no other sign of progress; a batch is
	// resent only on evidence of failure (connection lost, stream reset). A
	// stream stuck for good holds only its own room's sender, until Close gives
	// up after CloseTimeout. It also bounds the stream of a refusal probe. Default
	// DefaultStreamTimeout (30 s).
	StreamTimeout time.Duration `koanf:"stream_timeout"`
	// CloseTimeout bounds how long Close keeps sending what is buffered; default
	// DefaultCloseTimeout (30 s).
	CloseTimeout time.Duration `koanf:"close_timeout"`
	// MaxMessageBytes refuses larger bodies at Publish; default
	// DefaultMaxMessageBytes (64 MiB), at most Client.Limits.MaxMessage.
	MaxMessageBytes int64         `koanf:"max_message_bytes"`
	Buffer          BufferConfig  `koanf:"buffer"`
	Reconnect       BackoffConfig `koanf:"reconnect"`
	// OnDrop is told of every message dropped, with the reason.
	OnDrop func(msg *message.Message, reason DropReason) `koanf:"-"`
}

func (c *PublisherConfig) setDefaults() {
	c.Client.SetDefaults()
	c.Mode = cmp.Or(c.Mode, DefaultMode)
	c.Format = cmp.Or(c.Format, DefaultFormat)
	if c.Key == nil {
		c.Key = DefaultKey
	}
	c.Streams = cmp.Or(c.Streams, DefaultStreams)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.PublishTimeout = cmp.Or(c.PublishTimeout, DefaultPublishTimeout)
	c.StreamTimeout = cmp.Or(c.StreamTimeout, DefaultStreamTimeout)
	c.CloseTimeout = cmp.Or(c.CloseTimeout, DefaultCloseTimeout)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.Buffer.MaxMessages = cmp.Or(c.Buffer.MaxMessages, DefaultBufferMaxMessages)
	c.Buffer.MaxBytes = cmp.Or(c.Buffer.MaxBytes, DefaultBufferMaxBytes)
	c.Buffer.Policy = cmp.Or(c.Buffer.Policy, DefaultBufferPolicy)
	c.Reconnect.setDefaults()
}

// Validate reports every invalid field, joined with errors.Join in the order of the
// fields (the order of the keys in a configuration file: the client's keys first),
// each error starting with the field's config key, e.g. "buffer.policy: ...". It
// also checks that the token and TLS files can be read. NewPublisher applies the
// defaults first; Validate of a config whose zero fields were not filled in
// reports them.
func (c PublisherConfig) Validate() error {
	errs := []error{c.Client.Check()}
	add := func(err error) { errs = append(errs, err) }
	if c.Mode != ModeConfirm && c.Mode != ModeFireAndForget {
		add(fmt.Errorf("mode: must be %q or %q, got %q", ModeConfirm, ModeFireAndForget, c.Mode))
	}
	if c.Marshaler == nil {
		if _, err := NewMarshaler(c.Format); err != nil {
			add(err)
		}
	}
	add(atLeastOne("streams", c.Streams))
	add(atLeastOne("batch_size", c.BatchSize))
	add(positive("publish_timeout", c.PublishTimeout))
	add(positive("stream_timeout", c.StreamTimeout))
	add(positive("close_timeout", c.CloseTimeout))
	add(checkMaxMessageBytes(c.MaxMessageBytes, c.Client.Limits.MaxMessage))
	add(atLeastOne("buffer.max_messages", c.Buffer.MaxMessages))
	if c.Buffer.MaxBytes < c.MaxMessageBytes {
		add(fmt.Errorf("buffer.max_bytes: %d is below max_message_bytes %d", c.Buffer.MaxBytes, c.MaxMessageBytes))
	}
	if _, err := buffer.ParsePolicy(c.Buffer.Policy); err != nil {
		add(fmt.Errorf("buffer.policy: %w", err))
	}
	add(c.Reconnect.validate("reconnect."))
	return errors.Join(errs...)
}

func atLeastOne(key string, n int) error {
	if n < 1 {
		return fmt.Errorf("%s: must be >= 1, got %d", key, n)
	}
	return nil
}

func positive(key string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be > 0, got %s", key, d)
	}
	return nil
}

func checkMaxMessageBytes(n, limit int64) error {
	if n < 1 || n > limit {
		return fmt.Errorf("max_message_bytes: must be 1 to %d, got %d", limit, n)
	}
	return nil
}

// SubscriberConfig configures a Subscriber. Zero fields take their defaults.
type SubscriberConfig struct {
	// Client is how to reach the server: addr, transport, name, token, tls, ...
	Client client.Config `koanf:",squash"`
	// Consumers is how many consumer streams each Subscribe opens; each counts as one
	// Loom consumer, so more streams take a larger share of the room; default
	// DefaultConsumers (4).
	Consumers int `koanf:"consumers"`
	// Marshaler decodes bodies; default RawMarshaler, which detects envelope or raw.
	Marshaler Marshaler `koanf:"-"`
	// NackResendDelay is how long a nacked message waits before it is delivered
	// again; default DefaultNackResendDelay (1 s).
	NackResendDelay time.Duration `koanf:"nack_resend_delay"`
	// MaxMessageBytes: larger messages are skipped, acknowledged and reported, never
	// loaded into memory; default DefaultMaxMessageBytes (64 MiB). A body whose
	// declared size is within it gets a buffer of that size at once, before its
	// bytes arrive, so a peer can make each consumer stream allocate up to this much
	// by declaring it; a body of unknown size (declared 0) is held twice over while
	// it is put together.
	MaxMessageBytes int64         `koanf:"max_message_bytes"`
	Reconnect       BackoffConfig `koanf:"reconnect"`
	// OnSkip is told of every message skipped, with its SkipReason.
	OnSkip func(s Skipped) `koanf:"-"`
}

// SkipReason says why a received message was skipped.
type SkipReason string

// Skip reasons, reported in Skipped.Reason and counted in SubscriberStats.
const (
	// SkipTruncated ("truncated"): the body was shorter or longer than its declared
	// size (the server forwards a producer's end of message even when the producer
	// died mid-message). Skipped.Err wraps wire.ErrTruncated.
	SkipTruncated SkipReason = "truncated"
	// SkipTooLarge ("too_large"): the body, declared or as it arrived, was above
	// max_message_bytes; it was discarded unread.
	SkipTooLarge SkipReason = "too_large"
	// SkipUnreadable ("unreadable"): reading the body failed for another reason,
	// such as a stream error.
	SkipUnreadable SkipReason = "unreadable"
	// SkipUndecodable ("undecodable"): the Marshaler could not decode the body,
	// e.g. a malformed envelope (ErrEnvelope).
	SkipUndecodable SkipReason = "undecodable"
)

// Skipped describes a received message that was acknowledged but not delivered.
type Skipped struct {
	Room, Key string
	ID        uint64
	Reason    SkipReason
	Err       error
}

func (c *SubscriberConfig) setDefaults() {
	c.Client.SetDefaults()
	c.Consumers = cmp.Or(c.Consumers, DefaultConsumers)
	if c.Marshaler == nil {
		c.Marshaler = RawMarshaler{}
	}
	c.NackResendDelay = cmp.Or(c.NackResendDelay, DefaultNackResendDelay)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.Reconnect.setDefaults()
}

// Validate reports every invalid field, joined with errors.Join in the order of the
// fields (the client's keys first), each error starting with the field's config
// key. It also checks that the token and TLS files can be read.
func (c SubscriberConfig) Validate() error {
	errs := []error{c.Client.Check()}
	add := func(err error) { errs = append(errs, err) }
	add(atLeastOne("consumers", c.Consumers))
	if c.NackResendDelay < 0 {
		add(fmt.Errorf("nack_resend_delay: must be >= 0, got %s", c.NackResendDelay))
	}
	add(checkMaxMessageBytes(c.MaxMessageBytes, c.Client.Limits.MaxMessage))
	add(c.Reconnect.validate("reconnect."))
	return errors.Join(errs...)
}
