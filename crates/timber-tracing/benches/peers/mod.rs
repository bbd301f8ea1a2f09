//! The peers of the benchmark, each as a `tracing` dispatcher with the
//! work that ends it and counts what it delivered: `tracing-subscriber`'s
//! JSON formatter through `tracing-appender`'s non-blocking writer into a
//! file, and OpenTelemetry's tracing appender with its batch processor and
//! the official OTLP/HTTP exporter into a minimal OTLP sink on 127.0.0.1.
//!
//! The OTLP exporter's HTTP client is ureq (already in this workspace)
//! rather than reqwest, which would bring an async runtime; it runs on the
//! batch processor's own thread, so the application thread never sees it.

use bytes::Bytes;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    let sink = OtlpSink::start();
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
        sink.records.load(Ordering::Relaxed)
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

/// A minimal OTLP/HTTP receiver: answers every request 200 and counts the
/// log records of the protobuf bodies it decodes.
struct OtlpSink {
    url: String,
    records: Arc<AtomicU64>,
}

impl OtlpSink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let records = Arc::new(AtomicU64::new(0));
        let counted = records.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || serve(conn, &counted));
            }
        });
        Self { url, records }
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve(conn: TcpStream, records: &AtomicU64) {
    let mut writer = conn.try_clone().expect("a second handle");
    let mut reader = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        type Request = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        if let Ok(request) = Request::decode(body.as_slice()) {
            let n: usize = request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            records.fetch_add(n as u64, Ordering::Relaxed);
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
