package buffer

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// mItem is the item type of the model test.
type mItem struct {
	id      int
	size    int
	key     string
	expired bool
}

// model is the obvious slice-based reference the Buffer is checked against.
type model struct {
	maxMessages int
	maxBytes    int
	policy      Policy
	keyed       bool

	items    []mItem
	requeued map[int]bool // ids last put back by Requeue (not PutBack): drop_oldest spares them
	held     map[string]bool
	stats    Stats
	dropped  []mItem
}

func (m *model) bytes() (n int) {
	for _, it := range m.items {
		n += it.size
	}
	return n
}

// push returns the error class Push should return: nil, ErrFull or
// ErrTooLarge. ok is false when Push would block.
func (m *model) push(it mItem) (err error, ok bool) {
	if it.size > m.maxBytes {
		return ErrTooLarge, true
	}
	for len(m.items) >= m.maxMessages || m.bytes()+it.size > m.maxBytes {
		switch m.policy {
		case PolicyError:
			return ErrFull, true
		case PolicyBlock:
			return nil, false
		}
		// Evicting every item never requeued must make room, or none is
		// evicted and the new item is dropped.
		n, size := 0, 0
		for _, x := range m.items {
			if m.requeued[x.id] {
				n++
				size += x.size
			}
		}
		if n >= m.maxMessages || size+it.size > m.maxBytes {
			m.dropped = append(m.dropped, it)
			m.stats.Pushed++
			m.stats.DroppedFull++
			return nil, true
		}
		i := slices.IndexFunc(m.items, func(it mItem) bool { return !m.requeued[it.id] })
		m.dropped = append(m.dropped, m.items[i])
		m.items = slices.Delete(m.items, i, i+1)
		m.stats.DroppedFull++
	}
	m.items = append(m.items, it)
	m.stats.Pushed++
	return nil, true
}

// pop mirrors Pop; ok is false when Pop would block.
func (m *model) pop() (it mItem, ok bool) {
	for {
		i := slices.IndexFunc(m.items, func(it mItem) bool { return !m.keyed || !m.held[it.key] })
		if i < 0 {
			return mItem{}, false
		}
		it = m.items[i]
		m.items = slices.Delete(m.items, i, i+1)
		if it.expired {
			m.dropped = append(m.dropped, it)
			m.stats.DroppedExpired++
			continue
		}
		if m.keyed {
			m.held[it.key] = true
		}
		m.stats.Popped++
		return it, true
	}
}

func (m *model) clone() *model {
	c := *m
	c.items = slices.Clone(m.items)
	c.held = make(map[string]bool)
	c.requeued = make(map[int]bool)
	for k, v := range m.requeued {
		c.requeued[k] = v
	}
	for k, v := range m.held {
		c.held[k] = v
	}
	c.dropped = slices.Clone(m.dropped)
	return &c
}

// FuzzModel drives a Buffer and the model with the same operations, from
// one goroutine, and checks they agree after each: items popped, errors,
// drops reported and Stats. Operations that would block are skipped.
// `go test` runs the seeds; `go test -fuzz FuzzModel` explores.
func FuzzModel(f *testing.F) {
	f.Add([]byte{3, 20, 0, 1, 9, 17, 2, 2, 3, 2, 4, 5})
	f.Add([]byte{0, 5, 1, 0, 8, 16, 24, 32, 40, 2, 10, 2, 3, 2, 4, 2, 5})
	f.Add([]byte{7, 30, 2, 200, 201, 202, 2, 3, 203, 2, 2, 4, 4, 2, 2, 5})
	f.Add([]byte{1, 0, 5, 255, 254, 253, 2, 2, 3, 3, 2, 2, 4, 4, 1, 9, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		m := &model{
			maxMessages: 1 + int(data[0]%8),
			maxBytes:    10 + int(data[1]%40),
			policy:      []Policy{PolicyBlock, PolicyError, PolicyDropOldest}[data[2]%3],
			keyed:       data[2]&4 != 0,
			held:        map[string]bool{},
			requeued:    map[int]bool{},
		}
		var got []mItem // OnDrop calls
		cfg := Config[mItem]{
			MaxMessages: m.maxMessages,
			MaxBytes:    int64(m.maxBytes),
			Policy:      m.policy,
			OnDrop:      func(it mItem, _ DropReason) { got = append(got, it) },
			Expired:     func(it mItem) bool { return it.expired },
		}
		if m.keyed {
			cfg.Key = func(it mItem) string { return it.key }
		}
		b := newBuf(t, cfg)
		ctx := context.Background()
		var inFlight []mItem
		for i, op := range data[3:] {
			switch op % 5 {
			case 0, 1: // push
				it := mItem{id: i, size: int(op>>3) % 20, key: string(rune('a' + op>>6)), expired: op&2 != 0 && op&4 != 0}
				c := m.clone()
				wantErr, ok := c.push(it)
				if !ok {
					continue
				}
				m = c
				if err := b.Push(ctx, it, it.size); !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
					t.Fatalf("op %d: Push(%+v) = %v, want %v", i, it, err, wantErr)
				}
			case 2: // pop
				c := m.clone()
				want, ok := c.pop()
				if !ok {
					continue
				}
				m = c
				it, err := b.Pop(ctx)
				if err != nil || it != want {
					t.Fatalf("op %d: Pop = %+v, %v; want %+v", i, it, err, want)
				}
				inFlight = append(inFlight, it)
			case 3: // failed send: requeue (or put back, never sent), then release the key
				if len(inFlight) == 0 {
					continue
				}
				it := inFlight[len(inFlight)-1]
				inFlight = inFlight[:len(inFlight)-1]
				sent := op&8 != 0
				if sent {
					b.Requeue(it, it.size)
				} else {
					b.PutBack(it, it.size)
				}
				b.Done(it.key)
				m.items = slices.Insert(m.items, 0, it)
				m.requeued[it.id] = sent
				m.stats.Requeued++
				delete(m.held, it.key)
			case 4: // delivered
				if len(inFlight) == 0 {
					continue
				}
				it := inFlight[0]
				inFlight = inFlight[1:]
				b.Done(it.key)
				delete(m.held, it.key)
			}
			want := m.stats
			want.Len, want.Bytes = len(m.items), int64(m.bytes())
			if s := b.Stats(); s != want {
				t.Fatalf("op %d: Stats = %+v, want %+v", i, s, want)
			}
			if !slices.Equal(got, m.dropped) {
				t.Fatalf("op %d: drops = %v, want %v", i, got, m.dropped)
			}
		}
		// Closing reports the rest, in order.
		rest := m.items
		if n := b.DropRemaining(); n != len(rest) {
			t.Fatalf("DropRemaining = %d, want %d", n, len(rest))
		}
		if !slices.Equal(got[len(got)-len(rest):], rest) {
			t.Fatalf("closed drops = %v, want %v", got[len(got)-len(rest):], rest)
		}
	})
}
