package main

import (
	"context"
	"io"
	"log/slog"
	"sort"

	"go.opentelemetry.io/otel"

	"github.com/loombridge/loombridge/internal/tracing"
	"github.com/loombridge/loombridge/pipelines"
)

// startTracing sets up cfg.Tracing before the engine starts: nil when it is
// off. The provider is also made otel's global one, for libraries that look
// there, and the SDK's export errors go to the log.
func startTracing(ctx context.Context, cfg *pipelines.Config, stdout io.Writer, logger *slog.Logger) (*tracing.Provider, error) {
	tp, err := tracing.Setup(ctx, cfg.Tracing, tracing.Options{Stdout: stdout, Version: version})
	if err != nil || tp == nil {
		return nil, err
	}
	otel.SetTracerProvider(tp.TracerProvider())
	otel.SetTextMapPropagator(tracing.Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing: export failed", "error", err)
	}))
	t := cfg.Tracing
	headers := make([]string, 0, len(t.Headers)) // names only: the values are secrets
	for name := range t.Headers {
		headers = append(headers, name)
	}
	sort.Strings(headers)
	args := []any{"exporter", t.Exporter, "service_name", t.ServiceName, "sampling_ratio", *t.SamplingRatio}
	if t.Exporter == tracing.ExporterOTLP {
		args = append(args, "protocol", t.Protocol, "endpoint", t.Endpoint, "insecure", t.Insecure, "headers", headers)
	}
	logger.Info("tracing on", args...)
	return tp, nil
}

// stopTracing exports the spans left within ctx, the rest of the
// shutdown_timeout: an unreachable collector cannot hold the exit longer.
func stopTracing(ctx context.Context, tp *tracing.Provider, logger *slog.Logger) {
	if err := tp.Shutdown(ctx); err != nil {
		logger.Warn("tracing: not every span was exported", "error", err)
	}
}
