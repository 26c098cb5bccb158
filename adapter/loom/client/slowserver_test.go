package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// TestSlowServerKeepsItsConnection: a server whose application answers late (each
// session waits 1.5 s before its hello is read, as on a loaded machine) leaves the
// liveness probes unanswered well past the watchdog's margin, which makes the
// connection suspect; its QUIC stack still answers the poke, so the connection is
// kept and every stream is confirmed. A false disconnect would fail the confirm.
func TestSlowServerKeepsItsConnection(t *testing.T) {
	srv := startRouter(t, loomtest.Config{HelloDelay: 1500 * time.Millisecond})
	c := dial(t, srv, client.TransportQUIC, nil)
	k := consume(t, srv, c, "r", 1)
	for i := range 3 {
		ctx := ctxT(t)
		p, err := c.Produce(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Send(ctx, "k", 1, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Close(ctx) }()
		m, err := k.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Body.Discard(); err != nil {
			t.Fatal(err)
		}
		if err := k.Ack(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("stream %d not confirmed by a slow server: %v", i, err)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection to a slow but live server was closed: %v", err)
	}
}
