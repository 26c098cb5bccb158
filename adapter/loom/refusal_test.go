package loom_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

const goodToken = "good-token"

func tokenRouter(t *testing.T) *loomtest.Server {
	return startRouter(t, loomtest.Config{Auth: loomtest.Auth{Mode: loomtest.ModeToken, Tokens: []loomtest.TokenRule{
		{Token: goodToken, Principal: "p", Rooms: []string{"*"}, Roles: []string{"produce", "consume"}},
	}}})
}

// wantRefused checks that err says refused, and on HTTP/3 unauthorised.
func wantRefused(t *testing.T, transport string, err error) {
	t.Helper()
	if !errors.Is(err, client.ErrRefused) {
		t.Fatalf("got %v, want an error wrapping client.ErrRefused", err)
	}
	if transport == client.TransportH3 && !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("got %v, want an error wrapping client.ErrUnauthorized on HTTP/3", err)
	}
}

// TestConfirmPublishRefusedAtOnce: a confirm Publish with a wrong token used to wait
// the whole publish_timeout and return "not confirmed", the refusal only in the
// logs. It returns the refusal now. "At once" is checked against a publish_timeout
// longer than any slow machine needs, not against a clock: the old code returned
// only at that timeout, without ErrRefused.
func TestConfirmPublishRefusedAtOnce(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := tokenRouter(t)
			var refused atomic.Int64
			pub := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
				c.Client.Token = "wrong-token"
				c.PublishTimeout = patience
				c.OnDrop = func(_ *message.Message, r loom.DropReason) {
					if r == loom.DropRefused {
						refused.Add(1)
					}
				}
			})
			start := time.Now()
			err := pub.Publish("r", message.NewMessage("1", []byte("1")), message.NewMessage("2", []byte("2")))
			wantRefused(t, tr, err)
			if waited := time.Since(start); waited >= patience/2 {
				t.Fatalf("refusal reported after %s", waited)
			}
			if st := pub.Stats(); st.Dropped[loom.DropRefused] != 2 || refused.Load() != 2 {
				t.Fatalf("OnDrop refused %d, stats %+v: want both messages dropped as refused", refused.Load(), st)
			}
			// Later calls fail fast, until the room is accepted again.
			wantRefused(t, tr, pub.Publish("r", message.NewMessage("3", []byte("3"))))
		})
	}
}

// TestFireAndForgetRefusedDropsAndFailsFast: in fire_and_forget mode the buffered
// messages of a refused room are dropped as "refused" and later Publish calls fail
// fast, with the refusal.
func TestFireAndForgetRefusedDropsAndFailsFast(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := tokenRouter(t)
			var refused atomic.Int64
			pub := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
				c.Mode = loom.ModeFireAndForget
				c.Client.Token = "wrong-token"
				c.OnDrop = func(_ *message.Message, r loom.DropReason) {
					if r == loom.DropRefused {
						refused.Add(1)
					}
				}
			})
			for i := range 5 {
				if err := pub.Publish("r", message.NewMessage(strconv.Itoa(i), []byte("x"))); err != nil {
					// The refusal of the first may already be known: that is the point.
					wantRefused(t, tr, err)
					break
				}
			}
			waitProgress(t, "failing fast", 1, func() int {
				if errors.Is(pub.Publish("r", message.NewMessage("late", []byte("x"))), client.ErrRefused) {
					return 1
				}
				return 0
			}, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
			wantRefused(t, tr, pub.Publish("r", message.NewMessage("later", []byte("x"))))
			st := pub.Stats()
			if st.Buffered != 0 || st.Dropped[loom.DropRefused] == 0 || uint64(refused.Load()) != st.Dropped[loom.DropRefused] || st.Sent != 0 {
				t.Fatalf("OnDrop refused %d, stats %+v: want every message dropped as refused", refused.Load(), st)
			}
		})
	}
}

// TestTokenRotationRecovers: a token file with a wrong token is refused; once the
// file holds the right one, the room is accepted again (tried with back-off, over a
// fresh connection that reads the file again). A later rotation gone wrong, noticed
// at a reconnect, is reported the same way and recovers the same way.
func TestTokenRotationRecovers(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := tokenRouter(t)
			tokenFile := filepath.Join(t.TempDir(), "token")
			setToken := func(tok string) {
				t.Helper()
				if err := os.WriteFile(tokenFile+".new", []byte(tok+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tokenFile+".new", tokenFile); err != nil {
					t.Fatal(err)
				}
			}
			setToken("wrong-token")
			sub := newSubscriber(t, srv, tr, func(c *loom.SubscriberConfig) { c.Client.Token = goodToken; c.Consumers = 1 })
			ch, err := waitingSubscriber{sub, srv, 1}.Subscribe(context.Background(), "r")
			if err != nil {
				t.Fatal(err)
			}
			got := collect(ch)
			pub := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
				c.Client.TokenFile = tokenFile
				c.PublishTimeout = patience
			})
			wantRefused(t, tr, pub.Publish("r", message.NewMessage("refused-1", []byte("refused-1"))))

			setToken(goodToken)
			// Publish fails fast until the back-off's next try is accepted.
			n := 0
			waitProgress(t, "accepted again", 1, func() int {
				n++
				if pub.Publish("r", message.NewMessage("ok-"+strconv.Itoa(n), []byte("ok-"+strconv.Itoa(n)))) == nil {
					return 1
				}
				return 0
			}, func() string { return fmt.Sprintf("%+v", pub.Stats()) })

			// Rotation gone wrong, noticed when the connections are made again.
			setToken("another-wrong-token")
			srv.CutConnections()
			var err2 error
			waitProgress(t, "refused after the rotation", 1, func() int {
				n++
				if err2 = pub.Publish("r", message.NewMessage("ok-"+strconv.Itoa(n), []byte("ok-"+strconv.Itoa(n)))); err2 != nil {
					return 1
				}
				return 0
			}, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
			wantRefused(t, tr, err2)

			setToken(goodToken)
			waitProgress(t, "accepted after the fix", 1, func() int {
				n++
				if pub.Publish("r", message.NewMessage("ok-"+strconv.Itoa(n), []byte("ok-"+strconv.Itoa(n)))) == nil {
					return 1
				}
				return 0
			}, func() string { return fmt.Sprintf("%+v", pub.Stats()) })
			got.mu.Lock()
			defer got.mu.Unlock()
			if got.count["refused-1"] != 0 {
				t.Fatal("a refused message arrived")
			}
		})
	}
}
