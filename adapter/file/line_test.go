package file

import (
	"bytes"
	"strings"
	"testing"

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
