//! Every option of a handler, declared once: its name as users write it, its
//! default, the environment variables it falls back to, the values it
//! accepts, and the error a user sees for anything else.
//!
//! Values arrive as [`Raw`] (whatever a Python keyword argument, a
//! `dictConfig` entry, an INI file or an environment variable holds) and are
//! read here only; the glue converts, nothing else validates. Adding an
//! option is one line in the [`declare!`] list below plus its use.

use crate::compress::Compression;
use crate::destination::Kind;
use crate::queue::MAX_REQUEST_BYTES;
use crate::retry::Backoff;
use crate::shown::shown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::Certificate;

/// A value as given, before it is read as an option.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// `None` / absent.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// Text, also a path.
    Str(String),
    /// Text from an environment variable: a number may be written as text
    /// there, and only there.
    Env(String),
    /// A list (of names, for `redact`).
    List(Vec<Raw>),
    /// Anything else, by the name of its type.
    Other(String),
}

/// A setting that cannot be used; the message names the option as the user
/// wrote it, and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// What is known about one option, for documentation and errors.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// The option's name, as users write it.
    pub name: &'static str,
    /// Environment variables read, in order, when the option is not given.
    pub env: &'static [&'static str],
    /// What the option does.
    pub doc: &'static str,
}

type Read<T> = fn(&Raw) -> Result<T, String>;

macro_rules! declare {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, env $env:expr, $read:expr; )*) => {
        /// Every option of a handler, read and checked.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// Every option, in declaration order.
        pub const DECLARED: &[Declared] = &[
            $( Declared { name: stringify!($name), env: $env, doc: concat!($($doc),+) }, )*
        ];

        impl Settings {
            /// Every option's value, by name, as a [`Raw`] (durations in
            /// seconds, paths and names as text, `None` where unset).
            pub fn values(&self) -> Vec<(&'static str, Raw)> {
                vec![ $( (stringify!($name), self.$name.shown()), )* ]
            }

            fn set(&mut self, name: &str, raw: &Raw) -> Result<(), String> {
                match name {
                    $( stringify!($name) => {
                        let read: Read<$ty> = $read;
                        self.$name = read(raw)?;
                    } )*
                    _ => return Err(String::new()),
                }
                Ok(())
            }
        }
    };
}

declare! {
    /// Where records go: `'timber'`, `'otlp'` or `'betterstack'`.
    destination: Kind = Kind::Timber, env &["TIMBER_DESTINATION"], |r| choice(r, Kind::parse, Kind::ACCEPTED);
    /// The bearer token sent with every request.
    api_key: Option<String> = None, env &["TIMBER_API_KEY"], |r| token(r);
    /// The source records are filed under.
    source_id: Option<String> = None, env &["TIMBER_SOURCE_ID"], |r| optional_text(r);
    /// Base URL of the endpoint (each destination has its default).
    host: Option<String> = None, env &["TIMBER_HOST"], |r| url(r);
    /// The service records come from (OTLP's `service.name`).
    service_name: Option<String> = None, env &["OTEL_SERVICE_NAME"], |r| optional_text(r);
    /// ClickHouse: the table rows go to, `table` or `database.table`.
    table: String = "otel_logs".to_owned(), env &[], table_name;
    /// ClickHouse: the user (`X-ClickHouse-User`).
    username: Option<String> = None, env &["TIMBER_CLICKHOUSE_USER"], |r| header_text(r);
    /// ClickHouse: the password (`X-ClickHouse-Key`).
    password: Option<String> = None, env &["TIMBER_CLICKHOUSE_PASSWORD"], |r| header_text(r);
    /// ClickHouse: create the table when the server says it is missing.
    create_table: bool = false, env &[], flag;
    /// Records per batch: a batch is sent when it holds this many.
    buffer_capacity: usize = 1000, env &[], |r| count(r, 1, 1_000_000);
    /// Seconds after its first record at which a batch is sent anyway.
    flush_interval: Duration = Duration::from_secs(2), env &[], |r| seconds(r, false, HOUR);
    /// Byte budget of everything buffered.
    max_buffer_bytes: usize = 64 * 1024 * 1024, env &[], |r| count(r, 2 * MAX_REQUEST_BYTES as u64, 1 << 40);
    /// Record budget of everything buffered.
    max_buffer_records: usize = 500_000, env &[], |r| count(r, 1, 100_000_000);
    /// Drop a record when a budget is reached (`False`: wait for room).
    drop_extra_events: bool = true, env &[], flag;
    /// Sender threads, each with one request in flight.
    max_in_flight: usize = 2, env &[], |r| count(r, 1, 64);
    /// Seconds one request may take.
    timeout: Duration = Duration::from_secs(10), env &[], |r| seconds(r, false, HOUR);
    /// Seconds a batch is retried before it is dropped.
    retry_timeout: Duration = Duration::from_secs(300), env &[], |r| seconds(r, true, WEEK);
    /// Longest `flush()` waits, in seconds.
    flush_timeout: Duration = Duration::from_secs(10), env &[], |r| seconds(r, true, HOUR);
    /// Longest `close()`, and so interpreter exit, waits, in seconds.
    shutdown_timeout: Duration = Duration::from_secs(5), env &[], |r| seconds(r, true, HOUR);
    /// Request body encoding.
    compression: Compression = Compression::Gzip, env &[], compression;
    /// PEM file of the CAs to trust instead of the system's.
    ca_bundle: Option<PathBuf> = None, env &["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"], |r| path(r);
    /// First backoff ceiling between attempts, in seconds.
    backoff_base: Duration = Duration::from_millis(500), env &[], |r| at_least(r, false, MIN_BACKOFF, HOUR);
    /// Largest backoff ceiling between attempts, in seconds.
    backoff_max: Duration = Duration::from_secs(30), env &[], |r| at_least(r, false, MIN_BACKOFF, HOUR);
    /// Directory of the durable spool; off when `None`.
    spool_dir: Option<PathBuf> = None, env &[], |r| path(r);
    /// Size cap of this process's spool, in bytes.
    spool_max_bytes: u64 = 256 * 1024 * 1024, env &[], |r| count(r, MAX_REQUEST_BYTES as u64, 1 << 50);
    /// Send every extra, not only dict-valued ones.
    include_extra_attributes: bool = true, env &[], flag;
    /// Let internal errors reach the caller, and `flush()` raise on loss.
    raise_exceptions: bool = false, env &[], flag;
    /// Keys whose values are sent as `[REDACTED]` (any depth, any case).
    redact: Vec<Box<str>> = Vec::new(), env &["TIMBER_REDACT"], names;
}

/// An option's value shown as a [`Raw`].
trait Shown {
    fn shown(&self) -> Raw;
}

impl Shown for usize {
    fn shown(&self) -> Raw {
        Raw::Int(*self as i128)
    }
}

impl Shown for u64 {
    fn shown(&self) -> Raw {
        Raw::Int(i128::from(*self))
    }
}

impl Shown for bool {
    fn shown(&self) -> Raw {
        Raw::Bool(*self)
    }
}

impl Shown for Duration {
    fn shown(&self) -> Raw {
        Raw::Float(self.as_secs_f64())
    }
}

impl Shown for String {
    fn shown(&self) -> Raw {
        Raw::Str(self.clone())
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> Raw {
        Raw::Str(self.to_string_lossy().into_owned())
    }
}

impl Shown for Compression {
    fn shown(&self) -> Raw {
        self.header().map_or(Raw::None, |h| Raw::Str(h.to_owned()))
    }
}

impl Shown for Kind {
    fn shown(&self) -> Raw {
        Raw::Str(self.name().to_owned())
    }
}

impl Shown for Vec<Box<str>> {
    fn shown(&self) -> Raw {
        Raw::List(self.iter().map(|n| Raw::Str(n.to_string())).collect())
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> Raw {
        self.as_ref().map_or(Raw::None, Shown::shown)
    }
}

const HOUR: f64 = 3600.0;
const WEEK: f64 = 7.0 * 24.0 * HOUR;

/// The options and what is derived from them, ready for the engine.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The options as read.
    pub settings: Settings,
    /// The certificates of `ca_bundle`, read once.
    pub ca_certs: Option<Arc<Vec<Certificate<'static>>>>,
    /// The proxy requests go through, from the environment.
    pub proxy: Option<String>,
    /// The URL and headers of every request.
    pub endpoint: Endpoint,
}

/// Where requests go: resolved from the options, the destination and its
/// own environment variables (OTLP's).
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// The full URL.
    pub url: String,
    /// Headers of every request (authorization, content type, the user's).
    pub headers: Vec<(String, String)>,
    /// OTLP only: JSON instead of protobuf.
    pub json: bool,
    /// OTLP and ClickHouse: resource attributes from the environment
    /// (`service.name` first), in order.
    pub resource: Vec<(String, String)>,
}

impl Settings {
    /// Reads `given` (options the user passed, `None` meaning "not given"
    /// for the options that have environment variables) over the defaults
    /// and the environment read through `env`, then checks the options
    /// against each other and derives the proxy and the trusted CAs.
    pub fn resolve<'a>(
        given: impl IntoIterator<Item = (&'a str, Raw)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, SettingsError> {
        let given: Vec<(&str, Raw)> = given.into_iter().collect();
        let mut s = Self::read(&given, &env, |_| true)?;
        s.check()?;
        let given_names: Vec<&str> = given
            .iter()
            .filter(|(n, _)| explicit(&given, n))
            .map(|(n, _)| *n)
            .collect();
        let endpoint = crate::destination::configure(&mut s, &given_names, &env)?;
        // The CAs matter to TLS only: a bundle named by the environment
        // (for other programs, perhaps) is not read for an http:// URL.
        let tls = endpoint
            .url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if !tls && !given_names.contains(&"ca_bundle") {
            s.ca_bundle = None;
        }
        let ca_certs = match &s.ca_bundle {
            None => None,
            Some(path) => Some(Arc::new(read_ca_bundle(path)?)),
        };
        let proxy = proxy(&endpoint.url, &env)?;
        Ok(Resolved {
            settings: s,
            ca_certs,
            proxy,
            endpoint,
        })
    }

    /// Reads the options `wanted` picks from `given` over the defaults and
    /// the environment; any other option keeps its default.
    fn read(
        given: &[(&str, Raw)],
        env: &impl Fn(&str) -> Option<String>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        for (name, _) in given {
            if let Some(message) = unknown_option(name) {
                return Err(SettingsError(message));
            }
        }
        for d in DECLARED.iter().filter(|d| wanted(d.name)) {
            if explicit(given, d.name) {
                continue;
            }
            let found = d
                .env
                .iter()
                .find_map(|var| env(var).filter(|v| !v.is_empty()).map(|v| (*var, v)));
            if let Some((var, value)) = found {
                let raw = Raw::Env(value);
                s.set(d.name, &raw).map_err(|why| {
                    SettingsError(format!(
                        "{} (from the environment variable {var}) {why}, got {}",
                        d.name,
                        shown(d.name, &raw)
                    ))
                })?;
            }
        }
        for (name, raw) in given.iter().filter(|(n, _)| wanted(n)) {
            let declared = DECLARED.iter().find(|d| d.name == *name);
            if !explicit(given, name) && declared.is_some_and(|d| !d.env.is_empty()) {
                continue;
            }
            s.set(name, raw)
                .map_err(|why| SettingsError(format!("{name} {why}, got {}", shown(name, raw))))?;
        }
        Ok(s)
    }

    /// The options a formatter takes (`include_extra_attributes`, `redact`),
    /// read as a handler reads them: the same checks, text split at commas,
    /// `TIMBER_REDACT` when `redact` is not given.
    pub fn formatter<'a>(
        given: impl IntoIterator<Item = (&'a str, Raw)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        const FORMATTER: &[&str] = &["include_extra_attributes", "redact"];
        let given: Vec<(&str, Raw)> = given.into_iter().collect();
        if let Some((name, _)) = given.iter().find(|(n, _)| !FORMATTER.contains(n)) {
            return Err(SettingsError(format!(
                "unknown option {name:?}; a formatter takes {}",
                FORMATTER.join(", ")
            )));
        }
        Self::read(&given, &env, |n| FORMATTER.contains(&n))
    }

    /// The options read from the environment alone.
    pub fn from_env() -> Result<Resolved, SettingsError> {
        Self::resolve([], |k| std::env::var(k).ok())
    }

    /// Checks across options, and what the destination needs.
    fn check(&self) -> Result<(), SettingsError> {
        let bad = |m: String| Err(SettingsError(m));
        if self.max_buffer_records < self.buffer_capacity {
            return bad(format!(
                "max_buffer_records must be at least buffer_capacity ({}), got {}",
                self.buffer_capacity, self.max_buffer_records
            ));
        }
        if self.backoff_base > self.backoff_max {
            return bad(format!(
                "backoff_base must be at most backoff_max ({}), got {}",
                self.backoff_max.as_secs_f64(),
                self.backoff_base.as_secs_f64()
            ));
        }
        for (name, value, var) in self.destination.needs() {
            let value = match value {
                Need::ApiKey => &self.api_key,
                Need::SourceId => &self.source_id,
            };
            if value.is_none() {
                return bad(format!(
                    "TimberHandler needs {name}=... or the environment variable {var}"
                ));
            }
        }
        Ok(())
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_base,
            cap: self.backoff_max,
        }
    }
}

/// An option a destination cannot do without.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// `api_key`.
    ApiKey,
    /// `source_id`.
    SourceId,
}

/// Whether `name` was given a value (`None` and `''` mean "not given", so
/// that the environment fills it).
fn explicit(given: &[(&str, Raw)], name: &str) -> bool {
    given
        .iter()
        .any(|(n, r)| *n == name && !matches!(r, Raw::None) && *r != Raw::Str(String::new()))
}

/// The refusal of `name` when it is no declared option (naming the closest
/// one), `None` when it is one.
pub fn unknown_option(name: &str) -> Option<String> {
    (!DECLARED.iter().any(|d| d.name == name)).then(|| unknown(name))
}

fn unknown(name: &str) -> String {
    let close = DECLARED
        .iter()
        .map(|d| d.name)
        .find(|d| d.contains(name) || name.contains(d) || edit_distance(d, name) <= 2);
    match close {
        Some(d) => format!("unknown option {name:?} (did you mean {d:?}?)"),
        None => format!(
            "unknown option {name:?}; the options are: {}",
            DECLARED
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `true`/`false` as booleans or as the words (any case); nothing else, so
/// that `'false'` from an INI or YAML file never means true.
fn flag(raw: &Raw) -> Result<bool, String> {
    match raw {
        Raw::Bool(b) => Ok(*b),
        Raw::Str(s) | Raw::Env(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Raw::Str(s) | Raw::Env(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err("must be True or False (or the words 'true' / 'false')".to_owned()),
    }
}

fn number(raw: &Raw) -> Option<f64> {
    match raw {
        Raw::Int(i) => Some(*i as f64),
        Raw::Float(f) => Some(*f),
        Raw::Env(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A whole number in `[min, max]`.
fn count<T: TryFrom<u64>>(raw: &Raw, min: u64, max: u64) -> Result<T, String> {
    let why = || format!("must be a whole number from {min} to {max}");
    let n = match raw {
        Raw::Int(i) => u64::try_from(*i).ok(),
        Raw::Env(s) => s.trim().replace('_', "").parse::<u64>().ok(),
        Raw::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 1.9e19 => Some(*f as u64),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => T::try_from(n).map_err(|_| why()),
        _ => Err(why()),
    }
}

/// The shortest wait that is not zero: below it a timeout rounds to
/// nothing (a request that always times out).
pub(crate) const MIN_SECONDS: f64 = 0.001;

/// The shortest backoff: below it a refusing endpoint is retried in a
/// tight loop.
const MIN_BACKOFF: f64 = 0.01;

/// Seconds in `(0, max]`, or `[0, max]` when zero is allowed; a wait that
/// is not zero is at least [`MIN_SECONDS`].
fn seconds(raw: &Raw, zero: bool, max: f64) -> Result<Duration, String> {
    at_least(raw, zero, MIN_SECONDS, max)
}

/// Seconds in `(0, max]`, at least `min`, or 0 when zero is allowed.
fn at_least(raw: &Raw, zero: bool, min: f64, max: f64) -> Result<Duration, String> {
    let low = if zero { "from 0" } else { "greater than 0 and" };
    let why = || format!("must be a number of seconds {low} up to {max}");
    match number(raw) {
        Some(v) if v.is_finite() && v <= max && (v >= min || (zero && v == 0.0)) => {
            Ok(Duration::from_secs_f64(v))
        }
        Some(v) if v.is_finite() && v > 0.0 && v < min => Err(format!(
            "must be at least {min} seconds (a shorter wait is no wait)"
        )),
        _ => Err(why()),
    }
}

fn choice<T>(raw: &Raw, parse: fn(&str) -> Option<T>, accepted: &str) -> Result<T, String> {
    match raw {
        Raw::Str(s) | Raw::Env(s) => {
            parse(s.trim()).ok_or_else(|| format!("must be one of {accepted}"))
        }
        _ => Err(format!("must be one of {accepted}")),
    }
}

fn compression(raw: &Raw) -> Result<Compression, String> {
    match raw {
        Raw::None => Ok(Compression::None),
        _ => choice(
            raw,
            |s| Compression::parse(&s.to_ascii_lowercase()),
            "'gzip', 'deflate', 'zstd' or None",
        ),
    }
}

/// A list of names, or (from a file or the environment) one text of names
/// separated by commas.
fn names(raw: &Raw) -> Result<Vec<Box<str>>, String> {
    let why =
        || "must be a list of key names (or one text of names separated by commas)".to_owned();
    let words: Vec<String> = match raw {
        Raw::None => Vec::new(),
        Raw::Str(s) | Raw::Env(s) => s.split(',').map(|w| w.trim().to_owned()).collect(),
        Raw::List(items) => items
            .iter()
            .map(|i| match i {
                Raw::Str(s) => Ok(s.trim().to_owned()),
                _ => Err(why()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(why()),
    };
    Ok(words
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(String::into_boxed_str)
        .collect())
}

fn optional_text(raw: &Raw) -> Result<Option<String>, String> {
    match raw {
        Raw::None => Ok(None),
        Raw::Str(s) | Raw::Env(s) if s.is_empty() => Ok(None),
        Raw::Str(s) | Raw::Env(s) => Ok(Some(s.clone())),
        _ => Err("must be a string".to_owned()),
    }
}

/// A bearer token: visible ASCII only (RFC 6750), as anything else makes
/// every request fail.
fn token(raw: &Raw) -> Result<Option<String>, String> {
    let text = header_text(raw)?;
    if text
        .as_deref()
        .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err("must be visible ASCII characters (no spaces, no accents)".to_owned());
    }
    Ok(text)
}

/// Text that goes into an HTTP header: no control characters (a CR or LF
/// would make every request fail, or split it).
fn header_text(raw: &Raw) -> Result<Option<String>, String> {
    let text = optional_text(raw)?;
    if text
        .as_deref()
        .is_some_and(|t| t.chars().any(char::is_control))
    {
        return Err("must not contain control characters (CR, LF, tab...)".to_owned());
    }
    Ok(text)
}

fn url(raw: &Raw) -> Result<Option<String>, String> {
    match raw {
        Raw::None => Ok(None),
        Raw::Str(s) | Raw::Env(s) if s.is_empty() => Ok(None),
        _ => base_url(raw).map(Some),
    }
}

/// A ClickHouse table, or `database.table`: identifiers of letters, digits
/// and `_`, so that the name goes into the insert query as it is.
fn table_name(raw: &Raw) -> Result<String, String> {
    let why = || "must be a table name or database.table, of letters, digits and _".to_owned();
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 128
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match raw {
        Raw::Str(s) | Raw::Env(s) => {
            let s = s.trim();
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() <= 2 && parts.iter().all(|p| part(p)) {
                Ok(s.to_owned())
            } else {
                Err(why())
            }
        }
        _ => Err(why()),
    }
}

/// An `http(s)://` URL, without a trailing `/`.
pub(crate) fn base_url(raw: &Raw) -> Result<String, String> {
    let why = || {
        "must be a URL starting with http:// or https://, with a valid host and port \
         and no query or fragment"
            .to_owned()
    };
    match raw {
        Raw::Str(s) | Raw::Env(s) => {
            let s = s.trim();
            let lower = s.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"))
                .ok_or_else(why)?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            // A query or a fragment would be cut from every request (the
            // path is appended), so that batches reach another route.
            if !valid_authority(authority)
                || s.chars()
                    .any(|c| c.is_control() || c == ' ' || c == '?' || c == '#')
            {
                return Err(why());
            }
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(why()),
    }
}

/// `[user[:password]@]host[:port]`: a host of name characters or a
/// bracketed IPv6 address, and a port of digits (up to 65535).
fn valid_authority(authority: &str) -> bool {
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => return false,
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn path(raw: &Raw) -> Result<Option<PathBuf>, String> {
    match raw {
        Raw::None => Ok(None),
        Raw::Str(s) | Raw::Env(s) if s.is_empty() => Ok(None),
        Raw::Str(s) | Raw::Env(s) => Ok(Some(PathBuf::from(s))),
        _ => Err("must be a path (a string or os.PathLike) or None".to_owned()),
    }
}

/// `scheme://[user[:password]@]host[:port][/]` of a scheme a proxy speaks.
fn proxy_url(p: &str) -> bool {
    let Some((scheme, rest)) = p.trim().split_once("://") else {
        return false;
    };
    let schemes = ["http", "https", "socks4", "socks4a", "socks5", "socks5h"];
    schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
        && valid_authority(rest.strip_suffix('/').unwrap_or(rest))
        && !p.chars().any(|c| c.is_control() || c == ' ')
}

fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, SettingsError> {
    let pem = std::fs::read(path)
        .map_err(|e| SettingsError(format!("cannot read ca_bundle {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(SettingsError(format!("ca_bundle {}: {e}", path.display()))),
        }
    }
    if certs.is_empty() {
        return Err(SettingsError(format!(
            "ca_bundle {}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The proxy for `host` from the environment, refused if unusable (never
/// silently bypassed).
fn proxy(
    host: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SettingsError> {
    match crate::proxy::proxy_for(host, env) {
        None => Ok(None),
        Some(p) if !proxy_url(&p) => Err(SettingsError(format!(
            "invalid proxy setting {:?}: must be a URL such as http://proxy:3128 \
             (http, https, socks4 or socks5)",
            crate::shown::url(&p)
        ))),
        Some(p) => match ureq::Proxy::new(&p) {
            Ok(_) => Ok(Some(p)),
            Err(e) => Err(SettingsError(format!(
                "invalid proxy setting {:?}: {e}",
                crate::shown::url(&p)
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(given: &[(&'static str, Raw)]) -> Result<Resolved, SettingsError> {
        let mut all = vec![
            ("api_key", Raw::Str("k".into())),
            ("source_id", Raw::Str("s".into())),
        ];
        all.extend(given.iter().cloned());
        Settings::resolve(all, |_| None)
    }

    fn err(given: &[(&'static str, Raw)]) -> String {
        resolve(given).unwrap_err().0
    }

    #[test]
    fn defaults() {
        let r = resolve(&[]).unwrap();
        assert_eq!(r.settings.buffer_capacity, 1000);
        assert_eq!(r.settings.compression, Compression::Gzip);
        assert_eq!(r.settings.host.as_deref(), Some("https://logs.timber.io"));
        assert_eq!(r.endpoint.url, "https://logs.timber.io/sources/s/frames");
        assert!(r.ca_certs.is_none() && r.proxy.is_none());
    }

    #[test]
    fn every_refusal_names_the_option_and_the_range() {
        for (name, raw, expected) in [
            (
                "timeout",
                Raw::Int(0),
                "timeout must be a number of seconds greater than 0",
            ),
            (
                "flush_interval",
                Raw::Float(0.0),
                "flush_interval must be a number of seconds greater than 0",
            ),
            (
                "compression",
                Raw::Str("brotli".into()),
                "compression must be one of 'gzip', 'deflate', 'zstd' or None, got \"brotli\"",
            ),
            (
                "max_in_flight",
                Raw::Int(1000),
                "max_in_flight must be a whole number from 1 to 64, got 1000",
            ),
            (
                "max_buffer_bytes",
                Raw::Int(0),
                "max_buffer_bytes must be a whole number from 2000000",
            ),
            (
                "drop_extra_events",
                Raw::Str("no".into()),
                "drop_extra_events must be True or False",
            ),
            (
                "buffer_capacity",
                Raw::Bool(true),
                "buffer_capacity must be a whole number from 1 to 1000000, got True",
            ),
            ("buffer_capacity", Raw::Other("list".into()), "got a list"),
            (
                "buffer_capacity",
                Raw::Str("10".into()),
                "buffer_capacity must be a whole number",
            ),
            (
                "api_key",
                Raw::Str("a\r\nb".into()),
                "api_key must not contain control characters",
            ),
            (
                "host",
                Raw::Str("logs.example.com".into()),
                "host must be a URL starting with http:// or https://",
            ),
            (
                "host",
                Raw::Str("http://127.0.0.1:8765,".into()),
                "host must be a URL",
            ),
            (
                "host",
                Raw::Str("http://h:99999".into()),
                "host must be a URL",
            ),
            ("host", Raw::Str("http://".into()), "host must be a URL"),
        ] {
            let e = err(&[(name, raw)]);
            assert!(e.starts_with(name), "{e}");
            assert!(e.contains(expected), "{e} / {expected}");
        }
    }

    #[test]
    fn values_read_back() {
        let r = resolve(&[("compression", Raw::None), ("timeout", Raw::Float(2.5))]).unwrap();
        let values = r.settings.values();
        assert_eq!(values.len(), DECLARED.len());
        let get = |n: &str| values.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get("compression"), Raw::None);
        assert_eq!(get("timeout"), Raw::Float(2.5));
        assert_eq!(get("destination"), Raw::Str("timber".into()));
        assert_eq!(get("buffer_capacity"), Raw::Int(1000));
    }

    #[test]
    fn words_for_booleans() {
        let r = resolve(&[("drop_extra_events", Raw::Str("false".into()))]).unwrap();
        assert!(!r.settings.drop_extra_events);
        let r = resolve(&[("raise_exceptions", Raw::Str(" TRUE ".into()))]).unwrap();
        assert!(r.settings.raise_exceptions);
        assert!(err(&[("raise_exceptions", Raw::Str("1".into()))]).contains("True or False"));
    }

    #[test]
    fn cross_checks() {
        let e = err(&[("backoff_base", Raw::Int(5)), ("backoff_max", Raw::Int(1))]);
        assert_eq!(e, "backoff_base must be at most backoff_max (1), got 5");
        let e = err(&[("max_buffer_records", Raw::Int(10))]);
        assert!(e.starts_with("max_buffer_records must be at least buffer_capacity (1000)"));
    }

    #[test]
    fn unknown_options_suggest() {
        assert!(
            err(&[("flush_intervall", Raw::Int(1))]).contains("did you mean \"flush_interval\"")
        );
        assert!(err(&[("nonsense_thing", Raw::Int(1))]).contains("the options are"));
    }

    #[test]
    fn environment_fills_what_is_not_given() {
        let env = |k: &str| match k {
            "TIMBER_API_KEY" => Some("from-env".to_owned()),
            "TIMBER_SOURCE_ID" => Some("src".to_owned()),
            "SSL_CERT_FILE" => Some(String::new()),
            _ => None,
        };
        let r = Settings::resolve([("api_key", Raw::None), ("host", Raw::None)], env).unwrap();
        assert_eq!(r.settings.api_key.as_deref(), Some("from-env"));
        let r = Settings::resolve([("api_key", Raw::Str("given".into()))], env).unwrap();
        assert_eq!(r.settings.api_key.as_deref(), Some("given"));
        let e = Settings::resolve([], |_| None).unwrap_err().0;
        assert_eq!(
            e,
            "TimberHandler needs api_key=... or the environment variable TIMBER_API_KEY"
        );
        let bad_env = |k: &str| (k == "TIMBER_HOST").then(|| "ftp://x".to_owned());
        let e = Settings::resolve(
            [
                ("api_key", Raw::Str("k".into())),
                ("source_id", Raw::Str("s".into())),
            ],
            bad_env,
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("host (from the environment variable TIMBER_HOST) must be a URL"),
            "{e}"
        );
    }

    #[test]
    fn no_refusal_quotes_a_secret() {
        const MARK: &str = "Mk-hunter2";
        for (name, raw) in [
            ("api_key", Raw::Str(format!("{MARK}\n"))),
            ("api_key", Raw::Str(format!("{MARK} é"))),
            ("api_key", Raw::Int(1234)),
            ("username", Raw::Str(format!("{MARK}\r"))),
            ("password", Raw::Str(format!("{MARK}\0"))),
            ("host", Raw::Str(format!("http://u:{MARK}@h:99999"))),
            ("host", Raw::Str(format!("http://u:{MARK}@h/?q"))),
        ] {
            let e = err(&[(name, raw)]);
            assert!(e.starts_with(name) && !e.contains(MARK), "{e}");
        }
        for (var, value) in [
            ("TIMBER_API_KEY", format!("{MARK}\n")),
            ("TIMBER_CLICKHOUSE_USER", format!("{MARK}\n")),
            ("TIMBER_CLICKHOUSE_PASSWORD", format!("{MARK}\n")),
            ("TIMBER_HOST", format!("http://u:{MARK}@h#f")),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("Authorization=Bearer {MARK},a b=1"),
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://u:{MARK}@h:0"),
            ),
            ("HTTP_PROXY", format!("http://u:{MARK}@[bad")),
            ("HTTP_PROXY", format!("u:{MARK}@proxy")),
        ] {
            let env = |k: &str| (k == var).then(|| value.clone());
            let given = [
                ("destination", Raw::Str("otlp".into())),
                ("source_id", Raw::Str("s".into())),
            ];
            let e = Settings::resolve(given, env).unwrap_err().0;
            assert!(
                e.contains(var.trim_start_matches("TIMBER_")) || e.contains("proxy"),
                "{e}"
            );
            assert!(!e.contains(MARK), "{e}");
        }
    }

    #[test]
    fn proxy_from_the_environment_is_checked() {
        let env = |k: &str| (k == "https_proxy").then(|| "http://[bad".to_owned());
        let given = [
            ("api_key", Raw::Str("k".into())),
            ("source_id", Raw::Str("s".into())),
        ];
        assert!(Settings::resolve(given.clone(), env)
            .unwrap_err()
            .0
            .contains("invalid proxy setting"));
        let env = |k: &str| (k == "https_proxy").then(|| "http://proxy:3128".to_owned());
        assert_eq!(
            Settings::resolve(given, env).unwrap().proxy.as_deref(),
            Some("http://proxy:3128")
        );
    }
}
