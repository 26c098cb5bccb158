package loom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
)

// Metadata keys set on every received message.
const (
	MetadataRoom = "loom_room" // the room it came from
	MetadataKey  = "loom_key"  // its Loom key; also the default key source on publish
	MetadataID   = "loom_id"   // the server's id, counting up per room
)

// Marshaler turns a Watermill message into a Loom body and back.
type Marshaler interface {
	// Marshal returns the Loom body for msg.
	Marshal(msg *message.Message) ([]byte, error)
	// Unmarshal returns the Watermill message for a received body.
	Unmarshal(in Received) (*message.Message, error)
}

// Received is a whole message as it came from a room.
type Received struct {
	Room string
	Key  string
	ID   uint64
	Body []byte

	// sums, when the Subscriber took them while reading Body, spare DecodeReceived
	// another pass over it.
	sums *bodySums
}

// NewMarshaler returns the marshaler for a format name: "raw" (default) or
// "envelope".
func NewMarshaler(format string) (Marshaler, error) {
	switch format {
	case "", FormatRaw:
		return RawMarshaler{}, nil
	case FormatEnvelope:
		return EnvelopeMarshaler{}, nil
	}
	return nil, fmt.Errorf("format: must be %q or %q, got %q", FormatRaw, FormatEnvelope, format)
}

// Format names.
const (
	FormatRaw      = "raw"
	FormatEnvelope = "envelope"
)

// RawMarshaler sends the payload alone, exactly what any other Loom client sends and
// reads; metadata does not cross the hop. On receive it detects envelopes, so a room
// may carry both.
type RawMarshaler struct{}

// Marshal returns the payload.
func (RawMarshaler) Marshal(msg *message.Message) ([]byte, error) { return msg.Payload, nil }

// Unmarshal detects the format: see DecodeReceived.
func (RawMarshaler) Unmarshal(in Received) (*message.Message, error) { return DecodeReceived(in) }

// EnvelopeMarshaler sends UUID, metadata and payload in the envelope format
// (docs/envelope.md), so metadata and trace context cross the Loom hop.
type EnvelopeMarshaler struct{}

// envelopeMagic starts every envelope. 0x89 is not valid UTF-8 on its own, so text
// payloads never look like an envelope.
var envelopeMagic = []byte{0x89, 'L', 'B', 'E'}

const envelopeVersion = 1

// traceProp carries W3C trace context in metadata.
var traceProp = propagation.TraceContext{}

// Marshal encodes msg as an envelope. The trace context of msg.Context(), if any, is
// written into the metadata as traceparent/tracestate.
func (EnvelopeMarshaler) Marshal(msg *message.Message) ([]byte, error) {
	md := msg.Metadata
	carrier := propagation.MapCarrier{}
	traceProp.Inject(msg.Context(), carrier)
	if len(carrier) > 0 {
		md = make(message.Metadata, len(msg.Metadata)+len(carrier))
		maps.Copy(md, msg.Metadata)
		maps.Copy(md, carrier)
	}
	size := len(envelopeMagic) + 1 + 3*binary.MaxVarintLen64 + len(msg.UUID) + len(msg.Payload)
	for k, v := range md {
		size += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, 0, size)
	b = append(b, envelopeMagic...)
	b = append(b, envelopeVersion)
	b = appendString(b, msg.UUID)
	b = binary.AppendUvarint(b, uint64(len(md)))
	for k, v := range md {
		b = appendString(appendString(b, k), v)
	}
	return append(b, msg.Payload...), nil
}

// Unmarshal detects the format: see DecodeReceived.
func (EnvelopeMarshaler) Unmarshal(in Received) (*message.Message, error) { return DecodeReceived(in) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ErrEnvelope: a body starts with the envelope's magic but is not a valid envelope.
var ErrEnvelope = errors.New("malformed envelope")

// DecodeReceived turns a received body into a Watermill message. A body that starts
// with the envelope magic is decoded as an envelope, its trace context restored into
// the message's context; any other body is raw and gets a UUID derived from room,
// key, server id and body, so the same delivery always has the same UUID. Both get
// metadata loom_room, loom_key and loom_id.
func DecodeReceived(in Received) (*message.Message, error) {
	var msg *message.Message
	if bytes.HasPrefix(in.Body, envelopeMagic) {
		m, err := decodeEnvelope(in.Body)
		if err != nil {
			return nil, fmt.Errorf("room %q key %q id %d: %w", in.Room, in.Key, in.ID, err)
		}
		msg = m
	} else {
		msg = message.NewMessage(rawUUID(in), in.Body)
	}
	msg.Metadata.Set(MetadataRoom, in.Room)
	msg.Metadata.Set(MetadataKey, in.Key)
	msg.Metadata.Set(MetadataID, strconv.FormatUint(in.ID, 10))
	return msg, nil
}

// rawUUIDSpace namespaces the UUIDs given to raw messages.
var rawUUIDSpace = uuid.MustParse("7f0e3c51-3b5e-4c47-9d1e-4f1c0a6b2d90")

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rawUUID derives a raw message's UUID from room, key, id and body. The body enters
// by its length and two CRC-32 checksums (IEEE and Castagnoli): both run on the
// CPU's CRC instructions, about twenty times faster than SHA-256, which over a
// large body cost as much CPU as receiving it. They tell deliveries apart; they are
// no defence against a peer crafting a body to match another one's UUID, which needs
// the same room, key and server id anyway.
func rawUUID(in Received) string {
	sums := in.sums
	if sums == nil || sums.n != len(in.Body) {
		sums = new(bodySums)
		sums.add(in.Body)
	}
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(in.Room)))
	b = append(b, in.Room...)
	b = binary.AppendUvarint(b, uint64(len(in.Key)))
	b = append(b, in.Key...)
	b = binary.AppendUvarint(b, in.ID)
	b = binary.AppendUvarint(b, uint64(len(in.Body)))
	b = binary.BigEndian.AppendUint32(b, sums.ieee)
	b = binary.BigEndian.AppendUint32(b, sums.castagnoli)
	sum := sha256.Sum256(b)
	return uuid.NewSHA1(rawUUIDSpace, sum[:]).String()
}

// bodySums are the checksums rawUUID takes of a body, added up piece by piece.
type bodySums struct {
	ieee, castagnoli uint32
	n                int // bytes added
}

func (s *bodySums) add(p []byte) {
	s.ieee = crc32.Update(s.ieee, crc32.IEEETable, p)
	s.castagnoli = crc32.Update(s.castagnoli, castagnoli, p)
	s.n += len(p)
}

// summingReader takes a body's bodySums as it reads it, each piece while it is still
// in the cache. Taken after the whole body arrived, they cost two more passes over
// it from memory, and the ack, and so the server's next message, waited for them.
// An envelope does not need them; taken in cache, they cost it little.
type summingReader struct {
	bodyReader
	sums bodySums
}

func (r *summingReader) Read(p []byte) (int, error) {
	n, err := r.bodyReader.Read(p)
	r.sums.add(p[:n])
	return n, err
}

func decodeEnvelope(b []byte) (*message.Message, error) {
	r := envelopeReader{b: b[len(envelopeMagic):]}
	if v := r.byte(); r.err == nil && v != envelopeVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrEnvelope, v, envelopeVersion)
	}
	id := r.string("uuid")
	n := r.uvarint("metadata count")
	// Each entry takes at least two bytes, so a count beyond that is a lie.
	if r.err == nil && n > uint64(len(r.b))/2 {
		r.fail("metadata count", fmt.Sprintf("%d entries in %d bytes", n, len(r.b)))
	}
	md := make(message.Metadata, min(n, 64))
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := r.string("metadata key")
		md[k] = r.string("metadata value")
	}
	if r.err != nil {
		return nil, r.err
	}
	msg := message.NewMessage(id, r.b)
	msg.Metadata = md
	if md.Get("traceparent") != "" {
		msg.SetContext(traceProp.Extract(context.Background(), propagation.MapCarrier(md)))
	}
	return msg, nil
}

// envelopeReader reads envelope fields, keeping the first error. Lengths are checked
// against the bytes actually present, so nothing declared is allocated.
type envelopeReader struct {
	b   []byte
	err error
}

func (r *envelopeReader) fail(field, why string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", ErrEnvelope, field, why)
	}
}

func (r *envelopeReader) byte() byte {
	if len(r.b) < 1 {
		r.fail("version", "missing")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *envelopeReader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(field, "bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *envelopeReader) string(field string) string {
	n := r.uvarint(field + " length")
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(field, fmt.Sprintf("length %d, only %d bytes left", n, len(r.b)))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
