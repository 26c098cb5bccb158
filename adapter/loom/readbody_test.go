package loom

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// chunked encodes body as Loom chunks of at most chunk bytes and the end chunk.
func chunked(body []byte, chunk int) []byte {
	var b []byte
	for len(body) > 0 {
		n := min(chunk, len(body))
		b = binary.AppendUvarint(b, uint64(n))
		b = append(b, body[:n]...)
		body = body[n:]
	}
	return binary.AppendUvarint(b, 0)
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// TestReadBodyAllocatesOnce: a body is read into one buffer of exactly its length,
// whether its size was declared or not (0, unknown), and whatever the chunking; a
// growing buffer would leave spare capacity that the message then holds.
func TestReadBodyAllocatesOnce(t *testing.T) {
	lim := wire.DefaultLimits()
	for _, n := range []int{1, 1000, firstBlock, firstBlock + 1, 3<<20 + 5, 9 << 20} {
		body := patterned(n)
		for _, declared := range []uint64{uint64(n), 0} {
			r := wire.NewBodyReader(bufio.NewReader(bytes.NewReader(chunked(body, 60000))), declared, lim)
			got, err := readBody(r, declared, 64<<20)
			if err != nil {
				t.Fatalf("%d bytes, declared %d: %v", n, declared, err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("%d bytes, declared %d: body differs", n, declared)
			}
			if cap(got) != n {
				t.Fatalf("%d bytes, declared %d: buffer capacity %d, want %d", n, declared, cap(got), n)
			}
		}
	}
}

// TestReadBodyNeverGrowsBeyondDeclared: a body longer than its declared size is
// reported as truncated (a mismatch) after reading on without storing: the buffer
// was sized by the declaration and is never grown. Shorter is truncated too.
func TestReadBodyNeverGrowsBeyondDeclared(t *testing.T) {
	lim := wire.DefaultLimits()
	body := patterned(5 << 20)
	for _, declared := range []uint64{1 << 20, 6 << 20} {
		r := wire.NewBodyReader(bufio.NewReader(bytes.NewReader(chunked(body, 65536))), declared, lim)
		got, err := readBody(r, declared, 64<<20)
		if !errors.Is(err, wire.ErrTruncated) || got != nil {
			t.Fatalf("declared %d, sent %d: got %d bytes, %v; want wire.ErrTruncated", declared, len(body), len(got), err)
		}
		if !r.Done() {
			t.Fatalf("declared %d: the rest of the body was not read: the stream would be misaligned", declared)
		}
	}
}

// TestReadBodyUnknownSizeLimit: a body of unknown size is read up to the limit and
// no further: errTooLarge, with the rest left for the caller to discard.
func TestReadBodyUnknownSizeLimit(t *testing.T) {
	lim := wire.DefaultLimits()
	for _, tc := range []struct {
		n     int
		limit int64
		ok    bool
	}{{1 << 20, 1 << 20, true}, {1<<20 + 1, 1 << 20, false}, {5 << 20, 1 << 20, false}, {100, 100, true}, {101, 100, false}} {
		r := wire.NewBodyReader(bufio.NewReader(bytes.NewReader(chunked(patterned(tc.n), 65536))), 0, lim)
		got, err := readBody(r, 0, tc.limit)
		if tc.ok && (err != nil || len(got) != tc.n) {
			t.Fatalf("%d bytes, limit %d: %d bytes, %v", tc.n, tc.limit, len(got), err)
		}
		if !tc.ok {
			if !errors.Is(err, errTooLarge) {
				t.Fatalf("%d bytes, limit %d: %v, want errTooLarge", tc.n, tc.limit, err)
			}
			if err := r.Discard(); err != nil {
				t.Fatalf("discarding the rest: %v", err)
			}
		}
	}
}
