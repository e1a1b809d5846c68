//! Logs and traces, as `TelemetrySettings` say. Logs go to stderr (`RUST_LOG`). Spans always
//! carry W3C trace context, so one trace spans HTTP → queue → worker → database →
//! completion; they are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::TelemetrySettings;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs logging and tracing for the process as its environment says (once; later calls
/// do nothing).
pub fn init() {
    init_from(&TelemetrySettings::from_env());
}

/// Installs logging and tracing as `settings` say (once per process).
pub fn init_from(settings: &TelemetrySettings) {
    init_with(settings, settings.exporting(), |builder| {
        if !settings.exporting() {
            return builder;
        }
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                builder.with_batch_exporter(crate::trace_export::QuietExporter::new(exporter))
            }
            Err(e) => {
                eprintln!("csrd: OTLP exporter not started: {e}");
                builder
            }
        }
    });
}

/// Like `init`, exporting every finished span to `exporter` at once (for tests that look at
/// the spans a run made).
pub fn init_with_exporter<E>(exporter: E)
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    init_with(&TelemetrySettings::from_env(), true, |builder| {
        builder.with_simple_exporter(exporter)
    });
}

fn init_with(
    settings: &TelemetrySettings,
    exporting: bool,
    exporters: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) {
    PROVIDER.get_or_init(|| {
        let builder = SdkTracerProvider::builder().with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("csrd")
                .build(),
        );
        let provider = exporters(builder).build();
        let tracer = provider.tracer("csrd");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // RUST_LOG filters the log only: traces keep every info span, so a quiet log does not
        // break trace context propagation or export.
        let log_filter = settings
            .log_filter
            .as_deref()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new("info"));
        // Request and job spans carry a `trace_id` field, so every line logged inside one
        // names its trace (text: in the span prefix; JSON: in `spans`).
        let logs = if settings.json_logs() {
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr)
                .with_filter(log_filter)
                .boxed()
        } else {
            // Colours only for a person at a terminal: `docker compose logs`, journald and
            // files get plain text.
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(log_filter)
                .boxed()
        };
        // Spans always (they carry the trace context); events become span events only when
        // spans are exported: otherwise each info event (one per create) would be recorded on
        // a span nobody reads.
        let traced = tracing_subscriber::filter::filter_fn(move |meta| {
            *meta.level() <= LevelFilter::INFO && (exporting || meta.is_span())
        });
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(traced),
            )
            .try_init();
        provider
    });
}

/// Flushes spans still waiting for export.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// The current span's context as `traceparent` (and `tracestate`) header pairs.
pub fn current_context_headers() -> Vec<(&'static str, String)> {
    struct Collect(HashMap<String, String>);
    impl Injector for Collect {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_owned(), value);
        }
    }
    let mut out = Collect(HashMap::new());
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut out);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| out.0.remove(k).map(|v| (k, v)))
        .collect()
}

/// The current span's trace id (32 hex digits), when it belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current())
}

fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let otel = cx.span();
    let context = otel.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Fills the span's `trace_id` field (declared `tracing::field::Empty`), for the log lines
/// logged inside it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id_of(span) {
        span.record("trace_id", id.as_str());
    }
}

/// Makes `span` a child of the trace context found by `get` (a header lookup), if any.
pub fn adopt_parent(span: &tracing::Span, get: impl Fn(&str) -> Option<String>) {
    let headers: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| get(k).map(|v| (k.to_owned(), v)))
        .collect();
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&headers);
        let _ = span.set_parent(cx);
    }
    record_trace_id(span);
}

/// Runs CPU-bound work on tokio's blocking pool inside the caller's current span, so what it
/// logs and traces stays in the request's or job's trace.
pub fn spawn_blocking_in_current_span<F, R>(work: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
}

/// Displays an error with its whole cause chain (`outer: cause: root cause`), for the one
/// place that logs it.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_shows_every_cause() {
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: root");
    }
}
