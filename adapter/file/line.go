package file

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// DefaultKeyMetadata is the metadata name that carries a message's key.
const DefaultKeyMetadata = "loom_key"

// PayloadEncodingBase64 marks a line whose payload is base64 (standard
// encoding with padding) because it was not valid UTF-8.
const PayloadEncodingBase64 = "base64"

// line is the JSON shape of one JSONL line. Payload is a pointer so that a
// missing payload can be told apart from an empty one.
type line struct {
	UUID            string            `json:"uuid"`
	Key             string            `json:"key,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	Payload         *string           `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding,omitempty"`
}

// MarshalLine encodes msg as one JSONL line, including the trailing newline:
//
//	{"uuid":"…","key":"…","metadata":{…},"payload":"…"}
//	{"uuid":"…","payload":"AAEC","payload_encoding":"base64"}
//
// key is msg.Metadata[keyMeta] (omitted when empty); it duplicates the
// metadata entry so that tools like jq can use it without knowing keyMeta.
// The payload is stored as text when it is valid UTF-8 and as base64 with
// "payload_encoding":"base64" otherwise, because JSON strings cannot carry
// arbitrary bytes.
func MarshalLine(msg *message.Message, keyMeta string) ([]byte, error) {
	if msg.UUID == "" {
		return nil, errors.New("marshal line: message has an empty UUID")
	}
	l := line{UUID: msg.UUID, Metadata: msg.Metadata}
	if keyMeta != "" {
		l.Key = msg.Metadata.Get(keyMeta)
	}
	var payload string
	if utf8.Valid(msg.Payload) {
		payload = string(msg.Payload)
	} else {
		payload = base64.StdEncoding.EncodeToString(msg.Payload)
		l.PayloadEncoding = PayloadEncodingBase64
	}
	l.Payload = &payload
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("marshal line for message %s: %w", msg.UUID, err)
	}
	return append(b, '\n'), nil
}

// UnmarshalLine decodes one line written by [MarshalLine] (a trailing newline
// is allowed). UUID, metadata and payload are restored exactly. If the line
// has a key that its metadata lacks under keyMeta (a line written by another
// tool), the key is added under keyMeta.
func UnmarshalLine(b []byte, keyMeta string) (*message.Message, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	// encoding/json would silently replace invalid UTF-8 with U+FFFD; a line
	// we wrote is always valid UTF-8, so anything else is corruption.
	if !utf8.Valid(b) {
		return nil, errors.New("line is not valid UTF-8")
	}
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if l.UUID == "" {
		return nil, errors.New("missing field uuid")
	}
	if l.Payload == nil {
		return nil, errors.New("missing field payload")
	}
	var payload []byte
	switch l.PayloadEncoding {
	case "":
		payload = []byte(*l.Payload)
	case PayloadEncodingBase64:
		var err error
		if payload, err = base64.StdEncoding.DecodeString(*l.Payload); err != nil {
			return nil, fmt.Errorf("bad base64 payload: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown payload_encoding %q", l.PayloadEncoding)
	}
	msg := message.NewMessage(l.UUID, payload)
	for k, v := range l.Metadata {
		msg.Metadata.Set(k, v)
	}
	if keyMeta != "" && l.Key != "" {
		if _, ok := msg.Metadata[keyMeta]; !ok {
			msg.Metadata.Set(keyMeta, l.Key)
		}
	}
	return msg, nil
}
