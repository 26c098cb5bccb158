package loom_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// adminPublisher is a fire-and-forget publisher; with gate, its connection names
// the router's admin listener (admin_url).
func adminPublisher(t *testing.T, srv *loomtest.Server, transport string, gate bool) *loom.Publisher {
	return newPublisher(t, srv, transport, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Format = loom.FormatEnvelope // the UUID travels: duplicates are told apart
		c.PublishTimeout = patience
		if gate {
			c.Client.AdminURL = srv.AdminURL()
		}
	})
}

func publishN(t *testing.T, pub *loom.Publisher, room string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := pub.Publish(room, message.NewMessage(room+"-"+strconv.Itoa(i), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
}

// waitStats waits until cond holds for the publisher's stats.
func waitStats(t *testing.T, pub *loom.Publisher, what string, cond func(loom.PublisherStats) bool) loom.PublisherStats {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		st := pub.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; publisher %+v", what, patience, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAdminURLHoldsRoomUntilConsumer: with admin_url, messages for a room without a
// consumer stream stay buffered (the router would discard them) and the room is
// checked again until a consumer comes; a room that has one is not held meanwhile.
// Without admin_url the same messages are sent at once and discarded.
func TestAdminURLHoldsRoomUntilConsumer(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startRouter(t, loomtest.Config{AdminAddr: "127.0.0.1:0"})
			pub := adminPublisher(t, srv, tr, true)
			open, err := waitingSubscriber{newSubscriber(t, srv, tr, nil), srv, 4}.Subscribe(context.Background(), "open")
			if err != nil {
				t.Fatal(err)
			}
			publishN(t, pub, "held", 0, 20)
			publishN(t, pub, "open", 0, 20)
			readN(t, open, 20) // the held room holds no other
			st := waitStats(t, pub, "room waiting, checked again", func(st loom.PublisherStats) bool {
				return st.RoomsWaiting == 1 && st.ConsumerChecks >= 3
			})
			if rs := srv.RoomStats("held"); rs.Received != 0 {
				t.Fatalf("%d messages sent into a room without a consumer; publisher %+v", rs.Received, st)
			}
			if st.Buffered != 20 || st.ConsumerCheckFailures != 0 {
				t.Fatalf("publisher %+v: want the 20 held messages buffered and no failed check", st)
			}
			held, err := waitingSubscriber{newSubscriber(t, srv, tr, nil), srv, 4}.Subscribe(context.Background(), "held")
			if err != nil {
				t.Fatal(err)
			}
			readN(t, held, 20)
			st = waitStats(t, pub, "no room waiting", func(st loom.PublisherStats) bool { return st.RoomsWaiting == 0 })
			if rs := srv.RoomStats("held"); rs.Discarded != 0 || st.Held <= 0 {
				t.Fatalf("room %+v, publisher %+v: want nothing discarded and a hold counted", rs, st)
			}
		})
	}
	t.Run("without admin_url", func(t *testing.T) {
		srv := startRouter(t, loomtest.Config{AdminAddr: "127.0.0.1:0"})
		pub := adminPublisher(t, srv, client.TransportQUIC, false)
		publishN(t, pub, "held", 0, 20)
		waitStats(t, pub, "all sent", func(st loom.PublisherStats) bool { return st.Sent == 20 })
		if rs := srv.RoomStats("held"); rs.Discarded != 20 {
			t.Fatalf("room %+v: want the 20 messages discarded", rs)
		}
		if st := pub.Stats(); st.RoomsWaiting != 0 || st.ConsumerChecks != 0 {
			t.Fatalf("publisher %+v: checked without admin_url", st)
		}
	})
}

// TestAdminURLDefaultRoom: the topic "" is the room "default", and its consumers
// are counted under either name.
func TestAdminURLDefaultRoom(t *testing.T) {
	srv := startRouter(t, loomtest.Config{AdminAddr: "127.0.0.1:0"})
	pub := adminPublisher(t, srv, client.TransportQUIC, true)
	ch, err := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, nil), srv, 4}.Subscribe(context.Background(), "default")
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, "", 0, 5) // the topic "" is the room "default"
	readN(t, ch, 5)
	if rs := srv.RoomStats("default"); rs.Discarded != 0 {
		t.Fatalf("room %+v", rs)
	}
}

// TestRestartSoakNothingDiscarded: through five restarts (SIGTERM and SIGKILL
// alternately) the subscriber is closed with the old server and comes back only
// after the publisher has reconnected and found the room empty, with messages
// buffered for it. With admin_url, none is discarded for want of a consumer and every
// one arrives; without it, the first restart already loses some (the control, so
// that the test shows what it claims).
func TestRestartSoakNothingDiscarded(t *testing.T) {
	const room, burst = "soak", 300
	for _, tr := range transports {
		for _, gate := range []bool{true, false} {
			name := tr + "/admin_url"
			rounds := 5
			if !gate {
				name, rounds = tr+"/without", 1
			}
			t.Run(name, func(t *testing.T) {
				srv := startRouter(t, loomtest.Config{AdminAddr: "127.0.0.1:0"})
				pub := adminPublisher(t, srv, tr, gate)
				var subs []*received
				var closeSub func()
				start := func() {
					sub := newSubscriber(t, srv, tr, nil)
					ch, err := waitingSubscriber{sub, srv, 4}.Subscribe(context.Background(), room)
					if err != nil {
						t.Fatal(err)
					}
					subs = append(subs, collect(ch))
					closeSub = func() { _ = sub.Close() }
				}
				start()
				distinct := func() (n, dups int) {
					all := map[string]int{}
					for _, r := range subs {
						r.mu.Lock()
						for k, c := range r.count {
							all[k] += c
						}
						r.mu.Unlock()
					}
					for _, c := range all {
						dups += c - 1
					}
					return len(all), dups
				}
				sent := 0
				for i := range rounds {
					publishN(t, pub, room, sent, burst)
					sent += burst
					// Some of it flows before the stop, some is in flight.
					waitProgress(t, "flowing before the restart", sent-burst+1, func() int { n, _ := distinct(); return n }, func() string { return fmt.Sprintf("publisher %+v", pub.Stats()) })
					var err error
					if i%2 == 0 {
						err = srv.Stop()
					} else {
						err = srv.Kill()
					}
					if err != nil {
						t.Fatal(err)
					}
					closeSub()
					publishN(t, pub, room, sent, burst) // buffered while the server is down
					sent += burst
					okBefore := func() uint64 { st := pub.Stats(); return st.ConsumerChecks - st.ConsumerCheckFailures }()
					if d := srv.RoomStats(room).Discarded; d != 0 {
						t.Fatalf("round %d: %d discarded before the restart", i, d)
					}
					if err := srv.Restart(); err != nil {
						t.Fatal(err)
					}
					if gate {
						// The publisher is back and finds the room empty: it holds.
						waitStats(t, pub, "room held after the restart", func(st loom.PublisherStats) bool {
							return st.RoomsWaiting >= 1 && st.ConsumerChecks-st.ConsumerCheckFailures > okBefore
						})
					} else {
						deadline := time.Now().Add(patience)
						for srv.RoomStats(room).Discarded == 0 {
							if time.Now().After(deadline) {
								t.Fatalf("without admin_url nothing was discarded; publisher %+v", pub.Stats())
							}
							time.Sleep(5 * time.Millisecond)
						}
						t.Logf("without admin_url: %d discarded before the consumer was back", srv.RoomStats(room).Discarded)
						return
					}
					start()
				}
				waitProgress(t, "arrived", sent, func() int { n, _ := distinct(); return n }, func() string {
					return fmt.Sprintf("publisher %+v, room %+v", pub.Stats(), srv.RoomStats(room))
				})
				n, dups := distinct()
				st, rs := pub.Stats(), srv.RoomStats(room)
				t.Logf("%d distinct of %d, %d duplicates; publisher resent %d, held %s; room %+v", n, sent, dups, st.Resent, st.Held.Round(time.Millisecond), rs)
				if rs.Discarded != 0 {
					t.Fatalf("%d messages discarded for want of a consumer; publisher %+v", rs.Discarded, st)
				}
			})
		}
	}
}
