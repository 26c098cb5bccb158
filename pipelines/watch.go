package pipelines

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultWatchDebounce is how long a configuration file must stay quiet after
// a change before it is read again.
const DefaultWatchDebounce = 300 * time.Millisecond

// WatchFile calls changed each time the content of the file at path differs
// from what it last was, until ctx ends. It watches the file's directory, not
// the file: editors that save by writing a new file and renaming it (vim),
// delete-then-create, and Kubernetes ConfigMaps (a symlink swapped under
// ..data) all replace the file, which a watch on the file itself would lose.
// Events are debounced, so a truncate-then-write is read once, whole; an
// empty or missing file is not reported (the next write will be).
func WatchFile(ctx context.Context, path string, debounce time.Duration, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := w.Add(dir); err != nil {
		w.Close()
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	last := digest(path)
	go func() {
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				// The file itself, or a Kubernetes ConfigMap's ..data symlink
				// swap; other files in the directory (say a sink's output)
				// would otherwise keep the debounce from ever firing.
				if n := filepath.Base(ev.Name); n == base || strings.HasPrefix(n, "..") {
					timer.Reset(debounce)
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			case <-timer.C:
				d := digest(path)
				if d == nil || bytes.Equal(d, last) {
					continue
				}
				last = d
				changed()
			}
		}
	}()
	return nil
}

// digest hashes the file's content; nil when it is missing or empty.
func digest(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}
