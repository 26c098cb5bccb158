package pipelines_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loombridge/loombridge/pipelines"
)

// Generate -> Loom (embedded router) -> buffer -> file + a webhook failing
// each message's first two attempts: both sinks get every message once,
// the store counts them, and the queues drain to zero in /status and
// /metrics.
func TestBufferedPipelineDeliversToEverySink(t *testing.T) {
	const n = 300
	dir, buf := t.TempDir(), t.TempDir()
	recv, srv := newFlakyReceiver(t, 2)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
buffers: {dir: @BUF@}
connections:
  local: {embedded: true}
pipelines:
  feed:
    from: {type: generate, interval: 0, count: @N@, key: 'k{{mod .N 7}}', payload: 'msg {{.N}}', in_flight: 16}
    to:
      room: {type: loom, connection: local, room: buffered, format: envelope}
  bridge:
    from: {type: loom, connection: local, room: buffered}
    buffer: {}
    to:
      archive: {type: file, dir: @DIR@, fsync: never}
      hooks:
        type: webhook
        endpoints:
          - {name: flaky, url: @URL@, retry: {initial_interval: 1ms, max_interval: 5ms}, breaker: {failures: 1000000}}
    retry: {initial_interval: 1ms, max_interval: 10ms}
`, "@N@", fmt.Sprint(n), "@DIR@", dir, "@URL@", srv.URL, "@BUF@", buf))
	e := startEngine(t, cfg)
	archive := filepath.Join(dir, "buffered.jsonl")
	waitFor(t, "every message in the file and at the webhook", func() bool {
		return len(readLines(t, archive)) >= n && recv.count() >= n
	})
	var st pipelines.Status
	waitFor(t, "the queues to drain", func() bool {
		b, _ := json.Marshal(e.Status())
		st = pipelines.Status{}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		bs := st.Pipelines["bridge"].Buffer
		return bs != nil && bs.Queues["archive"].Messages == 0 && bs.Queues["hooks"].Messages == 0 && bs.Stored == n
	})
	if !st.Ready {
		t.Errorf("not ready: %v", st.Problems)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.Collector())
	if got := metricValue(t, reg, "loombridge_buffer_stored_total", "bridge"); got != n {
		t.Errorf("loombridge_buffer_stored_total = %v, want %d", got, n)
	}
	closeEngine(t, e)

	seen := map[string]int{}
	for _, l := range readLines(t, archive) {
		seen[l.UUID]++
		if l.Key == "" || l.Metadata["loom_key"] != l.Key {
			t.Errorf("message %s: key %q, metadata %v: the Loom key did not cross the buffer", l.UUID, l.Key, l.Metadata)
		}
	}
	for id, c := range seen {
		if c != 1 || recv.accepted[id] != 1 {
			t.Errorf("message %s: %d times in the file, accepted %d times by the webhook", id, c, recv.accepted[id])
		}
	}
	if len(seen) != n || len(recv.accepted) != n {
		t.Errorf("file has %d messages, webhook %d; want %d each", len(seen), len(recv.accepted), n)
	}
	if got := e.Stats()["bridge"].Sinks["hooks"].Published; got != n {
		t.Errorf("hooks published %d, want %d", got, n)
	}
}

// metricValue returns the counter or gauge name{pipeline=...} (the first
// such series).
func metricValue(t *testing.T, reg *prometheus.Registry, name, pipeline string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "pipeline" && l.GetValue() == pipeline {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{pipeline=%q}", name, pipeline)
	return 0
}
