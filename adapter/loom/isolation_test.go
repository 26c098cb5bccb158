package loom_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// holdAll subscribes to room with one consumer stream that takes messages and never
// acks them: the server then sends that stream nothing more and reads no further
// message of the producer streams waiting on it. It returns what it took.
func holdAll(t *testing.T, srv *loomtest.Server, room string) func() []*message.Message {
	t.Helper()
	sub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []*message.Message
	go func() {
		for m := range ch {
			mu.Lock()
			held = append(held, m)
			mu.Unlock()
		}
	}()
	return func() []*message.Message {
		mu.Lock()
		defer mu.Unlock()
		return append([]*message.Message(nil), held...)
	}
}

// TestStuckRoomDoesNotHoldBackAnother: a room whose only consumer never acks holds
// its first message forever. With the default 4 streams shared by all rooms, its
// batches took every sender and a healthy room beside it waited (3 of 8 delivered
// in 5 s, the rest only after stream_timeout and a resend). Now every message of
// the healthy room arrives while the stuck room still waits, and nothing is resent.
func TestStuckRoomDoesNotHoldBackAnother(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	held := holdAll(t, srv, "stuck")
	okSub := newSubscriber(t, srv, client.TransportQUIC, nil)
	okCh, err := waitingSubscriber{okSub, srv, 4}.Subscribe(context.Background(), "ok")
	if err != nil {
		t.Fatal(err)
	}
	got := collect(okCh)
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.StreamTimeout = 10 * time.Minute // a resend would only come after this
		c.CloseTimeout = 100 * time.Millisecond
	})
	// The stuck room's first four messages one at a time, each on a stream of its
	// own: the server reads each stream's first message and then waits for an ack
	// that never comes. Then more of them, to wait behind.
	for i := range 40 {
		if err := pub.Publish("stuck", message.NewMessage("s"+strconv.Itoa(i), []byte("s"))); err != nil {
			t.Fatal(err)
		}
		if i < loom.DefaultStreams {
			waitProgress(t, "stuck room's streams", i+1, func() int { return int(srv.RoomStats("stuck").Received) }, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
		}
	}
	waitProgress(t, "stuck room's first message held", 1, func() int { return len(held()) }, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
	const total = 200
	for i := range total {
		if err := pub.Publish("ok", message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	waitProgress(t, "healthy room delivered", total, got.distinct, func() string { return fmt.Sprintf("publisher %+v", pub.Stats()) })
	st := pub.Stats()
	if got.dups != 0 || st.Resent != 0 || st.FailedBatches != 0 {
		t.Fatalf("duplicates %d, publisher %+v: want none resent", got.dups, st)
	}
	if n := len(held()); n != 1 {
		t.Fatalf("the stuck room's consumer got %d messages, want its first only", n)
	}
	for _, m := range held() {
		m.Ack()
	}
}

// TestSlowConsumerCausesNoDuplicates: a handler of 1 s against a stream_timeout of
// 300 ms. The stream is slow but alive: it used to be resent after the timeout (one
// message arrived 5 times in 5 s and the batch was never confirmed). Now each
// message arrives once, the Publish is confirmed, and the stream counts as slow.
func TestSlowConsumerCausesNoDuplicates(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	sub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		for m := range ch {
			time.Sleep(time.Second) // the handler
			mu.Lock()
			seen[string(m.Payload)]++
			mu.Unlock()
			m.Ack()
		}
	}()
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.StreamTimeout = 300 * time.Millisecond
		c.PublishTimeout = patience
	})
	msgs := []*message.Message{
		message.NewMessage("a", []byte("a")), message.NewMessage("b", []byte("b")), message.NewMessage("c", []byte("c")),
	}
	if err := pub.Publish("slow", msgs...); err != nil {
		t.Fatalf("Publish: %v; publisher %+v", err, pub.Stats())
	}
	// Anything resent would arrive within a handler's time or two.
	time.Sleep(2500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"a", "b", "c"} {
		if seen[id] != 1 {
			t.Errorf("message %s arrived %d times", id, seen[id])
		}
	}
	st := pub.Stats()
	if st.Sent != 3 || st.FailedBatches != 0 || st.Resent != 0 || st.SlowStreams == 0 {
		t.Fatalf("publisher %+v: want 3 sent, nothing failed or resent, a slow stream counted", st)
	}
}

// TestInterleavedRoomsStillBatch: 400 messages alternating between two rooms used to
// make 400 batches of one message, since a batch stopped at the first message of
// another room. Now a batch takes its room's messages wherever they sit.
func TestInterleavedRoomsStillBatch(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 1
	})
	// Held at the server, the first batches wait while the rest is buffered.
	srv.HoldProducers()
	const total = 400
	for i := range total {
		room := []string{"a", "b"}[i%2]
		if err := pub.Publish(room, message.NewMessage(strconv.Itoa(i), []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	srv.ReleaseProducers()
	waitProgress(t, "confirmed", total, func() int { return int(pub.Stats().Sent) }, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
	// Batch size 256: one batch per room before the release, then two or so each.
	if st := pub.Stats(); st.Batches > 10 {
		t.Fatalf("%d batches for %d messages in two rooms: batching defeated by interleaving", st.Batches, total)
	}
}
