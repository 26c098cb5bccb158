package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

// patience bounds waits for what must happen; it is not a speed assertion.
const patience = time.Minute

// recordingExporter keeps the names of the spans it is given, and the size of
// each export call. While gate is set, ExportSpans waits for it to close (or
// for its context to end).
type recordingExporter struct {
	mu        sync.Mutex
	names     []string
	calls     []int
	gate      chan struct{}
	shutdowns atomic.Int32
}

func (e *recordingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.gate != nil {
		select {
		case <-e.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		e.names = append(e.names, s.Name())
	}
	e.calls = append(e.calls, len(spans))
	return nil
}

func (e *recordingExporter) Shutdown(context.Context) error {
	e.shutdowns.Add(1)
	return nil
}

func (e *recordingExporter) exported() ([]string, []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.names...), append([]int(nil), e.calls...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %s for %s", patience, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endSpans ends n spans named prefix-<i> of a provider that uses b.
func endSpans(tp *sdktrace.TracerProvider, prefix string, n int) {
	tr := tp.Tracer("test")
	for i := range n {
		_, s := tr.Start(context.Background(), fmt.Sprintf("%s-%d", prefix, i))
		s.End()
	}
}

func newTestProvider(b *batcher, opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithSpanProcessor(b)}, opts...)...)
}

func TestBatcherExportsFullBatchesAtOnceAndTheRestOnShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exp := &recordingExporter{}
	b := startBatcher(exp, time.Hour) // no timer: only full batches and Shutdown export
	tp := newTestProvider(b)
	// A full batch is exported without waiting for the timer (with it,
	// whatever was queued by the time the export began).
	endSpans(tp, "s", 2*batchSize+10)
	waitFor(t, "a full batch", func() bool { n, _ := exp.exported(); return len(n) >= batchSize })
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	names, calls := exp.exported()
	if len(names) != 2*batchSize+10 {
		t.Fatalf("exported %d spans, want %d", len(names), 2*batchSize+10)
	}
	for i, n := range names {
		if want := fmt.Sprintf("s-%d", i); n != want {
			t.Fatalf("span %d is %s, want %s (order kept, none twice)", i, n, want)
		}
	}
	for _, c := range calls {
		if c > batchSize {
			t.Fatalf("an export call carried %d spans, more than %d", c, batchSize)
		}
	}
	if got := exp.shutdowns.Load(); got != 1 {
		t.Fatalf("exporter shut down %d times, want 1", got)
	}
	// Again: the same answer, nothing more happens.
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := exp.shutdowns.Load(); got != 1 {
		t.Fatalf("exporter shut down %d times after a second Shutdown, want 1", got)
	}
}

func TestBatcherExportsOnItsTimer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exp := &recordingExporter{}
	b := startBatcher(exp, 20*time.Millisecond)
	tp := newTestProvider(b)
	defer tp.Shutdown(context.Background())
	endSpans(tp, "lone", 3)
	waitFor(t, "the timer's export", func() bool { n, _ := exp.exported(); return len(n) == 3 })
}

func TestBatcherForceFlush(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exp := &recordingExporter{}
	b := startBatcher(exp, time.Hour)
	tp := newTestProvider(b)
	defer tp.Shutdown(context.Background())
	endSpans(tp, "f", 7)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if names, _ := exp.exported(); len(names) != 7 {
		t.Fatalf("exported %d spans after ForceFlush, want 7", len(names))
	}
}

// A full queue drops spans, counts them and says so through otel's error
// handler; OnEnd never blocks meanwhile.
func TestBatcherDropsWhenQueueFullAndReportsIt(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var mu sync.Mutex
	var reported []string
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err.Error())
	}))
	defer otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))

	exp := &recordingExporter{gate: make(chan struct{})}
	b := startBatcher(exp, time.Hour)
	tp := newTestProvider(b)
	// The first full batch goes to the exporter, which holds it; then the
	// queue fills up and the rest are dropped.
	endSpans(tp, "a", batchSize)
	waitFor(t, "the first batch taken for export", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 0
	})
	const extra = 100
	endSpans(tp, "b", batchQueue+extra)
	close(exp.gate)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	names, _ := exp.exported()
	if want := batchSize + batchQueue; len(names) != want {
		t.Fatalf("exported %d spans, want %d (the first batch and a full queue)", len(names), want)
	}
	mu.Lock()
	defer mu.Unlock()
	want := fmt.Sprintf("%d spans dropped", extra)
	if len(reported) != 1 || !strings.Contains(reported[0], want) {
		t.Fatalf("reported %q, want one error saying %q", reported, want)
	}
}

// Shutdown gives up at its context's end: the export under way is cancelled,
// the exporter is still shut down, nothing is left running.
func TestBatcherShutdownBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	exp := &recordingExporter{gate: make(chan struct{})} // never opened: a collector that hangs
	b := startBatcher(exp, time.Hour)
	tp := newTestProvider(b)
	endSpans(tp, "h", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := b.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline's error", err)
	}
	if got := exp.shutdowns.Load(); got != 1 {
		t.Fatalf("exporter Shutdown called %d times, want 1 (past the deadline too: it releases connections)", got)
	}
}

// recordOnly records spans without sampling them: they must not be exported.
type recordOnly struct{}

func (recordOnly) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	return sdktrace.SamplingResult{Decision: sdktrace.RecordOnly, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}
func (recordOnly) Description() string { return "recordOnly" }

func TestBatcherSkipsUnsampledSpans(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exp := &recordingExporter{}
	b := startBatcher(exp, time.Hour)
	tp := newTestProvider(b, sdktrace.WithSampler(recordOnly{}))
	endSpans(tp, "u", 5)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if names, _ := exp.exported(); len(names) != 0 {
		t.Fatalf("exported %d unsampled spans, want none", len(names))
	}
}

// Spans ended from many goroutines at once are each exported once.
func TestBatcherConcurrentSpans(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	exp := &recordingExporter{}
	b := startBatcher(exp, time.Millisecond)
	tp := newTestProvider(b)
	const goroutines, each = 8, 250 // 2,000: within the queue (2,048), so nothing may drop
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() { endSpans(tp, fmt.Sprint("g", g), each) })
	}
	wg.Wait()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	names, _ := exp.exported()
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Fatalf("span %s exported twice", n)
		}
		seen[n] = true
	}
	if len(seen) != goroutines*each {
		t.Fatalf("exported %d distinct spans, want %d", len(seen), goroutines*each)
	}
}
