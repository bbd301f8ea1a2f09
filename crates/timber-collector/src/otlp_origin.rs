//! What an OTLP request keeps beside its frames for a gateway: each
//! record's severity as sent and its resource, which a frame cannot hold,
//! so that the row the gateway writes is the one the OpenTelemetry
//! Collector's ClickHouse exporter would (see [`crate::otlp`]).

use crate::body::Batch;

/// What a gateway keeps of an OTLP record besides its frame, so that its
/// row holds what the sender sent rather than what a frame can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `severity_text` as sent (`NOTICE`).
    pub severity_text: String,
    /// `severity_number` as sent (12).
    pub severity_number: i32,
    /// Its resource, in [`Decoded::resources`].
    pub resource: usize,
}

/// A resource of the request: its `service.name` as sent, and every
/// attribute as text (maps and arrays as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    /// `service.name`, unchanged (the source id is the file-safe form).
    pub service: Option<String>,
    /// Every attribute, `service.name` included, in the request's order.
    pub attributes: Vec<(String, String)>,
}

/// A decoded request: the frames, one batch per source, and beside each
/// batch the [`Origin`] of each of its frames, in order.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Decoded {
    /// The frames by source, in the order the sources first appear.
    pub batches: Vec<(String, Batch)>,
    /// For each batch, one entry per frame.
    pub origins: Vec<Vec<Origin>>,
    /// The resources the origins name.
    pub resources: Vec<Resource>,
}
