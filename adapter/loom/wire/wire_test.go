package wire

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func br(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestHelloRoundTrip(t *testing.T) {
	lim := DefaultLimits()
	for _, h := range []Hello{
		{Role: RoleProducer, Name: "p1", Room: "orders", Token: "s3cret"},
		{Role: RoleConsumer},
		{Role: RoleConsumer, Name: strings.Repeat("n", 128), Room: strings.Repeat("r", 128), Token: strings.Repeat("t", 1024)},
	} {
		if err := h.Validate(lim); err != nil {
			t.Fatalf("Validate(%v): %v", h, err)
		}
		got, err := ReadHello(br(AppendHello(nil, h)), lim)
		if err != nil {
			t.Fatalf("ReadHello: %v", err)
		}
		if got != h {
			t.Fatalf("got %v, want %v", got, h)
		}
	}
}

func TestHelloExactBytes(t *testing.T) {
	got := AppendHello(nil, Hello{Role: RoleProducer, Name: "a", Room: "", Token: "xy"})
	want := []byte{'L', 'O', 'O', 'M', 4, 'P', 1, 'a', 0, 2, 'x', 'y'}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

func TestHelloNeverShowsToken(t *testing.T) {
	h := Hello{Role: RoleConsumer, Name: "c", Room: "r", Token: "hunter2"}
	for _, s := range []string{h.String(), h.GoString()} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("token leaked: %s", s)
		}
	}
	long := Hello{Role: RoleConsumer, Token: strings.Repeat("k", 2000)}
	if err := long.Validate(DefaultLimits()); err == nil || strings.Contains(err.Error(), "kkkk") {
		t.Fatalf("Validate: want a limit error without the token, got %v", err)
	}
}

func TestHelloErrors(t *testing.T) {
	lim := DefaultLimits()
	good := AppendHello(nil, Hello{Role: RoleProducer, Name: "n", Room: "r"})
	cases := map[string]struct {
		in   []byte
		want error
		text string
	}{
		"magic":   {append([]byte("LOOP"), good[4:]...), ErrBadHello, "magic"},
		"version": {append(append([]byte("LOOM"), 3), good[5:]...), ErrBadHello, "version"},
		"role":    {append(append([]byte("LOOM"), 4, 'X'), good[6:]...), ErrBadHello, "role"},
		"name":    {append(append([]byte("LOOM"), 4, 'P'), binary.AppendUvarint(nil, 129)...), ErrLimit, "hello name"},
		"short":   {good[:len(good)-1], io.ErrUnexpectedEOF, "hello"},
		"varint":  {append(append([]byte("LOOM"), 4, 'P'), binary.AppendUvarint(nil, MaxVarint+1)...), ErrVarint, "hello name length"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHello(br(c.in), lim)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.text)
			}
		})
	}
}

func TestHeaderRoundTripAndErrors(t *testing.T) {
	lim := DefaultLimits()
	h := Header{Key: "k", Size: 1 << 20, ID: 42}
	got, err := ReadHeader(br(AppendHeader(nil, h)), lim)
	if err != nil || got != h {
		t.Fatalf("got %v %v, want %v", got, err, h)
	}
	if _, err := ReadHeader(br(nil), lim); err != io.EOF {
		t.Fatalf("empty input: got %v, want io.EOF", err)
	}
	if _, err := ReadHeader(br([]byte{0, 0, 0}), lim); !errors.Is(err, ErrEmptyKey) {
		t.Fatalf("empty key: got %v", err)
	}
	if _, err := ReadHeader(br(binary.AppendUvarint(nil, 257)), lim); !errors.Is(err, ErrLimit) {
		t.Fatalf("long key: got %v", err)
	}
	if _, err := ReadHeader(br([]byte{1, 'k'}), lim); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut header: got %v", err)
	}
	if err := (Header{Key: "k", Size: 300 << 20}).Validate(lim); !errors.Is(err, ErrLimit) {
		t.Fatalf("declared size above limit: got %v", err)
	}
}

func TestAckRoundTrip(t *testing.T) {
	b := AppendAck(nil, 7)
	b = append(b, binary.AppendUvarint(binary.AppendUvarint(nil, 9), 3)...) // unknown type
	r := br(b)
	f, err := ReadFrame(r)
	if err != nil || f != (Frame{Type: FrameAck, Value: 7}) {
		t.Fatalf("got %v %v", f, err)
	}
	f, err = ReadFrame(r)
	if err != nil || f != (Frame{Type: 9, Value: 3}) {
		t.Fatalf("got %v %v", f, err)
	}
	if _, err := ReadFrame(r); err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

// message encodes a header and body with the given chunk size.
func message(t testing.TB, key string, body []byte, declared uint64, chunk int) []byte {
	var buf bytes.Buffer
	buf.Write(AppendHeader(nil, Header{Key: key, Size: declared}))
	if _, err := WriteBody(&buf, bytes.NewReader(body), declared, DefaultLimits(), chunk, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBodyRoundTrip(t *testing.T) {
	lim := DefaultLimits()
	for _, size := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20} {
		body := make([]byte, size)
		rand.Read(body)
		for _, declared := range []uint64{0, uint64(size)} {
			for _, chunk := range []int{1 << 10, 64 << 10} {
				r := br(message(t, "key", body, declared, chunk))
				h, err := ReadHeader(r, lim)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(NewBodyReader(r, h.Size, lim))
				if err != nil {
					t.Fatalf("size %d declared %d chunk %d: %v", size, declared, chunk, err)
				}
				if sha256.Sum256(got) != sha256.Sum256(body) {
					t.Fatalf("size %d declared %d chunk %d: body differs", size, declared, chunk)
				}
			}
		}
	}
}

func TestBodyChunkBoundaries(t *testing.T) {
	var buf bytes.Buffer
	if _, err := WriteBody(&buf, bytes.NewReader(make([]byte, 2500)), 2500, DefaultLimits(), 1000, nil); err != nil {
		t.Fatal(err)
	}
	// 1000, 1000, 500, end: varint(1000) is 2 bytes, varint(500) is 2 bytes.
	if want := 2 + 1000 + 2 + 1000 + 2 + 500 + 1; buf.Len() != want {
		t.Fatalf("encoded %d bytes, want %d", buf.Len(), want)
	}
}

func TestBodyTruncated(t *testing.T) {
	lim := DefaultLimits()
	// The server ends a message early when its producer dies: fewer bytes than declared.
	enc := AppendHeader(nil, Header{Key: "k", Size: 10})
	enc = append(enc, 3, 'a', 'b', 'c', 0)
	enc = append(enc, AppendHeader(nil, Header{Key: "next", Size: 1})...)
	enc = append(enc, 1, 'z', 0)
	r := br(enc)
	h, _ := ReadHeader(r, lim)
	body := NewBodyReader(r, h.Size, lim)
	got, err := io.ReadAll(body)
	if !errors.Is(err, ErrTruncated) || string(got) != "abc" {
		t.Fatalf("got %q %v, want abc and ErrTruncated", got, err)
	}
	if !body.Done() {
		t.Fatal("a truncated body that ended with the end chunk leaves the stream usable")
	}
	if h, err := ReadHeader(r, lim); err != nil || h.Key != "next" {
		t.Fatalf("next header: %v %v", h, err)
	}

	// More bytes than declared is a mismatch too.
	r = br(append(AppendHeader(nil, Header{Key: "k", Size: 2}), 3, 'a', 'b', 'c', 0))
	h, _ = ReadHeader(r, lim)
	if _, err := io.ReadAll(NewBodyReader(r, h.Size, lim)); !errors.Is(err, ErrTruncated) {
		t.Fatalf("longer than declared: got %v", err)
	}

	// The stream ending inside the body.
	for _, cut := range [][]byte{{5, 'a', 'b'}, {5, 'a', 'b', 'c', 'd', 'e'}, {0x80}} {
		r = br(cut)
		b := NewBodyReader(r, 0, lim)
		if _, err := io.ReadAll(b); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut %v: got %v, want ErrTruncated", cut, err)
		}
		if b.Done() {
			t.Fatalf("cut %v: Done after a cut stream", cut)
		}
	}
}

func TestBodyLimitsAndDiscard(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxMessage = 100
	lim.MaxChunk = 64
	enc := append([]byte{}, 60)
	enc = append(enc, make([]byte, 60)...)
	enc = append(enc, 60)
	enc = append(enc, make([]byte, 60)...)
	enc = append(enc, 0)
	enc = append(enc, AppendHeader(nil, Header{Key: "after"})...)
	r := br(enc)
	b := NewBodyReader(r, 0, lim)
	if _, err := io.ReadAll(b); !errors.Is(err, ErrLimit) {
		t.Fatalf("got %v, want ErrLimit", err)
	}
	if err := b.Discard(); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if h, err := ReadHeader(r, lim); err != nil || h.Key != "after" {
		t.Fatalf("after discard: %v %v", h, err)
	}
	// A chunk above MaxChunk is a broken stream: Discard cannot skip it.
	b = NewBodyReader(br([]byte{65}), 0, lim)
	if err := b.Discard(); !errors.Is(err, ErrLimit) {
		t.Fatalf("big chunk: got %v", err)
	}
}

func TestWriteBodyRejects(t *testing.T) {
	lim := DefaultLimits()
	var buf bytes.Buffer
	if _, err := WriteBody(&buf, strings.NewReader("abc"), 5, lim, 1024, nil); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("short body: %v", err)
	}
	if bytes.HasSuffix(buf.Bytes(), []byte{0}) {
		t.Fatal("a short body must not be ended: the server would deliver it as whole")
	}
	buf.Reset()
	if _, err := WriteBody(&buf, strings.NewReader("abcdef"), 5, lim, 2, nil); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("long body: %v", err)
	}
	if _, err := WriteBody(&buf, strings.NewReader("a"), 0, lim, 0, nil); err == nil {
		t.Fatal("chunk size 0 accepted")
	}
	lim.MaxMessage = 4
	if _, err := WriteBody(&buf, strings.NewReader("abcdef"), 0, lim, 2, nil); !errors.Is(err, ErrLimit) {
		t.Fatalf("too large: %v", err)
	}
}

// TestDeclaredLengthsAllocateNothing: a peer declaring the largest lengths it can gets
// errors, not allocations.
func TestDeclaredLengthsAllocateNothing(t *testing.T) {
	lim := DefaultLimits()
	huge := binary.AppendUvarint(nil, MaxVarint)
	inputs := [][]byte{
		append(append([]byte("LOOM"), 4, 'P'), huge...),
		huge,
		append(AppendHeader(nil, Header{Key: "k", Size: MaxVarint}), huge...),
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, in := range inputs {
		r := br(in)
		_, _ = ReadHello(r, lim)
		r = br(in)
		if h, err := ReadHeader(r, lim); err == nil {
			_, _ = io.Copy(io.Discard, NewBodyReader(r, h.Size, lim))
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("decoding declared-huge lengths allocated %d bytes", grew)
	}
}

func TestBodyReaderAllocations(t *testing.T) {
	lim := DefaultLimits()
	enc := message(t, "key", make([]byte, 1024), 1024, 64<<10)
	rd := bytes.NewReader(enc)
	r := bufio.NewReaderSize(rd, 4096)
	var body BodyReader
	p := make([]byte, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(enc)
		r.Reset(rd)
		h, err := ReadHeader(r, lim)
		if err != nil {
			t.Fatal(err)
		}
		body.Reset(r, h.Size, lim)
		for {
			if _, err := body.Read(p); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	})
	// The key string is the only allocation.
	if allocs > 1 {
		t.Fatalf("%.1f allocations per message, want at most 1", allocs)
	}
}
