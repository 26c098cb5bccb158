package pipelines

import (
	"strconv"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/loombridge/loombridge/internal/tracing"
)

// Spans of a pipeline, when the engine has a tracer provider
// (EngineOptions.TracerProvider):
//
//	<kind> receive <topic>   consumer: the source's delivery and the pipeline's
//	                         handling (filter, fan-out), child of the trace
//	                         context the message carries (Loom envelope, or
//	                         traceparent in the metadata of any source); its
//	                         error is the handler's
//	  <kind> publish <topic> producer: one per matching sink, all its
//	                         retries; its context goes into the published
//	                         message's metadata (traceparent, tracestate,
//	                         baggage) and context
//
// A Loom source is "loom receive <room>", a Loom sink "loom publish <room>".
// Receiving and handling are one span: as two they covered the same
// interval, and a third of the spans was the main cost of tracing.

// Attribute keys of loombridge's own.
const (
	attrPipeline = attribute.Key("loombridge.pipeline")
	attrSink     = attribute.Key("loombridge.sink")
	attrLoomKey  = attribute.Key("loom.key")
	attrLoomID   = attribute.Key("loom.id")
)

// Span kinds as start options, made once: trace.WithSpanKind allocates.
var (
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
	producerKind = trace.WithSpanKind(trace.SpanKindProducer)
)

// instrumentation is the tracer's name.
const instrumentation = "github.com/loombridge/loombridge/pipelines"

// tracer makes the spans; a nil *tracer is tracing off and costs nothing.
type tracer struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

func newTracer(tp trace.TracerProvider) *tracer {
	if tp == nil {
		return nil
	}
	return &tracer{tp: tp, t: tp.Tracer(instrumentation)}
}

// TracerProvider is the engine's tracer provider, for sinks that make spans
// of their own (webhook attempts); a no-op one when tracing is off.
func (d Deps) TracerProvider() trace.TracerProvider {
	if d.tracer == nil {
		return noop.NewTracerProvider()
	}
	return d.tracer.tp
}

// traceProcess starts the receive span of a message and puts it in the
// message's context, for the sinks; nil when tracing is off. The caller ends
// it with endSpan.
func (r *runner) traceProcess(msg *message.Message) trace.Span {
	return r.traceReceive(msg, r.spanName, r.pl.From.Type)
}

// traceDeliver is traceProcess for a message a sink's queue of the buffer
// delivers: its span continues the trace stored with the message.
func (r *runner) traceDeliver(msg *message.Message) trace.Span {
	return r.traceReceive(msg, r.bufferSpanName, "buffer")
}

func (r *runner) traceReceive(msg *message.Message, name, kind string) trace.Span {
	if r.tr == nil {
		return nil
	}
	ctx := tracing.Extract(msg.Context(), msg.Metadata)
	// Attributes are set once a span is known to record: given to Start they
	// would be copied twice.
	ctx, span := r.tr.t.Start(ctx, name, consumerKind)
	if span.IsRecording() {
		setMessageAttrs(span, msg, kind, r.topic, true, attrPipeline.String(r.name))
	}
	msg.SetContext(ctx)
	return span
}

// tracePublish starts a sink's publish span and returns the message to
// publish: msg with that span in its context (the span is nil when tracing is
// off). It shares msg's metadata, which attempt copies; injectTrace then
// writes the span's context into the copy.
func (s *sink) tracePublish(msg *message.Message) (*message.Message, trace.Span) {
	if s.tr == nil {
		return msg, nil
	}
	ctx, span := s.tr.t.Start(msg.Context(), s.spanName, producerKind)
	if span.IsRecording() {
		setMessageAttrs(span, msg, s.ep.Type, s.topic, false, attrSink.String(s.name))
	}
	// Not msg.Copy(): only attempt's copy is published, and is acked by no one.
	c := &message.Message{UUID: msg.UUID, Metadata: msg.Metadata, Payload: msg.Payload}
	c.SetContext(ctx)
	return c, span
}

// injectTrace writes the trace context of what a sink publishes into its
// metadata, for every transport that keeps metadata.
func (s *sink) injectTrace(c *message.Message) {
	if s.tr != nil {
		tracing.Inject(c.Context(), c.Metadata)
	}
}

// attrBufs are the slices the attributes of a span are put in for
// SetAttributes, which copies them (sdk/trace's recordingSpan appends them to
// its own; a provider that kept the slice would see it reused): made per span,
// they were a sixth of what tracing allocated (64 bytes an attribute, 13 a
// message through one sink).
var attrBufs = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 8); return &b }}

// setMessageAttrs sets the messaging attributes of a receive span (the Loom
// key and id the message came with; the room is messaging.destination.name)
// or a publish span (the key it is published with), and extra.
func setMessageAttrs(span trace.Span, msg *message.Message, kind, topic string, receive bool, extra attribute.KeyValue) {
	op := semconv.MessagingOperationTypeSend
	if receive {
		op = semconv.MessagingOperationTypeReceive
	}
	bp := attrBufs.Get().(*[]attribute.KeyValue)
	a := append((*bp)[:0],
		semconv.MessagingSystemKey.String(kind),
		semconv.MessagingDestinationName(topic),
		op,
		semconv.MessagingMessageID(msg.UUID),
		extra,
	)
	if v, ok := msg.Metadata["loom_key"]; ok {
		a = append(a, attrLoomKey.String(v))
	}
	if v, ok := msg.Metadata["loom_id"]; ok && receive {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			a = append(a, attrLoomID.Int64(n))
		}
	}
	span.SetAttributes(a...)
	clear(a) // the pool keeps no message's strings alive
	*bp = a[:0]
	attrBufs.Put(bp)
}

// endSpan ends span with err as its status, and as an event when record;
// a nil span (tracing off) is left alone.
func endSpan(span trace.Span, err error, record bool) {
	if span == nil {
		return
	}
	if err != nil {
		if record {
			span.RecordError(err)
		}
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
