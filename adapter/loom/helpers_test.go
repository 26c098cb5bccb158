package loom_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Watermill's Router leaks these when a Subscribe fails in Run: they wait for
		// a handler that never started (TestRouterStartFailsOnRefusal).
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/message.(*Router).watchAllHandlersStopped.func1"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/message.(*Router).waitForHandlers.func1"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/pubsub/sync.WaitGroupTimeout.func1"),
	)
}

// patience bounds the tests' waits for something that must happen. It is a hang
// detector, not a speed assertion: on a loaded 2-core machine under -race a step
// that takes milliseconds idle can take seconds, and a test must then be slow, not
// fail. Waits for something that must not happen take their own short duration.
const patience = 2 * time.Minute

// waitProgress waits until done() reaches want. It fails only when done() stops
// growing for patience (a stall), not when the whole takes long: how long a run of
// thousands of messages takes depends on the machine's load, not on the code.
func waitProgress(t testing.TB, what string, want int, done func() int, state func() string) {
	t.Helper()
	last, since := done(), time.Now()
	for last < want {
		time.Sleep(10 * time.Millisecond)
		if n := done(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > patience {
			t.Fatalf("%s: stalled at %d of %d for %s; %s", what, last, want, patience, state())
		}
	}
}

var transports = []string{client.TransportQUIC, client.TransportH3}

func startRouter(t testing.TB, cfg loomtest.Config) *loomtest.Server {
	t.Helper()
	srv, err := loomtest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func clientConfig(srv *loomtest.Server, transport string) client.Config {
	return client.Config{Addr: srv.Addr(), Transport: transport, TLSClientConfig: srv.ClientTLS()}
}

// fastReconnect keeps tests quick: the defaults start at 100 ms and grow to 30 s.
var fastReconnect = loom.BackoffConfig{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}

func newPublisher(t testing.TB, srv *loomtest.Server, transport string, mod func(*loom.PublisherConfig)) *loom.Publisher {
	t.Helper()
	cfg := loom.PublisherConfig{Client: clientConfig(srv, transport), Reconnect: fastReconnect}
	if mod != nil {
		mod(&cfg)
	}
	p, err := loom.NewPublisher(cfg, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// subscriberNames maps each *loom.Subscriber made by newSubscriber to its client
// name, unique per subscriber, so that waitingSubscriber counts only its own streams.
var subscriberNames sync.Map

func newSubscriber(t testing.TB, srv *loomtest.Server, transport string, mod func(*loom.SubscriberConfig)) *loom.Subscriber {
	t.Helper()
	cfg := loom.SubscriberConfig{Client: clientConfig(srv, transport), Reconnect: fastReconnect, NackResendDelay: 10 * time.Millisecond}
	cfg.Client.Name = "sub-" + watermill.NewShortUUID()
	if mod != nil {
		mod(&cfg)
	}
	s, err := loom.NewSubscriber(cfg, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	subscriberNames.Store(s, cfg.Client.Name)
	t.Cleanup(func() {
		_ = s.Close()
		subscriberNames.Delete(s)
	})
	return s
}

// waitRegistered waits until the router has n more consumer streams of sub in topic
// than before; before comes from registered.
func waitRegistered(ctx context.Context, srv *loomtest.Server, sub message.Subscriber, topic string, before, n int) error {
	wctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	if name, ok := subscriberNames.Load(sub); ok {
		return srv.WaitClientConsumers(wctx, topic, name.(string), before+n)
	}
	return srv.WaitConsumers(wctx, topic, before+n)
}

// registered counts sub's consumer streams in topic: by its client name when
// newSubscriber made it, else every stream in the room.
func registered(srv *loomtest.Server, sub message.Subscriber, topic string) int {
	if name, ok := subscriberNames.Load(sub); ok {
		return srv.ClientConsumers(topic, name.(string))
	}
	return srv.Consumers(topic)
}

func logger(t testing.TB) watermill.LoggerAdapter {
	if testing.Verbose() {
		return watermill.NewStdLogger(false, false)
	}
	return watermill.NopLogger{}
}

// waitingSubscriber subscribes and then waits until the router has registered its
// consumer streams. Loom discards what nobody consumes, so a test that publishes
// right after Subscribe must wait for this; a real application subscribes first and
// keeps running.
type waitingSubscriber struct {
	message.Subscriber
	srv       *loomtest.Server
	consumers int
}

func (w waitingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	before := registered(w.srv, w.Subscriber, topic)
	ch, err := w.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	return ch, waitRegistered(ctx, w.srv, w.Subscriber, topic, before, w.consumers)
}

// readN reads n messages, acking each, or fails after patience.
func readN(t testing.TB, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(patience)
	for len(got) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d messages", len(got), n)
			}
			got = append(got, m)
			m.Ack()
		case <-deadline:
			t.Fatalf("received %d of %d messages in %s", len(got), n, patience)
		}
	}
	return got
}
