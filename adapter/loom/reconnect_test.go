package loom_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// received counts what a subscription delivered, by payload.
type received struct {
	mu    sync.Mutex
	count map[string]int
	dups  int
}

func collect(ch <-chan *message.Message) *received {
	r := &received{count: map[string]int{}}
	go func() {
		for m := range ch {
			r.mu.Lock()
			r.count[string(m.Payload)]++
			if r.count[string(m.Payload)] > 1 {
				r.dups++
			}
			r.mu.Unlock()
			m.Ack()
		}
	}()
	return r
}

func (r *received) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

// disrupt cuts every connection, or stops the router and restarts it on the same port
// after down. Loom discards what nobody consumes, so producers are held until the
// subscriber's streams are back, as an operator starts consumers first; what is
// tested is that the adapter loses nothing of its own.
func disrupt(t *testing.T, srv *loomtest.Server, room string, consumers int, restart bool, down time.Duration) {
	t.Helper()
	srv.HoldProducers()
	defer srv.ReleaseProducers()
	if restart {
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(down) // the publisher buffers meanwhile
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
	} else {
		srv.CutConnections() // returns when the cut consumers have left
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := srv.WaitConsumers(ctx, room, consumers); err != nil {
		t.Fatalf("subscriber did not come back: %v", err)
	}
}

// soak publishes total messages in fire_and_forget mode while disrupting the router
// five times, and returns what arrived and how many drops were reported.
func soak(t *testing.T, total int, buf loom.BufferConfig) (*received, *loom.Publisher, *loom.Subscriber, int64) {
	const room, consumers = "soak", 4
	srv := startRouter(t, loomtest.Config{})
	lsub := newSubscriber(t, srv, client.TransportQUIC, nil)
	ch, err := waitingSubscriber{lsub, srv, consumers}.Subscribe(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(ch)
	var dropped atomic.Int64
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Buffer = buf
		c.PublishTimeout = time.Minute
		c.OnDrop = func(*message.Message, loom.DropReason) { dropped.Add(1) }
	})

	published := make(chan error, 1)
	var sentCount atomic.Int64
	go func() {
		for i := range total {
			if err := pub.Publish(room, message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i)))); err != nil {
				published <- err
				return
			}
			sentCount.Add(1)
		}
		published <- nil
	}()
	for i := range 5 {
		// Disrupt at evenly spread points of the run.
		for sentCount.Load() < int64((i+1)*total/6) {
			time.Sleep(time.Millisecond)
		}
		disrupt(t, srv, room, consumers, i%2 == 1, 150*time.Millisecond)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	waitProgress(t, "arrived or dropped", total, func() int { return got.distinct() + int(dropped.Load()) }, func() string {
		return fmt.Sprintf("%d arrived, %d dropped; publisher %+v", got.distinct(), dropped.Load(), pub.Stats())
	})
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	return got, pub, lsub, dropped.Load()
}

// TestReconnectLosesNothingWithBlock: 20,000 messages, five cuts and restarts, and
// every message arrives. Under -race 5,000: each message costs a consumer round trip
// (1.4 ms idle under -race, several times that on a loaded machine), 20,000 took a
// minute of a loaded CI run, and the five disruptions still each fall amid a
// stream of messages; .ci/run runs it at 20,000 without -race.
func TestReconnectLosesNothingWithBlock(t *testing.T) {
	total := 20000
	if raceEnabled {
		total = 5000
	}
	got, pub, sub, dropped := soak(t, total, loom.BufferConfig{Policy: "block"})
	st := pub.Stats()
	t.Logf("distinct %d, duplicates %d, resent %d, publisher reconnects %d, subscriber %+v", got.distinct(), got.dups, st.Resent, st.Reconnects, sub.Stats())
	if dropped != 0 || got.distinct() != total {
		t.Fatalf("%d of %d arrived, %d dropped", got.distinct(), total, dropped)
	}
	// The subscriber is waited for after every disruption; the publisher may come
	// back once for two disruptions that fall within one back-off.
	if n := sub.Stats().Reconnects; n < 5 || st.Reconnects < 1 {
		t.Fatalf("subscriber reconnected %d times, publisher %d: want 5 and at least 1", n, st.Reconnects)
	}
}

// TestReconnectDropOldestReportsEveryLoss: with a small drop_oldest buffer, the
// drops reported are exactly what is missing.
func TestReconnectDropOldestReportsEveryLoss(t *testing.T) {
	const total = 20000
	got, pub, _, dropped := soak(t, total, loom.BufferConfig{Policy: "drop_oldest", MaxMessages: 200})
	st := pub.Stats()
	missing := total - got.distinct()
	t.Logf("distinct %d, missing %d, dropped %d, duplicates %d", got.distinct(), missing, dropped, got.dups)
	if int64(missing) != dropped || st.Dropped[loom.DropFull] != uint64(dropped) {
		t.Fatalf("missing %d, reported drops %d, stats %v", missing, dropped, st.Dropped)
	}
	if dropped == 0 {
		t.Fatal("nothing was dropped: the test did not fill the buffer")
	}
}

// downPublisher returns a publisher whose server is stopped, so its buffer fills.
func downPublisher(t *testing.T, policy string, mod func(*loom.PublisherConfig)) (*loomtest.Server, *loom.Publisher) {
	srv := startRouter(t, loomtest.Config{})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Buffer = loom.BufferConfig{MaxMessages: 5, Policy: policy}
		c.PublishTimeout = 200 * time.Millisecond
		c.CloseTimeout = 300 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	})
	for i := range 5 {
		if err := pub.Publish("full", message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	return srv, pub
}

func TestBufferBlockHonoursDeadline(t *testing.T) {
	_, pub := downPublisher(t, "block", nil)
	start := time.Now()
	err := pub.Publish("full", message.NewMessage("late", []byte("late")))
	if !errors.Is(err, loom.ErrBufferFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want buffer full and deadline exceeded", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("returned after %s: block must wait for room until publish_timeout", waited)
	}
	if st := pub.Stats(); st.Buffered != 5 {
		t.Fatalf("%d buffered, want 5: the late message must not be added", st.Buffered)
	}
}

func TestBufferBlockWaitsForRoom(t *testing.T) {
	srv, pub := downPublisher(t, "block", func(c *loom.PublisherConfig) { c.PublishTimeout = patience })
	sub := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, nil), srv, 4}
	done := make(chan error, 1)
	go func() { done <- pub.Publish("full", message.NewMessage("5", []byte("5"))) }()
	select {
	case err := <-done:
		t.Fatalf("Publish returned %v while the buffer was full", err)
	case <-time.After(100 * time.Millisecond):
	}
	srv.HoldProducers()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), "full")
	if err != nil {
		t.Fatal(err)
	}
	srv.ReleaseProducers()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	readN(t, ch, 6)
}

// TestBufferErrorPolicy: the error policy fails a Publish into a full buffer at once.
// "At once" is checked against a publish_timeout far longer than any slow machine
// needs, not against a clock: a policy that waited for room would return only at the
// timeout, with context.DeadlineExceeded.
func TestBufferErrorPolicy(t *testing.T) {
	_, pub := downPublisher(t, "error", func(c *loom.PublisherConfig) { c.PublishTimeout = patience })
	start := time.Now()
	err := pub.Publish("full", message.NewMessage("late", []byte("late")))
	if !errors.Is(err, loom.ErrBufferFull) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrBufferFull without a deadline", err)
	}
	if waited := time.Since(start); waited >= patience/2 {
		t.Fatalf("error policy waited %s for room (publish_timeout %s)", waited, patience)
	}
}

func TestBufferDropOldestAndCloseReportDrops(t *testing.T) {
	var mu sync.Mutex
	drops := map[string]loom.DropReason{}
	srv, pub := downPublisher(t, "drop_oldest", func(c *loom.PublisherConfig) {
		c.OnDrop = func(m *message.Message, r loom.DropReason) {
			mu.Lock()
			drops[m.UUID] = r
			mu.Unlock()
		}
	})
	for i := 5; i < 8; i++ {
		if err := pub.Publish("full", message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	for _, id := range []string{"0", "1", "2"} {
		if drops[id] != loom.DropFull {
			t.Fatalf("message %s: drop %q, want buffer_full (drops %v)", id, drops[id], drops)
		}
	}
	mu.Unlock()
	// Still down: Close gives up after close_timeout and reports the rest.
	err := pub.Close()
	if err == nil || !errors.Is(pub.Publish("full", message.NewMessage("x", nil)), loom.ErrPublisherClosed) {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"3", "4", "5", "6", "7"} {
		if drops[id] != loom.DropClosed {
			t.Fatalf("message %s: drop %q, want closed", id, drops[id])
		}
	}
	if st := pub.Stats(); st.Dropped[loom.DropFull] != 3 || st.Dropped[loom.DropClosed] != 5 {
		t.Fatalf("stats %v", st.Dropped)
	}
	_ = srv
}

// TestConfirmTimesOutWhenNothingAnswers: a confirm Publish against a server that is
// down returns at publish_timeout, and its messages are not sent later.
func TestConfirmTimesOutWhenNothingAnswers(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var expired atomic.Int64
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.PublishTimeout = 200 * time.Millisecond
		c.OnDrop = func(_ *message.Message, r loom.DropReason) {
			if r == loom.DropExpired {
				expired.Add(1)
			}
		}
	})
	if err := pub.Publish("r", message.NewMessage("a", []byte("a"))); err == nil {
		t.Fatal("confirm Publish succeeded with the server down")
	}
	sub := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, nil), srv, 4}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	// The sender drops it once reconnected (after up to one back-off), then there
	// is nothing to deliver.
	deadline := time.After(patience)
	for expired.Load() != 1 {
		select {
		case m := <-ch:
			t.Fatalf("a message whose Publish gave up was sent: %s", m.UUID)
		case <-deadline:
			t.Fatalf("%d expired drops reported, want 1", expired.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case m := <-ch:
		t.Fatalf("a message whose Publish gave up was sent: %s", m.UUID)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestParallelStreamsDoNotStall: eight senders with full batches of 64 KiB messages
// to one room. On one shared connection, batches written ahead of what the server
// reads filled the connection's flow-control window and starved a body a consumer
// waited for, until stream_timeout and a resend. Each sender has its own connection
// now: everything arrives once, nothing is resent.
func TestParallelStreamsDoNotStall(t *testing.T) {
	const total, size = 800, 64 << 10
	srv := startRouter(t, loomtest.Config{})
	// One consumer stream: every sender's current message queues at it, which is
	// when the others' written-ahead data can starve the one being delivered.
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "wide")
	if err != nil {
		t.Fatal(err)
	}
	got := collect(ch)
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 8
		c.StreamTimeout = 5 * time.Minute // a stall shows in waitProgress, not as a resend
	})
	payload := make([]byte, size)
	for i := range total {
		copy(payload, strconv.Itoa(i)+"|")
		if err := pub.Publish("wide", message.NewMessage(strconv.Itoa(i), append([]byte(nil), payload...))); err != nil {
			t.Fatal(err)
		}
	}
	waitProgress(t, "arrived", total, got.distinct, func() string { return fmt.Sprintf("publisher %+v", pub.Stats()) })
	if st := pub.Stats(); st.Resent != 0 || got.dups != 0 {
		t.Fatalf("resent %d, duplicates %d", st.Resent, got.dups)
	}
}

// TestCloseWithHeldMessageReportsNoDrop: a consumer holding the last message of a
// batch unacked keeps the batch unconfirmed. Close gives up after close_timeout
// without calling the written messages lost: they were delivered.
func TestCloseWithHeldMessageReportsNoDrop(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "held")
	if err != nil {
		t.Fatal(err)
	}
	var drops atomic.Int64
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 1
		c.CloseTimeout = 300 * time.Millisecond
		c.OnDrop = func(*message.Message, loom.DropReason) { drops.Add(1) }
	})
	if err := pub.Publish("held", message.NewMessage("1", []byte("1")), message.NewMessage("2", []byte("2"))); err != nil {
		t.Fatal(err)
	}
	(<-ch).Ack()
	held := <-ch // not acked: the server cannot end the batch's stream
	if err := pub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st := pub.Stats()
	if drops.Load() != 0 || st.Unconfirmed == 0 {
		t.Fatalf("drops %d, stats %+v", drops.Load(), st)
	}
	held.Ack()
}
