// Package wire encodes and decodes the Loom wire protocol, version 4: the hello that
// opens a session, message headers, the chunked body and the ACK frame.
//
// Every decoder checks a declared length against its Limits before it allocates or
// reads, so a peer can never make it allocate more than the limits allow, and no input
// makes it panic (see the fuzz targets).
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol constants.
const (
	// Magic opens every session.
	Magic = "LOOM"
	// Version is the protocol version this package speaks.
	Version byte = 4
	// MaxVarint is the largest varint value the server accepts; anything above is a
	// corrupted stream.
	MaxVarint = 1 << 50
	// FrameAck is the frame type of an acknowledgement (consumer to server).
	FrameAck uint64 = 1
)

// Role says whether a session produces or consumes.
type Role byte

// Roles, as sent in the hello.
const (
	RoleProducer Role = 'P'
	RoleConsumer Role = 'C'
)

func (r Role) String() string {
	switch r {
	case RoleProducer:
		return "producer"
	case RoleConsumer:
		return "consumer"
	}
	return fmt.Sprintf("role(0x%02x)", byte(r))
}

// Limits bound every length a peer can declare. The zero value is not useful: start
// from DefaultLimits.
type Limits struct {
	MaxName    int   // hello name, bytes
	MaxRoom    int   // hello room, bytes
	MaxToken   int   // hello token, bytes
	MaxKey     int   // message key, bytes (a key is at least 1 byte)
	MaxChunk   int   // one body chunk, bytes
	MaxMessage int64 // one message body, bytes
}

// DefaultLimits returns the Loom server's defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxName:    128,
		MaxRoom:    128,
		MaxToken:   1024,
		MaxKey:     256,
		MaxChunk:   64 << 10,
		MaxMessage: 256 << 20,
	}
}

// Errors that callers may test for with errors.Is.
var (
	// ErrLimit: a declared length is beyond its limit.
	ErrLimit = errors.New("beyond limit")
	// ErrVarint: a varint is malformed or above MaxVarint.
	ErrVarint = errors.New("bad varint")
	// ErrBadHello: the hello's magic, version or role is wrong.
	ErrBadHello = errors.New("bad hello")
	// ErrEmptyKey: a message key is empty, which the protocol forbids.
	ErrEmptyKey = errors.New("empty key")
	// ErrTruncated: a message body ended with a different byte count than its header
	// declared, or the stream ended inside the body. The Loom server forwards a
	// producer's end-of-message even when the producer died mid-message, so this is
	// the only sign that a body is incomplete.
	ErrTruncated = errors.New("message truncated")
)

// Reader is what the decoders read from: a *bufio.Reader satisfies it.
type Reader interface {
	io.Reader
	io.ByteReader
}

// readUvarint reads one varint and names the field it belongs to in any error.
func readUvarint(r io.ByteReader, where string) (uint64, error) {
	v, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("wire: %s: %w", where, err)
		}
		return 0, varintError(where, err)
	}
	if v > MaxVarint {
		return 0, fmt.Errorf("wire: %s: %w: %d is above 2^50", where, ErrVarint, v)
	}
	return v, nil
}

// errOverflow is binary.ReadUvarint's error for a varint of more than 64 bits,
// which the package does not export.
var errOverflow = func() error {
	_, err := binary.ReadUvarint(bytes.NewReader(bytes.Repeat([]byte{0x80}, binary.MaxVarintLen64+1)))
	return err
}()

// varintError tells a malformed varint (ErrVarint) from the stream's own read
// error: a stream that a peer or this side closed is no corruption.
func varintError(where string, err error) error {
	if errors.Is(err, errOverflow) {
		return fmt.Errorf("wire: %s: %w: %v", where, ErrVarint, err)
	}
	return fmt.Errorf("wire: %s: read: %w", where, err)
}

// readBytes reads a length-prefixed field of at most limit bytes. The length is checked
// before anything is allocated.
func readBytes(r Reader, limit int, where string) ([]byte, error) {
	n, err := readUvarint(r, where+" length")
	if err != nil {
		return nil, unexpectedIn(err)
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("wire: %s: %w: length %d, limit %d", where, ErrLimit, n, limit)
	}
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("wire: %s: %w", where, unexpected(err))
	}
	return b, nil
}

// unexpected turns a clean EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func checkLen(n, limit int, where string) error {
	if n > limit {
		return fmt.Errorf("wire: %s: %w: length %d, limit %d", where, ErrLimit, n, limit)
	}
	return nil
}
