package pipelines_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// hookReceiver is a webhook receiver keeping each request's trace headers.
type hookReceiver struct {
	mu      sync.Mutex
	headers []http.Header
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.headers = append(h.headers, r.Header.Clone())
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) seen() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]http.Header(nil), h.headers...)
}

// spansByName indexes finished spans; a name seen twice fails the test.
func spansByName(t *testing.T, exp *tracetest.InMemoryExporter) map[string]tracetest.SpanStub {
	t.Helper()
	out := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if _, dup := out[s.Name]; dup {
			t.Fatalf("span %q twice", s.Name)
		}
		out[s.Name] = s
	}
	return out
}

func attrMap(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes {
		out[a.Key] = a.Value
	}
	return out
}

// Two tracer providers stand for two processes: a Watermill app publishes
// through Loom (envelope) with its span in the message's context; loombridge,
// with a provider of its own, relays the room to another room and from there
// to a webhook. The receiver's traceparent is in the app's trace, and the
// spans form the tree the README documents.
func TestTraceAcrossLoomPipelinesAndWebhook(t *testing.T) {
	appExp, lbExp := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	appTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(appExp))
	lbTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(lbExp))
	defer appTP.Shutdown(context.Background())
	defer lbTP.Shutdown(context.Background())

	recv := &hookReceiver{}
	hook := httptest.NewServer(recv)
	defer hook.Close()
	cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
pipelines:
  bridge:
    from: {type: loom, connection: local, room: orders}
    to:
      relay: {type: loom, connection: local, room: relay, format: envelope}
  notify:
    from: {type: loom, connection: local, room: relay}
    to:
      hook: {type: webhook, endpoints: [{name: receiver, url: "@URL@/hook/secret-path"}]}
`, "@URL@", hook.URL))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: lbTP})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	defer closeEngine(t, e)
	srv, ok := e.EmbeddedServer("local")
	if !ok {
		t.Fatal("no embedded router")
	}

	// The app: its own provider, its span in the message's context, baggage
	// in the metadata (the envelope carries all metadata).
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client: client.Config{Addr: srv.Addr(), TLSClientConfig: srv.ClientTLS()},
		Format: loom.FormatEnvelope,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	member, _ := baggage.NewMember("tenant", "acme")
	bag, _ := baggage.New(member)
	ctx := baggage.ContextWithBaggage(context.Background(), bag)
	ctx, appSpan := appTP.Tracer("app").Start(ctx, "app publish orders", trace.WithSpanKind(trace.SpanKindProducer))
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":7}`))
	msg.Metadata.Set(loom.MetadataKey, "customer-7")
	propagation.Baggage{}.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	msg.SetContext(ctx)
	if err := pub.Publish("orders", msg); err != nil {
		t.Fatal(err)
	}
	appSpan.End()
	appSC := appSpan.SpanContext()

	// Each pipeline's receive span covers its handling too: no span between
	// a receive and its sinks' publish spans.
	names := []string{
		"loom receive orders", "loom publish relay",
		"loom receive relay", "webhook publish relay", "POST",
	}
	deadline := time.Now().Add(2 * time.Minute) // generous: a shared machine
	for len(lbExp.GetSpans()) < len(names) || len(recv.seen()) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes: %d loombridge spans, %d webhook requests", len(lbExp.GetSpans()), len(recv.seen()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(appExp.GetSpans()); n != 1 {
		t.Errorf("the app's provider has %d spans, want its own 1: the providers are mixed", n)
	}
	spans := spansByName(t, lbExp)
	if len(spans) != len(names) {
		t.Errorf("spans %v, want %v", spanNames(spans), names)
	}
	parent := appSC.SpanID()
	for _, name := range names {
		s, ok := spans[name]
		if !ok {
			t.Fatalf("no span %q; have %v", name, spanNames(spans))
		}
		if s.SpanContext.TraceID() != appSC.TraceID() {
			t.Errorf("%s: trace %s, want the app's %s", name, s.SpanContext.TraceID(), appSC.TraceID())
		}
		if s.Parent.SpanID() != parent {
			t.Errorf("%s: parent %s, want %s", name, s.Parent.SpanID(), parent)
		}
		if s.Status.Code == codes.Error {
			t.Errorf("%s: status %v", name, s.Status)
		}
		parent = s.SpanContext.SpanID()
	}
	if !spans["loom receive orders"].Parent.IsRemote() {
		t.Error("loom receive orders: its parent (the app's span) is not remote")
	}
	wantKinds := map[string]trace.SpanKind{
		"loom receive orders": trace.SpanKindConsumer, "loom publish relay": trace.SpanKindProducer,
		"webhook publish relay": trace.SpanKindProducer, "POST": trace.SpanKindClient, "loom receive relay": trace.SpanKindConsumer,
	}
	for name, k := range wantKinds {
		if spans[name].SpanKind != k {
			t.Errorf("%s: kind %v, want %v", name, spans[name].SpanKind, k)
		}
	}
	a := attrMap(spans["loom receive orders"])
	for k, want := range map[attribute.Key]string{
		"messaging.system": "loom", "messaging.destination.name": "orders", "messaging.operation.type": "receive",
		"messaging.message.id": msg.UUID, "loom.key": "customer-7", "loombridge.pipeline": "bridge",
	} {
		if got := a[k].Emit(); got != want {
			t.Errorf("loom receive orders: %s = %q, want %q", k, got, want)
		}
	}
	if a["loom.id"].Type() != attribute.INT64 {
		t.Errorf("loom receive orders: loom.id %v", a["loom.id"])
	}
	a = attrMap(spans["loom publish relay"])
	if a["messaging.destination.name"].AsString() != "relay" || a["loombridge.sink"].AsString() != "relay" || a["messaging.message.id"].AsString() != msg.UUID {
		t.Errorf("loom publish relay: %v", a)
	}
	if got := attrMap(spans["POST"])["url.full"].AsString(); got != hook.URL {
		t.Errorf("POST: url.full %q, want %q", got, hook.URL)
	}

	h := recv.seen()[0]
	post := spans["POST"].SpanContext
	if want := "00-" + appSC.TraceID().String() + "-" + post.SpanID().String() + "-01"; h.Get("traceparent") != want {
		t.Errorf("receiver's traceparent %q, want %q", h.Get("traceparent"), want)
	}
	if h.Get("baggage") != "tenant=acme" {
		t.Errorf("receiver's baggage %q, want tenant=acme", h.Get("baggage"))
	}
}

func spanNames(m map[string]tracetest.SpanStub) string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	return strings.Join(out, ", ")
}

// A failing sink's error is on its span (an event per attempt) and on the
// receive span, which covers the pipeline's handling. Without a dead_letter the message is nacked and comes again.
func TestTraceRecordsSinkErrors(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) }))
	defer hook.Close()
	cfg := parse(t, fill(`
log: {stats_interval: 0}
pipelines:
  p:
    from: {type: generate, count: 1, interval: 0}
    to:
      hook: {type: webhook, endpoints: [{name: r, url: "@URL@"}]}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
`, "@URL@", hook.URL))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: tp})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.Stats()["p"].Failed < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", e.Stats()["p"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeEngine(t, e)
	var sinkSpan, recvSpan *tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		switch {
		case s.Name == "webhook publish p" && sinkSpan == nil:
			sinkSpan = &s
		case s.Name == "generate receive p" && recvSpan == nil:
			recvSpan = &s
		}
	}
	if sinkSpan == nil || recvSpan == nil {
		t.Fatalf("spans: %v", exp.GetSpans())
	}
	if recvSpan.SpanKind != trace.SpanKindConsumer || recvSpan.Status.Code != codes.Error || !strings.Contains(recvSpan.Status.Description, "sinks failed") || len(recvSpan.Events) != 1 {
		t.Errorf("receive span kind %v, status %+v, events %+v", recvSpan.SpanKind, recvSpan.Status, recvSpan.Events)
	}
	if sinkSpan.Parent.SpanID() != recvSpan.SpanContext.SpanID() {
		t.Errorf("sink span's parent %s, want the receive span %s", sinkSpan.Parent.SpanID(), recvSpan.SpanContext.SpanID())
	}
	if sinkSpan.Status.Code != codes.Error {
		t.Errorf("sink span status %+v", sinkSpan.Status)
	}
	if n := len(sinkSpan.Events); n != 2 {
		t.Errorf("sink span has %d events, want one per attempt (2): %+v", n, sinkSpan.Events)
	}
}

// Any source's metadata may carry the trace context (as the broker kinds'
// do): the receive span continues it, and what a sink publishes carries its
// own span in the metadata, baggage kept.
// traceID and spanID are the remote parent in the line writeTracedLine writes.
const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

// writeTracedLine writes dir/in.jsonl: one message, m1, whose metadata holds
// a traceparent (traceID, spanID) and a baggage entry.
func writeTracedLine(t *testing.T, dir string) {
	t.Helper()
	in := `{"uuid":"m1","key":"k","metadata":{"traceparent":"00-` + traceID + `-` + spanID + `-01","baggage":"tenant=acme"},"payload":"x"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTraceContextInMetadataOfAnySource(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	dir := t.TempDir()
	writeTracedLine(t, dir)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
pipelines:
  p:
    from: {type: file, dir: @DIR@, topic: in}
    to:
      out: {type: file, dir: @DIR@, topic: out, fsync: never}
`, "@DIR@", dir))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: tp})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.Stats()["p"].Done < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", e.Stats()["p"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeEngine(t, e)
	spans := spansByName(t, exp)
	recv, pub := spans["file receive in"], spans["file publish out"]
	if recv.Parent.TraceID().String() != traceID || recv.Parent.SpanID().String() != spanID || !recv.Parent.IsRemote() {
		t.Errorf("file receive in: parent %v, want the metadata's", recv.Parent)
	}
	if pub.SpanContext.TraceID().String() != traceID {
		t.Errorf("file publish out: trace %s", pub.SpanContext.TraceID())
	}
	lines := readLines(t, filepath.Join(dir, "out.jsonl"))
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	md := lines[0].Metadata
	if want := "00-" + traceID + "-" + pub.SpanContext.SpanID().String() + "-01"; md["traceparent"] != want {
		t.Errorf("published traceparent %q, want %q (the sink's span)", md["traceparent"], want)
	}
	if md["baggage"] != "tenant=acme" {
		t.Errorf("published baggage %q", md["baggage"])
	}
}

// The trace crosses a buffer: the store keeps the receive span's context
// with the message, and the delivery from the sink's queue continues it,
// so the sink's span is in the source's trace, under the buffer's span.
func TestTraceContextSurvivesTheBuffer(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	dir := t.TempDir()
	writeTracedLine(t, dir)
	cfg := parse(t, fill(`
log: {stats_interval: 0}
buffers: {dir: @DIR@/buffer}
pipelines:
  p:
    from: {type: file, dir: @DIR@, topic: in}
    buffer: {}
    to:
      out: {type: file, dir: @DIR@, topic: out, fsync: never}
`, "@DIR@", dir))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: testLogger(t), TracerProvider: tp})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message in the sink", func() bool { return e.Stats()["p"].Sinks["out"].Published == 1 })
	closeEngine(t, e)
	spans := spansByName(t, exp)
	recv, deliver, pub := spans["file receive in"], spans["buffer receive in"], spans["file publish out"]
	if recv.Parent.TraceID().String() != traceID || recv.Parent.SpanID().String() != spanID {
		t.Errorf("file receive in: parent %v, want the metadata's", recv.Parent)
	}
	if deliver.Parent.SpanID() != recv.SpanContext.SpanID() || deliver.SpanContext.TraceID().String() != traceID {
		t.Errorf("buffer receive in: parent %v, want the source's receive span %v (spans: %s)", deliver.Parent, recv.SpanContext, spanNames(spans))
	}
	if pub.Parent.SpanID() != deliver.SpanContext.SpanID() || pub.SpanContext.TraceID().String() != traceID {
		t.Errorf("file publish out: parent %v, want the buffer's span", pub.Parent)
	}
	lines := readLines(t, filepath.Join(dir, "out.jsonl"))
	if len(lines) != 1 || lines[0].UUID != "m1" || lines[0].Metadata["baggage"] != "tenant=acme" {
		t.Fatalf("sink got %+v: UUID and metadata must cross the buffer", lines)
	}
	if want := "00-" + traceID + "-" + pub.SpanContext.SpanID().String() + "-01"; lines[0].Metadata["traceparent"] != want {
		t.Errorf("published traceparent %q, want %q (the sink's span)", lines[0].Metadata["traceparent"], want)
	}
}
