// Package tracing sets up OpenTelemetry tracing for loombridge from the
// tracing: section of its configuration, and carries W3C trace context in
// Watermill message metadata.
//
// Setup returns a Provider whose TracerProvider is given to the engine
// explicitly (pipelines.EngineOptions.TracerProvider); nothing here needs the
// global provider, so several can coexist in one process (tests do: one stands
// for the publishing app, one for loombridge).
package tracing

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator carries traceparent, tracestate and baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Inject writes the trace context (and baggage) of ctx into md, replacing
// what md carried. Every metadata-carrying transport (Loom envelope, NATS,
// AMQP, Redis, SQL) then takes it along.
func Inject(ctx context.Context, md message.Metadata) {
	Propagator.Inject(ctx, propagation.MapCarrier(md))
}

// Extract returns ctx with the trace context (and baggage) found in md; ctx
// as it is when md carries none.
func Extract(ctx context.Context, md message.Metadata) context.Context {
	return Propagator.Extract(ctx, propagation.MapCarrier(md))
}

// Options are what Setup takes besides the config.
type Options struct {
	// Stdout is where the stdout exporter writes; default os.Stdout.
	Stdout io.Writer
	// Version is the service.version resource attribute; empty leaves it out.
	Version string
	// Exporter, when set, replaces the one the config names (tests,
	// benchmarks); spans still go through the batching span processor.
	Exporter sdktrace.SpanExporter
}

// Provider is the tracing set up by Setup. A nil *Provider is tracing off.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// Setup builds the tracer provider cfg asks for; with exporter none (and no
// Options.Exporter) it returns nil, tracing off. Zero values of cfg stand for
// the defaults. The OTLP exporters connect lazily: an unreachable
// collector is no error here (its spans are dropped, and the SDK reports it
// through otel's error handler).
func Setup(ctx context.Context, cfg Config, opts Options) (*Provider, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	exp := opts.Exporter
	if exp == nil {
		var err error
		switch cfg.Exporter {
		case ExporterNone:
			return nil, nil
		case ExporterStdout:
			w := opts.Stdout
			if w == nil {
				w = os.Stdout
			}
			exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
		case ExporterOTLP:
			exp, err = otlpExporter(ctx, cfg)
		}
		if err != nil {
			return nil, fmt.Errorf("tracing: %s exporter: %w", cfg.Exporter, err)
		}
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName)}
	if opts.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(opts.Version))
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, attrs...))
	if err != nil {
		res = resource.NewWithAttributes(semconv.SchemaURL, attrs...)
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(newBatcher(exp)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*cfg.SamplingRatio))),
	)
	return &Provider{sdk: sdk}, nil
}

func otlpExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	if cfg.Protocol == ProtocolHTTP {
		return otlptracehttp.New(ctx, otlpOptions(cfg, otlptracehttp.WithEndpointURL, otlptracehttp.WithEndpoint,
			otlptracehttp.WithHeaders, otlptracehttp.WithInsecure)...)
	}
	return otlptracegrpc.New(ctx, otlpOptions(cfg, otlptracegrpc.WithEndpointURL, otlptracegrpc.WithEndpoint,
		otlptracegrpc.WithHeaders, otlptracegrpc.WithInsecure)...)
}

// otlpOptions turns cfg into the options of either OTLP exporter, given its
// option constructors (the two packages have the same ones, of different types).
func otlpOptions[O any](cfg Config, withURL, withEndpoint func(string) O, withHeaders func(map[string]string) O, withInsecure func() O) []O {
	var o []O
	switch {
	case strings.Contains(cfg.Endpoint, "://"):
		o = append(o, withURL(cfg.Endpoint))
	case cfg.Endpoint != "":
		o = append(o, withEndpoint(cfg.Endpoint))
	}
	if len(cfg.Headers) > 0 {
		o = append(o, withHeaders(cfg.Headers))
	}
	if cfg.Insecure {
		o = append(o, withInsecure())
	}
	return o
}

// TracerProvider is what to give the engine; nil when tracing is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil {
		return nil
	}
	return p.sdk
}

// Shutdown exports the spans still buffered and stops the exporter, within
// ctx. The OTLP exporters' own Shutdown waits for ctx's deadline when the
// collector cannot be reached; this returns when ctx ends regardless, with
// the spans not yet exported dropped. Give it a deadline.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- p.sdk.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("tracing: shutdown: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tracing: shutdown: spans not exported in time were dropped: %w", context.Cause(ctx))
	}
}
