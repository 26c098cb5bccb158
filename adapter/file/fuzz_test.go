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
	f.Add([]byte(`{"uuid":"/w==","uuid_encoding":"base64","key":"/w==","key_encoding":"base64","metadata":{"/w==":"AA=="},"metadata_encoding":"base64","payload":""}`))
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

// FuzzMarshalLine: any message, binary uuid, key and metadata included,
// comes back from its line exactly.
func FuzzMarshalLine(f *testing.F) {
	f.Add("u1", "k", "name", "value", []byte("hello"))
	f.Add("\xff", "\xff\xfe", "n\x80", "\x00v", []byte{0xff, 0})
	f.Add("u", "", "", "", []byte{})
	f.Fuzz(func(t *testing.T, uuid, key, name, value string, payload []byte) {
		if uuid == "" {
			return // rejected by MarshalLine
		}
		in := message.NewMessage(uuid, payload)
		if key != "" {
			in.Metadata.Set(DefaultKeyMetadata, key)
		}
		in.Metadata.Set(name, value)
		b, err := MarshalLine(in, DefaultKeyMetadata)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if bytes.Count(b, []byte("\n")) != 1 {
			t.Fatalf("not exactly one line: %q", b)
		}
		out, err := UnmarshalLine(b, DefaultKeyMetadata)
		if err != nil {
			t.Fatalf("unmarshal %q: %v", b, err)
		}
		if out.UUID != in.UUID || !bytes.Equal(out.Payload, in.Payload) || !maps.Equal(out.Metadata, in.Metadata) {
			t.Fatalf("round trip changed the message:\n in: %q %q %q\nout: %q %q %q",
				in.UUID, in.Payload, in.Metadata, out.UUID, out.Payload, out.Metadata)
		}
	})
}
