package webhook

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes() {
		out[a.Key] = a.Value
	}
	return out
}

// Each attempt is a client span, child of the message's span, with the HTTP
// client attributes; the request's traceparent names it; a failed attempt
// has error.type and an Error status; the URL's path never shows.
func TestAttemptSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())

	s := newServer(t, failFirst(1, http.StatusServiceUnavailable))
	ep := endpointFor("billing", s)
	ep.URL = s.URL + "/hooks/s3cret-token?key=also-secret"
	p, err := NewPublisher(PublisherConfig{Endpoints: []EndpointConfig{ep}, DeadLetter: &dlqRecorder{}, TracerProvider: tp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	ctx, parent := tp.Tracer("test").Start(context.Background(), "sink publish")
	msg := msgWithContext(ctx, `{"a":1}`)
	if err := p.Publish("t", msg); err != nil {
		t.Fatal(err)
	}
	parent.End()

	var attempts []sdktrace.ReadOnlySpan
	for _, sp := range exp.GetSpans().Snapshots() {
		if sp.Name() == "POST" {
			attempts = append(attempts, sp)
		}
	}
	if len(attempts) != 2 {
		t.Fatalf("%d POST spans, want 2 (a 503, then a 200)", len(attempts))
	}
	reqs := s.seen()
	for i, sp := range attempts {
		if sp.SpanKind() != trace.SpanKindClient {
			t.Errorf("attempt %d: kind %v", i, sp.SpanKind())
		}
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() || sp.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("attempt %d: parent %v, want the message's span", i, sp.Parent().SpanID())
		}
		a := attrsOf(sp)
		if got := a["url.full"].AsString(); got != s.URL {
			t.Errorf("attempt %d: url.full %q, want %q", i, got, s.URL)
		}
		if a["http.request.method"].AsString() != "POST" || a["server.address"].AsString() != "127.0.0.1" || a["server.port"].AsInt64() == 0 {
			t.Errorf("attempt %d: attributes %v", i, a)
		}
		if a["messaging.message.id"].AsString() != msg.UUID || a["loombridge.webhook.endpoint"].AsString() != "billing" {
			t.Errorf("attempt %d: attributes %v", i, a)
		}
		for _, v := range a {
			if strings.Contains(v.Emit(), "secret") {
				t.Errorf("attempt %d: an attribute shows the URL's secret: %v", i, v.Emit())
			}
		}
		want := "00-" + parent.SpanContext().TraceID().String() + "-" + sp.SpanContext().SpanID().String() + "-01"
		if got := reqs[i].header.Get("traceparent"); got != want {
			t.Errorf("attempt %d: traceparent %q, want %q (this attempt's span)", i, got, want)
		}
	}
	first, second := attrsOf(attempts[0]), attrsOf(attempts[1])
	if first["http.response.status_code"].AsInt64() != 503 || first["error.type"].AsString() != "503" || attempts[0].Status().Code != codes.Error {
		t.Errorf("first attempt: %v, status %v", first, attempts[0].Status())
	}
	if _, ok := first["http.request.resend_count"]; ok {
		t.Error("first attempt has a resend count")
	}
	if second["http.response.status_code"].AsInt64() != 200 || second["http.request.resend_count"].AsInt64() != 1 || attempts[1].Status().Code == codes.Error {
		t.Errorf("second attempt: %v, status %v", second, attempts[1].Status())
	}
	if _, ok := second["error.type"]; ok {
		t.Error("a successful attempt has error.type")
	}
}

// A request that gets no response records the (redacted) error.
func TestAttemptSpanTransportError(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	s := newServer(t, status(200))
	url := s.URL + "/secret-path"
	s.Close() // nothing listens any more
	ep := EndpointConfig{Name: "gone", URL: url, Retry: fast(), Timeout: 5e9}
	ep.Retry.MaxAttempts = 1
	dlq := &dlqRecorder{}
	p, err := NewPublisher(PublisherConfig{Endpoints: []EndpointConfig{ep}, DeadLetter: dlq, TracerProvider: tp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish("t", msgWithContext(context.Background(), "x")); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans().Snapshots()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	sp := spans[0]
	a := attrsOf(sp)
	if sp.Status().Code != codes.Error || a["error.type"].AsString() == "" || len(sp.Events()) == 0 {
		t.Fatalf("span %v status %v events %v", a, sp.Status(), sp.Events())
	}
	if _, ok := a["http.response.status_code"]; ok {
		t.Error("status code without a response")
	}
	for _, e := range sp.Events() {
		for _, ea := range e.Attributes {
			if strings.Contains(ea.Value.Emit(), "secret-path") {
				t.Errorf("event %s shows the URL's path: %s", e.Name, ea.Value.Emit())
			}
		}
	}
	if strings.Contains(sp.Status().Description, "secret-path") {
		t.Errorf("status shows the URL's path: %s", sp.Status().Description)
	}
}
