package pipelines

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// PipelineStats are a pipeline's counts since it started; a restart by a
// reload keeps them (for sinks of the same name). /status writes them as
// docs/status.md says (MarshalJSON, health.go).
type PipelineStats struct {
	Received     uint64 // taken from the source
	Done         uint64 // taken by every matching sink, then acked
	Filtered     uint64 // dropped by filter, acked
	Unmatched    uint64 // matched no sink's when, acked
	Failed       uint64 // some sink failed after retries: dead-lettered or nacked
	DeadLettered uint64 // published to the dead letters
	ExprErrors   uint64 // filter or when failed to evaluate (taken as no match)
	// MaxLatency is the longest a message took from source to all its sinks.
	MaxLatency time.Duration
	Sinks      map[string]SinkStats
	// LastError is the last failure (a sink that failed after its retries),
	// and when it happened; empty when none.
	LastError   string    `json:",omitempty"`
	LastErrorAt time.Time `json:",omitzero"`
}

// SinkStats are one sink's counts.
type SinkStats struct {
	Published uint64 // messages it took (delivered)
	Failed    uint64 // attempts that failed
	Retried   uint64 // retries made
	// DeadLettered counts messages the sink itself put in the dead letters
	// instead of delivering them (a webhook endpoint's); not in Published.
	DeadLettered uint64
}

type stats struct {
	received, done, filtered, unmatched, failed, deadLettered, exprErrors atomic.Uint64
	maxLatency                                                            atomic.Int64 // nanoseconds

	mu        sync.Mutex // the last error
	lastErr   string
	lastErrAt time.Time
	sinks     map[string]*sinkStats
	latency   prometheus.Observer // handling time, for /metrics; nil: not measured
}

type sinkStats struct{ published, failed, retried, deadLettered atomic.Uint64 }

func newStats(sinks []string) *stats {
	s := &stats{sinks: map[string]*sinkStats{}}
	for _, n := range sinks {
		s.sinks[n] = &sinkStats{}
	}
	return s
}

func (s *stats) observe(d time.Duration) {
	if s.latency != nil {
		s.latency.Observe(d.Seconds())
	}
	// A compare-and-swap, not a lock: observe runs once per message, and the
	// maximum rarely changes.
	for {
		cur := s.maxLatency.Load()
		if int64(d) <= cur || s.maxLatency.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// carry adds the counts of the pipeline's run before a restart, for sinks it
// still has; the longest latency and last error carry on too.
func (s *stats) carry(p PipelineStats) {
	s.received.Add(p.Received)
	s.done.Add(p.Done)
	s.filtered.Add(p.Filtered)
	s.unmatched.Add(p.Unmatched)
	s.failed.Add(p.Failed)
	s.deadLettered.Add(p.DeadLettered)
	s.exprErrors.Add(p.ExprErrors)
	for cur := s.maxLatency.Load(); int64(p.MaxLatency) > cur && !s.maxLatency.CompareAndSwap(cur, int64(p.MaxLatency)); {
		cur = s.maxLatency.Load()
	}
	s.mu.Lock()
	if s.lastErr == "" { // none since the restart yet
		s.lastErr, s.lastErrAt = p.LastError, p.LastErrorAt
	}
	s.mu.Unlock()
	for n, ps := range p.Sinks {
		if ss, ok := s.sinks[n]; ok {
			ss.published.Add(ps.Published)
			ss.failed.Add(ps.Failed)
			ss.retried.Add(ps.Retried)
			ss.deadLettered.Add(ps.DeadLettered)
		}
	}
}

// failed records the last error, for /status.
func (s *stats) setErr(err error) {
	s.mu.Lock()
	s.lastErr, s.lastErrAt = err.Error(), time.Now()
	s.mu.Unlock()
}

func (s *stats) snapshot() PipelineStats {
	s.mu.Lock()
	lastErr, lastErrAt := s.lastErr, s.lastErrAt
	s.mu.Unlock()
	lat := time.Duration(s.maxLatency.Load())
	out := PipelineStats{
		Received: s.received.Load(), Done: s.done.Load(), Filtered: s.filtered.Load(),
		Unmatched: s.unmatched.Load(), Failed: s.failed.Load(), DeadLettered: s.deadLettered.Load(),
		ExprErrors: s.exprErrors.Load(), MaxLatency: lat, Sinks: map[string]SinkStats{},
		LastError: lastErr, LastErrorAt: lastErrAt,
	}
	for n, ss := range s.sinks {
		out.Sinks[n] = SinkStats{Published: ss.published.Load(), Failed: ss.failed.Load(), Retried: ss.retried.Load(), DeadLettered: ss.deadLettered.Load()}
	}
	return out
}

func (p PipelineStats) logArgs() []any {
	args := []any{"received", p.Received, "done", p.Done, "filtered", p.Filtered, "unmatched", p.Unmatched,
		"failed", p.Failed, "dead_lettered", p.DeadLettered}
	for _, n := range sortedNames(p.Sinks) { // sorted: the same order on every line
		args = append(args, "to."+n, p.Sinks[n].Published)
	}
	return args
}

// countingPublisher counts messages its publisher took.
type countingPublisher struct {
	message.Publisher
	n *atomic.Uint64
}

func (c *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := c.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	c.n.Add(uint64(len(msgs)))
	return nil
}
