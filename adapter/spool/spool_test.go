package spool_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/loombridge/loombridge/adapter/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is an embedded server on a directory of the test, and a connection.
type rig struct {
	dir string
	srv *spool.Server
	nc  *nats.Conn
}

func startRig(t testing.TB, dir string) *rig {
	t.Helper()
	srv, err := spool.StartServer(spool.ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	r := &rig{dir: dir, srv: srv, nc: nc}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	r.nc.Close()
	_ = r.srv.Close()
}

func open(t *testing.T, r *rig, cfg spool.Config) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(context.Background(), r.nc, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

func subscribe(t *testing.T, sp *spool.Spool, durable string, concurrency int) (*spool.Subscriber, <-chan *message.Message) {
	t.Helper()
	sub, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: durable, Concurrency: concurrency, NakDelay: 10 * time.Millisecond, MaxNakDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub, ch
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no message within 30 s")
		return nil
	}
}

func TestStoredMessagesKeepUUIDMetadataAndPayload(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "keep", LargePayload: 1024})
	_, ch := subscribe(t, sp, "a", 1)
	large := make([]byte, 3<<20) // above LargePayload and the 1 MiB chunks of no one: Object Store
	_, _ = rand.Read(large)
	in := []*message.Message{
		message.NewMessage("u-small", []byte("hello")),
		message.NewMessage("u-large", large),
		message.NewMessage("u-empty", nil),
	}
	in[0].Metadata.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	in[0].Metadata.Set("odd key: with\nnewline", "value\r\nwith CRLF")
	for _, m := range in {
		if err := sp.Publish("ignored", m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range in {
		got := receive(t, ch)
		if got.UUID != want.UUID || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got %s (%d bytes), want %s (%d bytes)", got.UUID, len(got.Payload), want.UUID, len(want.Payload))
		}
		for k, v := range want.Metadata {
			if got.Metadata.Get(k) != v {
				t.Errorf("%s: metadata %q = %q, want %q", want.UUID, k, got.Metadata.Get(k), v)
			}
		}
		got.Ack()
	}
	if st := sp.Stats(); st.Stored != 3 {
		t.Errorf("stored %d, want 3", st.Stored)
	}
	// Every sink acked: stream and objects are empty again.
	waitFor(t, "the spool to empty", func() bool {
		st, err := sp.SinkState(context.Background(), "a")
		return err == nil && st.Messages == 0 && objectsLeft(t, r, "keep") == 0
	})
}

func objectsLeft(t *testing.T, r *rig, name string) int {
	t.Helper()
	js, _ := r.nc.JetStream()
	os, err := js.ObjectStore(name + "_large")
	if err != nil {
		t.Fatal(err)
	}
	list, err := os.List()
	if errors.Is(err, nats.ErrNoObjectsFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEachSinkGetsEveryMessageAndANackComesAgain(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "fan"})
	subA, a := subscribe(t, sp, "a", 4)
	_, b := subscribe(t, sp, "b", 4)
	for i := range 20 {
		if err := sp.Publish("", message.NewMessage(fmt.Sprint(i), []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	seenA, seenB := map[string]int{}, map[string]int{}
	nacked := false
	for len(seenA) < 20 || len(seenB) < 20 || seenA["7"] < 2 {
		select {
		case m := <-a:
			seenA[m.UUID]++
			if m.UUID == "7" && !nacked {
				nacked = true
				m.Nack()
				continue
			}
			m.Ack()
		case m := <-b:
			seenB[m.UUID]++
			m.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("a has %d, b %d of 20; the nacked one came to a %d times", len(seenA), len(seenB), seenA["7"])
		}
	}
	if seenA["7"] != 2 {
		t.Errorf("the nacked message came %d times to a, want 2", seenA["7"])
	}
	if st := subA.Stats(); st.Redelivered != 1 {
		t.Errorf("a: redelivered %d, want 1", st.Redelivered)
	}
}

func TestStoredMessagesSurviveARestartOfTheServer(t *testing.T) {
	dir := t.TempDir()
	r := startRig(t, dir)
	sp := open(t, r, spool.Config{Name: "durable"})
	sub, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: "s"})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.Close()
	big := bytes.Repeat([]byte("x"), 600<<10)
	for _, m := range []*message.Message{message.NewMessage("one", []byte("1")), message.NewMessage("two", big)} {
		if err := sp.Publish("", m); err != nil {
			t.Fatal(err)
		}
	}
	_ = sp.Close()
	r.stop()

	r2 := startRig(t, dir)
	sp2 := open(t, r2, spool.Config{Name: "durable"})
	_, ch := subscribe(t, sp2, "s", 1)
	for _, want := range []string{"one", "two"} {
		m := receive(t, ch)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		if want == "two" && !bytes.Equal(m.Payload, big) {
			t.Fatal("the large payload changed across the restart")
		}
		m.Ack()
	}
}

func TestFullSpoolPolicies(t *testing.T) {
	for _, policy := range []spool.Policy{spool.Reject, spool.DropOldest, spool.Block} {
		t.Run(string(policy), func(t *testing.T) {
			r := startRig(t, t.TempDir())
			sp := open(t, r, spool.Config{Name: "full", MaxMessages: 3, WhenFull: policy})
			sub, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: "slow"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Close() })
			for i := range 3 {
				if err := sp.Publish("", message.NewMessage(fmt.Sprint(i), nil)); err != nil {
					t.Fatal(err)
				}
			}
			fourth := message.NewMessage("3", nil)
			switch policy {
			case spool.Reject:
				if err := sp.Publish("", fourth); !errors.Is(err, spool.ErrFull) {
					t.Fatalf("got %v, want ErrFull", err)
				}
				if st := sp.Stats(); st.Rejected != 1 || st.Stored != 3 {
					t.Errorf("stats %+v, want 1 rejected, 3 stored", st)
				}
			case spool.DropOldest:
				if err := sp.Publish("", fourth); err != nil {
					t.Fatal(err)
				}
				if st := sp.Stats(); st.Dropped != 1 || st.Stored != 4 {
					t.Errorf("stats %+v, want 1 dropped, 4 stored", st)
				}
				ch, err := sub.Subscribe(context.Background(), "")
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range []string{"1", "2", "3"} { // 0 was dropped
					if m := receive(t, ch); m.UUID != want {
						t.Fatalf("got %s, want %s", m.UUID, want)
					} else {
						m.Ack()
					}
				}
			case spool.Block:
				done := make(chan error, 1)
				go func() { done <- sp.Publish("", fourth) }()
				waitFor(t, "the publish to block", func() bool { return sp.Stats().Blocked == 1 })
				select {
				case err := <-done:
					t.Fatalf("publish returned %v while full", err)
				default:
				}
				ch, err := sub.Subscribe(context.Background(), "")
				if err != nil {
					t.Fatal(err)
				}
				receive(t, ch).Ack() // room for one
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("publish still blocked after a sink made room")
				}
			}
		})
	}
}

func TestExpiredMessagesAreCountedNotDelivered(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "aged", MaxAge: 50 * time.Millisecond})
	sub, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: "late"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if err := sp.Publish("", message.NewMessage("old", nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // older than max_age: the point of the test
	ch, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the expiry", func() bool { return sub.Stats().Expired == 1 })
	select {
	case m := <-ch:
		t.Fatalf("expired message %s delivered", m.UUID)
	default:
	}
}

func TestKeepConsumersDeletesRemovedSinks(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "prune"})
	for _, d := range []string{"kept", "gone"} {
		s, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: d})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
	}
	if err := sp.KeepConsumers(context.Background(), []string{"kept"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.SinkState(context.Background(), "gone"); err == nil {
		t.Error("the removed sink's consumer is still there")
	}
	if _, err := sp.SinkState(context.Background(), "kept"); err != nil {
		t.Errorf("kept sink: %v", err)
	}
}

// A payload above the 16 MiB steps in which large payloads are stored and
// read back (collecting garbage between steps), and not a multiple of them,
// comes back byte for byte.
func TestPayloadOfSeveralStepsIsExact(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "steps"})
	_, ch := subscribe(t, sp, "a", 1)
	big := make([]byte, 40<<20+12345)
	_, _ = rand.Read(big)
	if err := sp.Publish("ignored", message.NewMessage("u-big", big)); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch)
	if got.UUID != "u-big" || !bytes.Equal(got.Payload, big) {
		t.Fatalf("got %s (%d bytes), want u-big (%d bytes), the same bytes", got.UUID, len(got.Payload), len(big))
	}
	got.Ack()
}

// What a crash leaves in the Object Store (the chunks of an object never
// finished, an object whose record was never written) is swept when the
// spool is opened again; the object of a stored message stays.
func TestSweepDeletesWhatACrashLeft(t *testing.T) {
	r := startRig(t, t.TempDir())
	ctx := context.Background()
	sp := open(t, r, spool.Config{Name: "sweep", LargePayload: 16})
	payload := bytes.Repeat([]byte("x"), 100)
	if err := sp.Publish("", message.NewMessage("kept", payload)); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "$O.sweep_large.C.unfinished", []byte("a chunk")); err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, "sweep_large")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "no-record", []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	_ = sp.Close()

	sp2 := open(t, r, spool.Config{Name: "sweep", LargePayload: 16, OrphanAge: time.Nanosecond})
	ostream, err := js.Stream(ctx, "OBJ_sweep_large")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sweep", func() bool {
		info, err := ostream.Info(ctx, jetstream.WithSubjectFilter("$O.sweep_large.C.unfinished"))
		_, gone := obs.GetInfo(ctx, "no-record")
		return err == nil && len(info.State.Subjects) == 0 && errors.Is(gone, jetstream.ErrObjectNotFound)
	})
	_, ch := subscribe(t, sp2, "s", 1)
	if m := receive(t, ch); m.UUID != "kept" || !bytes.Equal(m.Payload, payload) {
		t.Fatalf("got %s (%d bytes): the stored message's object must survive the sweep", m.UUID, len(m.Payload))
	}
}

// A sink's queue reports what it has not acked, large payloads included:
// count, bytes and the age of the oldest.
func TestSinkStatesCountWhatASinkHasNotAcked(t *testing.T) {
	r := startRig(t, t.TempDir())
	sp := open(t, r, spool.Config{Name: "depth", LargePayload: 16})
	for _, d := range []string{"idle", "other"} {
		s, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: d})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
	}
	if err := sp.Publish("", message.NewMessage("big", bytes.Repeat([]byte("x"), 4096))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an age", func() bool {
		st, err := sp.SinkStates(context.Background(), "idle", "other")
		return err == nil && st["idle"].OldestAge > 0 && st["other"].OldestAge > 0
	})
	st, _ := sp.SinkStates(context.Background(), "idle", "other", "missing")
	if q := st["idle"]; q.Messages != 1 || q.Bytes < 4096 {
		t.Errorf("idle: %+v, want 1 message of at least 4096 bytes", q)
	}
	if _, ok := st["missing"]; ok {
		t.Error("a sink without a consumer has a state")
	}
}
