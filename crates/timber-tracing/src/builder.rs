//! The options of a pipeline: the same names, defaults, environment
//! variables and checks as the Python `TimberHandler`, because both read
//! them from the one declaration in `timber_core::DECLARED`. This file only
//! collects what the caller gives and hands it to
//! `timber_core::Settings::resolve`; nothing here decides what is valid.

use crate::handle::{Guard, Handle};
use crate::layer::TimberLayer;
use crate::logger::TimberLogger;
use std::path::{Path, PathBuf};
use std::time::Duration;
use timber_core::{Engine, Raw, Settings};

/// An option that cannot be used, or a pipeline that cannot start; the
/// message is core's, naming the option and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A value for [`Builder::option`]: numbers, booleans, text, paths,
/// durations (as seconds), lists (`["password", "token"]` for `redact`),
/// and `None` (`Option::<T>::None`) for "not given" (then the environment
/// variable, if the option has one, is read) or, for `compression`, no
/// compression.
pub trait OptionValue {
    /// The value as core reads options.
    #[doc(hidden)]
    fn raw(self) -> Raw;
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl OptionValue for $t {
            fn raw(self) -> Raw {
                Raw::Int(i128::from(self))
            }
        }
    )*};
}
integers!(i8, i16, i32, i64, u8, u16, u32, u64);

impl OptionValue for usize {
    fn raw(self) -> Raw {
        // usize is at most 64 bits on every platform Rust supports.
        i128::try_from(self).map_or(Raw::Other("very large integer".into()), Raw::Int)
    }
}

impl OptionValue for f64 {
    fn raw(self) -> Raw {
        Raw::Float(self)
    }
}

impl OptionValue for bool {
    fn raw(self) -> Raw {
        Raw::Bool(self)
    }
}

impl OptionValue for &str {
    fn raw(self) -> Raw {
        Raw::Str(self.to_owned())
    }
}

impl OptionValue for String {
    fn raw(self) -> Raw {
        Raw::Str(self)
    }
}

impl OptionValue for &Path {
    fn raw(self) -> Raw {
        Raw::Str(self.to_string_lossy().into_owned())
    }
}

impl OptionValue for PathBuf {
    fn raw(self) -> Raw {
        self.as_path().raw()
    }
}

impl OptionValue for Duration {
    fn raw(self) -> Raw {
        Raw::Float(self.as_secs_f64())
    }
}

impl<T: OptionValue> OptionValue for Vec<T> {
    fn raw(self) -> Raw {
        Raw::List(self.into_iter().map(OptionValue::raw).collect())
    }
}

impl<T: OptionValue, const N: usize> OptionValue for [T; N] {
    fn raw(self) -> Raw {
        Raw::List(self.into_iter().map(OptionValue::raw).collect())
    }
}

impl<T: OptionValue + Clone> OptionValue for &[T] {
    fn raw(self) -> Raw {
        Raw::List(self.iter().cloned().map(OptionValue::raw).collect())
    }
}

impl<T: OptionValue> OptionValue for Option<T> {
    fn raw(self) -> Raw {
        self.map_or(Raw::None, OptionValue::raw)
    }
}

type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Collects options, then builds the pipeline with [`Builder::build`] (a
/// `tracing` layer) or [`Builder::build_logger`] (a `log` logger).
pub struct Builder {
    given: Vec<(String, Raw)>,
    env: Env,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values are left out: one of them may be the API key.
        let names: Vec<&str> = self.given.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Builder").field("given", &names).finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            given: Vec::new(),
            env: Box::new(|name| std::env::var(name).ok()),
        }
    }
}

/// A builder with no option given: everything from the environment
/// (`TIMBER_API_KEY`, `TIMBER_SOURCE_ID`, `TIMBER_HOST`,
/// `TIMBER_DESTINATION`, `OTEL_*` for OTLP) and the defaults.
pub fn builder() -> Builder {
    Builder::default()
}

impl Builder {
    /// Sets any declared option by its name (`buffer_capacity`,
    /// `flush_interval`, `destination`, ...: every option of
    /// [`timber_core::DECLARED`], as the Python handler takes them). An
    /// unknown name or a bad value is reported by [`Builder::build`].
    pub fn option(mut self, name: &str, value: impl OptionValue) -> Self {
        let raw = value.raw();
        match self.given.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = raw,
            None => self.given.push((name.to_owned(), raw)),
        }
        self
    }

    /// Reads environment variables through `env` instead of the process's
    /// environment (for tests, or to take them from your own configuration).
    pub fn environment(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Box::new(env);
        self
    }

    /// The backend: `"timber"` (default), `"otlp"` or `"betterstack"`.
    pub fn destination(self, destination: &str) -> Self {
        self.option("destination", destination)
    }

    /// The bearer token (`TIMBER_API_KEY` when not given).
    pub fn api_key(self, api_key: impl Into<String>) -> Self {
        self.option("api_key", api_key.into())
    }

    /// The source records are filed under (`TIMBER_SOURCE_ID`).
    pub fn source_id(self, source_id: impl Into<String>) -> Self {
        self.option("source_id", source_id.into())
    }

    /// The endpoint's base URL (`TIMBER_HOST`, else the destination's).
    pub fn host(self, host: impl Into<String>) -> Self {
        self.option("host", host.into())
    }

    /// Records per batch (1000).
    pub fn buffer_capacity(self, records: usize) -> Self {
        self.option("buffer_capacity", records)
    }

    /// How old a batch's first record may get before it is sent (2 s).
    pub fn flush_interval(self, interval: Duration) -> Self {
        self.option("flush_interval", interval)
    }

    /// Drop records when the buffer is full (true, counted), or wait for
    /// room (false: the logging call blocks).
    pub fn drop_extra_events(self, drop: bool) -> Self {
        self.option("drop_extra_events", drop)
    }

    /// Longest [`Guard::flush`] waits (10 s).
    pub fn flush_timeout(self, timeout: Duration) -> Self {
        self.option("flush_timeout", timeout)
    }

    /// Longest the guard's drop waits for delivery (5 s).
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        self.option("shutdown_timeout", timeout)
    }

    /// Directory of the durable spool (off by default).
    pub fn spool_dir(self, dir: impl AsRef<Path>) -> Self {
        self.option("spool_dir", dir.as_ref())
    }

    /// Reads and checks every option, with the environment, as core does.
    pub fn settings(&self) -> Result<Settings, Error> {
        self.resolve().map(|r| r.settings)
    }

    fn resolve(&self) -> Result<timber_core::Resolved, Error> {
        let given = self.given.iter().map(|(n, r)| (n.as_str(), r.clone()));
        Settings::resolve(given, &self.env).map_err(|e| Error(e.0))
    }

    fn handle(self) -> Result<Handle, Error> {
        let resolved = self.resolve()?;
        let engine = Engine::new(resolved).map_err(|e| Error(e.to_string()))?;
        Ok(Handle::new(engine))
    }

    /// The `tracing` layer, and the guard that closes the pipeline when
    /// dropped.
    pub fn build(self) -> Result<(TimberLayer, Guard), Error> {
        let handle = self.handle()?;
        Ok((TimberLayer::new(handle.clone()), Guard::new(handle)))
    }

    /// The `log` logger (install it with [`TimberLogger::init`]), and the
    /// guard that closes the pipeline when dropped.
    pub fn build_logger(self) -> Result<(TimberLogger, Guard), Error> {
        let handle = self.handle()?;
        Ok((TimberLogger::new(handle.clone()), Guard::new(handle)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const KEYS: &[(&str, &str)] = &[("TIMBER_API_KEY", "k"), ("TIMBER_SOURCE_ID", "s")];

    #[test]
    fn defaults_and_environment_are_cores() {
        let s = builder().environment(env(KEYS)).settings().unwrap();
        let core = Settings::resolve([], env(KEYS)).unwrap().settings;
        assert_eq!(format!("{:?}", s.values()), format!("{:?}", core.values()));
        assert_eq!(s.api_key.as_deref(), Some("k"));
        assert_eq!(s.buffer_capacity, 1000);
        let s = builder()
            .environment(env(&[
                ("TIMBER_API_KEY", "k"),
                ("TIMBER_SOURCE_ID", "s"),
                ("TIMBER_HOST", "http://127.0.0.1:9"),
                ("TIMBER_DESTINATION", "betterstack"),
            ]))
            .settings()
            .unwrap();
        assert_eq!(s.host.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.destination.name(), "betterstack");
    }

    #[test]
    fn every_declared_option_is_accepted_by_name() {
        // Each option given its own default back, as core shows it, must
        // resolve: no name core declares is out of reach of `option`.
        let defaults = Settings::default().values();
        for (name, value) in defaults {
            let b = builder().environment(env(KEYS));
            let b = match value {
                Raw::None => b.option(name, None::<&str>),
                Raw::Bool(v) => b.option(name, v),
                Raw::Int(v) => b.option(name, i64::try_from(v).unwrap()),
                Raw::Float(v) => b.option(name, v),
                Raw::Str(v) => b.option(name, v),
                Raw::List(items) => {
                    let texts: Vec<String> = items
                        .into_iter()
                        .map(|i| match i {
                            Raw::Str(s) => s,
                            other => panic!("{name}: {other:?}"),
                        })
                        .collect();
                    b.option(name, texts)
                }
                other => panic!("{name}: {other:?}"),
            };
            b.settings()
                .unwrap_or_else(|e| panic!("{name}: {}", e.message()));
        }
        assert_eq!(
            timber_core::DECLARED.len(),
            Settings::default().values().len()
        );
    }

    #[test]
    fn given_options_win_over_the_environment() {
        let s = builder()
            .environment(env(KEYS))
            .api_key("given")
            .source_id("mine")
            .host("http://127.0.0.1:1")
            .destination("timber")
            .buffer_capacity(500)
            .flush_interval(Duration::from_millis(250))
            .drop_extra_events(false)
            .flush_timeout(Duration::from_secs(3))
            .shutdown_timeout(Duration::from_secs(1))
            .option("compression", None::<&str>)
            .option("max_in_flight", 4u8)
            .option("redact", ["password", "token"])
            .settings()
            .unwrap();
        let redact: Vec<&str> = s.redact.iter().map(|k| &**k).collect();
        assert_eq!(redact, ["password", "token"]);
        assert_eq!(s.api_key.as_deref(), Some("given"));
        assert_eq!(s.source_id.as_deref(), Some("mine"));
        assert_eq!(s.buffer_capacity, 500);
        assert_eq!(s.flush_interval, Duration::from_millis(250));
        assert!(!s.drop_extra_events);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(1));
        assert_eq!(s.max_in_flight, 4);
        assert_eq!(s.compression.header(), None);
    }

    #[test]
    fn bad_values_are_cores_errors() {
        let err = |b: Builder| b.environment(env(KEYS)).build().unwrap_err();
        let core = |given: Vec<(&str, Raw)>| Settings::resolve(given, env(KEYS)).unwrap_err().0;
        assert_eq!(
            err(builder().buffer_capacity(0)).message(),
            core(vec![("buffer_capacity", Raw::Int(0))])
        );
        assert_eq!(
            err(builder().option("flush_intervall", 1)).message(),
            "unknown option \"flush_intervall\" (did you mean \"flush_interval\"?)"
        );
        assert!(err(builder().host("logs.example.com"))
            .message()
            .starts_with("host must be a URL"));
        let missing = builder().environment(|_| None).build().unwrap_err();
        assert_eq!(
            missing.message(),
            core_missing(),
            "the missing key is reported as core words it"
        );
    }

    fn core_missing() -> String {
        Settings::resolve([], |_| None).unwrap_err().0
    }
}
