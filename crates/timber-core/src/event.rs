//! The input side of the engine: how a source (a Python `LogRecord`, a
//! `tracing` event) describes one event, and the frame the engine builds
//! from it.
//!
//! A source implements [`Event`]: the fixed fields as plain values, the
//! extras by name and written on demand into whatever [`Sink`] the engine
//! chooses (tracing-core's `field::Visit` is the model). Everything the
//! frame decides lives here: reserved names and their `extra_` renaming,
//! which extras are sent, the time and its rounding, the defaults of the
//! process fields, the backtrace cap and the map lengths.

use crate::encode::Sink;
use crate::record::{level_name, ErrorInfo, Frame, Runtime, System, RESERVED_KEYS};
use crate::value::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// Longest traceback kept; the innermost frames are the ones kept.
pub const MAX_BACKTRACE: usize = 200;

/// When an event happened, as its source knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Seconds since the Unix epoch as a float (Python's `record.created`).
    UnixSeconds(f64),
    /// Microseconds since the Unix epoch.
    UnixMicros(i64),
    /// Not known: the time the frame is built.
    Now,
}

impl Time {
    /// Microseconds since the epoch. A float is rounded the way Python's
    /// `datetime.fromtimestamp` rounds it (half to even on the fraction), so
    /// `dt` equals what Python itself shows; NaN and infinities, which are
    /// no time at all, become the time of the call.
    pub fn micros(self) -> i64 {
        match self {
            Time::UnixMicros(m) => m,
            Time::Now => now_micros(),
            Time::UnixSeconds(s) if !s.is_finite() => now_micros(),
            Time::UnixSeconds(s) => {
                let whole = s.trunc();
                let mut frac = ((s - whole) * 1e6).round_ties_even();
                let mut whole = whole;
                if frac >= 1e6 {
                    frac -= 1e6;
                    whole += 1.0;
                } else if frac < 0.0 {
                    frac += 1e6;
                    whole -= 1.0;
                }
                (whole as i64)
                    .saturating_mul(1_000_000)
                    .saturating_add(frac as i64)
            }
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One event, as its source describes it.
pub trait Event {
    /// When it happened.
    fn time(&self) -> Time;
    /// The level's name as the source spells it (`WARNING`, `info`, ...).
    fn level(&self) -> &str;
    /// The message, formatted.
    fn message(&self) -> &str;
    /// Where it was logged from.
    fn runtime(&self) -> Runtime<'_>;
    /// The process; `pid` and `hostname` left `None` are filled in here.
    fn system(&self) -> System<'_>;
    /// The exception it carries, if any.
    fn error(&self) -> Option<ErrorInfo>;
    /// How many extras it has.
    fn extra_count(&self) -> usize;
    /// The name of extra `i`, as given.
    fn extra_name(&self, i: usize) -> &str;
    /// Whether extra `i` is a map (sent even when only maps are).
    fn extra_is_map(&self, i: usize) -> bool;
    /// Writes the value of extra `i`, sent under `key`.
    fn write_extra<S: Sink>(&self, i: usize, key: &str, sink: &mut S);
}

/// How events become frames.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Send every extra, not only maps (`include_extra_attributes`).
    pub include_extra_attributes: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            include_extra_attributes: true,
        }
    }
}

/// The key an extra is sent under: its own name, or, for a name the frame
/// uses itself, `extra_<name>` with as many leading `_` as it takes not to
/// land on another extra's name.
pub fn extra_key<'a>(name: &'a str, taken: impl Fn(&str) -> bool) -> Cow<'a, str> {
    if !RESERVED_KEYS.contains(&name) {
        return Cow::Borrowed(name);
    }
    let mut key = format!("extra_{name}");
    while taken(&key) {
        key.insert(0, '_');
    }
    Cow::Owned(key)
}

/// The host name, read once: the kernel's, else `$HOSTNAME`.
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default()
    })
}

/// Writes one event as a frame: `dt`, `level`, `message`, the extras, then
/// `error` and `context` (automatic `runtime` and `system`, then the custom
/// context, whose own `runtime`/`system` keys are never written).
pub fn write_frame<S: Sink, E: Event>(
    sink: &mut S,
    event: &E,
    context: &[(Box<str>, Value)],
    policy: Policy,
) {
    let n = event.extra_count();
    let sent: Vec<usize> = (0..n)
        .filter(|&i| policy.include_extra_attributes || event.extra_is_map(i))
        .collect();
    let mut error = event.error();
    if let Some(e) = &mut error {
        if e.backtrace.len() > MAX_BACKTRACE {
            e.backtrace.drain(..e.backtrace.len() - MAX_BACKTRACE);
        }
    }
    let level = level_name(event.level()).into_owned();
    let mut system = event.system();
    if system.pid.is_none() {
        system.pid = Some(i64::from(std::process::id()));
    }
    if system.hostname.is_none() {
        system.hostname = Some(hostname());
    }
    let frame = Frame {
        dt_micros: event.time().micros(),
        level: &level,
        message: event.message(),
        runtime: event.runtime(),
        system,
    };
    frame.begin(sink, sent.len(), error.is_some());
    for &i in &sent {
        let name = event.extra_name(i);
        let key = extra_key(name, |k| (0..n).any(|j| event.extra_name(j) == k));
        sink.str(&key);
        event.write_extra(i, &key, sink);
    }
    frame.end(sink, error.as_ref(), context);
}
