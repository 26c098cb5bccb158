package buffer

import (
	"context"
	"strconv"
	"sync"
	"testing"
)

// One goroutine: Push then Pop, the buffer never waits.
func BenchmarkPushPop(b *testing.B) {
	buf := newBuf(b, Config[int]{})
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := buf.Push(ctx, i, 100); err != nil {
			b.Fatal(err)
		}
		if _, err := buf.Pop(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// GOMAXPROCS goroutines each doing Push then Pop on one buffer: lock
// contention, rarely waiting.
func BenchmarkPushPopParallel(b *testing.B) {
	buf := newBuf(b, Config[int]{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := buf.Push(ctx, i, 100); err != nil {
				b.Error(err)
				return
			}
			if _, err := buf.Pop(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// One producer, four consumers blocking in Pop, a small buffer under the
// block policy: measures the wake-up paths. One op is one item through.
func BenchmarkProducerConsumers(b *testing.B) {
	buf := newBuf(b, Config[int]{MaxMessages: 64})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				if _, err := buf.Pop(ctx); err != nil {
					return
				}
			}
		})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := buf.Push(ctx, i, 100); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	buf.Close()
	wg.Wait()
}

// Keyed mode, GOMAXPROCS consumers each doing Push, Pop and Done over 16
// keys, with the buffer holding up to 256 items.
func BenchmarkKeyedParallel(b *testing.B) {
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	buf := newBuf(b, Config[int]{Key: func(i int) string { return keys[i%len(keys)] }})
	ctx := context.Background()
	for i := range 256 {
		if err := buf.Push(ctx, i, 100); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := buf.Push(ctx, i, 100); err != nil {
				b.Error(err)
				return
			}
			v, err := buf.Pop(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			buf.Done(keys[v%len(keys)])
		}
	})
}
