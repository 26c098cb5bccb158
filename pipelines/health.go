package pipelines

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

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

// Status is what /status shows.
type Status struct {
	Ready       bool                        `json:"ready"`
	Problems    []string                    `json:"problems,omitempty"`
	Pipelines   map[string]PipelineStatus   `json:"pipelines"`
	Connections map[string]ConnectionStatus `json:"connections,omitempty"`
}

// PipelineStatus is one pipeline's state and counts.
type PipelineStatus struct {
	State string        `json:"state"` // running, stopped
	Stats PipelineStats `json:"stats"`
	// Adapters holds the Stats() of the source and sinks that have them
	// (Loom: buffer depth and bytes, reconnects, unconfirmed; webhook: breaker
	// states), by "from" or "to.<sink>".
	Adapters map[string]any `json:"adapters,omitempty"`
	// Buffer is the store's counts and the sinks' queues, with buffer: set.
	Buffer *BufferStats `json:"buffer,omitempty"`
}

// ConnectionStatus is a Loom server's reachability.
type ConnectionStatus struct {
	Reachable bool   `json:"reachable"`
	LastError string `json:"last_error,omitempty"`
}

// Status describes everything running, for /status.
func (e *Engine) Status() any {
	problems := e.Ready()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{Ready: len(problems) == 0, Problems: problems, Pipelines: map[string]PipelineStatus{}, Connections: map[string]ConnectionStatus{}}
	storeCtx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for n, s := range e.final {
		st.Pipelines[n] = PipelineStatus{State: "stopped", Stats: s}
	}
	for n, r := range e.pipelines {
		ps := PipelineStatus{State: "running", Stats: r.stats.snapshot(), Adapters: map[string]any{}}
		if r.router.IsClosed() {
			ps.State = "stopped"
		}
		r.eachAdapter(func(where string, a any) {
			if s := adapterStats(a); s != nil {
				ps.Adapters[where] = s
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
