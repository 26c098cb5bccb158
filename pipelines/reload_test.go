package pipelines_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
)

// Reload while messages flow: the changed pipeline restarts with its new
// config; the untouched one runs on and loses and duplicates nothing (its
// generator counts 1, 2, 3, ... and the file must hold exactly that).
func TestReloadRestartsOnlyChangedPipelines(t *testing.T) {
	dir := t.TempDir()
	const base = `
log: {stats_interval: 0}
pipelines:
  steady:
    from: {type: generate, interval: 1ms, payload: '{{.N}}'}
    to: {f: {type: file, dir: @DIR@, topic: steady, fsync: never}}
  changing:
    from: {type: generate, interval: 1ms, payload: '{{.N}}'}
    to: {f: {type: file, dir: @DIR@, topic: @TOPIC@, fsync: never}}
`
	e := startEngine(t, parse(t, fill(base, "@DIR@", dir, "@TOPIC@", "before")))
	count := func(topic string) int { return len(readLines(t, filepath.Join(dir, topic+".jsonl"))) }
	waitFor(t, "messages before the reload", func() bool { return count("steady") >= 100 && count("before") >= 100 })

	if err := e.Apply(context.Background(), parse(t, fill(base, "@DIR@", dir, "@TOPIC@", "after"))); err != nil {
		t.Fatal(err)
	}
	atReload := count("steady")
	waitFor(t, "messages after the reload", func() bool { return count("after") >= 100 && count("steady") >= atReload+100 })
	closeEngine(t, e)

	for topic, restarted := range map[string]bool{"steady": false, "after": true} {
		lines := readLines(t, filepath.Join(dir, topic+".jsonl"))
		for i, l := range lines {
			if l.Payload != strconv.Itoa(i+1) {
				t.Fatalf("%s: line %d holds message %s: lost or duplicated across the reload (restarted: %v)", topic, i+1, l.Payload, restarted)
			}
		}
	}
	if n := count("before"); n == 0 {
		t.Error("the changed pipeline wrote nothing before the reload")
	}
	if st := e.Stats()["steady"]; st.Received < uint64(atReload) {
		t.Errorf("steady's counts restarted: %+v", st)
	}
}
