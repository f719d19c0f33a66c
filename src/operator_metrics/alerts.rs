//! Alert evaluation of closed windows against hourly rules (seed), and alert
//! convergence.
//!
//! Per metric the level is the highest threshold crossed: `avg_duration`,
//! `max_duration` and `traffic_volume` (= `total_count`) alert when strictly
//! above a threshold, `success_rate` when strictly below. The alert's level is
//! the highest level of its metrics; each triggered metric adds one conclusion
//! line (the rule's template). The rule used is the one for the window's hour
//! of day (UTC hour of `window_start`), and the alert names its version.
//!
//! Convergence: the same (key, metric, level) is emitted at most once per
//! `interval` of event time (window starts); a higher level than the last one
//! emitted for (key, metric) is an escalation and always passes. An alert whose
//! metrics are all suppressed is dropped; otherwise it carries the metrics that
//! passed and their highest level.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::operator_metrics::thresholds::{success_rate, AlarmRule};
use crate::operator_metrics::OperatorAggRow;

/// Alert level, ordered LOW < MID < HIGH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Above the low threshold (below, for success rate).
    Low,
    /// Above the mid threshold.
    Mid,
    /// Above the high threshold.
    High,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Low => "LOW",
            Level::Mid => "MID",
            Level::High => "HIGH",
        })
    }
}

/// A metric of an aggregate row that rules watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean duration, ms (alert above).
    AvgDuration,
    /// Max duration, ms (alert above).
    MaxDuration,
    /// Success rate 0–1 (alert below).
    SuccessRate,
    /// Spans in the window (alert above).
    TrafficVolume,
}

impl Metric {
    /// All metrics.
    pub const ALL: [Metric; 4] = [
        Metric::AvgDuration,
        Metric::MaxDuration,
        Metric::SuccessRate,
        Metric::TrafficVolume,
    ];

    /// The column-style name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::AvgDuration => "avg_duration",
            Metric::MaxDuration => "max_duration",
            Metric::SuccessRate => "success_rate",
            Metric::TrafficVolume => "traffic_volume",
        }
    }

    fn value(self, row: &OperatorAggRow) -> f64 {
        match self {
            Metric::AvgDuration => row.avg_duration,
            Metric::MaxDuration => row.max_duration,
            Metric::SuccessRate => success_rate(row),
            Metric::TrafficVolume => row.total_count as f64,
        }
    }

    /// (low, mid, high) thresholds of the rule.
    fn thresholds(self, r: &AlarmRule) -> [f64; 3] {
        match self {
            Metric::AvgDuration => [r.avg_duration_low, r.avg_duration_mid, r.avg_duration_high],
            Metric::MaxDuration => [r.max_duration_low, r.max_duration_mid, r.max_duration_high],
            Metric::SuccessRate => [r.success_rate_low, r.success_rate_mid, r.success_rate_high],
            Metric::TrafficVolume => [
                r.traffic_volume_low,
                r.traffic_volume_mid,
                r.traffic_volume_high,
            ],
        }
    }

    /// The level crossed by `value`, and its threshold.
    fn level(self, value: f64, t: [f64; 3]) -> Option<(Level, f64)> {
        let crossed = |th: f64| match self {
            Metric::SuccessRate => value < th,
            _ => value > th,
        };
        [(Level::High, t[2]), (Level::Mid, t[1]), (Level::Low, t[0])]
            .into_iter()
            .find(|(_, th)| crossed(*th))
    }
}

/// One metric that crossed a threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    /// The metric.
    pub metric: Metric,
    /// Its level.
    pub level: Level,
    /// The window's value.
    pub value: f64,
    /// The threshold crossed.
    pub threshold: f64,
    /// The conclusion text (the rule's template filled in).
    pub conclusion: String,
}

/// An alert on one closed window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Window start, UTC text.
    pub window_start: String,
    /// Window start, ms.
    pub window_start_ms: u64,
    /// Service.
    pub service: String,
    /// Operator name.
    pub operator_name: String,
    /// Operator class.
    pub operator_class: String,
    /// The highest level of `metrics`.
    pub level: Level,
    /// The triggered metrics (after convergence).
    pub metrics: Vec<Triggered>,
    /// Version of the rule used.
    pub rule_version: u64,
}

/// Fills the template's `{service}`, `{operator_name}`, `{metric}`,
/// `{level}`, `{value}`, `{threshold}` in one pass (other text is kept).
fn fill(template: &str, row: &OperatorAggRow, m: Metric, level: Level, v: f64, th: f64) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(template.len() + 48);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            break;
        };
        match &after[1..close] {
            "service" => out.push_str(&row.service),
            "operator_name" => out.push_str(&row.operator_name),
            "metric" => out.push_str(m.name()),
            "level" => {
                let _ = write!(out, "{level}");
            }
            "value" => {
                let _ = write!(out, "{v:.3}");
            }
            "threshold" => {
                let _ = write!(out, "{th:.3}");
            }
            _ => out.push_str(&after[..=close]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Evaluates a closed window against its rule.
///
/// # Examples
/// ```
/// use streamforge::operator_metrics::alerts::{evaluate, Level, Metric};
/// # use streamforge::operator_metrics::thresholds::AlarmRule;
/// # use streamforge::operator_metrics::OperatorAggRow;
/// # let rule = AlarmRule { hour_of_day: 0, service: "s".into(), operator_name: "o".into(),
/// #   operator_class: "span".into(), avg_duration_low: 10.0, avg_duration_mid: 20.0,
/// #   avg_duration_high: 30.0, max_duration_low: 1e9, max_duration_mid: 1e9, max_duration_high: 1e9,
/// #   success_rate_low: 0.9, success_rate_mid: 0.8, success_rate_high: 0.5,
/// #   traffic_volume_low: 1e9, traffic_volume_mid: 1e9, traffic_volume_high: 1e9,
/// #   alarm_template: "{level} {metric}".into(), analysis_days: 7, sample_count: 5,
/// #   generated_time: String::new(), last_updated: String::new(), version: 7 };
/// # let row = OperatorAggRow { window_start: String::new(), window_start_ms: 0, window_size: 60,
/// #   service: "s".into(), operator_name: "o".into(), operator_class: "span".into(),
/// #   avg_duration: 25.0, max_duration: 1.0, p95_duration: 1.0, error_rate: 0.15,
/// #   total_count: 20, error_count: 3, success_count: 17 };
/// // avg 25 ms is above mid (20), success 0.85 is below low (0.9).
/// let alert = evaluate(&row, &rule).unwrap();
/// assert_eq!(alert.level, Level::Mid);
/// assert_eq!(alert.metrics.len(), 2);
/// assert_eq!((alert.metrics[0].metric, alert.metrics[0].level), (Metric::AvgDuration, Level::Mid));
/// assert_eq!(alert.metrics[1].conclusion, "LOW success_rate");
/// assert_eq!(alert.rule_version, 7);
/// ```
pub fn evaluate(row: &OperatorAggRow, rule: &AlarmRule) -> Option<Alert> {
    let metrics: Vec<Triggered> = Metric::ALL
        .into_iter()
        .filter_map(|m| {
            let value = m.value(row);
            let (level, threshold) = m.level(value, m.thresholds(rule))?;
            Some(Triggered {
                metric: m,
                level,
                value,
                threshold,
                conclusion: fill(&rule.alarm_template, row, m, level, value, threshold),
            })
        })
        .collect();
    let level = metrics.iter().map(|t| t.level).max()?;
    Some(Alert {
        window_start: row.window_start.clone(),
        window_start_ms: row.window_start_ms,
        service: row.service.clone(),
        operator_name: row.operator_name.clone(),
        operator_class: row.operator_class.clone(),
        level,
        metrics,
        rule_version: rule.version,
    })
}

/// (key hash, metric): the key hash is the `SpanKey` stable hash of
/// (service, operator_name, operator_class) — 64 bits, so state stays small
/// and lookups do not allocate.
pub type MetricKey = (u64, Metric);

/// What convergence keeps per (key, metric): the last emission time per
/// level, and the last level emitted.
pub type Convergence = ([Option<u64>; 3], Option<Level>);

/// Alert convergence state (keyed state of the alerting operator).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Suppressor {
    /// Event-time interval, ms.
    pub interval_ms: u64,
    /// Per (key, metric): last emission time per level, and the last level.
    last: HashMap<MetricKey, Convergence>,
}

impl Suppressor {
    /// Convergence over `interval_ms` of event time (default 15 min).
    pub fn new(interval_ms: u64) -> Self {
        Suppressor {
            interval_ms,
            last: HashMap::new(),
        }
    }

    /// Keeps only the entries whose key hash (see [`MetricKey`]) `keep`
    /// accepts (a restore keeps the keys this worker owns).
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.last.retain(|(k, _), _| keep(*k));
    }

    /// Adds the entries of `other` (restoring state from several parts).
    pub fn merge(&mut self, other: Suppressor) {
        self.last.extend(other.last);
    }

    /// The (key, metric) entries, for a checkpoint.
    pub fn entries(&self) -> impl Iterator<Item = (&MetricKey, &Convergence)> {
        self.last.iter()
    }

    /// Sets one entry (a restore).
    pub fn insert(&mut self, key: MetricKey, value: Convergence) {
        self.last.insert(key, value);
    }

    /// Number of (key, metric) entries.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Drops the metrics of `alert` emitted at the same level within the
    /// interval (escalations pass); `None` when nothing is left.
    ///
    /// # Examples
    /// ```
    /// # use streamforge::operator_metrics::alerts::*;
    /// # fn alert(t: u64, level: Level) -> Alert { Alert { window_start: String::new(),
    /// #   window_start_ms: t, service: "s".into(), operator_name: "o".into(),
    /// #   operator_class: "c".into(), level, rule_version: 1, metrics: vec![Triggered {
    /// #   metric: Metric::AvgDuration, level, value: 1.0, threshold: 0.5, conclusion: String::new() }] } }
    /// let mut s = Suppressor::new(15 * 60_000);
    /// assert!(s.converge(alert(0, Level::Low)).is_some());
    /// assert!(s.converge(alert(60_000, Level::Low)).is_none(), "same level within 15 min");
    /// assert!(s.converge(alert(120_000, Level::High)).is_some(), "escalation passes");
    /// assert!(s.converge(alert(180_000, Level::Low)).is_none(), "LOW was sent at 0");
    /// assert!(s.converge(alert(16 * 60_000, Level::Low)).is_some(), "interval over");
    /// // HIGH again 14.5 min after the last HIGH: an escalation from LOW, it passes.
    /// assert!(s.converge(alert(16 * 60_000 + 30_000, Level::High)).is_some());
    /// ```
    pub fn converge(&mut self, mut alert: Alert) -> Option<Alert> {
        let t = alert.window_start_ms;
        let interval = self.interval_ms;
        let h = streamforge_sources::span::parts_hash(
            &alert.service,
            &alert.operator_name,
            &alert.operator_class,
        );
        let keys: Vec<MetricKey> = alert.metrics.iter().map(|m| (h, m.metric)).collect();
        let mut kept = Vec::new();
        for (m, k) in alert.metrics.drain(..).zip(keys) {
            let (slots, last_level) = self.last.entry(k).or_default();
            let slot = &mut slots[m.level as usize];
            let recent = slot.is_some_and(|last| t < last.saturating_add(interval) && t >= last);
            let escalation = last_level.is_some_and(|l| m.level > l);
            if !recent || escalation {
                *slot = Some(t);
                *last_level = Some(m.level);
                kept.push(m);
            }
        }
        alert.level = kept.iter().map(|m| m.level).max()?;
        alert.metrics = kept;
        Some(alert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(t: u64, op: &str, metrics: &[(Metric, Level)]) -> Alert {
        Alert {
            window_start: String::new(),
            window_start_ms: t,
            service: "s".into(),
            operator_name: op.into(),
            operator_class: "c".into(),
            level: metrics.iter().map(|m| m.1).max().unwrap(),
            metrics: metrics
                .iter()
                .map(|&(metric, level)| Triggered {
                    metric,
                    level,
                    value: 1.0,
                    threshold: 0.5,
                    conclusion: String::new(),
                })
                .collect(),
            rule_version: 1,
        }
    }

    const MIN: u64 = 60_000;

    #[test]
    fn same_level_is_suppressed_within_the_interval_and_passes_after_it() {
        let mut s = Suppressor::new(15 * MIN);
        let m = [(Metric::AvgDuration, Level::Mid)];
        let passed: Vec<u64> = (0..40)
            .filter(|i| s.converge(alert(i * MIN, "o", &m)).is_some())
            .collect();
        assert_eq!(passed, vec![0, 15, 30]);
    }

    #[test]
    fn keys_and_metrics_converge_independently() {
        let mut s = Suppressor::new(15 * MIN);
        let a = [(Metric::AvgDuration, Level::Low)];
        assert!(s.converge(alert(0, "o1", &a)).is_some());
        assert!(s.converge(alert(0, "o2", &a)).is_some(), "another key");
        // Same key: the avg metric is suppressed, the max metric is new.
        let both = [
            (Metric::AvgDuration, Level::Low),
            (Metric::MaxDuration, Level::Low),
        ];
        let out = s.converge(alert(MIN, "o1", &both)).unwrap();
        assert_eq!(out.metrics.len(), 1);
        assert_eq!(out.metrics[0].metric, Metric::MaxDuration);
        // Both suppressed: no alert at all.
        assert!(s.converge(alert(2 * MIN, "o1", &both)).is_none());
    }

    #[test]
    fn escalation_is_never_suppressed_and_the_alert_level_follows_what_passed() {
        let mut s = Suppressor::new(15 * MIN);
        let low = [(Metric::SuccessRate, Level::Low)];
        let mid = [(Metric::SuccessRate, Level::Mid)];
        let high = [(Metric::SuccessRate, Level::High)];
        assert!(s.converge(alert(0, "o", &low)).is_some());
        assert_eq!(s.converge(alert(MIN, "o", &mid)).unwrap().level, Level::Mid);
        assert_eq!(
            s.converge(alert(2 * MIN, "o", &high)).unwrap().level,
            Level::High
        );
        // Back down: MID and LOW were sent within 15 min.
        assert!(s.converge(alert(3 * MIN, "o", &mid)).is_none());
        assert!(s.converge(alert(4 * MIN, "o", &low)).is_none());
        // HIGH again within 15 min of the last HIGH: not an escalation.
        assert!(s.converge(alert(5 * MIN, "o", &high)).is_none());
        // A mixed alert keeps only the metric that passed and takes its level.
        let mixed = [
            (Metric::SuccessRate, Level::High),
            (Metric::TrafficVolume, Level::Low),
        ];
        let out = s.converge(alert(6 * MIN, "o", &mixed)).unwrap();
        assert_eq!((out.level, out.metrics.len()), (Level::Low, 1));
    }

    #[test]
    fn a_zero_interval_lets_everything_pass() {
        let mut s = Suppressor::new(0);
        let m = [(Metric::AvgDuration, Level::High)];
        assert!((0..5).all(|i| s.converge(alert(i, "o", &m)).is_some()));
    }
}
