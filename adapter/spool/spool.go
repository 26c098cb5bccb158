package spool

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"golang.org/x/sync/semaphore"
)

// Policy is what Publish does when the spool is full.
type Policy string

// The policies for a full spool.
const (
	// Block waits until there is room: the source waits, and with it its
	// producers (backpressure).
	Block Policy = "block"
	// Reject fails the Publish with ErrFull: the source nacks the message.
	Reject Policy = "reject"
	// DropOldest deletes the oldest stored message, for every sink, and
	// counts it (Stats.Dropped).
	DropOldest Policy = "drop_oldest"
)

// Defaults of Config.
const (
	DefaultLargePayload = 256 << 10
	DefaultLargeMemory  = 256 << 20
	DefaultMaxBytes     = 1 << 30
	DefaultPolicy       = Block
	DefaultOrphanAge    = time.Minute
)

// Headers of a stored message.
const (
	hdrUUID   = "Lb-Uuid"
	hdrObject = "Lb-Object"
	hdrSize   = "Lb-Size"
)

// ErrFull is returned by Publish under the Reject policy when a limit is reached.
var ErrFull = errors.New("spool full")

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Config is one spool: its stream and limits.
type Config struct {
	// Name is the stream's name (letters, digits, _ and -); the spool's
	// subject and Object Store bucket are named after it.
	Name string
	// MaxMessages bounds the messages stored; 0 is no bound.
	MaxMessages int64
	// MaxBytes bounds the bytes stored, in the stream and, apart, in the
	// Object Store; default DefaultMaxBytes, -1 is no bound.
	MaxBytes int64
	// MaxAge is an expiry: a message stored longer than this is acked without
	// being delivered, per sink, and counted as expired; 0 is none.
	MaxAge time.Duration
	// WhenFull is what Publish does when MaxMessages or MaxBytes is reached.
	WhenFull Policy
	// LargePayload is the size above which a payload goes to the Object Store.
	LargePayload int
	// OrphanAge is how old an unfinished or unnamed object must be before the
	// spool's sweep deletes it; default DefaultOrphanAge.
	OrphanAge time.Duration
	// LargeMemory bounds the bytes of large payloads the subscribers of this
	// spool hold in memory at once (a single larger payload is let through
	// alone); default DefaultLargeMemory.
	LargeMemory int64
}

// SetDefaults fills what is unset.
func (c *Config) SetDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.WhenFull == "" {
		c.WhenFull = DefaultPolicy
	}
	if c.LargePayload == 0 {
		c.LargePayload = DefaultLargePayload
	}
	if c.LargeMemory == 0 {
		c.LargeMemory = DefaultLargeMemory
	}
	if c.OrphanAge == 0 {
		c.OrphanAge = DefaultOrphanAge
	}
}

// Validate reports every problem, each starting with its key.
func (c Config) Validate() error {
	var errs []error
	if !validName.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("name: must be letters, digits, _ and -, got %q", c.Name))
	}
	if c.MaxMessages < 0 {
		errs = append(errs, fmt.Errorf("max_messages: must not be negative, got %d", c.MaxMessages))
	}
	if c.MaxBytes < -1 || c.MaxBytes == 0 {
		errs = append(errs, fmt.Errorf("max_bytes: must be positive (or -1 for no bound), got %d", c.MaxBytes))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("max_age: must not be negative, got %s", c.MaxAge))
	}
	switch c.WhenFull {
	case Block, Reject, DropOldest:
	default:
		errs = append(errs, fmt.Errorf("when_full: must be block, reject or drop_oldest, got %q", c.WhenFull))
	}
	if c.LargePayload < 1 {
		errs = append(errs, fmt.Errorf("large_payload: must be positive, got %d", c.LargePayload))
	}
	if c.LargeMemory < 1 {
		errs = append(errs, fmt.Errorf("large_memory: must be positive, got %d", c.LargeMemory))
	}
	return errors.Join(errs...)
}

// Spool is an open spool. Its Publish stores, its subscribers deliver.
type Spool struct {
	cfg        Config
	logger     watermill.LoggerAdapter
	js         jetstream.JetStream
	stream     jetstream.Stream
	objects    jetstream.ObjectStore
	subject    string
	maxPayload int64
	large      *semaphore.Weighted

	stored, dropped, rejected, blocked atomic.Uint64
	lastStoreErr                       atomic.Pointer[storeErr]

	purgeMu sync.Mutex    // one purge at a time
	purged  chan struct{} // closed when the purge loop ended

	closing   chan struct{}
	closeOnce sync.Once
}

type storeErr struct {
	err error
	at  time.Time
}

// Open creates the spool's stream and bucket on the server of nc, or updates
// their limits when they exist. The caller closes nc after the spool.
func Open(ctx context.Context, nc *nats.Conn, cfg Config, logger watermill.LoggerAdapter) (*Spool, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Name, err)
	}
	s := &Spool{
		cfg: cfg, logger: logger.With(watermill.LogFields{"spool": cfg.Name}), js: js,
		subject: "loombridge.spool." + cfg.Name, maxPayload: nc.MaxPayload(),
		large: semaphore.NewWeighted(cfg.LargeMemory), closing: make(chan struct{}),
	}
	s.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "loombridge spool: one message per source message, kept until every sink acked it",
		Subjects:    []string{s.subject, s.largeSubject()},
		// Not interest retention: it removes each message on its last ack,
		// and the file store then replaces its write block whenever the
		// stream empties (a new file per message when the sinks keep up: a
		// third of the CPU). The acked prefix is purged instead (purge).
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		// The server never drops on its own: full is refused, and the policy
		// (drop_oldest included) is applied here, where it is counted.
		Discard:  jetstream.DiscardNew,
		MaxMsgs:  orNoLimit(cfg.MaxMessages),
		MaxBytes: cfg.MaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: create stream: %w", cfg.Name, err)
	}
	if info, err := s.stream.Info(ctx); err == nil && info.Config.Retention != jetstream.LimitsPolicy {
		return nil, fmt.Errorf("spool %s: stream exists with another retention (%s): delete it or rename the pipeline", cfg.Name, info.Config.Retention)
	}
	s.objects, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      cfg.Name + "_large",
		Description: "loombridge spool: payloads above large_payload",
		Storage:     jetstream.FileStorage,
		MaxBytes:    cfg.MaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("spool %s: create object store: %w", cfg.Name, err)
	}
	s.purged = make(chan struct{})
	go s.purgeLoop()
	return s, nil
}

// largeSubject is the subject of records whose payload is an object: the
// purge finds them without reading the others.
func (s *Spool) largeSubject() string { return s.subject + ".large" }

// purgeEvery is how often the acked prefix of the stream is purged.
const purgeEvery = time.Second

func (s *Spool) purgeLoop() {
	defer close(s.purged)
	t := time.NewTicker(purgeEvery)
	defer t.Stop()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if i%sweepEvery == 0 {
			if err := s.sweep(ctx); err != nil {
				s.logger.Error("Spool: sweep of what a crash left in the object store failed; tried again later", err, nil)
			}
		}
		cancel()
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := s.purge(ctx); err != nil {
			s.logger.Debug("Spool: purge of acked messages failed; tried again", watermill.LogFields{"error": err.Error()})
		}
		cancel()
	}
}

// sweepEvery is how many purges there are to a sweep (at open, then every
// five minutes).
const sweepEvery = 300

// sweep deletes what a crash left in the Object Store and nothing will ever
// delete: the chunks of an object whose write never completed, and whole
// objects no stored message names (the process died between the object and
// its record). Only what is older than OrphanAge is taken, since on a shared
// server another process may be writing it right now.
func (s *Spool) sweep(ctx context.Context) error {
	if err := s.connected(); err != nil {
		return err
	}
	bucket := s.cfg.Name + "_large"
	objs, err := s.objects.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("list objects: %w", err)
	}
	complete := map[string]bool{}
	for _, o := range objs {
		complete[o.NUID] = true
	}
	ostream, err := s.js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return err
	}
	chunks := "$O." + bucket + ".C."
	info, err := ostream.Info(ctx, jetstream.WithSubjectFilter(chunks+">"))
	if err != nil {
		return err
	}
	var swept int
	for subj := range info.State.Subjects {
		if complete[strings.TrimPrefix(subj, chunks)] {
			continue
		}
		last, err := ostream.GetLastMsgForSubject(ctx, subj)
		if err != nil || time.Since(last.Time) < s.cfg.OrphanAge {
			continue
		}
		if err := ostream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("purge unfinished object: %w", err)
		}
		swept++
	}
	named := map[string]bool{}
	for seq := uint64(1); ; {
		raw, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.largeSubject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return err
		}
		named[raw.Header.Get(hdrObject)] = true
		seq = raw.Sequence + 1
	}
	for _, o := range objs {
		if !named[o.Name] && time.Since(o.ModTime) >= s.cfg.OrphanAge {
			if err := s.objects.Delete(ctx, o.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return fmt.Errorf("delete orphan object: %w", err)
			}
			swept++
		}
	}
	if swept > 0 {
		s.logger.Info("Spool: deleted what a crash left in the object store", watermill.LogFields{"objects": swept})
	}
	return nil
}

// purge removes the messages every sink acked (those up to the lowest ack
// floor of the stream's consumers), and their objects; it returns how many
// it removed. Several processes sharing the spool may purge at once: each
// removes what all sinks acked, so that is harmless.
func (s *Spool) purge(ctx context.Context) (uint64, error) {
	if err := s.connected(); err != nil {
		return 0, err
	}
	s.purgeMu.Lock()
	defer s.purgeMu.Unlock()
	floor, seen := uint64(0), false
	lister := s.stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		if !seen || ci.AckFloor.Stream < floor {
			floor, seen = ci.AckFloor.Stream, true
		}
	}
	if err := lister.Err(); err != nil {
		return 0, fmt.Errorf("list consumers: %w", err)
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if !seen || floor < info.State.FirstSeq || info.State.Msgs == 0 {
		return 0, nil
	}
	for seq := info.State.FirstSeq; seq <= floor; {
		raw, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.largeSubject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, err
		}
		if raw.Sequence > floor {
			break
		}
		if err := s.objects.Delete(ctx, raw.Header.Get(hdrObject)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return 0, fmt.Errorf("delete object of message %d: %w", raw.Sequence, err)
		}
		seq = raw.Sequence + 1
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSequence(floor+1)); err != nil {
		return 0, err
	}
	return min(info.State.Msgs, floor-info.State.FirstSeq+1), nil
}

func orNoLimit(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// Close stops waits in Publish (they fail) and the purge; it can be called
// more than once. Subscribers are closed on their own.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		<-s.purged
	})
	return nil
}

// KeepConsumers deletes the durable consumers of sinks not in names: a sink
// removed from the configuration would otherwise keep every message stored
// for ever.
func (s *Spool) KeepConsumers(ctx context.Context, names []string) error {
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	lister := s.stream.ConsumerNames(ctx)
	var stale []string
	for n := range lister.Name() {
		if !keep[n] {
			stale = append(stale, n)
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("spool %s: list consumers: %w", s.cfg.Name, err)
	}
	for _, n := range stale {
		if err := s.stream.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("spool %s: delete the queue of removed sink %s: %w", s.cfg.Name, n, err)
		}
		s.logger.Info("Deleted the queue of a sink no longer configured", watermill.LogFields{"sink": n})
	}
	return nil
}

// Publish stores each message (the topic is not used: a spool has one) and
// returns once the server has it on disk, or fails under the Reject policy
// with ErrFull. It honours each message's context.
func (s *Spool) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := s.Store(m.Context(), m); err != nil {
			return err
		}
	}
	return nil
}

// Store stores one message.
func (s *Spool) Store(ctx context.Context, m *message.Message) error {
	if err := s.connected(); err != nil {
		s.lastStoreErr.Store(&storeErr{err: err, at: time.Now()})
		return fmt.Errorf("spool %s: store message %s: %w", s.cfg.Name, m.UUID, err)
	}
	rec, meta, err := s.record(m)
	if err != nil {
		return err
	}
	large := len(m.Payload) > s.cfg.LargePayload || int64(len(meta)+len(m.Payload))+headerSize(rec.Header) > s.maxPayload-1024
	if !large {
		rec.Data = append(meta, m.Payload...)
	}
	var waited bool
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 20*time.Millisecond, time.Second
	for {
		err := s.put(ctx, rec, m, meta, large)
		if err == nil {
			s.stored.Add(1)
			s.lastStoreErr.Store(nil)
			if waited {
				s.logger.Info("Spool has room again", nil)
			}
			return nil
		}
		if !isFull(err) {
			s.lastStoreErr.Store(&storeErr{err: err, at: time.Now()})
			return fmt.Errorf("spool %s: store message %s: %w", s.cfg.Name, m.UUID, err)
		}
		// Full of what the sinks acked since the last purge, maybe.
		if n, err := s.purge(ctx); err == nil && n > 0 {
			continue
		}
		switch s.cfg.WhenFull {
		case Reject:
			s.rejected.Add(1)
			return fmt.Errorf("spool %s: message %s: %w (when_full: reject)", s.cfg.Name, m.UUID, ErrFull)
		case DropOldest:
			if err := s.dropOldest(ctx); err != nil {
				return err
			}
			continue
		}
		if !waited {
			waited = true
			s.blocked.Add(1)
			s.logger.Error("Spool full: the source waits until a sink makes room (when_full: block)", err, nil)
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("spool %s: waiting for room: %w", s.cfg.Name, ctx.Err())
		case <-s.closing:
			t.Stop()
			return fmt.Errorf("spool %s: closed while waiting for room: %w", s.cfg.Name, ErrFull)
		}
	}
}

// put writes the message's payload to the Object Store when large, then its
// record to the stream. An object whose record could not be written is
// deleted again.
func (s *Spool) put(ctx context.Context, rec *nats.Msg, m *message.Message, meta []byte, large bool) error {
	if !large {
		_, err := s.js.PublishMsg(ctx, rec)
		return err
	}
	name := nuid.Next()
	if _, err := s.objects.Put(ctx, jetstream.ObjectMeta{Name: name}, &collectingReader{r: bytes.NewReader(m.Payload), next: collectEvery}); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	rec.Header.Set(hdrObject, name)
	rec.Header.Set(hdrSize, strconv.Itoa(len(m.Payload)))
	rec.Data = meta
	rec.Subject = s.largeSubject()
	if _, err := s.js.PublishMsg(ctx, rec); err != nil {
		rec.Subject = s.subject
		// Not ctx: the object must go even when the publish failed for ctx.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.objects.Delete(dctx, name)
		rec.Header.Del(hdrObject)
		rec.Header.Del(hdrSize)
		return err
	}
	return nil
}

// record is the stream message of m without its data, and m's metadata
// encoded, with room for a small payload after it.
func (s *Spool) record(m *message.Message) (*nats.Msg, []byte, error) {
	rec := nats.NewMsg(s.subject)
	rec.Header.Set(hdrUUID, m.UUID)
	var meta []byte
	if len(m.Payload) <= s.cfg.LargePayload {
		meta = make([]byte, 0, metadataSize(m.Metadata)+len(m.Payload))
	}
	meta = appendMetadata(meta, m.Metadata)
	if int64(len(meta)) > s.maxPayload/2 {
		return nil, nil, fmt.Errorf("spool %s: message %s: metadata of %d bytes is over half the server's max_payload (%d)", s.cfg.Name, m.UUID, len(meta), s.maxPayload)
	}
	return rec, meta, nil
}

func headerSize(h nats.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n + 16
}

// connected fails while the connection to the server is down: requests
// made then wait in the client's reconnect buffer and reach the server all
// at once when it is back, where the status polls of a few seconds of
// outage held the stores behind them for half a minute.
func (s *Spool) connected() error {
	if st := s.js.Conn().Status(); st != nats.CONNECTED {
		return fmt.Errorf("no connection to the store's server (%s)", strings.ToLower(st.String()))
	}
	return nil
}

// isFull tells a refusal for a limit (discard new) from other failures.
func isFull(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return strings.Contains(api.Description, "maximum messages exceeded") || strings.Contains(api.Description, "maximum bytes exceeded")
	}
	// The object store's chunks are published asynchronously: their refusal
	// comes back as an error text.
	return strings.Contains(err.Error(), "maximum bytes exceeded") || strings.Contains(err.Error(), "maximum messages exceeded")
}

// dropOldest deletes the oldest stored message, and its object.
func (s *Spool) dropOldest(ctx context.Context) error {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("spool %s: drop oldest: %w", s.cfg.Name, err)
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		// Only the object store is full: of objects whose records are gone.
		return fmt.Errorf("spool %s: the object store is full with no message stored: %w", s.cfg.Name, ErrFull)
	}
	raw, err := s.stream.GetMsg(ctx, first)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("spool %s: drop oldest: %w", s.cfg.Name, err)
	}
	if err := s.stream.DeleteMsg(ctx, first); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // a sink acked it meanwhile, or another process dropped it
		}
		return fmt.Errorf("spool %s: drop oldest: %w", s.cfg.Name, err)
	}
	s.dropped.Add(1)
	var uuid string
	if raw != nil {
		uuid = raw.Header.Get(hdrUUID)
		if obj := raw.Header.Get(hdrObject); obj != "" {
			_ = s.objects.Delete(ctx, obj)
		}
	}
	s.logger.Error("Spool full: dropped the oldest message (when_full: drop_oldest)", ErrFull, watermill.LogFields{"message_uuid": uuid, "seq": first})
	return nil
}

// Stats are a spool's counts since it was opened, in this process.
type Stats struct {
	Stored   uint64 // messages stored
	Dropped  uint64 // oldest messages deleted to make room (drop_oldest)
	Rejected uint64 // messages refused for want of room (reject)
	Blocked  uint64 // times Publish waited for room (block)
	// LastError is the last failure to store, other than full, and its time.
	LastError   string
	LastErrorAt time.Time
}

// Stats returns the spool's counts.
func (s *Spool) Stats() Stats {
	st := Stats{Stored: s.stored.Load(), Dropped: s.dropped.Load(), Rejected: s.rejected.Load(), Blocked: s.blocked.Load()}
	if e := s.lastStoreErr.Load(); e != nil {
		st.LastError, st.LastErrorAt = e.err.Error(), e.at
	}
	return st
}

// Check reports whether the server takes writes: nil when the spool's
// stream answers and the last store did not fail.
func (s *Spool) Check(ctx context.Context) error {
	if err := s.connected(); err != nil {
		return fmt.Errorf("spool %s: %w", s.cfg.Name, err)
	}
	if _, err := s.stream.Info(ctx); err != nil {
		return fmt.Errorf("spool %s: %w", s.cfg.Name, err)
	}
	if e := s.lastStoreErr.Load(); e != nil {
		return fmt.Errorf("spool %s: last store failed %s ago: %w", s.cfg.Name, time.Since(e.at).Round(time.Second), e.err)
	}
	return nil
}

// SinkState is one sink's queue, as the server reports it.
type SinkState struct {
	// Messages are stored and not yet acked by the sink: waiting, or in work.
	Messages uint64
	// Bytes is an estimate: the spool's bytes (stream and objects) times the
	// sink's share of the stored messages.
	Bytes uint64
	// OldestAge is how long the sink's oldest unacked message has been stored.
	OldestAge time.Duration
	// Redelivered counts the sink's messages delivered more than once that
	// are still unacked (the server's count).
	Redelivered uint64
}

// SinkState returns the queue of the sink whose consumer is durable.
func (s *Spool) SinkState(ctx context.Context, durable string) (SinkState, error) {
	st, err := s.SinkStates(ctx, durable)
	return st[durable], err
}

// SinkStates returns the queues of the sinks whose consumers are durables,
// from one look at the stream and the bucket; a sink whose consumer cannot
// be read is missing from the map, and the first such error is returned.
func (s *Spool) SinkStates(ctx context.Context, durables ...string) (map[string]SinkState, error) {
	if err := s.connected(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.cfg.Name, err)
	}
	si, err := s.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.cfg.Name, err)
	}
	total := si.State.Bytes
	if ost, err := s.objects.Status(ctx); err == nil {
		total += ost.Size()
	}
	out := make(map[string]SinkState, len(durables))
	var first error
	for _, d := range durables {
		c, err := s.stream.Consumer(ctx, d)
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("spool %s: sink %s: %w", s.cfg.Name, d, err))
			continue
		}
		ci := c.CachedInfo() // fetched by Consumer just now
		st := SinkState{Messages: ci.NumPending + uint64(ci.NumAckPending), Redelivered: uint64(ci.NumRedelivered)}
		if st.Messages > 0 {
			if si.State.Msgs > 0 {
				st.Bytes = uint64(float64(total) * min(1, float64(st.Messages)/float64(si.State.Msgs)))
			}
			// The first message after the ack floor is the oldest the sink has
			// not acked (or one it acked out of order: close enough).
			if raw, err := s.stream.GetMsg(ctx, ci.AckFloor.Stream+1, jetstream.WithGetMsgSubject(">")); err == nil {
				st.OldestAge = max(0, time.Since(raw.Time))
			}
		}
		out[d] = st
	}
	return out, first
}
