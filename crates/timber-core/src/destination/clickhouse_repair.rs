//! The repairs of a ClickHouse destination, made by the sender that meets
//! their need while the others wait ([`super::clickhouse_table`]): the
//! table's layout read before the first insert (and again later), a
//! missing table made (with `create_table`), the deduplication token left
//! out for a server without it, and the layout read again when an insert
//! is refused for its rows. Each is published only once it succeeded; one
//! that fails is the batch's verdict (retried if the failure may pass), and
//! the next attempt tries again.

use super::clickhouse::{
    code, create_table_sql, text, ClickHouse, AUTH, MISSING, MODERN, TRANSIENT, UNKNOWN_SETTING,
};
use super::clickhouse_row::MAP_COLUMNS;
use super::clickhouse_table::{
    learnt, parse_layout, parse_version, query, Layout, QueryError, Run, Table,
};
use super::{Answer, Verdict};
use std::sync::MutexGuard;

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
            // If it cannot be read now, the one known holds for another
            // while (the insert says if the table changed).
            if let Some(held) = self.state.try_lock() {
                let layout = self.describe(run).ok();
                let old = known.layout.clone().unwrap_or_default();
                self.state
                    .publish(&held, |k| learnt(k, layout.unwrap_or(old)));
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
            if self.known().layout.is_some() {
                self.state.publish(&held, |k| k.layout = None);
            }
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
}

/// Whether a failed query may succeed later.
fn transient(e: &QueryError) -> bool {
    match e {
        QueryError::Transport(_) => true,
        QueryError::Refused { code: Some(c), .. } => TRANSIENT.contains(c),
        QueryError::Refused { status, .. } => matches!(status, 408 | 429 | 500 | 502..=599),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::clickhouse::endpoint;
    use crate::destination::clickhouse::tests::answer;
    use crate::destination::Outcome;
    use crate::settings::Settings;
    use std::time::SystemTime;

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
}
