package file

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestLineRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		meta    map[string]string
		base64  bool
	}{
		{"text with key", []byte("héllo <&> \"q\"\n\u2028"), map[string]string{"loom_key": "k1", "a": "b"}, false},
		{"binary", []byte{0, 1, 0xff, 0xfe, '\n'}, map[string]string{"x": ""}, true},
		{"empty payload, no metadata", []byte{}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := message.NewMessage("uuid-1", tc.payload)
			for k, v := range tc.meta {
				in.Metadata.Set(k, v)
			}
			b, err := MarshalLine(in, DefaultKeyMetadata)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
				t.Fatalf("want exactly one trailing newline: %q", b)
			}
			if got := bytes.Contains(b, []byte(`"payload_encoding":"base64"`)); got != tc.base64 {
				t.Fatalf("base64 marker = %v, want %v: %s", got, tc.base64, b)
			}
			if k := in.Metadata.Get("loom_key"); k != "" && !bytes.Contains(b, []byte(`"key":"`+k+`"`)) {
				t.Fatalf("key %q missing from %s", k, b)
			}
			out, err := UnmarshalLine(b, DefaultKeyMetadata)
			if err != nil {
				t.Fatal(err)
			}
			if !out.Equals(in) {
				t.Fatalf("round trip changed the message:\n in: %s %q %v\nout: %s %q %v",
					in.UUID, in.Payload, in.Metadata, out.UUID, out.Payload, out.Metadata)
			}
		})
	}
}

// Loom keys (and any metadata) may be binary; encoding/json would replace
// the invalid UTF-8 with U+FFFD, so such fields go as marked base64.
func TestLineRoundTripNotUTF8(t *testing.T) {
	in := message.NewMessage("id-\xff", []byte("p"))
	in.Metadata.Set("loom_key", "\xff\xfe")
	in.Metadata.Set("name\x80", "plain")
	in.Metadata.Set("text", "héllo")
	b, err := MarshalLine(in, DefaultKeyMetadata)
	if err != nil {
		t.Fatal(err)
	}
	if !utf8.Valid(b) {
		t.Fatalf("line is not valid UTF-8: %q", b)
	}
	for _, marker := range []string{`"uuid_encoding":"base64"`, `"key_encoding":"base64"`, `"metadata_encoding":"base64"`} {
		if !bytes.Contains(b, []byte(marker)) {
			t.Errorf("marker %s missing: %s", marker, b)
		}
	}
	if bytes.Contains(b, []byte("payload_encoding")) {
		t.Errorf("text payload marked as base64: %s", b)
	}
	out, err := UnmarshalLine(b, DefaultKeyMetadata)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Equals(in) {
		t.Fatalf("round trip changed the message:\n in: %q %q %q\nout: %q %q %q",
			in.UUID, in.Payload, in.Metadata, out.UUID, out.Payload, out.Metadata)
	}
	// The key field alone (a line written by another tool) restores it too.
	b, _ = MarshalLine(message.NewMessage("u", nil), "")
	b = bytes.Replace(b, []byte(`"uuid":"u"`), []byte(`"uuid":"u","key":"//4=","key_encoding":"base64"`), 1)
	if m, err := UnmarshalLine(b, "k"); err != nil || m.Metadata.Get("k") != "\xff\xfe" {
		t.Fatalf("key from key field = %q, %v", m.Metadata.Get("k"), err)
	}
}

func TestUnmarshalLineRestoresKeyFromKeyField(t *testing.T) {
	msg, err := UnmarshalLine([]byte(`{"uuid":"u","key":"k9","payload":"p"}`), "my_key")
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Metadata.Get("my_key"); got != "k9" {
		t.Fatalf("my_key = %q, want k9", got)
	}
}

func TestUnmarshalLineErrors(t *testing.T) {
	cases := map[string]struct{ line, want string }{
		"invalid json":     {`{"uuid":"u","payload":`, "invalid JSON"},
		"not an object":    {`[1,2]`, "invalid JSON"},
		"trailing garbage": {`{"uuid":"u","payload":"p"} x`, "invalid JSON"},
		"missing uuid":     {`{"payload":"p"}`, "missing field uuid"},
		"missing payload":  {`{"uuid":"u"}`, "missing field payload"},
		"bad base64":       {`{"uuid":"u","payload":"!!!","payload_encoding":"base64"}`, "bad base64"},
		"unknown encoding": {`{"uuid":"u","payload":"p","payload_encoding":"hex"}`, "unknown payload_encoding"},
		"bad base64 uuid":  {`{"uuid":"!","uuid_encoding":"base64","payload":"p"}`, "bad base64 uuid"},
		"bad base64 meta":  {`{"uuid":"u","metadata":{"a":"!"},"metadata_encoding":"base64","payload":"p"}`, "bad base64 metadata"},
		"unknown key enc":  {`{"uuid":"u","key":"k","key_encoding":"hex","payload":"p"}`, "unknown key_encoding"},
		"invalid utf-8":    {"{\"uuid\":\"u\",\"payload\":\"\xff\"}", "not valid UTF-8"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := UnmarshalLine([]byte(tc.line), DefaultKeyMetadata)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestMarshalLineRejectsEmptyUUID(t *testing.T) {
	if _, err := MarshalLine(message.NewMessage("", []byte("p")), DefaultKeyMetadata); err == nil {
		t.Fatal("want an error for an empty UUID")
	}
}
