package loom

import (
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// Bodies from minPooledBody to maxPooledBody are recycled: a Watermill message owns
// its payload, and a handler may keep it (or pass it to a publisher that keeps it)
// after Ack, so no code of ours can say when a body is free. The garbage collector
// can: each pooled body carries a finalizer, which runs only once nothing reaches any
// byte of it, and gives the buffer back for the next body of its size class. Without
// this, every body is fresh memory, zeroed or faulted in page by page, with a
// collection every few messages: receiving 1 MiB bodies took a quarter more CPU
// (BENCHMARKS.md). Smaller bodies come from the allocator's size classes, which are
// cheap; larger ones are plain allocations (makeBody).
//
// The pool owns at most maxPooledBytes of buffers, idle or in use, and every buffer
// it owns comes back to it; beyond that, bodies are plain allocations without a
// finalizer. That bound keeps the memory the pool adds within the fixed 32 MiB of
// the subscriber's memory promise. At most about half of the bodies come from the
// pool whatever its size, since it is refilled only when a collection finds bodies dead;
// a larger pool only makes the heap, and the time between collections, larger.
// Tried and dropped: a finalizer on every body, the surplus dropped (a finalizer
// keeps a dead object one more collection, so the heap doubled), and a pool without
// bound (it grew at every collection: 400 MiB after 2,000 bodies of 1 MiB).
const (
	minPooledShift = 15 // bodies above 32 KiB, where the allocator's size classes end
	minPooledBody  = 1<<minPooledShift + 1
	maxPooledBody  = 1 << 20
	maxPooledBytes = 4 * maxPooledBody
	// classesPerDoubling size classes between each power of two, so a body wastes at
	// most a quarter of its size.
	classesPerDoubling = 4
)

var bodies = newBodyPool()

// bodyPool owns recycled buffers by size class.
type bodyPool struct {
	mu      sync.Mutex
	owned   int           // bytes of the buffers it owns, idle or in use
	idle    [][]*byte     // per class: the starts of its idle buffers
	recycle []func(*byte) // per class: the finalizer of its buffers, made once
}

func newBodyPool() *bodyPool {
	n := (bits.Len(uint(maxPooledBody-1)) - minPooledShift) * classesPerDoubling
	bp := &bodyPool{idle: make([][]*byte, n), recycle: make([]func(*byte), n)}
	for c := range n {
		bp.recycle[c] = func(p *byte) { bp.put(c, p) }
	}
	return bp
}

// get returns a buffer of class c and whether the pool owns it: an idle one, else a
// new one if the pool is below its bound once idle buffers of other classes are let
// go (so a change of body sizes moves the pool along), else a plain allocation.
func (bp *bodyPool) get(c int) ([]byte, bool) {
	size := classSize(c)
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if p := bp.pop(c); p != nil {
		return unsafe.Slice(p, size), true
	}
	for other := len(bp.idle) - 1; other >= 0 && bp.owned+size > maxPooledBytes; other-- {
		for bp.owned+size > maxPooledBytes && bp.pop(other) != nil {
			bp.owned -= classSize(other) // the buffer is garbage now, with no finalizer
		}
	}
	owned := bp.owned+size <= maxPooledBytes
	if owned {
		bp.owned += size
	}
	return make([]byte, size), owned
}

// pop takes an idle buffer of class c off its list, or returns nil. The list's
// backing array keeps no pointer to it, or the buffer would stay reachable and never
// come back.
func (bp *bodyPool) pop(c int) *byte {
	f := bp.idle[c]
	if len(f) == 0 {
		return nil
	}
	p := f[len(f)-1]
	f[len(f)-1] = nil
	bp.idle[c] = f[:len(f)-1]
	return p
}

// put takes back a buffer of class c that nothing reaches any more.
func (bp *bodyPool) put(c int, p *byte) {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	bp.idle[c] = append(bp.idle[c], p)
}

// bodyClass returns the class of an n-byte body, minPooledBody <= n <= maxPooledBody:
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
	c := bodyClass(n)
	buf, owned := bodies.get(c)
	if owned {
		runtime.SetFinalizer(&buf[0], bodies.recycle[c])
	}
	return buf[:n:n]
}
