package file

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// crashDirEnv switches the test binary into writer mode (TestHelperWriter).
const crashDirEnv = "LOOMBRIDGE_FILE_CRASH_WRITER_DIR"

// selfCheckingPayload is <8-byte length><sha256 of data><data>, so a
// truncated or mixed payload is detected without knowing what was written.
func selfCheckingPayload(seed uint64, size int) []byte {
	data := make([]byte, size)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	_, _ = rand.NewChaCha8(s).Read(data)
	sum := sha256.Sum256(data)
	out := binary.BigEndian.AppendUint64(nil, uint64(size))
	out = append(out, sum[:]...)
	return append(out, data...)
}

func checkPayload(p []byte) error {
	if len(p) < 40 {
		return fmt.Errorf("payload of %d bytes is shorter than its header", len(p))
	}
	if n := binary.BigEndian.Uint64(p); n != uint64(len(p)-40) {
		return fmt.Errorf("payload holds %d data bytes, header says %d", len(p)-40, n)
	}
	if sum := sha256.Sum256(p[40:]); !bytes.Equal(sum[:], p[8:40]) {
		return errors.New("payload checksum mismatch")
	}
	return nil
}

// TestHelperWriter is not a test: TestKill9MidWrite runs the test binary
// with crashDirEnv set, and this then publishes big messages (raw and jsonl,
// concurrently) until it is killed, printing a line per message written.
func TestHelperWriter(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child process of TestKill9MidWrite")
	}
	raw, err := NewPublisher(PublisherConfig{Dir: dir, Format: FormatRaw, Fsync: FsyncNever}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jsonl, err := NewPublisher(PublisherConfig{Dir: dir, Fsync: FsyncNever}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Big random payloads: base64 JSONL lines of ~3 MB take about a
	// millisecond to write, so a kill sent as a write starts often lands
	// inside it.
	payloads := map[string][][]byte{
		"jsonl": {selfCheckingPayload(1, 1<<20), selfCheckingPayload(2, 1<<20-12345)},
		"raw":   {selfCheckingPayload(3, 256<<10), selfCheckingPayload(4, 256<<10-4321)},
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	jsonl.beforeWrite = func() { say("writing jsonl") }
	var wg sync.WaitGroup
	for _, pub := range []struct {
		name string
		p    *Publisher
	}{{"raw", raw}, {"jsonl", jsonl}} {
		wg.Go(func() {
			for i := 0; ; i++ {
				payload := payloads[pub.name][i%2]
				if err := pub.p.Publish("crash", message.NewMessage(fmt.Sprintf("%s-%d", pub.name, i), payload)); err != nil {
					t.Error(err)
					return
				}
				say("wrote %s %d", pub.name, i)
			}
		})
	}
	wg.Wait()
}

func TestKill9MidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a writer process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once each writer has finished a few messages, as the JSONL writer
	// starts its next write.
	done := map[string]int{}
	lines := bufio.NewScanner(stdout)
	for done["raw"] < 3 || done["jsonl"] < 3 || lines.Text() != "writing jsonl" {
		if !lines.Scan() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("writer stopped early: %v\n%s", lines.Err(), stderr.String())
		}
		if f := strings.Fields(lines.Text()); len(f) == 3 && f[0] == "wrote" {
			done[f[1]]++
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("writer was not killed by SIGKILL: %v", err)
	}

	// Raw: every file under a final name is complete; only dot-temp files
	// may be partial.
	entries, err := os.ReadDir(filepath.Join(dir, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	var final, temps int
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".tmp") {
			temps++
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "crash", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkPayload(b); err != nil {
			t.Errorf("raw file %s under its final name: %v", e.Name(), err)
		}
		final++
	}
	if final < 3 {
		t.Fatalf("%d complete raw files, the writer reported at least 3", final)
	}

	// JSONL: the reader delivers exactly the complete lines, all valid, and
	// reports an unterminated tail as a bad line.
	path := filepath.Join(dir, "crash.jsonl")
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	complete := bytes.Count(content, []byte("\n"))
	torn := len(content) > 0 && content[len(content)-1] != '\n'
	t.Logf("after kill: %d raw files (+%d temp), %d complete jsonl lines, torn tail: %v", final, temps, complete, torn)

	got, dead := readAllWithDeadLetters(t, dir)
	if len(got) != complete || complete < 3 {
		t.Fatalf("reader delivered %d messages, file has %d complete lines", len(got), complete)
	}
	for i, m := range got {
		if m.UUID != fmt.Sprintf("jsonl-%d", i) {
			t.Fatalf("message %d is %s", i, m.UUID)
		}
		if err := checkPayload(m.Payload); err != nil {
			t.Fatalf("message %s: %v", m.UUID, err)
		}
	}
	if torn != (len(dead) == 1) || len(dead) > 1 {
		t.Fatalf("torn tail %v but %d dead letters", torn, len(dead))
	}
	if torn && (dead[0].Metadata.Get("line") != fmt.Sprint(complete+1) ||
		!strings.Contains(dead[0].Metadata.Get("error"), "incomplete last line")) {
		t.Fatalf("torn tail reported as %v", dead[0].Metadata)
	}

	// A new writer after the crash keeps the torn tail apart from new lines.
	p := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p, "crash", message.NewMessage("after", selfCheckingPayload(4, 100)))
	got, dead = readAllWithDeadLetters(t, dir)
	if len(got) != complete+1 || got[complete].UUID != "after" || torn != (len(dead) == 1) {
		t.Fatalf("after restart: %d messages (last %s), %d dead letters", len(got), got[len(got)-1].UUID, len(dead))
	}
}

func readAllWithDeadLetters(t *testing.T, dir string) ([]*message.Message, []*message.Message) {
	t.Helper()
	dlq := &capturePub{}
	s := newSub(t, SubscriberConfig{Dir: dir, NoOffset: true, DeadLetter: dlq, DeadLetterTopic: "dead"})
	got := drain(t, subscribe(t, s, "crash"))
	_, dead := dlq.got()
	return got, dead
}
