//! Latency of a run's output: wall-clock ms at emission minus the end of
//! the window a row or alert belongs to (HdrHistogram). A run records it
//! when [`LATENCY_OUT`] is set (by `streamforge bench`) and writes the
//! percentiles there as JSON at the end.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Environment variable: write the run's latency histograms (JSON) here.
pub const LATENCY_OUT: &str = "STREAMFORGE_LATENCY_OUT";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 24 * 3_600_000, 3).expect("histogram bounds")
}

/// Latency of rows and alerts: wall-clock ms at emission minus the window end.
pub struct LatencyRecorder {
    rows: Mutex<Histogram<u64>>,
    alerts: Mutex<Histogram<u64>>,
}

impl std::fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyRecorder")
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            rows: Mutex::new(histogram()),
            alerts: Mutex::new(histogram()),
        }
    }
}

fn record(h: &Mutex<Histogram<u64>>, window_ends: impl Iterator<Item = u64>) {
    let now = now_ms();
    let mut h = h.lock().expect("histogram lock");
    for end in window_ends {
        h.saturating_record(now.saturating_sub(end).max(1));
    }
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let cdf: Vec<(u64, f64)> = if h.is_empty() {
        Vec::new()
    } else {
        (0..=100)
            .map(|i| {
                let q = i as f64 / 100.0;
                (h.value_at_quantile(q), q)
            })
            .collect()
    };
    serde_json::json!({
        "count": h.len(),
        "p50_ms": h.value_at_quantile(0.5),
        "p90_ms": h.value_at_quantile(0.9),
        "p99_ms": h.value_at_quantile(0.99),
        "p999_ms": h.value_at_quantile(0.999),
        "max_ms": h.max(),
        "cdf": cdf,
    })
}

impl LatencyRecorder {
    /// Records rows emitted now whose windows ended at `window_ends` (ms).
    pub fn record_rows(&self, window_ends: impl Iterator<Item = u64>) {
        record(&self.rows, window_ends);
    }

    /// Records alerts emitted now for windows that ended at `window_ends`.
    pub fn record_alerts(&self, window_ends: impl Iterator<Item = u64>) {
        record(&self.alerts, window_ends);
    }

    /// Percentiles and a 101-point CDF of both.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "rows": summary(&self.rows.lock().expect("histogram lock")),
            "alerts": summary(&self.alerts.lock().expect("histogram lock")),
        })
    }
}
