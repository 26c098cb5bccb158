// Package loom implements Watermill's Publisher and Subscriber for Loom, a streaming
// router for large binary messages over QUIC and HTTP/3, speaking its wire protocol
// natively (package client).
//
// Supported features:
//   - QUIC (ALPN loom/1) and HTTP/3 (POST /stream) transports, TLS 1.3, mTLS, tokens
//   - confirm and fire-and-forget publishing through a bounded buffer
//   - reconnect with exponential back-off, on both sides
//   - per-key ordering, Ack and Nack
//   - raw bodies, readable by any Loom client, or envelopes carrying UUID, metadata
//     and trace context
//
// Loom is a router, not a log: it keeps no history, never redelivers, and discards a
// message that no consumer is connected for. Subscribe before you publish.
//
// # Nomenclature
//
// Watermill's nomenclature maps onto Loom's as follows.
//
// Topic = room. Publish(topic, ...) produces into the room named topic and
// Subscribe(ctx, topic) consumes from it. Room names are at most
// client.Config.Limits.MaxRoom bytes (128 by default).
//
// Loom key = the message's loom_key metadata (MetadataKey) when set, else its UUID;
// PublisherConfig.Key overrides this. The server hashes the key to one of the room's
// partitions, and each partition is served by one consumer at a time, so one key
// goes to one consumer stream in order; the publisher never has two messages of one
// key on the wire at once, so a key keeps its order end to end (as long as the set
// of consumers does not change).
//
// Format. "raw" (FormatRaw, the default) sends the payload alone, exactly what any
// other Loom client sends and reads: UUID and metadata do not cross the hop.
// "envelope" (FormatEnvelope) wraps UUID, metadata and W3C trace context around the
// payload (docs/envelope.md). The subscriber detects the format of every message, so
// a room may carry both; a raw message gets a UUID derived from room, key, server id
// and body (see DecodeReceived).
//
// Publish modes. In "confirm" mode (ModeConfirm, the default) Publish returns when
// the server is done with every message: it ends a producer stream only after the
// last message was acknowledged by a consumer or discarded (no consumer connected, a
// consumer's backlog full, too large). A confirm therefore proves that the server
// will do nothing more with the message, not that a consumer received it, nor that
// it was not delivered before (a batch that fails is sent again). With this package's
// Subscriber, a consumer's ACK means its handler acked. On QUIC, a server that
// reads a stream's hello much later than a later stream's (the client's refusal
// wait, see the README) could pass a refusal for a confirm; HTTP/3 has no such gap.
// Since the server
// waits for the consumer's ACK, never publish in confirm mode from the handler that
// consumes the same room. In "fire_and_forget" mode (ModeFireAndForget) Publish
// returns once the messages are buffered.
//
// Ack = Loom ACK frame. A consumer stream receives its next message only after the
// previous one was acknowledged; msg.Ack() sends the ACK frame.
//
// Nack = local redelivery. Loom has no negative acknowledgement and never
// redelivers: msg.Nack() makes the subscriber deliver the same message again after
// NackResendDelay, keeping it in flight on its stream (which so receives nothing else
// meanwhile). A message in flight on a stream or connection that dies is lost at the
// server.
//
// Consumer streams = Loom consumers. Each Subscribe opens SubscriberConfig.Consumers
// streams, and each is one Loom consumer of the room: the room's partitions are
// spread over all its consumers, this subscriber's and everybody else's. Two
// subscribers of one room therefore share its messages (competing consumers); they
// do not each receive all of them.
//
// Received metadata. Every received message carries loom_room (MetadataRoom),
// loom_key (MetadataKey) and loom_id (MetadataID, the server's id, counting up per
// room), besides what an envelope carried.
//
// # Delivery and failure
//
// The publisher is at least once towards the server: messages wait in a bounded
// buffer, sender goroutines send them in batches of one room, one producer stream
// per batch, and a batch that fails (connection lost, stream reset) goes back to the
// front of the buffer and is sent again after reconnecting, so some messages may
// arrive twice. A slow stream is waited for and never resent (StreamTimeout only
// reports it), and each room has streams of its own, so a slow or stuck room delays
// no other. A refusal fails the room's messages at once (DropRefused) and Publish to
// the room fails fast until a new connection is accepted there. Loom itself is at most once: end to end, a message may be lost at the
// server and may arrive twice, and nothing is exactly once.
//
// Reconnect. Connections are redialled with exponential back-off (BackoffConfig,
// keys reconnect.*), without limit unless MaxElapsed is set; a dead connection is
// noticed by QUIC keep-alive and idle timeout. While disconnected, messages stay in
// the buffer and the buffer policy (BufferConfig.Policy) decides what Publish does
// when it is full: "block" waits for room until PublishTimeout, "error" fails at
// once with ErrBufferFull, "drop_oldest" drops the oldest message never sent. Every
// drop is reported to PublisherConfig.OnDrop with its DropReason and counted in
// PublisherStats.Dropped; a reported drop is always a real loss. Close keeps
// sending for CloseTimeout, then drops what was never sent (DropClosed).
//
// Skips. A received message that cannot be delivered whole (body truncated, above
// MaxMessageBytes, unreadable or undecodable) is acknowledged so the stream moves
// on, counted in SubscriberStats, and reported to SubscriberConfig.OnSkip with its
// SkipReason; it is never delivered.
//
// Payloads. A received message owns its payload and may be kept after Ack. Bodies
// above 32 KiB and up to 1 MiB reuse buffers the garbage collector found unreachable
// (a finalizer hands each back to a pool that owns at most 4 MiB), so do not set a
// finalizer of your own on a payload.
//
// # Configuration
//
// PublisherConfig and SubscriberConfig embed client.Config; their koanf tags are the
// configuration keys. Zero fields take the Default* constants; NewPublisher and
// NewSubscriber validate the result and report every invalid field, in field order,
// each error starting with its key (for example "buffer.policy: ...").
package loom
