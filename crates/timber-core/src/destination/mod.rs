//! Where batches go: one type per backend turns records into a request body,
//! names the URL and headers, and judges the answer.
//!
//! The queue, the senders and the spool know nothing of the backend: they
//! move opaque encoded records and batches, ask [`Destination::request`] for
//! what to send, and act on the [`Verdict`] of [`Destination::classify`], a
//! pure function of the answer. A new backend is one more [`Kind`] and one
//! more file here.

mod betterstack;
mod clickhouse;
mod clickhouse_repair;
mod clickhouse_row;
mod clickhouse_table;
mod otlp;
mod otlp_json;
pub mod otlp_proto;
mod timber;

use crate::compress::Compression;
use crate::encode::{Msgpack, Truncating, MAX_ARRAY_HEADER};
use crate::event::{write_frame, Event, Policy};
use crate::queue::{MAX_BATCH_BYTES, MAX_REQUEST_BYTES};
use crate::settings::{Endpoint, Need, Resolved, Settings, SettingsError};
use crate::value::Value;
use std::time::{Duration, SystemTime};

pub(crate) use clickhouse_repair::Cure;

/// The backends records can be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Timber frames API: `POST {host}/sources/{source_id}/frames`.
    Timber,
    /// OpenTelemetry's OTLP/HTTP: `POST {endpoint}/v1/logs`.
    Otlp,
    /// Better Stack (Timber's successor): `POST {host}/`, the same frames.
    BetterStack,
    /// ClickHouse's HTTP interface: rows of the `otel_logs` layout.
    ClickHouse,
}

impl Kind {
    /// Every value of the `destination` option, for messages.
    pub const ACCEPTED: &'static str = "'timber', 'otlp', 'betterstack', 'clickhouse'";

    /// Reads the `destination` option.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "timber" => Some(Kind::Timber),
            "otlp" => Some(Kind::Otlp),
            "betterstack" => Some(Kind::BetterStack),
            "clickhouse" => Some(Kind::ClickHouse),
            _ => None,
        }
    }

    /// The option's value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Timber => "timber",
            Kind::Otlp => "otlp",
            Kind::BetterStack => "betterstack",
            Kind::ClickHouse => "clickhouse",
        }
    }

    /// Largest batch body, before compression: the 1 MB the Timber API
    /// (and Better Stack's, and common OTLP receivers') accept per request;
    /// for ClickHouse, whose inserts are best large and few, 16 MB.
    pub fn max_batch_bytes(self) -> usize {
        match self {
            Kind::ClickHouse => MAX_BATCH_BYTES,
            Kind::Timber | Kind::Otlp | Kind::BetterStack => MAX_REQUEST_BYTES,
        }
    }

    /// The options this backend cannot do without: name, which, variable.
    pub fn needs(self) -> &'static [(&'static str, Need, &'static str)] {
        match self {
            Kind::Timber => &[
                ("api_key", Need::ApiKey, "TIMBER_API_KEY"),
                ("source_id", Need::SourceId, "TIMBER_SOURCE_ID"),
            ],
            Kind::BetterStack => &[("api_key", Need::ApiKey, "TIMBER_API_KEY")],
            Kind::Otlp | Kind::ClickHouse => &[],
        }
    }
}

/// The URL and headers for the settings, with the destination's own
/// defaults and environment (`given` names the options the user set, so a
/// destination's default applies only to what was not).
pub(crate) fn configure(
    s: &mut Settings,
    given: &[&str],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, SettingsError> {
    match s.destination {
        Kind::Timber => Ok(timber::endpoint(s)),
        Kind::BetterStack => Ok(betterstack::endpoint(s, given)),
        Kind::Otlp => otlp::endpoint(s, given, env),
        // ClickHouse rows carry the resource as OTLP's does.
        Kind::ClickHouse => Ok(Endpoint {
            resource: otlp::resource(s, env),
            ..clickhouse::endpoint(s)
        }),
    }
}

/// What a server answered to one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The `Location` header, if any.
    pub location: Option<String>,
    /// The `X-ClickHouse-Exception-Code` header, if any.
    pub exception_code: Option<String>,
    /// The start of the body (read with a cap).
    pub body: Vec<u8>,
}

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered.
    Answered(Answer),
    /// No answer: connection refused or reset, timeout, TLS failure.
    Transport(String),
}

/// What to do with a batch after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Delivered,
    /// Try again, no earlier than the given delay if the server named one.
    Retry(Option<Duration>),
    /// Refused for good: drop it, counted as rejected, and say why.
    Reject(String),
    /// Accepted, except for `rejected` records (counted as rejected, never
    /// retried), for the reason given.
    Partial {
        /// How many records the endpoint refused.
        rejected: u64,
        /// What it said.
        why: String,
    },
    /// Refused for what its records are together, not for any one of them
    /// (ClickHouse: more partitions than one insert may touch): sent again
    /// in parts, within the same attempt; refused (for this reason) if it
    /// cannot be split.
    Split(String),
}

/// A request ready for the wire: the body compressed once, reused by every
/// attempt while what the destination knows stays the same.
#[derive(Debug)]
pub struct Body {
    /// The bytes sent.
    pub bytes: Vec<u8>,
    /// `Content-Encoding`, if compressed.
    pub encoding: Option<&'static str>,
    /// Where it goes (ClickHouse's names the table's columns and carries
    /// the batch's key).
    pub url: String,
    /// The destination's knowledge it was built with ([`Destination::generation`]).
    pub generation: u64,
}

/// Longest string kept whole in a record too large for a request.
pub const TRUNCATE_STRINGS_AT: usize = 16 * 1024;

/// One configured backend.
#[derive(Debug, Clone)]
pub struct Destination {
    kind: Kind,
    endpoint: Endpoint,
    compression: Compression,
    policy: Policy,
    otlp: Option<otlp::Otlp>,
    clickhouse: Option<clickhouse::ClickHouse>,
}

impl Destination {
    /// The backend the settings name.
    pub fn new(resolved: &Resolved) -> Self {
        let s = &resolved.settings;
        Self {
            kind: s.destination,
            endpoint: resolved.endpoint.clone(),
            compression: s.compression,
            policy: Policy {
                include_extra_attributes: s.include_extra_attributes,
                lower_case_levels: s.destination == Kind::BetterStack,
                redact: s.redact.clone().into(),
            },
            otlp: (s.destination == Kind::Otlp).then(|| otlp::Otlp::new(&resolved.endpoint)),
            clickhouse: (s.destination == Kind::ClickHouse).then(|| {
                let mut ch = clickhouse::ClickHouse::new(s);
                ch.row.set_resource(&resolved.endpoint.resource);
                ch
            }),
        }
    }

    /// How many times what the destination knows of the server changed (a
    /// repair made): a request built before the last change is built again.
    pub fn generation(&self) -> u64 {
        self.clickhouse.as_ref().map_or(0, |ch| ch.known().epoch)
    }

    /// Where a destination's own queries go (ClickHouse's `{host}/`), if it
    /// has any.
    pub fn query_url(&self) -> Option<&str> {
        self.clickhouse.as_ref().map(|ch| ch.query_url.as_str())
    }

    /// Before a request: learns what must be known first (ClickHouse: the
    /// table's layout, making the table with `create_table`), running
    /// queries with `run`. On failure, the batch's verdict and what to say.
    pub(crate) fn prepare(
        &self,
        run: &mut dyn FnMut(&str) -> Outcome,
    ) -> Result<(), (Verdict, String)> {
        match &self.clickhouse {
            Some(ch) => ch.prepare(run),
            None => Ok(()),
        }
    }

    /// Acts on an answer to a request built at `generation` that the
    /// destination can cure by itself (ClickHouse: a missing table with
    /// `create_table`, a setting the server lacks, a table changed since
    /// its layout was read), running queries with `run`.
    pub(crate) fn repair(
        &self,
        a: &Answer,
        generation: u64,
        run: &mut dyn FnMut(&str) -> Outcome,
    ) -> Cure {
        match &self.clickhouse {
            Some(ch) => ch.repair(a, generation, run),
            None => Cure::None,
        }
    }

    /// The records of a batch refused with [`Verdict::Split`] in two parts
    /// (each a batch of its own, without the array header), with how many
    /// records each holds; `None` if it cannot be split.
    pub fn split(&self, batch: &[u8]) -> Option<[(Vec<u8>, u64); 2]> {
        self.clickhouse
            .as_ref()
            .and_then(|_| clickhouse::split(strip_array_header(batch)))
    }

    /// The URL without any `user:password@`, for messages.
    pub fn display_url(&self) -> String {
        display_url(&self.endpoint.url)
    }

    /// Headers of every request (authorization, content type).
    pub fn headers(&self) -> &[(String, String)] {
        &self.endpoint.headers
    }

    /// Encodes one event as this backend's record into `out` (cleared
    /// first). A record too large for any request is encoded again with its
    /// long strings cut rather than lost. Returns the record's own time if
    /// the destination cannot hold it and wrote another (ClickHouse: one
    /// outside 1970-2106), so that it is counted and said.
    pub fn encode<E: Event>(
        &self,
        event: &E,
        context: &[(Box<str>, Value)],
        out: &mut Vec<u8>,
    ) -> Option<String> {
        if let Some(otlp) = &self.otlp {
            out.clear();
            otlp.encode(event, context, &self.policy, out, None);
            if out.len() + MAX_ARRAY_HEADER > MAX_REQUEST_BYTES {
                out.clear();
                otlp.encode(event, context, &self.policy, out, Some(TRUNCATE_STRINGS_AT));
            }
            return None;
        }
        if let Some(ch) = &self.clickhouse {
            out.clear();
            let retimed = clickhouse_row::encode(&ch.row, event, context, &self.policy, out, None);
            if out.len() + MAX_ARRAY_HEADER > MAX_REQUEST_BYTES {
                out.clear();
                let cut = Some(TRUNCATE_STRINGS_AT);
                clickhouse_row::encode(&ch.row, event, context, &self.policy, out, cut);
            }
            return retimed;
        }
        match self.kind {
            Kind::Timber | Kind::BetterStack | Kind::Otlp | Kind::ClickHouse => {
                let mut sink = Msgpack {
                    buf: std::mem::take(out),
                };
                sink.buf.clear();
                write_frame(&mut sink, event, context, &self.policy);
                if sink.buf.len() + MAX_ARRAY_HEADER > MAX_REQUEST_BYTES {
                    let mut cut = Truncating {
                        inner: Msgpack { buf: sink.buf },
                        max: TRUNCATE_STRINGS_AT,
                    };
                    cut.inner.buf.clear();
                    write_frame(&mut cut, event, context, &self.policy);
                    sink.buf = cut.inner.buf;
                }
                *out = sink.buf;
                None
            }
        }
    }

    /// The request of a batch (as the queue assembled it: a msgpack array
    /// header, then the records) whose idempotency key is `key`, the body
    /// compressed, as what the destination knows now has it.
    pub fn body(&self, batch: &[u8], key: &str) -> Body {
        let assembled: std::borrow::Cow<'_, [u8]>;
        let mut url = None;
        let mut generation = 0;
        let batch = match (&self.otlp, &self.clickhouse) {
            (Some(otlp), _) => {
                assembled = otlp.body(strip_array_header(batch)).into();
                &assembled[..]
            }
            // The rows, one per line, are the JSONEachRow body, in the
            // table's layout; the URL names its columns.
            (None, Some(ch)) => {
                let known = ch.known();
                assembled = ch.rows(strip_array_header(batch), &known);
                url = Some(ch.url(&known, key));
                generation = known.epoch;
                &assembled[..]
            }
            (None, None) => batch,
        };
        let url = url.unwrap_or_else(|| self.endpoint.url.clone());
        let (bytes, encoding) = match self.compression.encode(batch) {
            Some(bytes) => (bytes, self.compression.header()),
            None => (batch.to_vec(), None),
        };
        Body {
            bytes,
            encoding,
            url,
            generation,
        }
    }

    /// Judges one attempt.
    pub fn classify(&self, outcome: &Outcome, now: SystemTime) -> Verdict {
        match outcome {
            Outcome::Transport(_) => Verdict::Retry(None),
            Outcome::Answered(a) if (300..400).contains(&a.status) => redirect(a),
            Outcome::Answered(a) => match self.kind {
                Kind::Timber => timber::classify(a, now),
                Kind::BetterStack => betterstack::classify(a, now),
                Kind::Otlp => otlp::classify(a, now),
                Kind::ClickHouse => match &self.clickhouse {
                    Some(ch) => ch.classify(a, now),
                    None => Verdict::Reject("not configured for ClickHouse".into()),
                },
            },
        }
    }
}

/// The records of a batch without the msgpack array header the queue puts
/// in front of them.
fn strip_array_header(batch: &[u8]) -> &[u8] {
    let skip = match batch.first() {
        Some(0x90..=0x9f) => 1,
        Some(0xdc) => 3,
        Some(0xdd) => 5,
        _ => 0,
    };
    batch.get(skip..).unwrap_or_default()
}

/// Redirects are never followed: a POST turned into a GET would lose the
/// batch while counting it sent, and the key would go to another host.
fn redirect(a: &Answer) -> Verdict {
    let to = a.location.as_deref().unwrap_or("another URL");
    Verdict::Reject(format!(
        "the endpoint redirects ({}) to {}; set host to the final URL",
        a.status,
        display_url(to)
    ))
}

/// `url` without any `user:password@`.
pub fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A record with a time and a message and nothing else, for the
/// destinations' tests.
#[cfg(test)]
pub(super) struct Bare {
    pub(super) time: crate::event::Time,
    pub(super) message: String,
}

#[cfg(test)]
impl Bare {
    /// `message`, logged at the epoch.
    pub(super) fn at_zero(message: impl Into<String>) -> Self {
        Self {
            time: crate::event::Time::UnixMicros(0),
            message: message.into(),
        }
    }
}

#[cfg(test)]
impl Event for Bare {
    fn time(&self) -> crate::event::Time {
        self.time
    }
    fn level(&self) -> &str {
        "INFO"
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn runtime(&self) -> crate::record::Runtime<'_> {
        crate::record::Runtime::default()
    }
    fn system(&self) -> crate::record::System<'_> {
        crate::record::System::default()
    }
    fn error(&self) -> Option<crate::record::ErrorInfo> {
        None
    }
    fn extra_count(&self) -> usize {
        0
    }
    fn extra_name(&self, _: usize) -> &str {
        ""
    }
    fn extra_is_map(&self, _: usize) -> bool {
        false
    }
    fn write_extra<S: crate::encode::Sink>(&self, _: usize, _: &str, _: &mut S) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Outcome {
        Outcome::Answered(Answer {
            status,
            ..Answer::default()
        })
    }

    fn timber() -> Destination {
        Destination::new(
            &crate::settings::Settings::resolve(
                [
                    ("api_key", crate::settings::Raw::Str("k".into())),
                    ("source_id", crate::settings::Raw::Str("s".into())),
                ],
                |_| None,
            )
            .unwrap(),
        )
    }

    #[test]
    fn redirects_are_refused_by_name() {
        let d = timber();
        let to = Outcome::Answered(Answer {
            status: 301,
            location: Some("https://u:p@example.com/x".into()),
            ..Answer::default()
        });
        assert_eq!(
            d.classify(&to, SystemTime::now()),
            Verdict::Reject(
                "the endpoint redirects (301) to https://example.com/x; set host to the final URL"
                    .into()
            )
        );
        for s in [302, 307, 308] {
            assert!(matches!(
                d.classify(&answer(s), SystemTime::now()),
                Verdict::Reject(_)
            ));
        }
        assert_eq!(
            d.classify(&answer(202), SystemTime::now()),
            Verdict::Delivered
        );
    }

    #[test]
    fn a_record_too_large_for_a_request_goes_out_cut() {
        let d = timber();
        let mut out = Vec::new();
        d.encode(
            &Bare::at_zero("x".repeat(3 * MAX_REQUEST_BYTES)),
            &[],
            &mut out,
        );
        assert!(out.len() + MAX_ARRAY_HEADER <= MAX_REQUEST_BYTES);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("[truncated 2983616 bytes]"),
            "{}",
            &text[..100]
        );
        d.encode(&Bare::at_zero("small"), &[], &mut out);
        assert!(String::from_utf8_lossy(&out).contains("small"));
    }

    #[test]
    fn display_url_hides_credentials() {
        assert_eq!(display_url("https://u:p@h:1/a/b"), "https://h:1/a/b");
        assert_eq!(display_url("http://h"), "http://h");
    }
}
