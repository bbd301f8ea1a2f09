//! What a `tracing` event costs the thread that logs it: the timber layer
//! (delivering to the bundled collector on 127.0.0.1) beside
//! `tracing-subscriber`'s JSON formatter writing a file through
//! `tracing-appender`'s non-blocking writer, and OpenTelemetry's tracing
//! appender with its batch processor and OTLP/HTTP exporter; the floor is
//! a registry with no layer (the cost of `tracing` itself).
//!
//! Every contender logs the same event (the README's, inside a `user`
//! span) in bursts of 1,000, each burst timed alone with a pause after it
//! for the background threads to catch up; the contenders take turns,
//! forward then backward (ABBA), so drift on a shared machine hits all
//! alike. Reported: the median µs per event over the bursts, the 10th and
//! 90th percentiles, the median of the ratios to the JSON formatter's
//! burst of the same round (paired, so that a slow moment of a shared
//! machine cancels out), and how many of the records logged were
//! delivered once each pipeline was closed.
//!
//! `cargo bench -p timber-tracing --bench app_thread` (`-- --quick` for
//! a short run); writes `bench/results/tracing.md` (`tracing-quick.md`).

#[path = "../tests/support/mod.rs"]
mod support;

mod peers;

use std::time::{Duration, Instant};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

const BURST: u64 = 1_000;

/// The contender the others are compared with, round by round: the usual
/// way to write structured logs from `tracing`.
const REFERENCE: &str = "fmt JSON + non_blocking";

struct Contender {
    name: &'static str,
    what: &'static str,
    dispatch: Dispatch,
    finish: Option<peers::Finish>,
    /// µs per event of each measured burst.
    costs: Vec<f64>,
    logged: u64,
}

/// One burst of the README's event, inside its span.
fn burst(first: u64) {
    let _user = tracing::info_span!("user", id = 123).entered();
    for i in first..first + BURST {
        tracing::info!(
            order_placed.id = i,
            order_placed.total = 520.23,
            "Order #{i} placed, total: $520.23"
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warmup, bursts, pause) = if quick {
        (3, 30, Duration::from_millis(5))
    } else {
        (10, 200, Duration::from_millis(10))
    };
    let collector = support::Collector::start(&[]);
    let (layer, guard) = timber_tracing::builder()
        .environment(|_| None)
        .host(&collector.url)
        .api_key("bench")
        .source_id("bench")
        .build()
        .expect("valid settings");
    let counters = layer.clone();
    let timber_finish: peers::Finish = Box::new(move || {
        guard.close();
        counters.stats().sent
    });
    let json_path = std::env::temp_dir().join(format!("timber-bench-{}.json", std::process::id()));
    let (json, json_finish) = peers::json_file(&json_path);
    let (otel, otel_finish) = peers::opentelemetry();

    let mut contenders = [
        Contender {
            name: "floor",
            what: "`tracing_subscriber::registry()` with no layer",
            dispatch: Dispatch::new(tracing_subscriber::registry()),
            finish: None,
            costs: Vec::new(),
            logged: 0,
        },
        Contender {
            name: "timber",
            what: "`timber_tracing` layer, default settings, to the bundled collector",
            dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)),
            finish: Some(timber_finish),
            costs: Vec::new(),
            logged: 0,
        },
        Contender {
            name: "fmt JSON + non_blocking",
            what: "`tracing_subscriber::fmt::layer().json()` through `tracing_appender::non_blocking` to a file",
            dispatch: json,
            finish: Some(json_finish),
            costs: Vec::new(),
            logged: 0,
        },
        Contender {
            name: "OpenTelemetry",
            what: "`opentelemetry-appender-tracing` + `BatchLogProcessor` + OTLP/HTTP protobuf exporter to a local sink",
            dispatch: otel,
            finish: Some(otel_finish),
            costs: Vec::new(),
            logged: 0,
        },
    ];

    let mut next = 0u64;
    for round in 0..warmup + bursts {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..contenders.len()).collect()
        } else {
            (0..contenders.len()).rev().collect()
        };
        for i in order {
            let c = &mut contenders[i];
            let started = Instant::now();
            tracing::dispatcher::with_default(&c.dispatch, || burst(next));
            let took = started.elapsed();
            c.logged += BURST;
            next += BURST;
            if round >= warmup {
                c.costs.push(took.as_secs_f64() * 1e6 / BURST as f64);
            }
            std::thread::sleep(pause);
        }
    }

    let reference = contenders
        .iter()
        .position(|c| c.name == REFERENCE)
        .expect("the reference contender");
    let paired: Vec<f64> = contenders
        .iter()
        .map(|c| {
            let mut ratios: Vec<f64> = c
                .costs
                .iter()
                .zip(&contenders[reference].costs)
                .map(|(a, b)| a / b)
                .collect();
            ratios.sort_by(f64::total_cmp);
            percentile(&ratios, 0.5)
        })
        .collect();
    let mut rows = Vec::new();
    for (c, ratio) in contenders.iter_mut().zip(paired) {
        c.costs.sort_by(f64::total_cmp);
        let median = percentile(&c.costs, 0.5);
        let delivered = c.finish.take().map(|finish| finish());
        rows.push((
            c.name,
            c.what,
            median,
            percentile(&c.costs, 0.1),
            percentile(&c.costs, 0.9),
            ratio,
            delivered,
            c.logged,
        ));
    }
    let _ = std::fs::remove_file(&json_path);

    let mut md = String::new();
    md.push_str("# `tracing` layers: app-thread cost per event\n\n");
    md.push_str(&format!(
        "`cargo bench -p timber-tracing --bench app_thread{}` (part of `make bench`). \
         {bursts} timed bursts of {BURST} events per contender after {warmup} warm-up bursts, \
         ABBA order, {} ms pause after each burst; {} cores. The event: \
         `info!(order_placed.id = i, order_placed.total = 520.23, \"Order #{{i}} placed, total: $520.23\")` \
         inside `info_span!(\"user\", id = 123)`.\n\n",
        if quick { " -- --quick" } else { "" },
        pause.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    md.push_str(&format!(
        "| contender | µs/event (median) | p10–p90 | × {REFERENCE} (paired) | delivered |\n"
    ));
    md.push_str("|---|---:|---:|---:|---:|\n");
    for (name, _, median, p10, p90, ratio, delivered, logged) in &rows {
        let delivered = match delivered {
            Some(d) => format!("{d} / {logged}"),
            None => "—".to_owned(),
        };
        md.push_str(&format!(
            "| {name} | {median:.3} | {p10:.3}–{p90:.3} | {ratio:.3} | {delivered} |\n"
        ));
    }
    md.push_str("\nContenders:\n\n");
    for (name, what, ..) in &rows {
        md.push_str(&format!("- **{name}**: {what}\n"));
    }
    print!("{md}");
    // A quick run never overwrites the full run's table.
    let name = if quick {
        "tracing-quick.md"
    } else {
        "tracing.md"
    };
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
    std::fs::write(out.join(name), md).expect("the results table is written");
}
