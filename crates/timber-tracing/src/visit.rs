//! Reading `tracing` fields (a `field::Visit`): the `message` field, the
//! error, and every other field as a typed [`Value`] under its (dotted)
//! name. Spans and events are read by the same visitor; only an event has
//! a message and an error.

use crate::fields::{error_from_dyn, error_from_text, unsigned, wide_int, Fields};
use std::fmt::{self, Write};
use timber_core::{ErrorInfo, Value};
use tracing::field::{Field, Visit};

/// The field whose value is the frame's `error` when it is given as text
/// (`error = %e`, `error = ?e`, `error = "..."`): the frame's own key.
pub const ERROR_FIELD: &str = "error";

/// Collects the fields of an event or a span.
#[derive(Debug, Default)]
pub struct Collect {
    /// Whether this is an event: then `message` is the message, and an
    /// error becomes the frame's `error`.
    event: bool,
    /// The `message` field, formatted.
    pub message: String,
    /// Every other field.
    pub fields: Fields,
    /// The first field that was an error.
    pub error: Option<ErrorInfo>,
}

impl Collect {
    /// A visitor for an event's fields.
    pub fn event() -> Self {
        Self {
            event: true,
            // One allocation for most messages, rather than one per doubling.
            message: String::with_capacity(128),
            ..Self::default()
        }
    }

    /// A visitor for a span's fields, into the fields it has already.
    pub fn span(fields: Fields) -> Self {
        Self {
            fields,
            ..Self::default()
        }
    }

    fn value(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name(), value);
    }

    /// Text of an event's `error` field: the frame's error, if it is the
    /// first.
    fn error_text(&mut self, field: &Field, text: String) -> Option<String> {
        if self.event && self.error.is_none() && field.name() == ERROR_FIELD {
            self.error = Some(error_from_text(text));
            return None;
        }
        Some(text)
    }
}

impl Visit for Collect {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, Value::Float(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, unsigned(u128::from(value)));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.value(field, wide_int(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.value(field, unsigned(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.event && field.name() == "message" {
            self.message.push_str(value);
            return;
        }
        if let Some(text) = self.error_text(field, value.to_owned()) {
            self.value(field, Value::Str(text.into()));
        }
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // As the Python handler sends bytes: text, invalid bytes as \xNN.
        let text = timber_core::escape_bytes(value);
        self.value(field, Value::Str(text.into()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.event && self.error.is_none() {
            self.error = Some(error_from_dyn(value));
            return;
        }
        let text = error_from_dyn(value).message;
        self.value(field, Value::Str(text.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.event && field.name() == "message" {
            // Formatted straight into the message: no intermediate String.
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if let Some(text) = self.error_text(field, format!("{value:?}")) {
            self.value(field, Value::Str(text.into()));
        }
    }
}
