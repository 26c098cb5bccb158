package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
	"github.com/loombridge/loombridge/internal/health"
	"github.com/loombridge/loombridge/internal/testkit"
	"github.com/loombridge/loombridge/pipelines"
)

// observed is an engine whose log is kept and whose /status and /metrics
// are served on a real listener, as loombridge run serves them.
type observed struct {
	e    *pipelines.Engine
	log  *testkit.Buffer
	addr string
}

func startObserved(t *testing.T, cfg *pipelines.Config) *observed {
	t.Helper()
	o := &observed{log: &testkit.Buffer{}}
	o.e = pipelines.NewEngine(pipelines.EngineOptions{Logger: slog.New(slog.NewTextHandler(o.log, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err := o.e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeEngine(t, o.e) })
	reg := prometheus.NewRegistry()
	reg.MustRegister(o.e.Collector())
	hs, err := health.Start("127.0.0.1:0", o.e, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = hs.Close(ctx)
	})
	o.addr = hs.Addr()
	return o
}

func (o *observed) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + o.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// status decodes /status into generic JSON, to look at its keys as sent.
func (o *observed) status(t *testing.T) map[string]any {
	t.Helper()
	var st map[string]any
	if body := o.get(t, "/status"); json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("/status is no JSON object: %s", body)
	}
	return st
}

func pipelineStatuses(st map[string]any) map[string]any {
	m, _ := st["pipelines"].(map[string]any)
	return m
}

// A pipeline removed by a reload leaves nothing: no counts in Stats, no entry
// in /status, no series in /metrics (pipeline_up 0 would raise false alerts),
// no stats log line; the pipeline kept runs on.
func TestReloadRemovedPipelineLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	const base = `
log: {stats_interval: 20ms}
pipelines:
  keep:
    from: {type: generate, interval: 1ms}
    to: {f: {type: file, dir: @DIR@, topic: keep, fsync: never}}
`
	const gone = `
  gone:
    from: {type: generate, interval: 1ms}
    to: {f: {type: file, dir: @DIR@, topic: gone, fsync: never}}
`
	o := startObserved(t, parse(t, fill(base+gone, "@DIR@", dir)))
	waitFor(t, "both pipelines' messages", func() bool {
		st := o.e.Stats()
		return st["keep"].Done > 10 && st["gone"].Done > 10
	})
	if m := o.get(t, "/metrics"); !strings.Contains(m, `loombridge_pipeline_up{pipeline="gone"} 1`) {
		t.Fatalf("before the reload, /metrics lacks gone's pipeline_up:\n%s", m)
	}
	if err := o.e.Apply(context.Background(), parse(t, fill(base, "@DIR@", dir))); err != nil {
		t.Fatal(err)
	}
	atReload := len(o.log.String())
	// Two stats rounds after the reload: the stats log no longer names gone.
	waitFor(t, "stats lines after the reload", func() bool {
		return strings.Count(o.log.String()[atReload:], `msg="pipeline stats" pipeline=keep`) >= 2
	})
	if st := o.e.Stats(); len(st) != 1 || st["keep"].Done == 0 {
		t.Errorf("Stats after the reload: %+v, want keep only", st)
	}
	if ps := pipelineStatuses(o.status(t)); len(ps) != 1 || ps["keep"] == nil {
		t.Errorf("/status pipelines after the reload: %v, want keep only", ps)
	}
	if m := o.get(t, "/metrics"); strings.Contains(m, `pipeline="gone"`) {
		t.Errorf("/metrics still has series of the removed pipeline:\n%s", grepLines(m, `pipeline="gone"`))
	}
	// A round that read the counts just before the reload may still be
	// written after it: it ends with keep's line (names are sorted, gone <
	// keep), so look after the first keep line.
	l := o.log.String()[atReload:]
	l = l[strings.Index(l, `msg="pipeline stats" pipeline=keep`):]
	if strings.Contains(l, `msg="pipeline stats" pipeline=gone`) {
		t.Errorf("the removed pipeline's stats are still logged:\n%s", grepLines(l, "pipeline=gone"))
	}
	if p := o.e.Ready(); len(p) != 0 {
		t.Errorf("not ready after the reload: %q", p)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A pipeline restarted by a reload keeps its counts (a Prometheus counter
// falls back only when the process restarts), says so in the log, and /status
// counts the restart.
func TestReloadRestartKeepsCounts(t *testing.T) {
	dir := t.TempDir()
	const base = `
log: {stats_interval: 0}
pipelines:
  p:
    from: {type: generate, interval: 1ms}
    to: {f: {type: file, dir: @DIR@, topic: @TOPIC@, fsync: never}}
`
	o := startObserved(t, parse(t, fill(base, "@DIR@", dir, "@TOPIC@", "before")))
	waitFor(t, "messages before the reload", func() bool { return o.e.Stats()["p"].Done >= 50 })
	if err := o.e.Apply(context.Background(), parse(t, fill(base, "@DIR@", dir, "@TOPIC@", "after"))); err != nil {
		t.Fatal(err)
	}
	before := len(readLines(t, filepath.Join(dir, "before.jsonl")))
	waitFor(t, "messages after the reload", func() bool { return len(readLines(t, filepath.Join(dir, "after.jsonl"))) >= 20 })
	after := len(readLines(t, filepath.Join(dir, "after.jsonl")))
	st := o.e.Stats()["p"]
	if st.Done < uint64(before+after) || st.Sinks["f"].Published < uint64(before+after) {
		t.Errorf("counts after the restart: done %d, published %d; want at least the %d+%d lines written", st.Done, st.Sinks["f"].Published, before, after)
	}
	ps, _ := pipelineStatuses(o.status(t))["p"].(map[string]any)
	if ps["restarts"] != 1.0 || ps["state"] != "running" {
		t.Errorf("/status of the restarted pipeline: %v", ps)
	}
	if !regexp.MustCompile(`msg="pipeline started" pipeline=p .*restart=1 counts="kept from before the restart"`).MatchString(o.log.String()) {
		t.Errorf("the restart is not logged:\n%s", grepLines(o.log.String(), "pipeline started"))
	}
}

// A pipeline writing a room of an embedded router that no pipeline reads is
// warned of at start, in /status and in /metrics (the router discards those
// messages); a reload that adds a reader clears it. A room that is read is
// not warned of.
func TestEmptyRoomWarning(t *testing.T) {
	dir := t.TempDir()
	const base = `
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  feed:
    from: {type: generate, interval: 1ms}
    to:
      read: {type: loom, connection: local, room: r}
      lonely: {type: loom, connection: local, room: nobody}
  reader:
    from: {type: loom, connection: local, room: r}
    to: {f: {type: file, dir: @DIR@, topic: r, fsync: never}}
`
	o := startObserved(t, parse(t, fill(base, "@DIR@", dir)))
	warn := `level=WARN msg="a pipeline writes a room of the embedded router that no pipeline reads: the router discards its messages" pipeline=feed sink=to.lonely connection=local room=nobody`
	if l := o.log.String(); !strings.Contains(l, warn) || strings.Count(l, "level=WARN msg=\"a pipeline writes a room") != 1 {
		t.Errorf("want one warning at start, for room nobody:\n%s", grepLines(l, "level=WARN"))
	}
	srv, _ := o.e.EmbeddedServer("local")
	waitFor(t, "messages discarded in the unread room", func() bool { return srv.RoomStats("nobody").Discarded > 0 })
	st := o.status(t)
	rooms, _ := st["empty_rooms"].([]any)
	warnings, _ := st["warnings"].([]any)
	if len(rooms) != 1 || fmt.Sprint(rooms[0]) != "map[connection:local pipeline:feed room:nobody sink:to.lonely]" || len(warnings) != 1 ||
		!strings.Contains(fmt.Sprint(warnings[0]), `to.lonely writes room "nobody" of the embedded connection local, which no pipeline reads`) {
		t.Errorf("/status empty_rooms %v, warnings %v", rooms, warnings)
	}
	m := o.get(t, "/metrics")
	if !strings.Contains(m, `loombridge_unread_room{connection="local",pipeline="feed",room="nobody",sink="to.lonely"} 1`+"\n") || strings.Contains(m, `room="r"`) {
		t.Errorf("/metrics unread rooms:\n%s", grepLines(m, "unread_room"))
	}

	withReader := base + `
  late:
    from: {type: loom, connection: local, room: nobody}
    to: {f: {type: file, dir: @DIR@, topic: nobody, fsync: never}}
`
	if err := o.e.Apply(context.Background(), parse(t, fill(withReader, "@DIR@", dir))); err != nil {
		t.Fatal(err)
	}
	st = o.status(t)
	if st["empty_rooms"] != nil || st["warnings"] != nil {
		t.Errorf("after a reader came: empty_rooms %v, warnings %v", st["empty_rooms"], st["warnings"])
	}
	if m := o.get(t, "/metrics"); strings.Contains(m, "loombridge_unread_room{") {
		t.Errorf("after a reader came, /metrics still has:\n%s", grepLines(m, "unread_room"))
	}
	waitFor(t, "messages in the room now read", func() bool { return len(readLines(t, filepath.Join(dir, "nobody.jsonl"))) > 0 })
}

// A webhook sink whose every message its endpoint refused, and which it put
// in the dead letters itself, published none: the sink's dead_lettered says
// what became of them.
func TestWebhookDeadLettersAreNotPublished(t *testing.T) {
	o, dir := startDeadLetteringWebhook(t)
	st := o.e.Stats()["p"]
	if hook := st.Sinks["hook"]; hook.Published != 0 || hook.DeadLettered != 3 {
		t.Errorf("webhook sink: %+v, want published 0 and dead_lettered 3", hook)
	}
	if st.DeadLettered != 3 || st.Sinks["file"].Published != 3 {
		t.Errorf("pipeline: %+v", st)
	}
	if n := len(readLines(t, filepath.Join(dir, "dead.jsonl"))); n != 3 {
		t.Errorf("%d dead letters written, want 3", n)
	}
	m := o.get(t, "/metrics")
	for _, w := range []string{
		`loombridge_sink_published_total{pipeline="p",sink="hook"} 0`,
		`loombridge_sink_dead_lettered_total{pipeline="p",sink="hook"} 3`,
		`loombridge_sink_published_total{pipeline="p",sink="file"} 3`,
		`loombridge_sink_dead_lettered_total{pipeline="p",sink="file"} 0`,
	} {
		if !strings.Contains(m, w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// startDeadLetteringWebhook runs 3 messages into a webhook whose endpoint
// always answers 500 and a file, and waits until all 3 are dead-lettered.
func startDeadLetteringWebhook(t *testing.T) (*observed, string) {
	dir := t.TempDir()
	_, hook := newFlakyReceiver(t, -1)
	o := startObserved(t, parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  p:
    from: {type: generate, interval: 0, count: 3}
    to:
      hook:
        type: webhook
        endpoints:
          - {name: down, url: @URL@, retry: {initial_interval: 1ms, max_interval: 2ms, max_attempts: 2}}
      file: {type: file, dir: @DIR@, topic: all, fsync: never}
      room: {type: loom, connection: local, room: r}
    dead_letter: {type: file, dir: @DIR@, topic: dead, fsync: never}
  reader:
    from: {type: loom, connection: local, room: r}
    to: {f: {type: file, dir: @DIR@, topic: r, fsync: never}}
`, "@URL@", hook.URL, "@DIR@", dir)))
	waitFor(t, "3 messages done, 3 dead-lettered", func() bool {
		st := o.e.Stats()["p"]
		return st.Done == 3 && st.DeadLettered == 3
	})
	return o, dir
}

// /status is JSON in the documented shape (pipelines.Status, docs/status.md):
// snake_case keys everywhere, adapters' stats included, and durations in
// seconds under keys ending in _seconds, never Go's nanoseconds.
func TestStatusJSONShape(t *testing.T) {
	o, _ := startDeadLetteringWebhook(t)
	st := o.status(t)
	keys := func(v any) []string {
		m, _ := v.(map[string]any)
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	check := func(what string, got []string, want string) {
		t.Helper()
		if strings.Join(got, " ") != want {
			t.Errorf("%s keys: %s\nwant: %s", what, strings.Join(got, " "), want)
		}
	}
	check("top-level", keys(st), "config pipelines ready")
	check("config", keys(st["config"]), "applied_at hash")
	p := pipelineStatuses(st)["p"].(map[string]any)
	check("pipeline", keys(p), "adapters restarts started_at state stats")
	stats := p["stats"].(map[string]any)
	check("stats", keys(stats), "dead_lettered done expr_errors failed filtered max_latency_seconds received sinks unmatched")
	check("sink", keys(stats["sinks"].(map[string]any)["hook"]), "dead_lettered failed published retried")
	check("adapters", keys(p["adapters"]), "to.hook to.room")
	check("webhook adapter", keys(p["adapters"].(map[string]any)["to.hook"]), "dead_lettered delivered endpoints retried")
	if room, _ := p["adapters"].(map[string]any)["to.room"].(map[string]any); room["buffered_bytes"] == nil || room["sent"] != 3.0 {
		t.Errorf("Loom publisher's stats: %v", room)
	}
	if lat, ok := stats["max_latency_seconds"].(float64); !ok || lat <= 0 || lat > 60 {
		t.Errorf("max_latency_seconds = %v, want seconds (a webhook's few ms)", stats["max_latency_seconds"])
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(p["started_at"])); err != nil {
		t.Errorf("started_at %v: %v", p["started_at"], err)
	}
	// Every key, at any depth, is snake_case or a name from the
	// configuration (lower case too).
	key := regexp.MustCompile(`^[a-z0-9_.-]+$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t2 := v.(type) {
		case map[string]any:
			for k, e := range t2 {
				if !key.MatchString(k) {
					t.Errorf("/status key %s.%s is not snake_case", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range t2 {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("", st)
}

// The pipelines feeding a Loom room wait for its consumer, on a reload too:
// restarting the pipeline that reads the room restarts the pipeline feeding
// it (stopped first, started last), so no message is sent to the room while
// nobody consumes it, where the router would discard it. The feeder reads a
// file with an offset, so its restart loses nothing either: every message of
// the generator arrives.
func TestReloadOfAReaderRestartsItsFeeders(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	const base = `
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  gen:
    from: {type: generate, interval: 1ms, count: 3000, payload: '{{.N}}'}
    to: {f: {type: file, dir: @DIR@, topic: in, fsync: never}}
  feed:
    from: {type: file, dir: @DIR@, topic: in, follow: true, poll_interval: 5ms}
    to: {l: {type: loom, connection: local, room: r}}
  read:
    from: {type: loom, connection: local, room: r}
    concurrency: @C@
    to: {f: {type: file, dir: @DIR@, topic: out, fsync: never}}
`
	o := startObserved(t, parse(t, fill(base, "@DIR@", dir, "@C@", "8")))
	out := func() map[string]bool {
		got := map[string]bool{}
		for _, l := range readLines(t, filepath.Join(dir, "out.jsonl")) {
			got[l.Payload] = true
		}
		return got
	}
	waitFor(t, "messages through the room before the reload", func() bool { return len(out()) >= 300 })
	if err := o.e.Apply(context.Background(), parse(t, fill(base, "@DIR@", dir, "@C@", "9"))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(o.log.String(), `msg="reloading configuration" changed=[read] removed=[] feeders_restarted=[feed]`) {
		t.Errorf("the feeder is not restarted with its reader:\n%s", grepLines(o.log.String(), "reloading"))
	}
	waitFor(t, "the generator to finish", func() bool { return o.e.Stats()["gen"].Done == n })
	waitLong(t, "every message in the reader's file", time.Minute, func() bool { return len(out()) == n })
	if srv, _ := o.e.EmbeddedServer("local"); srv.RoomStats("r").Discarded != 0 {
		t.Errorf("the router discarded %d messages of the room", srv.RoomStats("r").Discarded)
	}
}

// The stats lines name pipelines, and each line its sinks, in sorted order,
// the same every time (they came in map order).
func TestStatsLogOrderIsStable(t *testing.T) {
	dir := t.TempDir()
	sinks := `{z: {type: file, dir: @DIR@, topic: z, fsync: never}, b: {type: file, dir: @DIR@, topic: b, fsync: never}, m: {type: file, dir: @DIR@, topic: m, fsync: never}, a: {type: file, dir: @DIR@, topic: a, fsync: never}}`
	o := startObserved(t, parse(t, fill(`
log: {stats_interval: 10ms}
pipelines:
  zeta: {from: {type: generate, interval: 0, count: 1}, to: @SINKS@}
  alpha: {from: {type: generate, interval: 0, count: 1}, to: @SINKS@}
  mid: {from: {type: generate, interval: 0, count: 1}, to: @SINKS@}
  beta: {from: {type: generate, interval: 0, count: 1}, to: @SINKS@}
`, "@SINKS@", fill(sinks, "@DIR@", dir))))
	line := regexp.MustCompile(`msg="pipeline stats" pipeline=(\w+) .*to\.(\w)=\d+ to\.(\w)=\d+ to\.(\w)=\d+ to\.(\w)=\d+`)
	var order []string
	waitFor(t, "20 stats lines", func() bool {
		order = order[:0]
		for _, m := range line.FindAllStringSubmatch(o.log.String(), -1) {
			if got := strings.Join(m[2:], ""); got != "abmz" {
				t.Fatalf("sinks in order %s: %s", got, m[0])
			}
			order = append(order, m[1])
		}
		return len(order) >= 20
	})
	for i, name := range order[:20] {
		if want := []string{"alpha", "beta", "mid", "zeta"}[i%4]; name != want {
			t.Fatalf("stats line %d names %s, want %s: %v", i, name, want, order[:20])
		}
	}
}

// Readers start before writers along a chain of rooms: with a room already
// fed by someone else (here another engine), the pipeline forwarding it to a
// second room must not start before that room's reader, or the server
// discards what it forwards meanwhile. Name order would start a-forward first.
func TestStartOrderFollowsChainsOfRooms(t *testing.T) {
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() }) // after the engines' close (cleanups run last first)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	conns := fill(`
log: {stats_interval: 0}
connections:
  ext: {addr: "@LOOM@", tls: {ca_file: "@CA@"}}
`, "@LOOM@", srv.Addr(), "@CA@", ca)
	startEngine(t, parse(t, conns+`
pipelines:
  gen:
    from: {type: generate, interval: 1ms}
    to: {l: {type: loom, connection: ext, room: first}}
`))
	waitFor(t, "the producer to feed room first", func() bool { return srv.RoomStats("first").Received > 50 })
	e := startEngine(t, parse(t, fill(conns+`
pipelines:
  a-forward:
    from: {type: loom, connection: ext, room: first}
    to: {l: {type: loom, connection: ext, room: second}}
  b-read:
    from: {type: loom, connection: ext, room: second}
    to: {f: {type: file, dir: @DIR@, topic: out, fsync: never}}
`, "@DIR@", dir)))
	waitFor(t, "messages through both rooms", func() bool { return e.Stats()["b-read"].Done > 200 })
	if d := srv.RoomStats("second").Discarded; d != 0 {
		t.Errorf("room second discarded %d messages: its reader started after the pipeline feeding it", d)
	}
}
