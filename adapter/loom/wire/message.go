package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"
)

// Header opens a message: producer to server and server to consumer alike.
type Header struct {
	Key  string
	Size uint64 // declared body length; 0 means unknown
	ID   uint64 // server-assigned id; producers send 0
}

// Validate checks the header against the limits.
func (h Header) Validate(lim Limits) error {
	if h.Key == "" {
		return fmt.Errorf("wire: message key: %w", ErrEmptyKey)
	}
	if err := checkLen(len(h.Key), lim.MaxKey, "message key"); err != nil {
		return err
	}
	if h.Size > MaxVarint || h.ID > MaxVarint {
		return fmt.Errorf("wire: message header: %w: size or id above 2^50", ErrVarint)
	}
	if h.Size > uint64(lim.MaxMessage) {
		return fmt.Errorf("wire: message declared size: %w: %d bytes, limit %d", ErrLimit, h.Size, lim.MaxMessage)
	}
	return nil
}

// AppendHeader appends the encoded header to dst. Call Validate first.
func AppendHeader(dst []byte, h Header) []byte {
	dst = appendBytes(dst, []byte(h.Key))
	dst = binary.AppendUvarint(dst, h.Size)
	return binary.AppendUvarint(dst, h.ID)
}

// ReadHeader decodes a message header. A clean io.EOF before its first byte is
// returned as is, so a reader can tell a closed session from a broken one.
func ReadHeader(r Reader, lim Limits) (Header, error) {
	n, err := binary.ReadUvarint(r)
	switch {
	case errors.Is(err, io.EOF):
		return Header{}, io.EOF
	case err != nil:
		return Header{}, varintError("message key length", err)
	case n == 0:
		return Header{}, fmt.Errorf("wire: message key: %w", ErrEmptyKey)
	case n > uint64(lim.MaxKey):
		return Header{}, fmt.Errorf("wire: message key: %w: length %d, limit %d", ErrLimit, n, lim.MaxKey)
	}
	key := make([]byte, n)
	if _, err := io.ReadFull(r, key); err != nil {
		return Header{}, fmt.Errorf("wire: message key: %w", unexpected(err))
	}
	// key is never written again, so it can back the string without a second copy.
	keyStr := unsafe.String(&key[0], len(key))
	size, err := readUvarint(r, "message declared size")
	if err != nil {
		return Header{}, unexpectedIn(err)
	}
	id, err := readUvarint(r, "message id")
	if err != nil {
		return Header{}, unexpectedIn(err)
	}
	return Header{Key: keyStr, Size: size, ID: id}, nil
}

// unexpectedIn rewrites a clean EOF inside a frame as io.ErrUnexpectedEOF, keeping
// the field context.
func unexpectedIn(err error) error {
	if errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%v)", io.ErrUnexpectedEOF, err)
	}
	return err
}

// AppendAck appends an ACK frame for the server id.
func AppendAck(dst []byte, id uint64) []byte {
	dst = binary.AppendUvarint(dst, FrameAck)
	return binary.AppendUvarint(dst, id)
}

// Frame is a consumer-to-server frame: a type and its value (the message id for ACK).
type Frame struct {
	Type  uint64
	Value uint64
}

// ReadFrame decodes one consumer-to-server frame. A clean io.EOF before the frame is
// returned as is.
func ReadFrame(r io.ByteReader) (Frame, error) {
	t, err := binary.ReadUvarint(r)
	switch {
	case errors.Is(err, io.EOF):
		return Frame{}, io.EOF
	case err != nil:
		return Frame{}, varintError("frame type", err)
	case t > MaxVarint:
		return Frame{}, fmt.Errorf("wire: frame type: %w: %d is above 2^50", ErrVarint, t)
	}
	v, err := readUvarint(r, "frame value")
	if err != nil {
		return Frame{}, unexpectedIn(err)
	}
	return Frame{Type: t, Value: v}, nil
}
