//! Alerting inside the job: hourly thresholds computed from the job's own
//! aggregate rows (differential dataflow), an hourly rule publisher, the
//! broadcast rule stream and the alert join.
//!
//! ```text
//! rows ─┬─ threshold_history ─► reduce (per hour, key) ─► publish_hourly ─┬─► rule outputs (JSONL, Kafka)
//!       │        ▲ (prune feedback)                                        │
//!       │        └─────────────────────────────────────────────────────────┤
//!       │                                   file / Kafka rule source ──────┤ broadcast
//!       └───────────────────────────────────────────────► alert_join ◄─────┘
//!                                                              └─► alerts ─► JSONL, Kafka, webhook
//! ```
//!
//! **Time.** A row is emitted at event time `window end + allowed lateness`
//! (see `window_aggregate`), whatever the watermark did. The rules published
//! at hour boundary `H` (version `H`, event time `H`) come from the rows with
//! `end + lateness ≤ H` and `window_start ≥ H − analysis_days`; a row of a
//! window starting at `ws` is evaluated with the newest rule of its key and
//! hour of day whose version is `≤ ws`, once no such rule can still arrive.
//! So a rule changed mid-stream changes the alerts of later windows only, and
//! every run — any worker or process count, restored or not — raises the same
//! alerts (for generated and file rules; a Kafka rule topic is read as it
//! comes, like Flink's processing-time broadcast state).

pub mod history;
pub mod join;
pub mod publisher;
pub mod rule_source;
pub mod wiring;
pub use wiring::Alerting;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use streamforge_sinks::webhook::WebhookSinkConfig;
use streamforge_sinks::KafkaSinkConfig;

use crate::operator_metrics::thresholds::{AlarmRule, ThresholdSettings};

pub use history::ThresholdHistory;
pub use join::AlertJoin;
pub use publisher::PublishHourly;

/// The keyed-state hash of a key's `SpanKey` hash (`parts_hash` of service,
/// operator_name, operator_class): the alerting operators store and route a
/// key's state in the key group of this hash.
fn state_hash(key_hash: u64) -> u64 {
    streamforge_dataflow::stable_hash(&key_hash)
}

/// One change of the broadcast rule state: the rule of (service,
/// operator_name) for an hour of day from `version` on, or its deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleUpdate {
    /// Service.
    pub service: String,
    /// Operator name.
    pub operator_name: String,
    /// Hour of day (UTC) the rule is for.
    pub hour_of_day: u8,
    /// Version: event time (ms) from which the rule applies to windows.
    pub version: u64,
    /// The rule; `None` deletes (a tombstone: the key has no rule for the hour).
    pub rule: Option<AlarmRule>,
}

impl RuleUpdate {
    /// A rule as an update at its own version.
    pub fn of(rule: AlarmRule) -> Self {
        RuleUpdate {
            service: rule.service.clone(),
            operator_name: rule.operator_name.clone(),
            hour_of_day: rule.hour_of_day,
            version: rule.version,
            rule: Some(rule),
        }
    }

    /// The `alarm_rule_topic` record: key `service|operator_name`, value the
    /// rule as JSON, or empty for a deletion (compacted-topic semantics:
    /// the latest value per key wins, an empty value deletes).
    ///
    /// # Examples
    /// ```
    /// use streamforge::operator_metrics::alerting::RuleUpdate;
    /// let delete = RuleUpdate { service: "cart".into(), operator_name: "Get".into(),
    ///     hour_of_day: 3, version: 10_800_000, rule: None };
    /// let (key, value) = delete.kafka_record();
    /// assert_eq!((key.as_slice(), value.len()), (&b"cart|Get"[..], 0));
    /// let back = RuleUpdate::from_kafka(&key, &value, Some(10_800_000)).unwrap();
    /// assert_eq!(back, delete);
    /// ```
    pub fn kafka_record(&self) -> (Vec<u8>, Vec<u8>) {
        let key = format!("{}|{}", self.service, self.operator_name).into_bytes();
        let value = match &self.rule {
            Some(r) => serde_json::to_vec(r).expect("rule serializes"),
            None => Vec::new(),
        };
        (key, value)
    }

    /// Reads an `alarm_rule_topic` record (`timestamp_ms`: the record's
    /// timestamp, the version of a deletion).
    ///
    /// # Errors
    /// The key has no `|`, or the value is not a rule.
    pub fn from_kafka(key: &[u8], value: &[u8], timestamp_ms: Option<u64>) -> Result<Self, String> {
        let key = String::from_utf8_lossy(key);
        let (service, operator_name) = key
            .split_once('|')
            .ok_or_else(|| format!("rule key {key:?} is not service|operator_name"))?;
        if value.is_empty() {
            let version = timestamp_ms.unwrap_or(0);
            return Ok(RuleUpdate {
                service: service.to_string(),
                operator_name: operator_name.to_string(),
                hour_of_day: crate::operator_metrics::thresholds::hour_of_day(version),
                version,
                rule: None,
            });
        }
        let rule: AlarmRule =
            serde_json::from_slice(value).map_err(|e| format!("rule value for {key:?}: {e}"))?;
        Ok(RuleUpdate::of(rule))
    }
}

/// `[alerting]` of a job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlertingConfig {
    /// Where the rules come from.
    pub rules: RulesConfig,
    /// The same (key, metric, level) at most once per this much event time
    /// (default `"15m"`).
    #[serde(default = "default_convergence", with = "humantime_serde")]
    pub convergence: Duration,
    /// Where generated rules are published (besides the job's own rule stream).
    #[serde(default)]
    pub publish: PublishConfig,
    /// Where alerts go.
    #[serde(default)]
    pub sinks: Vec<AlertSinkConfig>,
}

fn default_convergence() -> Duration {
    Duration::from_secs(15 * 60)
}

/// Rule sources.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RulesConfig {
    /// Thresholds computed in the job from its own rows, published hourly.
    Generated(ThresholdSettings),
    /// A JSONL file of `hourly_alarm_rules` rows (e.g. `streamforge
    /// thresholds --out`); each applies to windows starting at or after its
    /// version.
    File {
        /// The file.
        path: PathBuf,
    },
    /// `alarm_rule_topic`, read from the earliest offset (processing-time
    /// broadcast).
    Kafka(RuleTopicConfig),
}

/// A rule topic to read.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleTopicConfig {
    /// The topic (seed: `alarm_rule_topic`).
    pub topic: String,
    /// Read what the topic holds when the job starts, then stop reading
    /// (default: keep reading until the job's input ends).
    #[serde(default)]
    pub bounded: bool,
    /// librdkafka properties (`bootstrap.servers`, …; `${ENV}` expanded).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Outputs of the hourly publisher.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PublishConfig {
    /// A JSONL file (a directory of committed parts with checkpoints) of
    /// [`RuleUpdate`]s.
    pub jsonl: Option<PathBuf>,
    /// A Kafka topic (key `service|operator_name`, empty value deletes);
    /// exactly-once with `[checkpoint]` and a `transactional-id`.
    pub kafka: Option<KafkaSinkConfig>,
}

/// Alert sinks.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AlertSinkConfig {
    /// One alert per line.
    Jsonl {
        /// Output file (directory of committed parts with checkpoints).
        path: PathBuf,
    },
    /// A Kafka topic (keyed by `key-fields`, e.g. service and operator_name).
    Kafka(KafkaSinkConfig),
    /// An HTTP POST of a JSON array of alerts per batch, with retries.
    Webhook(WebhookSinkConfig),
}
