package pipelines_test

import (
	"context"
	"fmt"
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
	type hop struct{ name, conn, sink, source string }
	var hops []hop
	s := suffix()
	needBroker(t, "nats", natsAddr)
	natsStream(t, "LBTEST_TR_"+s)
	hops = append(hops, hop{"nats", `{type: nats, url: "nats://` + natsAddr + `"}`,
		fmt.Sprintf(`{type: nats, connection: b, subject: lbtest.tr.%s, stream: LBTEST_TR_%s}`, s, s),
		fmt.Sprintf(`{type: nats, connection: b, subject: lbtest.tr.%s, stream: LBTEST_TR_%s, durable: tr_%s}`, s, s, s)})
	needBroker(t, "rabbitmq", rabbitAddr)
	rabbitQueue(t, "lbtest_tr_"+s)
	hops = append(hops, hop{"amqp", `{type: amqp, amqp_uri: "` + rabbitURI + `"}`,
		`{type: amqp, connection: b, queue: lbtest_tr_` + s + `}`, `{type: amqp, connection: b, queue: lbtest_tr_` + s + `}`})
	for _, b := range brokers() {
		name := uniqueName(t)
		t.Cleanup(func() { b.drop(t, name) })
		hops = append(hops, hop{b.name, b.conn, b.sink(name), b.source(name)})
	}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, h := range hops {
		t.Run(h.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			defer tp.Shutdown(context.Background())
			dir := t.TempDir()
			in := `{"uuid":"` + h.name + `-m1","key":"k","metadata":{"traceparent":"00-` + traceID + `-` + parentID + `-01","baggage":"tenant=acme"},"payload":"x"}` + "\n"
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
`, "@CONN@", h.conn, "@SINK@", h.sink, "@SOURCE@", h.source, "@DIR@", dir))
			e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: tp})
			if err := e.Start(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			waitLong(t, "the message back from "+h.name, 5*time.Minute, func() bool { return e.Stats()["in_p"].Done >= 1 })
			closeEngine(t, e)

			var sink, recv *tracetest.SpanStub
			spans := exp.GetSpans()
			for i, sp := range spans {
				if sp.SpanKind == trace.SpanKindProducer && strings.Contains(sp.Name, "publish") && sp.Parent.SpanID().String() != parentID && !strings.HasPrefix(sp.Name, "file") {
					sink = &spans[i]
				}
			}
			if sink == nil {
				t.Fatalf("no %s publish span among %d spans", h.name, len(spans))
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
				t.Fatalf("no span continues %q across %s (spans: %v)", sink.Name, h.name, names(spans))
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
