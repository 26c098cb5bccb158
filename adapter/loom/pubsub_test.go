package loom_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

func TestPublishSubscribeBothModes(t *testing.T) {
	for _, tr := range transports {
		for _, mode := range []string{loom.ModeConfirm, loom.ModeFireAndForget} {
			t.Run(tr+"/"+mode, func(t *testing.T) {
				srv := startRouter(t, loomtest.Config{})
				sub := waitingSubscriber{newSubscriber(t, srv, tr, nil), srv, 4}
				ch, err := sub.Subscribe(context.Background(), "orders")
				if err != nil {
					t.Fatal(err)
				}
				pub := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) { c.Mode = mode })
				var sent []*message.Message
				for i := range 200 {
					m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
					sent = append(sent, m)
				}
				// Several messages per Publish and several Publish calls at once.
				var wg sync.WaitGroup
				for i := 0; i < len(sent); i += 20 {
					wg.Go(func() {
						if err := pub.Publish("orders", sent[i:i+20]...); err != nil {
							t.Error(err)
						}
					})
				}
				got := readN(t, ch, len(sent))
				wg.Wait()
				payloads := map[string]bool{}
				for _, m := range got {
					payloads[string(m.Payload)] = true
					if m.Metadata.Get(loom.MetadataRoom) != "orders" || m.Metadata.Get(loom.MetadataID) == "" {
						t.Fatalf("metadata %v", m.Metadata)
					}
				}
				for _, m := range sent {
					if !payloads[string(m.Payload)] {
						t.Fatalf("payload %s missing", m.Payload)
					}
				}
				if mode == loom.ModeConfirm {
					if s := pub.Stats(); s.Sent != uint64(len(sent)) {
						t.Fatalf("stats: sent %d, want %d", s.Sent, len(sent))
					}
				}
			})
		}
	}
}

func TestEnvelopeCarriesMetadataAndTrace(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	sub := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, nil), srv, 4}
	ch, err := sub.Subscribe(context.Background(), "env")
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) { c.Format = loom.FormatEnvelope })
	msg := message.NewMessage("fixed-uuid-1", []byte("payload \x00\xff"))
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set(loom.MetadataKey, "customer-7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	msg.SetContext(trace.ContextWithSpanContext(context.Background(), sc))
	// A confirm Publish returns once the consumer acked, so it runs beside the reader.
	published := make(chan error, 1)
	go func() { published <- pub.Publish("env", msg) }()
	got := readN(t, ch, 1)[0]
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if got.UUID != "fixed-uuid-1" || !bytes.Equal(got.Payload, msg.Payload) {
		t.Fatalf("got %s %q", got.UUID, got.Payload)
	}
	if got.Metadata.Get("tenant") != "acme" || got.Metadata.Get(loom.MetadataKey) != "customer-7" {
		t.Fatalf("metadata %v", got.Metadata)
	}
	if rsc := trace.SpanContextFromContext(got.Context()); rsc.TraceID() != sc.TraceID() || !rsc.IsRemote() {
		t.Fatalf("trace context not carried: %v", rsc)
	}
}

func TestNackRedeliversSameMessage(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	sub := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 }), srv, 1}
	ch, err := sub.Subscribe(context.Background(), "nack")
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) { c.Mode = loom.ModeFireAndForget })
	if err := pub.Publish("nack", message.NewMessage("a", []byte("A")), message.NewMessage("b", []byte("B"))); err != nil {
		t.Fatal(err)
	}
	first := <-ch
	first.Nack()
	select {
	case <-first.Context().Done():
	case <-time.After(patience):
		t.Fatal("context not cancelled after Nack")
	}
	again := <-ch
	if again.UUID != first.UUID || !bytes.Equal(again.Payload, first.Payload) {
		t.Fatalf("after Nack got %s, want %s again", again.UUID, first.UUID)
	}
	again.Ack()
	next := readN(t, ch, 1)[0]
	if next.UUID == first.UUID {
		t.Fatal("an acked message came again")
	}
}

// TestKeyOrder: messages with one key keep their order across parallel streams.
func TestKeyOrder(t *testing.T) {
	srv := startRouter(t, loomtest.Config{})
	sub := waitingSubscriber{newSubscriber(t, srv, client.TransportQUIC, func(c *loom.SubscriberConfig) { c.Consumers = 1 }), srv, 1}
	ch, err := sub.Subscribe(context.Background(), "order")
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, srv, client.TransportQUIC, func(c *loom.PublisherConfig) {
		c.Mode = loom.ModeFireAndForget
		c.Streams = 8
		c.BatchSize = 3
	})
	const keys, per = 5, 60
	for i := range per {
		for k := range keys {
			m := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "%d", i))
			m.Metadata.Set(loom.MetadataKey, fmt.Sprintf("key-%d", k))
			if err := pub.Publish("order", m); err != nil {
				t.Fatal(err)
			}
		}
	}
	next := map[string]int{}
	for _, m := range readN(t, ch, keys*per) {
		k := m.Metadata.Get(loom.MetadataKey)
		if want := strconv.Itoa(next[k]); string(m.Payload) != want {
			t.Fatalf("key %s: got %s, want %s", k, m.Payload, want)
		}
		next[k]++
	}
}
