//! ClickHouse over HTTP: `POST {host}/?query=INSERT INTO <table> (<its
//! columns>) FORMAT JSONEachRow`, one row per record in the `otel_logs`
//! layout ([`super::clickhouse_row`]), credentials in `X-ClickHouse-User` /
//! `X-ClickHouse-Key`, and the batch's idempotency key as
//! `insert_deduplication_token`, so a batch retried after a lost answer is
//! stored once by a server that deduplicates inserts.
//!
//! Before the first insert the table's layout is read (`DESCRIBE TABLE`,
//! [`super::clickhouse_table`]): which of the row's columns it has, and
//! whether it holds the maps as `Map` or `Nested`. With `create_table=True`
//! a missing table is created, in the `otel_logs` layout the server can
//! hold (it is asked `SELECT version()`). A server without the token has it
//! left out. These repairs are made once for every sender
//! ([`super::clickhouse_repair`], called by the transport), and a batch
//! sent before one was made is sent again after it. Answers are judged by
//! ClickHouse's error code (the `X-ClickHouse-Exception-Code` header, else
//! the `Code: N` at the start of the body), not by the HTTP status: servers
//! before 19.x answer 500 for every error, a bad row included, and retrying
//! a bad row forever is the one thing a log pipeline must not do. An insert
//! spanning more partitions than the server takes at once is sent in parts
//! ([`ClickHouse::split`]).

use super::clickhouse_row::RowContext;
use super::clickhouse_table::{Known, Table};
use super::{Answer, Verdict};
use crate::retry::retry_after;
use crate::settings::{Endpoint, Settings};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// ClickHouse's HTTP port on the local machine.
const DEFAULT_HOST: &str = "http://localhost:8123";

/// The URL (the insert query, before the table's columns are known, and
/// its settings) and headers.
pub(super) fn endpoint(s: &Settings) -> Endpoint {
    let host = s.host.as_deref().unwrap_or(DEFAULT_HOST);
    let query = format!("INSERT INTO {} FORMAT JSONEachRow", s.table);
    let url = format!("{host}/?query={}{SETTINGS}", percent_encode(&query));
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
    pub(super) table: String,
    host: String,
    /// Where queries other than the insert go (`{host}/`).
    pub(super) query_url: String,
    pub(super) create_table: bool,
    /// What is known of the table and the server, shared by every sender.
    pub(super) state: Arc<Table>,
}

/// Servers from this version on have `Map`, `DateTime64`, `LowCardinality`
/// and the deduplication settings the `otel_logs` DDL uses.
pub(super) const MODERN: (u32, u32) = (22, 3);

impl ClickHouse {
    pub(super) fn new(s: &Settings) -> Self {
        let host = s.host.as_deref().unwrap_or(DEFAULT_HOST).to_owned();
        Self {
            row: RowContext {
                service: s
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".to_owned()),
                resource: Vec::new(),
            },
            table: s.table.clone(),
            query_url: format!("{host}/"),
            host,
            create_table: s.create_table,
            state: Arc::default(),
        }
    }

    /// What is known now: a request is built from one such snapshot.
    pub(super) fn known(&self) -> Arc<Known> {
        self.state.known()
    }

    /// The URL of one attempt at the batch whose idempotency key is `key`:
    /// the insert naming the table's columns once they are known, and the
    /// token unless the server refused it.
    pub(super) fn url(&self, known: &Known, key: &str) -> String {
        let columns = match known.layout.as_ref().and_then(|l| l.columns.as_ref()) {
            Some(names) => {
                let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                format!(" ({})", quoted.join(", "))
            }
            None => String::new(),
        };
        let query = format!("INSERT INTO {}{columns} FORMAT JSONEachRow", self.table);
        let mut url = format!("{}/?query={}{SETTINGS}", self.host, percent_encode(&query));
        if known.token {
            url.push_str("&insert_deduplication_token=");
            url.push_str(&percent_encode(key));
        }
        url
    }

    /// The rows of a batch in the table's layout: the map columns it holds
    /// as `Nested` as two arrays each.
    pub(super) fn rows<'a>(&self, rows: &'a [u8], known: &Known) -> Cow<'a, [u8]> {
        match &known.layout {
            Some(l) if !l.nested.is_empty() => {
                super::clickhouse_row::as_nested(rows, &l.nested).into()
            }
            _ => rows.into(),
        }
    }

    /// Judges an answer; see [`classify`].
    pub(super) fn classify(&self, a: &Answer, now: SystemTime) -> Verdict {
        classify(a, &self.table, now)
    }
}

/// The settings of every insert. A table without some of the columns (a
/// trimmed layout) still takes the rest: the rows name every otel_logs
/// column. Timestamps are sent in UTC and say so (`Z`): best_effort is the
/// parser that reads the zone (servers since 18.x have it).
const SETTINGS: &str = "&input_format_skip_unknown_fields=1&date_time_input_format=best_effort";

pub(super) const UNKNOWN_SETTING: u32 = 115;

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
pub(super) const TRANSIENT: [u32; 10] = [
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

const TOO_MANY_PARTS: u32 = 252;

/// What a 252 says when the rows of one insert fall in too many partitions
/// (`max_partitions_per_insert_block`, 100 by default: 100 days of the
/// `otel_logs` DDL), rather than merges falling behind.
const TOO_MANY_PARTITIONS: &str = "Too many partitions for single INSERT block";

/// The rows (`JSONEachRow` lines) of a batch refused for spanning too
/// many partitions, in two parts of consecutive times (each line starts
/// with its fixed-width `Timestamp`, so sorting the lines sorts the
/// times), with how many rows each holds; `None` for a single row.
pub(super) fn split(rows: &[u8]) -> Option<[(Vec<u8>, u64); 2]> {
    let mut lines: Vec<&[u8]> = rows
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() < 2 {
        return None;
    }
    lines.sort_unstable();
    let (first, second) = lines.split_at(lines.len() / 2);
    let join = |part: &[&[u8]]| {
        let mut out = Vec::with_capacity(part.iter().map(|l| l.len() + 1).sum());
        for l in part {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        (out, part.len() as u64)
    };
    Some([join(first), join(second)])
}

/// Codes of a wrong user or password.
pub(super) const AUTH: [u32; 5] = [192, 193, 194, 497, 516];

/// Codes of a missing table or database.
pub(super) const MISSING: [u32; 2] = [60, 81];

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

pub(super) fn text(a: &Answer) -> std::borrow::Cow<'_, str> {
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
        // The same code as too many parts, but for this insert's rows: in
        // parts they go in.
        Some(TOO_MANY_PARTS) if text(a).contains(TOO_MANY_PARTITIONS) => {
            Verdict::Split(format!("ClickHouse refused the rows: {}", first_line()))
        }
        Some(c) if TRANSIENT.contains(&c) => Verdict::Retry(wait()),
        // Cured before it gets here (the setting is left out): if the
        // attempt ran out of cures, the next one goes without it.
        Some(UNKNOWN_SETTING) if text(a).contains("insert_deduplication_token") => {
            Verdict::Retry(wait())
        }
        Some(c) if MISSING.contains(&c) => Verdict::Reject(format!(
            "ClickHouse has no table {table}: create it (docs/clickhouse.md has the otel_logs DDL), \
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
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    /// An answer of `status` with `body`, for the ClickHouse tests.
    pub(in crate::destination) fn answer(status: u16, body: &str) -> Answer {
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
    fn too_many_partitions_is_split_in_time_order() {
        let a = Answer {
            exception_code: Some("252".into()),
            ..answer(
                500,
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100).",
            )
        };
        assert!(matches!(
            classify(&a, "t", SystemTime::now()),
            Verdict::Split(_)
        ));
        let merges = answer(500, "Code: 252. DB::Exception: Too many parts (300).");
        assert_eq!(
            classify(&merges, "t", SystemTime::now()),
            Verdict::Retry(None)
        );
        let rows = b"{\"Timestamp\":\"2026-03\"}\n{\"Timestamp\":\"2026-01\"}\n{\"Timestamp\":\"2026-02\"}\n";
        let [(first, n1), (second, n2)] = split(rows).unwrap();
        assert_eq!((n1, n2), (1, 2));
        assert_eq!(first, b"{\"Timestamp\":\"2026-01\"}\n");
        assert_eq!(
            second,
            b"{\"Timestamp\":\"2026-02\"}\n{\"Timestamp\":\"2026-03\"}\n"
        );
        assert!(split(&first).is_none());
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
