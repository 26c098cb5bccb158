package webhook_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/loombridge/loombridge/adapter/webhook"
)

// Sign computes the Standard Webhooks signature; this is the
// specification's test vector.
func ExampleSign() {
	sig, err := webhook.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0),
		[]byte(`{"test": 2432232314}`), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	fmt.Println(sig)
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

// A receiver verifies each request with Verify; the publisher signs with
// the endpoint's secrets and delivers the payload as is.
func ExamplePublisher() {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(body, r.Header, 5*time.Minute, secret); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		fmt.Printf("received %s with id %s\n", body, r.Header.Get(webhook.HeaderID))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	// Any Watermill publisher can take the dead letters.
	deadLetters := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer deadLetters.Close()

	pub, err := webhook.NewPublisher(webhook.PublisherConfig{
		Endpoints: []webhook.EndpointConfig{{
			Name:    "billing",
			URL:     receiver.URL,
			Secrets: []string{secret},
		}},
		ContentType: "application/json",
		DeadLetter:  deadLetters,
	}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	msg := message.NewMessage("msg_1", []byte(`{"invoice":42}`))
	if err := pub.Publish("invoices", msg); err != nil {
		panic(err)
	}
	s := pub.Stats()
	fmt.Printf("delivered %d, dead-lettered %d\n", s.Delivered, s.DeadLettered)
	// Output:
	// received {"invoice":42} with id msg_1
	// delivered 1, dead-lettered 0
}
