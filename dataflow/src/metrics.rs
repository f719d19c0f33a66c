//! Per-operator, per-worker counters that operators update and the job's
//! `/metrics` endpoint reads: records in and out, and keyed-state entries.
//!
//! A process-wide registry keyed by (operator name, worker index); a job run
//! clears it when it starts (one job per process; concurrent jobs in one
//! process, as in tests, share it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

/// The counters of one operator on one worker.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted.
    pub records_out: AtomicU64,
    /// Entries of keyed state (e.g. open (window, key) accumulators).
    pub state_entries: AtomicI64,
    /// Sources: time with a partition paused by flow control (ns).
    pub throttled_ns: AtomicU64,
    /// Sources: partitions paused by flow control now.
    pub paused_partitions: AtomicI64,
    /// Sources: times flow control paused a reader itself (Kafka: in
    /// librdkafka), after a hold of `PAUSE_READER_AFTER`.
    pub reader_pauses: AtomicU64,
    /// The operator is a source (its flow-control series are shown).
    pub is_source: std::sync::atomic::AtomicBool,
}

type Registry = Mutex<BTreeMap<(String, usize), Arc<OperatorMetrics>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// The counters of `operator` on `worker` (created on first use).
///
/// # Examples
/// ```
/// use std::sync::atomic::Ordering;
/// use streamforge_dataflow::metrics::{operator_metrics, snapshot};
/// operator_metrics("doc-op", 1).records_in.fetch_add(3, Ordering::Relaxed);
/// let all = snapshot();
/// let m = all.iter().find(|(op, w, _)| op == "doc-op" && *w == 1).unwrap();
/// assert_eq!(m.2.records_in.load(Ordering::Relaxed), 3);
/// ```
pub fn operator_metrics(operator: &str, worker: usize) -> Arc<OperatorMetrics> {
    registry()
        .lock()
        .expect("metrics registry")
        .entry((operator.to_string(), worker))
        .or_default()
        .clone()
}

/// All registered counters: (operator, worker, counters).
pub fn snapshot() -> Vec<(String, usize, Arc<OperatorMetrics>)> {
    registry()
        .lock()
        .expect("metrics registry")
        .iter()
        .map(|((op, w), m)| (op.clone(), *w, m.clone()))
        .collect()
}

/// Forgets all counters (a job run starts).
pub fn clear() {
    registry().lock().expect("metrics registry").clear();
}
