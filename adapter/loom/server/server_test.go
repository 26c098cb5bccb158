package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// producerFinish ends a producer session and checks the server's answer: FIN (QUIC)
// or 200 with an empty body (HTTP/3).
func producerFinish(t *testing.T, p *sess) {
	t.Helper()
	if p.str != nil {
		if err := p.str.Close(); err != nil {
			t.Fatal(err)
		}
		readEOF(t, p.str)
		return
	}
	if err := p.pw.Close(); err != nil {
		t.Fatal(err)
	}
	resp := p.response()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || len(b) != 0 {
		t.Fatalf("producer end: status %d, %d bytes, err %v", resp.StatusCode, len(b), err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, prod, cons string }{
		{"quic", "quic", "quic"},
		{"h3", "h3", "h3"},
		{"quic-to-h3", "quic", "h3"},
		{"h3-to-quic", "h3", "quic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, Config{})
			out := make(chan got, 16)
			var c *sess
			if tc.cons == "quic" {
				c = quicConsumer(t, dialQUIC(t, s, nil, nil), "", "", 0, out, false)
			} else {
				c = h3Consumer(t, h3Transport(t, s), s, "", 0, out, false)
			}
			if err := s.WaitConsumers(testCtx(t), "default", 1); err != nil {
				t.Fatal(err)
			}
			var p *sess
			if tc.prod == "quic" {
				p = openQUIC(t, dialQUIC(t, s, nil, nil), wire.RoleProducer, "default", "")
			} else {
				p = openH3(t, h3Transport(t, s), s, http.MethodPost, "/stream", hello(wire.RoleProducer, "", ""))
			}
			big, small := pattern(200_000), []byte("hello")
			p.write(msg("k1", uint64(len(big)), true, split(big, 16<<10)...))
			p.write(msg("k2", 0, true, split(small, 2)...))
			p.write(msg("k3", 0, true))

			g := recv(t, out)
			checkBody(t, g, "k1", big)
			if g.hdr.ID != 1 || g.hdr.Size != uint64(len(big)) {
				t.Fatalf("header %+v", g.hdr)
			}
			if want := []int{16384, 16384, 16384, 16384, 16384, 16384, 16384, 16384, 16384, 16384, 16384, 16384, 3392}; !slices.Equal(g.chunks, want) {
				t.Fatalf("chunk boundaries %v, want %v", g.chunks, want)
			}
			recvNone(t, out, 50*time.Millisecond) // one in flight
			c.ack(1)
			g = recv(t, out)
			checkBody(t, g, "k2", small)
			if g.hdr.ID != 2 || g.hdr.Size != 0 || !slices.Equal(g.chunks, []int{2, 2, 1}) {
				t.Fatalf("k2: header %+v chunks %v", g.hdr, g.chunks)
			}
			c.ack(2)
			g = recv(t, out)
			checkBody(t, g, "k3", []byte{})
			if g.hdr.ID != 3 || len(g.chunks) != 0 {
				t.Fatalf("k3: header %+v chunks %v", g.hdr, g.chunks)
			}
			c.ack(3)
			eventually(t, "3 acks", func() bool { return s.Stats().Acked == 3 })
			producerFinish(t, p)
			st := s.Stats()
			if st.Received != 3 || st.Delivered != 3 || st.Acked != 3 || st != s.RoomStats("default") {
				t.Fatalf("stats %+v, room %+v", st, s.RoomStats("default"))
			}
		})
	}
}

func TestHTTP3MethodAndPath(t *testing.T) {
	s := start(t, Config{})
	tr := h3Transport(t, s)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/stream", http.StatusMethodNotAllowed},
		{http.MethodPut, "/stream", http.StatusMethodNotAllowed},
		{http.MethodPost, "/other", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	} {
		req, err := http.NewRequestWithContext(testCtx(t), tc.method, "https://"+s.Addr()+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

func TestWaitConsumers(t *testing.T) {
	s := start(t, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitConsumers(ctx, "r", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConsumers with none: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitConsumers(testCtx(t), "r", 2) }()
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 1)
	quicConsumer(t, conn, "r", "", 0, out, false)
	quicConsumer(t, conn, "r", "", 1, out, false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.Consumers("r"); n != 2 {
		t.Fatalf("Consumers = %d", n)
	}
	if n := s.Consumers(""); n != 0 {
		t.Fatalf("Consumers(default) = %d", n)
	}
}

// roundTrip sends one message through a fresh QUIC consumer and producer.
func roundTrip(t *testing.T, s *Server, room string) {
	t.Helper()
	out := make(chan got, 1)
	c := quicConsumer(t, dialQUIC(t, s, nil, nil), room, "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), room, 1); err != nil {
		t.Fatal(err)
	}
	p := openQUIC(t, dialQUIC(t, s, nil, nil), wire.RoleProducer, room, "")
	p.write(msg("k", 0, true, []byte("ping")))
	g := recv(t, out)
	checkBody(t, g, "k", []byte("ping"))
	c.ack(g.hdr.ID)
	producerFinish(t, p)
	_ = c.str.Close()
}

func TestCutConnections(t *testing.T) {
	s := start(t, Config{})
	out := make(chan got, 1)
	qc := quicConsumer(t, dialQUIC(t, s, nil, nil), "r", "", 0, out, false)
	hc := h3Consumer(t, h3Transport(t, s), s, "r", 1, out, false)
	if err := s.WaitConsumers(testCtx(t), "r", 2); err != nil {
		t.Fatal(err)
	}
	s.CutConnections()
	for _, c := range []*sess{qc, hc} {
		select {
		case err := <-c.end:
			if err == nil {
				t.Fatal("consumer read ended without error")
			}
		case <-time.After(waitFor):
			t.Fatal("consumer still connected")
		}
	}
	if n := s.Consumers("r"); n != 0 {
		t.Fatalf("%d consumers still registered after CutConnections returned", n)
	}
	roundTrip(t, s, "r")
}

func TestStopRestart(t *testing.T) {
	s := start(t, Config{})
	addr := s.Addr()
	roundTrip(t, s, "a")
	out := make(chan got, 1)
	c := quicConsumer(t, dialQUIC(t, s, nil, nil), "a", "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "a", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Kill(); err != nil {
		t.Fatalf("Kill after Stop: %v", err)
	}
	if n := s.Consumers("a"); n != 0 {
		t.Fatalf("%d consumers after Stop", n)
	}
	// The server vanished: its consumer stream hears nothing, not even an end.
	select {
	case err := <-c.end:
		t.Fatalf("consumer stream ended after Stop (%v): a stopped process sends nothing", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The port is free.
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	_ = l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	tc := s.ClientTLS()
	tc.NextProtos = []string{alpnLoom}
	if conn, err := quic.DialAddr(ctx, addr, tc, nil); err == nil {
		_ = conn.CloseWithError(0, "")
		t.Fatal("dial succeeded while stopped")
	}

	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Addr() != addr {
		t.Fatalf("address changed: %s, was %s", s.Addr(), addr)
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}
	roundTrip(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart after Close succeeded")
	}
}

func TestHoldProducers(t *testing.T) {
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 1)
	quicConsumer(t, conn, "held", "", 0, out, true)
	if err := s.WaitConsumers(testCtx(t), "held", 1); err != nil {
		t.Fatal(err)
	}
	s.HoldProducers()
	p := openQUIC(t, conn, wire.RoleProducer, "held", "")
	p.write(msg("k", 1, true, []byte("x")))
	recvNone(t, out, 200*time.Millisecond)
	if st := s.RoomStats("held"); st.Received != 0 {
		t.Fatalf("a held producer was read: %+v", st)
	}
	s.ReleaseProducers()
	checkBody(t, recv(t, out), "k", []byte("x"))
}

func TestClientConsumersCountByHelloName(t *testing.T) {
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 1)
	quicConsumer(t, conn, "r", "", 0, out, false) // hello name "test"
	str, err := conn.OpenStreamSync(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	other := &sess{t: t, w: str, str: str}
	other.write(wire.AppendHello(nil, wire.Hello{Role: wire.RoleConsumer, Name: "other", Room: "r"}))
	if err := s.WaitClientConsumers(testCtx(t), "r", "other", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitConsumers(testCtx(t), "r", 2); err != nil {
		t.Fatal(err)
	}
	if a, b := s.ClientConsumers("r", "test"), s.ClientConsumers("r", "other"); a != 1 || b != 1 {
		t.Fatalf("test %d, other %d: want 1 each", a, b)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	err = s.WaitClientConsumers(ctx, "r", "other", 2)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `client "other"`) {
		t.Fatalf("got %v, want a deadline naming the client", err)
	}
}
