package pipelines

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/server"
	"github.com/loombridge/loombridge/adapter/spool"
)

// Engine runs the pipelines of a configuration, each on a Watermill Router of
// its own so that a reload restarts one without touching the others.
type Engine struct {
	logger  *slog.Logger
	wlogger watermill.LoggerAdapter
	stdout  io.Writer
	tracer  *tracer

	mu        sync.Mutex
	cfg       *Config
	pipelines map[string]*runner
	servers   map[string]*embedded     // embedded Loom routers by connection name
	store     *bufferStore             // where buffered pipelines keep their queues; nil until one starts
	final     map[string]PipelineStats // counts of pipelines stopped and not restarted
	latency   *prometheus.HistogramVec
	probes    map[string]*probe // reachability of the Loom servers in use, by connection
	probesOn  bool

	// For /status and /metrics: when each pipeline started and how often it
	// was restarted by a reload, the configuration in force and the last
	// reload's outcome, and the rooms written that nobody reads.
	started    map[string]time.Time
	restarts   map[string]uint64
	appliedAt  time.Time
	lastReload *ReloadStatus
	reloads    map[string]uint64 // by result: applied, refused
	emptyRooms []EmptyRoom

	stopStats context.CancelFunc
	statsDone chan struct{}
}

// EngineOptions are what an Engine writes to.
type EngineOptions struct {
	Logger *slog.Logger // default: discard
	Stdout io.Writer    // where stdout sinks write; default os.Stdout
	// ProbeLoom keeps an idle connection to each Loom server in use, so that
	// Ready knows whether it is reachable (see health.go).
	ProbeLoom bool
	// TracerProvider makes the spans of pipelines and sinks (pipelines/tracing.go);
	// nil: no tracing. Given here, not taken from otel's globals, so that engines
	// with providers of their own can share a process.
	TracerProvider trace.TracerProvider
}

// embedded is a Loom-compatible router run in this process for a connection.
type embedded struct {
	srv *server.Server
	fp  string // the connection's keys it was started with
}

// NewEngine returns an engine with nothing running.
func NewEngine(opts EngineOptions) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	return &Engine{
		logger:    opts.Logger,
		wlogger:   watermillLogger(opts.Logger),
		stdout:    opts.Stdout,
		tracer:    newTracer(opts.TracerProvider),
		pipelines: map[string]*runner{},
		servers:   map[string]*embedded{},
		final:     map[string]PipelineStats{},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loombridge_pipeline_handling_seconds",
			Help:    "Time from taking a message from the source until every matching sink took it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"pipeline"}),
		probes:   map[string]*probe{},
		probesOn: opts.ProbeLoom,
		started:  map[string]time.Time{},
		restarts: map[string]uint64{},
		reloads:  map[string]uint64{},
	}
}

// Start runs every pipeline of cfg. If one cannot start, those started are
// stopped again and the error names it.
func (e *Engine) Start(ctx context.Context, cfg *Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg != nil {
		return errors.New("engine already started")
	}
	e.cfg = cfg
	changed, _ := (*Config)(nil).Changed(cfg)
	if err := e.startPipelines(ctx, cfg, orderForStart(cfg, changed)); err != nil {
		e.stopPipelines(ctx, sortedNames(e.pipelines))
		e.closeServers(nil)
		e.closeStore(nil)
		e.cfg = nil
		return err
	}
	e.syncProbes()
	e.appliedAt = time.Now()
	e.warnEmptyRooms()
	if cfg.Log.StatsInterval > 0 {
		sctx, cancel := context.WithCancel(context.Background())
		e.stopStats, e.statsDone = cancel, make(chan struct{})
		go e.logStats(sctx, cfg.Log.StatsInterval)
	}
	return nil
}

// Apply switches to cfg: pipelines whose keys (or whose connections' keys)
// changed are stopped gracefully and started with the new config, removed
// ones are stopped, new ones started; the others run on untouched, but for
// those feeding a Loom room that a restarted pipeline reads: they restart with
// it (stopped before it, started after it), since Loom discards what is sent
// to a room while nobody consumes it. A pipeline that fails to start is
// reported and left stopped; the rest still apply. A removed pipeline leaves
// nothing behind in Stats, /status or /metrics; a restarted one keeps its
// counts (see PipelineStats).
func (e *Engine) Apply(ctx context.Context, cfg *Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed, removed := e.cfg.Changed(cfg)
	var restart []string
	for _, n := range changed {
		if _, ok := e.pipelines[n]; ok {
			restart = append(restart, n)
		}
	}
	feeders := e.feedersOf(restart, removed)
	e.logger.Info("reloading configuration", "changed", changed, "removed", removed, "feeders_restarted", feeders)
	e.stopPipelines(ctx, slices.Concat(removed, restart, feeders))
	for _, n := range removed {
		delete(e.final, n)
		delete(e.started, n)
		delete(e.restarts, n)
		e.latency.DeleteLabelValues(n)
	}
	e.cfg = cfg
	e.closeServers(cfg) // those no running config uses any more
	e.closeStore(cfg)
	var errs []error
	for _, name := range orderForStart(cfg, slices.Concat(changed, feeders)) {
		if err := e.startPipelines(ctx, cfg, []string{name}); err != nil {
			errs = append(errs, err)
		}
	}
	e.syncProbes()
	err := errors.Join(errs...)
	e.appliedAt = time.Now()
	e.reloads["applied"]++
	e.lastReload = &ReloadStatus{Result: "applied", At: e.appliedAt, Hash: cfg.hash, Problems: errorLines(err)}
	e.warnEmptyRooms()
	return err
}

// ReloadRefused records a configuration that a reload did not apply, because
// loading it failed with err, for /status and /metrics; hash is its file's
// (HashFile). The running configuration stays.
func (e *Engine) ReloadRefused(hash string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reloads["refused"]++
	e.lastReload = &ReloadStatus{Result: "refused", At: time.Now(), Hash: hash, Problems: errorLines(err)}
}

// errorLines splits an error into its problems, one a line; nil: none.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	var es Errors
	if errors.As(err, &es) {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.Error()
		}
		return out
	}
	return strings.Split(err.Error(), "\n")
}

// feedersOf lists the running pipelines, not among restart or removed, that
// publish to a Loom room a pipeline of restart reads, and in turn those
// feeding a room these read. Called with e.mu held.
func (e *Engine) feedersOf(restart, removed []string) []string {
	in := map[string]bool{}
	for _, n := range slices.Concat(restart, removed) {
		in[n] = true
	}
	var out []string
	for queue := restart; len(queue) > 0; {
		n := queue[0]
		queue = queue[1:]
		src, ok := e.pipelines[n].pl.From.Source.(roomer)
		if !ok {
			continue
		}
		conn, room := src.LoomRoom()
		for _, o := range sortedNames(e.pipelines) {
			if !in[o] && writesRoom(e.pipelines[o].pl, conn, room) {
				in[o] = true
				out = append(out, o)
				queue = append(queue, o)
			}
		}
	}
	sort.Strings(out)
	return out
}

// writesRoom reports whether a sink or the dead letters of pl publish to the
// room of conn.
func writesRoom(pl *Pipeline, conn, room string) bool {
	eps := make([]*Endpoint, 0, len(pl.To)+1)
	for _, s := range pl.To {
		eps = append(eps, s)
	}
	if pl.DeadLetter != nil {
		eps = append(eps, pl.DeadLetter)
	}
	for _, ep := range eps {
		if r, ok := ep.Sink.(roomer); ok {
			if c, rm := r.LoomRoom(); c == conn && rm == room {
				return true
			}
		}
	}
	return false
}

// Close stops every pipeline gracefully: sources stop taking messages, those
// in flight are finished, sinks are flushed and closed; then the embedded
// routers stop. It returns when all is done or ctx ends.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopStats != nil {
		e.stopStats()
		<-e.statsDone
		e.stopStats = nil
	}
	err := e.stopPipelines(ctx, sortedNames(e.pipelines))
	e.closeServers(nil)
	e.closeStore(nil)
	for name, p := range e.probes {
		p.stop()
		delete(e.probes, name)
	}
	return err
}

// Running lists the pipelines that run now.
func (e *Engine) Running() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for n, r := range e.pipelines {
		if !r.router.IsClosed() {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Stats returns every pipeline's counts by name.
func (e *Engine) Stats() map[string]PipelineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]PipelineStats, len(e.pipelines))
	for n, s := range e.final {
		out[n] = s
	}
	for n, r := range e.pipelines {
		out[n] = r.stats.snapshot()
	}
	return out
}

// EmbeddedServer returns the embedded router of a connection, if it runs.
func (e *Engine) EmbeddedServer(connection string) (*server.Server, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.servers[connection]; ok {
		return s.srv, true
	}
	return nil, false
}

func (e *Engine) startPipelines(ctx context.Context, cfg *Config, names []string) error {
	for _, name := range names {
		var store *nats.Conn
		if cfg.Pipelines[name].Buffer != nil {
			var err error
			if store, err = e.bufferStore(cfg); err != nil {
				return fmt.Errorf("pipeline %s: buffer: %w", name, err)
			}
		}
		r, err := startRunner(ctx, name, cfg.Pipelines[name], e.deps(cfg, name), cfg.ShutdownTimeout, e.logger, e.latency.WithLabelValues(name), store)
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", name, err)
		}
		e.pipelines[name] = r
		args := []any{"pipeline", name, "from", cfg.Pipelines[name].From.Type, "topic", r.topic, "sinks", strings.Join(sortedNames(cfg.Pipelines[name].To), ",")}
		if prev, ok := e.final[name]; ok {
			// A restart: the counts go on from where they were, so /metrics
			// counters do not fall back to 0 without the process restarting.
			r.stats.carry(prev)
			e.restarts[name]++
			args = append(args, "restart", e.restarts[name], "counts", "kept from before the restart")
		}
		e.started[name] = time.Now()
		delete(e.final, name)
		e.awaitConsumer(ctx, cfg, name)
		e.logger.Info("pipeline started", args...)
	}
	return nil
}

// stopPipelines stops the named pipelines gracefully, in waves: a pipeline
// that feeds a Loom room stops before the pipelines reading that room, so
// what it published still finds its consumers (Loom discards messages for a
// room nobody consumes); pipelines in one wave stop at once.
func (e *Engine) stopPipelines(ctx context.Context, names []string) error {
	left := map[string]bool{}
	for _, n := range names {
		if _, ok := e.pipelines[n]; ok {
			left[n] = true
		}
	}
	var errs []error
	for len(left) > 0 {
		var wave []string
		for n := range left {
			if !e.fedByAny(n, left) {
				wave = append(wave, n)
			}
		}
		if len(wave) == 0 { // a cycle of rooms: stop the rest together
			wave = sortedNames(left)
		}
		sort.Strings(wave)
		errs = append(errs, e.stopWave(ctx, wave))
		for _, n := range wave {
			delete(left, n)
		}
	}
	return errors.Join(errs...)
}

// fedByAny reports whether another pipeline among others publishes to the
// room that pipeline name reads.
func (e *Engine) fedByAny(name string, others map[string]bool) bool {
	src, ok := e.pipelines[name].pl.From.Source.(roomer)
	if !ok {
		return false
	}
	conn, room := src.LoomRoom()
	for o := range others {
		if o == name {
			continue
		}
		for _, s := range e.pipelines[o].pl.To {
			if r, ok := s.Sink.(roomer); ok {
				if c2, r2 := r.LoomRoom(); c2 == conn && r2 == room {
					return true
				}
			}
		}
	}
	return false
}

// roomer is a source or sink on a Loom room.
type roomer interface {
	LoomRoom() (connection, room string)
}

func (e *Engine) stopWave(ctx context.Context, names []string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	stopped := map[string]*runner{}
	for i, name := range names {
		r, ok := e.pipelines[name]
		if !ok {
			continue
		}
		delete(e.pipelines, name)
		stopped[name] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.stop(ctx); err != nil {
				errs[i] = fmt.Errorf("pipeline %s: %w", name, err)
			}
			e.logger.Info("pipeline stopped", append([]any{"pipeline", name}, r.stats.snapshot().logArgs()...)...)
		}()
	}
	wg.Wait()
	for name, r := range stopped { // once stopped, so what was in flight is counted
		e.final[name] = r.stats.snapshot()
	}
	return errors.Join(errs...)
}

func (e *Engine) deps(cfg *Config, pipeline string) Deps {
	return Deps{
		Pipeline:    pipeline,
		Logger:      e.wlogger.With(watermill.LogFields{"pipeline": pipeline}),
		Stdout:      e.stdout,
		connections: cfg.Connections,
		loom:        func(name string) (client.Config, error) { return e.loomConnection(cfg, name) },
		tracer:      e.tracer,
	}
}

// loomConnection resolves a connection, starting its embedded router on first
// use. Called with e.mu held.
func (e *Engine) loomConnection(cfg *Config, name string) (client.Config, error) {
	c, ok := cfg.Connections[name]
	if !ok {
		return client.Config{}, fmt.Errorf("no connection %q", name)
	}
	if !c.Embedded {
		return c.Client, nil
	}
	fp := fmt.Sprintf("%+v", *c)
	s, ok := e.servers[name]
	if ok && s.fp != fp {
		return client.Config{}, fmt.Errorf("connection %s: the embedded router's keys changed; restart loombridge to move it", name)
	}
	if !ok {
		srv, err := server.Start(server.Config{Addr: c.Client.Addr, Logger: e.logger.With("embedded_router", name)})
		if err != nil {
			return client.Config{}, fmt.Errorf("connection %s: start embedded router: %w", name, err)
		}
		s = &embedded{srv: srv, fp: fp}
		e.servers[name] = s
		e.logger.Info("embedded Loom router listening", "connection", name, "addr", srv.Addr())
	}
	out := c.Client
	out.Addr = s.srv.Addr()
	out.TLSClientConfig = s.srv.ClientTLS()
	return out, nil
}

// closeServers stops embedded routers that keep is nil or no longer has as
// embedded connections. Called with e.mu held, after their pipelines stopped.
func (e *Engine) closeServers(keep *Config) {
	for name, s := range e.servers {
		if keep != nil {
			if c, ok := keep.Connections[name]; ok && c.Embedded && fmt.Sprintf("%+v", *c) == s.fp {
				continue
			}
		}
		_ = s.srv.Close()
		delete(e.servers, name)
	}
}

// orderForStart starts the readers of a Loom room before the pipelines that
// write to it (Loom discards messages for a room nobody consumes, so
// consumers go first), along chains of rooms too; pipelines on a cycle of
// rooms start in name order. Otherwise, pipelines whose source is a Loom room
// go first.
func orderForStart(cfg *Config, names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	out = slices.Compact(out)
	sort.SliceStable(out, func(i, j int) bool {
		return cfg.Pipelines[out[i]].From.Type == "loom" && cfg.Pipelines[out[j]].From.Type != "loom"
	})
	// Take, each time, the first pipeline that writes no room a pipeline
	// still to start reads.
	left := map[string]bool{}
	for _, n := range out {
		left[n] = true
	}
	waitsFor := func(a string) bool {
		for b := range left {
			if b == a {
				continue
			}
			if r, ok := cfg.Pipelines[b].From.Source.(roomer); ok {
				if c, rm := r.LoomRoom(); writesRoom(cfg.Pipelines[a], c, rm) {
					return true
				}
			}
		}
		return false
	}
	ordered := make([]string, 0, len(out))
	for len(left) > 0 {
		next := ""
		for _, n := range out {
			if left[n] && !waitsFor(n) {
				next = n
				break
			}
		}
		if next == "" { // a cycle: take the first left
			for _, n := range out {
				if left[n] {
					next = n
					break
				}
			}
		}
		ordered = append(ordered, next)
		delete(left, next)
	}
	return ordered
}

func (e *Engine) logStats(ctx context.Context, every time.Duration) {
	defer close(e.statsDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		all := e.Stats()
		for _, name := range sortedNames(all) { // sorted: the same order every time
			e.logger.Info("pipeline stats", append([]any{"pipeline", name}, all[name].logArgs()...)...)
		}
	}
}

// watermillLogger maps Watermill's chatty Info (router start, subscriber
// stopped) to Debug, so Info stays about what the operator needs.
func watermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	return levelGate{watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	}), l}
}

// levelGate skips Watermill's Debug and Trace calls (Trace runs for every
// message) before their fields become slog arguments, when the logger would
// drop them anyway: measured at 3% of a pipeline's CPU.
type levelGate struct {
	watermill.LoggerAdapter
	l *slog.Logger
}

func (g levelGate) Debug(msg string, fields watermill.LogFields) {
	if g.l.Enabled(context.Background(), slog.LevelDebug) {
		g.LoggerAdapter.Debug(msg, fields)
	}
}

func (g levelGate) Trace(msg string, fields watermill.LogFields) {
	if g.l.Enabled(context.Background(), watermill.LevelTrace) {
		g.LoggerAdapter.Trace(msg, fields)
	}
}

func (g levelGate) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return levelGate{g.LoggerAdapter.With(fields), g.l}
}

// warnEmptyRooms finds the rooms of embedded connections that a pipeline
// writes (a sink or its dead letters) and no pipeline reads: the embedded
// router discards what is sent there, and being loombridge's own, nothing
// else is expected to read it. Each is logged as a warning, and kept for
// /status and /metrics. Called with e.mu held.
func (e *Engine) warnEmptyRooms() {
	read := map[[2]string]bool{}
	for _, pl := range e.cfg.Pipelines {
		if r, ok := pl.From.Source.(roomer); ok {
			c, rm := r.LoomRoom()
			read[[2]string{c, rm}] = true
		}
	}
	e.emptyRooms = nil
	for _, name := range sortedNames(e.cfg.Pipelines) {
		pl := e.cfg.Pipelines[name]
		eps := map[string]*Endpoint{}
		for s, ep := range pl.To {
			eps["to."+s] = ep
		}
		if pl.DeadLetter != nil {
			eps["dead_letter"] = pl.DeadLetter
		}
		for _, where := range sortedNames(eps) {
			r, ok := eps[where].Sink.(roomer)
			if !ok {
				continue
			}
			c, rm := r.LoomRoom()
			if conn := e.cfg.Connections[c]; conn == nil || !conn.Embedded || read[[2]string{c, rm}] {
				continue
			}
			e.emptyRooms = append(e.emptyRooms, EmptyRoom{Pipeline: name, Sink: where, Connection: c, Room: rm})
			e.logger.Warn("a pipeline writes a room of the embedded router that no pipeline reads: the router discards its messages",
				"pipeline", name, "sink", where, "connection", c, "room", rm)
		}
	}
}

// EmptyRoom is a room of an embedded connection that a pipeline writes and
// no pipeline reads.
type EmptyRoom struct {
	Pipeline   string `json:"pipeline"`
	Sink       string `json:"sink"` // "to.<name>" or "dead_letter"
	Connection string `json:"connection"`
	Room       string `json:"room"`
}

func (r EmptyRoom) String() string {
	return fmt.Sprintf("pipeline %s: %s writes room %q of the embedded connection %s, which no pipeline reads: its messages are discarded", r.Pipeline, r.Sink, r.Room, r.Connection)
}

// awaitConsumer waits, for a pipeline reading a room of an embedded router,
// until its first consumer stream is registered: Loom discards messages for a
// room with no consumer, so the pipelines feeding the room start only then.
// A real server cannot be asked; there the order of start is all we do.
func (e *Engine) awaitConsumer(ctx context.Context, cfg *Config, name string) {
	src, ok := cfg.Pipelines[name].From.Source.(roomer)
	if !ok {
		return
	}
	conn, room := src.LoomRoom()
	s, ok := e.servers[conn]
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.srv.WaitConsumers(ctx, room, 1); err != nil {
		e.logger.Warn("no consumer on the embedded router yet; messages sent meanwhile are discarded", "pipeline", name, "room", room, "error", err)
	}
}

// bufferStore is the connection to the server holding the buffers' queues,
// and that server when it runs in this process.
type bufferStore struct {
	srv *spool.Server // nil: an external server (buffers.connection)
	nc  *nats.Conn
	fp  string // the buffers: keys (and connection) it was opened with
}

func (b *bufferStore) close() {
	b.nc.Close()
	if b.srv != nil {
		_ = b.srv.Close()
	}
}

// storeFingerprint is what, changed, makes the store restart.
func storeFingerprint(cfg *Config) string {
	fp := fmt.Sprintf("%+v", cfg.Buffers)
	if c, ok := cfg.Connections[cfg.Buffers.Connection]; ok {
		fp += fmt.Sprintf("%+v", c.Broker)
	}
	return fp
}

// bufferStore returns the store's connection, starting the embedded server
// or dialling buffers.connection on first use. Called with e.mu held.
func (e *Engine) bufferStore(cfg *Config) (*nats.Conn, error) {
	fp := storeFingerprint(cfg)
	if e.store != nil {
		if e.store.fp != fp {
			return nil, errors.New("the buffers: keys changed while buffered pipelines run; restart loombridge to move the store")
		}
		return e.store.nc, nil
	}
	b := &bufferStore{fp: fp}
	if name := cfg.Buffers.Connection; name != "" {
		dial, ok := cfg.Connections[name].Broker.(NATSConnector)
		if !ok {
			return nil, fmt.Errorf("connection %s cannot hold buffers (want type nats)", name)
		}
		nc, err := dial.ConnectNATS()
		if err != nil {
			return nil, fmt.Errorf("connection %s: %w", name, err)
		}
		b.nc = nc
	} else {
		srv, err := spool.StartServer(spool.ServerConfig{
			Dir: cfg.Buffers.Dir, SyncAlways: cfg.Buffers.syncAlways, SyncInterval: cfg.Buffers.syncInterval,
			Logger: e.logger.With("buffers", "embedded"),
		})
		if err != nil {
			return nil, err
		}
		nc, err := srv.Connect()
		if err != nil {
			_ = srv.Close()
			return nil, err
		}
		b.srv, b.nc = srv, nc
	}
	e.store = b
	e.logger.Info("buffer store open", "store", cfg.Buffers.describe())
	return b.nc, nil
}

// closeStore closes the store when keep is nil or has no buffered pipeline
// with the same buffers: keys. Called with e.mu held, after the pipelines
// using it stopped.
func (e *Engine) closeStore(keep *Config) {
	if e.store == nil {
		return
	}
	if keep != nil && storeFingerprint(keep) == e.store.fp {
		for _, pl := range keep.Pipelines {
			if pl.Buffer != nil {
				return
			}
		}
	}
	e.store.close()
	e.store = nil
}
