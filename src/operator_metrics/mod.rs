//! The main job's domain: operator metrics per (service, operator_name)
//! window — the seed table `flink_operator_agg_result` (its row, aggregate
//! and DDL: [`schema`]) — with hourly thresholds ([`thresholds`]), the
//! broadcast rules and multi-level alerts ([`alerting`], [`alerts`]). One
//! job module among others: it builds on the engine, the API and the job
//! machinery and nothing there depends on it, except that job files may
//! name its `[alerting]` section.

pub mod alerting;
pub mod alerts;
pub mod schema;
pub mod thresholds;

use serde::{Deserialize, Serialize};
use streamforge_operators::{AggregateFunction, Count, CountIf, Max, Quantiles, Sum, WindowResult};
use streamforge_sources::{Span, SpanKey};

/// One row of `flink_operator_agg_result` (plus `p95_duration`).
///
/// Durations are milliseconds; `avg_duration` is the exact mean of integer
/// microsecond durations; `p95_duration` is a DDSketch estimate (1 % relative
/// error); `error_rate = error_count / total_count`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorAggRow {
    /// Window start, UTC, `YYYY-MM-DD hh:mm:ss` (ClickHouse `DateTime` text).
    pub window_start: String,
    /// Window start in ms since the Unix epoch.
    pub window_start_ms: u64,
    /// Window size in seconds (the seed's column name).
    #[serde(rename = "windowSize")]
    pub window_size: u64,
    /// Service.
    pub service: String,
    /// Operator name.
    pub operator_name: String,
    /// Operator class.
    pub operator_class: String,
    /// Mean duration, ms.
    pub avg_duration: f64,
    /// Maximum duration, ms.
    pub max_duration: f64,
    /// 95th percentile duration, ms.
    pub p95_duration: f64,
    /// Errors / total.
    pub error_rate: f64,
    /// Spans in the window.
    pub total_count: u64,
    /// Failed spans.
    pub error_count: u64,
    /// `total_count − error_count`.
    pub success_count: u64,
}

/// The JSON field names of [`OperatorAggRow`], in order (database columns).
pub const AGG_COLUMNS: &[&str] = &[
    "window_start",
    "window_start_ms",
    "windowSize",
    "service",
    "operator_name",
    "operator_class",
    "avg_duration",
    "max_duration",
    "p95_duration",
    "error_rate",
    "total_count",
    "error_count",
    "success_count",
];

/// The aggregate of the main job: count, errors, exact duration sum (µs), max
/// (µs), p95 (ms).
pub type MetricsAggregate = (
    Count,
    CountIf<fn(&Span) -> bool>,
    Sum<fn(&Span) -> i64>,
    Max<fn(&Span) -> i64>,
    Quantiles<fn(&Span) -> f64>,
);

/// Builds [`MetricsAggregate`].
pub fn metrics_aggregate() -> MetricsAggregate {
    (
        Count,
        CountIf::of(|s: &Span| s.is_error),
        Sum::of(|s: &Span| s.duration_us),
        Max::of(|s: &Span| s.duration_us),
        Quantiles::of(|s: &Span| s.duration_us as f64 / 1e3, &[0.95]),
    )
}

/// The output type of [`MetricsAggregate`].
pub type MetricsOut = <MetricsAggregate as AggregateFunction<Span>>::Out;

/// Formats ms since the epoch as `YYYY-MM-DD hh:mm:ss` (UTC).
pub fn format_utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Turns a fired window into a row.
///
/// # Examples
/// ```
/// use streamforge::operator_metrics::{metrics_aggregate, to_row};
/// use streamforge::prelude::*;
/// let agg = metrics_aggregate();
/// let key = SpanKey::new("cart", "GetCart", "span");
/// let mut acc = agg.create_accumulator();
/// for (d, e) in [(1_000, false), (3_000, true)] {
///     agg.add(&mut acc, &Span { event_time_ms: 0, key: key.clone(), duration_us: d, is_error: e });
/// }
/// let window = Window { start_ms: 0, end_ms: 60_000 };
/// let row = to_row(WindowResult { window, key, value: agg.get_result(&acc) });
/// assert_eq!((row.total_count, row.error_count, row.success_count), (2, 1, 1));
/// assert_eq!((row.avg_duration, row.max_duration, row.error_rate), (2.0, 3.0, 0.5));
/// assert_eq!((row.window_size, row.window_start.as_str()), (60, "1970-01-01 00:00:00"));
/// ```
pub fn to_row(r: WindowResult<SpanKey, MetricsOut>) -> OperatorAggRow {
    let (total, errors, sum_us, max_us, q) = r.value;
    OperatorAggRow {
        window_start: format_utc(r.window.start_ms),
        window_start_ms: r.window.start_ms,
        window_size: r.window.size_ms() / 1000,
        service: r.key.service().to_string(),
        operator_name: r.key.operator_name().to_string(),
        operator_class: r.key.operator_class().to_string(),
        avg_duration: if total == 0 {
            0.0
        } else {
            sum_us as f64 / total as f64 / 1e3
        },
        max_duration: max_us.unwrap_or(0) as f64 / 1e3,
        p95_duration: q[0],
        error_rate: if total == 0 {
            0.0
        } else {
            errors as f64 / total as f64
        },
        total_count: total,
        error_count: errors,
        success_count: total - errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agg_columns_are_the_row_fields_in_order() {
        let row = OperatorAggRow {
            window_start: format_utc(0),
            window_start_ms: 0,
            window_size: 60,
            service: "s".into(),
            operator_name: "o".into(),
            operator_class: "c".into(),
            avg_duration: 1.0,
            max_duration: 2.0,
            p95_duration: 2.0,
            error_rate: 0.0,
            total_count: 1,
            error_count: 0,
            success_count: 1,
        };
        let json = serde_json::to_string(&row).unwrap();
        let mut at = 0;
        for c in AGG_COLUMNS {
            let pos = json[at..]
                .find(&format!("\"{c}\":"))
                .unwrap_or_else(|| panic!("{c} missing or out of order in {json}"));
            at += pos;
        }
        let fields = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
            .unwrap()
            .len();
        assert_eq!(fields, AGG_COLUMNS.len());
    }
}
