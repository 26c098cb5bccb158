package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// drop is one OnDrop call.
type drop[T any] struct {
	item   T
	reason DropReason
}

// recorder collects OnDrop calls.
type recorder[T any] struct {
	mu    sync.Mutex
	drops []drop[T]
}

func (r *recorder[T]) onDrop(item T, reason DropReason) {
	r.mu.Lock()
	r.drops = append(r.drops, drop[T]{item, reason})
	r.mu.Unlock()
}

func (r *recorder[T]) get() []drop[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]drop[T](nil), r.drops...)
}

func newBuf[T any](t testing.TB, cfg Config[T]) *Buffer[T] {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func mustPush[T any](t testing.TB, b *Buffer[T], item T, size int) {
	t.Helper()
	if err := b.Push(context.Background(), item, size); err != nil {
		t.Fatalf("Push(%v, %d): %v", item, size, err)
	}
}

func mustPop[T comparable](t testing.TB, b *Buffer[T], want T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := b.Pop(ctx)
	if err != nil {
		t.Fatalf("Pop: %v, want %v", err, want)
	}
	if got != want {
		t.Fatalf("Pop = %v, want %v", got, want)
	}
}

// waitWaiting waits until some goroutine is waiting on s, i.e. blocked in
// the buffer. It checks state, not timing.
func waitWaiting[T any](t *testing.T, b *Buffer[T], s *signal) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		waiting := s.ch != nil
		b.mu.Unlock()
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no goroutine started waiting")
		}
		time.Sleep(time.Millisecond)
	}
}

// result receives the outcome of a call made in another goroutine.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func recv(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return")
		return nil
	}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	if err := (Config[int]{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	b := newBuf(t, Config[int]{Policy: " Drop_Oldest "})
	if b.cfg.MaxMessages != DefaultMaxMessages || b.cfg.MaxBytes != DefaultMaxBytes || b.cfg.Policy != PolicyDropOldest {
		t.Fatalf("config after New = %+v", b.cfg)
	}
	if got := newBuf(t, Config[int]{}).cfg.Policy; got != PolicyBlock {
		t.Fatalf("default policy = %q", got)
	}
	for _, tc := range []struct {
		cfg  Config[int]
		want string
	}{
		{Config[int]{MaxMessages: -1}, "max_messages: must be > 0"},
		{Config[int]{MaxBytes: -5}, "max_bytes: must be > 0"},
		{Config[int]{Policy: "fifo"}, `policy: unknown policy "fifo" (valid: block, error, drop_oldest)`},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for s, want := range map[string]Policy{"block": PolicyBlock, "error": PolicyError, "drop_oldest": PolicyDropOldest, " BLOCK ": PolicyBlock} {
		if got, err := ParsePolicy(s); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "drop-oldest", "dropoldest"} {
		_, err := ParsePolicy(s)
		if err == nil || !strings.Contains(err.Error(), "block, error, drop_oldest") {
			t.Errorf("ParsePolicy(%q) error = %v, want one listing the valid policies", s, err)
		}
	}
}

// The reasons are the names the Loom publisher reports, with no mapping.
func TestDropReasonNames(t *testing.T) {
	if DropFull != "buffer_full" || DropClosed != "closed" || DropExpired != "expired" {
		t.Fatal("wrong DropReason names")
	}
}

// TestValidateReportsAll: every problem is reported, in field order, the same on
// every run.
func TestValidateReportsAll(t *testing.T) {
	cfg := Config[int]{MaxMessages: -1, MaxBytes: -2, Policy: "fifo"}
	want := "max_messages: must be > 0, got -1\n" +
		"max_bytes: must be > 0, got -2\n" +
		`policy: unknown policy "fifo" (valid: block, error, drop_oldest)`
	for range 20 {
		if err := cfg.Validate(); err == nil || err.Error() != want {
			t.Fatalf("Validate = %v\nwant %s", err, want)
		}
	}
}

func TestFIFO(t *testing.T) {
	b := newBuf(t, Config[int]{})
	for i := range 1000 {
		mustPush(t, b, i, 10)
	}
	if b.Len() != 1000 || b.Bytes() != 10_000 {
		t.Fatalf("Len, Bytes = %d, %d", b.Len(), b.Bytes())
	}
	for i := range 1000 {
		mustPop(t, b, i)
	}
	if s := b.Stats(); s.Len != 0 || s.Bytes != 0 || s.Pushed != 1000 || s.Popped != 1000 {
		t.Fatalf("Stats = %+v", s)
	}
}

// Interleaved pushes and pops move the ring's head around and make it grow
// while wrapped; order must survive.
func TestFIFOWrapAndGrow(t *testing.T) {
	b := newBuf(t, Config[int]{})
	next, want := 0, 0
	for round := range 50 {
		for range round%7 + 3 {
			mustPush(t, b, next, 1)
			next++
		}
		for range round%5 + 1 {
			if b.Len() > 0 {
				mustPop(t, b, want)
				want++
			}
		}
	}
	for want < next {
		mustPop(t, b, want)
		want++
	}
}

func TestBlockWaitsForRoomThenSucceeds(t *testing.T) {
	b := newBuf(t, Config[string]{MaxMessages: 1})
	mustPush(t, b, "a", 1)
	done := async(func() error { return b.Push(context.Background(), "b", 1) })
	waitWaiting(t, b, &b.pushWake)
	if s := b.Stats(); s.Len != 1 || s.Pushed != 1 {
		t.Fatalf("blocked Push changed the buffer: %+v", s)
	}
	mustPop(t, b, "a")
	if err := recv(t, done); err != nil {
		t.Fatalf("blocked Push: %v", err)
	}
	mustPop(t, b, "b")
	if s := b.Stats(); s.DroppedFull+s.DroppedClosed+s.DroppedExpired != 0 {
		t.Fatalf("block policy dropped something: %+v", s)
	}
}

func TestBlockByBytes(t *testing.T) {
	b := newBuf(t, Config[string]{MaxBytes: 10})
	mustPush(t, b, "a", 6)
	mustPush(t, b, "b", 4)
	done := async(func() error { return b.Push(context.Background(), "c", 5) })
	waitWaiting(t, b, &b.pushWake)
	mustPop(t, b, "a") // frees 6 bytes
	if err := recv(t, done); err != nil {
		t.Fatalf("blocked Push: %v", err)
	}
	if b.Bytes() != 9 {
		t.Fatalf("Bytes = %d, want 9", b.Bytes())
	}
}

func TestBlockHonoursDeadline(t *testing.T) {
	b := newBuf(t, Config[string]{MaxMessages: 1})
	mustPush(t, b, "a", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Push(ctx, "b", 1)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrFull) {
		t.Fatalf("Push = %v, want it to wrap DeadlineExceeded and ErrFull", err)
	}
	if s := b.Stats(); s.Len != 1 || s.Pushed != 1 {
		t.Fatalf("item was added: %+v", s)
	}
	mustPop(t, b, "a")
}

func TestPushWithDoneContext(t *testing.T) {
	b := newBuf(t, Config[int]{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Push(ctx, 1, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Push = %v, want Canceled", err)
	}
	if b.Len() != 0 {
		t.Fatal("item was added")
	}
}

func TestErrorPolicy(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		b := newBuf(t, Config[int]{MaxMessages: 2, Policy: PolicyError})
		mustPush(t, b, 1, 1)
		mustPush(t, b, 2, 1)
		if err := b.Push(context.Background(), 3, 1); !errors.Is(err, ErrFull) {
			t.Fatalf("Push = %v, want ErrFull", err)
		}
		mustPop(t, b, 1)
		mustPush(t, b, 3, 1)
	})
	t.Run("bytes", func(t *testing.T) {
		b := newBuf(t, Config[int]{MaxBytes: 10, Policy: PolicyError})
		mustPush(t, b, 1, 4)
		mustPush(t, b, 2, 4)
		if err := b.Push(context.Background(), 3, 3); !errors.Is(err, ErrFull) {
			t.Fatalf("Push = %v, want ErrFull", err)
		}
		mustPush(t, b, 4, 2) // exactly fills it
		if s := b.Stats(); s.Len != 3 || s.Bytes != 10 || s.Pushed != 3 {
			t.Fatalf("Stats = %+v", s)
		}
	})
}

// TestDropOldestEvictsPutBackNotRequeued: an item put back unsent is still the
// oldest never sent, and drop_oldest takes it; a requeued one may have arrived and
// is spared.
func TestDropOldestEvictsPutBackNotRequeued(t *testing.T) {
	var rec recorder[int]
	b := newBuf(t, Config[int]{MaxMessages: 3, Policy: PolicyDropOldest, OnDrop: rec.onDrop})
	mustPush(t, b, 1, 1)
	mustPush(t, b, 2, 1)
	mustPop(t, b, 1)
	mustPop(t, b, 2)
	b.PutBack(2, 1) // never sent
	b.Requeue(1, 1) // sent, may have arrived: in front of 2 again
	mustPush(t, b, 3, 1)
	mustPush(t, b, 4, 1) // full: 2 is the oldest never sent
	want := []drop[int]{{2, DropFull}}
	if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDrop calls = %v, want %v", got, want)
	}
	if s := b.Stats(); s.Requeued != 2 || s.Len != 3 {
		t.Fatalf("Stats = %+v", s)
	}
	for _, want := range []int{1, 3, 4} {
		mustPop(t, b, want)
	}
}

func TestDropOldest(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		var rec recorder[int]
		b := newBuf(t, Config[int]{MaxMessages: 3, Policy: PolicyDropOldest, OnDrop: rec.onDrop})
		for i := 1; i <= 5; i++ {
			mustPush(t, b, i, 1)
		}
		want := []drop[int]{{1, DropFull}, {2, DropFull}}
		if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("OnDrop calls = %v, want %v", got, want)
		}
		s := b.Stats()
		if s.DroppedFull != 2 || s.Len != 3 || s.Bytes != 3 || s.Pushed != 5 {
			t.Fatalf("Stats = %+v", s)
		}
		for i := 3; i <= 5; i++ {
			mustPop(t, b, i)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		var rec recorder[string]
		b := newBuf(t, Config[string]{MaxBytes: 10, Policy: PolicyDropOldest, OnDrop: rec.onDrop})
		mustPush(t, b, "a", 4)
		mustPush(t, b, "b", 4)
		mustPush(t, b, "c", 2)  // 10: fits
		mustPush(t, b, "d", 10) // needs everything out
		want := []drop[string]{{"a", DropFull}, {"b", DropFull}, {"c", DropFull}}
		if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("OnDrop calls = %v, want %v", got, want)
		}
		if s := b.Stats(); s.DroppedFull != 3 || s.Len != 1 || s.Bytes != 10 {
			t.Fatalf("Stats = %+v", s)
		}
		mustPop(t, b, "d")
	})
}

func TestTooLarge(t *testing.T) {
	for _, p := range []Policy{PolicyBlock, PolicyError, PolicyDropOldest} {
		t.Run(string(p), func(t *testing.T) {
			var rec recorder[int]
			b := newBuf(t, Config[int]{MaxBytes: 100, Policy: p, OnDrop: rec.onDrop})
			mustPush(t, b, 1, 50)
			// context.Background: if this blocked, the test would hang.
			if err := b.Push(context.Background(), 2, 101); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Push = %v, want ErrTooLarge", err)
			}
			if s := b.Stats(); s.Len != 1 || s.Bytes != 50 || len(rec.get()) != 0 {
				t.Fatalf("too-large Push changed the buffer: %+v, drops %v", s, rec.get())
			}
			mustPop(t, b, 1)
			mustPush(t, b, 3, 100) // exactly MaxBytes is fine
		})
	}
}

func TestNegativeSize(t *testing.T) {
	b := newBuf(t, Config[int]{})
	if err := b.Push(context.Background(), 1, -1); err == nil {
		t.Fatal("Push with negative size succeeded")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Requeue with negative size did not panic")
		}
	}()
	b.Requeue(1, -1)
}

func TestRequeueToFront(t *testing.T) {
	b := newBuf(t, Config[int]{})
	for i := 1; i <= 3; i++ {
		mustPush(t, b, i, 10)
	}
	mustPop(t, b, 1)
	b.Requeue(1, 10)
	if s := b.Stats(); s.Len != 3 || s.Bytes != 30 || s.Requeued != 1 || s.Popped != 1 {
		t.Fatalf("Stats = %+v", s)
	}
	for i := 1; i <= 3; i++ {
		mustPop(t, b, i)
	}
	if b.Bytes() != 0 {
		t.Fatalf("Bytes = %d, want 0", b.Bytes())
	}
}

func TestRequeueIgnoresLimits(t *testing.T) {
	for _, p := range []Policy{PolicyBlock, PolicyError, PolicyDropOldest} {
		t.Run(string(p), func(t *testing.T) {
			var rec recorder[string]
			b := newBuf(t, Config[string]{MaxMessages: 1, MaxBytes: 5, Policy: p, OnDrop: rec.onDrop})
			mustPush(t, b, "a", 5)
			mustPop(t, b, "a")
			mustPush(t, b, "b", 5)
			b.Requeue("a", 5) // over both limits, must not block, fail or evict
			if s := b.Stats(); s.Len != 2 || s.Bytes != 10 || len(rec.get()) != 0 {
				t.Fatalf("Stats = %+v, drops %v", s, rec.get())
			}
			mustPop(t, b, "a")
			mustPop(t, b, "b")
			if b.Bytes() != 0 {
				t.Fatalf("Bytes = %d", b.Bytes())
			}
		})
	}
}

func TestRequeueWakesPop(t *testing.T) {
	b := newBuf(t, Config[int]{})
	got := make(chan int, 1)
	done := async(func() error {
		v, err := b.Pop(context.Background())
		got <- v
		return err
	})
	waitWaiting(t, b, &b.popWake)
	b.Requeue(7, 1)
	if err := recv(t, done); err != nil || <-got != 7 {
		t.Fatalf("Pop after Requeue: %v", err)
	}
}

func TestPopHonoursContext(t *testing.T) {
	b := newBuf(t, Config[int]{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Pop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pop on empty = %v, want DeadlineExceeded", err)
	}
	// A done context takes nothing, even with items waiting.
	mustPush(t, b, 1, 1)
	if _, err := b.Pop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pop with done ctx = %v", err)
	}
	if b.Len() != 1 {
		t.Fatal("Pop with done context took an item")
	}
}

// keyed is an item for keyed tests: key and sequence number within it.
type keyed struct {
	key string
	seq int
}

func keyOf(k keyed) string { return k.key }

func TestKeyedSkipsHeldKeys(t *testing.T) {
	b := newBuf(t, Config[keyed]{Key: keyOf})
	a1, a2, b1 := keyed{"a", 1}, keyed{"a", 2}, keyed{"b", 1}
	mustPush(t, b, a1, 1)
	mustPush(t, b, a2, 1)
	mustPush(t, b, b1, 1)

	mustPop(t, b, a1) // consumer 1 holds "a"
	mustPop(t, b, b1) // consumer 2 skips a2: "a" is held
	got := make(chan keyed, 1)
	done := async(func() error { // consumer 3 must wait for "a"
		v, err := b.Pop(context.Background())
		got <- v
		return err
	})
	waitWaiting(t, b, &b.popWake)
	if b.Len() != 1 {
		t.Fatal("a2 was popped while a was held")
	}
	b.Done("b") // releasing another key must not hand out a2
	mustPush(t, b, keyed{"c", 1}, 1)
	if err := recv(t, done); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != (keyed{"c", 1}) {
		t.Fatalf("Pop = %v, want c1", v)
	}
	b.Done("c")
	b.Done("a")
	mustPop(t, b, a2)
}

func TestKeyedRequeueKeepsOrder(t *testing.T) {
	b := newBuf(t, Config[keyed]{Key: keyOf})
	mustPush(t, b, keyed{"a", 1}, 1)
	mustPush(t, b, keyed{"a", 2}, 1)
	mustPush(t, b, keyed{"b", 1}, 1)
	mustPop(t, b, keyed{"a", 1})
	b.Requeue(keyed{"a", 1}, 1) // send failed
	// Still held: another consumer gets b1, not a1 or a2.
	mustPop(t, b, keyed{"b", 1})
	b.Done("a")
	mustPop(t, b, keyed{"a", 1})
	b.Done("a")
	mustPop(t, b, keyed{"a", 2})
}

// Several consumers drain a keyed buffer while a producer fills it, and
// some sends "fail" and are requeued. No two items with one key may be in
// flight at once, each key's items must be delivered in order, and items of
// different keys must be in flight at the same time.
func TestKeyedConcurrentConsumers(t *testing.T) {
	const (
		keys      = 8
		perKey    = 300
		consumers = 6
	)
	b := newBuf(t, Config[keyed]{MaxMessages: 50, Key: keyOf})
	var (
		inFlight    [keys]atomic.Bool
		concurrent  atomic.Int32 // items in flight now
		maxInFlight atomic.Int32
		mu          sync.Mutex
		last        = map[string]int{} // last delivered seq per key
		failed      = map[keyed]bool{}
		wg          sync.WaitGroup
	)
	for range consumers {
		wg.Go(func() {
			for {
				it, err := b.Pop(context.Background())
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Pop: %v", err)
					}
					return
				}
				k := int(it.key[0] - 'a')
				if !inFlight[k].CompareAndSwap(false, true) {
					t.Errorf("two items of key %s in flight", it.key)
				}
				n := concurrent.Add(1)
				for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
				}

				mu.Lock()
				fail := it.seq%10 == 0 && !failed[it] // every 10th fails once
				if fail {
					failed[it] = true
				} else {
					if last[it.key]+1 != it.seq {
						t.Errorf("key %s: delivered seq %d after %d", it.key, it.seq, last[it.key])
					}
					last[it.key] = it.seq
				}
				mu.Unlock()
				time.Sleep(10 * time.Microsecond) // "sending"

				concurrent.Add(-1)
				inFlight[k].Store(false)
				if fail {
					b.Requeue(it, 1)
				}
				b.Done(it.key)
			}
		})
	}
	for i := 1; i <= perKey; i++ {
		for k := range keys {
			mustPush(t, b, keyed{string(rune('a' + k)), i}, 1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitEmpty(ctx); err != nil {
		t.Error(err)
	}
	b.Close()
	wg.Wait()
	for k := range keys {
		if got := last[string(rune('a'+k))]; got != perKey {
			t.Errorf("key %c: last delivered seq %d, want %d", 'a'+k, got, perKey)
		}
	}
	if maxInFlight.Load() < 2 {
		t.Errorf("at most %d items were in flight at once; want different keys in parallel", maxInFlight.Load())
	}
	if s := b.Stats(); s.Requeued != keys*perKey/10 || s.Popped != s.Pushed+s.Requeued {
		t.Errorf("Stats = %+v", s)
	}
}

func TestCloseWakesBlockedPush(t *testing.T) {
	b := newBuf(t, Config[int]{MaxMessages: 1})
	mustPush(t, b, 1, 1)
	done := async(func() error { return b.Push(context.Background(), 2, 1) })
	waitWaiting(t, b, &b.pushWake)
	b.Close()
	if err := recv(t, done); !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Push after Close = %v, want ErrClosed", err)
	}
	if err := b.Push(context.Background(), 3, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after Close = %v, want ErrClosed", err)
	}
	mustPop(t, b, 1) // what was in is still drained
}

func TestCloseWakesBlockedPop(t *testing.T) {
	b := newBuf(t, Config[int]{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := b.Pop(context.Background())
			errs <- err
		})
	}
	waitWaiting(t, b, &b.popWake)
	b.Close()
	b.Close() // idempotent
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Pop after Close = %v, want ErrClosed", err)
		}
	}
}

func TestCloseDrainsThenErrClosed(t *testing.T) {
	b := newBuf(t, Config[int]{})
	mustPush(t, b, 1, 1)
	mustPush(t, b, 2, 1)
	b.Close()
	mustPop(t, b, 1)
	mustPop(t, b, 2)
	if _, err := b.Pop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pop on closed, empty = %v", err)
	}
	// Requeue after Close still keeps the item, for DropRemaining to report.
	b.Requeue(2, 1)
	if b.Len() != 1 {
		t.Fatal("Requeue after Close lost the item")
	}
}

func TestDropRemaining(t *testing.T) {
	var rec recorder[int]
	b := newBuf(t, Config[int]{OnDrop: rec.onDrop})
	for i := 1; i <= 3; i++ {
		mustPush(t, b, i, 2)
	}
	mustPop(t, b, 1)
	if n := b.DropRemaining(); n != 2 {
		t.Fatalf("DropRemaining = %d, want 2", n)
	}
	want := []drop[int]{{2, DropClosed}, {3, DropClosed}}
	if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDrop calls = %v, want %v", got, want)
	}
	s := b.Stats()
	if s.Len != 0 || s.Bytes != 0 || s.DroppedClosed != 2 {
		t.Fatalf("Stats = %+v", s)
	}
	if err := b.Push(context.Background(), 4, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after DropRemaining = %v, want ErrClosed", err)
	}
	if n := b.DropRemaining(); n != 0 {
		t.Fatalf("second DropRemaining = %d", n)
	}
}

type expiring struct {
	id      int
	expired bool
}

func TestExpiredDropped(t *testing.T) {
	var rec recorder[expiring]
	b := newBuf(t, Config[expiring]{
		OnDrop:  rec.onDrop,
		Expired: func(e expiring) bool { return e.expired },
	})
	mustPush(t, b, expiring{1, true}, 3)
	mustPush(t, b, expiring{2, false}, 3)
	mustPush(t, b, expiring{3, true}, 3)
	mustPop(t, b, expiring{2, false})
	want := []drop[expiring]{{expiring{1, true}, DropExpired}}
	if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDrop calls = %v, want %v", got, want)
	}
	// Only an expired item is left: Pop drops it and goes on waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Pop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pop = %v, want DeadlineExceeded", err)
	}
	s := b.Stats()
	if s.DroppedExpired != 2 || s.Len != 0 || s.Bytes != 0 || s.Popped != 1 {
		t.Fatalf("Stats = %+v", s)
	}
	if len(rec.get()) != 2 {
		t.Fatalf("OnDrop calls = %v", rec.get())
	}
}

// A time-based deadline, as the publisher would use it.
func TestExpiredByDeadline(t *testing.T) {
	type msg struct {
		id       int
		deadline time.Time
	}
	b := newBuf(t, Config[msg]{Expired: func(m msg) bool {
		return !m.deadline.IsZero() && time.Now().After(m.deadline)
	}})
	mustPush(t, b, msg{1, time.Now().Add(-time.Second)}, 1)
	mustPush(t, b, msg{2, time.Time{}}, 1)
	v, err := b.Pop(context.Background())
	if err != nil || v.id != 2 {
		t.Fatalf("Pop = %v, %v; want id 2", v, err)
	}
	if b.Stats().DroppedExpired != 1 {
		t.Fatal("expired item not counted")
	}
}

func TestOnDropMayCallBuffer(t *testing.T) {
	var b *Buffer[int]
	var lens []int
	b = newBuf(t, Config[int]{MaxMessages: 1, Policy: PolicyDropOldest, OnDrop: func(int, DropReason) {
		lens = append(lens, b.Len()) // would deadlock if called under the lock
	}})
	mustPush(t, b, 1, 1)
	mustPush(t, b, 2, 1)
	b.DropRemaining()
	if fmt.Sprint(lens) != "[1 0]" {
		t.Fatalf("Len seen from OnDrop = %v", lens)
	}
}

func TestWaitEmpty(t *testing.T) {
	b := newBuf(t, Config[int]{})
	if err := b.WaitEmpty(context.Background()); err != nil {
		t.Fatalf("WaitEmpty on empty: %v", err)
	}
	mustPush(t, b, 1, 1)
	mustPush(t, b, 2, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.WaitEmpty(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEmpty = %v, want DeadlineExceeded", err)
	}
	done := async(func() error { return b.WaitEmpty(context.Background()) })
	waitWaiting(t, b, &b.pushWake)
	mustPop(t, b, 1)
	mustPop(t, b, 2)
	if err := recv(t, done); err != nil {
		t.Fatalf("WaitEmpty: %v", err)
	}
}

func TestWaitEmptyWaitsForHeldKeys(t *testing.T) {
	b := newBuf(t, Config[keyed]{Key: keyOf})
	mustPush(t, b, keyed{"a", 1}, 1)
	mustPop(t, b, keyed{"a", 1})
	done := async(func() error { return b.WaitEmpty(context.Background()) })
	waitWaiting(t, b, &b.pushWake)
	b.Done("a")
	if err := recv(t, done); err != nil {
		t.Fatalf("WaitEmpty: %v", err)
	}
}

// Many producers and consumers with small limits under block policy: every
// item pushed is popped exactly once, nothing is dropped.
func TestConcurrentBlockNoLoss(t *testing.T) {
	const producers, consumers, each = 4, 4, 2000
	b := newBuf(t, Config[int]{MaxMessages: 8, MaxBytes: 64})
	var (
		seen     = make([]atomic.Int32, producers*each)
		requeued = make([]atomic.Bool, producers*each)
		pw       sync.WaitGroup
		cw       sync.WaitGroup
	)
	for range consumers {
		cw.Go(func() {
			for {
				v, err := b.Pop(context.Background())
				if err != nil {
					return
				}
				if v%97 == 0 && requeued[v].CompareAndSwap(false, true) {
					b.Requeue(v, v%9) // a failed send, once
					continue
				}
				seen[v].Add(1)
			}
		})
	}
	for p := range producers {
		pw.Go(func() {
			for i := range each {
				v := p*each + i
				if err := b.Push(context.Background(), v, v%9); err != nil {
					t.Errorf("Push: %v", err)
					return
				}
			}
		})
	}
	pw.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()
	cw.Wait()
	for v := range seen {
		if n := seen[v].Load(); n != 1 {
			t.Fatalf("item %d popped %d times", v, n)
		}
	}
	s := b.Stats()
	if s.Pushed != producers*each || s.Len != 0 || s.Bytes != 0 || s.Popped != s.Pushed+s.Requeued {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestTryPop(t *testing.T) {
	var dropped []int
	b, err := New(Config[int]{
		Key:     func(i int) string { return fmt.Sprint(i % 2) },
		Expired: func(i int) bool { return i < 0 },
		OnDrop:  func(i int, r DropReason) { dropped = append(dropped, i) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.TryPop(); ok {
		t.Fatal("TryPop on an empty buffer returned an item")
	}
	for _, i := range []int{-1, 2, 4, 3} {
		if err := b.Push(context.Background(), i, 1); err != nil {
			t.Fatal(err)
		}
	}
	// -1 expired, 2 taken and its key "0" held, so 4 is skipped for 3.
	if i, ok := b.TryPop(); !ok || i != 2 {
		t.Fatalf("got %d %v, want 2", i, ok)
	}
	if i, ok := b.TryPop(); !ok || i != 3 {
		t.Fatalf("got %d %v, want 3", i, ok)
	}
	if _, ok := b.TryPop(); ok {
		t.Fatal("TryPop returned an item whose key is held")
	}
	b.Done("0")
	if i, ok := b.TryPop(); !ok || i != 4 {
		t.Fatalf("after Done: got %d %v, want 4", i, ok)
	}
	if len(dropped) != 1 || dropped[0] != -1 {
		t.Fatalf("dropped %v, want [-1]", dropped)
	}
}

// TestDropOldestSparesRequeued: a requeued item may have reached the server before
// its send failed, so drop_oldest never evicts one; when only requeued items are
// left, the new item is dropped instead. Every reported drop is a real loss.
func TestDropOldestSparesRequeued(t *testing.T) {
	var dropped []int
	b, err := New(Config[int]{MaxMessages: 2, Policy: PolicyDropOldest, OnDrop: func(i int, _ DropReason) { dropped = append(dropped, i) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, i := range []int{1, 2} {
		if err := b.Push(ctx, i, 1); err != nil {
			t.Fatal(err)
		}
	}
	one, _ := b.Pop(ctx)
	b.Requeue(one, 1)                         // [1(requeued) 2]
	if err := b.Push(ctx, 3, 1); err != nil { // evicts 2, not 1
		t.Fatal(err)
	}
	two, _ := b.Pop(ctx) // 1
	three, _ := b.Pop(ctx)
	b.Requeue(three, 1)
	b.Requeue(two, 1) // [1 3], both requeued
	if err := b.Push(ctx, 4, 1); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dropped, []int{2, 4}) {
		t.Fatalf("dropped %v, want [2 4]", dropped)
	}
	if st := b.Stats(); st.Len != 2 || st.DroppedFull != 2 || st.Pushed != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDropOldestEvictsOnlyWhenThatMakesRoom: when evicting every item never sent
// would still leave no room (the requeued ones hold it), nothing is evicted and only
// the new item is dropped. The old code evicted the unsent item and then dropped the
// new one as well: two losses where one was needed, one of them pointless.
func TestDropOldestEvictsOnlyWhenThatMakesRoom(t *testing.T) {
	var rec recorder[string]
	b := newBuf(t, Config[string]{MaxBytes: 10, Policy: PolicyDropOldest, OnDrop: rec.onDrop})
	mustPush(t, b, "a", 4)
	mustPop(t, b, "a")
	b.Requeue("a", 4)      // sent, may have arrived: spared
	mustPush(t, b, "b", 2) // [a(requeued) b], 6 bytes
	mustPush(t, b, "c", 7) // 4+7 > 10 even without b: c goes, b stays
	want := []drop[string]{{"c", DropFull}}
	if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDrop calls = %v, want %v", got, want)
	}
	if s := b.Stats(); s.DroppedFull != 1 || s.Len != 2 || s.Bytes != 6 || s.Pushed != 3 {
		t.Fatalf("Stats = %+v", s)
	}
	mustPop(t, b, "a")
	mustPop(t, b, "b")

	// When evicting does make room, it evicts just enough, oldest first.
	mustPush(t, b, "d", 4)
	mustPush(t, b, "e", 4)
	mustPop(t, b, "d")
	b.Requeue("d", 4)      // [d(requeued) e], 8 bytes
	mustPush(t, b, "f", 6) // 4+6 fits once e is out
	want = append(want, drop[string]{"e", DropFull})
	if got := rec.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OnDrop calls = %v, want %v", got, want)
	}
	mustPop(t, b, "d")
	mustPop(t, b, "f")
}
