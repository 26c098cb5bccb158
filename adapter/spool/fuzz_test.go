package spool

import (
	"maps"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecodeRecord: whatever a stored message's headers hold (another
// process on a shared server may have written it), decoding fails cleanly
// or yields a message, and never admits an object larger than the bound.
func FuzzDecodeRecord(f *testing.F) {
	f.Add("u1", "", "", append(appendMetadata(nil, map[string]string{"a": "b"}), "payload"...))
	f.Add("u2", "obj", "1024", appendMetadata(nil, nil))
	f.Add("", "obj", "-1", []byte("x"))
	f.Add("u3", "obj", "99999999999999999999", []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add("u4", "", "", []byte{3, 1, 'k', 200})
	f.Fuzz(func(t *testing.T, uuid, obj, size string, data []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{hdrUUID: uuid, hdrObject: obj, hdrSize: size} {
			if v != "" {
				h.Set(k, v)
			}
		}
		const bound = 1 << 20
		msg, n, err := decodeRecord(h, data, bound)
		if err != nil {
			return
		}
		if msg.UUID != uuid {
			t.Fatalf("UUID %q, want %q", msg.UUID, uuid)
		}
		if n < 0 || n > bound {
			t.Fatalf("object size %d admitted past the bound %d", n, bound)
		}
		if obj == "" {
			// What decodes, encoded again, decodes to the same message.
			again := append(appendMetadata(nil, msg.Metadata), msg.Payload...)
			back, _, err := decodeRecord(h, again, bound)
			if err != nil {
				t.Fatalf("re-encoded %q: %v", again, err)
			}
			if !maps.Equal(back.Metadata, msg.Metadata) || string(back.Payload) != string(msg.Payload) {
				t.Fatalf("re-encoded %q decodes to %v, %q; first %v, %q", again, back.Metadata, back.Payload, msg.Metadata, msg.Payload)
			}
			if len(msg.Payload) > len(data) {
				t.Fatalf("payload of %d bytes from %d", len(msg.Payload), len(data))
			}
		}
	})
}
