package file

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

type offsetFile struct {
	Offset int64 `json:"offset"`
	Line   int64 `json:"line"`
	// File identifies the file Offset belongs to, so that it is not applied
	// to another file after a rotation. Absent in offset files of older
	// versions and where the identity is unknown.
	File *fileID `json:"file,omitempty"`
}

// fileID is a file's identity: it stays the same when the file is renamed
// (rotated) and differs for a recreated file.
type fileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (t *tail) loadOffset() error {
	if t.offPath == "" {
		return nil
	}
	b, err := os.ReadFile(t.offPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("file subscriber: read offset: %w", err)
	}
	var o offsetFile
	// Starting over on a broken offset file would redeliver everything, so
	// refuse instead.
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("file subscriber: offset file %s: %w", t.offPath, err)
	}
	t.offset, t.lineNo, t.want = o.Offset, o.Line, o.File
	return nil
}

// saveOffset stores the offset atomically: temp file, fsync, rename, fsync
// of the directory.
func (t *tail) saveOffset(offset, line int64) error {
	if t.offPath == "" {
		return nil
	}
	dir := filepath.Dir(t.offPath)
	b, _ := json.Marshal(offsetFile{Offset: offset, Line: line, File: t.id})
	f, err := os.CreateTemp(dir, "."+filepath.Base(t.offPath)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("file subscriber: save offset: %w", err)
	}
	_, werr := f.Write(b)
	err = errors.Join(werr, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(f.Name(), t.offPath)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("file subscriber: save offset %s: %w", t.offPath, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("file subscriber: save offset: %w", err)
	}
	err = errors.Join(d.Sync(), d.Close())
	if err != nil {
		return fmt.Errorf("file subscriber: fsync %s: %w", dir, err)
	}
	return nil
}

// prepareOffsetDir creates dir and checks that offset files can be written
// in it, the way saveOffset writes them.
func prepareOffsetDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".offset-check-*.tmp")
	if err != nil {
		return fmt.Errorf("cannot write offset files: %w", err)
	}
	return errors.Join(f.Close(), os.Remove(f.Name()))
}
