package buffer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// gItem is "group/key/n": group and key are what the test's Group and Key read.
func gCfg() Config[string] {
	return Config[string]{
		Group: func(s string) string { return strings.SplitN(s, "/", 2)[0] },
		Key: func(s string) string {
			g, k, _ := strings.Cut(s, "/")
			k, _, _ = strings.Cut(k, "/")
			return g + "/" + k
		},
	}
}

func take(t *testing.T, b *Buffer[string], max int, eligible func(string) bool) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := b.TakeBatch(ctx, max, eligible, nil)
	if err != nil {
		t.Fatalf("TakeBatch: %v", err)
	}
	return got
}

// TestTakeBatchIgnoresInterleaving: a batch takes its group's items wherever they
// are; items of another group in between do not cut it short.
func TestTakeBatchIgnoresInterleaving(t *testing.T) {
	b := newBuf(t, gCfg())
	for i := range 4 {
		mustPush(t, b, "a/k"+string(rune('0'+i))+"/1", 1)
		mustPush(t, b, "b/k"+string(rune('0'+i))+"/1", 1)
	}
	if got, want := take(t, b, 10, nil), []string{"a/k0/1", "a/k1/1", "a/k2/1", "a/k3/1"}; !slices.Equal(got, want) {
		t.Fatalf("first batch %v, want %v", got, want)
	}
	if got := take(t, b, 2, nil); !slices.Equal(got, []string{"b/k0/1", "b/k1/1"}) {
		t.Fatalf("second batch %v", got)
	}
	if got := take(t, b, 10, nil); !slices.Equal(got, []string{"b/k2/1", "b/k3/1"}) {
		t.Fatalf("third batch %v", got)
	}
	if st := b.Stats(); st.Len != 0 || st.Bytes != 0 || st.Popped != 8 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTakeBatchKeys: a batch takes one item per key, as Pop; a key held by
// another consumer is passed over with all its items; Done frees it.
func TestTakeBatchKeys(t *testing.T) {
	b := newBuf(t, gCfg())
	for _, s := range []string{"a/x/1", "a/y/1", "a/x/2", "a/y/2", "a/z/1"} {
		mustPush(t, b, s, 1)
	}
	first, err := b.Pop(context.Background()) // holds a/x
	if err != nil || first != "a/x/1" {
		t.Fatalf("Pop = %q, %v", first, err)
	}
	if got := take(t, b, 10, nil); !slices.Equal(got, []string{"a/y/1", "a/z/1"}) {
		t.Fatalf("batch %v: want a/y's first item and a/z's, a/x held", got)
	}
	b.Done("a/y")
	b.Done("a/z")
	if got := take(t, b, 10, nil); !slices.Equal(got, []string{"a/y/2"}) {
		t.Fatalf("batch %v: want a/y/2, a/x still held", got)
	}
	ch := async(func() error {
		got := take(t, b, 10, nil)
		if !slices.Equal(got, []string{"a/x/2"}) {
			return errors.New("got " + strings.Join(got, ","))
		}
		return nil
	})
	waitWaiting(t, b, &b.popWake)
	b.Done("a/x")
	if err := recv(t, ch); err != nil {
		t.Fatal(err)
	}
}

// TestTakeBatchEligible: groups eligible reports false are not taken, and Wake
// makes a waiting TakeBatch look again.
func TestTakeBatchEligible(t *testing.T) {
	b := newBuf(t, gCfg())
	mustPush(t, b, "stuck/k/1", 1)
	mustPush(t, b, "ok/k/1", 1)
	allow := map[string]bool{"ok": true}
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	eligible := func(g string) bool { <-mu; defer func() { mu <- struct{}{} }(); return allow[g] }
	if got := take(t, b, 10, eligible); !slices.Equal(got, []string{"ok/k/1"}) {
		t.Fatalf("batch %v", got)
	}
	ch := async(func() error {
		if got := take(t, b, 10, eligible); !slices.Equal(got, []string{"stuck/k/1"}) {
			return errors.New("got " + strings.Join(got, ","))
		}
		return nil
	})
	waitWaiting(t, b, &b.popWake)
	<-mu
	allow["stuck"] = true
	mu <- struct{}{}
	b.Wake()
	if err := recv(t, ch); err != nil {
		t.Fatal(err)
	}
}

// TestTakeBatchExpiredAndClosed: expired items are dropped on the way; a closed
// empty buffer returns ErrClosed.
func TestTakeBatchExpiredAndClosed(t *testing.T) {
	var rec recorder[string]
	cfg := gCfg()
	cfg.OnDrop = rec.onDrop
	cfg.Expired = func(s string) bool { return strings.HasSuffix(s, "/old") }
	b := newBuf(t, cfg)
	for _, s := range []string{"a/x/old", "a/y/1", "b/z/old"} {
		mustPush(t, b, s, 1)
	}
	if got := take(t, b, 10, nil); !slices.Equal(got, []string{"a/y/1"}) {
		t.Fatalf("batch %v", got)
	}
	if d := rec.get(); len(d) != 1 || d[0].item != "a/x/old" || d[0].reason != DropExpired {
		t.Fatalf("drops %v", d)
	}
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := b.TakeBatch(ctx, 10, nil, nil); !errors.Is(err, ErrClosed) || len(got) != 0 {
		t.Fatalf("TakeBatch on a closed buffer: %v, %v (b/z/old expires on the way)", got, err)
	}
	if st := b.Stats(); st.DroppedExpired != 2 || st.Len != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDropGroupRefused: DropGroup drops one group's items, reports and counts
// them as refused, and leaves the others.
func TestDropGroupRefused(t *testing.T) {
	if DropRefused != "refused" {
		t.Fatal("DropRefused is not \"refused\"")
	}
	var rec recorder[string]
	cfg := gCfg()
	cfg.OnDrop = rec.onDrop
	b := newBuf(t, cfg)
	for _, s := range []string{"a/x/1", "b/x/1", "a/y/1", "b/y/1"} {
		mustPush(t, b, s, 2)
	}
	if n := b.DropGroup("a", DropRefused); n != 2 {
		t.Fatalf("dropped %d, want 2", n)
	}
	d := rec.get()
	if len(d) != 2 || d[0] != (drop[string]{"a/x/1", DropRefused}) || d[1] != (drop[string]{"a/y/1", DropRefused}) {
		t.Fatalf("drops %v", d)
	}
	st := b.Stats()
	if st.Len != 2 || st.Bytes != 4 || st.DroppedRefused != 2 {
		t.Fatalf("stats %+v", st)
	}
	if st.Len != int(st.Pushed+st.Requeued-st.Popped-st.DroppedFull-st.DroppedClosed-st.DroppedExpired-st.DroppedRefused) {
		t.Fatalf("stats do not add up: %+v", st)
	}
	if got := take(t, b, 10, nil); !slices.Equal(got, []string{"b/x/1", "b/y/1"}) {
		t.Fatalf("batch %v", got)
	}
}

// TestTakeBatchRemovesFromTheMiddle: taking scattered items keeps the rest in
// order, across the ring's wrap.
func TestTakeBatchRemovesFromTheMiddle(t *testing.T) {
	b := newBuf(t, gCfg())
	for i := range 10 { // move head so that the ring wraps
		mustPush(t, b, "z/k/"+string(rune('a'+i)), 1)
	}
	for range 10 {
		b.TryPop()
		b.Done("z/k")
	}
	var want []string
	for i := range 20 {
		g := "a"
		if i%3 == 0 {
			g = "b"
		}
		s := g + "/k" + string(rune('a'+i)) + "/1"
		mustPush(t, b, s, 1)
		if g == "a" {
			want = append(want, s)
		}
	}
	if got := take(t, b, 1, func(g string) bool { return g == "b" }); len(got) != 1 {
		t.Fatal(got)
	}
	rest := take(t, b, 100, func(g string) bool { return g == "b" })
	if len(rest) != 6 {
		t.Fatalf("b: %v", rest)
	}
	if got := take(t, b, 100, nil); !slices.Equal(got, want) {
		t.Fatalf("a after b was taken from between: %v, want %v", got, want)
	}
}
