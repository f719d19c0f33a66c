//! DDL of the seed tables for ClickHouse (18.16 and newer) and PostgreSQL, and
//! readers of `flink_operator_agg_result` for the threshold generator.
//!
//! ClickHouse 18.16 has no `DateTime64`: times are `DateTime('UTC')` (seconds)
//! plus a `…_ms` `UInt64` column with the milliseconds since the epoch. On
//! ClickHouse ≥ 20.1 a single `DateTime64(3, 'UTC')` column could replace the
//! pair. Aggregates are a `ReplacingMergeTree` ordered by window and key, so a
//! re-commit after a crash replaces rows instead of doubling them (read with
//! `FINAL`, or group by the key).

use streamforge_sinks::clickhouse::ClickHouse;
use streamforge_sinks::SinkError;

use crate::operator_metrics::OperatorAggRow;

/// The key of `flink_operator_agg_result`: one row per window and operator.
pub const AGG_KEY: &[&str] = &[
    "window_start_ms",
    "windowSize",
    "service",
    "operator_name",
    "operator_class",
];

/// ClickHouse DDL for the seed tables in `database`.
///
/// # Examples
/// ```
/// let ddl = streamforge::operator_metrics::schema::clickhouse_ddl("default");
/// assert!(ddl[0].contains("ReplacingMergeTree"));
/// assert!(ddl.iter().any(|s| s.contains("hourly_alarm_rules")));
/// assert!(ddl.iter().any(|s| s.contains("orders_window_metrics") && s.contains("gmv_total Decimal(18, 2)")));
/// ```
pub fn clickhouse_ddl(database: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS `{database}`.flink_operator_agg_result (
    window_start DateTime('UTC'),
    window_start_ms UInt64,
    windowSize UInt32,
    service String,
    operator_name String,
    operator_class String,
    avg_duration Float64,
    max_duration Float64,
    p95_duration Float64,
    error_rate Float64,
    total_count UInt64,
    error_count UInt64,
    success_count UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start_ms, windowSize, service, operator_name, operator_class)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{database}`.hourly_alarm_rules (
    hour_of_day UInt8,
    service String,
    operator_name String,
    operator_class String,
    avg_duration_low Float64, avg_duration_mid Float64, avg_duration_high Float64,
    max_duration_low Float64, max_duration_mid Float64, max_duration_high Float64,
    success_rate_low Float64, success_rate_mid Float64, success_rate_high Float64,
    traffic_volume_low Float64, traffic_volume_mid Float64, traffic_volume_high Float64,
    alarm_template String,
    analysis_days UInt32,
    sample_count UInt64,
    generated_time DateTime('UTC'),
    last_updated DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (service, operator_name, operator_class, hour_of_day)"
        ),
        // The orders pipeline (examples/jobs/orders.toml): one row per sliding
        // window; a replay writes a higher `version`, which replaces the row.
        format!(
            "CREATE TABLE IF NOT EXISTS `{database}`.orders_window_metrics (
    event_window_start DateTime('UTC'),
    event_window_end DateTime('UTC'),
    window_start_ms UInt64,
    order_cnt UInt64,
    gmv_total Decimal(18, 2),
    user_cnt UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(event_window_start)
ORDER BY window_start_ms"
        ),
    ]
}

/// PostgreSQL DDL for the seed tables.
///
/// # Examples
/// ```
/// let ddl = streamforge::operator_metrics::schema::postgres_ddl();
/// assert!(ddl[0].contains("PRIMARY KEY (window_start_ms, \"windowSize\""));
/// ```
pub fn postgres_ddl() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS flink_operator_agg_result (
    window_start timestamp NOT NULL,
    window_start_ms bigint NOT NULL,
    \"windowSize\" integer NOT NULL,
    service text NOT NULL,
    operator_name text NOT NULL,
    operator_class text NOT NULL,
    avg_duration double precision NOT NULL,
    max_duration double precision NOT NULL,
    p95_duration double precision NOT NULL,
    error_rate double precision NOT NULL,
    total_count bigint NOT NULL,
    error_count bigint NOT NULL,
    success_count bigint NOT NULL,
    PRIMARY KEY (window_start_ms, \"windowSize\", service, operator_name, operator_class)
)"
        .to_string(),
        "CREATE TABLE IF NOT EXISTS hourly_alarm_rules (
    hour_of_day smallint NOT NULL,
    service text NOT NULL,
    operator_name text NOT NULL,
    operator_class text NOT NULL,
    avg_duration_low double precision, avg_duration_mid double precision, avg_duration_high double precision,
    max_duration_low double precision, max_duration_mid double precision, max_duration_high double precision,
    success_rate_low double precision, success_rate_mid double precision, success_rate_high double precision,
    traffic_volume_low double precision, traffic_volume_mid double precision, traffic_volume_high double precision,
    alarm_template text,
    analysis_days integer,
    sample_count bigint,
    generated_time timestamp,
    last_updated timestamp,
    version bigint NOT NULL,
    PRIMARY KEY (service, operator_name, operator_class, hour_of_day)
)"
        .to_string(),
    ]
}

/// Reads the aggregate rows of the last `days` days from ClickHouse: windows
/// starting at or after (newest window start − `days`), so a replay of old
/// data reads its own history. Deduplicated with `FINAL`, in key order.
///
/// # Errors
/// Server errors, or rows that do not parse.
pub fn read_agg_rows_clickhouse(
    ch: &ClickHouse,
    table: &str,
    days: u32,
) -> Result<Vec<OperatorAggRow>, SinkError> {
    let sql = format!(
        "SELECT * FROM {table} FINAL WHERE window_start_ms >= \
         (SELECT max(window_start_ms) FROM {table}) - {ms} \
         ORDER BY {key} FORMAT JSONEachRow",
        ms = u64::from(days) * 86_400_000,
        key = AGG_KEY.join(", ")
    );
    parse_rows(ch.select_json(&sql)?)
}

/// Reads the aggregate rows of the last `days` days from PostgreSQL (as
/// [`read_agg_rows_clickhouse`]).
///
/// # Errors
/// Connection or query errors, or rows that do not parse.
pub fn read_agg_rows_postgres(
    url: &str,
    table: &str,
    days: u32,
) -> Result<Vec<OperatorAggRow>, SinkError> {
    let key: Vec<String> = AGG_KEY.iter().map(|k| format!("\"{k}\"")).collect();
    let sql = format!(
        "SELECT json_build_object(
            'window_start', to_char(window_start, 'YYYY-MM-DD HH24:MI:SS'),
            'window_start_ms', window_start_ms, 'windowSize', \"windowSize\",
            'service', service, 'operator_name', operator_name,
            'operator_class', operator_class, 'avg_duration', avg_duration,
            'max_duration', max_duration, 'p95_duration', p95_duration,
            'error_rate', error_rate, 'total_count', total_count,
            'error_count', error_count, 'success_count', success_count)::text
         FROM {table}
         WHERE window_start_ms >= (SELECT max(window_start_ms) FROM {table}) - {ms}
         ORDER BY {key}",
        ms = u64::from(days) * 86_400_000,
        key = key.join(", ")
    );
    parse_rows(streamforge_sinks::postgres::select_json(url, &sql)?)
}

fn parse_rows(values: Vec<serde_json::Value>) -> Result<Vec<OperatorAggRow>, SinkError> {
    values
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| SinkError::Database {
                sink: "reader",
                table: "flink_operator_agg_result".into(),
                reason: format!("row does not parse: {e}"),
            })
        })
        .collect()
}
