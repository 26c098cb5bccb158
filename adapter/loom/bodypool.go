package loom

import (
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// Bodies between minPooledBody and collectFirstBytes are recycled: a Watermill
// message owns its payload, and a handler may keep it (or pass it to a publisher that
// keeps it) after Ack, so no code of ours can say when a body is free. The garbage
// collector can: each pooled body carries a finalizer, which runs only once nothing
// reaches any byte of it, and puts the buffer back in a pool for the next body of its
// size class. Without this, every body is fresh memory: zeroed, or faulted in page by
// page after the scavenger returned it, then written cold, with a collection every
// few messages; at 1 MiB that cost the subscriber about a tenth of its throughput
// (BENCHMARKS.md). Smaller bodies come from the allocator's size classes, which are
// cheap; larger ones take the collect-first path of makeBody, which bounds the
// memory a pool would hold.
const (
	minPooledShift = 15 // bodies above 32 KiB, where the allocator's size classes end
	minPooledBody  = 1<<minPooledShift + 1
	// classesPerDoubling size classes between each power of two, so a body wastes at
	// most a quarter of its size.
	classesPerDoubling = 4
)

// bodyClasses are the pools, one per size class, for bodies from minPooledBody up to
// (not including) collectFirstBytes.
var bodyClasses = newBodyClasses()

type bodyClassPool struct {
	size    int
	pool    sync.Pool   // of *byte: the start of a buffer of size bytes
	recycle func(*byte) // the finalizer of this class's buffers, made once
}

func newBodyClasses() []bodyClassPool {
	cs := make([]bodyClassPool, (bits.Len(uint(collectFirstBytes-1))-minPooledShift)*classesPerDoubling)
	for i := range cs {
		c := &cs[i]
		c.size = classSize(i)
		c.recycle = func(p *byte) { c.pool.Put(p) }
	}
	return cs
}

// bodyClass returns the class of an n-byte body, minPooledBody <= n <= collectFirstBytes:
// the smallest of 1.25, 1.5, 1.75 and 2 times 2^k that holds n, where 2^k < n <= 2^(k+1).
func bodyClass(n int) int {
	k := bits.Len(uint(n-1)) - 1
	quarter := (n - 1 - 1<<k) >> (k - 2) // 0..3
	return (k-minPooledShift)*classesPerDoubling + quarter
}

// classSize is the buffer size of class c.
func classSize(c int) int {
	k := minPooledShift + c/classesPerDoubling
	return 1<<k + (c%classesPerDoubling+1)<<(k-2)
}

// pooledBody returns an n-byte body whose buffer is recycled once it is garbage. Its
// bytes are not zeroed: the caller overwrites all n. The capacity is n, so an append
// by the message's owner never writes into the buffer's spare bytes.
func pooledBody(n int) []byte {
	c := &bodyClasses[bodyClass(n)]
	var buf []byte
	if p, _ := c.pool.Get().(*byte); p != nil {
		buf = unsafe.Slice(p, c.size)
	} else {
		buf = make([]byte, c.size)
	}
	runtime.SetFinalizer(&buf[0], c.recycle)
	return buf[:n:n]
}
