package loom

import (
	"bytes"
	"runtime"
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
