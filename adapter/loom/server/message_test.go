package server

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

func TestNoConsumerDiscards(t *testing.T) {
	s := start(t, Config{})
	p := openQUIC(t, dialQUIC(t, s, nil, nil), wire.RoleProducer, "empty", "")
	for range 3 {
		p.write(msg("k", 3, true, []byte("abc")))
	}
	producerFinish(t, p)
	if st := s.RoomStats("empty"); st.Received != 3 || st.Discarded != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTooLarge(t *testing.T) {
	lim := wire.DefaultLimits()
	lim.MaxMessage, lim.MaxChunk = 1000, 400
	s := start(t, Config{Limits: lim})
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 4)
	c := quicConsumer(t, conn, "", "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	p := openQUIC(t, conn, wire.RoleProducer, "", "")
	body := pattern(1200)
	// Declared too large: read and dropped, the stream goes on.
	p.write(msg("declared", 1200, true, split(body, 400)...))
	// Actually too large: the consumer gets what fitted, ended at once.
	p.write(msg("actual", 0, true, split(body, 400)...))
	p.write(msg("fine", 0, true, body[:10]))
	g := recv(t, out)
	checkBody(t, g, "actual", body[:800])
	if !slices.Equal(g.chunks, []int{400, 400}) {
		t.Fatalf("chunks %v", g.chunks)
	}
	c.ack(g.hdr.ID)
	g = recv(t, out)
	checkBody(t, g, "fine", body[:10])
	c.ack(g.hdr.ID)
	producerFinish(t, p)
	if st := s.Stats(); st.Received != 3 || st.DroppedTooLarge != 2 || st.Acked != 2 || st.ProtocolErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestProtocolErrors(t *testing.T) {
	lim := wire.DefaultLimits()
	bad := map[string][]byte{
		"chunk too long": append(wire.AppendHeader(nil, wire.Header{Key: "k"}), 0x81, 0x80, 0x08), // 131073
		"empty key":      {0, 0, 0},
		"bad varint":     bytes.Repeat([]byte{0xff}, 11),
		"key too long":   append([]byte{0x81, 0x02}, make([]byte, 257)...),
		"size over 2^50": wire.AppendHeader(nil, wire.Header{Key: "k", Size: 1 << 51}),
	}
	if lim.MaxChunk != 64<<10 {
		t.Fatal("defaults changed")
	}
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	tr := h3Transport(t, s)
	n := uint64(0)
	for name, b := range bad {
		t.Run("quic/"+name, func(t *testing.T) {
			p := openQUIC(t, conn, wire.RoleProducer, "", "")
			p.write(b)
			readEOF(t, p.str)
			n++
			if st := s.Stats(); st.ProtocolErrors != n {
				t.Fatalf("ProtocolErrors = %d, want %d", st.ProtocolErrors, n)
			}
		})
		t.Run("h3/"+name, func(t *testing.T) {
			p := openH3(t, tr, s, http.MethodPost, "/stream", append(hello(wire.RoleProducer, "", ""), b...))
			if code := p.response().StatusCode; code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", code)
			}
			n++
			if st := s.Stats(); st.ProtocolErrors != n {
				t.Fatalf("ProtocolErrors = %d, want %d", st.ProtocolErrors, n)
			}
		})
	}
	t.Run("bad hello", func(t *testing.T) {
		str, err := conn.OpenStreamSync(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write([]byte("LOOM\x03P\x00\x00\x00")); err != nil {
			t.Fatal(err)
		}
		readEOF(t, str)
		p := openH3(t, tr, s, http.MethodPost, "/stream", []byte("LOOX\x04C\x00\x00\x00"))
		if code := p.response().StatusCode; code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", code)
		}
		if st := s.Stats(); st.ProtocolErrors != n+2 || st.Refused != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestProducerDiesMidMessage(t *testing.T) {
	for _, carrier := range []string{"quic", "h3"} {
		t.Run(carrier, func(t *testing.T) {
			s := start(t, Config{})
			conn := dialQUIC(t, s, nil, nil)
			out := make(chan got, 2)
			c := quicConsumer(t, conn, "", "", 0, out, false)
			if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
				t.Fatal(err)
			}
			body := pattern(300)
			if carrier == "quic" {
				p := openQUIC(t, conn, wire.RoleProducer, "", "")
				p.write(msg("k", 1000, false, body))
				eventually(t, "received", func() bool { return s.Stats().Received == 1 })
				p.str.CancelWrite(0)
			} else {
				p := openH3(t, h3Transport(t, s), s, http.MethodPost, "/stream", hello(wire.RoleProducer, "", ""))
				p.write(msg("k", 1000, false, body))
				eventually(t, "received", func() bool { return s.Stats().Received == 1 })
				_ = p.pw.CloseWithError(errors.New("producer crashed"))
			}
			g := recv(t, out) // ended by the server's end chunk
			checkBody(t, g, "k", body)
			if g.hdr.Size != 1000 {
				t.Fatalf("declared %d", g.hdr.Size)
			}
			c.ack(g.hdr.ID)
			eventually(t, "ack", func() bool { return s.Stats().Acked == 1 })
		})
	}
}

func TestConsumerDies(t *testing.T) {
	s := start(t, Config{})
	cconn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 2)
	quicConsumer(t, cconn, "", "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	pconn := dialQUIC(t, s, nil, nil)
	p1 := openQUIC(t, pconn, wire.RoleProducer, "", "")
	p2 := openQUIC(t, pconn, wire.RoleProducer, "", "")
	p1.write(msg("k1", 0, true, []byte("1")))
	recv(t, out) // in flight, never acked
	p2.write(msg("k2", 0, true, []byte("2")))
	eventually(t, "queued", func() bool { return s.queued("") == 1 })
	_ = cconn.CloseWithError(0, "consumer crashed")
	eventually(t, "lost", func() bool { return s.Stats().LostOnDisconnect == 2 })
	if n := s.Consumers(""); n != 0 {
		t.Fatalf("%d consumers", n)
	}
	// Both producers were released: their next messages find no consumer.
	p1.write(msg("k3", 0, true, []byte("3")))
	p2.write(msg("k4", 0, true, []byte("4")))
	producerFinish(t, p1)
	producerFinish(t, p2)
	if st := s.Stats(); st.Discarded != 2 || st.Received != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConsumerResetsMidMessage(t *testing.T) {
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	c := openQUIC(t, conn, wire.RoleConsumer, "", "")
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	p := openQUIC(t, conn, wire.RoleProducer, "", "")
	p.write(msg("k", 0, false, pattern(1000)))
	eventually(t, "received", func() bool { return s.Stats().Received == 1 })
	c.str.CancelRead(0)
	c.str.CancelWrite(0)
	eventually(t, "lost", func() bool { return s.Stats().LostOnDisconnect == 1 })
	// The producer is free: the rest of its body is read and dropped.
	p.write([]byte{3, 'a', 'b', 'c', 0})
	p.write(msg("k2", 0, true, []byte("x")))
	producerFinish(t, p)
	if st := s.Stats(); st.Received != 2 || st.Discarded != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// slowConsumer is a QUIC consumer whose client grants only 256 KiB of stream window
// (quic-go would grow it to 6 MiB) and does not read until told. The window is small
// next to the tests' bodies, so the consumer backs up into the server at once, yet
// large enough that reading a 12 MiB body through it takes a few dozen window
// updates: with 16 KiB, 768 round trips made TestChunkFull/block take over 15 s on a
// loaded machine under -race.
func slowConsumer(t *testing.T, s *Server) *sess {
	t.Helper()
	conf := &quic.Config{InitialStreamReceiveWindow: 256 << 10, MaxStreamReceiveWindow: 256 << 10}
	c := openQUIC(t, dialQUIC(t, s, conf, nil), wire.RoleConsumer, "", "")
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestChunkFull(t *testing.T) {
	t.Run("drop", func(t *testing.T) {
		s := start(t, Config{ChunkFull: FullDrop})
		c := slowConsumer(t, s)
		p := openQUIC(t, dialQUIC(t, s, nil, nil), wire.RoleProducer, "", "")
		body := pattern(16 << 20)
		// More than every window and buffer on the way: it only goes through because the
		// server drops chunks the consumer cannot take.
		p.write(msg("k", 0, true, split(body, 64<<10)...))
		out := make(chan got, 1)
		c.consume(c.str, 0, out, false)
		g := recv(t, out)
		if len(g.body) == 0 || len(g.body) >= len(body) || len(g.body)%(64<<10) != 0 {
			t.Fatalf("consumer got %d bytes of %d", len(g.body), len(body))
		}
		c.ack(g.hdr.ID)
		producerFinish(t, p)
	})
	t.Run("block", func(t *testing.T) {
		s := start(t, Config{})
		c := slowConsumer(t, s)
		p := openQUIC(t, dialQUIC(t, s, nil, nil), wire.RoleProducer, "", "")
		body := pattern(12 << 20)
		wrote := make(chan error, 1)
		go func() {
			_, err := p.str.Write(msg("k", uint64(len(body)), true, split(body, 64<<10)...))
			wrote <- err
		}()
		select {
		case err := <-wrote:
			t.Fatalf("the producer was not held back (err %v)", err)
		case <-time.After(300 * time.Millisecond):
		}
		out := make(chan got, 1)
		c.consume(c.str, 0, out, false)
		g := recv(t, out)
		checkBody(t, g, "k", body)
		c.ack(g.hdr.ID)
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		producerFinish(t, p)
	})
}
