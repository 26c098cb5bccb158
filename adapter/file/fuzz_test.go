package file

import (
	"bytes"
	"maps"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// FuzzUnmarshalLine: no line makes the reader panic, and a line it accepts
// re-encodes to a message that decodes the same.
func FuzzUnmarshalLine(f *testing.F) {
	m := message.NewMessage("u1", []byte("hello"))
	m.Metadata.Set("loom_key", "k")
	line, _ := MarshalLine(m, DefaultKeyMetadata)
	f.Add(line)
	bin, _ := MarshalLine(message.NewMessage("u2", []byte{0xff, 0x00}), DefaultKeyMetadata)
	f.Add(bin)
	f.Add([]byte(`{"uuid":"x","payload":"` + "\xff" + `"}`))
	f.Add([]byte(`{"uuid":"x","payload":"AA==","payload_encoding":"base64"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := UnmarshalLine(in, DefaultKeyMetadata)
		if err != nil {
			return
		}
		again, err := MarshalLine(got, DefaultKeyMetadata)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := UnmarshalLine(again, DefaultKeyMetadata)
		if err != nil || back.UUID != got.UUID || !bytes.Equal(back.Payload, got.Payload) || !maps.Equal(back.Metadata, got.Metadata) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
