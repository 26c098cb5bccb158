package loom_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
	"github.com/loombridge/loombridge/adapter/loom/wire"
)

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("source died") }

// TestSkipsTruncatedAndTooLarge: a body cut short or above max_message_bytes is never
// delivered; it is acknowledged (so the stream moves on), counted and reported with
// room, key and id, and the next message comes through.
func TestSkipsTruncatedAndTooLarge(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startRouter(t, loomtest.Config{})
			var mu sync.Mutex
			var skipped []loom.Skipped
			lsub := newSubscriber(t, srv, tr, func(c *loom.SubscriberConfig) {
				c.Consumers = 1
				c.MaxMessageBytes = 1 << 20
				c.OnSkip = func(s loom.Skipped) {
					mu.Lock()
					skipped = append(skipped, s)
					mu.Unlock()
				}
			})
			ch, err := waitingSubscriber{lsub, srv, 1}.Subscribe(context.Background(), "skip")
			if err != nil {
				t.Fatal(err)
			}
			c, err := client.Dial(context.Background(), clientConfig(srv, tr), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()

			// Truncated: the producer dies after 100 KiB of 500 KiB declared (more
			// than the client buffers, so the first part reaches the server).
			p, err := c.Produce(ctx, "skip")
			if err != nil {
				t.Fatal(err)
			}
			_ = p.Send(ctx, "cut", 500<<10, io.MultiReader(bytes.NewReader(make([]byte, 100<<10)), failingReader{}))

			p, err = c.Produce(ctx, "skip")
			if err != nil {
				t.Fatal(err)
			}
			// Too large, declared and undeclared, then a good one.
			if err := p.Send(ctx, "big-declared", 2<<20, bytes.NewReader(make([]byte, 2<<20))); err != nil {
				t.Fatal(err)
			}
			if err := p.Send(ctx, "big-undeclared", 0, bytes.NewReader(make([]byte, 2<<20))); err != nil {
				t.Fatal(err)
			}
			if err := p.Send(ctx, "good", 2, strings.NewReader("ok")); err != nil {
				t.Fatal(err)
			}
			got := readN(t, ch, 1)[0]
			// The server ends the stream once "good" was acknowledged.
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if string(got.Payload) != "ok" {
				t.Fatalf("delivered %q, want only the good message", got.Payload)
			}
			mu.Lock()
			defer mu.Unlock()
			want := map[string]loom.SkipReason{"cut": loom.SkipTruncated, "big-declared": loom.SkipTooLarge, "big-undeclared": loom.SkipTooLarge}
			if len(skipped) != len(want) {
				t.Fatalf("skipped %+v", skipped)
			}
			for _, s := range skipped {
				if want[s.Key] != s.Reason || s.Room != "skip" || s.ID == 0 || s.Err == nil {
					t.Fatalf("skip %+v", s)
				}
				if s.Reason == loom.SkipTruncated && !errors.Is(s.Err, wire.ErrTruncated) {
					t.Fatalf("truncated skip error %v", s.Err)
				}
			}
			if st := lsub.Stats(); st.Truncated != 1 || st.TooLarge != 2 || st.Acked != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestDeclaredSizeIsNotAllocated: a header declaring 512 GiB, followed by 100 KiB and
// the producer's death, through a router and client that allow 1 TiB, is skipped as
// too large by a subscriber whose max_message_bytes is 1 GiB. The subscriber sizes a
// body's buffer by its declared size only within the limit the user set; allocating
// what a peer merely declares beyond it would kill the process here.
func TestDeclaredSizeIsNotAllocated(t *testing.T) {
	lim := wire.DefaultLimits()
	lim.MaxMessage = 1 << 40
	srv := startRouter(t, loomtest.Config{Limits: lim})
	skipped := make(chan loom.Skipped, 1)
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) {
		c.Client.Limits = lim
		c.Consumers = 1
		c.MaxMessageBytes = 1 << 30
		c.OnSkip = func(s loom.Skipped) { skipped <- s }
	})
	if _, err := (waitingSubscriber{lsub, srv, 1}).Subscribe(context.Background(), "huge"); err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(srv, client.TransportQUIC)
	cc.Limits = lim
	c, err := client.Dial(context.Background(), cc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	p, err := c.Produce(ctx, "huge")
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Send(ctx, "k", 1<<39, io.MultiReader(bytes.NewReader(make([]byte, 100<<10)), failingReader{}))
	select {
	case s := <-skipped:
		if s.Reason != loom.SkipTooLarge || s.Key != "k" {
			t.Fatalf("skip %+v, want k too large", s)
		}
	case <-ctx.Done():
		t.Fatal("the message was not reported")
	}
}

// TestSubscriberCloseStopsStalledBody: a producer that sends part of a body and then
// stalls, with its connection alive, must not hold Close: the body read takes no
// context, so the subscriber closes the consumer stream when its context ends.
func TestSubscriberCloseStopsStalledBody(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startRouter(t, loomtest.Config{})
			lsub := newSubscriber(t, srv, tr, func(c *loom.SubscriberConfig) { c.Consumers = 1 })
			ch, err := (waitingSubscriber{lsub, srv, 1}).Subscribe(context.Background(), "stall")
			if err != nil {
				t.Fatal(err)
			}
			c, err := client.Dial(context.Background(), clientConfig(srv, tr), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := c.Produce(context.Background(), "stall")
			if err != nil {
				t.Fatal(err)
			}
			defer p.Abort()
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _ = p.Send(context.Background(), "k", 1<<20, pr) }()
			if _, err := pw.Write(make([]byte, 200<<10)); err != nil { // then the source stalls
				t.Fatal(err)
			}
			// Received counts a header taken from the stream: the body read is next.
			deadline := time.Now().Add(patience)
			for lsub.Stats().Received == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the message header never arrived")
				}
				time.Sleep(5 * time.Millisecond)
			}
			closed := make(chan error, 1)
			go func() { closed <- lsub.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(patience):
				_ = pw.CloseWithError(errors.New("test gave up")) // let the old code finish
				t.Fatal("Close did not return while a body was stalled mid-message")
			}
			if _, open := <-ch; open {
				t.Fatal("a message was delivered, or the channel is still open")
			}
		})
	}
}

// TestSkipsUndecodable: a body that starts like an envelope but is not one is
// skipped as undecodable (a SkipReason of its own, counted apart from unreadable
// bodies), and the next message comes through.
func TestSkipsUndecodable(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	skipped := make(chan loom.Skipped, 1)
	lsub := newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) {
		c.Consumers = 1
		c.OnSkip = func(s loom.Skipped) { skipped <- s }
	})
	ch, err := (waitingSubscriber{lsub, srv, 1}).Subscribe(context.Background(), "bad")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), clientConfig(srv, client.TransportQUIC), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Produce(ctx, "bad")
	if err != nil {
		t.Fatal(err)
	}
	bad := []byte{0x89, 'L', 'B', 'E', 1, 0xff} // magic, version, then a broken varint
	if err := p.Send(ctx, "bad", uint64(len(bad)), bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "good", 2, strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, ch, 1)[0]; string(got.Payload) != "ok" {
		t.Fatalf("delivered %q, want only the good message", got.Payload)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s := <-skipped
	if s.Reason != loom.SkipUndecodable || s.Key != "bad" || !errors.Is(s.Err, loom.ErrEnvelope) {
		t.Fatalf("skip %+v, want bad undecodable", s)
	}
	if st := lsub.Stats(); st.Undecodable != 1 || st.Unreadable != 0 || st.Acked != 1 {
		t.Fatalf("stats %+v", st)
	}
}
