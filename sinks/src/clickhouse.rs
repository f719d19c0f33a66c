//! ClickHouse sink over the HTTP interface: `INSERT … FORMAT JSONEachRow`
//! in batches, retried with backoff on connection errors and on server errors
//! that may pass; a clear error on schema mismatches.
//!
//! ClickHouse 18.16 has no transactions, so this target keeps no commit
//! marker: exactly-once comes from the table, a `ReplacingMergeTree` ordered by
//! the row's key (window and key columns) — a re-commit after a crash, or a
//! retried batch whose answer was lost, inserts rows with the same key and the
//! same values, merged away (read with `FINAL`, or group by key). See
//! `streamforge schema clickhouse` for the DDL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use streamforge_dataflow::env::expand_env;

use crate::error::SinkError;
use crate::retry::{retry, Attempt};
use crate::write_ahead::CommitTarget;

/// A ClickHouse sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// HTTP address (`${ENV}` allowed).
    #[serde(default = "default_url")]
    pub url: String,
    /// Database.
    #[serde(default = "default_database")]
    pub database: String,
    /// Table (seed: `flink_operator_agg_result`).
    pub table: String,
    /// User (`${ENV}` allowed); none: ClickHouse's `default`.
    pub user: Option<String>,
    /// Password (`${ENV}` allowed).
    pub password: Option<String>,
    /// Rows per INSERT at most.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Bytes of JSON per INSERT at most.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Without checkpoints: flush at least this often.
    #[serde(default = "default_batch_interval", with = "humantime_serde")]
    pub batch_interval: Duration,
    /// How long to keep retrying while the server is unreachable before the
    /// job stops (fail-stop; the restore resumes from the last checkpoint).
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: Duration,
}

fn default_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_database() -> String {
    "default".into()
}
/// Default rows per batch.
pub fn default_batch_rows() -> usize {
    50_000
}
/// Default bytes per batch (8 MiB).
pub fn default_batch_bytes() -> usize {
    8 << 20
}
/// Default flush interval without checkpoints.
pub fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}
/// Default retry time.
pub fn default_retry_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Counters of a database sink.
#[derive(Debug, Default)]
pub struct DbSinkCounters {
    /// Rows written (committed batches).
    pub rows_total: AtomicU64,
    /// Batches (INSERTs or transactions) committed.
    pub batches_total: AtomicU64,
    /// Failed attempts that were retried.
    pub retries_total: AtomicU64,
    /// Total time spent in committed batches, µs (latency = this / batches).
    pub batch_micros_total: AtomicU64,
}

/// ClickHouse error codes that retrying cannot fix: unknown table, column,
/// database or identifier, parse and type errors, bad credentials.
const FATAL_CODES: &[u32] = &[
    6, 16, 26, 27, 38, 41, 47, 53, 60, 62, 69, 70, 72, 81, 117, 192, 193, 194, 195, 197, 516,
];

/// The `Code: N` of a ClickHouse error message.
fn error_code(body: &str) -> Option<u32> {
    let rest = body.split("Code: ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A ClickHouse server reached over HTTP.
#[derive(Clone)]
pub struct ClickHouse {
    config: ClickHouseSinkConfig,
    agent: ureq::Agent,
    url: String,
    auth: Vec<(&'static str, String)>,
    counters: Arc<DbSinkCounters>,
    /// Columns and types learnt by [`ClickHouse::prepare`].
    layout: Option<Arc<Vec<(String, ColumnType)>>>,
}

impl ClickHouse {
    /// A client for `config` (no request is made).
    ///
    /// # Errors
    /// An unset `${ENV}` variable.
    pub fn new(
        config: &ClickHouseSinkConfig,
        counters: Arc<DbSinkCounters>,
    ) -> Result<Self, SinkError> {
        let mut auth = Vec::new();
        if let Some(u) = &config.user {
            auth.push(("user", expand_env(u)?));
        }
        if let Some(p) = &config.password {
            auth.push(("password", expand_env(p)?));
        }
        Ok(ClickHouse {
            config: config.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(300))
                .build(),
            url: expand_env(&config.url)?.trim_end_matches('/').to_string(),
            auth,
            counters,
            layout: None,
        })
    }

    fn err(&self, reason: impl ToString) -> SinkError {
        SinkError::Database {
            sink: "clickhouse",
            table: format!("{}.{}", self.config.database, self.config.table),
            reason: reason.to_string(),
        }
    }

    /// One request: `query` in the URL, `body` posted.
    fn request(&self, query: &str, body: &[u8]) -> Result<String, Attempt> {
        let mut req = self
            .agent
            .post(&self.url)
            .query("query", query)
            .query("input_format_skip_unknown_fields", "1")
            .query("output_format_json_quote_64bit_integers", "0");
        for (k, v) in &self.auth {
            req = req.query(k, v);
        }
        match req.send_bytes(body) {
            Ok(resp) => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut resp.into_reader(), &mut text)
                    .map_err(|e| Attempt::Transient(format!("reading the answer: {e}")))?;
                Ok(text)
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let text = text.trim().to_string();
                match error_code(&text) {
                    Some(code) if FATAL_CODES.contains(&code) => {
                        Err(Attempt::Fatal(self.err(format!("HTTP {status}: {text}"))))
                    }
                    _ if (400..500).contains(&status) && error_code(&text).is_none() => {
                        Err(Attempt::Fatal(self.err(format!("HTTP {status}: {text}"))))
                    }
                    _ => Err(Attempt::Transient(format!("HTTP {status}: {text}"))),
                }
            }
            Err(ureq::Error::Transport(t)) => Err(Attempt::Transient(t.to_string())),
        }
    }

    /// Runs `query` with `body`, retrying transient failures for the
    /// configured retry time.
    fn request_retrying(&self, query: &str, body: &[u8]) -> Result<String, SinkError> {
        retry(
            self.config.retry_timeout,
            |why| {
                self.counters.retries_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = %self.config.table, reason = why, "clickhouse: retrying");
            },
            |why| {
                self.err(format!(
                    "unreachable for {:?} (last: {why}); is the server running? \
                     (tests: scripts/clickhouse.sh start)",
                    self.config.retry_timeout
                ))
            },
            || self.request(query, body),
        )
    }

    /// Runs a statement or query once (no retries): DDL, checks, readers.
    ///
    /// # Errors
    /// The server's error, or a connection error that says how to start it.
    pub fn query(&self, sql: &str) -> Result<String, SinkError> {
        self.request(sql, &[]).map_err(|a| match a {
            Attempt::Fatal(e) => e,
            Attempt::Transient(why) => self.err(format!(
                "{why} (at {}); start the server (tests: scripts/clickhouse.sh start)",
                self.url
            )),
        })
    }

    /// Rows of a `SELECT … FORMAT JSONEachRow` as JSON objects.
    ///
    /// # Errors
    /// As [`ClickHouse::query`], or an answer that is not JSON lines.
    pub fn select_json(&self, sql: &str) -> Result<Vec<serde_json::Value>, SinkError> {
        self.query(sql)?
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| self.err(format!("answer: {e}"))))
            .collect()
    }

    /// Checks that the table exists and has every column in `columns`, and
    /// learns their types: inserts then use `RowBinary` for exactly those
    /// columns (ClickHouse 18.16's text parser rounds some decimals to the
    /// neighbouring double — `1.614` becomes `1.6139999999999999` — binary
    /// floats arrive exact).
    ///
    /// # Errors
    /// Unreachable server, missing table, the missing columns (by name), or a
    /// column type the binary encoder does not support.
    pub fn prepare(mut self, columns: &[String]) -> Result<Self, SinkError> {
        let have: BTreeMap<String, String> = self
            .select_json(&format!(
                "DESCRIBE TABLE `{}`.`{}` FORMAT JSONEachRow",
                self.config.database, self.config.table
            ))?
            .into_iter()
            .filter_map(|v| {
                Some((
                    v.get("name")?.as_str()?.to_string(),
                    v.get("type")?.as_str()?.to_string(),
                ))
            })
            .collect();
        let missing: Vec<&String> = columns.iter().filter(|c| !have.contains_key(*c)).collect();
        if !missing.is_empty() {
            return Err(self.err(format!(
                "schema mismatch: the table has no column(s) {missing:?} (it has {:?}); \
                 `streamforge schema clickhouse` prints the expected DDL",
                have.keys().collect::<Vec<_>>()
            )));
        }
        let layout = columns
            .iter()
            .map(|c| {
                let ty = &have[c];
                ColumnType::parse(ty)
                    .map(|t| (c.clone(), t))
                    .ok_or_else(|| self.err(format!("column {c}: type {ty} is not supported")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.layout = Some(Arc::new(layout));
        Ok(self)
    }

    /// The same client counting into `counters`.
    pub fn with_counters(mut self, counters: Arc<DbSinkCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Encodes one JSON row as `RowBinary` for `layout`.
    fn encode_binary(
        &self,
        layout: &[(String, ColumnType)],
        row: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        let value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(row)
            .map_err(|e| self.err(format!("record is not a JSON object: {e}")))?;
        for (name, ty) in layout {
            let v = value.get(name).unwrap_or(&serde_json::Value::Null);
            ty.encode(v, out)
                .map_err(|why| self.err(format!("column {name}: {why} (value {v})")))?;
        }
        Ok(())
    }

    /// Inserts JSON rows (one object each) in batches of the configured rows
    /// and bytes, each retried; `RowBinary` after [`ClickHouse::prepare`],
    /// `JSONEachRow` otherwise.
    ///
    /// # Errors
    /// A fatal server error, or the retry time passed.
    pub fn insert(&self, rows: &[Vec<u8>]) -> Result<(), SinkError> {
        let target = format!("`{}`.`{}`", self.config.database, self.config.table);
        let query = match &self.layout {
            Some(layout) => {
                let cols: Vec<String> = layout.iter().map(|(c, _)| format!("`{c}`")).collect();
                format!(
                    "INSERT INTO {target} ({}) FORMAT RowBinary",
                    cols.join(", ")
                )
            }
            None => format!("INSERT INTO {target} FORMAT JSONEachRow"),
        };
        let mut body = Vec::with_capacity(self.config.batch_bytes.min(64 << 20));
        let mut n = 0usize;
        let flush = |body: &mut Vec<u8>, n: &mut usize| -> Result<(), SinkError> {
            if *n == 0 {
                return Ok(());
            }
            let started = Instant::now();
            self.request_retrying(&query, body)?;
            let c = &self.counters;
            c.rows_total.fetch_add(*n as u64, Ordering::Relaxed);
            c.batches_total.fetch_add(1, Ordering::Relaxed);
            c.batch_micros_total
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            body.clear();
            *n = 0;
            Ok(())
        };
        for row in rows {
            if n > 0
                && (n >= self.config.batch_rows
                    || body.len() + row.len() + 1 > self.config.batch_bytes)
            {
                flush(&mut body, &mut n)?;
            }
            match &self.layout {
                Some(layout) => self.encode_binary(layout, row, &mut body)?,
                None => {
                    body.extend_from_slice(row);
                    body.push(b'\n');
                }
            }
            n += 1;
        }
        flush(&mut body, &mut n)
    }
}

/// Column types the `RowBinary` encoder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `UInt8`..`UInt64` (bytes).
    UInt(u8),
    /// `Int8`..`Int64` (bytes).
    Int(u8),
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `String`.
    String,
    /// `DateTime` / `DateTime('tz')`: seconds; text values are read as UTC.
    DateTime,
}

impl ColumnType {
    /// Parses a ClickHouse type name.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::clickhouse::ColumnType;
    /// assert_eq!(ColumnType::parse("DateTime('UTC')"), Some(ColumnType::DateTime));
    /// assert_eq!(ColumnType::parse("UInt32"), Some(ColumnType::UInt(4)));
    /// assert_eq!(ColumnType::parse("Array(String)"), None);
    /// ```
    pub fn parse(ty: &str) -> Option<Self> {
        Some(match ty {
            "UInt8" => ColumnType::UInt(1),
            "UInt16" => ColumnType::UInt(2),
            "UInt32" => ColumnType::UInt(4),
            "UInt64" => ColumnType::UInt(8),
            "Int8" => ColumnType::Int(1),
            "Int16" => ColumnType::Int(2),
            "Int32" => ColumnType::Int(4),
            "Int64" => ColumnType::Int(8),
            "Float32" => ColumnType::Float32,
            "Float64" => ColumnType::Float64,
            "String" => ColumnType::String,
            t if t == "DateTime" || t.starts_with("DateTime(") => ColumnType::DateTime,
            _ => return None,
        })
    }

    /// Appends `v` in `RowBinary`.
    ///
    /// # Errors
    /// A value of the wrong JSON type or out of range.
    pub fn encode(self, v: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            ColumnType::UInt(n) => {
                let x = v.as_u64().ok_or("not an unsigned integer")?;
                if n < 8 && x >> (8 * n) != 0 {
                    return Err(format!("out of range for UInt{}", 8 * n));
                }
                out.extend_from_slice(&x.to_le_bytes()[..n as usize]);
            }
            ColumnType::Int(n) => {
                let x = v.as_i64().ok_or("not an integer")?;
                let bits = 8 * u32::from(n);
                if n < 8 && (x < -(1i64 << (bits - 1)) || x >= 1i64 << (bits - 1)) {
                    return Err(format!("out of range for Int{bits}"));
                }
                out.extend_from_slice(&x.to_le_bytes()[..n as usize]);
            }
            ColumnType::Float32 => {
                let x = v.as_f64().ok_or("not a number")? as f32;
                out.extend_from_slice(&x.to_le_bytes());
            }
            ColumnType::Float64 => {
                let x = v.as_f64().ok_or("not a number")?;
                out.extend_from_slice(&x.to_le_bytes());
            }
            ColumnType::String => {
                let owned;
                let s = match v {
                    serde_json::Value::String(s) => s.as_str(),
                    other => {
                        owned = other.to_string();
                        &owned
                    }
                };
                let mut len = s.len() as u64;
                loop {
                    let byte = (len & 0x7f) as u8;
                    len >>= 7;
                    if len == 0 {
                        out.push(byte);
                        break;
                    }
                    out.push(byte | 0x80);
                }
                out.extend_from_slice(s.as_bytes());
            }
            ColumnType::DateTime => {
                let secs = match v {
                    serde_json::Value::String(s) => {
                        parse_utc_seconds(s).ok_or("not a `YYYY-MM-DD hh:mm:ss` time")?
                    }
                    other => other.as_u64().ok_or("not a time")?,
                };
                let secs = u32::try_from(secs).map_err(|_| "after 2106")?;
                out.extend_from_slice(&secs.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Seconds since the epoch of a UTC `YYYY-MM-DD hh:mm:ss` text.
fn parse_utc_seconds(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

impl CommitTarget for ClickHouse {
    type Record = Vec<u8>;

    /// No markers: every logged record is inserted again (the table merges
    /// rows with equal keys).
    fn recover(&mut self, _writer: usize) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }

    fn commit(
        &mut self,
        _writer: usize,
        _checkpoint: Option<u64>,
        records: &[Vec<u8>],
    ) -> Result<(), SinkError> {
        self.insert(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_parsed_from_clickhouse_messages() {
        let m = "Code: 16, e.displayText() = DB::Exception: No such column nosuch in table t";
        assert_eq!(error_code(m), Some(16));
        assert!(FATAL_CODES.contains(&16));
        assert_eq!(
            error_code("Code: 252, e.displayText() = Too many parts"),
            Some(252)
        );
        assert!(
            !FATAL_CODES.contains(&252),
            "too many parts is worth a retry"
        );
        assert_eq!(error_code("connection reset"), None);
    }

    #[test]
    fn utc_text_times_become_epoch_seconds() {
        assert_eq!(parse_utc_seconds("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_utc_seconds("2023-01-29 08:42:06"),
            Some(1_674_981_726)
        );
        assert_eq!(
            parse_utc_seconds("2024-02-29 23:59:59"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_utc_seconds("2023-13-01 00:00:00"), None);
        assert_eq!(parse_utc_seconds("2023-01-29T08:42:06Z"), None);
    }

    #[test]
    fn row_binary_encoding_of_each_type() {
        let mut out = Vec::new();
        ColumnType::UInt(4)
            .encode(&serde_json::json!(22), &mut out)
            .unwrap();
        assert_eq!(out, 22u32.to_le_bytes());
        assert!(ColumnType::UInt(1)
            .encode(&serde_json::json!(256), &mut out)
            .is_err());
        out.clear();
        ColumnType::String
            .encode(&serde_json::json!("é".repeat(100)), &mut out)
            .unwrap();
        assert_eq!(&out[..2], &[0xC8, 0x01], "varint 200");
        assert_eq!(out.len(), 2 + 200);
        out.clear();
        ColumnType::Float64
            .encode(&serde_json::json!(1.614), &mut out)
            .unwrap();
        assert_eq!(out, 1.614f64.to_le_bytes());
        out.clear();
        ColumnType::DateTime
            .encode(&serde_json::json!("2023-01-29 08:42:06"), &mut out)
            .unwrap();
        assert_eq!(out, 1_674_981_726u32.to_le_bytes());
    }
}
