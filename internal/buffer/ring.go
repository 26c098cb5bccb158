package buffer

// entry is one buffered item with its caller-given size and, in keyed mode,
// its key (computed once, outside the lock).
type entry[T any] struct {
	item     T
	size     int64
	key      string
	group    string
	requeued bool // put back after a failed send: it may have arrived already
}

// ring is a growable circular deque. Its backing array grows by doubling
// and never shrinks. Vacated slots are zeroed so the items can be collected.
type ring[T any] struct {
	buf  []entry[T]
	head int
	n    int
}

func (r *ring[T]) idx(i int) int {
	j := r.head + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return j
}

func (r *ring[T]) at(i int) *entry[T] { return &r.buf[r.idx(i)] }

func (r *ring[T]) grow() {
	if r.n < len(r.buf) {
		return
	}
	nb := make([]entry[T], max(16, 2*len(r.buf)))
	for i := range r.n {
		nb[i] = *r.at(i)
	}
	r.buf, r.head = nb, 0
}

func (r *ring[T]) pushBack(e entry[T]) {
	r.grow()
	r.buf[r.idx(r.n)] = e
	r.n++
}

func (r *ring[T]) pushFront(e entry[T]) {
	r.grow()
	r.head--
	if r.head < 0 {
		r.head += len(r.buf)
	}
	r.buf[r.head] = e
	r.n++
}

// removeAt removes and returns the i-th entry (0 is the front). It is O(1)
// at the front and O(n-i) elsewhere.
func (r *ring[T]) removeAt(i int) entry[T] {
	e := *r.at(i)
	if i == 0 {
		*r.at(0) = entry[T]{}
		r.head = r.idx(1)
		r.n--
		return e
	}
	for j := i; j < r.n-1; j++ {
		*r.at(j) = *r.at(j + 1)
	}
	*r.at(r.n - 1) = entry[T]{}
	r.n--
	return e
}

// removeSorted removes the entries at the given ascending indices, keeping the
// order of the rest, in one pass from the first of them.
func (r *ring[T]) removeSorted(idx []int) {
	w, k := idx[0], 0
	for i := idx[0]; i < r.n; i++ {
		if k < len(idx) && idx[k] == i {
			k++
			continue
		}
		*r.at(w) = *r.at(i)
		w++
	}
	for i := w; i < r.n; i++ {
		*r.at(i) = entry[T]{}
	}
	r.n = w
}
