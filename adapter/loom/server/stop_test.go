package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// heldProducer opens a consumer that never acks and a QUIC producer that sends n
// messages and its FIN: the server reads the first message and waits for its ack, so
// the rest stays unread.
func heldProducer(t *testing.T, s *Server, room string, n int) (conn *quic.Conn, p *sess, out chan got) {
	t.Helper()
	conn = dialQUIC(t, s, nil, nil)
	out = make(chan got, n)
	quicConsumer(t, conn, room, "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), room, 1); err != nil {
		t.Fatal(err)
	}
	p = openQUIC(t, conn, wire.RoleProducer, room, "")
	for i := range n {
		p.write(msg("k", 1, true, []byte{byte(i)}))
	}
	if err := p.str.Close(); err != nil {
		t.Fatal(err)
	}
	recv(t, out) // the first message is in flight, unacked
	eventually(t, "the producer stream to be read up to the second header", func() bool {
		return s.RoomStats(room).Received == 1
	})
	return conn, p, out
}

// TestStopEndsProducersWithFINAndVanishes: a graceful Stop ends a producer stream
// whose messages were not all read with a plain FIN, as loomd does on SIGTERM, then
// sends nothing more: no STOP_SENDING, no CONNECTION_CLOSE.
func TestStopEndsProducersWithFINAndVanishes(t *testing.T) {
	// The FIN leaves in a packet just before the socket closes, as loomd's does
	// before it exits: on a loaded machine that packet can be dropped on loopback,
	// and nothing is left to send it again, so the client's connection ends by its
	// idle timeout instead. Up to three fresh tries; one FIN proves the point.
	for try := 1; ; try++ {
		s := start(t, Config{})
		conn, p, _ := heldProducer(t, s, "r", 5)
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		_ = p.str.SetReadDeadline(time.Now().Add(waitFor))
		b, err := io.ReadAll(p.str) // EOF: what a producer sees when every message was handled
		var idle *quic.IdleTimeoutError
		if errors.As(err, &idle) && try < 3 {
			t.Logf("try %d: the FIN was lost with the socket (%v); again", try, err)
			continue
		}
		if err != nil || len(b) != 0 {
			t.Fatalf("read %d bytes, %v; want none and EOF", len(b), err)
		}
		var se *quic.StreamError
		if _, err := p.str.Write(nil); errors.As(err, &se) && se.Remote {
			t.Fatalf("the server stopped the producer's stream (%v): a graceful stop sends a plain FIN", err)
		}
		if st := s.RoomStats("r"); st.Received != 1 {
			t.Fatalf("received %d messages, want 1: the rest must stay unread", st.Received)
		}
		select {
		case <-conn.Context().Done():
			t.Fatalf("connection closed: %v; a stopped server sends no CONNECTION_CLOSE", context.Cause(conn.Context()))
		case <-time.After(100 * time.Millisecond):
		}
		return
	}
}

// TestStopCutsHTTP3Producer: over HTTP/3 the same stop ends the producer's request
// without a response, which the client reads as an error, not a confirm.
func TestStopCutsHTTP3Producer(t *testing.T) {
	s := start(t, Config{})
	out := make(chan got, 1)
	quicConsumer(t, dialQUIC(t, s, nil, nil), "r", "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "r", 1); err != nil {
		t.Fatal(err)
	}
	p := openH3(t, h3Transport(t, s), s, http.MethodPost, "/stream", hello(wire.RoleProducer, "r", ""))
	p.write(msg("a", 1, true, []byte("a")))
	p.write(msg("b", 1, true, []byte("b")))
	recv(t, out)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	_ = p.pw.Close()
	select {
	case r := <-p.resp:
		p.resp <- r
		if r.err == nil {
			b, err := io.ReadAll(r.resp.Body)
			t.Fatalf("HTTP/3 producer got status %d (%q, %v) from a stopping server", r.resp.StatusCode, b, err)
		}
		t.Logf("round trip error: %v", r.err)
	case <-time.After(waitFor):
		t.Fatal("no answer")
	}
}

// TestKillSendsNothing: Kill is SIGKILL: a producer that sent its FIN hears nothing.
func TestKillSendsNothing(t *testing.T) {
	s := start(t, Config{})
	conn, p, _ := heldProducer(t, s, "r", 3)
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.str.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := p.str.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Kill: %v, want nothing until the deadline", err)
	}
	if err := conn.Context().Err(); err != nil {
		t.Fatalf("connection closed after Kill: %v", context.Cause(conn.Context()))
	}
}

// TestStatelessResetAfterRestart: with a StatelessResetKey, the restarted server
// resets a connection of its previous life at the client's next packet.
func TestStatelessResetAfterRestart(t *testing.T) {
	// A reset answers a packet of the old connection; on a loaded machine that
	// packet can be lost with the old socket, and the connection then ends by its
	// idle timeout instead. Up to three fresh tries; one reset proves the point,
	// none fails the test.
	var errs []error
	for try := range 3 {
		err := statelessResetOnce(t)
		if err == nil {
			return
		}
		t.Logf("try %d: %v", try+1, err)
		errs = append(errs, err)
	}
	t.Fatalf("no stateless reset in three tries: %v", errors.Join(errs...))
}

func statelessResetOnce(t *testing.T) error {
	var key quic.StatelessResetKey
	copy(key[:], "a fixed key for this test only!!")
	s := start(t, Config{StatelessResetKey: &key})
	conn := dialQUIC(t, s, nil, nil)
	roundTrip(t, s, "r")
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	str, err := conn.OpenStream()
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	_, _ = str.Write(hello(wire.RoleConsumer, "r", ""))
	select {
	case <-conn.Context().Done():
		var reset *quic.StatelessResetError
		if err := context.Cause(conn.Context()); !errors.As(err, &reset) {
			return fmt.Errorf("connection ended with %v, want a stateless reset", err)
		}
		return nil
	case <-time.After(waitFor):
		return errors.New("no stateless reset")
	}
}
