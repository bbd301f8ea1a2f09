//! What a ClickHouse destination knows of its table and server, and the
//! repairs that teach it: the table's layout (read with `DESCRIBE TABLE`),
//! the table itself (made with `create_table`), and whether the server
//! takes `insert_deduplication_token`.
//!
//! One state per destination, shared by every sender: a repair runs under
//! one lock, so the others wait for it instead of acting on half a repair;
//! what it learnt is published at once as a new [`Known`] with the next
//! epoch, and only once the repair succeeded. A request carries the epoch
//! of the knowledge it was built with, so an answer to a request older than
//! the last repair is cured by sending the request again, built anew.

use super::clickhouse_row::{MAP_COLUMNS, ROW_COLUMNS};
use super::Outcome;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often a known layout is read again, so that a column added to the
/// table later is filled from then on.
const RELEARN_EVERY: Duration = Duration::from_secs(60);

/// The table's columns, as far as the rows are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Layout {
    /// The columns of a row the table has, named in the insert (so that an
    /// insert into a table changed since says so); `None`: not known, the
    /// insert names none and the table takes what it has.
    pub(super) columns: Option<Vec<String>>,
    /// The map columns held as `Nested(key, value)`.
    pub(super) nested: Vec<&'static str>,
}

/// What is known now; replaced whole, never changed in place.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// Bumped by every change: a request built with an older epoch was
    /// built with what is no longer true.
    pub(super) epoch: u64,
    /// The table's layout, once read (or guessed, if it cannot be read).
    pub(super) layout: Option<Layout>,
    /// False once the server refused `insert_deduplication_token`.
    pub(super) token: bool,
    /// When the layout was read.
    learnt_at: Option<Instant>,
}

impl Default for Known {
    fn default() -> Self {
        Self {
            epoch: 0,
            layout: None,
            token: true,
            learnt_at: None,
        }
    }
}

/// Why a query of a repair did not give its answer.
#[derive(Debug)]
pub(super) enum QueryError {
    /// No answer (down, timed out): worth trying again later.
    Transport(String),
    /// Refused with this code (if any), status and first line.
    Refused {
        code: Option<u32>,
        status: u16,
        line: String,
    },
}

/// Runs one query: SQL in, the answer out.
pub(super) type Run<'a> = dyn FnMut(&str) -> Outcome + 'a;

/// The shared state and its lock.
#[derive(Debug, Default)]
pub(super) struct Table {
    known: Mutex<Arc<Known>>,
    /// Held while a repair runs its queries.
    repair: Mutex<()>,
}

impl Table {
    /// What is known now.
    pub(super) fn known(&self) -> Arc<Known> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for any repair in progress, then holds the repair lock.
    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.repair.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the repair lock if no repair is in progress.
    pub(super) fn try_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.repair.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Publishes a change (call it holding the repair lock).
    pub(super) fn publish(&self, _held: &MutexGuard<'_, ()>, change: impl FnOnce(&mut Known)) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = Known::clone(&known);
        change(&mut next);
        next.epoch = known.epoch + 1;
        *known = Arc::new(next);
    }

    /// Whether the layout is known and fresh.
    pub(super) fn fresh(known: &Known) -> bool {
        known.layout.is_some() && known.learnt_at.is_some_and(|t| t.elapsed() < RELEARN_EVERY)
    }
}

/// Sets the layout learnt now; what was learnt of the server (the token)
/// is learnt again with it, as the server may have changed too.
pub(super) fn learnt(known: &mut Known, layout: Layout) {
    known.layout = Some(layout);
    known.learnt_at = Some(Instant::now());
    known.token = true;
}

/// Runs `sql`; the answer's text, or why there is none.
pub(super) fn query(run: &mut Run<'_>, sql: &str) -> Result<String, QueryError> {
    match run(sql) {
        Outcome::Transport(e) => Err(QueryError::Transport(e)),
        Outcome::Answered(a) if (200..300).contains(&a.status) => {
            Ok(String::from_utf8_lossy(&a.body).into_owned())
        }
        Outcome::Answered(a) => {
            let text = String::from_utf8_lossy(&a.body);
            let line = text.lines().next().unwrap_or("").trim();
            Err(QueryError::Refused {
                code: super::clickhouse::code(&a),
                status: a.status,
                line: line.chars().take(300).collect(),
            })
        }
    }
}

/// The layout `DESCRIBE TABLE` lists (tab-separated: name, type, default
/// kind, ...). Columns the table computes itself (`MATERIALIZED`, `ALIAS`)
/// are never written.
pub(super) fn parse_layout(describe: &str) -> Layout {
    let mut table: Vec<(&str, &str)> = Vec::new();
    for line in describe.lines() {
        let mut cols = line.split('\t');
        let (Some(name), Some(kind)) = (cols.next(), cols.next()) else {
            continue;
        };
        if matches!(cols.next(), Some("MATERIALIZED" | "ALIAS")) {
            continue;
        }
        table.push((name, kind));
    }
    let has = |name: &str| table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let mut layout = Layout::default();
    let mut columns = Vec::new();
    for name in ROW_COLUMNS {
        let key = format!("{name}.key");
        let value = format!("{name}.value");
        if MAP_COLUMNS.contains(&name) && has(&key).is_some() && has(&value).is_some() {
            layout.nested.push(name);
            columns.push(key);
            columns.push(value);
        } else if let Some(kind) = has(name) {
            if MAP_COLUMNS.contains(&name) && kind.starts_with("Nested(") {
                layout.nested.push(name);
            }
            columns.push(name.to_owned());
        }
    }
    layout.columns = (!columns.is_empty()).then_some(columns);
    layout
}

/// `major.minor` of `SELECT version()`'s answer (`18.16.1`, `24.8.4.13`).
pub(super) fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_read_from_describe() {
        // 18.16's DESCRIBE of the Nested layout, trimmed, with a computed column.
        let old = "Timestamp\tString\t\t\nBody\tString\t\t\n\
                   LogAttributes.key\tArray(String)\t\t\nLogAttributes.value\tArray(String)\t\t\n\
                   ServiceName\tString\tMATERIALIZED\t'x'\n";
        let layout = parse_layout(old);
        assert_eq!(layout.nested, ["LogAttributes"]);
        assert_eq!(
            layout.columns.unwrap(),
            [
                "Timestamp",
                "Body",
                "LogAttributes.key",
                "LogAttributes.value"
            ]
        );
        let current = "Timestamp\tDateTime64(9)\t\t\t\t\t\n\
                       TimestampTime\tDateTime\tDEFAULT\ttoDateTime(Timestamp)\t\t\t\n\
                       ResourceAttributes\tMap(LowCardinality(String), String)\t\t\t\t\t\n\
                       LogAttributes\tMap(LowCardinality(String), String)\t\t\t\t\t\n";
        let layout = parse_layout(current);
        assert!(layout.nested.is_empty());
        assert_eq!(
            layout.columns.unwrap(),
            ["Timestamp", "ResourceAttributes", "LogAttributes"]
        );
        assert_eq!(parse_layout("Other\tString\n").columns, None);
        assert_eq!(parse_version("24.8.4.13"), Some((24, 8)));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn changes_are_published_with_the_next_epoch() {
        let t = Table::default();
        let before = t.known();
        assert!(before.token && before.layout.is_none() && !Table::fresh(&before));
        {
            let held = t.lock();
            assert!(t.try_lock().is_none(), "one repair at a time");
            t.publish(&held, |k| learnt(k, Layout::default()));
        }
        let after = t.known();
        assert_eq!(after.epoch, before.epoch + 1);
        assert!(Table::fresh(&after));
        assert_eq!(
            before.epoch, 0,
            "what a request was built with stays as it was"
        );
    }
}
