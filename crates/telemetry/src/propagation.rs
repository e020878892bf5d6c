//! W3C trace context between processes: the `traceparent` text of a span (for the signed
//! command body and NATS headers) and a span's parent taken from one.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and NATS header) name.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, or an empty string when the span has no trace (no tracer
/// installed, or the span is disabled).
pub fn traceparent(span: &tracing::Span) -> String {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the remote span named by `traceparent`. An empty or malformed value
/// leaves the span a root; returns whether a parent was set.
pub fn set_parent(span: &tracing::Span, traceparent: &str) -> bool {
    if traceparent.is_empty() {
        return false;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if !context.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(context).is_ok()
}

/// The trace id (32 hex digits) of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

/// Adds `traceparent` of `span` to NATS headers (nothing when the span has no trace).
pub fn inject_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    let value = traceparent(span);
    if !value.is_empty() {
        headers.insert(TRACEPARENT, value.as_str());
    }
}

/// The `traceparent` NATS header of a message, if present.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    headers?
        .get(TRACEPARENT)
        .map(|value| value.as_str().to_owned())
}
