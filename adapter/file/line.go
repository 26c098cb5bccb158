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

// PayloadEncodingBase64 marks a field stored as base64 (standard encoding
// with padding) because it was not valid UTF-8. It is the value of
// "payload_encoding", and of "uuid_encoding", "key_encoding" and
// "metadata_encoding" for those fields.
const PayloadEncodingBase64 = "base64"

// line is the JSON shape of one JSONL line. Payload is a pointer so that a
// missing payload can be told apart from an empty one.
type line struct {
	UUID             string            `json:"uuid"`
	UUIDEncoding     string            `json:"uuid_encoding,omitempty"`
	Key              string            `json:"key,omitempty"`
	KeyEncoding      string            `json:"key_encoding,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	MetadataEncoding string            `json:"metadata_encoding,omitempty"`
	Payload          *string           `json:"payload"`
	PayloadEncoding  string            `json:"payload_encoding,omitempty"`
}

// MarshalLine encodes msg as one JSONL line, including the trailing newline:
//
//	{"uuid":"…","key":"…","metadata":{…},"payload":"…"}
//	{"uuid":"…","payload":"AAEC","payload_encoding":"base64"}
//
// key is msg.Metadata[keyMeta] (omitted when empty); it duplicates the
// metadata entry so that tools like jq can use it without knowing keyMeta.
// JSON strings cannot carry arbitrary bytes (encoding/json would replace
// invalid UTF-8 with U+FFFD), so a field that is not valid UTF-8 is stored
// as base64 and marked: the payload with "payload_encoding":"base64", the
// uuid and key (Loom keys may be binary) with "uuid_encoding" and
// "key_encoding", and the metadata, when any of its names or values is not
// valid UTF-8, with all names and values in base64 and
// "metadata_encoding":"base64".
func MarshalLine(msg *message.Message, keyMeta string) ([]byte, error) {
	if msg.UUID == "" {
		return nil, errors.New("marshal line: message has an empty UUID")
	}
	var l line
	l.UUID, l.UUIDEncoding = encodeString(msg.UUID)
	if keyMeta != "" {
		l.Key, l.KeyEncoding = encodeString(msg.Metadata.Get(keyMeta))
	}
	l.Metadata = msg.Metadata
	if !metadataValid(msg.Metadata) {
		l.Metadata = make(map[string]string, len(msg.Metadata))
		for k, v := range msg.Metadata {
			l.Metadata[b64(k)] = b64(v)
		}
		l.MetadataEncoding = PayloadEncodingBase64
	}
	var payload string
	if utf8.Valid(msg.Payload) {
		payload = string(msg.Payload)
	} else {
		payload = b64(string(msg.Payload))
		l.PayloadEncoding = PayloadEncodingBase64
	}
	l.Payload = &payload
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("marshal line for message %q: %w", msg.UUID, err)
	}
	return append(b, '\n'), nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// encodeString returns s, or its base64 and the marker when s is not
// valid UTF-8.
func encodeString(s string) (string, string) {
	if utf8.ValidString(s) {
		return s, ""
	}
	return b64(s), PayloadEncodingBase64
}

func metadataValid(m message.Metadata) bool {
	for k, v := range m {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

// decodeString undoes encodeString; field names the field in errors.
func decodeString(s, encoding, field string) (string, error) {
	switch encoding {
	case "":
		return s, nil
	case PayloadEncodingBase64:
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return "", fmt.Errorf("bad base64 %s: %w", field, err)
		}
		return string(b), nil
	default:
		return "", fmt.Errorf("unknown %s_encoding %q", field, encoding)
	}
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
	uuid, err := decodeString(l.UUID, l.UUIDEncoding, "uuid")
	if err != nil {
		return nil, err
	}
	key, err := decodeString(l.Key, l.KeyEncoding, "key")
	if err != nil {
		return nil, err
	}
	payload, err := decodeString(*l.Payload, l.PayloadEncoding, "payload")
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(uuid, []byte(payload))
	for k, v := range l.Metadata {
		if k, err = decodeString(k, l.MetadataEncoding, "metadata"); err != nil {
			return nil, err
		}
		if v, err = decodeString(v, l.MetadataEncoding, "metadata"); err != nil {
			return nil, err
		}
		msg.Metadata.Set(k, v)
	}
	if keyMeta != "" && key != "" {
		if _, ok := msg.Metadata[keyMeta]; !ok {
			msg.Metadata.Set(keyMeta, key)
		}
	}
	return msg, nil
}
