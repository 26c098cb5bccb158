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
// empty or missing file is not reported (the next write will be). When path
// is a symlink, the directory of the file it points to is watched too.
func WatchFile(ctx context.Context, path string, debounce time.Duration, changed func()) error {
	_, err := watchFile(ctx, path, debounce, changed, nil)
	return err
}

// watchFile is WatchFile, returning a channel closed once its goroutine has
// ended; checked, when not nil, is called after each debounced look at the
// file with whether changed was called.
func watchFile(ctx context.Context, path string, debounce time.Duration, changed func(), checked func(fired bool)) (<-chan struct{}, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	watched := map[string]bool{dir: true}
	target := ""
	// follow watches the directory of the file path points to (when another),
	// so an in-place edit of a symlink's target is seen.
	follow := func() {
		t, err := filepath.EvalSymlinks(path)
		if err != nil || t == path {
			target = ""
			return
		}
		target = t
		if d := filepath.Dir(t); !watched[d] && w.Add(d) == nil {
			watched[d] = true
		}
	}
	follow()
	// relevant tells the events that may change what path reads: the file's
	// own name in its directory, names starting with ".." there (a
	// Kubernetes ..data swap), and the symlink target.
	relevant := func(name string) bool {
		name = filepath.Clean(name)
		if filepath.Dir(name) == dir {
			base := filepath.Base(name)
			if base == filepath.Base(path) || strings.HasPrefix(base, "..") {
				return true
			}
		}
		return target != "" && name == target
	}
	last := digest(path)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if relevant(ev.Name) {
					timer.Reset(debounce)
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
				timer.Reset(debounce) // events may have been lost: look again
			case <-timer.C:
				follow()
				d := digest(path)
				fired := d != nil && !bytes.Equal(d, last) && ctx.Err() == nil
				if fired {
					last = d
					changed()
				}
				if checked != nil {
					checked(fired)
				}
			}
		}
	}()
	return done, nil
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
