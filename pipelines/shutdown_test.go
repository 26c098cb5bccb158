package pipelines_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
)

// A graceful stop in the middle of a 10,000-message run: every message the
// source acked (the file source's offset says how many) reached every sink,
// the one behind a Loom hop included. Counted from the sinks' own files.
func TestGracefulStopLosesNothingAcked(t *testing.T) {
	const n = 10000
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	var input []byte
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("id-%05d", i)
		m := message.NewMessage(ids[i], []byte("payload "+strconv.Itoa(i)))
		m.Metadata.Set("loom_key", "k"+strconv.Itoa(i%13))
		l, err := file.MarshalLine(m, "loom_key")
		if err != nil {
			t.Fatal(err)
		}
		input = append(input, l...)
	}
	if err := os.WriteFile(filepath.Join(in, "src.jsonl"), input, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fill(`
log: {stats_interval: 0}
shutdown_timeout: 2m
connections:
  local: {embedded: true}
pipelines:
  src:
    from: {type: file, dir: @IN@, topic: src}
    to:
      copy: {type: file, dir: @OUT@, topic: copy, fsync: never}
      room: {type: loom, connection: local, room: t, format: envelope}
  dst:
    from: {type: loom, connection: local, room: t}
    to:
      through: {type: file, dir: @OUT@, topic: through, fsync: never}
`, "@IN@", in, "@OUT@", out))
	e := startEngine(t, cfg)
	waitFor(t, "the run to be under way", func() bool { return len(readLines(t, filepath.Join(out, "through.jsonl"))) >= 300 })
	closeEngine(t, e)

	b, err := os.ReadFile(filepath.Join(in, "src.jsonl.offset"))
	if err != nil {
		t.Fatal(err)
	}
	var off struct{ Line int64 }
	if err := json.Unmarshal(b, &off); err != nil {
		t.Fatal(err)
	}
	if off.Line == 0 || off.Line == n {
		t.Fatalf("the source acked %d of %d lines: the stop did not come mid-run", off.Line, n)
	}
	for _, sink := range []string{"copy", "through"} {
		got := map[string]int{}
		for _, l := range readLines(t, filepath.Join(out, sink+".jsonl")) {
			got[l.UUID]++
		}
		missing, dups := 0, 0
		for i := range int(off.Line) {
			if got[ids[i]] == 0 {
				missing++
			}
		}
		for _, c := range got {
			dups += c - 1
		}
		if missing > 0 {
			t.Errorf("%s: %d of the %d messages acked at the source are missing", sink, missing, off.Line)
		}
		t.Logf("%s: %d lines for %d acked at the source, %d duplicates", sink, len(got), off.Line, dups)
	}
}
