// Package heap runs a garbage collection early around large allocations, so
// that a process moving large payloads does not hold two of them at once.
//
// A large buffer is usually allocated while the previous one, now garbage,
// is still uncollected: the allocation pushes the heap past the point where
// the collector starts, and the process holds both (and, until they are
// swept, the pages of a third). When an allocation would start a collection
// anyway, Make runs it first, so the new buffer reuses the freed pages: a
// collection that was due, moved before the allocation instead of after it.
package heap

import (
	"runtime"
	"runtime/metrics"
)

// Large is the smallest allocation Make may collect garbage for. Below it,
// the collector's slack is small next to the fixed costs.
const Large = 8 << 20

// Make allocates n bytes, which the caller overwrites whole, collecting
// first when n is Large or more and a collection is due.
func Make(n int) []byte {
	if n >= Large && CollectionDue(uint64(n)) {
		runtime.GC()
	}
	return make([]byte, n)
}

// CollectionDue reports whether allocating n more bytes would take the heap
// past the earliest point at which the pacer starts a collection: the live
// heap of the last one plus 70 % of the way to the heap goal (the runtime's
// lowest trigger).
func CollectionDue(n uint64) bool {
	s := [...]metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/goal:bytes"},
	}
	metrics.Read(s[:])
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	heap, live, goal := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	if goal <= live {
		return true
	}
	return heap+n > live+(goal-live)*7/10
}

// CollectIfGrown collects when the heap's objects exceed the live heap of
// the last collection by more than slack: for code that makes much
// short-lived garbage while a large buffer is live, where the pacer would
// let the heap grow to twice the live heap first.
func CollectIfGrown(slack uint64) {
	s := [...]metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s[:])
	if s[0].Value.Kind() == metrics.KindUint64 && s[1].Value.Kind() == metrics.KindUint64 &&
		s[0].Value.Uint64() > s[1].Value.Uint64()+slack {
		runtime.GC()
	}
}
