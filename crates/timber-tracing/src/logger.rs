//! The `log::Log` implementation, for crates that log through `log`: each
//! record becomes a frame as a `tracing` event does, with the record's
//! target as the logger's name and its key-values (`log`'s `kv` feature,
//! which has no dependencies) as extras, dotted keys nesting. `log` has no
//! spans, so these frames carry no custom context.

use crate::fields::{error_from_text, unsigned, wide_int, Fields};
use crate::handle::Handle;
use crate::record::{current_thread, now, on_sender_thread, Record};
use crate::visit::ERROR_FIELD;
use log::kv::{self, VisitSource, VisitValue};
use log::{LevelFilter, Log, Metadata};
use std::fmt::Write;
use timber_core::{ErrorInfo, Value};

/// Sends `log` records to timber. Install it with [`TimberLogger::init`].
#[derive(Debug, Clone)]
pub struct TimberLogger {
    handle: Handle,
    max_level: LevelFilter,
}

impl TimberLogger {
    pub(crate) fn new(handle: Handle) -> Self {
        Self {
            handle,
            max_level: LevelFilter::Trace,
        }
    }

    /// Sends only records at `level` or more severe (default: all).
    pub fn max_level(mut self, level: LevelFilter) -> Self {
        self.max_level = level;
        self
    }

    /// Makes this the process's `log` logger, and sets `log`'s maximum
    /// level to this logger's. Fails if a logger was installed already.
    pub fn init(self) -> Result<(), log::SetLoggerError> {
        let level = self.max_level;
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl Log for TimberLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.max_level
    }

    fn log(&self, record: &log::Record<'_>) {
        // The engine's own threads log through the HTTP client's `log`
        // calls; sending those would feed the pipeline with itself.
        if !self.enabled(record.metadata()) || on_sender_thread() {
            return;
        }
        let time = now();
        let mut formatted = String::new();
        let message = match record.args().as_str() {
            Some(text) => text,
            None => {
                let _ = write!(formatted, "{}", record.args());
                &formatted
            }
        };
        let mut pairs = Pairs::default();
        // A key-value source that fails part-way still sends what it gave.
        let _ = record.key_values().visit(&mut pairs);
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN",
            log::Level::Info => "INFO",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        let event = Record {
            time,
            level,
            message,
            target: record.target(),
            module: record.module_path(),
            file: record.file(),
            line: record.line(),
            fields: &pairs.fields,
            error: pairs.error,
            thread: current_thread(),
        };
        self.handle.emit(&event, &[]);
    }

    fn flush(&self) {
        self.handle.flush();
    }
}

/// The key-values of a record.
#[derive(Default)]
struct Pairs {
    fields: Fields,
    error: Option<ErrorInfo>,
}

impl<'kvs> VisitSource<'kvs> for Pairs {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut one = One(None);
        value.visit(&mut one)?;
        let value = one.0.unwrap_or(Value::Nil);
        match value {
            // The first `error` given as text is the frame's error, as for
            // a `tracing` field of that name.
            Value::Str(text) if key.as_str() == ERROR_FIELD && self.error.is_none() => {
                self.error = Some(error_from_text(text.into()));
            }
            // `log` keys are not 'static: owned keys.
            value => self.fields.insert_with(key.as_str(), value, |s| {
                std::borrow::Cow::Owned(s.to_owned())
            }),
        }
        Ok(())
    }
}

/// One key-value's value, typed where `log` knows the type.
struct One(Option<Value>);

impl<'v> VisitValue<'v> for One {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        self.0 = Some(Value::Str(value.to_string().into()));
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.0 = Some(Value::Nil);
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.0 = Some(unsigned(u128::from(value)));
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.0 = Some(Value::Int(value));
        Ok(())
    }
    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        self.0 = Some(unsigned(value));
        Ok(())
    }
    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        self.0 = Some(wide_int(value));
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        self.0 = Some(Value::Float(value));
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.0 = Some(Value::Bool(value));
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.0 = Some(Value::Str(value.into()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(source: &dyn kv::Source) -> Pairs {
        let mut p = Pairs::default();
        source.visit(&mut p).unwrap();
        p
    }

    #[test]
    fn key_values_keep_their_types_and_nest() {
        let kvs: &[(&str, kv::Value<'_>)] = &[
            ("order.id", kv::Value::from(1234)),
            ("order.total", kv::Value::from(520.23)),
            ("ok", kv::Value::from(true)),
            ("who", kv::Value::from("ann")),
            (
                "shown",
                kv::Value::from_display(&std::net::Ipv4Addr::LOCALHOST),
            ),
            ("big", kv::Value::from(u128::MAX)),
        ];
        let p = pairs(&kvs);
        let order = Value::Map(vec![
            ("id".into(), Value::Int(1234)),
            ("total".into(), Value::Float(520.23)),
        ]);
        assert_eq!(
            p.fields.to_value(),
            Value::Map(vec![
                ("order".into(), order),
                ("ok".into(), Value::Bool(true)),
                ("who".into(), Value::Str("ann".into())),
                ("shown".into(), Value::Str("127.0.0.1".into())),
                ("big".into(), Value::Str(u128::MAX.to_string().into())),
            ])
        );
        assert!(p.error.is_none());
    }

    #[test]
    fn an_error_key_is_the_frames_error() {
        let e = "x".parse::<i32>().unwrap_err();
        let kvs: &[(&str, kv::Value<'_>)] = &[
            ("error", kv::Value::from_display(&e)),
            ("error2", kv::Value::from(1)),
        ];
        let p = pairs(&kvs);
        let error = p.error.unwrap();
        assert_eq!(error.message, "invalid digit found in string");
        assert_eq!(error.name, "Error");
        assert_eq!(p.fields.entries.len(), 1);
    }
}
