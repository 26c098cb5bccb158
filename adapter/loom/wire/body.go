package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrSizeMismatch: a producer's body did not have the length its header declared.
var ErrSizeMismatch = errors.New("body length differs from declared size")

// endChunk ends a message body.
var endChunk = []byte{0}

// BodyReader streams one message body: it reads chunks straight into the caller's
// buffer, so it allocates nothing per message. It returns io.EOF after the end chunk,
// or an error wrapping ErrTruncated when the byte count differs from a non-zero
// declared size or the stream ends inside the body.
type BodyReader struct {
	r        Reader
	lim      Limits
	declared uint64
	n        uint64 // body bytes read so far
	left     uint64 // bytes left in the current chunk
	skipping bool   // Discard ignores MaxMessage so the stream stays aligned
	overMax  bool   // stopped at MaxMessage with the chunk still unread: Discard may resume
	done     bool   // the end chunk was read
	err      error
}

// NewBodyReader returns a reader for a body whose header declared size bytes.
func NewBodyReader(r Reader, declared uint64, lim Limits) *BodyReader {
	b := &BodyReader{}
	b.Reset(r, declared, lim)
	return b
}

// Reset makes b read a new body, so one BodyReader serves a whole session.
func (b *BodyReader) Reset(r Reader, declared uint64, lim Limits) {
	*b = BodyReader{r: r, lim: lim, declared: declared}
}

// N returns the body bytes read so far.
func (b *BodyReader) N() uint64 { return b.n }

// Done reports whether the end chunk was read: only then may the next header follow.
func (b *BodyReader) Done() bool { return b.done }

// Read implements io.Reader.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.left == 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if uint64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= uint64(n)
	b.n += uint64(n)
	if err != nil {
		if b.left > 0 || errors.Is(err, io.EOF) {
			b.err = fmt.Errorf("wire: message body: %w after %d bytes: %w", ErrTruncated, b.n, unexpected(err))
		} else {
			b.err = fmt.Errorf("wire: message body: %w", err)
		}
		if n > 0 {
			return n, nil
		}
		return 0, b.err
	}
	return n, nil
}

func (b *BodyReader) nextChunk() error {
	n, err := readUvarint(b.r, "chunk length")
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("wire: message body: %w after %d bytes: stream ended", ErrTruncated, b.n)
		}
		return err
	}
	if n == 0 {
		b.done = true
		if b.declared != 0 && b.n != b.declared {
			return fmt.Errorf("wire: message body: %w: received %d bytes, declared %d", ErrTruncated, b.n, b.declared)
		}
		return io.EOF
	}
	if n > uint64(b.lim.MaxChunk) {
		return fmt.Errorf("wire: chunk length: %w: %d bytes, limit %d", ErrLimit, n, b.lim.MaxChunk)
	}
	b.left = n
	if !b.skipping && b.n+n > uint64(b.lim.MaxMessage) {
		b.overMax = true
		return fmt.Errorf("wire: message body: %w: more than %d bytes", ErrLimit, b.lim.MaxMessage)
	}
	return nil
}

// Discard reads and drops the rest of the body, ignoring MaxMessage (a too-large
// message can still be skipped so the session goes on). It returns nil when the body
// ended as declared, an ErrTruncated error when it did not, and a stream error when
// the session cannot continue.
func (b *BodyReader) Discard() error {
	if b.overMax {
		// Stopped by MaxMessage, not by a broken stream: skip past the limit.
		b.err, b.overMax = nil, false
	}
	b.skipping = true
	// io.Discard reads through a buffer it pools; a buffer of ours would escape to the
	// heap on every call, and Discard is called once per message.
	_, err := io.Copy(io.Discard, b)
	return err
}

// WriteBody writes body as chunks of at most chunkSize bytes followed by the end chunk,
// and returns the body bytes written. buf is scratch space of at least
// chunkSize+binary.MaxVarintLen64 bytes; nil allocates one. When declared is not 0 and
// the body's length differs, or the body exceeds lim.MaxMessage, WriteBody returns an
// error without writing the end chunk: the caller must abort the stream, because the
// server would otherwise deliver a short message as if it were whole.
func WriteBody(w io.Writer, body io.Reader, declared uint64, lim Limits, chunkSize int, buf []byte) (int64, error) {
	if chunkSize <= 0 || chunkSize > lim.MaxChunk {
		return 0, fmt.Errorf("wire: chunk size %d: must be between 1 and %d", chunkSize, lim.MaxChunk)
	}
	const pre = binary.MaxVarintLen64
	if len(buf) < pre+chunkSize {
		buf = make([]byte, pre+chunkSize)
	}
	var total int64
	for {
		n, rerr := io.ReadFull(body, buf[pre:pre+chunkSize])
		if n > 0 {
			total += int64(n)
			if declared != 0 && uint64(total) > declared {
				return total, fmt.Errorf("wire: message body: %w: more than the %d bytes declared", ErrSizeMismatch, declared)
			}
			if total > lim.MaxMessage {
				return total, fmt.Errorf("wire: message body: %w: more than %d bytes", ErrLimit, lim.MaxMessage)
			}
			var hdr [binary.MaxVarintLen64]byte
			h := binary.PutUvarint(hdr[:], uint64(n))
			copy(buf[pre-h:pre], hdr[:h])
			if _, err := w.Write(buf[pre-h : pre+n]); err != nil {
				return total, fmt.Errorf("wire: write chunk: %w", err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return total, fmt.Errorf("wire: read body: %w", rerr)
		}
	}
	if declared != 0 && uint64(total) != declared {
		return total, fmt.Errorf("wire: message body: %w: %d bytes, declared %d", ErrSizeMismatch, total, declared)
	}
	if _, err := w.Write(endChunk); err != nil {
		return total, fmt.Errorf("wire: write end of message: %w", err)
	}
	return total, nil
}
