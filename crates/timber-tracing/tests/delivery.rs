//! The layer against the real collector on 127.0.0.1: the quickstart
//! example's frame as stored, spans as context through the whole pipeline,
//! threads, and what the guard does at process exit (measured in child
//! processes, since exit is what is tested).

mod support;

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{example, keys_in_order, Collector};
use timber_tracing::{Guard, TimberLayer};
use tracing_subscriber::layer::SubscriberExt;

/// A pipeline to `c`, with nothing read from this process's environment
/// (a proxy variable there must not reroute loopback traffic).
fn pipeline(c: &Collector, source: &str) -> (TimberLayer, Guard) {
    timber_tracing::builder()
        .environment(|_| None)
        .host(&c.url)
        .api_key("secret")
        .source_id(source)
        .build()
        .expect("valid settings")
}

#[test]
fn quickstart_example_sends_the_seed_frame_before_it_exits() {
    let c = Collector::start(&["--api-key", "secret"]);
    let child = Command::new(example("quickstart"))
        .env_clear()
        .env("TIMBER_HOST", &c.url)
        .env("TIMBER_API_KEY", "secret")
        .env("TIMBER_SOURCE_ID", "quickstart")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the example starts");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No waiting: the example's flush_interval (2 s) has not passed, so the
    // frame is stored only if the guard delivered it on the way out.
    let lines = c.lines("quickstart");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        keys_in_order(&lines[0]),
        [
            "dt",
            "level",
            "severity",
            "message",
            "order_placed",
            "context"
        ]
    );
    let f: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(f["level"], "info");
    assert_eq!(f["message"], "Order #1234 placed, total: $520.23");
    assert_eq!(f["order_placed"], json!({"id": 1234, "total": 520.23}));
    let context = &f["context"];
    assert_eq!(
        serde_json::to_string(&context["user"]).unwrap(),
        r#"{"id":123}"#
    );
    assert_eq!(
        context.as_object().unwrap().len(),
        3,
        "runtime, system, user: {context}"
    );
    let rt = &context["runtime"];
    assert_eq!(rt["function"], "quickstart");
    assert_eq!(rt["logger_name"], "quickstart");
    assert!(rt["file"]
        .as_str()
        .unwrap()
        .ends_with("examples/quickstart.rs"));
    assert!(rt["line"].as_i64().unwrap() > 0);
    assert_eq!(rt["thread_name"], "main");
    // The main thread's kernel id is the process id.
    assert_eq!(rt["thread_id"], pid.to_string());
    let sys = &context["system"];
    assert_eq!(sys["pid"], pid);
    assert_eq!(sys["process_name"], "quickstart");
    assert_eq!(sys["hostname"], timber_core::hostname());
    let dt = f["dt"].as_str().unwrap();
    assert_eq!(dt.len(), "2019-03-04T03:44:21.221232Z".len(), "{dt}");
    assert!(dt.ends_with('Z') && dt.as_bytes()[10] == b'T', "{dt}");
}

#[test]
fn quickstart_without_settings_fails_with_cores_message() {
    let out = Command::new(example("quickstart"))
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs api_key=... or the environment variable TIMBER_API_KEY"),
        "{stderr}"
    );
}

#[test]
fn spans_nest_merge_and_unwind_through_the_pipeline() {
    let c = Collector::start(&["--api-key", "secret"]);
    let (layer, guard) = pipeline(&c, "spans");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let job = tracing::info_span!("job", id = 123, count = 1);
        let _job = job.enter();
        tracing::info!("Background job execution started");
        {
            let _inner = tracing::info_span!("job", count = 2).entered();
            tracing::info!("Background job in progress");
        }
        tracing::info!("Background job execution completed");
        let e = std::io::Error::other("disk on fire");
        tracing::error!(error = &e as &dyn std::error::Error, "job failed");
    });
    assert!(guard.flush(), "delivered within flush_timeout");
    let frames = c.frames("spans");
    let messages: Vec<&str> = frames
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "Background job execution started",
            "Background job in progress",
            "Background job execution completed",
            "job failed",
        ]
    );
    let jobs: Vec<&serde_json::Value> = frames.iter().map(|f| &f["context"]["job"]).collect();
    assert_eq!(jobs[0], &json!({"id": 123, "count": 1}));
    assert_eq!(jobs[1], &json!({"id": 123, "count": 2}));
    assert_eq!(jobs[2], &json!({"id": 123, "count": 1}));
    assert_eq!(
        frames[3]["error"],
        json!({"name": "std::io::Error", "message": "disk on fire", "backtrace": []})
    );
    assert_eq!(frames[3]["level"], "error");
    let stats = guard.stats();
    assert_eq!((stats.accepted, stats.sent, stats.dropped()), (4, 4, 0));
}

#[test]
fn each_thread_has_its_own_spans_name_and_id() {
    let c = Collector::start(&[]);
    let (layer, guard) = pipeline(&c, "threads");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        let _user = tracing::info_span!("user", id = 1).entered();
        tracing::info!("here");
        let other = dispatch.clone();
        std::thread::Builder::new()
            .name("worker-1".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&other, || tracing::info!("there"));
            })
            .unwrap()
            .join()
            .unwrap();
    });
    assert!(guard.flush());
    let frames = c.frames("threads");
    assert_eq!(frames.len(), 2);
    let (here, there) = (&frames[0]["context"], &frames[1]["context"]);
    assert_eq!(here["user"], json!({"id": 1}));
    assert!(there.get("user").is_none(), "a span is its thread's own");
    assert_eq!(there["runtime"]["thread_name"], "worker-1");
    assert_ne!(here["runtime"]["thread_id"], there["runtime"]["thread_id"]);
}

/// How many records the child process logs.
const CHILD_RECORDS: usize = 10_000;

/// Not a test of its own: the body of the child process the exit tests
/// start (this test binary, run again with `TIMBER_TRACING_CHILD` set).
/// It logs `CHILD_RECORDS` records into a batch too large and an interval
/// too long to be sent before it exits, then drops or forgets the guard
/// and returns, and the process exits normally.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var("TIMBER_TRACING_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let (layer, guard) = timber_tracing::builder()
        .environment(|_| None)
        .host(var("CHILD_HOST"))
        .api_key("k")
        .source_id("exit")
        .buffer_capacity(100_000)
        .flush_interval(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs_f64(
            var("CHILD_SHUTDOWN").parse().unwrap(),
        ))
        .build()
        .unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    for i in 0..CHILD_RECORDS {
        tracing::info!(i, "record {i}");
    }
    match mode.as_str() {
        "drop" => drop(guard),
        "forget" => std::mem::forget(guard),
        other => panic!("unknown mode {other}"),
    }
}

/// Runs `child_process` in a new process; returns its output and how long
/// it took.
fn child(mode: &str, host: &str, shutdown: f64) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TIMBER_TRACING_CHILD", mode)
        .env("CHILD_HOST", host)
        .env("CHILD_SHUTDOWN", shutdown.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (out, started.elapsed())
}

#[test]
fn dropping_the_guard_delivers_everything_at_exit() {
    let c = Collector::start(&[]);
    child("drop", &c.url, 30.0);
    let frames = c.frames("exit");
    assert_eq!(frames.len(), CHILD_RECORDS);
    let mut seen: Vec<u64> = frames.iter().map(|f| f["i"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), CHILD_RECORDS, "each record once");
}

#[test]
fn without_the_guard_nothing_buffered_is_sent() {
    // The control for the test above: the same child, forgetting its guard,
    // delivers nothing, so what arrived there was the guard's doing.
    let c = Collector::start(&[]);
    child("forget", &c.url, 30.0);
    assert_eq!(c.frames("exit").len(), 0);
}

#[test]
fn an_unreachable_endpoint_delays_exit_by_shutdown_timeout_only() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (out, took) = child("drop", &format!("http://127.0.0.1:{port}"), 1.0);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{CHILD_RECORDS} of {CHILD_RECORDS} records were not delivered"
        )),
        "{stderr}"
    );
}
