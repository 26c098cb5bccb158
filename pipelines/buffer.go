package pipelines

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/loombridge/loombridge/adapter/spool"
)

// Defaults of the buffers: and buffer: keys.
const (
	DefaultBufferDir     = "data/buffer"
	DefaultBufferSync    = "1s"
	DefaultBufferAckWait = spool.DefaultAckWait
)

// BuffersConfig is the top-level buffers: block, where buffered pipelines
// keep their queues: a NATS server with JetStream run inside loombridge (the
// default), or the server of a connection of type nats.
type BuffersConfig struct {
	// Dir holds the embedded server's JetStream files.
	Dir string `koanf:"dir"`
	// Sync is the embedded server's fsync policy: "always" (every message is
	// on disk before the source is acked) or an interval ("1s": a power loss
	// may lose what was stored in the last interval; a crash of the process
	// loses nothing stored).
	Sync string `koanf:"sync"`
	// Connection names a connection of type nats whose server holds the
	// queues instead; dir and sync are then that server's business.
	Connection string `koanf:"connection"`

	syncAlways   bool
	syncInterval time.Duration
}

// BufferConfig is a pipeline's buffer: block. With it, the source is acked
// once a message is stored, and each sink reads its own queue.
type BufferConfig struct {
	// MaxBytes bounds what the pipeline's queue stores (and, apart, its large
	// payloads); -1 is no bound.
	MaxBytes int64 `koanf:"max_bytes"`
	// MaxMessages bounds the messages stored; 0 is no bound.
	MaxMessages int64 `koanf:"max_messages"`
	// MaxAge: a message stored longer is not delivered to a sink that had not
	// taken it yet; it is counted as expired. 0 is no expiry.
	MaxAge time.Duration `koanf:"max_age"`
	// WhenFull is block, reject or drop_oldest.
	WhenFull string `koanf:"when_full"`
	// LargePayload: payloads above this many bytes go to the Object Store.
	LargePayload int `koanf:"large_payload"`
	// AckWait is how long a sink may go silent on a message before it is
	// delivered again (a sink at work tells the store every third of it).
	AckWait time.Duration `koanf:"ack_wait"`
}

// NATSConnector is a connection config that can dial a NATS server (the
// nats kind's): a buffers.connection must name one.
type NATSConnector interface {
	ConnectNATS() (*nats.Conn, error)
}

func (b *BuffersConfig) setDefaults() {
	b.Dir = cmp.Or(b.Dir, DefaultBufferDir)
	b.Sync = cmp.Or(b.Sync, DefaultBufferSync)
}

func (b *BuffersConfig) validate(conns map[string]*Connection, p *problems) {
	if b.Sync == "always" {
		b.syncAlways = true
	} else if d, err := time.ParseDuration(b.Sync); err != nil || d <= 0 {
		p.addf("buffers.sync", `must be "always" or a positive interval such as 1s, got %q`, b.Sync)
	} else {
		b.syncInterval = d
	}
	if b.Connection == "" {
		return
	}
	c, ok := conns[b.Connection]
	switch {
	case !ok:
		p.addf("buffers.connection", "no connection %q under connections (have: %s)", b.Connection, strings.Join(sortedNames(conns), ", "))
	case c.invalid:
		p.addf("buffers.connection", "connection %q is invalid (see connections.%s)", b.Connection, b.Connection)
	default:
		if _, ok := c.Broker.(NATSConnector); !ok {
			p.addf("buffers.connection", "connection %q is of type %s: want one of type nats", b.Connection, c.typeName())
		}
	}
}

// setDefaults fills the keys the file left out.
func (b *BufferConfig) setDefaults() {
	if b.MaxBytes == 0 {
		b.MaxBytes = spool.DefaultMaxBytes
	}
	b.WhenFull = cmp.Or(b.WhenFull, string(spool.DefaultPolicy))
	if b.LargePayload == 0 {
		b.LargePayload = spool.DefaultLargePayload
	}
	if b.AckWait == 0 {
		b.AckWait = DefaultBufferAckWait
	}
}

func (b *BufferConfig) validate(path string, p *problems) {
	if b.MaxBytes < -1 {
		p.addf(path+".max_bytes", "must be positive, or -1 for no bound, got %d", b.MaxBytes)
	}
	if b.MaxMessages < 0 {
		p.addf(path+".max_messages", "must not be negative (0 is no bound), got %d", b.MaxMessages)
	}
	if b.MaxAge < 0 {
		p.addf(path+".max_age", "must not be negative (0 is no expiry), got %s", b.MaxAge)
	}
	switch spool.Policy(b.WhenFull) {
	case spool.Block, spool.Reject, spool.DropOldest:
	default:
		p.addf(path+".when_full", "must be block, reject or drop_oldest, got %q", b.WhenFull)
	}
	if b.LargePayload < 1 || b.LargePayload > 4<<20 {
		p.addf(path+".large_payload", "must be from 1 to 4194304 bytes, got %d", b.LargePayload)
	}
	if b.AckWait < time.Second {
		p.addf(path+".ack_wait", "must be at least 1s, got %s", b.AckWait)
	}
}

// spoolConfig is the spool of the named pipeline.
func (b *BufferConfig) spoolConfig(pipeline string) spool.Config {
	return spool.Config{
		Name:         spoolName(pipeline),
		MaxMessages:  b.MaxMessages,
		MaxBytes:     b.MaxBytes,
		MaxAge:       b.MaxAge,
		WhenFull:     spool.Policy(b.WhenFull),
		LargePayload: b.LargePayload,
	}
}

// spoolName is the JetStream stream of a pipeline's buffer: engines sharing
// a server and a pipeline name share its queues.
func spoolName(pipeline string) string { return "loombridge_" + pipeline }

// describeBuffer is what the buffer of a pipeline is, for the log.
func (b *BuffersConfig) describe() string {
	if b.Connection != "" {
		return fmt.Sprintf("connection %s", b.Connection)
	}
	return fmt.Sprintf("embedded NATS server, dir %s, sync %s", b.Dir, b.Sync)
}

// BufferStats are a buffered pipeline's store counts, in this process.
type BufferStats struct {
	Stored   uint64 `json:"stored"`   // messages stored (the source was acked)
	Dropped  uint64 `json:"dropped"`  // oldest messages deleted for room (drop_oldest)
	Rejected uint64 `json:"rejected"` // messages refused for want of room (reject)
	Blocked  uint64 `json:"blocked"`  // times the source waited for room (block)
	// Queues are the sinks' queues, as the store reports them.
	Queues map[string]QueueStats `json:"queues"`
}

// QueueStats is one sink's queue.
type QueueStats struct {
	Messages uint64 `json:"messages"` // stored, not yet acked by the sink
	// Bytes estimates the bytes of those: the store's bytes times the sink's
	// share of the stored messages.
	Bytes            uint64  `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"` // of the oldest unacked message
	Redelivered      uint64  `json:"redelivered"`        // deliveries after the first, in this process
	Expired          uint64  `json:"expired"`            // older than max_age: not delivered
	Lost             uint64  `json:"lost"`               // payload missing from the store: terminated
	Error            string  `json:"error,omitempty"`    // the store did not answer
}

// bufferStats asks the store for the queues; nil without a buffer.
func (r *runner) bufferStats(ctx context.Context) *BufferStats {
	if r.spool == nil {
		return nil
	}
	st := r.spool.Stats()
	out := &BufferStats{Stored: st.Stored, Dropped: st.Dropped, Rejected: st.Rejected, Blocked: st.Blocked, Queues: map[string]QueueStats{}}
	names := make([]string, len(r.sinks))
	for i, s := range r.sinks {
		names[i] = s.name
	}
	states, err := r.spool.SinkStates(ctx, names...)
	for _, s := range r.sinks {
		sub := s.queue.Stats()
		q := QueueStats{Redelivered: sub.Redelivered, Expired: sub.Expired, Lost: sub.Lost}
		if ss, ok := states[s.name]; ok {
			q.Messages, q.Bytes, q.OldestAgeSeconds = ss.Messages, ss.Bytes, ss.OldestAge.Seconds()
		} else if err != nil {
			q.Error = err.Error()
		}
		out.Queues[s.name] = q
	}
	return out
}
