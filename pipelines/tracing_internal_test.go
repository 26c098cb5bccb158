package pipelines

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/loombridge/loombridge/internal/tracing"
)

// BenchmarkTracePath is what tracing adds to one message of a loom -> file
// pipeline, alone: the receive span (context extracted from the metadata),
// the sink's publish span, the attempt's copy with the context injected, both
// spans ended into the batch span processor of tracing.Setup (sampling 1.0,
// an exporter that counts and drops). Off runs the same calls with tracing off. Without
// the network and the file, its figures are steadier than
// BenchmarkLoomToFileTracing's on a loaded machine, and ns/op on against off
// is the CPU tracing costs a message.
func BenchmarkTracePath(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "tracing=off"
		var tr *tracer
		exp := &countExporter{}
		if on {
			name = "tracing=on"
			tp, err := tracing.Setup(context.Background(), tracing.Config{Exporter: tracing.ExporterOTLP}, tracing.Options{Exporter: exp})
			if err != nil {
				b.Fatal(err)
			}
			defer tp.Shutdown(context.Background())
			tr = newTracer(tp.TracerProvider())
		}
		b.Run(name, func(b *testing.B) {
			r := &runner{name: "bridge", pl: &Pipeline{From: &Endpoint{Type: "loom"}}, topic: "bench", tr: tr, spanName: "loom receive bench"}
			s := &sink{name: "archive", ep: &Endpoint{Type: "file"}, topic: "bench", tr: tr, spanName: "file publish bench"}
			payload := make([]byte, 1024)
			exp.spans.Store(0)
			b.ReportAllocs()
			cpu0 := processCPU(b)
			for b.Loop() {
				// As the Loom source delivers it: a key and an id in the metadata.
				msg := message.NewMessage(watermill.NewUUID(), payload)
				msg.Metadata["loom_key"] = msg.UUID
				msg.Metadata["loom_id"] = "12345"
				span := r.traceProcess(msg)
				m, ps := s.tracePublish(msg)
				c := m.Copy() // as attempt does
				c.SetContext(m.Context())
				s.injectTrace(c)
				endSpan(ps, nil, false)
				endSpan(span, nil, true)
			}
			// The process's CPU: the batch processor's goroutine and the
			// garbage collector included, which wall time on a loaded machine
			// blurs.
			b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			if on {
				// Fewer than 2 when the processor's queue dropped some: a
				// cheaper path than the pipeline's.
				b.ReportMetric(float64(exp.spans.Load())/float64(b.N), "spans/op")
			}
		})
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countExporter counts the spans it is given and drops them.
type countExporter struct{ spans atomic.Int64 }

func (c *countExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.spans.Add(int64(len(spans)))
	return nil
}

func (c *countExporter) Shutdown(context.Context) error { return nil }
