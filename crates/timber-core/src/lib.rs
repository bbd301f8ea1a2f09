//! The timber engine: turns log events into frames and ships them.
//!
//! ```text
//!  logging thread                          sender threads (named, no GIL)
//!  ──────────────                          ─────────────────────────────
//!  Event ─▶ Destination::encode ─▶ Queue ─▶ worker ─▶ Transport ─▶ endpoint
//!  (source)  one record, once       bounded  body once,  keep-alive
//!                                   bytes    retry,      pool
//!                                            spool
//! ```
//!
//! This crate knows nothing of Python. A source describes each event
//! through the [`Event`] trait and writes its values into a [`Sink`]; the
//! engine owns everything else: the [`Settings`] (every option declared
//! once), the frame, the destination, the buffer, delivery and its
//! accounting ([`Stats`]). What is public is what this file re-exports.
//!
//! Around the engines, `process` watches the process itself: a fork made
//! anywhere (also in C) makes an engine its parent's
//! ([`Engine::forked`], [`Engine::for_child`]), and engines registered with
//! [`close_at_exit`] are closed at exit where nothing else closed them.

mod compress;
mod decode;
mod destination;
mod encode;
mod engine;
mod event;
mod process;
mod proxy;
mod queue;
mod record;
mod redact;
mod retry;
mod settings;
mod shown;
mod spool;
mod stats;
mod transport;
mod value;
mod worker;

pub use decode::{escape_bytes, split_frames, transcode_one, DecodeError, Skip, MAX_DECODE_DEPTH};
pub use destination::{display_url, otlp_proto, Answer, Kind, Outcome, Verdict};
pub use encode::{Json, Msgpack, Sink};
pub use engine::{Engine, EngineError, Pending, Refused};
pub use event::{
    hostname, reserved_index, write_frame, Event, ExtraKeys, Policy, Time, Trace, MAX_BACKTRACE,
};
pub use process::{close_at_exit, generation};
pub use record::{level_number, ErrorInfo, Frame, Location, Runtime, System, RESERVED_KEYS};
pub use redact::Redacting;
pub use settings::{unknown_option, Declared, Raw, Resolved, Settings, SettingsError, DECLARED};
pub use shown::{printable, secret_text, shown, SECRET_OPTIONS};
pub use stats::{Reason, Stats};
pub use value::{Builder, Value, CYCLE_MARKER, DEPTH_MARKER, MAX_DEPTH};
