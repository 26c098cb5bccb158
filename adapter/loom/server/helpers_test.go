package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait for something that must happen. It is a hang detector,
// not a speed assertion: on a loaded machine under -race a step that takes
// milliseconds idle can take seconds, and a test must then be slow, not fail. Waits
// for something that must not happen (recvNone) take their own short duration.
const waitFor = 2 * time.Minute

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queued counts the messages waiting (not in flight) in a room's backlogs.
func (s *Server) queued(room string) int {
	rm := s.room(room)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	n := 0
	for _, c := range rm.consumers {
		n += len(c.backlog)
	}
	return n
}

// dialQUIC opens a loom/1 connection; conf and cert may be nil.
func dialQUIC(t *testing.T, s *Server, conf *quic.Config, cert *tls.Certificate) *quic.Conn {
	t.Helper()
	tc := s.ClientTLS()
	tc.NextProtos = []string{alpnLoom}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := quic.DialAddr(testCtx(t), s.Addr(), tc, conf)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseWithError(0, "") })
	return conn
}

func h3Transport(t *testing.T, s *Server) *http3.Transport {
	t.Helper()
	tr := &http3.Transport{TLSClientConfig: s.ClientTLS()}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func hello(role wire.Role, room, token string) []byte {
	return wire.AppendHello(nil, wire.Hello{Role: role, Name: "test", Room: room, Token: token})
}

// msg encodes a message: header, the chunks, and the end chunk when end is set.
func msg(key string, declared uint64, end bool, chunks ...[]byte) []byte {
	b := wire.AppendHeader(nil, wire.Header{Key: key, Size: declared})
	for _, c := range chunks {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	if end {
		b = append(b, 0)
	}
	return b
}

// split cuts body into chunks of n bytes.
func split(body []byte, n int) [][]byte {
	var out [][]byte
	for len(body) > 0 {
		k := min(n, len(body))
		out = append(out, body[:k])
		body = body[k:]
	}
	return out
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// got is one message as a consumer read it.
type got struct {
	from   int
	hdr    wire.Header
	body   []byte
	chunks []int
}

// sess is a raw client session over QUIC (str set) or HTTP/3 (pw, resp set).
type sess struct {
	t    *testing.T
	w    io.Writer
	str  *quic.Stream
	pw   *io.PipeWriter
	resp chan rtResult
	msgs chan got
	end  chan error // the consumer's reader stopped
}

type rtResult struct {
	resp *http.Response
	err  error
}

func (s *sess) write(b []byte) {
	s.t.Helper()
	if _, err := s.w.Write(b); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

func (s *sess) ack(id uint64) { s.write(wire.AppendAck(nil, id)) }

func openQUIC(t *testing.T, conn *quic.Conn, role wire.Role, room, token string) *sess {
	t.Helper()
	str, err := conn.OpenStreamSync(testCtx(t))
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	s := &sess{t: t, w: str, str: str}
	s.write(hello(role, room, token))
	return s
}

// openH3 starts a POST /stream with a pipe body and writes the hello. The response
// arrives on s.resp.
func openH3(t *testing.T, tr *http3.Transport, srv *Server, method, path string, first []byte) *sess {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), method, "https://"+srv.Addr()+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	s := &sess{t: t, w: pw, pw: pw, resp: make(chan rtResult, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := tr.RoundTrip(req)
		s.resp <- rtResult{resp, err}
	}()
	t.Cleanup(func() {
		_ = pw.CloseWithError(errors.New("test over"))
		<-done
		select {
		case r := <-s.resp:
			if r.resp != nil {
				_ = r.resp.Body.Close()
			}
			s.resp <- r
		default:
		}
	})
	if first != nil {
		s.write(first) // the round trip is running: it reads the pipe as it sends the body
	}
	return s
}

// response waits for an HTTP/3 session's response.
func (s *sess) response() *http.Response {
	s.t.Helper()
	select {
	case r := <-s.resp:
		s.resp <- r // keep it for the cleanup
		if r.err != nil {
			s.t.Fatalf("round trip: %v", r.err)
		}
		return r.resp
	case <-time.After(waitFor):
		s.t.Fatal("no response")
		return nil
	}
}

// consume reads messages in the background into out (tagged from), acking each when
// autoAck is set. r is the server-to-client byte stream.
func (s *sess) consume(r io.Reader, from int, out chan got, autoAck bool) {
	s.msgs, s.end = out, make(chan error, 1)
	br := bufio.NewReader(r)
	ctx := s.t.Context()
	go func() {
		for {
			g, err := readMsg(br)
			if err != nil {
				s.end <- err
				return
			}
			g.from = from
			if autoAck {
				if _, err := s.w.Write(wire.AppendAck(nil, g.hdr.ID)); err != nil {
					s.end <- err
					return
				}
			}
			select {
			case out <- g:
			case <-ctx.Done():
				return
			}
		}
	}()
}

func readMsg(r wire.Reader) (got, error) {
	hdr, err := wire.ReadHeader(r, wire.DefaultLimits())
	if err != nil {
		return got{}, err
	}
	g := got{hdr: hdr, body: []byte{}}
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return got{}, fmt.Errorf("chunk length: %w", err)
		}
		if n == 0 {
			return g, nil
		}
		c := make([]byte, n)
		if _, err := io.ReadFull(r, c); err != nil {
			return got{}, fmt.Errorf("chunk: %w", err)
		}
		g.body = append(g.body, c...)
		g.chunks = append(g.chunks, int(n))
	}
}

// quicConsumer opens a consumer stream and reads it in the background.
func quicConsumer(t *testing.T, conn *quic.Conn, room, token string, from int, out chan got, autoAck bool) *sess {
	t.Helper()
	s := openQUIC(t, conn, wire.RoleConsumer, room, token)
	s.consume(s.str, from, out, autoAck)
	return s
}

// h3Consumer opens an HTTP/3 consumer session and reads it in the background.
func h3Consumer(t *testing.T, tr *http3.Transport, srv *Server, room string, from int, out chan got, autoAck bool) *sess {
	t.Helper()
	s := openH3(t, tr, srv, http.MethodPost, "/stream", hello(wire.RoleConsumer, room, ""))
	resp := s.response()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consumer status %d", resp.StatusCode)
	}
	s.consume(resp.Body, from, out, autoAck)
	return s
}

func recv(t *testing.T, ch chan got) got {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(waitFor):
		t.Fatal("no message")
		return got{}
	}
}

func recvNone(t *testing.T, ch chan got, d time.Duration) {
	t.Helper()
	select {
	case g := <-ch:
		t.Fatalf("unexpected message id %d key %q", g.hdr.ID, g.hdr.Key)
	case <-time.After(d):
	}
}

// readEOF expects the server to end a QUIC stream with FIN and nothing before it.
func readEOF(t *testing.T, str *quic.Stream) {
	t.Helper()
	_ = str.SetReadDeadline(time.Now().Add(waitFor))
	b, err := io.ReadAll(str)
	if err != nil {
		t.Fatalf("read: %v (want EOF)", err)
	}
	if len(b) != 0 {
		t.Fatalf("read %d bytes, want none", len(b))
	}
}

func checkBody(t *testing.T, g got, key string, body []byte) {
	t.Helper()
	if g.hdr.Key != key {
		t.Fatalf("key %q, want %q", g.hdr.Key, key)
	}
	if !bytes.Equal(g.body, body) {
		t.Fatalf("key %q: body of %d bytes differs from the %d sent", key, len(g.body), len(body))
	}
}
