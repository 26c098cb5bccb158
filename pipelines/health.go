package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// probe keeps one idle connection to a Loom server, to know whether it is
// reachable: QUIC keep-alives notice a server that went away within the
// connection's idle timeout, and a new connection is tried every second
// until one is up again. One idle connection per server costs next to nothing.
type probe struct {
	up      atomic.Bool
	lastErr atomic.Value // string
	cancel  context.CancelFunc
	done    chan struct{}
}

const probeRetry = time.Second

func startProbe(cfg client.Config, logger watermill.LoggerAdapter) *probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{cancel: cancel, done: make(chan struct{})}
	p.lastErr.Store("not connected yet")
	go func() {
		defer close(p.done)
		for {
			dctx, dcancel := context.WithTimeout(ctx, cfg.DialTimeout)
			c, err := client.Dial(dctx, cfg, logger)
			dcancel()
			if err == nil {
				p.up.Store(true)
				select {
				case <-c.Done():
					p.lastErr.Store(fmt.Sprintf("connection lost: %v", c.Err()))
				case <-ctx.Done():
				}
				p.up.Store(false)
				_ = c.Close()
			} else {
				p.lastErr.Store(err.Error())
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(probeRetry):
			}
		}
	}()
	return p
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

// syncProbes runs a probe for each non-embedded Loom connection that a
// running pipeline names, and stops the others. Called with e.mu held.
func (e *Engine) syncProbes() {
	if !e.probesOn || e.cfg == nil {
		return
	}
	want := map[string]bool{}
	for name := range e.pipelines {
		for _, conn := range loomConnections(e.cfg.Pipelines[name]) {
			if c, ok := e.cfg.Connections[conn]; ok && !c.Embedded && (c.Type == "" || c.Type == "loom") {
				want[conn] = true
			}
		}
	}
	for name, p := range e.probes {
		if !want[name] {
			p.stop()
			delete(e.probes, name)
		}
	}
	for name := range want {
		if _, ok := e.probes[name]; !ok {
			cfg := e.cfg.Connections[name].Client
			cfg.SetDefaults()
			cfg.Name = "loombridge-probe"
			e.probes[name] = startProbe(cfg, e.wlogger.With(watermill.LogFields{"probe": name}))
		}
	}
}

// loomConnections names the Loom connections a pipeline's source and sinks use.
func loomConnections(pl *Pipeline) []string {
	var out []string
	eps := []any{}
	if pl.From != nil {
		eps = append(eps, pl.From.Source)
	}
	for _, s := range pl.To {
		eps = append(eps, s.Sink)
	}
	if pl.DeadLetter != nil {
		eps = append(eps, pl.DeadLetter.Sink)
	}
	for _, ep := range eps {
		if r, ok := ep.(roomer); ok {
			c, _ := r.LoomRoom()
			out = append(out, c)
		}
	}
	return out
}

// storeTimeout bounds a question to the buffers' store from /status,
// /readyz or /metrics.
const storeTimeout = 2 * time.Second

// Ready lists what keeps the engine from being ready: a pipeline of the
// configuration that does not run, a Loom server that does not answer. None:
// ready.
func (e *Engine) Ready() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var problems []string
	if e.cfg == nil {
		return []string{"not started"}
	}
	for _, name := range sortedNames(e.cfg.Pipelines) {
		r, ok := e.pipelines[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("pipeline %s: not running", name))
		case r.router.IsClosed():
			problems = append(problems, fmt.Sprintf("pipeline %s: stopped (its source ended or failed)", name))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if e.store != nil && e.store.srv != nil {
		if err := e.store.srv.Writable(); err != nil {
			problems = append(problems, "buffers: "+err.Error())
		}
	}
	for _, name := range sortedNames(e.pipelines) {
		if r := e.pipelines[name]; r.spool != nil {
			if err := r.spool.Check(ctx); err != nil {
				problems = append(problems, fmt.Sprintf("pipeline %s: buffer: %v", name, err))
			}
		}
	}
	for _, name := range sortedNames(e.probes) {
		if p := e.probes[name]; !p.up.Load() {
			problems = append(problems, fmt.Sprintf("connection %s: Loom server not reachable: %v", name, p.lastErr.Load()))
		}
	}
	return problems
}

// Status is what /status shows, as JSON; docs/status.md describes every key.
// The shape: keys are snake_case (a Go field's name turned into snake_case
// where it has no json tag, adapter stats included), durations are seconds
// as a number under a key ending in _seconds, times are RFC 3339 strings, and
// keys marked omitted below are left out when empty.
//
//	{
//	  "ready": false,
//	  "problems": ["pipeline orders: not running"],          // omitted when none
//	  "warnings": ["pipeline feed: to.out writes room ..."], // omitted when none
//	  "config": {"hash": "<sha256 of the file>", "applied_at": "...",
//	             "last_reload": {"result": "refused", "at": "...", "hash": "...", "problems": ["..."]}},
//	  "empty_rooms": [{"pipeline": "feed", "sink": "to.out", "connection": "local", "room": "r"}],
//	  "pipelines": {"orders": {"state": "running", "started_at": "...", "restarts": 0,
//	                "stats": {"received": 10, ..., "max_latency_seconds": 0.0021, "sinks": {...}},
//	                "adapters": {"from": {...}, "to.hook": {...}}}},
//	  "connections": {"prod": {"reachable": true}}
//	}
type Status struct {
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"`
	// Warnings are what works but likely not as meant: rooms written that no
	// pipeline reads, a reload refused.
	Warnings    []string                    `json:"warnings,omitempty"`
	Config      ConfigStatus                `json:"config"`
	EmptyRooms  []EmptyRoom                 `json:"empty_rooms,omitempty"`
	Pipelines   map[string]PipelineStatus   `json:"pipelines"`
	Connections map[string]ConnectionStatus `json:"connections,omitempty"`
}

// ConfigStatus is the configuration in force and the last reload's outcome.
type ConfigStatus struct {
	Hash       string        `json:"hash"`                  // Config.Hash of the configuration running
	AppliedAt  time.Time     `json:"applied_at,omitzero"`   // when it was started or reloaded
	LastReload *ReloadStatus `json:"last_reload,omitempty"` // none before the first reload
}

// ReloadStatus is a reload's outcome.
type ReloadStatus struct {
	// Result is "applied" (Problems: pipelines that did not start) or
	// "refused" (Problems: what is wrong with the file; the configuration
	// running stays).
	Result   string    `json:"result"`
	At       time.Time `json:"at"`
	Hash     string    `json:"hash"` // the reloaded file's, HashFile
	Problems []string  `json:"problems,omitempty"`
}

// PipelineStatus is one pipeline's state and counts.
type PipelineStatus struct {
	State     string        `json:"state"`               // running, stopped
	StartedAt time.Time     `json:"started_at,omitzero"` // its last (re)start
	Restarts  uint64        `json:"restarts"`            // by reloads; its counts go on over them
	Stats     PipelineStats `json:"stats"`
	// Adapters holds the Stats() of the source and sinks that have them
	// (Loom: buffer depth and bytes, reconnects, unconfirmed; webhook: breaker
	// states), by "from" or "to.<sink>"; they count since the pipeline's last
	// (re)start.
	Adapters map[string]any `json:"adapters,omitempty"`
	// Buffer is the store's counts and the sinks' queues, with buffer: set.
	Buffer *BufferStats `json:"buffer,omitempty"`
}

// ConnectionStatus is a Loom server's reachability.
type ConnectionStatus struct {
	Reachable bool   `json:"reachable"`
	LastError string `json:"last_error,omitempty"`
}

// MarshalJSON writes the counts as /status shows them (see Status).
func (p PipelineStats) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonView(reflect.ValueOf(p)))
}

// Status describes everything running, for /status.
func (e *Engine) Status() any {
	problems := e.Ready()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{Ready: len(problems) == 0, Problems: problems, Pipelines: map[string]PipelineStatus{}, Connections: map[string]ConnectionStatus{}}
	if e.cfg != nil {
		st.Config = ConfigStatus{Hash: e.cfg.hash, AppliedAt: e.appliedAt, LastReload: e.lastReload}
	}
	st.EmptyRooms = e.emptyRooms
	for _, r := range e.emptyRooms {
		st.Warnings = append(st.Warnings, r.String())
	}
	if lr := e.lastReload; lr != nil && lr.Result == "refused" {
		st.Warnings = append(st.Warnings, fmt.Sprintf("reload refused: the file (sha256 %s) has %d problem(s); the configuration running (sha256 %s) stays", lr.Hash, len(lr.Problems), st.Config.Hash))
	}
	storeCtx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for n, s := range e.final {
		st.Pipelines[n] = PipelineStatus{State: "stopped", StartedAt: e.started[n], Restarts: e.restarts[n], Stats: s}
	}
	for n, r := range e.pipelines {
		ps := PipelineStatus{State: "running", StartedAt: e.started[n], Restarts: e.restarts[n], Stats: r.stats.snapshot(), Adapters: map[string]any{}}
		if r.router.IsClosed() {
			ps.State = "stopped"
		}
		r.eachAdapter(func(where string, a any) {
			if s := adapterStats(a); s != nil {
				ps.Adapters[where] = jsonView(reflect.ValueOf(s))
			}
		})
		ps.Buffer = r.bufferStats(storeCtx)
		st.Pipelines[n] = ps
	}
	for n, p := range e.probes {
		cs := ConnectionStatus{Reachable: p.up.Load()}
		if !cs.Reachable {
			cs.LastError, _ = p.lastErr.Load().(string)
		}
		st.Connections[n] = cs
	}
	return st
}

var (
	durationT = reflect.TypeFor[time.Duration]()
	timeT     = reflect.TypeFor[time.Time]()
)

// jsonView turns v into what encoding/json writes in the shape of Status:
// struct fields under their json tag's name or their name in snake_case,
// durations as seconds under a name ending in _seconds.
func jsonView(v reflect.Value) any {
	switch {
	case !v.IsValid():
		return nil
	case v.Type() == durationT:
		return time.Duration(v.Int()).Seconds()
	case v.Type() == timeT:
		return v.Interface()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return jsonView(v.Elem())
	case reflect.Struct:
		out := map[string]any{}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if (strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")) && v.Field(i).IsZero() {
				continue
			}
			if name == "" {
				name = snakeCase(f.Name)
			}
			if f.Type == durationT && !strings.HasSuffix(name, "_seconds") {
				name += "_seconds"
			}
			out[name] = jsonView(v.Field(i))
		}
		return out
	case reflect.Map:
		out := make(map[string]any, v.Len())
		for it := v.MapRange(); it.Next(); {
			out[fmt.Sprint(it.Key().Interface())] = jsonView(it.Value())
		}
		return out
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any{}
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = jsonView(v.Index(i))
		}
		return out
	}
	return v.Interface()
}

// snakeCase turns a Go name into snake_case: MaxLatency max_latency,
// BufferedBytes buffered_bytes, HTTPAddr http_addr.
func snakeCase(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			if i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// eachAdapter calls fn with the source and every sink, named as in the
// configuration.
func (r *runner) eachAdapter(fn func(where string, adapter any)) {
	fn("from", r.source)
	for _, s := range r.sinks {
		fn("to."+s.name, s.pub)
	}
	if r.dead != nil {
		if c, ok := r.dead.(*countingPublisher); ok {
			fn("dead_letter", c.Publisher)
		}
	}
}
