//! One Rust log event as the engine's [`Event`]: what a `tracing` event or a
//! `log` record says (level, message, fields, error, call site), with the
//! thread and the process it came from. The engine decides the frame.

use crate::fields::{Fields, Node};
use std::rc::Rc;
use std::sync::OnceLock;
use timber_core::{ErrorInfo, Event, Runtime, Sink, System, Time};

/// A log event from either front end.
#[derive(Debug)]
pub struct Record<'a> {
    /// When it happened.
    pub time: Time,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR` (the frame's `level` is
    /// this in lower case, as core spells level names).
    pub level: &'static str,
    /// The formatted message.
    pub message: &'a str,
    /// The target: the logger's name.
    pub target: &'a str,
    /// The module path: the frame's `function`, the closest Rust has.
    pub module: Option<&'a str>,
    /// The source file, as the compiler names it (relative to the crate's
    /// package or workspace root).
    pub file: Option<&'a str>,
    /// The line in it.
    pub line: Option<u32>,
    /// The extras.
    pub fields: &'a Fields,
    /// The error it carries, if any.
    pub error: Option<ErrorInfo>,
    /// The thread that logged it.
    pub thread: Thread,
}

impl Event for Record<'_> {
    fn time(&self) -> Time {
        self.time
    }
    fn level(&self) -> &str {
        self.level
    }
    fn message(&self) -> &str {
        self.message
    }
    fn file_path(&self) -> Option<&str> {
        self.file
    }
    fn runtime(&self) -> Runtime<'_> {
        Runtime {
            function: self.module,
            file: self.file,
            line: self.line.map(i64::from),
            thread_id: Some(self.thread.id),
            thread_name: self.thread.name.as_deref(),
            logger_name: Some(self.target),
        }
    }
    fn system(&self) -> System<'_> {
        // The hostname is filled in by core, as for Python.
        System {
            pid: Some(pid()),
            process_name: process_name(),
            hostname: None,
        }
    }
    fn error(&self) -> Option<ErrorInfo> {
        self.error.clone()
    }
    fn extra_count(&self) -> usize {
        self.fields.entries.len()
    }
    fn extra_name(&self, i: usize) -> &str {
        &self.fields.entries[i].0
    }
    fn extra_is_map(&self, i: usize) -> bool {
        matches!(self.fields.entries[i].1, Node::Map(_))
    }
    fn write_extra<S: Sink>(&self, i: usize, _key: &str, sink: &mut S) {
        self.fields.entries[i].1.write(sink);
    }
}

/// The current time, as the event's time.
pub fn now() -> Time {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(Time::Now, |d| {
        Time::UnixMicros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    })
}

/// The logging thread: its id (the kernel's thread id where there is one,
/// as `threading.get_native_id()` gives it in Python, so it matches `top
/// -H` and `perf`) and its name.
#[derive(Debug, Clone)]
pub struct Thread {
    /// The id.
    pub id: u64,
    /// The name, if the thread has one (`main` for the main thread).
    pub name: Option<Rc<str>>,
    /// Whether it is one of the engine's sender threads, whose own logs
    /// (the HTTP client's) must never be fed back into the engine.
    pub is_sender: bool,
}

thread_local! {
    /// Read once per thread: a thread's id and name never change.
    static THREAD: Thread = {
        let current = std::thread::current();
        let name = current.name();
        Thread {
            id: native_thread_id().unwrap_or_else(next_thread_number),
            is_sender: name.is_some_and(|n| n.starts_with("timber-sender")),
            name: name.map(Rc::from),
        }
    };
}

/// The calling thread.
pub fn current_thread() -> Thread {
    THREAD.with(Thread::clone)
}

/// Whether the calling thread is one of the engine's senders.
pub fn on_sender_thread() -> bool {
    THREAD.with(|t| t.is_sender)
}

/// The kernel's id of the calling thread (Linux: `/proc/thread-self` links
/// to `<pid>/task/<tid>`).
fn native_thread_id() -> Option<u64> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Elsewhere, a number unique in the process.
fn next_thread_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The process id, read once: `getpid` is a system call, and a Rust
/// process that forks without `exec` has no engine in the child anyway
/// (its sender threads do not survive `fork`).
fn pid() -> i64 {
    static PID: OnceLock<i64> = OnceLock::new();
    *PID.get_or_init(|| i64::from(std::process::id()))
}

/// The executable's file name, read once.
pub fn process_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .or_else(|| std::env::args_os().next().map(Into::into))?;
        Some(exe.file_name()?.to_string_lossy().into_owned())
    })
    .as_deref()
}

/// The level's name as core reads it.
pub fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::TRACE => "TRACE",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::INFO => "INFO",
        tracing::Level::WARN => "WARN",
        tracing::Level::ERROR => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timber_core::{write_frame, Json, Policy, Value};

    #[test]
    fn frame_of_a_record() {
        let mut fields = Fields::default();
        fields.insert("order_placed.id", Value::Int(1234));
        fields.insert("error", Value::Int(3));
        let record = Record {
            time: Time::UnixMicros(1_551_671_061_221_232),
            level: "WARN",
            message: "hi",
            target: "shop::orders",
            module: Some("shop::orders"),
            file: Some("src/orders.rs"),
            line: Some(42),
            fields: &fields,
            error: None,
            thread: current_thread(),
        };
        let mut json = Json::new();
        write_frame(&mut json, &record, &[], &Policy::default());
        let f: serde_json::Value = serde_json::from_slice(&json.buf).unwrap();
        assert_eq!(f["level"], "warn");
        assert_eq!(f["dt"], "2019-03-04T03:44:21.221232Z");
        assert_eq!(f["order_placed"]["id"], 1234);
        // A reserved name among the extras is renamed by core, as in Python.
        assert_eq!(f["extra_error"], 3);
        let rt = &f["context"]["runtime"];
        assert_eq!(rt["function"], "shop::orders");
        assert_eq!(rt["logger_name"], "shop::orders");
        assert_eq!(rt["file"], "src/orders.rs");
        assert_eq!(rt["line"], 42);
        assert_eq!(
            rt["thread_name"].as_str(),
            std::thread::current().name(),
            "the test harness names its threads"
        );
        let sys = &f["context"]["system"];
        assert_eq!(sys["pid"], std::process::id());
        assert_eq!(sys["hostname"], timber_core::hostname());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            sys["process_name"],
            exe.file_name().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn thread_ids_are_the_kernels_and_differ_by_thread() {
        let here = current_thread().id;
        let there = std::thread::spawn(|| current_thread().id).join().unwrap();
        assert_ne!(here, there);
        if cfg!(target_os = "linux") {
            let tid = std::fs::read_link("/proc/thread-self").unwrap();
            assert_eq!(tid.file_name().unwrap().to_str().unwrap(), here.to_string());
        }
        assert!(!on_sender_thread());
        let sender = std::thread::Builder::new()
            .name("timber-sender-0".into())
            .spawn(on_sender_thread)
            .unwrap();
        assert!(sender.join().unwrap());
    }
}
