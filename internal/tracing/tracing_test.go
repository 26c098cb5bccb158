package tracing

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

func TestSetDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if c.Exporter != "none" || c.Protocol != "grpc" || c.SamplingRatio == nil || *c.SamplingRatio != 1 || c.ServiceName != "loombridge" {
		t.Fatalf("defaults %+v", c)
	}
	if c.Enabled() {
		t.Fatal("enabled by default")
	}
	c = Config{Exporter: "otlp", SamplingRatio: ratio(0)}
	c.SetDefaults()
	if *c.SamplingRatio != 0 {
		t.Fatalf("a given sampling_ratio: 0 became %v", c.SamplingRatio)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{},
		{Exporter: "stdout"},
		{Exporter: "otlp", Protocol: "http", Endpoint: "https://collector.example:4318/v1/traces", Headers: map[string]string{"x-api-key": "k"}, SamplingRatio: ratio(0.25)},
		{Exporter: "otlp", Endpoint: "collector:4317", Insecure: true, SamplingRatio: ratio(1)},
		{Exporter: "otlp", Endpoint: "[::1]:4317"},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	err := Config{Exporter: "zipkin", SamplingRatio: ratio(-1), Headers: map[string]string{"X-Key": "secret\nvalue"}}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{"exporter: ", "sampling_ratio: ", "headers[X-Key]: "} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "secret") {
		t.Errorf("error %q shows a header value", got)
	}
	if err := (Config{Endpoint: "https://user:pw@collector"}).Validate(); err != nil {
		t.Errorf("URL endpoint with user info: %v", err)
	}
	if err := (Config{Endpoint: "ftp://user:pw@collector"}).Validate(); err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("bad scheme: error %v (must exist and not show the password)", err)
	}
}

func TestSetupNoneIsOff(t *testing.T) {
	p, err := Setup(context.Background(), Config{}, Options{})
	if err != nil || p != nil {
		t.Fatalf("Setup(none) = %v, %v; want nil, nil", p, err)
	}
	if p.TracerProvider() != nil {
		t.Fatal("tracer provider of tracing off is not nil")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupRefusesInvalid(t *testing.T) {
	if _, err := Setup(context.Background(), Config{Exporter: "otlp", SamplingRatio: ratio(2)}, Options{}); err == nil {
		t.Fatal("no error")
	}
}

func TestStdoutExporter(t *testing.T) {
	var out testkit.Buffer
	p, err := Setup(context.Background(), Config{Exporter: "stdout", ServiceName: "svc-under-test"}, Options{Stdout: &out, Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.TracerProvider().Tracer("test").Start(context.Background(), "hello-span")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Name":"hello-span"`, "svc-under-test", "v9.9.9"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %s:\n%s", want, out.String())
		}
	}
}

// silentCollector accepts connections and never answers, as a collector
// behind a black-holing firewall would; nothing is accepted for grpc's
// refusals to matter.
func silentCollector(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// With the collector not answering, the OTLP exporters wait (and retry)
// until the context given to Shutdown ends, or longer; Shutdown returns when
// it ends.
func TestShutdownBoundedWhenCollectorUnreachable(t *testing.T) {
	for _, proto := range []string{"grpc", "http"} {
		t.Run(proto, func(t *testing.T) {
			p, err := Setup(context.Background(), Config{
				Exporter: "otlp", Protocol: proto, Endpoint: silentCollector(t), Insecure: true,
				Headers: map[string]string{"x-api-key": "k"},
			}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, span := p.TracerProvider().Tracer("test").Start(context.Background(), "lost")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(ctx) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Shutdown reported no error though nothing was exported")
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown: %v, want the context's deadline", err)
				}
			case <-time.After(2 * time.Minute): // generous: the bound is the 300ms context
				t.Fatal("Shutdown did not return after its context ended")
			}
		})
	}
}

func TestInjectExtractMetadata(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=x")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	m, _ := baggage.NewMember("tenant", "acme")
	b, _ := baggage.New(m)
	ctx = baggage.ContextWithBaggage(ctx, b)

	md := message.Metadata{"other": "kept"}
	Inject(ctx, md)
	if got := md.Get("traceparent"); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent %q", got)
	}
	if md.Get("tracestate") != "vendor=x" || md.Get("baggage") != "tenant=acme" || md.Get("other") != "kept" {
		t.Fatalf("metadata %v", md)
	}
	out := Extract(context.Background(), md)
	got := trace.SpanContextFromContext(out)
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsRemote() || got.TraceState().String() != "vendor=x" {
		t.Fatalf("extracted %+v", got)
	}
	if baggage.FromContext(out).Member("tenant").Value() != "acme" {
		t.Fatal("baggage lost")
	}
	if Extract(context.Background(), message.Metadata{}) != context.Background() {
		t.Fatal("Extract of nothing changed the context")
	}
}

func ratio(r float64) *float64 { return &r }
