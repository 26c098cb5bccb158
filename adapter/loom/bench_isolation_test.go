package loom_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// BenchmarkRoomIsolation measures a healthy room's throughput through one
// publisher, alone and beside a stuck room: a room whose only consumer took a
// message and never acks it, with the publisher's streams for that room all waiting
// on it and more of its messages buffered. One op is one 1 KiB message published
// in fire_and_forget mode to the healthy room (default streams, 4; a subscriber
// with 4 consumer streams acking each) and received; the stuck room's set-up is not
// timed. The goal: beside_stuck at least 90 % of alone.
func BenchmarkRoomIsolation(b *testing.B) {
	for _, stuck := range []bool{false, true} {
		name := "alone"
		if stuck {
			name = "beside_stuck"
		}
		b.Run(name, func(b *testing.B) { runIsolation(b, stuck) })
	}
}

func runIsolation(b *testing.B, stuck bool) {
	srv := startRouter(b, loomtest.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := newPublisher(b, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.CloseTimeout = 100 * time.Millisecond
	})
	if stuck {
		hsub := newSubscriber(b, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
		hch, err := waitingSubscriber{hsub, srv, 1}.Subscribe(ctx, "stuck")
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range hch { // taken, never acked
			}
		}()
		for i := range 100 {
			if err := pub.Publish("stuck", message.NewMessage("s"+strconv.Itoa(i), []byte("s"))); err != nil {
				b.Fatal(err)
			}
			if i < loom.DefaultStreams {
				waitProgress(b, "stuck streams", i+1, func() int { return int(srv.RoomStats("stuck").Received) }, func() string { return "" })
			}
		}
	}
	sub := newSubscriber(b, srv, client.TransportQUIC, nil)
	ch, err := waitingSubscriber{sub, srv, 4}.Subscribe(ctx, "ok")
	if err != nil {
		b.Fatal(err)
	}
	var received, target atomic.Int64
	done := make(chan struct{}, 1)
	go func() {
		for m := range ch {
			m.Ack()
			if received.Add(1) == target.Load() {
				done <- struct{}{}
			}
		}
	}()
	payload := make([]byte, 1<<10)
	// Warm up: the first stream on a room waits for a possible refusal.
	target.Store(1)
	if err := pub.Publish("ok", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		b.Fatal(err)
	}
	<-done
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
	}
	target.Store(1 + int64(b.N))
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for _, m := range msgs {
		if err := pub.Publish("ok", m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(benchWait(b.N, len(payload))):
		b.Fatalf("received %d of %d", received.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if st := pub.Stats(); st.Resent != 0 {
		b.Fatalf("resent %d", st.Resent)
	}
}
