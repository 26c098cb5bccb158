package loom_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// subTokenRouter is a router in token mode that lets "good" consume and produce
// everywhere.
func subTokenRouter(t *testing.T) *loomtest.Server {
	return startRouter(t, loomtest.Config{Auth: loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{
		{Token: "good", Principal: "app", Rooms: []string{"*"}, Roles: []string{"produce", "consume"}},
	}}})
}

// TestSubscribeReturnsRefusal: a refused token is not transient. Subscribe returns
// the refusal (client.ErrRefused; on HTTP/3 also client.ErrUnauthorized) instead of
// a channel that never delivers while the refusal is retried forever; the right
// token subscribes.
func TestSubscribeReturnsRefusal(t *testing.T) {
	// Long, so a loaded machine cannot make the refusal arrive after the window;
	// a refusal ends the wait at once.
	defer loom.SetRefusalWindow(patience)()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := subTokenRouter(t)
			bad := newSubscriber(t, srv, tr, func(c *loom.SubscriberConfig) { c.Client.Token = "wrong" })
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			ch, err := bad.Subscribe(ctx, "room")
			if !errors.Is(err, client.ErrRefused) || ch != nil {
				t.Fatalf("Subscribe with a refused token: %v, channel %v; want client.ErrRefused", err, ch)
			}
			if tr == client.TransportH3 && !errors.Is(err, client.ErrUnauthorized) {
				t.Fatalf("HTTP/3: %v, want client.ErrUnauthorized", err)
			}
			if st := bad.Stats(); st.Refused != 0 || st.Reopened != 0 {
				t.Fatalf("a refusal at Subscribe is its error, not retried: %+v", st)
			}

			good := newSubscriber(t, srv, tr, func(c *loom.SubscriberConfig) {
				c.Client.Token = "good"
				c.Consumers = 2
			})
			restore := loom.SetRefusalWindow(50 * time.Millisecond) // accepted: no need to wait long
			ch, err = waitingSubscriber{good, srv, 2}.Subscribe(ctx, "room")
			restore()
			if err != nil {
				t.Fatal(err)
			}
			p := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
				c.Client.Token = "good"
				c.Mode = loom.ModeFireAndForget // confirm would wait for the ack readN sends
			})
			if err := p.Publish("room", message.NewMessage(watermill.NewUUID(), []byte("hi"))); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, ch, 1)[0]; string(got.Payload) != "hi" {
				t.Fatalf("got %q", got.Payload)
			}
		})
	}
}

// TestRouterStartFailsOnRefusal: Watermill's Router subscribes once, at start; a
// refused token must be the error Run returns, not a router that runs and never
// receives.
func TestRouterStartFailsOnRefusal(t *testing.T) {
	defer loom.SetRefusalWindow(patience)()
	srv := subTokenRouter(t)
	sub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Client.Token = "wrong" })
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	r.AddConsumerHandler("h", "room", sub, func(*message.Message) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	err = r.Run(ctx)
	if !errors.Is(err, client.ErrRefused) {
		t.Fatalf("Router.Run: %v, want client.ErrRefused", err)
	}
	_ = r.Close()
}

// TestLaterRefusalIsReportedAndRetried: a refusal after a good start (the token file
// rotated to a token the server refuses, then the connection redialed) is counted in
// Stats.Refused and retried with back-off, the channel staying open; once the file
// is fixed and the connection redialed, messages flow again.
func TestLaterRefusalIsReportedAndRetried(t *testing.T) {
	srv := subTokenRouter(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	sub, ch, write := tokenFileSubscriber(ctx, t, srv, "good")

	write("rotated-wrongly")
	srv.CutConnections()
	waitProgress(t, "refusals", 2, func() int { return int(sub.Stats().Refused) }, func() string { return "" })
	select {
	case m, ok := <-ch:
		t.Fatalf("channel during refusals: %v, %v", m, ok)
	default:
	}

	write("good")
	srv.CutConnections()
	if err := waitRegistered(ctx, srv, sub, "room", 0, 1); err != nil {
		t.Fatal(err)
	}
	expectFlow(t, srv, ch, "good")
}

// tokenFileSubscriber subscribes to "room" with one consumer stream whose token
// is read from a file holding tok; write puts another token in the file.
func tokenFileSubscriber(ctx context.Context, t *testing.T, srv *loomtest.Server, tok string) (sub *loom.Subscriber, ch <-chan *message.Message, write func(string)) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	write = func(tok string) {
		if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tok)
	sub = newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) {
		c.Client.TokenFile = tokenFile
		c.Consumers = 1
	})
	ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	return sub, ch, write
}

// expectFlow publishes a message to "room" with token tok and reads it from ch.
func expectFlow(t *testing.T, srv *loomtest.Server, ch <-chan *message.Message, tok string) {
	t.Helper()
	p := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Client.Token = client.Secret(tok)
		c.Mode = loom.ModeFireAndForget // confirm would wait for the ack readN sends
	})
	if err := p.Publish("room", message.NewMessage(watermill.NewUUID(), []byte("back"))); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, ch, 1)[0]; string(got.Payload) != "back" {
		t.Fatalf("got %q", got.Payload)
	}
}

// TestFixedTokenFileTakesEffectWithoutReconnect: the server restarts with new
// tokens (an operator rotated them) while the subscriber's token file still holds
// the old one: its streams are refused on the new connection and retried. Once the
// file is fixed, the next retry carries the new token over the same connection:
// nothing else has to drop the connection first (the server keeps it alive).
func TestFixedTokenFileTakesEffectWithoutReconnect(t *testing.T) {
	rules := func(tok string) loomtest.Auth {
		return loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{
			{Token: tok, Principal: "app", Rooms: []string{"*"}, Roles: []string{"produce", "consume"}},
		}}
	}
	srv := startRouter(t, loomtest.Config{Auth: rules("v1")})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	sub, ch, write := tokenFileSubscriber(ctx, t, srv, "v1")

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetAuth(rules("v2")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, "refusals", 2, func() int { return int(sub.Stats().Refused) }, func() string { return "" })

	write("v2")
	if err := waitRegistered(ctx, srv, sub, "room", 0, 1); err != nil {
		t.Fatalf("the subscriber never came back with the fixed token: %v (stats %+v)", err, sub.Stats())
	}
	expectFlow(t, srv, ch, "v2")
}
