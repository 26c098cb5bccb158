package pipelines_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/pipelines"
)

// End-to-end tests of the broker kinds against the brokers on this machine
// (.ci/services starts them): Loom -> broker and broker -> Loom through
// pipelines of one Engine, with an embedded Loom router.

const (
	natsAddr   = "127.0.0.1:4222"
	rabbitAddr = "127.0.0.1:5672"
)

// needBroker fails the test when the broker's port does not answer: the
// brokers are part of the test environment (bash .ci/services starts them).
func needBroker(t testing.TB, name, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s is not answering on %s (%v): run bash .ci/services", name, addr, err)
	}
	c.Close()
}

// waitLong polls cond until it holds; the deadline only catches a hang.
func waitLong(t testing.TB, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mixedMessages makes n messages of mixed sizes: empty payloads, binary ones
// (not UTF-8), text up to 2 KiB and, every 500th, a 200 KiB binary one; each
// with a Loom key and metadata.
func mixedMessages(n int) []*message.Message {
	rnd := rand.New(rand.NewPCG(7, uint64(n)))
	out := make([]*message.Message, n)
	for i := range n {
		var p []byte
		switch {
		case i%500 == 7:
			p = make([]byte, 200<<10)
			for j := range p {
				p[j] = byte(rnd.UintN(256))
			}
			p[0] = 0xff
		case i%10 == 0:
			p = []byte{}
		case i%10 == 1:
			p = make([]byte, 1+rnd.IntN(4096))
			for j := range p {
				p[j] = byte(rnd.UintN(256))
			}
			p[0] = 0xfe // never valid UTF-8
		default:
			p = []byte(fmt.Sprintf("message %d %s", i, strings.Repeat("x", rnd.IntN(2048))))
		}
		m := message.NewMessage(uuid.NewString(), p)
		m.Metadata.Set("loom_key", "k"+strconv.Itoa(i%13))
		m.Metadata.Set("seq", strconv.Itoa(i))
		m.Metadata.Set("note", "héllo wörld")
		out[i] = m
	}
	return out
}

// writeInput writes msgs as the JSONL input of a file source: <dir>/<topic>.jsonl.
func writeInput(t testing.TB, dir, topic string, msgs []*message.Message) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		l, err := file.MarshalLine(m, "loom_key")
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(l)
	}
	if err := os.WriteFile(filepath.Join(dir, topic+".jsonl"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readMessages reads a file sink's JSONL output back into messages.
func readMessages(t testing.TB, path string) []*message.Message {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*message.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		m, err := file.UnmarshalLine(sc.Bytes(), "loom_key")
		if err != nil {
			// The sink may be mid-line; the next read sees it whole.
			break
		}
		out = append(out, m)
	}
	return out
}

// countLines counts the complete lines of a file, cheaply.
func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// roundTripConfig is Loom room rt_in -> broker (to) -> broker (from) -> Loom
// room rt_out -> file: both directions of a broker hop, through pipelines,
// with format: envelope on the Loom sink so UUID and metadata cross the Loom
// hop. The test feeds rt_in itself (publishToRoom: confirm mode, 16 at
// once): a file source hands out one line at a time and waits for its ack,
// which made the feed, not the broker, the slowest hop (about 40 msg/s on a
// loaded 2-core machine).
const roundTripConfig = `
log: {stats_interval: 0}
shutdown_timeout: 2m
connections:
  local: {embedded: true}
  broker: @CONN@
pipelines:
  to_broker:
    from: {type: loom, connection: local, room: rt_in, consumers: 4}
    to:
      broker: @TO@
    retry: {max_retries: 1000, initial_interval: 50ms, max_interval: 1s}
  from_broker:
    from: @FROM@
    to:
      room: {type: loom, connection: local, room: rt_out, format: envelope}
    retry: {max_retries: 1000, initial_interval: 50ms, max_interval: 1s}
  drain:
    from: {type: loom, connection: local, room: rt_out, consumers: 4}
    to:
      out: {type: file, dir: @OUT@, topic: out, fsync: never}
`

type roundTrip struct {
	t        *testing.T
	msgs     []*message.Message
	out      string
	engine   *pipelines.Engine
	fed      chan struct{} // closed when every message was published to rt_in
	start    time.Time
	duration time.Duration
}

// startRoundTrip starts the engine and feeds rt_in in the background.
func startRoundTrip(t *testing.T, msgs []*message.Message, conn, to, from string) *roundTrip {
	rt := &roundTrip{t: t, msgs: msgs, out: filepath.Join(t.TempDir(), "out"), fed: make(chan struct{})}
	cfg := parse(t, fill(roundTripConfig, "@CONN@", conn, "@TO@", to, "@FROM@", from, "@OUT@", rt.out))
	rt.start = time.Now()
	rt.engine = startEngine(t, cfg)
	go func() {
		defer close(rt.fed)
		publishToRoom(t, rt.engine, "rt_in", msgs)
	}()
	t.Cleanup(func() { <-rt.fed })
	return rt
}

func (rt *roundTrip) outPath() string { return filepath.Join(rt.out, "out.jsonl") }

// wait waits until every message is out, distinct by UUID.
func (rt *roundTrip) wait() {
	t := rt.t
	n := len(rt.msgs)
	waitLong(t, fmt.Sprintf("%d messages through the broker and back", n), 15*time.Minute, func() bool {
		select {
		case <-rt.fed:
			if t.Failed() {
				t.FailNow() // the feed failed: what it did not publish never comes
			}
		default:
		}
		if countLines(rt.outPath()) < n {
			return false
		}
		seen := map[string]bool{}
		for _, m := range readMessages(t, rt.outPath()) {
			seen[m.UUID] = true
		}
		return len(seen) >= n
	})
	rt.duration = time.Since(rt.start)
}

// check compares what came out with what went in: every message, once or
// more; payload byte for byte, key and metadata. It returns the duplicates.
func (rt *roundTrip) check() (dups int) {
	t := rt.t
	got := map[string][]*message.Message{}
	for _, m := range readMessages(t, rt.outPath()) {
		got[m.UUID] = append(got[m.UUID], m)
	}
	bad := 0
	for _, want := range rt.msgs {
		copies := got[want.UUID]
		if len(copies) == 0 {
			t.Errorf("message %s (seq %s) lost", want.UUID, want.Metadata["seq"])
			bad++
			continue
		}
		dups += len(copies) - 1
		for _, m := range copies {
			if !bytes.Equal(m.Payload, want.Payload) {
				t.Errorf("message %s: payload of %d bytes, want %d bytes as sent", want.UUID, len(m.Payload), len(want.Payload))
				bad++
			}
			for k, v := range want.Metadata {
				if m.Metadata[k] != v {
					t.Errorf("message %s: metadata %s = %q, want %q (all: %v)", want.UUID, k, m.Metadata[k], v, m.Metadata)
					bad++
				}
			}
		}
		if bad > 20 {
			t.Fatal("too many differences")
		}
	}
	if len(got) != len(rt.msgs) {
		t.Errorf("%d distinct messages out, want %d", len(got), len(rt.msgs))
	}
	return dups
}

// restartService stops and starts a broker by the machine's own commands,
// and waits until its port answers again.
func restartService(t *testing.T, name, addr string, stop, start []string, down time.Duration) {
	t.Helper()
	t.Logf("%s: stopping (%s)", name, strings.Join(stop, " "))
	if out, err := exec.Command(stop[0], stop[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s: stop: %v: %s", name, err, out)
	}
	time.Sleep(down)
	t.Logf("%s: starting (%s)", name, strings.Join(start, " "))
	if out, err := exec.Command(start[0], start[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s: start: %v: %s", name, err, out)
	}
	waitService(t, name, addr)
}

// waitService waits until a service's port answers.
func waitService(t testing.TB, name, addr string) {
	end := time.Now().Add(5 * time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Errorf("%s: still not answering on %s: %v", name, addr, err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// suffix makes names unique to one test run.
func suffix() string { return strings.ReplaceAll(uuid.NewString()[:8], "-", "") }

func dialQuick(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }

func execCombined(args ...string) ([]byte, error) {
	return exec.Command(args[0], args[1:]...).CombinedOutput()
}
