package loom_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// BenchmarkAgainstRawClient measures the adapter's throughput against the raw
// client's through the same in-process router, in one process, so that both see
// the same machine: a loom.Publisher (fire_and_forget, 1 stream) and a
// loom.Subscriber (1 consumer, acking each message) on one room, and a raw
// client.Producer (one stream) and client.Consumer (acking each message) on
// another. The raw consumer either streams each body through a 64 KiB buffer
// ("streaming", the raw client at its fastest) or reads it into a buffer of its
// own ("keeping", what a raw-client program must do to hand a message on, as the
// adapter does for every message). They take turns: chunk messages through one,
// then through the other, the order alternating, and the timer of each runs only
// during its own turns. One op is one message through each. It reports msgs/s of
// each, their ratio (adapter over raw) over the whole run as ratio, and the median
// of the per-turn ratios as median-ratio (a burst of the machine's other work lands
// in one turn and does not move the median), and the process's CPU time per message
// during each one's turns (raw-cpu-us/msg, adapter-cpu-us/msg): both use the two
// cores fully, so throughput follows CPU. It also reports the process's minor page
// faults per message during each one's turns (raw-faults/msg, adapter-faults/msg): on
// a virtual machine a fault can cost more than copying the page.
func BenchmarkAgainstRawClient(b *testing.B) {
	for _, sz := range []struct {
		name        string
		size, chunk int
	}{{"1MiB", 1 << 20, 25}, {"64MiB", 64 << 20, 1}} {
		for _, raw := range []struct {
			name string
			keep bool
		}{{"streaming", false}, {"keeping", true}} {
			b.Run(sz.name+"/"+raw.name, func(b *testing.B) { runAgainstRaw(b, make([]byte, sz.size), sz.chunk, raw.keep) })
		}
	}
}

// throughputRig moves n messages and returns once all were received.
type throughputRig func(n int)

func runAgainstRaw(b *testing.B, payload []byte, chunk int, keep bool) {
	srv := startRouter(b, loomtest.Config{})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// Each rig's goroutines, and those they start, carry the pprof label rig=raw or
	// rig=adapter, so a CPU profile splits the client side by rig (-tagfocus).
	labelled := func(rig string, f func()) {
		pprof.Do(context.Background(), pprof.Labels("rig", rig), func(context.Context) { f() })
	}
	var rigs [2]throughputRig
	labelled("raw", func() { rigs[0] = rawRig(b, ctx, cancel, srv, payload, keep) })
	labelled("adapter", func() { rigs[1] = adapterRig(b, ctx, srv, payload) })
	names := [2]string{"raw", "adapter"}
	// A turn each first, untimed: first messages cost more (stacks, windows).
	for _, r := range rigs {
		r(chunk)
	}
	var wall, cpu [2]time.Duration
	var faults [2]int64
	var ratios []float64 // adapter's throughput over raw's, per pair of turns
	b.SetBytes(2 * int64(len(payload)))
	b.ResetTimer()
	for i, done := 0, 0; done < b.N; i, done = i+1, done+chunk {
		n := min(chunk, b.N-done)
		var pair [2]time.Duration
		for k := range 2 {
			v := k ^ i%2 // raw first, then adapter first, ...
			t0, u0 := time.Now(), usage(b)
			labelled(names[v], func() { rigs[v](n) })
			pair[v] = time.Since(t0)
			wall[v] += pair[v]
			u1 := usage(b)
			cpu[v] += u1.cpu - u0.cpu
			faults[v] += u1.faults - u0.faults
		}
		ratios = append(ratios, float64(pair[0])/float64(pair[1]))
		if err := context.Cause(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(ratios)
	b.ReportMetric(float64(b.N)/wall[0].Seconds(), "raw-msgs/s")
	b.ReportMetric(float64(b.N)/wall[1].Seconds(), "adapter-msgs/s")
	b.ReportMetric(float64(wall[0])/float64(wall[1]), "ratio")
	b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
	b.ReportMetric(float64(cpu[0].Microseconds())/float64(b.N), "raw-cpu-us/msg")
	b.ReportMetric(float64(cpu[1].Microseconds())/float64(b.N), "adapter-cpu-us/msg")
	b.ReportMetric(float64(faults[0])/float64(b.N), "raw-faults/msg")
	b.ReportMetric(float64(faults[1])/float64(b.N), "adapter-faults/msg")
}

// rusage is what the benchmark reads of the process's resource usage.
type rusage struct {
	cpu    time.Duration // user and system CPU time
	faults int64         // minor page faults: pages the kernel had to map in
}

func usage(b *testing.B) rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return rusage{time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt}
}

// rawRig is one raw producer stream and one raw consumer stream on room "raw". The
// consumer reads each body through a 64 KiB buffer, or with keep into a new buffer
// of the body's size.
func rawRig(b *testing.B, ctx context.Context, fail context.CancelCauseFunc, srv *loomtest.Server, payload []byte, keep bool) throughputRig {
	const room = "raw"
	dial := func() *client.Client {
		c, err := client.Dial(ctx, clientConfig(srv, client.TransportQUIC), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		return c
	}
	pc, cc := dial(), dial()
	k, err := cc.Consume(ctx, room)
	if err != nil {
		b.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, patience)
	defer wcancel()
	if err := srv.WaitConsumers(wctx, room, 1); err != nil {
		b.Fatal(err)
	}
	p, err := pc.Produce(ctx, room)
	if err != nil {
		b.Fatal(err)
	}
	received := make(chan struct{}, 64)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 64<<10)
		for {
			m, err := k.Next(ctx)
			if err != nil {
				select {
				case <-stop:
				default:
					fail(fmt.Errorf("raw consumer: %w", err))
				}
				return
			}
			var got int64
			if keep {
				var n int
				n, err = io.ReadFull(m.Body, make([]byte, m.Size))
				got = int64(n)
			} else {
				got, err = drainBody(m.Body, buf)
			}
			if err != nil || got != int64(len(payload)) {
				fail(fmt.Errorf("raw consumer: read %d of %d bytes: %v", got, len(payload), err))
				return
			}
			if err := k.Ack(ctx, m.ID); err != nil {
				fail(fmt.Errorf("raw consumer: ack: %w", err))
				return
			}
			select {
			case received <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	b.Cleanup(func() {
		close(stop)
		p.Abort()
		_ = k.Close()
		<-readerDone
	})
	var rd bytes.Reader
	return func(n int) {
		sendDone := make(chan error, 1)
		go func() {
			for range n {
				rd.Reset(payload)
				if err := p.Send(ctx, "k", uint64(len(payload)), &rd); err != nil {
					sendDone <- err
					return
				}
			}
			sendDone <- nil
		}()
		for range n {
			select {
			case <-received:
			case <-ctx.Done():
				b.Fatal(context.Cause(ctx))
			}
		}
		if err := <-sendDone; err != nil {
			b.Fatalf("raw producer: %v", err)
		}
	}
}

// adapterRig is a loom.Publisher and a loom.Subscriber on room "adapter".
func adapterRig(b *testing.B, ctx context.Context, srv *loomtest.Server, payload []byte) throughputRig {
	const topic = "adapter"
	sub := newSubscriber(b, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
	sctx, scancel := context.WithCancel(ctx)
	ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(sctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	pub := newPublisher(b, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 1
	})
	var bad atomic.Int64
	received := make(chan struct{}, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for m := range ch {
			if len(m.Payload) != len(payload) {
				bad.Add(1)
			}
			m.Ack()
			select {
			case received <- struct{}{}:
			case <-sctx.Done():
			}
		}
	}()
	b.Cleanup(func() {
		_ = pub.Close()
		scancel()
		<-readerDone
		if n := bad.Load(); n > 0 {
			b.Errorf("%d messages arrived with a payload of the wrong size", n)
		}
	})
	return func(n int) {
		for range n {
			if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
				b.Fatal(err)
			}
		}
		for range n {
			select {
			case <-received:
			case <-ctx.Done():
				b.Fatal(context.Cause(ctx))
			}
		}
	}
}

// drainBody reads r to its end through buf, as a consumer that copies the body
// somewhere would (io.Discard itself, as a ReaderFrom, would use a buffer of its own).
func drainBody(r io.Reader, buf []byte) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, buf)
}
