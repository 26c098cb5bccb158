package loom

import (
	"bytes"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"
)

func TestBodyClassIsTheSmallestThatFits(t *testing.T) {
	for n := minPooledBody; n <= maxPooledBody; n++ {
		c := bodyClass(n)
		if c < 0 || c >= len(bodies.idle) {
			t.Fatalf("bodyClass(%d) = %d, out of [0, %d)", n, c, len(bodies.idle))
		}
		size := classSize(c)
		if size < n || size > n+n/4 {
			t.Fatalf("a %d-byte body gets a %d-byte buffer: want between n and 1.25n", n, size)
		}
		if c > 0 && classSize(c-1) >= n {
			t.Fatalf("a %d-byte body gets class %d (%d bytes), but class %d (%d bytes) holds it", n, c, size, c-1, classSize(c-1))
		}
	}
}

// The safety of the pool: a body is recycled only once nothing reaches it, whether
// its owner kept the whole slice or only a part of it; and recycled it is.
func TestPooledBodyIsRecycledOnlyWhenUnreachable(t *testing.T) {
	const n = 1<<19 + 12345 // a class no other test of this package uses; three fit in the pool
	base := func(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

	whole := pooledBody(n)
	for i := range whole {
		whole[i] = 0xAA
	}
	part := pooledBody(n)
	for i := range part {
		part[i] = 0xBB
	}
	partBase := base(part)
	part = part[n-10 : n-5] // only an inner slice is kept
	for i, b := 0, pooledBody(n); i < n; i++ {
		b[i] = 0x55 // dropped at once
	}

	// A recycled buffer is not zeroed: it still holds the 0x55 of its last body.
	recycled := false
	deadline := time.Now().Add(2 * time.Minute) // generous: finalizers run when they run
	for !recycled && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(time.Millisecond) // let the finalizer goroutine run
		b := pooledBody(n)
		if p := base(b); p == base(whole) || p == partBase {
			t.Fatal("a body still referenced was handed out again")
		}
		recycled = b[0] == 0x55
		for i := range b {
			b[i] = 0x55
		}
	}
	if !recycled {
		t.Fatal("a dropped body was never recycled")
	}
	if !bytes.Equal(whole, bytes.Repeat([]byte{0xAA}, n)) || !bytes.Equal(part, bytes.Repeat([]byte{0xBB}, 5)) {
		t.Fatal("a body still referenced was overwritten")
	}
	runtime.KeepAlive(whole)
	runtime.KeepAlive(part)
}

// A buffer taken from the idle list must not stay referenced by the list's backing
// array: it would then never be found unreachable, and never come back.
func TestTakenBufferLeavesNoReferenceInThePool(t *testing.T) {
	bp := newBodyPool()
	c := bodyClass(100 << 10)
	for range 3 {
		buf, owned := bp.get(c)
		if !owned {
			t.Fatal("an empty pool did not take a buffer")
		}
		bp.put(c, &buf[0])
	}
	for range 3 {
		bp.get(c)
	}
	if rest := bp.idle[c][:cap(bp.idle[c])]; slices.ContainsFunc(rest, func(p *byte) bool { return p != nil }) {
		t.Fatalf("the idle list still points at buffers it handed out: %v", rest)
	}
}

// The pool owns at most maxPooledBytes; when the body sizes change, idle buffers of
// other classes make room for the new ones.
func TestPoolOwnsAtMostItsBoundAndFollowsTheSizes(t *testing.T) {
	bp := newBodyPool()
	big, small := bodyClass(maxPooledBody), bodyClass(300<<10)
	var held []*byte
	for {
		buf, owned := bp.get(big)
		if !owned {
			break
		}
		held = append(held, &buf[0])
	}
	if got := len(held) * classSize(big); got != maxPooledBytes || bp.owned != maxPooledBytes {
		t.Fatalf("the pool took %d bytes of buffers and counts %d, want %d", got, bp.owned, maxPooledBytes)
	}
	if _, owned := bp.get(small); owned {
		t.Fatal("a full pool, every buffer in use, took one more")
	}
	for _, p := range held {
		bp.put(big, p)
	}
	if _, owned := bp.get(small); !owned {
		t.Fatal("idle buffers of another class did not make room for a new size")
	}
	if bp.owned > maxPooledBytes {
		t.Fatalf("the pool owns %d bytes, more than %d", bp.owned, maxPooledBytes)
	}
}
