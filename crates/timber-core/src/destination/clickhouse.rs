//! ClickHouse over HTTP: `POST {host}/?query=INSERT INTO <table> FORMAT
//! JSONEachRow`, one row per record in the `otel_logs` layout
//! ([`super::clickhouse_row`]), credentials in `X-ClickHouse-User` /
//! `X-ClickHouse-Key`, and the batch's idempotency key as
//! `insert_deduplication_token`, so a batch retried after a lost answer is
//! stored once by a server that deduplicates inserts.
//!
//! With `create_table=True`, a missing table (code 60) is created, in the
//! `otel_logs` layout the server can hold (it is asked `SELECT version()`),
//! and the batch sent again ([`ClickHouse::repair`], called by the
//! transport). Answers are judged by ClickHouse's error code (the
//! `X-ClickHouse-Exception-Code` header, else the `Code: N` at the start of
//! the body), not by the HTTP status: servers before 19.x answer 500 for
//! every error, a bad row included, and retrying a bad row forever is the
//! one thing a log pipeline must not do.

use super::clickhouse_row::RowContext;
use super::{Answer, Verdict};
use crate::retry::retry_after;
use crate::settings::{Endpoint, Settings};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// ClickHouse's HTTP port on the local machine.
const DEFAULT_HOST: &str = "http://localhost:8123";

/// The URL (the insert query and its settings) and headers.
pub(super) fn endpoint(s: &Settings) -> Endpoint {
    let host = s.host.as_deref().unwrap_or(DEFAULT_HOST);
    let query = format!("INSERT INTO {} FORMAT JSONEachRow", s.table);
    // A table without some of the columns (a trimmed layout) still takes
    // the rest: the rows name every otel_logs column.
    // Timestamps are sent in UTC and say so (`Z`): best_effort is the
    // parser that reads the zone (servers since 18.x have it).
    let url = format!(
        "{host}/?query={}&input_format_skip_unknown_fields=1&date_time_input_format=best_effort",
        percent_encode(&query)
    );
    let mut headers = vec![("Content-Type".to_owned(), "application/x-ndjson".to_owned())];
    if let Some(user) = &s.username {
        headers.push(("X-ClickHouse-User".to_owned(), user.clone()));
    }
    if let Some(password) = &s.password {
        headers.push(("X-ClickHouse-Key".to_owned(), password.clone()));
    }
    Endpoint {
        url,
        headers,
        json: false,
        resource: Vec::new(),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ClickHouse side of a destination.
#[derive(Debug, Clone)]
pub(super) struct ClickHouse {
    pub(super) row: RowContext,
    table: String,
    /// Where queries other than the insert go (`{host}/`).
    pub(super) query_url: String,
    create_table: bool,
    /// Set once the table was created (or tried): never tried twice.
    created: Arc<AtomicBool>,
    /// Set once the server said it has no `insert_deduplication_token`
    /// (before 22.x): the setting is left out from then on.
    no_token: Arc<AtomicBool>,
}

/// Servers from this version on have `Map`, `DateTime64`, `LowCardinality`
/// and the deduplication settings the `otel_logs` DDL uses.
const MODERN: (u32, u32) = (22, 3);

impl ClickHouse {
    pub(super) fn new(s: &Settings) -> Self {
        Self {
            row: RowContext {
                service: s
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".to_owned()),
                nested_maps: Arc::default(),
                resource: Vec::new(),
            },
            table: s.table.clone(),
            query_url: format!("{}/", s.host.as_deref().unwrap_or(DEFAULT_HOST)),
            create_table: s.create_table,
            created: Arc::default(),
            no_token: Arc::default(),
        }
    }

    /// The URL of one attempt at the batch whose idempotency key is `key`.
    pub(super) fn url(&self, base: &str, key: &str) -> String {
        if self.no_token.load(Ordering::Relaxed) {
            base.to_owned()
        } else {
            format!("{base}&insert_deduplication_token={}", percent_encode(key))
        }
    }

    /// Acts on a refusal the destination can cure, running queries with
    /// `run` (SQL in, the answer's text or the error out); true when the
    /// same batch should be sent again at once. Cured: a server without the
    /// deduplication setting (it is left out), and with `create_table`, a
    /// missing table (created once).
    pub(super) fn repair(
        &self,
        a: &Answer,
        run: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> bool {
        match code(a) {
            Some(UNKNOWN_SETTING) if text(a).contains("insert_deduplication_token") => {
                if self.no_token.swap(true, Ordering::Relaxed) {
                    return false;
                }
                // So old a server may lack Map too: ask, for the next rows.
                let _ = self.version(run);
                true
            }
            Some(UNKNOWN_TABLE) if self.create_table => {
                if self.created.swap(true, Ordering::Relaxed) {
                    return false;
                }
                let Some(version) = self.version(run) else {
                    return false;
                };
                run(&create_table_sql(&self.table, version)).is_ok()
            }
            _ => false,
        }
    }

    /// The server's version; rows are written for it from now on.
    fn version(&self, run: &mut dyn FnMut(&str) -> Result<String, String>) -> Option<(u32, u32)> {
        let version = parse_version(&run("SELECT version()").ok()?)?;
        self.row
            .nested_maps
            .store(version < MODERN, Ordering::Relaxed);
        Some(version)
    }

    /// The rows of a batch in the layout of the server, as far as it is
    /// known: the map columns as `Nested` for one without `Map`.
    pub(super) fn rows<'a>(&self, rows: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.row.nested_maps.load(Ordering::Relaxed) {
            super::clickhouse_row::as_nested(rows).into()
        } else {
            rows.into()
        }
    }

    /// Judges an answer; see [`classify`]. A server that does not know the
    /// deduplication setting is asked again at once without it.
    pub(super) fn classify(&self, a: &Answer, now: SystemTime) -> Verdict {
        // Normally cured by `repair` before it gets here; once only, so a
        // server that keeps saying it cannot loop.
        if code(a) == Some(UNKNOWN_SETTING)
            && text(a).contains("insert_deduplication_token")
            && !self.no_token.swap(true, Ordering::Relaxed)
        {
            return Verdict::Retry(Some(Duration::ZERO));
        }
        classify(a, &self.table, now)
    }
}

const UNKNOWN_SETTING: u32 = 115;
const UNKNOWN_TABLE: u32 = 60;

/// `major.minor` of `SELECT version()`'s answer (`18.16.1`, `24.8.4.13`).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The `CREATE TABLE` for a server of `version`: the OpenTelemetry
/// exporter's `otel_logs` (without its skip indexes, with deduplication of
/// retried inserts) on a current server; on an older one, the same column
/// names with the types it has: `Timestamp` as its text (fixed width, so it
/// sorts), the maps as `Nested(key, value)`.
pub(super) fn create_table_sql(table: &str, version: (u32, u32)) -> String {
    if version >= MODERN {
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
             Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)), \
             TimestampTime DateTime DEFAULT toDateTime(Timestamp), \
             TraceId String CODEC(ZSTD(1)), SpanId String CODEC(ZSTD(1)), TraceFlags UInt8, \
             SeverityText LowCardinality(String) CODEC(ZSTD(1)), SeverityNumber UInt8, \
             ServiceName LowCardinality(String) CODEC(ZSTD(1)), Body String CODEC(ZSTD(1)), \
             ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)), \
             ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)), \
             ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)), ScopeName String CODEC(ZSTD(1)), \
             ScopeVersion LowCardinality(String) CODEC(ZSTD(1)), \
             ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)), \
             LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1))\
             ) ENGINE = MergeTree PARTITION BY toDate(TimestampTime) \
             PRIMARY KEY (ServiceName, TimestampTime) \
             ORDER BY (ServiceName, TimestampTime, Timestamp) \
             SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000"
        )
    } else {
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
             Timestamp String, TraceId String, SpanId String, TraceFlags UInt8, \
             SeverityText String, SeverityNumber UInt8, ServiceName String, Body String, \
             ResourceAttributes Nested(key String, value String), ScopeName String, \
             LogAttributes Nested(key String, value String)\
             ) ENGINE = MergeTree() ORDER BY (ServiceName, Timestamp)"
        )
    }
}

/// Codes worth retrying: the server is busy or short of something now.
const TRANSIENT: [u32; 10] = [
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (a replica reconnecting to Keeper)
    252, // TOO_MANY_PARTS
    319, // UNKNOWN_STATUS_OF_INSERT
    999, // KEEPER_EXCEPTION
];

/// Codes of a wrong user or password.
const AUTH: [u32; 5] = [192, 193, 194, 497, 516];

/// Codes of a missing table or database.
const MISSING: [u32; 2] = [60, 81];

/// ClickHouse's error code of an answer: the header modern servers set,
/// else the body's `Code: N.` (or `Code: N,` before 19.x).
pub(super) fn code(a: &Answer) -> Option<u32> {
    if let Some(c) = a
        .exception_code
        .as_deref()
        .and_then(|c| c.trim().parse().ok())
    {
        return Some(c);
    }
    let body = text(a);
    let rest = body.trim_start().strip_prefix("Code:")?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn text(a: &Answer) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&a.body)
}

/// Delivered on 2xx. With an error code: the transient ones retried
/// (honouring `Retry-After`), every other refused for good (parse and type
/// errors above all: the same rows would fail again). Without one (a proxy
/// in front): 408, 429 and 5xx but 501 retried, the rest refused.
pub(super) fn classify(a: &Answer, table: &str, now: SystemTime) -> Verdict {
    if (200..300).contains(&a.status) {
        return Verdict::Delivered;
    }
    let wait = || a.retry_after.as_deref().and_then(|h| retry_after(h, now));
    let first_line = || {
        let t = text(a);
        let line = t.lines().next().unwrap_or("").trim();
        crate::shown::printable(line, 300)
    };
    match code(a) {
        Some(c) if TRANSIENT.contains(&c) => Verdict::Retry(wait()),
        Some(c) if MISSING.contains(&c) => Verdict::Reject(format!(
            "ClickHouse has no table {table}: create it (the README has the otel_logs DDL), \
             pass create_table=True, or name another with table=... ({})",
            first_line()
        )),
        // The code only: the server's text names the user, a credential.
        Some(c) if AUTH.contains(&c) => Verdict::Reject(format!(
            "ClickHouse refused the credentials: check username and password \
             (TIMBER_CLICKHOUSE_USER, TIMBER_CLICKHOUSE_PASSWORD) (code {c})"
        )),
        Some(_) => Verdict::Reject(format!("ClickHouse refused the rows: {}", first_line())),
        None => match a.status {
            408 | 429 | 500 | 502..=599 => Verdict::Retry(wait()),
            s => Verdict::Reject(format!("HTTP {s}{}", super::timber::snippet(&a.body))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            ..Answer::default()
        }
    }

    #[test]
    fn codes_from_the_header_or_either_body_form() {
        // 18.16 writes `Code: 27, e.displayText() = ...`; later servers `Code: 27. DB::Exception`.
        let old = answer(
            500,
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input",
        );
        let new = answer(
            400,
            "Code: 27. DB::Exception: Cannot parse input: (version 24.8)",
        );
        assert_eq!(code(&old), Some(27));
        assert_eq!(code(&new), Some(27));
        let header = Answer {
            exception_code: Some("252".into()),
            ..answer(500, "Too many parts")
        };
        assert_eq!(code(&header), Some(252));
        assert_eq!(code(&answer(502, "Bad Gateway")), None);
    }

    #[test]
    fn classified_by_code_not_status() {
        let now = SystemTime::now();
        let c = |status, body: &str| classify(&answer(status, body), "db.logs", now);
        assert_eq!(c(200, ""), Verdict::Delivered);
        for code in [26, 27, 41, 53, 117, 6, 72] {
            // Old servers answer 500 for a bad row: still never retried.
            let v = c(
                500,
                &format!("Code: {code}, e.displayText() = DB::Exception: x"),
            );
            assert!(matches!(v, Verdict::Reject(_)), "{code}");
        }
        for code in TRANSIENT {
            let v = c(500, &format!("Code: {code}. DB::Exception: busy"));
            assert_eq!(v, Verdict::Retry(None), "{code}");
        }
        let Verdict::Reject(why) = c(404, "Code: 60. DB::Exception: Table db.logs doesn't exist.")
        else {
            panic!("a missing table is refused");
        };
        assert!(why.starts_with("ClickHouse has no table db.logs"), "{why}");
        let Verdict::Reject(why) = c(
            403,
            "Code: 516. DB::Exception: default: Authentication failed",
        ) else {
            panic!("bad credentials are refused");
        };
        assert!(why.contains("TIMBER_CLICKHOUSE_PASSWORD"), "{why}");
        // No code: a proxy's answer.
        assert_eq!(c(503, "Service Unavailable"), Verdict::Retry(None));
        assert_eq!(c(500, ""), Verdict::Retry(None));
        assert!(matches!(c(404, "Not Found"), Verdict::Reject(_)));
        let a = Answer {
            retry_after: Some("3".into()),
            ..answer(503, "Code: 241. DB::Exception: Memory limit exceeded")
        };
        assert_eq!(
            classify(&a, "t", now),
            Verdict::Retry(Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn the_token_is_dropped_for_servers_without_it() {
        let s = Settings {
            table: "otel_logs".into(),
            ..Settings::default()
        };
        let ch = ClickHouse::new(&s);
        let base = endpoint(&s).url;
        assert_eq!(
            base,
            "http://localhost:8123/?query=INSERT%20INTO%20otel_logs%20FORMAT%20JSONEachRow\
             &input_format_skip_unknown_fields=1&date_time_input_format=best_effort"
        );
        assert_eq!(
            ch.url(&base, "k1"),
            format!("{base}&insert_deduplication_token=k1")
        );
        let unknown = answer(
            404,
            "Code: 115, e.displayText() = DB::Exception: Unknown setting insert_deduplication_token",
        );
        assert_eq!(
            ch.classify(&unknown, SystemTime::now()),
            Verdict::Retry(Some(Duration::ZERO))
        );
        assert_eq!(ch.url(&base, "k1"), base);
        // Any other unknown setting is the user's to fix.
        let other = answer(404, "Code: 115. DB::Exception: Unknown setting foo");
        assert!(matches!(
            ch.classify(&other, SystemTime::now()),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn the_table_is_created_once_for_the_servers_version() {
        let s = Settings {
            table: "logs.otel_logs".into(),
            create_table: true,
            ..Settings::default()
        };
        let ch = ClickHouse::new(&s);
        let missing = answer(
            404,
            "Code: 60. DB::Exception: Table logs.otel_logs doesn't exist.",
        );
        let mut ran = Vec::new();
        let mut run = |sql: &str| {
            ran.push(sql.to_owned());
            Ok(if sql == "SELECT version()" {
                "18.16.1\n".into()
            } else {
                String::new()
            })
        };
        assert!(ch.repair(&missing, &mut run));
        assert!(!ch.repair(&missing, &mut run), "tried once only");
        assert_eq!(ran.len(), 2);
        assert!(ran[1].starts_with("CREATE TABLE IF NOT EXISTS logs.otel_logs (Timestamp String,"));
        assert!(ran[1].contains("LogAttributes Nested(key String, value String)"));
        assert!(ch.row.nested_maps.load(Ordering::Relaxed));

        let modern = create_table_sql("otel_logs", (24, 8));
        assert!(modern.contains("Timestamp DateTime64(9)"));
        assert!(modern.contains("LogAttributes Map(LowCardinality(String), String)"));
        assert_eq!(parse_version("24.8.4.13"), Some((24, 8)));
        assert_eq!(parse_version("nonsense"), None);

        // Without create_table nothing is run, and the refusal names the table.
        let plain = ClickHouse::new(&Settings {
            table: "t".into(),
            ..Settings::default()
        });
        assert!(!plain.repair(&missing, &mut |_| panic!("no query without create_table")));
    }

    #[test]
    fn credentials_go_in_headers() {
        let s = Settings {
            username: Some("writer".into()),
            password: Some("pw".into()),
            host: Some("http://ch:8123".into()),
            table: "logs.otel_logs".into(),
            ..Settings::default()
        };
        let e = endpoint(&s);
        assert!(e
            .url
            .starts_with("http://ch:8123/?query=INSERT%20INTO%20logs.otel_logs%20"));
        assert!(e
            .headers
            .contains(&("X-ClickHouse-User".into(), "writer".into())));
        assert!(e
            .headers
            .contains(&("X-ClickHouse-Key".into(), "pw".into())));
    }
}
