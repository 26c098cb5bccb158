package loom_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

func TestPublishNothingReturnsAtOnce(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	for _, mode := range []string{loom.ModeConfirm, loom.ModeFireAndForget} {
		pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
			c.Mode = mode
			c.PublishTimeout = time.Minute // a wait for nothing would outlast the test
		})
		if err := pub.Publish("empty"); err != nil {
			t.Fatalf("%s: Publish with no messages: %v", mode, err)
		}
	}
}

// TestSlowConsumerBatchIsNotResent: the server takes a batch's messages one per
// consumer acknowledgement, so a batch of 20 with a 100 ms handler takes 2 s. With
// a stream_timeout of 1 s per message that is no timeout: each message arrives
// once and nothing is resent. (A bound on the whole batch timed it out and resent
// it forever, the head arriving again every round.)
func TestSlowConsumerBatchIsNotResent(t *testing.T) {
	for _, mode := range []string{loom.ModeConfirm, loom.ModeFireAndForget} {
		t.Run(mode, func(t *testing.T) {
			srv := startRouter(t, loomtest.Config{})
			lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
			ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "slow")
			if err != nil {
				t.Fatal(err)
			}
			pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
				c.Mode = mode
				c.Streams = 1
				c.BatchSize = 20
				c.StreamTimeout = time.Second
				c.PublishTimeout = 20 * time.Second
			})
			var msgs []*message.Message
			for i := range 20 {
				msgs = append(msgs, message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i))))
			}
			published := make(chan error, 1)
			go func() { published <- pub.Publish("slow", msgs...) }()
			seen := map[string]int{}
			deadline := time.After(patience)
			for len(seen) < len(msgs) {
				select {
				case m := <-ch:
					time.Sleep(100 * time.Millisecond) // the handler
					seen[string(m.Payload)]++
					m.Ack()
				case <-deadline:
					t.Fatalf("%d of %d arrived; publisher %+v", len(seen), len(msgs), pub.Stats())
				}
			}
			if err := <-published; err != nil {
				t.Fatal(err)
			}
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("message %s arrived %d times", id, n)
				}
			}
			if st := pub.Stats(); st.Resent != 0 || st.FailedBatches != 0 {
				t.Fatalf("resent %d, failed batches %d: want none", st.Resent, st.FailedBatches)
			}
		})
	}
}

// TestDropOldestTakesBouncedMessage: a room's messages wait while its only stream
// is held by a consumer that has not acked. (They used to be taken by a sender for
// another room's batch and left at the front, "bounced"; a batch now takes its
// room's messages wherever they are, and a room waits only for its own streams.)
// The oldest of them never sent is what drop_oldest drops, not a newer one, and
// the new message is kept.
func TestDropOldestTakesBouncedMessage(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "A")
	if err != nil {
		t.Fatal(err)
	}
	dropped := make(chan string, 10)
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 1
		c.CloseTimeout = 100 * time.Millisecond
		c.Buffer = loom.BufferConfig{MaxMessages: 3, Policy: "drop_oldest"}
		c.OnDrop = func(m *message.Message, r loom.DropReason) {
			if r == loom.DropFull {
				dropped <- m.UUID
			}
		}
	})
	publish := func(room, id string) {
		t.Helper()
		if err := pub.Publish(room, message.NewMessage(id, []byte(id))); err != nil {
			t.Fatal(err)
		}
	}
	publish("A", "X")
	x := recvOne(t, ch) // held: room A's only stream waits on its batch [X]
	defer x.Ack()
	publish("A", "A2")
	publish("A", "A3")
	publish("A", "A4") // full
	publish("A", "A5") // A2 is the oldest never sent
	select {
	case id := <-dropped:
		if id != "A2" {
			t.Fatalf("drop_oldest dropped %s; A2 is the oldest message never sent", id)
		}
	case <-time.After(patience):
		t.Fatal("nothing dropped")
	}
	if st := pub.Stats(); st.Buffered != 3 || st.Dropped[loom.DropFull] != 1 {
		t.Fatalf("publisher %+v: want A3, A4, A5 buffered and one drop", st)
	}
}

// TestAbandonedWrittenMessageIsNotReportedDropped: a confirm Publish gives up while
// its batch waits on a held message; the batch then times out. Both messages were
// delivered, so neither may be reported as dropped: they count as unconfirmed and
// are not sent again.
func TestAbandonedWrittenMessageIsNotReportedDropped(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "exp")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var drops []string
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Streams = 1
		// Publish must still be waiting when m2 is delivered: 3 s leaves a loaded
		// machine time for the dial and m1's round trip. The batch (2 x 2 s) times
		// out after Publish gave up.
		c.PublishTimeout = 3 * time.Second
		c.StreamTimeout = 2 * time.Second
		c.CloseTimeout = 100 * time.Millisecond
		c.OnDrop = func(m *message.Message, r loom.DropReason) {
			mu.Lock()
			drops = append(drops, m.UUID+":"+string(r))
			mu.Unlock()
		}
	})
	published := make(chan error, 1)
	go func() {
		published <- pub.Publish("exp", message.NewMessage("m1", []byte("1")), message.NewMessage("m2", []byte("2")))
	}()
	recvOne(t, ch).Ack()   // m1 delivered and acknowledged
	held := recvOne(t, ch) // m2 delivered and held: Publish gives up, then the batch times out
	if err := <-published; err == nil {
		t.Fatal("Publish confirmed although m2 is held")
	}
	deadline := time.Now().Add(patience)
	for pub.Stats().Unconfirmed < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("publisher %+v: want 2 unconfirmed", pub.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	held.Ack()
	select {
	case m := <-ch:
		t.Fatalf("%s was sent again after its Publish gave up", m.UUID)
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(drops) > 0 {
		t.Fatalf("reported as dropped although both were delivered: %v", drops)
	}
}

// recvOne returns the next message, or fails the test after patience.
func recvOne(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(patience):
		t.Fatal("no message")
	}
	return nil
}
