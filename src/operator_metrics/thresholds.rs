//! Dynamic hourly thresholds (seed `hourly_alarm_rules`) from stored aggregate
//! rows: per (hour of day, service, operator_name, operator_class), over the
//! last N days, the seed's formulas on avg, sample standard deviation and exact
//! quantiles of each metric.
//!
//! Metrics per stored row: `avg_duration` and `max_duration` (ms, alert when
//! above), `traffic_volume = total_count` (alert when above) and
//! `success_rate = success_count / total_count` (alert when below).
//!
//! Above-alert metrics (the seed's formulas), with σ the sample standard
//! deviation (`stddevSamp`) and `f` the hour factor:
//! - low  = max(P75 + 0.5·σ·f, avg·1.1)
//! - mid  = max(P90 + 1.0·σ·f, avg·1.3)
//! - high = max(P95 + 2.0·σ·f, avg·1.8)
//!
//! Below-alert metric (success rate), mirrored: lower quantiles, minus σ, and
//! `min` (the less sensitive of the two, as `max` is above), clamped at 0:
//! - low  = max(0, min(P25 − 0.5·σ·f, avg·0.99))
//! - mid  = max(0, min(P10 − 1.0·σ·f, avg·0.97))
//! - high = max(0, min(P5 − 2.0·σ·f, avg·0.90))
//!
//! Quantiles are exact on the stored rows with ClickHouse's `quantileExact`
//! rule: the element at index ⌊q·n⌋ of the sorted values (clamped to n − 1),
//! so a `SELECT quantileExact(0.95)(…)` on the same rows agrees. σ of a single
//! sample is 0.
//!
//! Hour factor (defaults, configurable): 1.2 at the peak hours 9–11, 14–16 and
//! 20–22 (wider thresholds when traffic is high and noisy), 0.8 at 0–6 (quiet
//! hours: deviations matter more), 1.0 otherwise. Hours are UTC hours of the
//! window start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::operator_metrics::{format_utc, OperatorAggRow};

/// Settings of the threshold generator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ThresholdSettings {
    /// Days of history, back from the newest stored window.
    #[serde(default = "default_days")]
    pub analysis_days: u32,
    /// Groups with fewer rows get no rule (the seed's HAVING).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Hour factor at peak hours.
    #[serde(default = "default_peak")]
    pub peak_factor: f64,
    /// Peak hours of day (UTC).
    #[serde(default = "default_peak_hours")]
    pub peak_hours: Vec<u8>,
    /// Hour factor at night.
    #[serde(default = "default_night")]
    pub night_factor: f64,
    /// Night hours of day (UTC).
    #[serde(default = "default_night_hours")]
    pub night_hours: Vec<u8>,
    /// Alarm text template; `{service}`, `{operator_name}`, `{metric}`,
    /// `{level}`, `{value}`, `{threshold}` are replaced.
    #[serde(default = "default_template")]
    pub alarm_template: String,
}

fn default_days() -> u32 {
    7
}
fn default_min_samples() -> usize {
    3
}
fn default_peak() -> f64 {
    1.2
}
fn default_peak_hours() -> Vec<u8> {
    vec![9, 10, 11, 14, 15, 16, 20, 21, 22]
}
fn default_night() -> f64 {
    0.8
}
fn default_night_hours() -> Vec<u8> {
    (0..=6).collect()
}
fn default_template() -> String {
    "{level}: {service} {operator_name} {metric} = {value} (threshold {threshold})".into()
}

impl Default for ThresholdSettings {
    fn default() -> Self {
        ThresholdSettings {
            analysis_days: default_days(),
            min_samples: default_min_samples(),
            peak_factor: default_peak(),
            peak_hours: default_peak_hours(),
            night_factor: default_night(),
            night_hours: default_night_hours(),
            alarm_template: default_template(),
        }
    }
}

impl ThresholdSettings {
    /// The hour factor `f` of an hour of day.
    pub fn hour_factor(&self, hour: u8) -> f64 {
        if self.peak_hours.contains(&hour) {
            self.peak_factor
        } else if self.night_hours.contains(&hour) {
            self.night_factor
        } else {
            1.0
        }
    }
}

/// Low/mid/high thresholds of one metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Levels {
    /// LOW level threshold.
    pub low: f64,
    /// MID level threshold.
    pub mid: f64,
    /// HIGH level threshold.
    pub high: f64,
}

/// One row of `hourly_alarm_rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmRule {
    /// Hour of day (UTC), 0–23.
    pub hour_of_day: u8,
    /// Service.
    pub service: String,
    /// Operator name.
    pub operator_name: String,
    /// Operator class.
    pub operator_class: String,
    /// Mean duration thresholds, ms (alert above).
    pub avg_duration_low: f64,
    /// See `avg_duration_low`.
    pub avg_duration_mid: f64,
    /// See `avg_duration_low`.
    pub avg_duration_high: f64,
    /// Max duration thresholds, ms (alert above).
    pub max_duration_low: f64,
    /// See `max_duration_low`.
    pub max_duration_mid: f64,
    /// See `max_duration_low`.
    pub max_duration_high: f64,
    /// Success-rate thresholds, 0–1 (alert below).
    pub success_rate_low: f64,
    /// See `success_rate_low`.
    pub success_rate_mid: f64,
    /// See `success_rate_low`.
    pub success_rate_high: f64,
    /// Spans-per-window thresholds (alert above).
    pub traffic_volume_low: f64,
    /// See `traffic_volume_low`.
    pub traffic_volume_mid: f64,
    /// See `traffic_volume_low`.
    pub traffic_volume_high: f64,
    /// Alarm text template.
    pub alarm_template: String,
    /// Days of history used.
    pub analysis_days: u32,
    /// Stored rows the thresholds come from.
    pub sample_count: u64,
    /// When generated (UTC `YYYY-MM-DD hh:mm:ss`).
    pub generated_time: String,
    /// Newest window used (UTC `YYYY-MM-DD hh:mm:ss`).
    pub last_updated: String,
    /// Rule version: the generation time in ms.
    pub version: u64,
}

/// The exact quantile of sorted `values` (ClickHouse `quantileExact`).
///
/// # Examples
/// ```
/// use streamforge::operator_metrics::thresholds::quantile_exact;
/// let v = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(quantile_exact(&v, 0.5), 3.0); // index ⌊0.5·4⌋ = 2
/// assert_eq!(quantile_exact(&v, 0.95), 4.0);
/// assert_eq!(quantile_exact(&v, 0.0), 1.0);
/// ```
pub fn quantile_exact(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Thresholds of an above-alert metric.
pub fn above_levels(values: &mut [f64], f: f64) -> Levels {
    values.sort_by(f64::total_cmp);
    let (avg, std) = mean_std(values);
    let q = |p| quantile_exact(values, p);
    Levels {
        low: (q(0.75) + 0.5 * std * f).max(avg * 1.1),
        mid: (q(0.90) + 1.0 * std * f).max(avg * 1.3),
        high: (q(0.95) + 2.0 * std * f).max(avg * 1.8),
    }
}

/// Thresholds of a below-alert metric (success rate).
pub fn below_levels(values: &mut [f64], f: f64) -> Levels {
    values.sort_by(f64::total_cmp);
    let (avg, std) = mean_std(values);
    let q = |p| quantile_exact(values, p);
    Levels {
        low: (q(0.25) - 0.5 * std * f).min(avg * 0.99).max(0.0),
        mid: (q(0.10) - 1.0 * std * f).min(avg * 0.97).max(0.0),
        high: (q(0.05) - 2.0 * std * f).min(avg * 0.90).max(0.0),
    }
}

/// Group key: (hour of day, service, operator_name, operator_class).
pub type GroupKey = (u8, String, String, String);

/// The hour of day (UTC) of a time in ms.
pub fn hour_of_day(ms: u64) -> u8 {
    ((ms / 3_600_000) % 24) as u8
}

/// The metric values of one stored row that thresholds come from (`Ord`, so it
/// can be a differential dataflow record: floats are kept as their bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Window start, ms (makes samples of one group distinct).
    pub window_start_ms: u64,
    avg_duration_bits: u64,
    max_duration_bits: u64,
    /// Spans in the window.
    pub total_count: u64,
    /// Successful spans in the window.
    pub success_count: u64,
}

impl Sample {
    /// The sample of a stored row.
    pub fn of(r: &OperatorAggRow) -> Self {
        Sample {
            window_start_ms: r.window_start_ms,
            avg_duration_bits: r.avg_duration.to_bits(),
            max_duration_bits: r.max_duration.to_bits(),
            total_count: r.total_count,
            success_count: r.success_count,
        }
    }

    /// Mean duration, ms.
    pub fn avg_duration(&self) -> f64 {
        f64::from_bits(self.avg_duration_bits)
    }

    /// Max duration, ms.
    pub fn max_duration(&self) -> f64 {
        f64::from_bits(self.max_duration_bits)
    }

    /// Successes / total (1 for an empty window), as [`success_rate`].
    pub fn success_rate(&self) -> f64 {
        if self.total_count == 0 {
            1.0
        } else {
            self.success_count as f64 / self.total_count as f64
        }
    }
}

/// The thresholds of one group, before they become an [`AlarmRule`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupThresholds {
    /// Mean duration.
    pub avg: Levels,
    /// Max duration.
    pub max: Levels,
    /// Success rate (below-alert).
    pub success: Levels,
    /// Spans per window.
    pub traffic: Levels,
    /// Samples used.
    pub sample_count: u64,
    /// Newest window start used, ms.
    pub last_ms: u64,
}

impl GroupThresholds {
    /// The seed formulas over `samples` (non-empty) with hour factor `f`.
    pub fn of(samples: &[Sample], f: f64) -> Self {
        let col = |m: fn(&Sample) -> f64| samples.iter().map(m).collect::<Vec<_>>();
        GroupThresholds {
            avg: above_levels(&mut col(Sample::avg_duration), f),
            max: above_levels(&mut col(Sample::max_duration), f),
            traffic: above_levels(&mut col(|s| s.total_count as f64), f),
            success: below_levels(&mut col(Sample::success_rate), f),
            sample_count: samples.len() as u64,
            last_ms: samples.iter().map(|s| s.window_start_ms).max().unwrap_or(0),
        }
    }

    /// As bits (an `Ord` value for differential dataflow).
    pub fn encode(&self) -> [u64; 14] {
        let mut out = [0; 14];
        for (i, l) in [self.avg, self.max, self.success, self.traffic]
            .iter()
            .enumerate()
        {
            out[3 * i] = l.low.to_bits();
            out[3 * i + 1] = l.mid.to_bits();
            out[3 * i + 2] = l.high.to_bits();
        }
        out[12] = self.sample_count;
        out[13] = self.last_ms;
        out
    }

    /// The inverse of [`GroupThresholds::encode`].
    pub fn decode(bits: &[u64; 14]) -> Self {
        let l = |i: usize| Levels {
            low: f64::from_bits(bits[3 * i]),
            mid: f64::from_bits(bits[3 * i + 1]),
            high: f64::from_bits(bits[3 * i + 2]),
        };
        GroupThresholds {
            avg: l(0),
            max: l(1),
            success: l(2),
            traffic: l(3),
            sample_count: bits[12],
            last_ms: bits[13],
        }
    }

    /// The rule of `group`, stamped with `version_ms` (also its
    /// `generated_time`).
    pub fn rule(
        &self,
        group: &GroupKey,
        settings: &ThresholdSettings,
        version_ms: u64,
    ) -> AlarmRule {
        self.rule_at(
            group,
            settings,
            version_ms,
            format_utc(version_ms),
            format_utc(self.last_ms),
        )
    }

    /// [`GroupThresholds::rule`] with `generated_time` and `last_updated`
    /// already formatted (formatting times is slow).
    pub fn rule_at(
        &self,
        group: &GroupKey,
        settings: &ThresholdSettings,
        version_ms: u64,
        generated_time: String,
        last_updated: String,
    ) -> AlarmRule {
        let (hour, service, operator_name, operator_class) = group.clone();
        AlarmRule {
            hour_of_day: hour,
            service,
            operator_name,
            operator_class,
            avg_duration_low: self.avg.low,
            avg_duration_mid: self.avg.mid,
            avg_duration_high: self.avg.high,
            max_duration_low: self.max.low,
            max_duration_mid: self.max.mid,
            max_duration_high: self.max.high,
            success_rate_low: self.success.low,
            success_rate_mid: self.success.mid,
            success_rate_high: self.success.high,
            traffic_volume_low: self.traffic.low,
            traffic_volume_mid: self.traffic.mid,
            traffic_volume_high: self.traffic.high,
            alarm_template: settings.alarm_template.clone(),
            analysis_days: settings.analysis_days,
            sample_count: self.sample_count,
            generated_time,
            last_updated,
            version: version_ms,
        }
    }
}

/// Generates the rules from stored rows (any order). `now_ms` stamps
/// `generated_time` and `version`.
///
/// # Examples
/// ```
/// use streamforge::operator_metrics::thresholds::{generate, ThresholdSettings};
/// use streamforge::operator_metrics::{format_utc, OperatorAggRow};
/// let row = |day: u64, avg: f64| OperatorAggRow {
///     window_start: format_utc(day * 86_400_000 + 12 * 3_600_000),
///     window_start_ms: day * 86_400_000 + 12 * 3_600_000, window_size: 3600,
///     service: "cart".into(), operator_name: "Get".into(), operator_class: "span".into(),
///     avg_duration: avg, max_duration: avg * 2.0, p95_duration: avg, error_rate: 0.0,
///     total_count: 10, error_count: 0, success_count: 10,
/// };
/// let rows: Vec<_> = (0..5).map(|d| row(d, 10.0 + d as f64)).collect();
/// let rules = generate(&rows, &ThresholdSettings::default(), 0);
/// assert_eq!(rules.len(), 1);
/// let r = &rules[0];
/// assert_eq!((r.hour_of_day, r.sample_count), (12, 5));
/// // avg 12, σ = √2.5 = 1.58, P75 = 13 (index ⌊0.75·5⌋ = 3), f = 1 at noon:
/// // low = max(13 + 0.79, 12·1.1)
/// assert!((r.avg_duration_low - (13.0 + 0.5 * 2.5f64.sqrt())).abs() < 1e-9);
/// assert!(r.avg_duration_low < r.avg_duration_mid && r.avg_duration_mid < r.avg_duration_high);
/// ```
pub fn generate(
    rows: &[OperatorAggRow],
    settings: &ThresholdSettings,
    now_ms: u64,
) -> Vec<AlarmRule> {
    let Some(newest) = rows.iter().map(|r| r.window_start_ms).max() else {
        return Vec::new();
    };
    let since = newest.saturating_sub(u64::from(settings.analysis_days) * 86_400_000);
    rules_of(
        rows.iter().filter(|r| r.window_start_ms >= since),
        settings,
        now_ms,
    )
}

/// The rules of all `rows` (no day filter): one per (hour, key) group with at
/// least `min_samples` rows, stamped with `version_ms`.
pub fn rules_of<'a>(
    rows: impl IntoIterator<Item = &'a OperatorAggRow>,
    settings: &ThresholdSettings,
    version_ms: u64,
) -> Vec<AlarmRule> {
    let mut groups: BTreeMap<GroupKey, Vec<Sample>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((
                hour_of_day(r.window_start_ms),
                r.service.clone(),
                r.operator_name.clone(),
                r.operator_class.clone(),
            ))
            .or_default()
            .push(Sample::of(r));
    }
    groups
        .into_iter()
        .filter(|(_, samples)| samples.len() >= settings.min_samples.max(1))
        .map(|(group, samples)| {
            GroupThresholds::of(&samples, settings.hour_factor(group.0))
                .rule(&group, settings, version_ms)
        })
        .collect()
}

/// Success rate of a row: successes / total (1 for an empty window).
pub fn success_rate(r: &OperatorAggRow) -> f64 {
    if r.total_count == 0 {
        1.0
    } else {
        r.success_count as f64 / r.total_count as f64
    }
}

/// Reads stored aggregate rows for [`generate`]: `PATH` (a JSONL file or an
/// exactly-once output directory), `clickhouse:URL[#db.table]` or
/// `postgres:CONNINFO[#table]` (table default `flink_operator_agg_result`;
/// databases return only the last `days` days).
///
/// # Errors
/// Unreadable file, unreachable database, rows that do not parse.
pub fn read_rows(from: &str, days: u32) -> Result<Vec<OperatorAggRow>, crate::error::Error> {
    let split = |s: &str| -> (String, String) {
        match s.split_once('#') {
            Some((a, t)) => (a.to_string(), t.to_string()),
            None => (s.to_string(), "flink_operator_agg_result".to_string()),
        }
    };
    if let Some(rest) = from.strip_prefix("clickhouse:") {
        let (url, table) = split(rest);
        let config: streamforge_sinks::clickhouse::ClickHouseSinkConfig =
            toml::from_str(&format!("url = {url:?}\ntable = {table:?}")).expect("config");
        let ch = streamforge_sinks::clickhouse::ClickHouse::new(&config, Default::default())?;
        return Ok(crate::operator_metrics::schema::read_agg_rows_clickhouse(
            &ch, &table, days,
        )?);
    }
    if let Some(rest) = from.strip_prefix("postgres:") {
        let (url, table) = split(rest);
        return Ok(crate::operator_metrics::schema::read_agg_rows_postgres(
            &url, &table, days,
        )?);
    }
    let path = std::path::Path::new(from);
    let lines = streamforge_sinks::read_committed(path)?;
    lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                crate::error::Error::Invalid(format!("{from}: not an aggregate row: {e}: {l}"))
            })
        })
        .collect()
}
