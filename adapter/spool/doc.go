// Package spool is a durable queue between one source and several sinks, on
// NATS JetStream: a Watermill Publisher that returns only once a message is
// stored, and, per sink, a Watermill Subscriber reading that sink's own
// durable consumer of the store.
//
// # Mapping
//
//   - A spool is one JetStream stream (file storage) with one subject (and a
//     second for records of large payloads). A message stays stored until
//     every sink's consumer acked it: every second, and when the stream is
//     full, the spool purges what lies at or below the lowest ack floor of
//     the stream's consumers. (Interest retention would remove each message
//     at its last ack, but the file store then replaces its write block
//     whenever the stream empties: a new file per message when the sinks
//     keep up.)
//   - Each sink is a durable pull consumer of the stream, named after the sink.
//     Several processes that open the same spool on one server share a sink's
//     work through that consumer: each message goes to one of them.
//   - A Watermill message is one stream message: the UUID is a header
//     (Lb-Uuid); the data is the metadata (a count, then each key and value
//     with its length, lengths as uvarints), then the payload. A payload
//     above Config.LargePayload, or one that would not
//     fit the server's max_payload, goes to the spool's Object Store bucket
//     (chunked, SHA-256 checked on read) and the stream message names it
//     (Lb-Object, Lb-Size); the purge deletes the object with its record.
//     What a crash leaves there (chunks of an unfinished object, an object
//     whose record was never written) is swept at Open and every five
//     minutes, once older than Config.OrphanAge.
//   - Ack is an ack of the sink's consumer (not waited for: a lost ack brings
//     the message again after the ack wait); Nack is a NAK with a delay
//     growing with the number of deliveries. While a handler works on a
//     message, the subscriber tells the server so (in-progress) every third
//     of the ack wait, so a sink that takes hours (webhook retries) is not
//     sent it again.
//   - Limits: MaxMessages and MaxBytes bound the stream; when it is full,
//     WhenFull decides: Block waits for room, Reject fails the Publish
//     (ErrFull), DropOldest deletes the oldest stored message and counts it.
//     MaxAge is an expiry: a message older than it is acked without being
//     delivered, and counted per sink as expired.
//
// # Delivery
//
// At least once, per sink. A message is stored before Publish returns; each
// sink gets it at least once unless a limit dropped it (DropOldest) or it
// expired (MaxAge). A sink that crashes between taking a message and acking
// it gets it again after the ack wait, with the same UUID and metadata.
// What survives a power loss depends on the server's fsync policy (see
// ServerConfig.Sync); a process crash loses nothing stored.
package spool
