package wire

import (
	"bytes"
	"io"
	"testing"
)

// The fuzz targets feed arbitrary bytes to every decoder: none may panic, and what
// decodes must encode back to the same bytes. Seeds are valid frames; the corpus
// lives in testdata/fuzz.

func FuzzReadHello(f *testing.F) {
	f.Add(AppendHello(nil, Hello{Role: RoleProducer, Name: "p", Room: "r", Token: "t"}))
	f.Add(AppendHello(nil, Hello{Role: RoleConsumer}))
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := DefaultLimits()
		h, err := ReadHello(br(in), lim)
		if err != nil {
			return
		}
		if err := h.Validate(lim); err != nil {
			t.Fatalf("decoded hello fails Validate: %v", err)
		}
		enc := AppendHello(nil, h)
		if !bytes.HasPrefix(in, enc) {
			// Varints have several encodings; re-decode instead of comparing bytes.
			h2, err := ReadHello(br(enc), lim)
			if err != nil || h2 != h {
				t.Fatalf("re-decode: %v %v != %v", err, h2, h)
			}
		}
	})
}

func FuzzReadHeader(f *testing.F) {
	f.Add(AppendHeader(nil, Header{Key: "k", Size: 10, ID: 1}))
	f.Add(AppendHeader(nil, Header{Key: "a longer key", Size: 0, ID: 1 << 40}))
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := DefaultLimits()
		h, err := ReadHeader(br(in), lim)
		if err != nil {
			return
		}
		h2, err := ReadHeader(br(AppendHeader(nil, h)), lim)
		if err != nil || h2 != h {
			t.Fatalf("re-decode: %v %v != %v", err, h2, h)
		}
	})
}

func FuzzBody(f *testing.F) {
	for _, body := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 3000)} {
		var buf bytes.Buffer
		_, _ = WriteBody(&buf, bytes.NewReader(body), uint64(len(body)), DefaultLimits(), 1000, nil)
		f.Add(uint64(len(body)), buf.Bytes())
	}
	f.Add(uint64(10), []byte{3, 'a', 'b', 'c', 0})
	f.Fuzz(func(t *testing.T, declared uint64, in []byte) {
		lim := DefaultLimits()
		lim.MaxChunk = 4096
		lim.MaxMessage = 1 << 16
		b := NewBodyReader(br(in), declared, lim)
		got, err := io.ReadAll(b)
		if uint64(len(got)) != b.N() {
			t.Fatalf("returned %d bytes, counted %d", len(got), b.N())
		}
		if err != nil {
			_ = b.Discard()
			return
		}
		if !b.Done() {
			t.Fatal("clean end without the end chunk")
		}
		if declared != 0 && uint64(len(got)) != declared {
			t.Fatalf("clean end with %d bytes, declared %d", len(got), declared)
		}
		// What decoded cleanly re-encodes and decodes to the same bytes.
		var enc bytes.Buffer
		if _, err := WriteBody(&enc, bytes.NewReader(got), declared, lim, 4096, nil); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := io.ReadAll(NewBodyReader(br(enc.Bytes()), declared, lim))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendAck(nil, 1))
	f.Add(AppendAck(AppendAck(nil, 1<<40), 2))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := br(in)
		for {
			fr, err := ReadFrame(r)
			if err != nil {
				return
			}
			if fr.Type > MaxVarint || fr.Value > MaxVarint {
				t.Fatalf("accepted a varint above 2^50: %+v", fr)
			}
		}
	})
}
