package file

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// readLines parses every line of a JSONL file, failing on any bad one.
func readLines(t *testing.T, path string) []*message.Message {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*message.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for n := 1; sc.Scan(); n++ {
		m, err := UnmarshalLine(sc.Bytes(), DefaultKeyMetadata)
		if err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPublishJSONLWritesOneLinePerMessage(t *testing.T) {
	for _, fsync := range []string{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			p := newPub(t, PublisherConfig{Dir: dir, Fsync: fsync, FsyncInterval: time.Millisecond})
			m1 := message.NewMessage("u1", []byte("one"))
			m1.Metadata.Set("loom_key", "k1")
			m2 := message.NewMessage("u2", []byte{0xff, 0})
			publish(t, p, "orders", m1, m2)
			publish(t, p, "other", message.NewMessage("u3", []byte("three")))
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := p.Publish("orders", m1); !errors.Is(err, ErrPublisherClosed) {
				t.Fatalf("Publish after Close: %v", err)
			}
			got := readLines(t, filepath.Join(dir, "orders.jsonl"))
			if len(got) != 2 || !got[0].Equals(m1) || !got[1].Equals(m2) {
				t.Fatalf("orders.jsonl holds %v", got)
			}
			raw, _ := os.ReadFile(filepath.Join(dir, "orders.jsonl"))
			if !bytes.HasPrefix(raw, []byte(`{"uuid":"u1","key":"k1",`)) {
				t.Fatalf("unexpected first line: %s", raw)
			}
			if got := readLines(t, filepath.Join(dir, "other.jsonl")); len(got) != 1 || got[0].UUID != "u3" {
				t.Fatalf("other.jsonl holds %v", got)
			}
		})
	}
}

func TestPublishRejectsUnsafeTopic(t *testing.T) {
	p := newPub(t, PublisherConfig{Dir: t.TempDir()})
	for _, topic := range []string{"", "..", "a/b", `a\b`, "../x"} {
		if err := p.Publish(topic, message.NewMessage("u", nil)); err == nil {
			t.Errorf("topic %q accepted", topic)
		}
	}
}

func TestPublishJSONLAppendsAndRepairsTornTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.jsonl")
	// A previous writer died mid-line.
	if err := os.WriteFile(path, []byte("{\"uuid\":\"old\",\"payload\":\"x\"}\n{\"uuid\":\"to"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p, "t", message.NewMessage("new", []byte("y")))
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 || lines[1] != `{"uuid":"to` {
		t.Fatalf("torn line not isolated: %q", lines)
	}
	if m, err := UnmarshalLine([]byte(lines[2]), ""); err != nil || m.UUID != "new" {
		t.Fatalf("new line %q: %v", lines[2], err)
	}
}

func TestPublishRaw(t *testing.T) {
	for _, fsync := range []string{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			p := newPub(t, PublisherConfig{
				Dir: dir, Format: FormatRaw, Fsync: fsync, FsyncInterval: time.Millisecond,
				NameTemplate: `{{.Topic}}/{{.Key}}/{{.Seq}}-{{.UUID}}-{{.Time.Year}}.bin`,
			})
			m := message.NewMessage("u1", []byte{0, 1, 2, 0xff})
			m.Metadata.Set("loom_key", "k")
			publish(t, p, "blobs", m, message.NewMessage("u2", []byte("second")))
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			year := time.Now().UTC().Year()
			want := map[string][]byte{
				fmt.Sprintf("blobs/k/1-u1-%d.bin", year): {0, 1, 2, 0xff},
				fmt.Sprintf("blobs/2-u2-%d.bin", year):   []byte("second"), // empty Key drops a level
			}
			got := map[string][]byte{}
			err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(dir, path)
				got[filepath.ToSlash(rel)], err = os.ReadFile(path)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("files %v, want %v (temp files must be gone)", keys(got), keys(want))
			}
			for name, payload := range want {
				if !bytes.Equal(got[name], payload) {
					t.Errorf("%s = %q, want %q", name, got[name], payload)
				}
			}
		})
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestPublishRawRejectsEscapingNames(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	// Templates that escape or fail for every message are refused by
	// Validate; those that do so only for some messages' data are refused
	// by Publish.
	cases := map[string]struct {
		tmpl      string
		atPublish bool
	}{
		"dotdot topic":  {"{{.Topic}}/{{.UUID}}", true},
		"dotdot uuid":   {"{{.UUID}}", true},
		"absolute":      {outside + "/{{.UUID}}", false},
		"dotdot inside": {"a/../{{.UUID}}", false},
		"empty":         {"{{if false}}x{{end}}", false},
		"unknown field": {"{{.Nope}}", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := PublisherConfig{Dir: dir, Format: FormatRaw, NameTemplate: tc.tmpl}
			if !tc.atPublish {
				if _, err := NewPublisher(cfg, nil); err == nil || !strings.Contains(err.Error(), "name_template: ") {
					t.Fatalf("NewPublisher err = %v, want a name_template error", err)
				}
				return
			}
			p := newPub(t, cfg)
			topic, uuid := "t", "u"
			if name == "dotdot topic" {
				topic = ".."
			}
			if name == "dotdot uuid" {
				uuid = "../../x"
			}
			if err := p.Publish(topic, message.NewMessage(uuid, []byte("p"))); err == nil {
				t.Fatal("escaping name accepted")
			}
		})
	}
	for _, d := range []string{dir, outside} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Fatalf("%s has files after rejected publishes: %v", d, entries)
		}
	}
}

func TestRotationBySize(t *testing.T) {
	dir := t.TempDir()
	msg := func(i int) *message.Message { return message.NewMessage(fmt.Sprintf("u%02d", i), []byte("0123456789")) }
	lineLen, _ := MarshalLine(msg(0), DefaultKeyMetadata)
	// Room for three lines per file.
	p := newPub(t, PublisherConfig{Dir: dir, MaxBytes: int64(3*len(lineLen) + 1)})
	for i := range 10 {
		publish(t, p, "s", msg(i))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	rotated := rotatedFiles(t, dir, "s")
	if len(rotated) != 3 {
		t.Fatalf("want 3 rotated files, got %v", rotated)
	}
	if st := p.Stats(); st != (PublisherStats{Written: 10, Rotated: 3}) {
		t.Fatalf("Stats() = %+v, want 10 written, 3 rotated", st)
	}
	var all []string
	for _, name := range append(rotated, "s.jsonl") {
		st, _ := os.Stat(filepath.Join(dir, name))
		if st.Size() > int64(3*len(lineLen)+1) {
			t.Errorf("%s has %d bytes, more than max_bytes", name, st.Size())
		}
		for _, m := range readLines(t, filepath.Join(dir, name)) {
			all = append(all, m.UUID)
		}
	}
	if got := strings.Join(all, ","); got != "u00,u01,u02,u03,u04,u05,u06,u07,u08,u09" {
		t.Fatalf("messages across files in rotation order: %s", got)
	}
}

var rotatedNameRE = regexp.MustCompile(`^(.+)-(\d{8}T\d{6}\.\d{9}Z)-(\d+)\.jsonl$`)

// rotatedFiles lists <topic>-<time>-<seq>.jsonl files in rotation order.
func rotatedFiles(t *testing.T, dir, topic string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type rf struct {
		name string
		seq  int
	}
	var out []rf
	for _, e := range entries {
		m := rotatedNameRE.FindStringSubmatch(e.Name())
		if m == nil || m[1] != topic {
			continue
		}
		var seq int
		fmt.Sscan(m[3], &seq)
		out = append(out, rf{e.Name(), seq})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	names := make([]string, len(out))
	for i, r := range out {
		names[i] = r.name
	}
	return names
}

func TestRotationByAge(t *testing.T) {
	dir := t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir, MaxAge: time.Minute})
	var mu sync.Mutex
	clock := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	publish(t, p, "a", message.NewMessage("u1", []byte("x")))
	advance(59 * time.Second)
	publish(t, p, "a", message.NewMessage("u2", []byte("x")))
	if got := rotatedFiles(t, dir, "a"); len(got) != 0 {
		t.Fatalf("rotated before max_age: %v", got)
	}
	advance(time.Second)
	publish(t, p, "a", message.NewMessage("u3", []byte("x")))
	rotated := rotatedFiles(t, dir, "a")
	if len(rotated) != 1 || rotated[0] != "a-20300102T030505.000000006Z-1.jsonl" {
		t.Fatalf("want one rotated file named after the rotation time, got %v", rotated)
	}
	if got := readLines(t, filepath.Join(dir, rotated[0])); len(got) != 2 || got[0].UUID != "u1" || got[1].UUID != "u2" {
		t.Fatalf("rotated file holds %v", got)
	}
	if got := readLines(t, filepath.Join(dir, "a.jsonl")); len(got) != 1 || got[0].UUID != "u3" {
		t.Fatalf("current file holds %v", got)
	}
}

func TestConcurrentPublishers(t *testing.T) {
	const goroutines, perG = 8, 150
	for _, format := range []string{FormatJSONL, FormatRaw} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			cfg := PublisherConfig{Dir: dir, Format: format, Fsync: FsyncNever}
			if format == FormatJSONL {
				cfg.MaxBytes = 1 << 20 // rotate under load too
			}
			p := newPub(t, cfg)
			// Sizes up to 64 KiB make interleaved writes show up if locking
			// were broken.
			payload := func(g, i int) []byte {
				return bytes.Repeat([]byte(fmt.Sprintf("%d-%d;", g, i)), 1+(g*perG+i)%8000)
			}
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range perG {
						if err := p.Publish("c", message.NewMessage(fmt.Sprintf("%d-%d", g, i), payload(g, i))); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			check := func(uuid string, got []byte) {
				var g, i int
				if _, err := fmt.Sscanf(uuid, "%d-%d", &g, &i); err != nil {
					t.Fatalf("bad uuid %q", uuid)
				}
				if !bytes.Equal(got, payload(g, i)) {
					t.Fatalf("payload of %s damaged", uuid)
				}
				seen[uuid]++
			}
			if format == FormatJSONL {
				for _, name := range append(rotatedFiles(t, dir, "c"), "c.jsonl") {
					for _, m := range readLines(t, filepath.Join(dir, name)) {
						check(m.UUID, m.Payload)
					}
				}
			} else {
				entries, _ := os.ReadDir(filepath.Join(dir, "c"))
				for _, e := range entries {
					b, _ := os.ReadFile(filepath.Join(dir, "c", e.Name()))
					check(strings.TrimSuffix(e.Name(), ".bin"), b)
				}
			}
			if len(seen) != goroutines*perG {
				t.Fatalf("%d distinct messages, want %d", len(seen), goroutines*perG)
			}
			for uuid, n := range seen {
				if n != 1 {
					t.Fatalf("%s present %d times", uuid, n)
				}
			}
		})
	}
}

// A failed (short) write must not leave a torn line: the next line would be
// glued to it and the reader would drop a message whose Publish returned
// nil. RLIMIT_FSIZE makes write(2) stop part-way with EFBIG, as a full disk
// does with ENOSPC.
func TestPublishShortWriteLeavesNoTornLine(t *testing.T) {
	dir := t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir, Fsync: FsyncNever})
	publish(t, p, "t", message.NewMessage("m1", []byte("first")))
	st, err := os.Stat(filepath.Join(dir, "t.jsonl"))
	if err != nil {
		t.Fatal(err)
	}

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(st.Size()) + 20, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	err = p.Publish("t", message.NewMessage("m2", []byte(strings.Repeat("z", 100))))
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, syscall.EFBIG) || !strings.Contains(err.Error(), "t.jsonl") {
		t.Fatalf("publish past the size limit = %v, want EFBIG naming the file", err)
	}
	if after, _ := os.Stat(filepath.Join(dir, "t.jsonl")); after.Size() != st.Size() {
		t.Fatalf("file has %d bytes after the failed write, want %d (partial line removed)", after.Size(), st.Size())
	}

	publish(t, p, "t", message.NewMessage("m3", []byte("third")))
	if got := readLines(t, filepath.Join(dir, "t.jsonl")); len(got) != 2 || got[0].UUID != "m1" || got[1].UUID != "m3" {
		t.Fatalf("file holds %v, want m1 and m3", got)
	}
}

// A topic whose rotated file name would exceed NAME_MAX is refused at once
// (it used to make rotation spin forever holding the mutex), and rotation
// itself returns errors other than "not exist" from checking a name.
func TestRotationNameTooLong(t *testing.T) {
	dir := t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir, MaxBytes: 10, Fsync: FsyncNever})
	long := strings.Repeat("a", 240)
	err := p.Publish(long, message.NewMessage("1", []byte("x")))
	if err == nil || !strings.Contains(err.Error(), "longer than 201") {
		t.Fatalf("Publish to a 240-byte topic with rotation = %v, want it refused", err)
	}
	// Without rotation the same topic fits (<topic>.jsonl is 246 bytes).
	p2 := newPub(t, PublisherConfig{Dir: dir, Fsync: FsyncNever})
	publish(t, p2, long, message.NewMessage("1", []byte("x")))

	// rotate itself, bypassing the check: the rotated name is too long.
	// Not closed on timeout: a rotate stuck holding p.mu would hang Close.
	p3, err := NewPublisher(PublisherConfig{Dir: dir, MaxBytes: 10, Fsync: FsyncNever}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		p3.mu.Lock()
		defer p3.mu.Unlock()
		jf, err := p3.openJSONL(long)
		if err == nil {
			err = p3.rotate(long, jf)
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(waitTime):
		t.Fatal("rotate did not return")
	}
	if !errors.Is(err, syscall.ENAMETOOLONG) || !strings.Contains(err.Error(), long+".jsonl") {
		t.Fatalf("rotate = %v, want ENAMETOOLONG naming the file", err)
	}
	if err := p3.Close(); err != nil {
		t.Fatal(err)
	}
}

// Raw files are never replaced: {{.Seq}} starts at 1 again after a restart.
func TestPublishRawNeverReplacesAFile(t *testing.T) {
	dir := t.TempDir()
	cfg := PublisherConfig{Dir: dir, Format: FormatRaw, NameTemplate: "{{.Topic}}/{{.Seq}}.bin"}
	p1 := newPub(t, cfg)
	publish(t, p1, "t", message.NewMessage("a", []byte("first run")))
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	p2 := newPub(t, cfg)
	err := p2.Publish("t", message.NewMessage("b", []byte("second run")))
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), filepath.Join(dir, "t", "1.bin")) {
		t.Fatalf("Publish onto an existing name = %v, want ErrExist naming the file", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "t", "1.bin")); string(b) != "first run" {
		t.Fatalf("earlier message replaced: file holds %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "t")); len(entries) != 1 {
		t.Fatalf("temp file left behind: %v", entries)
	}
}
