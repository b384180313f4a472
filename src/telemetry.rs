//! OpenTelemetry export of the service's spans (the `request` span of every HTTP request and
//! the `websocket` span of every WebSocket, with their fields as attributes) to a collector
//! over OTLP/HTTP, when the binary is built with the cargo feature `otlp` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The exporter follows the standard OpenTelemetry variables: `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME` (default `adaptive-engine`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch-processor settings. Spans are sent in
//! batches by the SDK's own thread, never on a request's path; [`Telemetry`] flushes what
//! is left when it is dropped, after the runtime has stopped.
//!
//! Owns the export; must not decide what a span holds (that is `server`).

#[cfg(feature = "otlp")]
use tracing::Subscriber;
#[cfg(feature = "otlp")]
use tracing_subscriber::Layer;
#[cfg(feature = "otlp")]
use tracing_subscriber::registry::LookupSpan;

/// Whether an OTLP endpoint is configured.
fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The running export; flushes and stops it when dropped.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("adaptive-engine: OpenTelemetry export did not flush: {e}");
        }
    }
}

/// The tracing layer that exports spans, when the feature is built in and an endpoint is
/// set; `None` otherwise. Call it outside the async runtime: the exporter's HTTP client
/// runs a runtime of its own.
///
/// # Errors
/// When the exporter cannot be built from the environment (a bad endpoint or protocol).
#[cfg(feature = "otlp")]
pub fn layer<S>() -> anyhow::Result<(Option<impl Layer<S>>, Telemetry)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    if !endpoint_configured() {
        return Ok((None, Telemetry::default()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("adaptive-engine");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("adaptive-engine");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Without the `otlp` feature: no layer; a configured endpoint is reported, not ignored
/// silently.
#[cfg(not(feature = "otlp"))]
#[allow(
    clippy::unnecessary_wraps,
    reason = "the same signature as with the feature"
)]
pub fn layer() -> anyhow::Result<(Option<tracing_subscriber::layer::Identity>, Telemetry)> {
    if endpoint_configured() {
        eprintln!(
            "adaptive-engine: OTEL_EXPORTER_OTLP_ENDPOINT is set but this binary was built without the `otlp` feature: no spans are exported (cargo build --release --features otlp)"
        );
    }
    Ok((None, Telemetry::default()))
}
