// Package buffer provides Buffer, a bounded, generic FIFO queue limited by
// item count and by bytes. The Loom publisher uses it to hold messages while
// disconnected and to feed its sender goroutines, but it knows nothing about
// messages: the caller gives each item's size.
//
// When full, the Config.Policy decides whether Push blocks, fails with
// ErrFull, or evicts the oldest items. Every item the buffer accepted and
// then discarded is reported to Config.OnDrop and counted in Stats by
// DropReason. Several consumers may Pop concurrently; a consumer whose send
// failed puts the item back at the front with Requeue. With Config.Key set,
// items sharing a key are handed out one at a time (see Done), so parallel
// consumers keep per-key order.
//
// Buffer starts no goroutines. Waiting is done on channels closed on state
// changes, never by polling, and every wait honours its context.
package buffer

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Errors returned by Buffer. Test them with errors.Is.
var (
	// ErrFull is returned by Push under PolicyError when the item does not
	// fit, and is also wrapped by a PolicyBlock Push whose context ended
	// while waiting for room.
	ErrFull = errors.New("buffer: full")
	// ErrClosed is returned by Push after Close, and by Pop once the buffer
	// is closed and empty.
	ErrClosed = errors.New("buffer: closed")
	// ErrTooLarge is returned by Push, under any policy, for an item larger
	// than MaxBytes on its own.
	ErrTooLarge = errors.New("buffer: item larger than max_bytes")
)

// DropReason says why the buffer discarded an item. Its values are the names
// the Loom publisher reports (loom.DropReason is this type), so they can be
// logged and compared as they are.
type DropReason string

// The drop reasons.
const (
	// DropFull ("buffer_full"): evicted by PolicyDropOldest to make room, or
	// the new item itself when no eviction could make room.
	DropFull DropReason = "buffer_full"
	// DropClosed ("closed"): still buffered when the owner called
	// DropRemaining.
	DropClosed DropReason = "closed"
	// DropExpired ("expired"): Config.Expired reported it expired when Pop
	// reached it.
	DropExpired DropReason = "expired"
	// DropRefused ("refused"): the owner dropped its group with DropGroup
	// because the destination refused it (the Loom publisher: the server
	// refused the token or the room); not transient, so not kept for a retry.
	DropRefused DropReason = "refused"
)

// Stats is a snapshot of a Buffer's state and counters. At any time
// Len == Pushed + Requeued - Popped - DroppedFull - DroppedClosed - DroppedExpired
// - DroppedRefused.
type Stats struct {
	Len      int    // items buffered now
	Bytes    int64  // sum of their sizes
	Pushed   uint64 // items accepted by Push
	Requeued uint64 // items put back by Requeue or PutBack
	Popped   uint64 // items returned by Pop
	// Discarded items, by reason.
	DroppedFull    uint64 // DropFull
	DroppedClosed  uint64 // DropClosed
	DroppedExpired uint64 // DropExpired
	DroppedRefused uint64 // DropRefused
}

// Buffer is a bounded FIFO of T. Create it with New; all methods are safe
// for concurrent use.
type Buffer[T any] struct {
	cfg Config[T]

	mu     sync.Mutex
	q      ring[T]
	bytes  int64
	closed bool
	held   map[string]int // keys held by consumers (keyed mode): items popped and not Done
	// groups counts the buffered items of each group (Config.Group); a group
	// without items has no entry.
	groups map[string]int
	// scratch for TakeBatch, reused under mu.
	eligible map[string]bool
	taken    []int
	// popWake wakes Pop: an item was added, a key released, or Close.
	popWake signal
	// pushWake wakes Push and WaitEmpty: an item left, a key was released,
	// or Close.
	pushWake signal
	stats    Stats // Len and Bytes are filled in by Stats()
}

// New returns an empty Buffer configured by cfg, after applying defaults to
// its zero fields. It fails if cfg.Validate does.
func New[T any](cfg Config[T]) (*Buffer[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	cfg.setDefaults()
	cfg.Policy, _ = ParsePolicy(string(cfg.Policy)) // normalise; validated above
	return &Buffer[T]{cfg: cfg, held: map[string]int{}, groups: map[string]int{}, eligible: map[string]bool{}}, nil
}

// Push appends item, of the given size in bytes, at the back. If it does
// not fit, the policy decides: PolicyBlock waits for room, returning an
// error wrapping both ErrFull and ctx.Err() if ctx ends first (the item is
// then not added); PolicyError returns ErrFull.
//
// PolicyDropOldest evicts the oldest items never requeued until the new one
// fits. A requeued item may have been delivered already, so evicting it could
// report a loss that is none: it is spared. When evicting every item never
// requeued would still not make room, nothing is evicted and the new item is
// dropped instead (Push returns nil and OnDrop gets it with DropFull). Either
// way exactly the items reported are lost.
//
// Push returns ErrTooLarge if size exceeds MaxBytes, ErrClosed once the
// buffer is closed, and an error wrapping ctx.Err() if ctx is already done.
func (b *Buffer[T]) Push(ctx context.Context, item T, size int) error {
	if size < 0 {
		return fmt.Errorf("buffer: negative item size %d", size)
	}
	if int64(size) > b.cfg.MaxBytes {
		return fmt.Errorf("%w: %d bytes, max_bytes is %d", ErrTooLarge, size, b.cfg.MaxBytes)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("buffer: push: %w", err)
	}
	e := entry[T]{item: item, size: int64(size), key: b.key(item), group: b.group(item)}

	var evicted []entry[T]
	b.mu.Lock()
	for !b.fits(e.size) {
		if b.closed {
			break
		}
		switch b.cfg.Policy {
		case PolicyError:
			b.mu.Unlock()
			return ErrFull
		case PolicyDropOldest:
			if !b.evictionMakesRoom(e.size) {
				// Only requeued items would be left, and they may have arrived
				// already: the new item goes, and nothing else.
				b.stats.Pushed++
				b.stats.DroppedFull++
				b.mu.Unlock()
				b.report([]entry[T]{e}, DropFull)
				return nil
			}
			for !b.fits(e.size) {
				i, _ := b.oldestUnsent() // there is one: evictionMakesRoom
				evicted = append(evicted, b.remove(i))
				b.stats.DroppedFull++
			}
			continue
		}
		wake := b.pushWake.wait()
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("%w: gave up waiting for room: %w", ErrFull, ctx.Err())
		}
		b.mu.Lock()
	}
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.q.pushBack(e)
	b.bytes += e.size
	b.groups[e.group]++
	b.stats.Pushed++
	b.popWake.broadcast()
	b.mu.Unlock()

	b.report(evicted, DropFull)
	return nil
}

// Pop removes and returns the oldest item, waiting until there is one.
// It returns ErrClosed once the buffer is closed and empty, and an error
// wrapping ctx.Err() if ctx ends first (or is already done: then Pop takes
// nothing even if items are waiting). Items that Config.Expired reports as
// expired are dropped with DropExpired on the way.
//
// In keyed mode (Config.Key set) Pop returns the oldest item whose key no
// other consumer holds, and holds that key until Done(key). Finding it scans
// from the front past items with held keys: O(n) in the worst case.
func (b *Buffer[T]) Pop(ctx context.Context) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("buffer: pop: %w", err)
	}
	var expired []entry[T]
	b.mu.Lock()
	for {
		item, ok, exp := b.takeLocked(expired)
		expired = exp
		if ok {
			b.mu.Unlock()
			b.report(expired, DropExpired)
			return item, nil
		}
		if b.closed && b.q.n == 0 {
			b.mu.Unlock()
			b.report(expired, DropExpired)
			return zero, ErrClosed
		}
		wake := b.popWake.wait()
		b.mu.Unlock()
		b.report(expired, DropExpired)
		expired = expired[:0]
		select {
		case <-wake:
		case <-ctx.Done():
			return zero, fmt.Errorf("buffer: pop: %w", ctx.Err())
		}
		b.mu.Lock()
	}
}

// TryPop is Pop without waiting: it returns the item Pop would return now, and
// false when there is none (empty, or every key held).
func (b *Buffer[T]) TryPop() (T, bool) {
	b.mu.Lock()
	item, ok, expired := b.takeLocked(nil)
	b.mu.Unlock()
	b.report(expired, DropExpired)
	return item, ok
}

// takeLocked removes and returns the next poppable item, dropping expired ones
// on the way (appended to expired for reporting). Called with mu held.
func (b *Buffer[T]) takeLocked(expired []entry[T]) (T, bool, []entry[T]) {
	for {
		i, ok := b.next()
		if !ok {
			var zero T
			return zero, false, expired
		}
		e := b.remove(i)
		if b.cfg.Expired != nil && b.cfg.Expired(e.item) {
			b.stats.DroppedExpired++
			expired = append(expired, e)
			continue
		}
		if b.cfg.Key != nil {
			b.held[e.key]++
		}
		b.stats.Popped++
		return e.item, true, expired
	}
}

// Done releases key, held since Pop (or TakeBatch) returned an item with that
// key, so that the next item with the key can be popped. Call it exactly once
// per item returned, after the item was delivered or after it was put back
// with Requeue (Requeue first, then Done, or another consumer could overtake
// it); the key is free again once every item taken with it is Done. Done of a
// key not held, or without Config.Key, does nothing.
func (b *Buffer[T]) Done(key string) {
	b.mu.Lock()
	if n, ok := b.held[key]; ok {
		if n > 1 {
			b.held[key] = n - 1
		} else {
			delete(b.held, key)
			b.popWake.broadcast()
			b.pushWake.broadcast() // for WaitEmpty
		}
	}
	b.mu.Unlock()
}

// Wake wakes every TakeBatch and Pop waiting, so that they look again: the
// owner calls it when what its eligible function answers has changed.
func (b *Buffer[T]) Wake() {
	b.mu.Lock()
	b.popWake.broadcast()
	b.mu.Unlock()
}

// TakeBatch removes and returns up to max items of one group (Config.Group),
// waiting until there is at least one. The group is that of the oldest item
// that may be taken: its group is one eligible reports true for, and in keyed
// mode its key is not held by another consumer. Further items of that group
// follow in buffer order, wherever they are, so items of other groups in
// between do not cut the batch short. In keyed mode a batch takes one item per
// key, as Pop does: an item whose key is held, by another consumer or by an
// item already in this batch, is passed over, and with it every later item of
// that key. Each item taken holds its key until its Done.
//
// eligible is called with the buffer's lock held, once per group with items,
// and took, if not nil, with the lock still held and the batch's group once a
// batch was taken, so that the caller's count of batches per group never lags:
// keep both cheap and do not call the buffer from them. When eligible's
// answers change, call Wake. Expired items are dropped on the way, as by Pop. TakeBatch
// returns ErrClosed once the buffer is closed and empty, and an error wrapping
// ctx.Err() if ctx ends first. It costs one pass over the buffer per batch.
func (b *Buffer[T]) TakeBatch(ctx context.Context, max int, eligible func(group string) bool, took func(group string)) ([]T, error) {
	if max < 1 {
		max = 1
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("buffer: take: %w", err)
	}
	b.mu.Lock()
	for {
		items, group, expired := b.takeBatchLocked(max, eligible)
		if len(items) > 0 {
			if took != nil {
				took(group)
			}
			b.mu.Unlock()
			b.report(expired, DropExpired)
			return items, nil
		}
		if b.closed && b.q.n == 0 {
			b.mu.Unlock()
			b.report(expired, DropExpired)
			return nil, ErrClosed
		}
		wake := b.popWake.wait()
		b.mu.Unlock()
		b.report(expired, DropExpired)
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("buffer: take: %w", ctx.Err())
		}
		b.mu.Lock()
	}
}

// takeBatchLocked is TakeBatch's one pass. Called with mu held.
func (b *Buffer[T]) takeBatchLocked(max int, eligible func(string) bool) (items []T, group string, expired []entry[T]) {
	clear(b.eligible)
	some := false
	for g := range b.groups {
		ok := eligible == nil || eligible(g)
		b.eligible[g] = ok
		some = some || ok
	}
	if !some {
		return nil, "", nil
	}
	b.taken = b.taken[:0]
	found := false
	for i := 0; i < b.q.n && len(items) < max; i++ {
		e := b.q.at(i)
		if found {
			if e.group != group {
				continue
			}
		} else if !b.eligible[e.group] {
			continue
		}
		if b.cfg.Key != nil && b.held[e.key] > 0 {
			continue // held by another consumer, or already in this batch
		}
		b.taken = append(b.taken, i)
		if b.cfg.Expired != nil && b.cfg.Expired(e.item) {
			b.stats.DroppedExpired++
			expired = append(expired, *e)
			continue
		}
		if !found {
			found, group = true, e.group
		}
		if b.cfg.Key != nil {
			b.held[e.key]++
		}
		b.stats.Popped++
		items = append(items, e.item)
	}
	b.removeTaken()
	return items, group, expired
}

// removeTaken removes the entries at the ascending indices in b.taken in one
// pass. Called with mu held.
func (b *Buffer[T]) removeTaken() {
	if len(b.taken) == 0 {
		return
	}
	for _, i := range b.taken {
		e := b.q.at(i)
		b.bytes -= e.size
		b.ungroup(e.group)
	}
	if b.taken[len(b.taken)-1] == len(b.taken)-1 { // a prefix: cheap
		for range b.taken {
			b.q.removeAt(0)
		}
	} else {
		b.q.removeSorted(b.taken)
	}
	b.pushWake.broadcast()
}

// DropGroup removes every buffered item of group, reports each to OnDrop with
// reason, and returns how many there were. Items already taken are the
// consumers' business.
func (b *Buffer[T]) DropGroup(group string, reason DropReason) int {
	b.mu.Lock()
	var left []entry[T]
	if b.groups[group] > 0 {
		b.taken = b.taken[:0]
		for i := range b.q.n {
			if e := b.q.at(i); e.group == group {
				b.taken = append(b.taken, i)
				left = append(left, *e)
			}
		}
		b.removeTaken()
		b.countDrops(reason, len(left))
	}
	b.mu.Unlock()
	b.report(left, reason)
	return len(left)
}

// countDrops adds n to the counter of reason. Called with mu held.
func (b *Buffer[T]) countDrops(reason DropReason, n int) {
	switch reason {
	case DropFull:
		b.stats.DroppedFull += uint64(n)
	case DropClosed:
		b.stats.DroppedClosed += uint64(n)
	case DropExpired:
		b.stats.DroppedExpired += uint64(n)
	case DropRefused:
		b.stats.DroppedRefused += uint64(n)
	}
}

// Requeue puts item, popped earlier, back at the front so that it is the
// next one popped, preserving order after a failed send. It is not subject
// to the limits or the policy (the item was already admitted) and works
// even after Close, so DropRemaining can still report it; the counts and
// bytes may then exceed MaxMessages and MaxBytes for a while. size must be the
// size given to Push. Requeue panics if size is negative. A requeued item may
// have been delivered already, so drop_oldest spares it.
func (b *Buffer[T]) Requeue(item T, size int) {
	b.putFront(item, size, true)
}

// PutBack is Requeue for an item popped but never sent (say, taken and then left
// for another batch): it goes back to the front as well, but drop_oldest may still
// evict it, since dropping it is a real loss that reporting describes truly.
func (b *Buffer[T]) PutBack(item T, size int) {
	b.putFront(item, size, false)
}

func (b *Buffer[T]) putFront(item T, size int, requeued bool) {
	if size < 0 {
		panic(fmt.Sprintf("buffer: putting an item back with negative size %d", size))
	}
	e := entry[T]{item: item, size: int64(size), key: b.key(item), group: b.group(item), requeued: requeued}
	b.mu.Lock()
	b.q.pushFront(e)
	b.bytes += e.size
	b.groups[e.group]++
	b.stats.Requeued++
	b.popWake.broadcast()
	b.mu.Unlock()
}

// Close stops the buffer accepting items: blocked and later Push calls
// return ErrClosed. Pop keeps returning what is left, then ErrClosed.
// Close is idempotent.
func (b *Buffer[T]) Close() {
	b.mu.Lock()
	b.closeLocked()
	b.mu.Unlock()
}

// DropRemaining closes the buffer if needed, removes every item still in it,
// reports each to OnDrop with DropClosed, and returns how many there were.
// The owner calls it when it gives up sending, after its consumers stopped.
func (b *Buffer[T]) DropRemaining() int {
	b.mu.Lock()
	b.closeLocked()
	left := make([]entry[T], 0, b.q.n)
	for b.q.n > 0 {
		left = append(left, b.remove(0))
	}
	b.stats.DroppedClosed += uint64(len(left))
	b.mu.Unlock()

	b.report(left, DropClosed)
	return len(left)
}

// WaitEmpty waits until the buffer holds no items and, in keyed mode, no
// key is held by a consumer. It returns an error wrapping ctx.Err() if ctx
// ends first. In unkeyed mode, items popped but not yet delivered are the
// consumers' business: wait for them separately.
func (b *Buffer[T]) WaitEmpty(ctx context.Context) error {
	for {
		b.mu.Lock()
		n, held := b.q.n, len(b.held)
		if n == 0 && held == 0 {
			b.mu.Unlock()
			return nil
		}
		wake := b.pushWake.wait()
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("buffer: waiting for empty (%d items, %d keys in flight): %w", n, held, ctx.Err())
		}
	}
}

// Len returns the number of items buffered.
func (b *Buffer[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.q.n
}

// Bytes returns the sum of the sizes of the items buffered.
func (b *Buffer[T]) Bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes
}

// Stats returns a snapshot of the buffer's state and counters.
func (b *Buffer[T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Len, s.Bytes = b.q.n, b.bytes
	return s
}

func (b *Buffer[T]) group(item T) string {
	if b.cfg.Group == nil {
		return ""
	}
	return b.cfg.Group(item)
}

// ungroup counts one item of group g gone. Called with mu held.
func (b *Buffer[T]) ungroup(g string) {
	if n := b.groups[g]; n > 1 {
		b.groups[g] = n - 1
	} else {
		delete(b.groups, g)
	}
}

func (b *Buffer[T]) key(item T) string {
	if b.cfg.Key == nil {
		return ""
	}
	return b.cfg.Key(item)
}

// fits reports whether an item of size fits now. Called with mu held.
func (b *Buffer[T]) fits(size int64) bool {
	return b.q.n < b.cfg.MaxMessages && b.bytes+size <= b.cfg.MaxBytes
}

// oldestUnsent returns the index of the oldest item never requeued, the one
// drop_oldest evicts. Called with mu held.
func (b *Buffer[T]) oldestUnsent() (int, bool) {
	for i := range b.q.n {
		if !b.q.at(i).requeued {
			return i, true
		}
	}
	return 0, false
}

// evictionMakesRoom reports whether evicting every item never requeued would
// let an item of size fit. Called with mu held.
func (b *Buffer[T]) evictionMakesRoom(size int64) bool {
	n, bytes := b.q.n, b.bytes
	for i := range b.q.n {
		if e := b.q.at(i); !e.requeued {
			n--
			bytes -= e.size
		}
	}
	return n < b.cfg.MaxMessages && bytes+size <= b.cfg.MaxBytes
}

// next returns the index of the item Pop should take. Called with mu held.
func (b *Buffer[T]) next() (int, bool) {
	if b.cfg.Key == nil {
		return 0, b.q.n > 0
	}
	for i := range b.q.n {
		if b.held[b.q.at(i).key] == 0 {
			return i, true
		}
	}
	return 0, false
}

// remove takes the i-th item out and wakes those waiting for room.
// Called with mu held.
func (b *Buffer[T]) remove(i int) entry[T] {
	e := b.q.removeAt(i)
	b.bytes -= e.size
	b.ungroup(e.group)
	b.pushWake.broadcast()
	return e
}

func (b *Buffer[T]) closeLocked() {
	if !b.closed {
		b.closed = true
		b.popWake.broadcast()
		b.pushWake.broadcast()
	}
}

// report hands dropped entries to OnDrop. Called without mu held.
func (b *Buffer[T]) report(es []entry[T], reason DropReason) {
	if b.cfg.OnDrop == nil {
		return
	}
	for _, e := range es {
		b.cfg.OnDrop(e.item, reason)
	}
}

// signal is a broadcast notification: waiters take the current channel
// with wait, and broadcast closes it. The channel is made only when someone
// waits, so the uncontended path does not allocate. Guarded by Buffer.mu.
type signal struct{ ch chan struct{} }

func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) broadcast() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
