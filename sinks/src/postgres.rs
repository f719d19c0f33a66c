//! PostgreSQL sink (the `postgres` crate): batched upserts in one transaction
//! per commit, with a commit-marker row in the same transaction.
//!
//! Rows are JSON objects; a batch is one statement
//! `INSERT INTO t (cols) SELECT cols FROM json_populate_recordset(NULL::t, $1)
//! ON CONFLICT (keys) DO UPDATE SET …`, so PostgreSQL converts the types (text
//! timestamps, numbers) by the table's own column types. The marker table
//! `streamforge_sink_commits (sink, writer) → checkpoint` is updated in the same
//! transaction; a commit whose checkpoint is not above the marker is skipped, so
//! a re-commit after a crash (or a retry whose COMMIT answer was lost) is a
//! no-op. With `key-columns` empty the rows are plain INSERTs — still
//! exactly-once with checkpoints, thanks to the marker.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use serde::Deserialize;

use streamforge_dataflow::env::expand_env;

use crate::clickhouse::{
    default_batch_interval, default_batch_rows, default_retry_timeout, DbSinkCounters,
};
use crate::error::SinkError;
use crate::retry::{retry, Attempt};
use crate::write_ahead::CommitTarget;

/// The marker table.
pub const MARKER_TABLE: &str = "streamforge_sink_commits";

/// A PostgreSQL sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// libpq-style connection string, e.g.
    /// `host=127.0.0.1 port=5432 user=sf password=${PGPASSWORD} dbname=metrics`.
    pub url: String,
    /// Table, optionally `schema.table`.
    pub table: String,
    /// Columns of the primary key / unique constraint the upsert targets;
    /// empty: plain INSERT.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Rows per statement at most.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Without checkpoints: flush at least this often.
    #[serde(default = "default_batch_interval", with = "humantime_serde")]
    pub batch_interval: Duration,
    /// How long to keep retrying while the server is unreachable.
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: Duration,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_table(table: &str) -> String {
    table.split('.').map(quote).collect::<Vec<_>>().join(".")
}

fn table_err(table: &str, reason: String) -> SinkError {
    SinkError::Database {
        sink: "postgres",
        table: table.to_string(),
        reason,
    }
}

/// The server's message and SQLSTATE, or the client's error.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// SQLSTATE classes and codes worth a retry: connection exceptions, server
/// shutting down or starting, insufficient resources, serialization failures
/// and deadlocks.
fn transient(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
        }
    }
}

/// A PostgreSQL sink target: one connection per worker.
pub struct Postgres {
    config: PostgresSinkConfig,
    url: String,
    sink_id: String,
    client: Option<Client>,
    upsert: String,
    counters: Arc<DbSinkCounters>,
}

/// A checked PostgreSQL sink: what [`Postgres::prepare`] validated, shared by
/// the workers' targets.
#[derive(Clone, Debug)]
pub struct PreparedPostgres {
    config: PostgresSinkConfig,
    url: String,
    sink_id: String,
    upsert: String,
}

impl Postgres {
    /// Connects once (before the workers start), checks that the table has
    /// every column of `columns` (the row's fields) and that the upsert is
    /// valid, and creates the marker table. `sink_id` names this sink's
    /// markers (job and sink); `fresh`: a run without restore, whose earlier
    /// markers are deleted.
    ///
    /// # Errors
    /// Unreachable server (with how to start it), missing table or columns,
    /// a key without a matching unique constraint.
    pub fn prepare(
        config: &PostgresSinkConfig,
        columns: &[String],
        sink_id: &str,
        fresh: bool,
    ) -> Result<PreparedPostgres, SinkError> {
        let url = expand_env(&config.url)?;
        let err = |reason: String| table_err(&config.table, reason);
        let db_err = |e: postgres::Error| table_err(&config.table, describe(&e));
        let mut client = Client::connect(&url, NoTls).map_err(|e| {
            err(format!(
                "{}; start the server (tests: scripts/postgres.sh start)",
                describe(&e)
            ))
        })?;
        let (schema, table) = match config.table.split_once('.') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => (String::new(), config.table.clone()),
        };
        let have: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = \
                 CASE WHEN $2 = '' THEN current_schema() ELSE $2 END ORDER BY ordinal_position",
                &[&table, &schema],
            )
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if have.is_empty() {
            return Err(err(
                "no such table; `streamforge schema postgres` prints the DDL for the seed tables"
                    .into(),
            ));
        }
        let missing: Vec<&String> = columns.iter().filter(|c| !have.contains(c)).collect();
        if !missing.is_empty() {
            return Err(err(format!(
                "schema mismatch: the table has no column(s) {missing:?} (it has {have:?})"
            )));
        }
        let t = quote_table(&config.table);
        let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let cols = cols.join(", ");
        let mut upsert = format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{t}, $1::text::json)"
        );
        if !config.key_columns.is_empty() {
            let keys: Vec<String> = config.key_columns.iter().map(|c| quote(c)).collect();
            let _ = write!(upsert, " ON CONFLICT ({}) DO ", keys.join(", "));
            let set: Vec<String> = columns
                .iter()
                .filter(|c| !config.key_columns.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
                .collect();
            if set.is_empty() {
                upsert.push_str("NOTHING");
            } else {
                let _ = write!(upsert, "UPDATE SET {}", set.join(", "));
            }
        }
        // Validates the statement (types, conflict target) without writing.
        client.execute(upsert.as_str(), &[&"[]"]).map_err(db_err)?;
        let created = client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (sink text NOT NULL, writer int NOT NULL, \
             checkpoint bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (sink, writer))"
        ));
        // Another process of the cluster may create it at the same moment.
        if let Err(e) = created {
            let raced = e
                .code()
                .is_some_and(|c| c.code() == "23505" || c.code() == "42P07");
            if !raced {
                return Err(db_err(e));
            }
        }
        if fresh {
            client
                .execute(
                    &format!("DELETE FROM {MARKER_TABLE} WHERE sink = $1"),
                    &[&sink_id],
                )
                .map_err(db_err)?;
        }
        Ok(PreparedPostgres {
            config: config.clone(),
            url,
            sink_id: sink_id.to_string(),
            upsert,
        })
    }

    /// A worker's target; it connects on its first use (retrying).
    pub fn new(prepared: &PreparedPostgres, counters: Arc<DbSinkCounters>) -> Self {
        Postgres {
            config: prepared.config.clone(),
            url: prepared.url.clone(),
            sink_id: prepared.sink_id.clone(),
            client: None,
            upsert: prepared.upsert.clone(),
            counters,
        }
    }

    fn db_err(&self, e: postgres::Error) -> SinkError {
        table_err(&self.config.table, describe(&e))
    }

    fn attempt_err(&mut self, e: postgres::Error) -> Attempt {
        if transient(&e) {
            self.client = None;
            Attempt::Transient(e.to_string())
        } else {
            Attempt::Fatal(self.db_err(e))
        }
    }

    fn client(&mut self) -> Result<&mut Client, Attempt> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let c = Client::connect(&self.url, NoTls).map_err(|e| {
                if transient(&e) {
                    Attempt::Transient(e.to_string())
                } else {
                    Attempt::Fatal(self.db_err(e))
                }
            })?;
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// The last checkpoint committed by `writer`.
    fn marker(&mut self, writer: usize) -> Result<Option<u64>, Attempt> {
        let sql = format!("SELECT checkpoint FROM {MARKER_TABLE} WHERE sink = $1 AND writer = $2");
        let id = self.sink_id.clone();
        let row = self
            .client()?
            .query_opt(sql.as_str(), &[&id, &(writer as i32)]);
        match row {
            Ok(r) => Ok(r.map(|r| r.get::<_, i64>(0) as u64)),
            Err(e) => Err(self.attempt_err(e)),
        }
    }

    /// One attempt at a commit: the marker check, the batches, the marker.
    fn try_commit(
        &mut self,
        writer: usize,
        checkpoint: Option<u64>,
        records: &[Vec<u8>],
    ) -> Result<(), Attempt> {
        let id = self.sink_id.clone();
        let upsert = self.upsert.clone();
        let batch_rows = self.config.batch_rows.max(1);
        let result = (|| -> Result<bool, postgres::Error> {
            let client = self.client.as_mut().expect("connected");
            let mut tx = client.transaction()?;
            if let Some(c) = checkpoint {
                let marker = tx.query_opt(
                    &format!(
                        "SELECT checkpoint FROM {MARKER_TABLE} WHERE sink = $1 AND writer = $2 FOR UPDATE"
                    ),
                    &[&id, &(writer as i32)],
                )?;
                if marker.is_some_and(|m| m.get::<_, i64>(0) >= c as i64) {
                    return Ok(false);
                }
            }
            let mut json = Vec::new();
            for chunk in records.chunks(batch_rows) {
                json.clear();
                json.push(b'[');
                for (i, r) in chunk.iter().enumerate() {
                    if i > 0 {
                        json.push(b',');
                    }
                    json.extend_from_slice(r);
                }
                json.push(b']');
                let text = std::str::from_utf8(&json).expect("JSON is UTF-8");
                tx.execute(upsert.as_str(), &[&text])?;
            }
            if let Some(c) = checkpoint {
                tx.execute(
                    &format!(
                        "INSERT INTO {MARKER_TABLE} (sink, writer, checkpoint) VALUES ($1, $2, $3) \
                         ON CONFLICT (sink, writer) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, \
                         committed_at = now()"
                    ),
                    &[&id, &(writer as i32), &(c as i64)],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })();
        match result {
            Ok(written) => {
                if written {
                    let c = &self.counters;
                    c.rows_total
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    c.batches_total.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => Err(self.attempt_err(e)),
        }
    }

    fn retrying<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<T, Attempt>,
    ) -> Result<T, SinkError> {
        let timeout = self.config.retry_timeout;
        let counters = self.counters.clone();
        let table = self.config.table.clone();
        let timed_out = |why: &str| SinkError::Database {
            sink: "postgres",
            table: table.clone(),
            reason: format!(
                "unreachable for {timeout:?} (last: {why}); is the server running? \
                 (tests: scripts/postgres.sh start)"
            ),
        };
        retry(
            timeout,
            |why| {
                counters.retries_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = %table, reason = why, "postgres: retrying");
            },
            timed_out,
            || {
                self.client()?;
                f(self)
            },
        )
    }
}

impl CommitTarget for Postgres {
    type Record = Vec<u8>;

    fn recover(&mut self, writer: usize) -> Result<Option<u64>, SinkError> {
        self.retrying(|s| s.marker(writer))
    }

    fn commit(
        &mut self,
        writer: usize,
        checkpoint: Option<u64>,
        records: &[Vec<u8>],
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        self.retrying(|s| s.try_commit(writer, checkpoint, records))?;
        self.counters
            .batch_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// One connection for tools (DDL, readers), with an error that says how to
/// start the server.
fn connect_once(url: &str) -> Result<Client, SinkError> {
    Client::connect(&expand_env(url)?, NoTls).map_err(|e| {
        table_err(
            "",
            format!(
                "{}; start the server (tests: scripts/postgres.sh start)",
                describe(&e)
            ),
        )
    })
}

/// Runs `sql` and returns every row's first column, which must be `json` or
/// `text` holding JSON (for readers: `SELECT row_to_json(t)::text FROM …`).
///
/// # Errors
/// Connection or query errors.
pub fn select_json(url: &str, sql: &str) -> Result<Vec<serde_json::Value>, SinkError> {
    connect_once(url)?
        .query(sql, &[])
        .map_err(|e| table_err("", describe(&e)))?
        .iter()
        .map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text).map_err(|e| table_err("", format!("answer: {e}")))
        })
        .collect()
}

/// Runs statements (DDL) separated by `;`.
///
/// # Errors
/// Connection or statement errors.
pub fn execute(url: &str, sql: &str) -> Result<(), SinkError> {
    connect_once(url)?
        .batch_execute(sql)
        .map_err(|e| table_err("", describe(&e)))
}
