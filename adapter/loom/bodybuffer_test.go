package loom_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// TestPayloadHoldsNoSpareCapacity: a received payload's buffer is exactly as long as
// the body, with its size declared or not. A buffer that starts small and doubles
// (as it once did) leaves up to twice the body behind the payload, held for as long as
// the message is.
func TestPayloadHoldsNoSpareCapacity(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	sub := newSubscriber(t, srv, client.TransportQUIC, nil)
	ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(context.Background(), "exact")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), clientConfig(srv, client.TransportQUIC), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	p, err := c.Produce(ctx, "exact")
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{3<<20 + 5, 100, 3<<20 + 5}
	// The server reads a producer stream one message per consumer ack: send while
	// reading.
	sent := make(chan error, 1)
	go func() {
		for i, n := range sizes {
			body := bytes.Repeat([]byte{byte(i + 1)}, n)
			declared := uint64(n)
			if i == 2 {
				declared = 0 // unknown
			}
			if err := p.Send(ctx, fmt.Sprint("k", i), declared, bytes.NewReader(body)); err != nil {
				sent <- err
				return
			}
		}
		sent <- p.Close(ctx)
	}()
	got := readN(t, ch, len(sizes))
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		if len(m.Payload) == 0 || cap(m.Payload) != len(m.Payload) {
			t.Errorf("message %s: payload of %d bytes in a buffer of %d", m.Metadata.Get("loom_key"), len(m.Payload), cap(m.Payload))
		}
	}
}
