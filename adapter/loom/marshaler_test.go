package loom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	msg := message.NewMessage("id-1", []byte{0x89, 'L', 'B', 'E', 0, 1, 2})
	msg.Metadata.Set("a", "1")
	msg.Metadata.Set("", "empty key")
	body, err := EnvelopeMarshaler{}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReceived(Received{Room: "r", Key: "k", ID: 9, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if got.UUID != "id-1" || !bytes.Equal(got.Payload, msg.Payload) || got.Metadata.Get("a") != "1" || got.Metadata.Get("") != "empty key" {
		t.Fatalf("got %s %q %v", got.UUID, got.Payload, got.Metadata)
	}
	if got.Metadata.Get(MetadataRoom) != "r" || got.Metadata.Get(MetadataKey) != "k" || got.Metadata.Get(MetadataID) != "9" {
		t.Fatalf("loom metadata %v", got.Metadata)
	}
}

func TestRawDetectionAndStableUUID(t *testing.T) {
	in := Received{Room: "r", Key: "k", ID: 3, Body: []byte("plain text")}
	a, err := DecodeReceived(in)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DecodeReceived(in)
	if a.UUID != b.UUID || string(a.Payload) != "plain text" {
		t.Fatalf("raw: %s %s %q", a.UUID, b.UUID, a.Payload)
	}
	in.ID = 4
	if c, _ := DecodeReceived(in); c.UUID == a.UUID {
		t.Fatal("a different delivery got the same UUID")
	}
}

func TestEnvelopeErrorsSayWhere(t *testing.T) {
	for name, body := range map[string][]byte{
		"version":  {0x89, 'L', 'B', 'E', 9},
		"uuid":     {0x89, 'L', 'B', 'E', 1, 50, 'x'},
		"count":    {0x89, 'L', 'B', 'E', 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"metadata": {0x89, 'L', 'B', 'E', 1, 0, 1, 3, 'k'},
	} {
		_, err := DecodeReceived(Received{Room: "r", Key: "k", ID: 1, Body: body})
		if !errors.Is(err, ErrEnvelope) {
			t.Fatalf("%s: got %v", name, err)
		}
	}
}

// FuzzDecodeReceived: no body makes the decoder panic or allocate beyond what it
// was given, and a decoded envelope encodes back to the same message.
func FuzzDecodeReceived(f *testing.F) {
	m := message.NewMessage("u", []byte("p"))
	m.Metadata.Set("k", "v")
	env, _ := EnvelopeMarshaler{}.Marshal(m)
	f.Add(env)
	f.Add([]byte("raw body"))
	f.Add([]byte{0x89, 'L', 'B', 'E', 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := DecodeReceived(Received{Room: "r", Key: "k", ID: 1, Body: body})
		if err != nil {
			return
		}
		if !bytes.HasPrefix(body, envelopeMagic) {
			if !bytes.Equal(got.Payload, body) {
				t.Fatal("raw payload changed")
			}
			return
		}
		for _, k := range []string{MetadataRoom, MetadataKey, MetadataID} {
			delete(got.Metadata, k)
		}
		again, err := EnvelopeMarshaler{}.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeReceived(Received{Room: "r", Key: "k", ID: 1, Body: again})
		if err != nil || back.UUID != got.UUID || !bytes.Equal(back.Payload, got.Payload) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// TestRawUUIDTellsBodiesApart: deliveries that differ only in their body, by one
// byte anywhere or by length, get different UUIDs; fields cannot run into each other.
func TestRawUUIDTellsBodiesApart(t *testing.T) {
	base := make([]byte, 100<<10)
	seen := map[string]string{}
	add := func(what string, in Received) {
		t.Helper()
		m, err := DecodeReceived(in)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[m.UUID]; dup {
			t.Fatalf("%s and %s got the same UUID %s", prev, what, m.UUID)
		}
		seen[m.UUID] = what
	}
	add("base", Received{Room: "r", Key: "k", ID: 1, Body: base})
	for _, i := range []int{0, 1, 50 << 10, len(base) - 1} {
		b := append([]byte(nil), base...)
		b[i] ^= 1
		add(fmt.Sprint("flip at ", i), Received{Room: "r", Key: "k", ID: 1, Body: b})
	}
	add("longer", Received{Room: "r", Key: "k", ID: 1, Body: append(base[:len(base):len(base)], 0)})
	add("shorter", Received{Room: "r", Key: "k", ID: 1, Body: base[:len(base)-1]})
	add("room/key boundary", Received{Room: "rk", Key: "", ID: 1, Body: base})
}

// The subscriber takes the raw UUID's checksums while it reads, in whatever pieces
// the stream gives: the UUID must be the one the whole body gives.
func TestChecksumsTakenWhileReadingGiveTheSameUUID(t *testing.T) {
	body := make([]byte, 300<<10+7)
	for i := range body {
		body[i] = byte(i * 7)
	}
	want := rawUUID(Received{Room: "r", Key: "k", ID: 5, Body: body})
	var whole bodySums
	whole.add(body)
	for _, piece := range []int{1, 1000, 64 << 10, len(body)} {
		r := &summingReader{bodyReader: &piecewise{b: body, piece: piece}}
		got, err := readBody(r, uint64(len(body)), int64(len(body)))
		if err != nil {
			t.Fatal(err)
		}
		if r.sums != whole {
			t.Fatalf("read in pieces of %d bytes: sums %+v, the whole body gives %+v", piece, r.sums, whole)
		}
		if u := rawUUID(Received{Room: "r", Key: "k", ID: 5, Body: got, sums: &r.sums}); u != want {
			t.Fatalf("read in pieces of %d bytes: UUID %s, the whole body gives %s", piece, u, want)
		}
	}
	// Sums that do not cover the body (a Marshaler passed on another one) are not used.
	r := &summingReader{bodyReader: &piecewise{b: body, piece: 1000}}
	if _, err := readBody(r, uint64(len(body)), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	short := body[:len(body)-1]
	if got, want := rawUUID(Received{Room: "r", Key: "k", ID: 5, Body: short, sums: &r.sums}), rawUUID(Received{Room: "r", Key: "k", ID: 5, Body: short}); got != want {
		t.Fatalf("sums of another body were used: UUID %s, want %s", got, want)
	}
}

// piecewise is a bodyReader that returns at most piece bytes per Read.
type piecewise struct {
	b     []byte
	piece int
}

func (p *piecewise) Read(b []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), p.piece)], p.b)
	p.b = p.b[n:]
	return n, nil
}

func (p *piecewise) Discard() error { p.b = nil; return nil }
