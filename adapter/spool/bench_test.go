package spool_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/spool"
)

// BenchmarkPublish stores 1 KiB messages from 1 or 8 goroutines into a
// spool with one sink that acks everything; one op is one message stored
// and delivered.
func BenchmarkPublish(b *testing.B) {
	for _, par := range []int{1, 8} {
		b.Run(map[int]string{1: "serial", 8: "8-at-once"}[par], func(b *testing.B) {
			r := startRig(b, b.TempDir())
			defer r.stop()
			sp, err := spool.Open(context.Background(), r.nc, spool.Config{Name: "bench"}, nil)
			if err != nil {
				b.Fatal(err)
			}
			sub, err := sp.NewSubscriber(context.Background(), spool.SubscriberConfig{Durable: "s", Concurrency: 64})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			ch, err := sub.Subscribe(context.Background(), "")
			if err != nil {
				b.Fatal(err)
			}
			got := make(chan struct{})
			go func() {
				n := 0
				for m := range ch {
					m.Ack()
					if n++; n == b.N {
						close(got)
					}
				}
			}()
			payload := make([]byte, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			next := make(chan struct{})
			for range par {
				wg.Go(func() {
					for range next {
						if err := sp.Publish("", message.NewMessage("id", payload)); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			<-got
		})
	}
}
