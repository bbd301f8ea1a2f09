//! The `log` logger against the real collector, installed as the process's
//! logger (once per process, hence a test binary of its own): records
//! arrive as frames, sharing one pipeline with the layer, and the HTTP
//! client's own `log` records, written on the engine's sender threads,
//! never come back as frames.

mod support;

use serde_json::json;
use support::Collector;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn log_records_arrive_and_the_senders_own_logs_do_not() {
    let c = Collector::start(&[]);
    let (layer, guard) = timber_tracing::builder()
        .environment(|_| None)
        .host(&c.url)
        .api_key("k")
        .source_id("log")
        .build()
        .unwrap();
    // Every level, so the HTTP client's debug records are not filtered
    // out before the logger sees them.
    layer.logger().init().unwrap();
    assert_eq!(log::max_level(), log::LevelFilter::Trace);

    let e = "x".parse::<i32>().unwrap_err();
    log::info!(target: "shop::orders", "order.id" = 1234, "order.total" = 520.23; "Order #{} placed", 1234);
    log::warn!(error:% = e, attempt = 2; "payment failed");
    log::debug!("static text");
    log::trace!("trace {}", 1);
    // Through the layer, into the same pipeline.
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info!("from tracing");
    });
    assert!(guard.flush());
    // Sending those batches made the HTTP client log on the sender
    // threads; wait a moment for anything that would have followed.
    log::logger().flush();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(guard.flush());

    let frames = c.frames("log");
    let messages: Vec<&str> = frames
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "Order #1234 placed",
            "payment failed",
            "static text",
            "trace 1",
            "from tracing"
        ],
        "{frames:#?}"
    );
    let f = &frames[0];
    assert_eq!(f["level"], "info");
    assert_eq!(f["order"], json!({"id": 1234, "total": 520.23}));
    let rt = &f["context"]["runtime"];
    assert_eq!(rt["logger_name"], "shop::orders");
    assert_eq!(rt["function"], "log_logger");
    assert_eq!(rt["file"], file!());
    assert!(rt["line"].as_i64().unwrap() > 0);
    let keys: Vec<&String> = f["context"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["runtime", "system"], "log has no spans");

    let f = &frames[1];
    assert_eq!(f["level"], "warn");
    assert_eq!(
        f["error"],
        json!({"name": "Error", "message": "invalid digit found in string", "backtrace": []})
    );
    assert_eq!(f["attempt"], 2);
    assert_eq!(frames[2]["level"], "debug");
    assert_eq!(frames[3]["level"], "trace");
    assert_eq!(frames[3]["context"]["runtime"]["logger_name"], "log_logger");
    assert_eq!(guard.stats().accepted, 5);
}
