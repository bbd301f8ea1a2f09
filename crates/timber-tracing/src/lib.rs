//! timber for Rust services: a `tracing` layer and a `log` logger on the
//! same engine as the Python handler, with the same frames, options and
//! delivery.
//!
//! ```text
//!  tracing::Event ─▶ TimberLayer ─┐ (fields, spans as context,
//!  log::Record ───▶ TimberLogger ─┤  call site, thread, process)
//!                                 ▼
//!                  timber_core::Engine::emit ─▶ buffer ─▶ sender threads ─▶ endpoint
//!                                                          (closed by the Guard)
//! ```
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! fn main() -> Result<(), timber_tracing::Error> {
//!     let (layer, _guard) = timber_tracing::builder()
//!         .source_id("YOUR_SOURCE_ID")
//!         .api_key("YOUR_API_KEY")
//!         .build()?;
//!     tracing_subscriber::registry().with(layer).init();
//!
//!     let _user = tracing::info_span!("user", id = 123).entered();
//!     tracing::info!(
//!         order_placed.id = 1234,
//!         order_placed.total = 520.23,
//!         "Order #1234 placed, total: $520.23"
//!     );
//!     Ok(())
//! } // _guard dropped here: what was logged is delivered (within shutdown_timeout)
//! ```
//!
//! (The Rust example of `docs/rust.md` and of this crate's README is this
//! one; `tests/readme.rs` keeps them the same, so theirs compiles.)
//!
//! - The `message` field is the message; every other field of the event is
//!   an extra at the frame's top level, a dotted name nesting into maps
//!   (`order_placed.id` → `{"order_placed": {"id": ...}}`).
//! - An error is the frame's `error` (`name`, `message`, an empty
//!   `backtrace`): a field recorded as `&dyn Error`
//!   (`error = &e as &dyn std::error::Error`), or a field named `error`
//!   given as text (`error = %e`, `error = ?e`). The first one wins; any
//!   later one is an extra.
//! - Each span with fields is a context entry named after the span
//!   (`info_span!("user", id = 123)` → `context.user.id = 123`); nested
//!   spans of the same name merge key by key, the innermost winning, as
//!   nested `timber.context(...)` blocks do.
//! - `context.runtime`: `function` is the module path, `file` and `line`
//!   the call site as the compiler names it, `logger_name` the target,
//!   `thread_id` the kernel's thread id, `thread_name` the thread's name.
//!   `context.system`: the pid, the executable's file name, the host name.
//!
//! The logging thread only encodes and buffers: delivery happens on the
//! engine's own threads, with no async runtime.

mod builder;
mod fields;
mod handle;
mod layer;
mod logger;
mod record;
mod visit;

pub use builder::{builder, Builder, Error, OptionValue};
pub use handle::Guard;
pub use layer::TimberLayer;
pub use logger::TimberLogger;
pub use timber_core::{Declared, Settings, Stats, DECLARED};
