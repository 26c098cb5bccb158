package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// A stream's own read error (a closed stream) is no bad varint: it is
// returned wrapped, so a reader can tell a closed peer from corruption; a
// varint of more than 64 bits still is one.
func TestReadHeaderTellsReadErrorsFromBadVarints(t *testing.T) {
	closed := errors.New("stream closed by peer")
	_, err := ReadHeader(bufio.NewReader(failingReader{closed}), DefaultLimits())
	if !errors.Is(err, closed) || errors.Is(err, ErrVarint) {
		t.Errorf("read error: %v; want it wrapped, and no ErrVarint", err)
	}
	_, err = ReadHeader(bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{0xff}, 11))), DefaultLimits())
	if !errors.Is(err, ErrVarint) {
		t.Errorf("overflowing varint: %v; want ErrVarint", err)
	}
	_, err = ReadHeader(bufio.NewReader(bytes.NewReader(nil)), DefaultLimits())
	if err != io.EOF {
		t.Errorf("empty stream: %v; want io.EOF", err)
	}
	_, err = ReadFrame(bufio.NewReader(failingReader{closed}))
	if !errors.Is(err, closed) || errors.Is(err, ErrVarint) {
		t.Errorf("frame read error: %v; want it wrapped, and no ErrVarint", err)
	}
}
