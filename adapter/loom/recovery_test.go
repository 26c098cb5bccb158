package loom_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// recoveryRunsEnv, set to a number, makes TestRecoveryAfterRestart repeat each case
// that many times and log the spread (for BENCHMARKS.md).
const recoveryRunsEnv = "LOOMBRIDGE_RECOVERY_RUNS"

// recoveryBound is a hang detector, not a speed goal: the goal (3 s) is measured and
// logged, a loaded machine may miss it without the code being wrong.
const recoveryBound = 60 * time.Second

// TestRecoveryAfterRestart: the router is killed (SIGKILL) or stopped (SIGTERM) while
// a publisher streams messages to a subscriber, and started again on the same port
// after down. Neither kind of stop tells a client anything, so the clients must find
// out themselves. It logs how long after the restart the subscriber's streams were
// back and messages flowed again, and fails only if that takes over recoveryBound.
// The publisher and subscriber use the default reconnect back-off and client
// timeouts.
func TestRecoveryAfterRestart(t *testing.T) {
	runs := 1
	if n, err := strconv.Atoi(os.Getenv(recoveryRunsEnv)); err == nil && n > 0 {
		runs = n
	}
	const down = 500 * time.Millisecond
	for _, tr := range transports {
		for _, kill := range []bool{true, false} {
			name := tr + "/stop"
			if kill {
				name = tr + "/kill"
			}
			t.Run(name, func(t *testing.T) {
				var streams, flow []time.Duration
				for range runs {
					s, f := measureRecovery(t, tr, kill, down)
					streams, flow = append(streams, s), append(flow, f)
				}
				t.Logf("%s, down %s, %d runs: streams back after %s; messages flow after %s", name, down, runs, spread(streams), spread(flow))
			})
		}
	}
}

func spread(d []time.Duration) string {
	slices.Sort(d)
	r := func(x time.Duration) string { return x.Round(10 * time.Millisecond).String() }
	if len(d) == 1 {
		return r(d[0])
	}
	return fmt.Sprintf("min %s, median %s, max %s", r(d[0]), r(d[len(d)/2]), r(d[len(d)-1]))
}

func measureRecovery(t *testing.T, transport string, kill bool, down time.Duration) (streamsBack, flowing time.Duration) {
	const room, consumers = "recover", 4
	srv := startRouter(t, loomtest.Config{})
	sub := newSubscriber(t, srv, transport, func(c *loom.SubscriberConfig) { c.Reconnect = loom.BackoffConfig{} })
	ch, err := waitingSubscriber{sub, srv, consumers}.Subscribe(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	var lastArrival atomic.Int64 // unix nanos
	go func() {
		for m := range ch {
			lastArrival.Store(time.Now().UnixNano())
			m.Ack()
		}
	}()
	pub := newPublisher(t, srv, transport, func(c *loom.PublisherConfig) {
		c.Reconnect = loom.BackoffConfig{}
		c.Mode = loom.ModeFireAndForget
		c.PublishTimeout = recoveryBound
	})
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = pub.Publish(room, message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i))))
		}
	}()
	defer func() { close(stop); <-published }()
	deadline := time.Now().Add(patience)
	for lastArrival.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing arrived before the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if kill {
		err = srv.Kill()
	} else {
		err = srv.Stop()
	}
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(down)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), recoveryBound)
	defer cancel()
	if err := waitRegistered(ctx, srv, sub, room, 0, consumers); err != nil {
		t.Fatalf("subscriber streams not back within %s: %v", recoveryBound, err)
	}
	streamsBack = time.Since(back)
	for lastArrival.Load() < back.UnixNano() {
		if time.Since(back) > recoveryBound {
			t.Fatalf("no message arrived within %s of the restart; publisher %+v, subscriber %+v", recoveryBound, pub.Stats(), sub.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	flowing = time.Duration(lastArrival.Load() - back.UnixNano())
	t.Logf("streams back after %s, first message after %s", streamsBack.Round(time.Millisecond), flowing.Round(time.Millisecond))
	return streamsBack, flowing
}
