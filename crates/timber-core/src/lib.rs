//! The timber engine: turns log records into Timber frames and ships them.
//!
//! ```text
//!  logging thread                         sender threads (named, no GIL)
//!  ──────────────                         ─────────────────────────────
//!  record ─▶ encode (record, encode) ─▶ queue ─▶ worker ─▶ transport ─▶ POST /frames
//!            one msgpack map, once      bounded   retry      keep-alive
//!                                        bytes     backoff    pool
//! ```
//!
//! This crate knows nothing of Python: the glue (`timber-py`) walks Python
//! objects into a [`encode::Sink`], and the collector reuses the frame model
//! and the decoder as they are.

pub mod compress;
pub mod decode;
pub mod encode;
pub mod engine;
pub mod proxy;
pub mod queue;
pub mod record;
pub mod retry;
pub mod spool;
pub mod stats;
pub mod transport;
pub mod value;
pub mod worker;

pub use engine::{Config, Engine, EngineError};
