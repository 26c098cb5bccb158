package spool

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecodeRecord: whatever a stored message's headers hold (another
// process on a shared server may have written it), decoding fails cleanly
// or yields a message, and never admits an object larger than the bound.
func FuzzDecodeRecord(f *testing.F) {
	f.Add("u1", `{"a":"b"}`, "", "", []byte("payload"))
	f.Add("u2", "", "obj", "1024", []byte(nil))
	f.Add("", `{"a":1}`, "obj", "-1", []byte("x"))
	f.Add("u3", `not json`, "obj", "99999999999999999999", []byte{})
	f.Fuzz(func(t *testing.T, uuid, meta, obj, size string, data []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{hdrUUID: uuid, hdrMeta: meta, hdrObject: obj, hdrSize: size} {
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
		if obj == "" && string(msg.Payload) != string(data) {
			t.Fatal("payload differs from data")
		}
	})
}
