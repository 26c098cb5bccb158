package client_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// holdingConsumer consumes room on its own client and never acks: the server reads
// one message of a producer stream and waits, the rest stays unread.
func holdingConsumer(t *testing.T, srv *loomtest.Server, transport, room string) {
	t.Helper()
	c := dial(t, srv, transport, nil)
	k := consume(t, srv, c, room, 1)
	go func() {
		_, _ = k.Next(context.Background())
	}()
}

func sendN(t *testing.T, p *client.Producer, n int) {
	t.Helper()
	for i := range n {
		if err := p.Send(ctxT(t), "k", 1, bytes.NewReader([]byte{byte(i)})); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}

// TestGracefulStopDoesNotConfirm: the server stops as loomd does on SIGTERM while a
// producer that already sent its FIN waits: the producer stream ends with a plain FIN
// though 19 of 20 messages were never read. Close must not report them delivered.
// Over QUIC the liveness probe stays unanswered; over HTTP/3 the response is cut.
// With restart the server comes back at once (the watchdog finds the old connection
// dead); without, the connection dies at its idle timeout.
func TestGracefulStopDoesNotConfirm(t *testing.T) {
	for _, tr := range transports {
		for _, restart := range []bool{true, false} {
			name := tr + "/stop"
			if restart {
				name += "+restart"
			}
			t.Run(name, func(t *testing.T) {
				srv := startRouter(t, loomtest.Config{})
				holdingConsumer(t, srv, tr, "r")
				c := dial(t, srv, tr, func(cfg *client.Config) {
					cfg.KeepAlive, cfg.IdleTimeout = time.Second, 4*time.Second
				})
				confirmRoom(t, c, "r")
				p, err := c.Produce(ctxT(t), "r")
				if err != nil {
					t.Fatal(err)
				}
				sendN(t, p, 20)
				closed := make(chan error, 1)
				go func() { closed <- p.Close(ctxT(t)) }()
				deadline := time.Now().Add(patience)
				for srv.RoomStats("r").Received < 1 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				// Let the FIN leave first (not needed for the outcome: a stop before it
				// fails Close with ErrStreamEnded).
				time.Sleep(100 * time.Millisecond)
				stopped := time.Now()
				if err := srv.Stop(); err != nil {
					t.Fatal(err)
				}
				if restart {
					if err := srv.Restart(); err != nil {
						t.Fatal(err)
					}
				}
				err = <-closed
				t.Logf("Close returned after %s: %v", time.Since(stopped).Round(time.Millisecond), err)
				if err == nil {
					t.Fatalf("Close returned nil: %d messages confirmed, %d read by the server", p.Sent(), srv.RoomStats("r").Received)
				}
				if tr == client.TransportQUIC && !errors.Is(err, client.ErrUnconfirmed) {
					if !errors.Is(err, client.ErrStreamEnded) {
						t.Fatalf("got %v, want ErrUnconfirmed", err)
					}
					t.Log("the stop came before this side's FIN left")
				}
				if strings.Contains(err.Error(), "refused") {
					t.Fatalf("error blames a refusal: %v", err)
				}
			})
		}
	}
}

// TestStopBeforeOurEnd: the server ends a producer stream while this side is still
// sending: the error says the stream ended before every message was read, not that
// the token was refused (the room was confirmed before on this client).
func TestStopBeforeOurEnd(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	c := dial(t, srv, client.TransportQUIC, nil)
	confirmRoom(t, c, "r")
	holdingConsumer(t, srv, client.TransportQUIC, "r")
	p, err := c.Produce(ctxT(t), "r")
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, p, 5)
	deadline := time.Now().Add(patience)
	for srv.RoomStats("r").Received < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	err = p.Close(ctxT(t))
	t.Logf("Close: %v", err)
	if !errors.Is(err, client.ErrStreamEnded) || errors.Is(err, client.ErrRefused) || strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v, want ErrStreamEnded without a refusal", err)
	}
	if !strings.Contains(err.Error(), "before reading every message") {
		t.Fatalf("error does not say what happened: %v", err)
	}
}

// confirmRoom closes an empty producer stream on room, so the client knows its token
// is accepted there (no consumer yet: nothing is waited for).
func confirmRoom(t *testing.T, c *client.Client, room string) {
	t.Helper()
	p, err := c.Produce(ctxT(t), room)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}
