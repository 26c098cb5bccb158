package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/webhook"
	"github.com/loombridge/loombridge/pipelines"
)

// Acceptance tests of buffer: (issue 19) against the real binary: kill -9
// mid-flow loses nothing the source was told is stored, and a 256 MiB
// message crosses the buffer byte for byte.

// hookReceiver is a webhook endpoint counting deliveries by webhook-id (the
// message UUID). Until open is called it answers only the first holdAfter
// deliveries: later ones are counted, as a receiver that did its work would,
// but their answer waits, so a backlog builds up in the buffer and the
// deliveries held at a kill come again (duplicates). Every 10th message fails
// its first attempt, so retries happen too.
type hookReceiver struct {
	srv       *httptest.Server
	holdAfter int
	openOnce  sync.Once
	opened    chan struct{}
	held      atomic.Int64 // answers waiting now

	mu       sync.Mutex
	accepted map[string]int
	attempts map[string]int
	total    int // deliveries counted, duplicates included
}

func newHookReceiver(t *testing.T, holdAfter int) *hookReceiver {
	t.Helper()
	h := &hookReceiver{holdAfter: holdAfter, opened: make(chan struct{}), accepted: map[string]int{}, attempts: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() { h.open(); h.srv.Close() })
	return h
}

func (h *hookReceiver) open() { h.openOnce.Do(func() { close(h.opened) }) }

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(webhook.HeaderID)
	if _, err := io.Copy(io.Discard, r.Body); err != nil || id == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.attempts[id]++
	if h.attempts[id] == 1 && strings.HasSuffix(id, "0") {
		h.mu.Unlock()
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	h.accepted[id]++
	hold := h.total >= h.holdAfter
	h.total++
	h.mu.Unlock()
	if hold {
		h.held.Add(1)
		defer h.held.Add(-1)
		select {
		case <-h.opened:
		case <-r.Context().Done(): // the sender went away (killed)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// snapshot copies the accepted counts.
func (h *hookReceiver) snapshot() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.accepted))
	for k, v := range h.accepted {
		out[k] = v
	}
	return out
}

// duplicates counts messages accepted more than once, and the extra
// deliveries.
func duplicates(got map[string]int) (msgs, extra int) {
	for _, n := range got {
		if n > 1 {
			msgs++
			extra += n - 1
		}
	}
	return msgs, extra
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// bufferStatus reads the buffer of pipeline from loombridge's /status.
func bufferStatus(t *testing.T, addr, pipeline string) (*pipelines.BufferStats, error) {
	t.Helper()
	code, body := get(t, "http://"+addr+"/status")
	if code != http.StatusOK && code != http.StatusServiceUnavailable {
		return nil, fmt.Errorf("/status: %d %s", code, body)
	}
	var st pipelines.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return nil, fmt.Errorf("/status: %w", err)
	}
	b := st.Pipelines[pipeline].Buffer
	if b == nil {
		return nil, fmt.Errorf("/status: pipeline %s has no buffer: %s", pipeline, body)
	}
	return b, nil
}

// queued is what the sink's queue holds, as /status says; -1 when it does
// not answer.
func queued(t *testing.T, addr, pipeline, sink string) int64 {
	t.Helper()
	b, err := bufferStatus(t, addr, pipeline)
	if err != nil {
		t.Logf("%v", err)
		return -1
	}
	q := b.Queues[sink]
	if q.Error != "" {
		t.Logf("/status: queue %s: %s", sink, q.Error)
		return -1
	}
	return int64(q.Messages)
}

// bufferLine is the restarted process's own account of its buffer, for the log.
func bufferLine(t *testing.T, addr, pipeline, sink string) string {
	t.Helper()
	b, err := bufferStatus(t, addr, pipeline)
	if err != nil {
		return err.Error()
	}
	q := b.Queues[sink]
	return fmt.Sprintf("the restarted loombridge stored %d and redelivered %d from its queue", b.Stored, q.Redelivered)
}

// kill9 ends loombridge with SIGKILL and waits until it is gone.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
}

// An http source with buffer: {} and a webhook sink, 10,000 POSTs from 8
// posters; kill -9 once 3,000 got a 2xx while the receiver holds back (a
// backlog of stored, undelivered messages), restart on the same buffer dir,
// POST again whatever got no 2xx. Every message that got a 2xx reaches the
// receiver; duplicates are counted and logged.
func TestBufferKill9HTTPSource(t *testing.T) {
	const n, killAt, holdAfter, posters = 10000, 3000, 1000, 8
	dir := t.TempDir()
	hook := newHookReceiver(t, holdAfter)
	in := freeAddr(t)
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {stats_interval: 0}
buffers: {dir: %s}
pipelines:
  ingest:
    from: {type: http, addr: "%s", path: /in}
    buffer: {ack_wait: 5s}        # what was in work at the kill comes again after it
    to:
      hook:
        type: webhook
        endpoints: [{name: r, url: "%s", retry: {initial_interval: 10ms, max_interval: 100ms}, breaker: {failures: 1000000}}]
`, filepath.Join(dir, "buffer"), in, hook.srv.URL))

	keys := make([]string, n)
	sent := make(map[string]bool, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%05d", watermill.NewUUID(), i)
		sent[keys[i]] = true
	}
	ok := make([]atomic.Bool, n)
	var got2xx atomic.Int64
	client := &http.Client{Timeout: 2 * time.Minute}
	defer client.CloseIdleConnections()
	post := func(ctx context.Context, i int) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+in+"/in", strings.NewReader("payload "+strconv.Itoa(i)))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Idempotency-Key", keys[i])
		resp, err := client.Do(req)
		if err != nil {
			return // killed, or not up yet: sent again
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 && !ok[i].Swap(true) {
			got2xx.Add(1)
		}
	}
	// postAll POSTs every index not yet acknowledged, posters at once, until
	// ctx ends.
	postAll := func(ctx context.Context) {
		work := make(chan int)
		var wg sync.WaitGroup
		for range posters {
			wg.Go(func() {
				for i := range work {
					post(ctx, i)
				}
			})
		}
	feed:
		for i := range n {
			if ok[i].Load() {
				continue
			}
			select {
			case work <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
	}

	p := start(t, "run", "-c", cfg, "--watch=false")
	status := healthAddr(t, p.log)
	waitUntil(t, "the http source", func() bool { return strings.Contains(p.log.String(), "loombridge running") })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	postDone := make(chan struct{})
	go func() { defer close(postDone); postAll(ctx) }()
	waitUntil(t, fmt.Sprintf("%d POSTs acknowledged", killAt), func() bool { return got2xx.Load() >= killAt })
	qStatus := queued(t, status, "ingest", "hook")
	held := hook.held.Load()
	p.kill9(t)
	cancel()
	<-postDone
	acked := got2xx.Load()
	atKill := hook.snapshot()
	backlog := 0
	for i := range n {
		if ok[i].Load() && atKill[keys[i]] == 0 {
			backlog++
		}
	}
	t.Logf("at the kill: %d POSTs acknowledged, %d of them not yet at the receiver (stored, undelivered); /status queue just before: %d; %d deliveries at the receiver unanswered", acked, backlog, qStatus, held)
	if backlog == 0 {
		t.Fatal("no backlog at the kill: the test would not show that stored messages survive it")
	}
	hook.open()

	p2 := start(t, "run", "-c", cfg, "--watch=false")
	status = healthAddr(t, p2.log)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel2()
	waitUntil(t, "every message acknowledged", func() bool {
		postAll(ctx2)
		if got2xx.Load() < n {
			time.Sleep(100 * time.Millisecond) // loombridge may not listen yet
			return false
		}
		return true
	})
	missing := func() int {
		got, m := hook.snapshot(), 0
		for i := range n {
			if ok[i].Load() && got[keys[i]] == 0 {
				m++
			}
		}
		return m
	}
	waitUntil(t, "every acknowledged message at the receiver", func() bool { return missing() == 0 })
	waitUntil(t, "the queue to drain", func() bool { return queued(t, status, "ingest", "hook") == 0 })
	got := hook.snapshot()
	for id := range got {
		if !sent[id] {
			t.Errorf("the receiver got %q, which was never sent", id)
		}
	}
	dupMsgs, extra := duplicates(got)
	t.Logf("after the restart: %d distinct messages at the receiver, %d of them more than once (%d extra deliveries); %d were at the receiver before the kill; %s", len(got), dupMsgs, extra, len(atKill), bufferLine(t, status, "ingest", "hook"))
	if len(got) != n {
		t.Errorf("%d distinct messages at the receiver, want %d", len(got), n)
	}
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	if code := p2.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// A Loom room read by loombridge with buffer: {} into a webhook sink; the
// test publishes 10,000 messages, kill -9s loombridge once the router counts
// 3,000 acks, and restarts it. Loom loses what it had sent to the dead
// consumer unacked (and discards what comes while nobody consumes), so the
// promise is: every message loombridge acked to Loom reaches the sink.
func TestBufferKill9LoomSource(t *testing.T) {
	const n, killAt, holdAfter, batch, producers = 10000, 3000, 1000, 50, 4
	const room = "orders"
	r := startRouter(t)
	dir := t.TempDir()
	hook := newHookReceiver(t, holdAfter)
	cfg := filepath.Join(dir, "config.yaml")
	// A short idle timeout: the router notices the killed consumer in seconds.
	writeFile(t, cfg, fmt.Sprintf(`
log: {stats_interval: 0}
buffers: {dir: %s}
connections:
  ext: {addr: "%s", tls: {ca_file: "%s"}, keep_alive: 1s, idle_timeout: 3s}
pipelines:
  bridge:
    from: {type: loom, connection: ext, room: %s}
    buffer: {ack_wait: 5s}        # what was in work at the kill comes again after it
    to:
      hook:
        type: webhook
        endpoints: [{name: r, url: "%s", retry: {initial_interval: 10ms, max_interval: 100ms}, breaker: {failures: 1000000}}]
`, filepath.Join(dir, "buffer"), r.srv.Addr(), r.ca, room, hook.srv.URL))

	pub, err := loom.NewPublisher(loom.PublisherConfig{Client: r.clientConfig(), Format: loom.FormatEnvelope, PublishTimeout: 3 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ids := make([]string, n)
	sent := make(map[string]bool, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", watermill.NewUUID(), i)
		sent[ids[i]] = true
	}

	consumers := loom.DefaultConsumers
	waitConsumers := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := r.srv.WaitConsumers(ctx, room, consumers); err != nil {
			t.Fatalf("loombridge did not consume: %v", err)
		}
	}
	// The producers publish only while gate is open: what Loom discards for
	// want of a consumer proves nothing about loombridge.
	var (
		gateMu sync.Mutex
		gate   = make(chan struct{})
		quit   = make(chan struct{}) // the test is over: stop at the gate
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	defer func() { close(quit); wg.Wait() }()
	waitGate := func() bool {
		gateMu.Lock()
		g := gate
		gateMu.Unlock()
		select {
		case <-g:
			return true
		case <-quit:
			return false
		}
	}
	produce := func() {
		for waitGate() {
			from := int(next.Add(batch)) - batch
			if from >= n {
				return
			}
			var msgs []*message.Message
			for _, id := range ids[from:min(from+batch, n)] {
				msgs = append(msgs, message.NewMessage(id, []byte("body of "+id)))
			}
			if err := pub.Publish(room, msgs...); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}

	p := start(t, "run", "-c", cfg, "--watch=false")
	waitConsumers()
	close(gate)
	for range producers {
		wg.Go(produce)
	}
	produced := make(chan struct{})
	go func() { wg.Wait(); close(produced) }()
	waitUntil(t, fmt.Sprintf("%d acks at the router", killAt), func() bool { return r.srv.RoomStats(room).Acked >= killAt })
	gateMu.Lock()
	gate = make(chan struct{})
	gateMu.Unlock()
	held := hook.held.Load()
	p.kill9(t)
	// Publishes under way end once the router dropped the dead consumers.
	waitUntil(t, "the router to drop the killed consumers", func() bool { return r.srv.Consumers(room) == 0 })
	atKill := r.srv.RoomStats(room)
	got := hook.snapshot()
	t.Logf("at the kill: router %+v once it dropped the dead consumers; %d at the receiver (%d unanswered), so at least %d acked to Loom were stored, undelivered", atKill, len(got), held, int(atKill.Acked)-len(got))
	if int(atKill.Acked) <= len(got) {
		t.Fatal("no backlog at the kill: the test would not show that stored messages survive it")
	}
	hook.open()

	p2 := start(t, "run", "-c", cfg, "--watch=false")
	status := healthAddr(t, p2.log)
	waitConsumers()
	close(gate)
	select {
	case <-produced:
	case <-time.After(3 * time.Minute):
		t.Fatal("the producers did not finish")
	}
	// Every message is settled at the router (acked, discarded or lost) and
	// the queue is empty: whatever loombridge acked has been delivered.
	var st = r.srv.RoomStats(room)
	waitUntil(t, "the router and the queue to settle", func() bool {
		st = r.srv.RoomStats(room)
		settled := st.Acked + st.Discarded + st.DroppedFull + st.DroppedTooLarge + st.LostOnDisconnect
		return st.Received >= n && settled == st.Received && queued(t, status, "bridge", "hook") == 0
	})
	got = hook.snapshot()
	for id := range got {
		if !sent[id] {
			t.Errorf("the receiver got %q, which was never sent", id)
		}
	}
	dupMsgs, extra := duplicates(got)
	t.Logf("at the end: router %+v; %d distinct messages at the receiver, %d of them more than once (%d extra deliveries); %s", st, len(got), dupMsgs, extra, bufferLine(t, status, "bridge", "hook"))
	if uint64(len(got)) < st.Acked {
		t.Errorf("%d distinct messages at the receiver, fewer than the %d loombridge acked to Loom", len(got), st.Acked)
	}
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	if code := p2.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// One 256 MiB message (Loom's largest) from the test's router through
// buffer: {} (so the Object Store) into a raw file sink: the file is byte
// for byte the message. loombridge's peak RSS is logged, not asserted; the
// goal is at most the message plus 64 MiB. Under -race the test process
// moves 32 MiB instead (.ci/run runs the full size without -race).
func TestBuffer256MiBToRawFile(t *testing.T) {
	size := 256 << 20
	if raceEnabled {
		size = 32 << 20
	}
	const room = "big"
	r := startRouter(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {stats_interval: 0}
buffers: {dir: %s}
connections:
  ext: {addr: "%s", tls: {ca_file: "%s"}}
pipelines:
  big:
    from: {type: loom, connection: ext, room: %s, consumers: 1, max_message_bytes: %d}
    buffer: {}
    to:
      out: {type: file, dir: %s, format: raw, fsync: never}
`, filepath.Join(dir, "buffer"), r.srv.Addr(), r.ca, room, 256<<20, out))

	payload := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{19}).Read(payload) // deterministic; never fails
	want := sha256.Sum256(payload)

	p := start(t, "run", "-c", cfg, "--watch=false")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.srv.WaitConsumers(ctx, room, 1); err != nil {
		t.Fatalf("loombridge did not consume: %v", err)
	}
	idle := vmHWM(t, p.cmd.Process.Pid)
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client: r.clientConfig(), MaxMessageBytes: 256 << 20, Buffer: loom.BufferConfig{MaxBytes: 256 << 20},
		PublishTimeout: 3 * time.Minute, StreamTimeout: 3 * time.Minute,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(room, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if st := r.srv.RoomStats(room); st.Acked != 1 {
		t.Fatalf("router: %+v, want the message acked", st)
	}
	payload = nil

	var file string
	waitUntil(t, "the file", func() bool {
		m, _ := filepath.Glob(filepath.Join(out, room, "*.bin"))
		if len(m) > 0 {
			file = m[0]
		}
		return file != ""
	})
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	written, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if written != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", file, written, h.Sum(nil), size, want)
	}

	// VmHWM of the running process, not the rusage after exit: Go starts a
	// child with vfork, and Linux counts the peak resident set of the image
	// an exec replaces (this test process's) in the child's ru_maxrss.
	hwm := vmHWM(t, p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	const mib = 1 << 20
	t.Logf("message %d MiB; loombridge peak RSS (VmHWM) %.0f MiB, %.2fx the message (%.0f MiB before the message); goal <= %d MiB",
		size/mib, float64(hwm)/mib, float64(hwm)/float64(size), float64(idle)/mib, (size+64*mib)/mib)
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Logf("VmHWM: %v", err)
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return -1
}
