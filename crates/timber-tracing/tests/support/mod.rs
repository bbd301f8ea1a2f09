//! The real collector for this crate's tests (and its benchmark): the
//! `timber-collector` binary on a free port of 127.0.0.1, storing frames as
//! JSON lines in a directory of its own; and the paths of the binaries
//! cargo built next to the test.
//!
//! Both binaries are built (or found up to date) by cargo, into the same
//! target directory and profile as the test. And a minimal OTLP/HTTP sink,
//! for `destination = "otlp"` and the OpenTelemetry peer of the benchmark.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The profile directory the running test (or benchmark) was built into:
/// `target/debug` for `target/debug/deps/<test>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("deps/");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// Builds, once per test process, the binaries the tests run: the
/// `quickstart` example and the `timber-collector` binary, into the
/// target directory and profile of the running test. Cargo does nothing
/// when they are up to date; without this, `cargo test --test delivery`
/// (which builds no example) would run a stale one.
fn build_binaries() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--locked", "--quiet"]);
        cargo.args(["-p", "timber-tracing", "--example", "quickstart"]);
        cargo.args(["-p", "timber-collector", "--bin", "timber-collector"]);
        cargo.current_dir(env!("CARGO_MANIFEST_DIR"));
        if let Some(target) = dir.parent() {
            cargo.arg("--target-dir").arg(target);
        }
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(other) => {
                cargo.args(["--profile", other]);
            }
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "{cargo:?} failed");
        dir
    })
}

/// An example of this crate, built up to date.
pub fn example(name: &str) -> PathBuf {
    build_binaries().join("examples").join(name)
}

/// The collector binary, built up to date.
pub fn collector_binary() -> PathBuf {
    build_binaries().join("timber-collector")
}

/// A running collector; stopped, and its directory removed, when dropped.
pub struct Collector {
    child: Child,
    /// Where frames are stored.
    pub out: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Collector {
    /// Starts one with `--quiet` and `args`.
    pub fn start(args: &[&str]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let out = std::env::temp_dir().join(format!(
            "timber-tracing-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&out);
        let mut child = Command::new(collector_binary())
            .args(["--listen", "127.0.0.1:0", "--quiet", "--out"])
            .arg(&out)
            .args(args)
            .env_remove("TIMBER_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the collector starts");
        let mut banner = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut banner)
            .expect("the banner");
        let port = banner
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            })
            .unwrap_or_else(|| panic!("no port in the banner {banner:?}"));
        Self {
            child,
            out,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The stored lines of `source`, as written.
    pub fn lines(&self, source: &str) -> Vec<String> {
        let path = self.out.join(format!("{source}.ndjson"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "last line incomplete"
        );
        text.lines().map(str::to_owned).collect()
    }

    /// The stored frames of `source`.
    pub fn frames(&self, source: &str) -> Vec<serde_json::Value> {
        self.lines(source)
            .iter()
            .map(|l| serde_json::from_str(l).expect("a stored line is JSON"))
            .collect()
    }

    /// Waits up to `timeout` for `n` frames of `source`; returns what is
    /// stored then.
    pub fn wait_for(&self, source: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let frames = self.frames(source);
            if frames.len() >= n || Instant::now() > end {
                return frames;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// The top-level keys of a stored line, in the order written
/// (`serde_json::Value` sorts them).
pub fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Keys;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(Keys(keys))
        }
    }
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Visitor)
        }
    }
    serde_json::from_str::<Keys>(line).expect("an object").0
}

/// Runs `command` and fails with its output if it does not succeed.
pub fn run(command: &mut Command) -> std::process::Output {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A decoded OTLP logs request.
pub type OtlpRequest = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

/// A minimal OTLP/HTTP receiver on 127.0.0.1: answers every request 200,
/// counts the log records of the (uncompressed) protobuf bodies it decodes
/// and, if asked, keeps the requests.
pub struct OtlpSink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    records: Arc<AtomicU64>,
    kept: Option<Arc<Mutex<Vec<OtlpRequest>>>>,
}

impl OtlpSink {
    /// Starts one; `keep` keeps every decoded request.
    pub fn start(keep: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let records = Arc::new(AtomicU64::new(0));
        let kept = keep.then(|| Arc::new(Mutex::new(Vec::new())));
        let (counted, keeping) = (records.clone(), kept.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (counted, keeping) = (counted.clone(), keeping.clone());
                std::thread::spawn(move || serve(conn, &counted, keeping.as_deref()));
            }
        });
        Self { url, records, kept }
    }

    /// Log records received so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// The requests received so far (with `keep`).
    pub fn requests(&self) -> Vec<OtlpRequest> {
        self.kept
            .as_ref()
            .map(|k| k.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve(conn: TcpStream, records: &AtomicU64, kept: Option<&Mutex<Vec<OtlpRequest>>>) {
    use prost::Message;
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
        if let Ok(request) = OtlpRequest::decode(body.as_slice()) {
            let n: usize = request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            records.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(kept) = kept {
                kept.lock().unwrap().push(request);
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
