package loom_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// confirmPublishers is how many goroutines call Publish at once in confirm mode: one
// confirm Publish waits until its message was acknowledged, so throughput needs
// several callers.
const confirmPublishers = 64

// BenchmarkPubSub publishes Watermill messages with a loom.Publisher through the
// in-process loomtest router to a loom.Subscriber that acks each one. One op is one
// message, published and received; the timer stops once the subscriber has received
// all b.N. Publisher.Streams and Subscriber.Consumers are both streams=N. In confirm
// mode confirmPublishers goroutines publish one message per call; in
// fire_and_forget mode one goroutine publishes them all (Publish returns once a
// message is buffered). Keys are the message UUIDs (the default), so messages spread
// over the consumer streams. msgs/batch reports how many messages each producer stream carried
// (batch_size is the default, 256). The router runs in this process, so B/op and
// allocs/op include the router's and both QUIC stacks' allocations; building the messages is
// not counted.
func BenchmarkPubSub(b *testing.B) {
	sizes := []struct {
		name string
		size int
	}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"64MiB", 64 << 20}}
	for _, tr := range transports {
		for _, mode := range []string{loom.ModeConfirm, loom.ModeFireAndForget} {
			for _, sz := range sizes {
				if tr == client.TransportH3 && sz.size != 1<<10 {
					continue // HTTP/3 only for the small messages; the client benchmarks cover it
				}
				if sz.size > 1<<20 && mode == loom.ModeConfirm {
					continue // 64 confirm publishers would buffer 64 bodies of 64 MiB
				}
				payload := make([]byte, sz.size)
				for _, streams := range []int{1, 8} {
					b.Run(fmt.Sprintf("%s/%s/%s/streams=%d", tr, mode, sz.name, streams), func(b *testing.B) {
						runPubSub(b, tr, mode, payload, streams)
					})
				}
			}
		}
	}
}

func runPubSub(b *testing.B, transport, mode string, payload []byte, streams int) {
	const topic = "bench"
	srv := startRouter(b, loomtest.Config{})
	sub := newSubscriber(b, srv, transport, func(c *loom.SubscriberConfig) { c.Consumers = streams })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := waitingSubscriber{sub, srv, streams}.Subscribe(ctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	pub := newPublisher(b, srv, transport, func(c *loom.PublisherConfig) {
		c.Mode = mode
		c.Streams = streams
	})

	// The subscriber counts and acks; done is signalled when it reaches target.
	var received atomic.Int64
	var target atomic.Int64
	var badPayload atomic.Int64
	done := make(chan struct{}, 1)
	var rwg sync.WaitGroup
	rwg.Go(func() {
		for m := range ch {
			if len(m.Payload) != len(payload) {
				badPayload.Add(1)
			}
			m.Ack()
			if received.Add(1) == target.Load() {
				done <- struct{}{}
			}
		}
	})
	waitReceived := func(n int64, timeout time.Duration) {
		b.Helper()
		target.Store(n)
		if received.Load() >= n {
			return
		}
		select {
		case <-done:
		case <-time.After(timeout):
			b.Fatalf("subscriber received %d of %d messages in %s", received.Load(), n, timeout)
		}
	}

	// Warm up: the first stream on a room waits for a possible refusal before its
	// end (client.Producer.Close), once per connection; not part of the steady state.
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		b.Fatal(err)
	}
	waitReceived(1, 10*time.Second)
	for pub.Stats().Sent < 1 {
		time.Sleep(time.Millisecond)
	}

	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
	}
	target.Store(1 + int64(b.N))
	b.SetBytes(int64(len(payload)))
	errs := make(chan error, confirmPublishers)

	b.ResetTimer()
	if mode == loom.ModeConfirm {
		var next atomic.Int64
		var pwg sync.WaitGroup
		for range confirmPublishers {
			pwg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(len(msgs)) {
						return
					}
					if err := pub.Publish(topic, msgs[i]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		pwg.Wait()
	} else {
		for _, m := range msgs {
			if err := pub.Publish(topic, m); err != nil {
				errs <- err
				break
			}
		}
	}
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	waitReceived(1+int64(b.N), benchWait(b.N, len(payload)))
	b.StopTimer()

	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	// Messages per producer stream: the publisher opens one stream per batch.
	if st := pub.Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.Sent)/float64(st.Batches), "msgs/batch")
	}
	if err := pub.Close(); err != nil {
		b.Fatal(err)
	}
	cancel()
	rwg.Wait()
	if n := badPayload.Load(); n > 0 {
		b.Fatalf("%d messages arrived with a payload of the wrong size", n)
	}
	st := srv.Stats()
	if st.Discarded+st.DroppedFull+st.DroppedTooLarge+st.LostOnDisconnect+st.ProtocolErrors > 0 {
		b.Fatalf("router lost messages: %+v", st)
	}
	if got := received.Load(); got != 1+int64(b.N) {
		b.Fatalf("subscriber received %d messages, want %d (duplicates?)", got, 1+b.N)
	}
}

// benchWait bounds how long the subscriber may take after the last Publish returned.
func benchWait(n, size int) time.Duration {
	return time.Minute + time.Duration(n)*time.Duration(size)*time.Second/(10<<20) // 10 MB/s floor
}
