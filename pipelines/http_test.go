package pipelines_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// idReceiver is a webhook endpoint that answers 500 to the messages fail
// picks (by the number in their UUID, "id-<n>"), blocks the one named hold
// until release is closed, and records what it accepted.
type idReceiver struct {
	fail    func(n int) bool
	hold    string
	held    chan struct{} // closed when hold arrived
	release chan struct{}
	once    sync.Once

	mu       sync.Mutex
	accepted map[string]bool
}

func newIDReceiver(fail func(int) bool) *idReceiver {
	return &idReceiver{fail: fail, held: make(chan struct{}), release: make(chan struct{}), accepted: map[string]bool{}}
}

func (r *idReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	id := req.Header.Get("webhook-id")
	if id != "" && id == r.hold {
		r.once.Do(func() { close(r.held) })
		<-r.release
	}
	n, err := strconv.Atoi(strings.TrimPrefix(id, "id-"))
	if err == nil && r.fail(n) {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.mu.Lock()
	r.accepted[id] = true
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *idReceiver) took(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[id]
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The http source under a bounded load loop on loopback: its answers match
// what became of each message. A sink fails every fifth message and the
// dead letters fail half of those: those get 500, the others 204, and every
// 204 is a message the sink or the dead letters took. Bodies over
// max_body_bytes get 413, a wrong token 401; while the pipeline stops, new
// requests get 503 and the one in flight its real answer; nothing is left
// running after.
func TestHTTPIngress(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	const n = 600
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := newIDReceiver(func(i int) bool { return i%5 == 0 })
	dead := newIDReceiver(func(i int) bool { return i%10 == 0 })
	sinkSrv, deadSrv := httptest.NewServer(sink), httptest.NewServer(dead)
	addr := freeAddr(t)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
shutdown_timeout: 2m
pipelines:
  ingest:
    from:
      type: http
      addr: @ADDR@
      path: /in
      auth_token_file: @TOKEN@
      max_body_bytes: 1024
      metadata_headers: {X-Tenant: tenant, X-Loom-Key: loom_key}
    to:
      archive: {type: file, dir: @DIR@, topic: all, fsync: never}
      flaky:
        type: webhook
        endpoints: [{name: flaky, url: @SINK@, retry: {max_attempts: 1}, breaker: {failures: 1000000}}]
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter:
      type: webhook
      endpoints: [{name: dead, url: @DEAD@, retry: {max_attempts: 1}, breaker: {failures: 1000000}}]
`, "@ADDR@", addr, "@TOKEN@", tokenFile, "@DIR@", dir, "@SINK@", sinkSrv.URL, "@DEAD@", deadSrv.URL))
	e := startEngine(t, cfg)
	client := &http.Client{Timeout: 3 * time.Minute}
	url := "http://" + addr + "/in"
	post := func(id string, body []byte, token string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if id != "" {
			req.Header.Set("Idempotency-Key", id)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Tenant", "acme")
		req.Header.Set("X-Loom-Key", "key-"+id)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// The load: 32 workers, n requests, bounded in time. Whether a sink had
	// the message is looked up the moment its 204 arrives: an answer sent
	// before the pipeline finished would be caught even though the sink
	// takes the message a moment later.
	codes := make([]int, n)
	takenAtAnswer := make([]bool, n)
	var wg sync.WaitGroup
	next := make(chan int)
	deadline := time.Now().Add(4 * time.Minute)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id := "id-" + strconv.Itoa(i)
				code, err := post(id, []byte("payload "+strconv.Itoa(i)), "s3cret")
				if err != nil {
					t.Errorf("request %d: %v", i, err)
				}
				codes[i] = code
				takenAtAnswer[i] = sink.took(id) || dead.took(id)
			}
		}()
	}
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, code := range codes {
		id := "id-" + strconv.Itoa(i)
		switch {
		case code == 0:
			t.Errorf("%s: not sent before the deadline", id)
		case i%10 == 0:
			if code != http.StatusInternalServerError {
				t.Errorf("%s: failed by the sink and the dead letters, answered %d, want 500", id, code)
			}
		case code != http.StatusNoContent:
			t.Errorf("%s: answered %d, want 204", id, code)
		case !takenAtAnswer[i]:
			t.Errorf("%s: answered 204, but neither the sink nor the dead letters had it then", id)
		}
	}
	lines := readLines(t, filepath.Join(dir, "all.jsonl"))
	if len(lines) < n {
		t.Errorf("archive has %d lines, want at least %d", len(lines), n)
	}
	archived := map[string]bool{}
	for _, l := range lines {
		archived[l.UUID] = true
	}
	for i, code := range codes {
		if id := "id-" + strconv.Itoa(i); code == http.StatusNoContent && !archived[id] {
			t.Errorf("%s: answered 204, but the archive sink does not have it", id)
		}
	}
	for _, l := range lines[:min(len(lines), 5)] {
		if l.Key != "key-"+l.UUID || l.Metadata["tenant"] != "acme" || !strings.HasPrefix(l.Payload, "payload ") {
			t.Errorf("archived %+v: key, metadata or payload lost", l)
		}
	}

	// 413 and 401; a request without Idempotency-Key gets a fresh UUID.
	if code, err := post("id-big", bytes.Repeat([]byte("x"), 1025), "s3cret"); err != nil || code != http.StatusRequestEntityTooLarge {
		t.Errorf("1025-byte body: %d %v, want 413", code, err)
	}
	if code, err := post("id-1001", bytes.Repeat([]byte("x"), 1024), "s3cret"); err != nil || code != http.StatusNoContent {
		t.Errorf("1024-byte body: %d %v, want 204", code, err)
	}
	if code, err := post("id-1003", []byte("x"), "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d %v, want 401", code, err)
	}
	if code, err := post("", []byte("no id"), "s3cret"); err != nil || code != http.StatusNoContent {
		t.Errorf("no Idempotency-Key: %d %v, want 204", code, err)
	}

	// The stop: one message held at the sink keeps the pipeline stopping
	// while new requests come.
	sink.hold = "id-2001"
	held := make(chan int, 1)
	go func() {
		code, err := post("id-2001", []byte("held"), "s3cret")
		if err != nil {
			t.Errorf("held request: %v", err)
		}
		held <- code
	}()
	<-sink.held
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		closeEngine(t, e)
	}()
	got503 := false
	for i := 3001; !got503 && time.Now().Before(deadline.Add(time.Minute)); i++ {
		code, err := post("id-"+strconv.Itoa(i), []byte("late"), "s3cret")
		switch {
		case err != nil:
			t.Fatalf("request while stopping: %v (the listener must stay up until the held message is answered)", err)
		case code == http.StatusServiceUnavailable:
			got503 = true
		case code != http.StatusNoContent:
			t.Errorf("request while stopping: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !got503 {
		t.Error("no 503 while stopping")
	}
	close(sink.release)
	if code := <-held; code != http.StatusNoContent {
		t.Errorf("the message in flight during the stop: %d, want 204 (the sink took it)", code)
	}
	<-closed
	if _, err := post("id-4001", []byte("after"), "s3cret"); err == nil {
		t.Error("a request after the stop was answered")
	}
	client.CloseIdleConnections()
	sinkSrv.Close()
	deadSrv.Close()
	// Nothing ignored: a listener, a receiver's connection, a pipeline's
	// goroutine or a webhook sink's connection left behind is a leak.
	goleak.VerifyNone(t, ignore)
}
