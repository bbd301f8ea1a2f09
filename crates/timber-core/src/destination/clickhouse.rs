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
//! ([`ClickHouse::repair`], called by the transport), and a batch sent
//! before one was made is sent again after it. Answers are judged by
//! ClickHouse's error code (the `X-ClickHouse-Exception-Code` header, else
//! the `Code: N` at the start of the body), not by the HTTP status: servers
//! before 19.x answer 500 for every error, a bad row included, and retrying
//! a bad row forever is the one thing a log pipeline must not do. An insert
//! spanning more partitions than the server takes at once is sent in parts
//! ([`ClickHouse::split`]).

use super::clickhouse_row::{RowContext, MAP_COLUMNS};
use super::clickhouse_table::{
    learnt, parse_layout, parse_version, query, Known, Layout, QueryError, Run, Table,
};
use super::{Answer, Verdict};
use crate::retry::retry_after;
use crate::settings::{Endpoint, Settings};
use std::borrow::Cow;
use std::sync::{Arc, MutexGuard};
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
    table: String,
    host: String,
    /// Where queries other than the insert go (`{host}/`).
    pub(super) query_url: String,
    create_table: bool,
    /// What is known of the table and the server, shared by every sender.
    state: Arc<Table>,
}

/// Servers from this version on have `Map`, `DateTime64`, `LowCardinality`
/// and the deduplication settings the `otel_logs` DDL uses.
const MODERN: (u32, u32) = (22, 3);

/// What a sender does after an answer the destination may cure.
#[derive(Debug)]
pub(crate) enum Cure {
    /// Nothing to cure: judge the answer.
    None,
    /// Cured (or cured already by another sender): send again, built anew.
    Resend,
    /// The cure failed: this is the batch's verdict, and what to say.
    Failed(Verdict, String),
}

impl ClickHouse {
    pub(super) fn new(s: &Settings) -> Self {
        let host = s.host.as_deref().unwrap_or(DEFAULT_HOST).to_owned();
        Self {
            row: RowContext {
                service: s
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".to_owned()),
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

    /// Before a request: learns the table's layout if it is not known (or
    /// not lately), making the table first if it is missing and
    /// `create_table` is set. The other senders wait for the first one;
    /// a failure is the batch's verdict, and nothing is learnt from it.
    pub(super) fn prepare(&self, run: &mut Run<'_>) -> Result<(), (Verdict, String)> {
        let known = self.known();
        if Table::fresh(&known) {
            return Ok(());
        }
        if known.layout.is_some() {
            // Known but old: one sender reads it again, the others go on.
            if let Some(held) = self.state.try_lock() {
                if let Ok(layout) = self.describe(run) {
                    self.state.publish(&held, |k| learnt(k, layout));
                }
            }
            return Ok(());
        }
        let held = self.state.lock();
        if self.known().layout.is_some() {
            return Ok(()); // learnt by another sender meanwhile
        }
        match self.describe(run) {
            Ok(layout) => {
                self.state.publish(&held, |k| learnt(k, layout));
                Ok(())
            }
            Err(QueryError::Refused { code: Some(c), .. }) if MISSING.contains(&c) => {
                if self.create_table {
                    self.create(run, &held)
                } else {
                    // The insert is refused by name (or the table is made meanwhile).
                    Ok(())
                }
            }
            Err(e) if transient(&e) => Err(self.failed("read the layout of", &e)),
            Err(_) => {
                // DESCRIBE refused (a user without the right): go by the
                // server's version, as the table is most likely its own.
                let nested = match query(run, "SELECT version()").ok().as_deref() {
                    Some(v) if parse_version(v).is_some_and(|v| v < MODERN) => MAP_COLUMNS.to_vec(),
                    _ => Vec::new(),
                };
                let layout = Layout {
                    columns: None,
                    nested,
                };
                self.state.publish(&held, |k| learnt(k, layout));
                Ok(())
            }
        }
    }

    fn describe(&self, run: &mut Run<'_>) -> Result<Layout, QueryError> {
        Ok(parse_layout(&query(
            run,
            &format!("DESCRIBE TABLE {}", self.table),
        )?))
    }

    /// Makes the table for the server's version, then reads its layout
    /// (a table of that name made meanwhile by someone else may differ).
    fn create(
        &self,
        run: &mut Run<'_>,
        held: &MutexGuard<'_, ()>,
    ) -> Result<(), (Verdict, String)> {
        let version = query(run, "SELECT version()").map_err(|e| self.failed("create", &e))?;
        let version = parse_version(&version).unwrap_or(MODERN);
        query(run, &create_table_sql(&self.table, version))
            .map_err(|e| self.failed("create", &e))?;
        let layout = self
            .describe(run)
            .map_err(|e| self.failed("read the layout of", &e))?;
        self.state.publish(held, |k| learnt(k, layout));
        Ok(())
    }

    /// The verdict of a batch whose repair failed: retried when the
    /// failure may pass, refused (naming the table and the answer) if not.
    fn failed(&self, what: &str, e: &QueryError) -> (Verdict, String) {
        let said = match e {
            QueryError::Transport(why) => why.clone(),
            QueryError::Refused { line, .. } => line.clone(),
        };
        let said = format!("could not {what} table {}: {said}", self.table);
        if transient(e) {
            (Verdict::Retry(None), said)
        } else {
            (Verdict::Reject(format!("ClickHouse {said}")), said)
        }
    }

    /// Acts on an answer to a request built with knowledge of `epoch`:
    /// a repair already made since is not made again (the request is sent
    /// again); else the server without the token has it left out, a missing
    /// table is made (with `create_table`), and an insert refused for its
    /// rows has the table's layout read again, in case it changed.
    pub(super) fn repair(&self, a: &Answer, epoch: u64, run: &mut Run<'_>) -> Cure {
        let c = match code(a) {
            Some(c) if (200..300).contains(&a.status) || TRANSIENT.contains(&c) => {
                return Cure::None
            }
            Some(c) if AUTH.contains(&c) => return Cure::None,
            Some(c) => c,
            None => return Cure::None,
        };
        let token = c == UNKNOWN_SETTING && text(a).contains("insert_deduplication_token");
        if c == UNKNOWN_SETTING && !token {
            return Cure::None;
        }
        let missing = MISSING.contains(&c);
        let held = self.state.lock();
        if self.known().epoch != epoch {
            return Cure::Resend;
        }
        if token {
            self.state.publish(&held, |k| k.token = false);
            return Cure::Resend;
        }
        if missing && self.create_table {
            return match self.create(run, &held) {
                Ok(()) => Cure::Resend,
                Err((verdict, said)) => Cure::Failed(verdict, said),
            };
        }
        if missing {
            // Read again before the next batch: it may be made meanwhile.
            self.state.publish(&held, |k| k.layout = None);
            return Cure::None;
        }
        match self.describe(run) {
            Ok(layout) if self.known().layout.as_ref() != Some(&layout) => {
                self.state.publish(&held, |k| learnt(k, layout));
                Cure::Resend
            }
            _ => Cure::None,
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

/// Whether a failed query may succeed later.
fn transient(e: &QueryError) -> bool {
    match e {
        QueryError::Transport(_) => true,
        QueryError::Refused { code: Some(c), .. } => TRANSIENT.contains(c),
        QueryError::Refused { status, .. } => matches!(status, 408 | 429 | 500 | 502..=599),
    }
}

const UNKNOWN_SETTING: u32 = 115;

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
        line.chars().take(300).collect::<String>()
    };
    match code(a) {
        // The same code as too many parts, but for this insert's rows: in
        // parts they go in.
        Some(TOO_MANY_PARTS) if text(a).contains(TOO_MANY_PARTITIONS) => {
            Verdict::Split(format!("ClickHouse refused the rows: {}", first_line()))
        }
        Some(c) if TRANSIENT.contains(&c) => Verdict::Retry(wait()),
        Some(c) if MISSING.contains(&c) => Verdict::Reject(format!(
            "ClickHouse has no table {table}: create it (the README has the otel_logs DDL), \
             pass create_table=True, or name another with table=... ({})",
            first_line()
        )),
        Some(c) if AUTH.contains(&c) => Verdict::Reject(format!(
            "ClickHouse refused the credentials: check username and password \
             (TIMBER_CLICKHOUSE_USER, TIMBER_CLICKHOUSE_PASSWORD) ({})",
            first_line()
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
    use crate::destination::Outcome;
    use std::time::Duration;

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

    /// A server scripted by SQL: the answers of `DESCRIBE`, `SELECT
    /// version()` and `CREATE`, each query recorded.
    struct Scripted {
        ran: Vec<String>,
        describe: Vec<Outcome>,
        version: &'static str,
    }

    impl Scripted {
        fn run(&mut self, sql: &str) -> Outcome {
            self.ran
                .push(sql.split(" (").next().unwrap_or(sql).to_owned());
            let ok = |text: &str| {
                Outcome::Answered(Answer {
                    status: 200,
                    body: text.as_bytes().to_vec(),
                    ..Answer::default()
                })
            };
            if sql.starts_with("DESCRIBE") {
                return self.describe.remove(0);
            }
            if sql == "SELECT version()" {
                return ok(self.version);
            }
            ok("")
        }
    }

    const NESTED: &str = "Timestamp\tString\nLogAttributes.key\tArray(String)\n\
                          LogAttributes.value\tArray(String)\n";

    fn described(text: &str) -> Outcome {
        Outcome::Answered(answer(200, text))
    }

    #[test]
    fn the_token_is_left_out_for_every_sender() {
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
        let mut server = Scripted {
            ran: Vec::new(),
            describe: vec![described(NESTED)],
            version: "18.16.1",
        };
        let mut run = |sql: &str| server.run(sql);
        ch.prepare(&mut run).unwrap();
        let known = ch.known();
        assert_eq!(
            ch.url(&known, "k1"),
            "http://localhost:8123/?query=INSERT%20INTO%20otel_logs%20%28%60Timestamp%60%2C%20\
             %60LogAttributes.key%60%2C%20%60LogAttributes.value%60%29%20FORMAT%20JSONEachRow\
             &input_format_skip_unknown_fields=1&date_time_input_format=best_effort\
             &insert_deduplication_token=k1"
        );
        let unknown = answer(
            404,
            "Code: 115, e.displayText() = DB::Exception: Unknown setting insert_deduplication_token",
        );
        // Two senders sent with the token: the first cures, the second
        // finds it cured and sends again too.
        assert!(matches!(
            ch.repair(&unknown, known.epoch, &mut run),
            Cure::Resend
        ));
        assert!(matches!(
            ch.repair(&unknown, known.epoch, &mut run),
            Cure::Resend
        ));
        let now = ch.known();
        assert_eq!(now.epoch, known.epoch + 1);
        assert!(!ch.url(&now, "k1").contains("insert_deduplication_token"));
        // Any other unknown setting is the user's to fix.
        let other = answer(404, "Code: 115. DB::Exception: Unknown setting foo");
        assert!(matches!(ch.repair(&other, now.epoch, &mut run), Cure::None));
        assert!(matches!(
            ch.classify(&other, SystemTime::now()),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn a_missing_table_is_made_and_a_failed_repair_tried_again() {
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
        let mut server = Scripted {
            ran: Vec::new(),
            describe: vec![
                Outcome::Answered(missing.clone()),
                Outcome::Transport("timed out".into()),
                Outcome::Answered(missing.clone()),
                described(NESTED),
            ],
            version: "18.16.1",
        };
        let mut run = |sql: &str| server.run(sql);
        // The layout cannot be read after the CREATE: retried, nothing learnt.
        let (verdict, said) = ch.prepare(&mut run).unwrap_err();
        assert_eq!(verdict, Verdict::Retry(None));
        assert!(said.contains("logs.otel_logs: timed out"), "{said}");
        assert!(ch.known().layout.is_none());
        ch.prepare(&mut run).unwrap();
        let known = ch.known();
        assert_eq!(known.layout.as_ref().unwrap().nested, ["LogAttributes"]);
        assert_eq!(
            server.ran,
            [
                "DESCRIBE TABLE logs.otel_logs",
                "SELECT version()",
                "CREATE TABLE IF NOT EXISTS logs.otel_logs",
                "DESCRIBE TABLE logs.otel_logs",
                "DESCRIBE TABLE logs.otel_logs",
                "SELECT version()",
                "CREATE TABLE IF NOT EXISTS logs.otel_logs",
                "DESCRIBE TABLE logs.otel_logs",
            ]
        );
        // A sender whose insert was built before: sent again, nothing run.
        let mut none = |_: &str| -> Outcome { panic!("cured already") };
        assert!(matches!(ch.repair(&missing, 0, &mut none), Cure::Resend));

        let modern = create_table_sql("otel_logs", (24, 8));
        assert!(modern.contains("Timestamp DateTime64(9)"));
        assert!(modern.contains("LogAttributes Map(LowCardinality(String), String)"));
        assert!(create_table_sql("t", (18, 16))
            .contains("LogAttributes Nested(key String, value String)"));

        // Without create_table nothing is made, and the refusal names the table.
        let plain = ClickHouse::new(&Settings {
            table: "t".into(),
            ..Settings::default()
        });
        let mut describe_only = |sql: &str| {
            assert!(sql.starts_with("DESCRIBE"), "{sql}");
            Outcome::Answered(missing.clone())
        };
        plain.prepare(&mut describe_only).unwrap();
        assert!(matches!(
            plain.repair(&missing, plain.known().epoch, &mut describe_only),
            Cure::None
        ));
        let Verdict::Reject(why) = plain.classify(&missing, SystemTime::now()) else {
            panic!("refused");
        };
        assert!(why.starts_with("ClickHouse has no table t"), "{why}");
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
