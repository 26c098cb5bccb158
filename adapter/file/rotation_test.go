package file

import (
	"math"
	"testing"
	"time"
)

// The names the publisher writes are the names the subscriber parses, and
// they sort in rotation order.
func TestRotatedFileNameRoundTrip(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600))
	var prev rotatedName
	for i, seq := range []uint64{1, 2, 10, math.MaxUint64} {
		name := rotatedFileName("t-x", ts, seq)
		r, ok := parseRotated("t-x", name)
		if !ok || r.name != name || r.seq != seq || r.stamp != "20250304T040607.000000008Z" {
			t.Fatalf("parseRotated(%q) = %+v, %v", name, r, ok)
		}
		if len(name)-len("t-x") > maxRotatedSuffix {
			t.Fatalf("%q: suffix longer than maxRotatedSuffix %d", name, maxRotatedSuffix)
		}
		if i > 0 && !prev.before(r) {
			t.Fatalf("%q does not sort after %q", name, prev.name)
		}
		prev = r
	}
	if _, ok := parseRotated("t", rotatedFileName("t-x", ts, 1)); ok {
		t.Fatal("a rotated file of topic t-x taken for one of topic t")
	}
	for _, bad := range []string{"t.jsonl", "t-x.jsonl", "t-20250304T040607.000000008Z-+1.jsonl", "t-20250304T040607.000000008Z-1.json"} {
		if _, ok := parseRotated("t", bad); ok {
			t.Errorf("parseRotated(t, %q) accepted", bad)
		}
	}
	if got := currentFileName("t"); got != "t.jsonl" {
		t.Fatalf("currentFileName = %q", got)
	}
}
