package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// stdoutSpan is what the stdout exporter prints of a span.
type stdoutSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct {
		TraceID, SpanID string
		Remote          bool
	}
}

// Two real processes: this test is a Watermill app publishing through a
// Loom router with its span in the message's context (envelope); the
// loombridge binary, tracing to stdout, forwards the room to a webhook
// receiver here. The request's traceparent is in the app's trace, and
// loombridge's printed spans hang under the app's span.
func TestTraceAcrossProcesses(t *testing.T) {
	router, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer router.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := router.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var traceparents []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("traceparent"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, `
log: {stats_interval: 0}
tracing: {exporter: stdout, service_name: lb-under-test}
connections:
  ext: {addr: "`+router.Addr()+`", tls: {ca_file: "`+ca+`"}}
pipelines:
  forward:
    from: {type: loom, connection: ext, room: orders}
    to:
      hook: {type: webhook, endpoints: [{name: r, url: "`+hook.URL+`"}]}
`)
	p := start(t, "run", "-c", cfg, "--watch=false")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := router.WaitConsumers(ctx, "orders", 1); err != nil {
		t.Fatalf("loombridge did not consume: %v", err)
	}

	exp := tracetest.NewInMemoryExporter()
	appTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer appTP.Shutdown(context.Background())
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client: client.Config{Addr: router.Addr(), TLSClientConfig: router.ClientTLS()},
		Format: loom.FormatEnvelope,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sctx, span := appTP.Tracer("app").Start(context.Background(), "app publish", trace.WithSpanKind(trace.SpanKindProducer))
	msg := message.NewMessage(watermill.NewUUID(), []byte("hello"))
	msg.SetContext(sctx)
	if err := pub.Publish("orders", msg); err != nil {
		t.Fatal(err)
	}
	span.End()
	app := span.SpanContext()

	waitUntil(t, "the webhook request", func() bool { mu.Lock(); defer mu.Unlock(); return len(traceparents) > 0 })
	mu.Lock()
	tp := traceparents[0]
	mu.Unlock()
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != app.TraceID().String() {
		t.Fatalf("receiver's traceparent %q, want one in the app's trace %s", tp, app.TraceID())
	}

	// SIGTERM: the spans still batched are printed before the exit.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	spans := map[string]stdoutSpan{}
	sc := bufio.NewScanner(strings.NewReader(p.log.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s stdoutSpan
		if strings.HasPrefix(sc.Text(), "{") && json.Unmarshal(sc.Bytes(), &s) == nil && s.Name != "" {
			spans[s.Name] = s
		}
	}
	recv, ok := spans["loom receive orders"]
	if !ok {
		t.Fatalf("no span \"loom receive orders\" printed; got %v", spans)
	}
	if recv.Parent.TraceID != app.TraceID().String() || recv.Parent.SpanID != app.SpanID().String() || !recv.Parent.Remote {
		t.Errorf("loom receive orders: parent %+v, want the app's span %s (remote)", recv.Parent, app.SpanID())
	}
	post, ok := spans["POST"]
	if !ok || post.SpanContext.SpanID != parts[2] {
		t.Errorf("POST span %+v; the receiver's traceparent names %s", post, parts[2])
	}
	if !strings.Contains(p.log.String(), "lb-under-test") {
		t.Error("service_name not in the printed spans")
	}
}
