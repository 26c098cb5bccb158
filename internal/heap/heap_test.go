package heap

import (
	"runtime"
	"testing"
)

func numGC() uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC
}

func TestCollectionDueForAnAllocationPastTheGoal(t *testing.T) {
	if !CollectionDue(1 << 40) {
		t.Error("a 1 TiB allocation is not past the heap goal")
	}
	runtime.GC()
	if CollectionDue(1) {
		t.Error("one byte right after a collection is past the trigger")
	}
}

func TestMakeCollectsOnlyForLargeDueAllocations(t *testing.T) {
	runtime.GC()
	before := numGC()
	if b := Make(1 << 10); len(b) != 1<<10 {
		t.Fatalf("len %d", len(b))
	}
	if numGC() != before {
		t.Error("a small allocation ran a collection")
	}
	var keep [][]byte
	for range 8 { // garbage enough that a Large allocation is due
		keep = append(keep, make([]byte, Large))
	}
	keep = nil
	before = numGC()
	if b := Make(4 * Large); len(b) != 4*Large {
		t.Fatalf("len %d", len(b))
	}
	if numGC() == before {
		t.Error("a large allocation past the trigger ran no collection first")
	}
	_ = keep
}

func TestCollectIfGrown(t *testing.T) {
	runtime.GC()
	before := numGC()
	CollectIfGrown(1 << 40)
	if numGC() != before {
		t.Error("collected with the heap within the slack")
	}
	for range 4 {
		_ = make([]byte, Large)
	}
	CollectIfGrown(0)
	if numGC() == before {
		t.Error("no collection with the heap past the slack")
	}
}
