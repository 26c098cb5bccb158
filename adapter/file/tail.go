package file

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// rawLine is one line of the file. bad and reason are set when the line
// is known to be unusable before parsing (too long, torn).
type rawLine struct {
	data   []byte // without the newline
	no     int64  // 1-based line number
	end    int64  // byte offset just past the line
	bad    error
	reason DeadLetterReason // set with bad
}

// tail reads complete lines from a file, tracking the byte offset and line
// number of what it has consumed and, in follow mode, waiting for more data
// and switching to a recreated file.
type tail struct {
	topic   string
	path    string // currentFileName(topic) in the directory
	offPath string // "" with no_offset
	max     int
	follow  bool
	poll    time.Duration
	closing <-chan struct{}

	// want is the identity of the file a loaded offset belongs to (nil:
	// unknown); the first open checks it against the current file.
	want *fileID
	old  bool    // reading a rotated file found by want or listed after one: no longer written
	id   *fileID // identity of f, stored with the offset

	f       *os.File
	br      *bufio.Reader
	offset  int64  // byte offset past the last consumed line
	lineNo  int64  // lines consumed
	partial []byte // start of the current unfinished line, at most max+1 bytes
	pending int64  // length of the current unfinished line read so far
}

// open opens the file at the current offset. The first open checks the
// identity stored with the offset: if <topic>.jsonl is another file (it was
// rotated while no Subscriber ran), the rotated file is finished first when
// it can be found among <topic>-*.jsonl, and otherwise the current file is
// read from the start. An offset past the end means the file was replaced
// or truncated, so reading starts over.
func (t *tail) open(logger watermill.LoggerAdapter) error {
	f, st, err := openStat(t.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if t.want != nil && (f == nil || differs(idOf(st), t.want)) {
		if rf, rst := t.findRotated(*t.want, logger); rf != nil {
			if f != nil {
				f.Close()
			}
			logger.Info("Stored offset belongs to a rotated file, finishing it first",
				watermill.LogFields{"file": t.path, "rotated": rf.Name(), "offset": t.offset})
			f, st, err, t.old = rf, rst, nil, true
		} else if f != nil {
			logger.Info("Stored offset belongs to a file that is gone, reading the current file from the start",
				watermill.LogFields{"file": t.path, "offset": t.offset})
			t.offset, t.lineNo = 0, 0
		}
	}
	if f == nil {
		return err // not there yet; want is checked again on the next open
	}
	t.want = nil
	if t.offset > st.Size() {
		logger.Info("Stored offset is past the end of the file, starting from the beginning",
			watermill.LogFields{"file": f.Name(), "offset": t.offset, "size": st.Size()})
		t.offset, t.lineNo = 0, 0
	}
	if _, err := f.Seek(t.offset, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("file subscriber: seek %s: %w", f.Name(), err)
	}
	t.f, t.id = f, idOf(st)
	t.br = bufio.NewReaderSize(f, 64<<10)
	t.partial, t.pending = nil, 0
	return nil
}

func openStat(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("file subscriber: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("file subscriber: %w", err)
	}
	return f, st, nil
}

// differs reports whether two identities are known and different.
func differs(a, b *fileID) bool { return a != nil && b != nil && *a != *b }

// findRotated opens the rotated file <topic>-*.jsonl with identity id, or
// returns nil. Errors only mean it is not found: the caller falls back to
// the current file.
func (t *tail) findRotated(id fileID, logger watermill.LoggerAdapter) (*os.File, os.FileInfo) {
	rotated, err := t.listRotated()
	if err != nil {
		logger.Error("Listing rotated files failed", err, nil)
		return nil, nil
	}
	for _, r := range rotated {
		f, st, err := openStat(filepath.Join(filepath.Dir(t.path), r.name))
		if err != nil {
			continue // removed meanwhile
		}
		if got := idOf(st); got != nil && *got == id {
			return f, st
		}
		f.Close()
	}
	return nil, nil
}

// nextRotated switches from the finished rotated file to the oldest rotated
// file of the topic named after it, from its start, and reports whether there
// was one.
func (t *tail) nextRotated(logger watermill.LoggerAdapter) (bool, error) {
	dir := filepath.Dir(t.path)
	rotated, err := t.listRotated()
	if err != nil {
		return false, err
	}
	// The file just finished: opened by its rotated name, or opened as
	// <topic>.jsonl and renamed since, found by its identity.
	cur, ok := parseRotated(t.topic, t.f.Name())
	for i := 0; !ok && t.id != nil && i < len(rotated); i++ {
		if st, err := os.Stat(filepath.Join(dir, rotated[i].name)); err == nil {
			if id := idOf(st); id != nil && *id == *t.id {
				cur, ok = rotated[i], true
			}
		}
	}
	if !ok {
		return false, nil
	}
	for _, r := range rotated {
		if !cur.before(r) {
			continue
		}
		f, st, err := openStat(filepath.Join(dir, r.name))
		if err != nil {
			continue // removed meanwhile
		}
		logger.Info("Reading the next rotated file", watermill.LogFields{"rotated": f.Name()})
		t.close()
		t.f, t.id, t.old = f, idOf(st), true
		t.br = bufio.NewReaderSize(f, 64<<10)
		t.partial, t.pending, t.offset, t.lineNo = nil, 0, 0, 0
		return true, t.saveOffset(0, 0)
	}
	return false, nil
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
		t.f, t.id = nil, nil
	}
}

// name is the file being read, for logs and dead letters.
func (t *tail) name() string {
	if t.f != nil {
		return t.f.Name()
	}
	return t.path
}

// restart drops the current file and continues at the start of path. It
// opens the new file at once so the stored offset 0 carries its identity.
func (t *tail) restart(logger watermill.LoggerAdapter) error {
	t.close()
	t.offset, t.lineNo, t.old = 0, 0, false
	if err := t.open(logger); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return t.saveOffset(0, 0)
}

// next returns the next complete line. It returns io.EOF at the end of the
// file without follow, and ctx.Err() or ErrSubscriberClosed when stopped.
func (t *tail) next(ctx context.Context, logger watermill.LoggerAdapter) (rawLine, error) {
	for {
		if t.f == nil {
			err := t.open(logger)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return rawLine{}, err
			}
			if err != nil && !t.follow {
				return rawLine{}, io.EOF // a finished rotated file and no current one
			}
			if err != nil { // follow mode: wait for the file to appear
				if !sleep(ctx, t.closing, t.poll) {
					return rawLine{}, t.stopErr(ctx)
				}
				continue
			}
		}
		if l, ok, err := t.readLine(); ok || err != nil {
			return l, err
		}
		// At EOF with no complete line.
		if !t.follow && !t.old {
			if t.pending > 0 {
				return t.torn(), nil
			}
			return rawLine{}, io.EOF
		}
		st, err := os.Stat(t.path)
		cur, cerr := t.f.Stat()
		switch {
		case cerr != nil:
			return rawLine{}, fmt.Errorf("file subscriber: %w", cerr)
		case t.old || err == nil && !os.SameFile(st, cur):
			// Rotated or recreated (or a rotated file found at startup is
			// done). First drain lines written to the old file between our
			// EOF and the Stat. The writer is done with it, so an
			// unfinished last line is torn, not incomplete.
			if l, ok, err := t.readLine(); ok || err != nil {
				return l, err
			}
			if t.pending > 0 {
				return t.torn(), nil
			}
			// Files rotated after this one (while no Subscriber ran, or
			// more than once within a poll) come before the current file,
			// oldest first.
			if ok, err := t.nextRotated(logger); ok || err != nil {
				if err != nil {
					return rawLine{}, err
				}
				continue
			}
			logger.Info("File was replaced, reading the new one", nil)
			if err := t.restart(logger); err != nil {
				return rawLine{}, err
			}
			continue
		case err == nil && st.Size() < t.offset+t.pending:
			logger.Info("File was truncated, reading from the start", nil)
			if err := t.restart(logger); err != nil {
				return rawLine{}, err
			}
			continue
		}
		// No new data yet (or the file is renamed away and not recreated).
		if !sleep(ctx, t.closing, t.poll) {
			return rawLine{}, t.stopErr(ctx)
		}
	}
}

func (t *tail) stopErr(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrSubscriberClosed
}

// readLine consumes one complete line; ok is false at EOF, where the
// unfinished rest is kept for the next call.
func (t *tail) readLine() (l rawLine, ok bool, err error) {
	for {
		chunk, err := t.br.ReadSlice('\n')
		t.pending += int64(len(chunk))
		if room := t.max + 1 - len(t.partial); room > 0 {
			t.partial = append(t.partial, chunk[:min(room, len(chunk))]...)
		}
		switch {
		case err == nil:
			t.offset += t.pending
			t.lineNo++
			l = rawLine{data: bytes.TrimSuffix(t.partial, []byte("\n")), no: t.lineNo, end: t.offset}
			if t.pending-1 > int64(t.max) {
				l.bad = fmt.Errorf("line of %d bytes is longer than max_line_bytes %d", t.pending-1, t.max)
				l.reason = ReasonTooLong
				l.data = l.data[:min(len(l.data), t.max)]
			}
			t.partial, t.pending = nil, 0
			return l, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return rawLine{}, false, nil
		default:
			return rawLine{}, false, fmt.Errorf("file subscriber: read %s: %w", t.path, err)
		}
	}
}

// torn consumes the unfinished last line of a file that is no longer written.
func (t *tail) torn() rawLine {
	t.offset += t.pending
	t.lineNo++
	l := rawLine{data: t.partial, no: t.lineNo, end: t.offset,
		bad: errors.New("incomplete last line (no trailing newline)"), reason: ReasonTorn}
	if len(l.data) > t.max {
		l.data = l.data[:t.max]
	}
	t.partial, t.pending = nil, 0
	return l
}
