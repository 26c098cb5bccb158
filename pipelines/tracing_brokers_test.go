package pipelines_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/pipelines"
)

// The trace context crosses every broker in message metadata: a message that
// arrives with a traceparent goes file -> broker sink -> broker -> broker
// source -> file, and the broker source's receive span is a child of the
// sink's publish span, in the original trace, baggage kept.
func TestTraceCrossesEveryBroker(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, b := range brokers() {
		t.Run(b.name, func(t *testing.T) {
			name := b.prepare(t)
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			defer tp.Shutdown(context.Background())
			dir := t.TempDir()
			in := `{"uuid":"` + b.name + `-m1","key":"k","metadata":{"traceparent":"00-` + traceID + `-` + parentID + `-01","baggage":"tenant=acme"},"payload":"x"}` + "\n"
			if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(in), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  b: @CONN@
pipelines:
  out_p:
    from: {type: file, dir: @DIR@, topic: in}
    to: {b: @SINK@}
  in_p:
    from: @SOURCE@
    to: {f: {type: file, dir: @DIR@, topic: out, fsync: never}}
`, "@CONN@", b.conn, "@SINK@", b.sink(name), "@SOURCE@", b.source(name), "@DIR@", dir))
			e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: tp})
			if err := e.Start(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			waitLong(t, "the message back from "+b.name, 5*time.Minute, func() bool { return e.Stats()["in_p"].Done >= 1 })
			closeEngine(t, e)

			var sink, recv *tracetest.SpanStub
			spans := exp.GetSpans()
			for i, sp := range spans {
				if sp.SpanKind == trace.SpanKindProducer && strings.Contains(sp.Name, "publish") && sp.Parent.SpanID().String() != parentID && !strings.HasPrefix(sp.Name, "file") {
					sink = &spans[i]
				}
			}
			if sink == nil {
				t.Fatalf("no %s publish span among %d spans", b.name, len(spans))
			}
			for i, sp := range spans {
				if sp.Parent.SpanID() == sink.SpanContext.SpanID() && sp.Parent.IsRemote() {
					recv = &spans[i]
				}
			}
			if sink.SpanContext.TraceID().String() != traceID {
				t.Errorf("%s: trace %s, want the file's %s", sink.Name, sink.SpanContext.TraceID(), traceID)
			}
			if recv == nil {
				t.Fatalf("no span continues %q across %s (spans: %v)", sink.Name, b.name, names(spans))
			}
			if recv.SpanContext.TraceID().String() != traceID {
				t.Errorf("%s: trace %s, want %s", recv.Name, recv.SpanContext.TraceID(), traceID)
			}
			lines := readLines(t, filepath.Join(dir, "out.jsonl"))
			if len(lines) != 1 {
				t.Fatalf("%d lines out, want 1", len(lines))
			}
			if md := lines[0].Metadata; !strings.Contains(md["traceparent"], traceID) || md["baggage"] != "tenant=acme" {
				t.Errorf("out metadata: traceparent %q, baggage %q", md["traceparent"], md["baggage"])
			}
		})
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}
