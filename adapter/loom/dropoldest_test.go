package loom_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// TestDropOldestSparesRequeuedKeepsNew checks the buffer's drop_oldest fix through
// the publisher: with a message that was written to a stream and then requeued (its
// connection died; it may have arrived) and messages never sent filling the buffer,
// a new message evicts the oldest never sent, is kept itself, and the requeued one
// is spared. (drop_oldest once evicted a never-sent message and then dropped the
// new one anyway.) Everything not reported as dropped arrives.
func TestDropOldestSparesRequeuedKeepsNew(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	var mu sync.Mutex
	var drops []string
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 1
		c.Buffer = loom.BufferConfig{MaxMessages: 3, Policy: "drop_oldest"}
		c.OnDrop = func(m *message.Message, r loom.DropReason) {
			mu.Lock()
			drops = append(drops, m.UUID+":"+string(r))
			mu.Unlock()
		}
	})
	publish := func(id string) {
		t.Helper()
		if err := pub.Publish("r", message.NewMessage(id, []byte(id))); err != nil {
			t.Fatal(err)
		}
	}
	state := func() string { return fmt.Sprintf("publisher %+v", pub.Stats()) }
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	// m1 reaches the consumer, which holds it; then the server goes down: the batch
	// fails and m1, which was written, goes back to the buffer as requeued.
	publish("m1")
	if m := recvOne(t, ch); string(m.Payload) != "m1" {
		t.Fatalf("got %s", m.Payload)
	}
	srv.HoldProducers() // after the restart, until the consumer is back
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, "m1 requeued", 1, func() int { return int(pub.Stats().Resent) }, state)
	publish("u1")
	publish("u2") // full: m1 (requeued), u1, u2
	publish("u3") // evicts u1, the oldest never sent; u3 is kept
	mu.Lock()
	got := slices.Clone(drops)
	mu.Unlock()
	if !slices.Equal(got, []string{"u1:buffer_full"}) {
		t.Fatalf("drops %v, want u1 only", got)
	}
	if st := pub.Stats(); st.Buffered != 3 {
		t.Fatalf("publisher %+v: want m1, u2, u3 buffered", st)
	}

	// The first subscriber still holds m1; a new one takes over.
	if err := lsub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	sub2 := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err = waitingSubscriber{sub2, srv, 1}.Subscribe(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	srv.ReleaseProducers()
	var ids []string
	for _, m := range readN(t, ch, 3) {
		ids = append(ids, string(m.Payload))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"m1", "u2", "u3"}) {
		t.Fatalf("arrived %v, want m1, u2, u3", ids)
	}
	select {
	case m := <-ch:
		t.Fatalf("%s arrived as well", m.Payload)
	case <-time.After(200 * time.Millisecond):
	}
}
