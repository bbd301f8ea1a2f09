//! The process around the engines: a fork detected wherever it is made, and
//! delivery at exit for engines nothing closed.
//!
//! - **Fork.** A `pthread_atfork` child hook counts forks, so it runs for a
//!   fork made in C (uWSGI forks its workers without `os.fork()`, so
//!   Python's at-fork hooks never run there) as for `os.fork()`. An engine
//!   built before the fork is then the parent's ([`crate::Engine::forked`]):
//!   its locks may be held by threads that do not exist in the child, its
//!   senders and spool lane are the parent's; the child builds its own
//!   ([`crate::Engine::for_child`]). The child's hook only adds to an
//!   atomic and releases what the forking thread took before the fork (the
//!   registry below and stderr's lock, so that no fork copies either of
//!   them held by another thread).
//! - **Exit.** A destructor of the loaded library (`.fini_array`), which
//!   runs after every `atexit` hook, closes the engines still open,
//!   delivering within their `shutdown_timeout`. Python's own exit closes
//!   them first, so this matters only where it was skipped: a uWSGI worker
//!   stopped by SIGINT or SIGQUIT while inside a request exits without
//!   running Python's exit hooks.

use crate::engine::Engine;
use std::cell::RefCell;
use std::io::StderrLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Forks this process is removed from its first engine's process.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Whether the at-fork hooks are installed.
static HOOKED: AtomicBool = AtomicBool::new(false);
/// Held while [`OPEN`] is used, and across a fork (taken by the prepare
/// hook, released in parent and child), so that no fork copies its mutex
/// locked.
static BUSY: AtomicBool = AtomicBool::new(false);
/// The engines to close at exit if nothing closed them.
static OPEN: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());

/// How many forks separate this process from the one the counting began
/// in: an engine built in an earlier generation is a parent's.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Installs the at-fork hooks, once (without a once-lock, which a fork
/// could copy half-taken).
pub(crate) fn hook_forks() {
    if HOOKED.swap(true, Ordering::AcqRel) {
        return;
    }
    install_at_fork();
}

#[allow(unsafe_code)]
fn install_at_fork() {
    // SAFETY: pthread_atfork only stores the three function pointers; each
    // is an `extern "C" fn()` that touches atomics and this thread's own
    // stderr guard only (the child's hook no more than releases what the
    // same thread took before the fork) and never unwinds.
    let rc = unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_in_parent),
            Some(after_in_child),
        )
    };
    if rc != 0 {
        HOOKED.store(false, Ordering::Release);
    }
}

thread_local! {
    /// stderr's lock, held by the forking thread across the fork: a sender
    /// thread writing a problem line at that moment would otherwise leave
    /// it locked in the child, where the next line (the totals at exit)
    /// would wait for good.
    static STDERR: RefCell<Option<StderrLock<'static>>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    acquire();
    let _ = STDERR.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            *held = Some(std::io::stderr().lock());
        }
    });
}

fn release_stderr() {
    let _ = STDERR.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.take();
        }
    });
}

extern "C" fn after_in_parent() {
    release_stderr();
    release();
}

extern "C" fn after_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    release_stderr();
    release();
}

fn acquire() {
    while BUSY
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

fn try_acquire(until: Instant) -> bool {
    loop {
        if BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

fn release() {
    BUSY.store(false, Ordering::Release);
}

/// Closes `engine` at exit if nothing else closed it by then (see the
/// module's header).
pub fn close_at_exit(engine: &Arc<Engine>) {
    acquire();
    {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(engine));
    }
    release();
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[link_section = ".fini_array"]
// SAFETY: a plain `extern "C" fn()` in the library's destructor table,
// called once by the dynamic loader at exit, after every atexit hook; it
// catches its own panics.
static AT_EXIT: extern "C" fn() = at_exit;

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(close_open_engines);
}

/// Closes the engines still open, within the longest `shutdown_timeout`
/// among them. The close runs on a thread of its own, waited for with a
/// bound: exit may have been called from a signal handler that interrupted
/// a thread holding an engine's lock.
fn close_open_engines() {
    if !try_acquire(Instant::now() + Duration::from_millis(100)) {
        return;
    }
    let open: Vec<Arc<Engine>> = {
        let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().filter_map(Weak::upgrade).collect()
    };
    release();
    let open: Vec<Arc<Engine>> = open
        .into_iter()
        .filter(|e| !e.is_closed() && !e.forked())
        .collect();
    let Some(timeout) = open.iter().map(|e| e.settings().shutdown_timeout).max() else {
        return;
    };
    let deadline = Instant::now() + timeout;
    let (done, wait) = mpsc::channel();
    let closer = std::thread::Builder::new()
        .name("timber-exit".into())
        .spawn(move || {
            for engine in open {
                engine.close(Some(deadline.saturating_duration_since(Instant::now())));
            }
            let _ = done.send(());
        });
    if closer.is_ok() {
        let _ = wait.recv_timeout(timeout + Duration::from_secs(1));
    }
}
