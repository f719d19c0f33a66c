//! What a run counts and reports: the counters of one process and the run
//! summary (`events N  rows N  late N  dead-lettered N ...`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use streamforge_dataflow::source::SourceCounters;
use streamforge_sinks::clickhouse::DbSinkCounters;
use streamforge_sinks::kafka::KafkaSinkCounters;

use crate::operator_metrics::alerting::join::AlertCounters;

/// Counters of one process's run.
#[derive(Debug, Default)]
pub struct JobCounters {
    /// Source counters (records, dead letters).
    pub source: Arc<SourceCounters>,
    /// Aggregate rows emitted by the window operator.
    pub rows_total: AtomicU64,
    /// Records too late for all their windows.
    pub late_total: AtomicU64,
    /// Dead letters.
    pub dead_letters_total: AtomicU64,
    /// Kafka sink deliveries and errors.
    pub kafka_sink: Arc<KafkaSinkCounters>,
    /// ClickHouse sink rows, batches, retries.
    pub clickhouse_sink: Arc<DbSinkCounters>,
    /// PostgreSQL sink rows, batches, retries.
    pub postgres_sink: Arc<DbSinkCounters>,
    /// Alerting: windows evaluated, alerts by level, suppressed, rule updates.
    pub alerts: Arc<AlertCounters>,
    /// Rule updates published by the hourly publisher.
    pub rules_published_total: AtomicU64,
    /// Webhook deliveries and retries.
    pub webhook: Arc<streamforge_sinks::webhook::WebhookCounters>,
    /// Latency histograms (benchmarks: `STREAMFORGE_LATENCY_OUT`).
    pub latency: Option<Arc<crate::job::latency::LatencyRecorder>>,
    /// The last alerts (JSON, newest last; the status page).
    pub recent_alerts: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// What a run did, for this process.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    /// Records read by this process's sources.
    pub events: u64,
    /// Aggregate rows emitted by this process's workers.
    pub rows: u64,
    /// Late records.
    pub late: u64,
    /// Dead-lettered records.
    pub dead_letters: u64,
    /// Records acknowledged by Kafka sinks.
    pub kafka_delivered: u64,
    /// Kafka transactions committed by the exactly-once Kafka sink.
    pub kafka_transactions: u64,
    /// Rows written to ClickHouse (re-commits after a restore included).
    pub clickhouse_rows: u64,
    /// Rows written to PostgreSQL.
    pub postgres_rows: u64,
    /// Database writes retried (server down or overloaded).
    pub database_retries: u64,
    /// Kafka delivery failures (retried).
    pub kafka_delivery_errors: u64,
    /// Alerts emitted by level: LOW, MID, HIGH.
    pub alerts: [u64; 3],
    /// Rule updates published by the in-job hourly publisher.
    pub rules_published: u64,
    /// Webhook requests retried.
    pub webhook_retries: u64,
    /// Wall-clock time of the dataflow, seconds.
    pub elapsed_seconds: f64,
    /// The checkpoint this run resumed from.
    pub restored_from: Option<u64>,
}

impl JobSummary {
    /// Events per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed_seconds.max(1e-9)
    }
}

impl std::fmt::Display for JobSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events {}  rows {}  late {}  dead-lettered {}  elapsed {:.3}s  events/s {:.0}",
            self.events,
            self.rows,
            self.late,
            self.dead_letters,
            self.elapsed_seconds,
            self.events_per_second()
        )?;
        if self.alerts.iter().sum::<u64>() > 0 || self.rules_published > 0 {
            write!(
                f,
                "  rules published {}  alerts LOW {} MID {} HIGH {}",
                self.rules_published, self.alerts[0], self.alerts[1], self.alerts[2]
            )?;
        }
        Ok(())
    }
}
