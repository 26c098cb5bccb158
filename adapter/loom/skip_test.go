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
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
			got := readN(t, ch, 1, 10*time.Second)[0]
			// The server ends the stream once "good" was acknowledged.
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if string(got.Payload) != "ok" {
				t.Fatalf("delivered %q, want only the good message", got.Payload)
			}
			mu.Lock()
			defer mu.Unlock()
			want := map[string]string{"cut": "truncated", "big-declared": "too_large", "big-undeclared": "too_large"}
			if len(skipped) != len(want) {
				t.Fatalf("skipped %+v", skipped)
			}
			for _, s := range skipped {
				if want[s.Key] != s.Reason || s.Room != "skip" || s.ID == 0 || s.Err == nil {
					t.Fatalf("skip %+v", s)
				}
				if s.Reason == "truncated" && !errors.Is(s.Err, wire.ErrTruncated) {
					t.Fatalf("truncated skip error %v", s.Err)
				}
			}
			if st := lsub.Stats(); st.Truncated != 1 || st.TooLarge != 2 || st.Acked != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
