package pipelines

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// saver is one way of saving a configuration file that editors and
// deployments use.
type saver struct {
	name string
	// setup writes the first content and returns the path to watch.
	setup func(t *testing.T, dir, content string) string
	save  func(t *testing.T, dir, content string)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func plainSetup(t *testing.T, dir, content string) string {
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

var savers = []saver{
	{
		name:  "in place (truncate, then write)",
		setup: plainSetup,
		save: func(t *testing.T, dir, content string) {
			f, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
			must(t, err)
			must(t, f.Sync()) // the empty file is on disk before the write
			_, err = f.WriteString(content)
			must(t, err)
			must(t, f.Close())
		},
	},
	{
		name:  "vim (write a new file, rename it over)",
		setup: plainSetup,
		save: func(t *testing.T, dir, content string) {
			tmp := filepath.Join(dir, ".config.yaml.swp")
			must(t, os.WriteFile(tmp, []byte(content), 0o644))
			must(t, os.Rename(tmp, filepath.Join(dir, "config.yaml")))
		},
	},
	{
		name:  "delete, then create",
		setup: plainSetup,
		save: func(t *testing.T, dir, content string) {
			path := filepath.Join(dir, "config.yaml")
			must(t, os.Remove(path))
			must(t, os.WriteFile(path, []byte(content), 0o644))
		},
	},
	{
		// A ConfigMap volume: config.yaml -> ..data/config.yaml, ..data ->
		// a timestamped directory; an update writes a new directory and
		// renames a new ..data symlink over the old one.
		name: "kubernetes (..data symlink swap)",
		setup: func(t *testing.T, dir, content string) string {
			k8sVersion(t, dir, content)
			must(t, os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(dir, "config.yaml")))
			return filepath.Join(dir, "config.yaml")
		},
		save: func(t *testing.T, dir, content string) {
			old, err := os.Readlink(filepath.Join(dir, "..data"))
			must(t, err)
			k8sVersion(t, dir, content)
			must(t, os.RemoveAll(filepath.Join(dir, old)))
		},
	},
	{
		name: "symlink to a file in another directory, edited in place",
		setup: func(t *testing.T, dir, content string) string {
			real := filepath.Join(dir, "real")
			must(t, os.Mkdir(real, 0o755))
			must(t, os.WriteFile(filepath.Join(real, "config.yaml"), []byte(content), 0o644))
			link := filepath.Join(dir, "etc")
			must(t, os.Mkdir(link, 0o755))
			must(t, os.Symlink(filepath.Join(real, "config.yaml"), filepath.Join(link, "config.yaml")))
			return filepath.Join(link, "config.yaml")
		},
		save: func(t *testing.T, dir, content string) {
			must(t, os.WriteFile(filepath.Join(dir, "real", "config.yaml"), []byte(content), 0o644))
		},
	},
}

var k8sSeq int

// k8sVersion writes content as a new timestamped directory and points ..data
// at it with an atomic rename of a fresh symlink.
func k8sVersion(t *testing.T, dir, content string) {
	k8sSeq++
	ts := fmt.Sprintf("..2024_01_01_00_00_%02d.%d", k8sSeq%60, k8sSeq)
	must(t, os.Mkdir(filepath.Join(dir, ts), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, ts, "config.yaml"), []byte(content), 0o644))
	tmp := filepath.Join(dir, "..data_tmp")
	must(t, os.Symlink(ts, tmp))
	must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
}

// watchRecorder keeps what the watcher did: the file's content at each call of
// changed, and how many debounced looks it took.
type watchRecorder struct {
	mu     sync.Mutex
	path   string
	fired  []string
	checks int
}

func (r *watchRecorder) changed() {
	b, _ := os.ReadFile(r.path)
	r.mu.Lock()
	r.fired = append(r.fired, string(b))
	r.mu.Unlock()
}

func (r *watchRecorder) checked(bool) {
	r.mu.Lock()
	r.checks++
	r.mu.Unlock()
}

func (r *watchRecorder) state() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.fired), r.checks
}

// waitFor polls cond until it holds; the deadline is generous, for a loaded
// machine, and never part of what is tested.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchFile(t *testing.T) {
	for _, s := range savers {
		t.Run(s.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			dir := t.TempDir()
			const a, b, c = "pipelines: {a: {}}\n", "pipelines: {b: {}}\n", "pipelines: {c: {}}\n"
			path := s.setup(t, dir, a)
			rec := &watchRecorder{path: path}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done, err := watchFile(ctx, path, 50*time.Millisecond, rec.changed, rec.checked)
			must(t, err)

			// A new content is reported once, and what changed sees is whole.
			s.save(t, dir, b)
			waitFor(t, "the change to b", func() bool { f, _ := rec.state(); return len(f) >= 1 })

			// The same content again, then an empty file: a look is taken
			// after each, and neither is reported.
			for _, same := range []string{b, ""} {
				_, before := rec.state()
				s.save(t, dir, same)
				waitFor(t, fmt.Sprintf("a look after saving %q", same), func() bool { _, n := rec.state(); return n > before })
			}

			// From the empty file to a new content: reported.
			s.save(t, dir, c)
			waitFor(t, "the change to c", func() bool { f, _ := rec.state(); return len(f) >= 2 })

			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the watcher did not stop after its context ended")
			}
			if fired, _ := rec.state(); !slices.Equal(fired, []string{b, c}) {
				t.Errorf("changed saw %q, want exactly b then c", fired)
			}
		})
	}
}

// TestWatchFileBusyDirectory: a file written again and again next to the
// configuration (logs, data) does not hold its reload back.
func TestWatchFileBusyDirectory(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	path := plainSetup(t, dir, "a: 1\n")
	rec := &watchRecorder{path: path}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := watchFile(ctx, path, 50*time.Millisecond, rec.changed, nil)
	must(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // busier than the debounce
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				_ = os.WriteFile(filepath.Join(dir, "data.jsonl"), []byte(fmt.Sprint(i)), 0o644)
			}
		}
	}()
	must(t, os.WriteFile(path, []byte("a: 2\n"), 0o644))
	waitFor(t, "the change despite the busy directory", func() bool { f, _ := rec.state(); return len(f) == 1 })
	close(stop)
	wg.Wait()
	cancel()
	<-done
}

func TestWatchFileMissingDirectory(t *testing.T) {
	err := WatchFile(context.Background(), filepath.Join(t.TempDir(), "nope", "config.yaml"), time.Millisecond, func() {})
	if err == nil {
		t.Fatal("watching a file in a missing directory: no error")
	}
}
