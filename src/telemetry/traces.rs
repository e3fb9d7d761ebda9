//! OpenTelemetry traces: the process's `tracing` spans exported over
//! OTLP/HTTP (protobuf) when `telemetry.otlp_endpoint` is set, and the W3C
//! trace context (`traceparent`) carried from the gateway to the worker in
//! the job message's NATS headers.
//!
//! [`init`] builds the exporter and keeps the tracer provider for the
//! process; [`layer`] is the `tracing-opentelemetry` layer on it, which the
//! logging subscriber adds; the [`TraceGuard`] that `init` returns flushes
//! what is left when dropped (at the end of a graceful shutdown).
//!
//! Spans go through the logging filter like events do: below
//! `logging.level` (or `RUST_LOG`) they are not created at all, so traces
//! need `INFO` or lower.
//!
//! A batched decoding step serves several transcriptions at once; its span
//! is the child of one of them and links to the others ([`link`]).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush at shutdown may hold up the exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("telemetry.otlp_endpoint: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    #[error("traces are already set up in this process")]
    AlreadyInitialized,
}

/// Flushes and stops the exporter when dropped; hold it for the life of
/// the program. Does nothing when traces are off.
#[must_use = "dropping the guard stops exporting traces"]
#[derive(Debug)]
pub struct TraceGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %e, "traces not all exported at shutdown");
            }
        }
    }
}

/// Sets up the exporter when `telemetry.otlp_endpoint` is set; call it
/// before the logging subscriber is built, which asks [`layer`] for it.
/// The exporter sends batches every 5 s (`OTEL_BSP_SCHEDULE_DELAY`, in ms,
/// changes it) from a thread of its own.
pub fn init(cfg: &TelemetryConfig) -> Result<TraceGuard, TraceError> {
    let Some(url) = cfg.traces_url() else { return Ok(TraceGuard { provider: None }) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Follow the caller's decision when a trace comes with one; sample
        // new traces at the configured ratio.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
        .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
        .build();
    PROVIDER.set(provider.clone()).map_err(|_| TraceError::AlreadyInitialized)?;
    Ok(TraceGuard { provider: Some(provider) })
}

/// The layer that turns `tracing` spans into OpenTelemetry spans, when
/// [`init`] set up an exporter; None otherwise (a `None` layer does nothing).
pub fn layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let tracer = PROVIDER.get()?.tracer("whisper-serve");
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Makes `span` (new, not yet entered) the continuation of the trace whose
/// context `extractor` carries, if it carries one. Errors only mean that
/// traces are off or the span had started: it then stays where it was.
fn continue_trace(span: &Span, extractor: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(extractor);
    if cx.span().span_context().is_valid() {
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "trace context not applied");
        }
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`)
/// into a NATS message's headers; nothing when there is no trace.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut NatsHeaders(headers));
}

/// Continues in `span` the trace a NATS message's headers carry.
pub fn continue_from_nats(span: &Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(h) = headers {
        continue_trace(span, &NatsHeadersRef(h));
    }
}

/// Continues in `span` the trace an HTTP request's `traceparent` header
/// carries (for the request span, before it is entered).
pub fn continue_from_http(span: &Span, headers: &axum::http::HeaderMap) {
    continue_trace(span, &HttpHeaders(headers));
}

/// Links `span` to `to`'s span: a batched step to the transcriptions it
/// also serves besides its parent's.
pub fn link(span: &Span, to: &Span) {
    let cx = to.context();
    let target = cx.span().span_context().clone();
    span.add_link(target);
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Parsed, not converted: async-nats panics on a bad name or value.
        if let (Ok(k), Ok(v)) = (key.parse::<async_nats::HeaderName>(), value.parse::<async_nats::HeaderValue>()) {
            self.0.insert(k, v);
        }
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let name = key.parse::<async_nats::HeaderName>().ok()?;
        self.0.get(name).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote(trace: u128, span: u64) -> opentelemetry::Context {
        let sc = SpanContext::new(TraceId::from(trace), SpanId::from(span), TraceFlags::SAMPLED, true, TraceState::default());
        opentelemetry::Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn trace_context_round_trips_through_nats_headers() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", "job-1");
        let sent = remote(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331);
        TraceContextPropagator::new().inject_context(&sent, &mut NatsHeaders(&mut headers));
        let wire = headers.get("traceparent").map(|v| v.as_str().to_string());
        assert_eq!(wire.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        let got = TraceContextPropagator::new().extract(&NatsHeadersRef(&headers));
        assert_eq!(got.span().span_context().trace_id(), sent.span().span_context().trace_id());
        assert_eq!(got.span().span_context().span_id(), sent.span().span_context().span_id());
        assert!(got.span().span_context().is_remote() && got.span().span_context().is_sampled());
    }

    #[test]
    fn job_span_continues_the_publishers_trace() {
        use tracing_subscriber::layer::SubscriberExt;
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            let mut headers = async_nats::HeaderMap::new();
            request.in_scope(|| inject_nats(&mut headers));
            assert!(headers.get("traceparent").is_some(), "a trace was injected");
            // The worker side: a new span, made a child before it starts.
            let job = tracing::info_span!(parent: None, "job");
            continue_from_nats(&job, Some(&headers));
            let (req_cx, job_cx) = (request.context(), job.context());
            let (req_sc, job_sc) = (req_cx.span().span_context().clone(), job_cx.span().span_context().clone());
            assert_eq!(job_sc.trace_id(), req_sc.trace_id());
            assert_ne!(job_sc.span_id(), req_sc.span_id());
            // A span not continued starts a trace of its own.
            let other = tracing::info_span!(parent: None, "other");
            assert_ne!(other.context().span().span_context().trace_id(), req_sc.trace_id());
        });
    }

    #[test]
    fn no_trace_injects_nothing_and_garbage_extracts_nothing() {
        let mut headers = async_nats::HeaderMap::new();
        inject_nats(&mut headers);
        assert!(headers.get("traceparent").is_none());
        headers.insert("traceparent", "not-a-trace");
        let got = TraceContextPropagator::new().extract(&NatsHeadersRef(&headers));
        assert!(!got.span().span_context().is_valid());
        // Without a layer these are no-ops, never panics.
        let span = tracing::info_span!("job");
        continue_from_nats(&span, Some(&headers));
        continue_from_nats(&span, None);
        link(&span, &Span::none());
    }

    #[test]
    fn http_headers_are_read() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("traceparent", axum::http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
        let got = TraceContextPropagator::new().extract(&HttpHeaders(&h));
        assert!(got.span().span_context().is_valid());
        assert!(!got.span().span_context().is_sampled());
    }

    #[test]
    fn no_endpoint_no_exporter() {
        let guard = init(&TelemetryConfig::default()).expect("off");
        assert!(guard.provider.is_none());
        assert!(layer::<tracing_subscriber::Registry>().is_none() || PROVIDER.get().is_some());
    }
}
