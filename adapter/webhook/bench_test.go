package webhook

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// BenchmarkFanOut measures messages per second published to 1 and to 10
// local endpoints (one op = one message delivered to every endpoint).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run("endpoints="+strconv.Itoa(n), func(b *testing.B) {
			var eps []EndpointConfig
			for i := range n {
				s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusNoContent)
				}))
				b.Cleanup(s.Close)
				eps = append(eps, EndpointConfig{
					Name: "ep" + strconv.Itoa(i), URL: s.URL, Secrets: []string{testSecret}, MaxInFlight: 16,
				})
			}
			p, err := NewPublisher(PublisherConfig{Endpoints: eps, DeadLetter: &dlqRecorder{}}, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Close() })
			payload := []byte(`{"event":"invoice.paid","amount":4200}`)
			const batch = 64
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				msgs := make([]*message.Message, min(batch, b.N-sent))
				for i := range msgs {
					msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
				}
				if err := p.Publish("bench", msgs...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if got := p.Stats().Delivered; got != uint64(b.N*n) {
				b.Fatalf("delivered %d, want %d", got, b.N*n)
			}
		})
	}
}
