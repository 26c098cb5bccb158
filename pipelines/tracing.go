package pipelines

import (
	"strconv"

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
//	<kind> receive <topic>   consumer: the source's delivery, child of the trace
//	                         context the message carries (Loom envelope, or
//	                         traceparent in the metadata of any source)
//	  pipeline <name>        filter and fan-out; its error is the handler's
//	    <kind> publish <topic>   producer: one per matching sink, all its
//	                         retries; its context goes into the published
//	                         message's metadata (traceparent, tracestate,
//	                         baggage) and context
//
// A Loom source is "loom receive <room>", a Loom sink "loom publish <room>".

// Attribute keys of loombridge's own.
const (
	attrPipeline = attribute.Key("loombridge.pipeline")
	attrSink     = attribute.Key("loombridge.sink")
	attrLoomRoom = attribute.Key("loom.room")
	attrLoomKey  = attribute.Key("loom.key")
	attrLoomID   = attribute.Key("loom.id")
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

func noEnd(*error) {}

// traceProcess starts the receive and pipeline spans of a message and puts
// the pipeline span in its context, for the sinks; the returned func ends
// both with the handler's error.
func (r *runner) traceProcess(msg *message.Message) func(*error) {
	if r.tr == nil {
		return noEnd
	}
	ctx := tracing.Extract(msg.Context(), msg.Metadata)
	kind := r.pl.From.Type
	ctx, recv := r.tr.t.Start(ctx, kind+" receive "+r.topic,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(messageAttrs(msg, kind, r.topic, true, attrPipeline.String(r.name))...))
	ctx, span := r.tr.t.Start(ctx, "pipeline "+r.name,
		trace.WithAttributes(attrPipeline.String(r.name), semconv.MessagingMessageID(msg.UUID)))
	msg.SetContext(ctx)
	return func(err *error) {
		endSpan(span, *err, true)
		endSpan(recv, *err, false)
	}
}

func noEndErr(error) {}

// tracePublish starts a sink's publish span and returns the message to
// publish: a copy whose context and metadata carry that span.
func (s *sink) tracePublish(msg *message.Message) (*message.Message, func(error)) {
	if s.tr == nil {
		return msg, noEndErr
	}
	ctx, span := s.tr.t.Start(msg.Context(), s.ep.Type+" publish "+s.topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messageAttrs(msg, s.ep.Type, s.topic, false, attrSink.String(s.name))...))
	c := msg.Copy()
	c.SetContext(ctx)
	tracing.Inject(ctx, c.Metadata)
	return c, func(err error) { endSpan(span, err, false) } // attempts recorded theirs
}

// messageAttrs are the messaging attributes of a receive span (the Loom
// room, key and id the message came with) or a publish span (the key it is
// published with).
func messageAttrs(msg *message.Message, kind, topic string, receive bool, more ...attribute.KeyValue) []attribute.KeyValue {
	op := semconv.MessagingOperationTypeSend
	if receive {
		op = semconv.MessagingOperationTypeReceive
	}
	a := make([]attribute.KeyValue, 0, 8+len(more))
	a = append(a,
		semconv.MessagingSystemKey.String(kind),
		semconv.MessagingDestinationName(topic),
		op,
		semconv.MessagingMessageID(msg.UUID),
		semconv.MessagingMessageBodySize(len(msg.Payload)),
	)
	if v, ok := msg.Metadata["loom_key"]; ok {
		a = append(a, attrLoomKey.String(v))
	}
	if receive {
		if v, ok := msg.Metadata["loom_room"]; ok {
			a = append(a, attrLoomRoom.String(v))
		}
		if v, ok := msg.Metadata["loom_id"]; ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				a = append(a, attrLoomID.Int64(n))
			}
		}
	}
	return append(a, more...)
}

// endSpan ends span with err as its status, and as an event when record.
func endSpan(span trace.Span, err error, record bool) {
	if err != nil {
		if record {
			span.RecordError(err)
		}
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
