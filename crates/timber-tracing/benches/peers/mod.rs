//! The peers of the benchmark, each as a `tracing` dispatcher with the
//! work that ends it and counts what it delivered: `tracing-subscriber`'s
//! JSON formatter through `tracing-appender`'s non-blocking writer into a
//! file, and OpenTelemetry's tracing appender with its batch processor and
//! the official OTLP/HTTP exporter into the tests' minimal OTLP sink on
//! 127.0.0.1.
//!
//! The OTLP exporter's HTTP client is ureq (already in this workspace)
//! rather than reqwest, which would bring an async runtime; it runs on the
//! batch processor's own thread, so the application thread never sees it.

use bytes::Bytes;
use std::path::Path;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

/// Ends a peer's pipeline (delivering what it holds) and returns the
/// records it delivered.
pub type Finish = Box<dyn FnOnce() -> u64>;

/// The JSON formatter into `path` through a non-blocking writer, both with
/// their defaults.
pub fn json_file(path: &Path) -> (Dispatch, Finish) {
    let file = std::fs::File::create(path).expect("a file for the JSON lines");
    let (writer, guard) = tracing_appender::non_blocking(file);
    let layer = tracing_subscriber::fmt::layer().json().with_writer(writer);
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    let path = path.to_path_buf();
    let finish = Box::new(move || {
        drop(guard);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().count() as u64
    });
    (dispatch, finish)
}

/// OpenTelemetry's appender, batch processor and OTLP/HTTP (protobuf)
/// exporter, with their defaults, into a sink of its own.
pub fn opentelemetry() -> (Dispatch, Finish) {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let sink = crate::support::OtlpSink::start(false);
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_http_client(UreqClient(ureq_agent()))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/logs", sink.url))
        .build()
        .expect("the OTLP exporter builds");
    let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let bridge = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&provider);
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(bridge));
    let finish = Box::new(move || {
        let _ = provider.shutdown();
        sink.records()
    });
    (dispatch, finish)
}

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// An `opentelemetry_http::HttpClient` on ureq.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, body.to_vec());
        let mut response = self.0.run(request)?;
        let body = response.body_mut().read_to_vec()?;
        let (parts, _) = response.into_parts();
        Ok(http::Response::from_parts(parts, Bytes::from(body)))
    }
}
