package webhook

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// propagator writes the request's trace context and baggage into its headers.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// attrEndpoint is the endpoint's name on a request's span.
const attrEndpoint = attribute.Key("loombridge.webhook.endpoint")

// spanAttrs are the attributes of every request to an endpoint. url.full is
// scheme://host[:port] only: user info, path and query may hold secrets.
func spanAttrs(cfg EndpointConfig) []attribute.KeyValue {
	a := []attribute.KeyValue{attrEndpoint.String(cfg.Name), method(cfg.Method)}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return a
	}
	a = append(a, semconv.URLFull(u.Scheme+"://"+u.Host), semconv.ServerAddress(u.Hostname()))
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	if n, err := strconv.Atoi(port); err == nil {
		a = append(a, semconv.ServerPort(n))
	}
	return a
}

// method is http.request.method: a known method, or _OTHER.
func method(m string) attribute.KeyValue {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return semconv.HTTPRequestMethodKey.String(m)
	}
	return semconv.HTTPRequestMethodKey.String("_OTHER")
}

// startSpan starts the span of one request: named after the method, a
// client span, child of ctx (the message's context).
func (p *Publisher) startSpan(ctx context.Context, ep *endpoint, j job, d *delivery) (context.Context, trace.Span) {
	attrs := make([]attribute.KeyValue, 0, len(ep.attrs)+2)
	attrs = append(attrs, ep.attrs...)
	attrs = append(attrs, semconv.MessagingMessageID(j.msg.UUID))
	if d.attempts > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(d.attempts-1))
	}
	name := ep.cfg.Method
	if m := method(name); m.Value.AsString() == "_OTHER" {
		name = "HTTP"
	}
	return p.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endSpan records the request's outcome: the status code, and for a failure
// error.type (the status code, or what kind of error the request had) and an
// Error status. Errors are the redacted ones of d.
func endSpan(span trace.Span, d *delivery, err error) {
	defer span.End()
	if d.lastStatus > 0 { // send sets it on every path: 0 is no response
		span.SetAttributes(semconv.HTTPResponseStatusCode(d.lastStatus))
	}
	if err == nil {
		return
	}
	var ae *attemptError
	if errors.As(err, &ae) && ae.status > 0 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(ae.status)))
		span.SetStatus(codes.Error, "HTTP "+strconv.Itoa(ae.status))
		return
	}
	span.SetAttributes(semconv.ErrorTypeKey.String(transportErrorType(err)))
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

func transportErrorType(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return semconv.ErrorType(err).Value.AsString()
}
