package loom_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// Publish and consume through a Loom router. The in-process test router stands in
// for a loomd server here; against a real one, set Addr and TLS (or a CA file) and
// a Token instead of TLSClientConfig.
func Example() {
	srv, _ := loomtest.Start(loomtest.Config{})
	defer srv.Close()
	conn := client.Config{Addr: srv.Addr(), Transport: client.TransportQUIC, TLSClientConfig: srv.ClientTLS()}

	sub, err := loom.NewSubscriber(loom.SubscriberConfig{Client: conn}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "orders")
	if err != nil {
		panic(err)
	}
	// Loom discards what nobody consumes: wait until the consumer streams are in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.WaitConsumers(ctx, "orders", 4)

	pub, err := loom.NewPublisher(loom.PublisherConfig{Client: conn, Format: loom.FormatEnvelope}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":42}`))
	msg.Metadata.Set("loom_key", "customer-7") // same key, same order, same consumer
	msg.Metadata.Set("tenant", "acme")
	// In confirm mode (the default) Publish returns once a consumer acknowledged
	// the message, so it must not run on the goroutine that reads the subscription.
	go func() {
		if err := pub.Publish("orders", msg); err != nil {
			panic(err)
		}
	}()

	got := <-messages
	fmt.Println(string(got.Payload), got.Metadata.Get("tenant"), got.Metadata.Get(loom.MetadataKey))
	got.Ack()
	// Output: {"order":42} acme customer-7
}
