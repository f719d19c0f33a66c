//! A deterministic synthetic span generator.
//!
//! Seeded (ChaCha8), so the same config always yields the same spans. The event
//! rate follows a diurnal shape (`0.55 − 0.45·cos(2π·(hour − 3)/24)`: lowest at
//! 03:00, highest at 15:00), keys are uniform over `services × operators`,
//! durations are log-normal per operator, errors are Bernoulli, and event times
//! are jittered backwards by up to `out-of-orderness` (plus, for `late-ratio` of
//! the events, by `late-delay` more, so that some arrive behind the watermark).

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Deserialize;
use streamforge_dataflow::checkpoint::PartitionPosition;
use streamforge_dataflow::source::{PartitionReader, ReadStatus, SourceItem};

use crate::span::{Span, SpanKey};

const SERVICES: [&str; 12] = [
    "frontend",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "email",
    "currency",
    "recommendation",
    "ad",
    "catalog",
    "auth",
    "order",
];
const VERBS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// Generator settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GeneratorConfig {
    /// RNG seed.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Total number of spans (over all partitions).
    pub events: u64,
    /// Number of partitions (independent streams).
    #[serde(default = "d_one")]
    pub partitions: usize,
    /// Number of services (≤ 12 distinct names, then numbered).
    #[serde(default = "d_services")]
    pub services: usize,
    /// Operators per service.
    #[serde(default = "d_ops")]
    pub operators_per_service: usize,
    /// Mean event-time rate over all partitions, in spans per second of event time.
    #[serde(default = "d_rate")]
    pub events_per_second: f64,
    /// Event time of the first span, ms since the Unix epoch.
    #[serde(default = "d_start")]
    pub start_ms: u64,
    /// Fraction of spans that fail.
    #[serde(default = "d_err")]
    pub error_ratio: f64,
    /// Maximum backwards jitter of event times, ms.
    #[serde(default = "d_ooo")]
    pub out_of_orderness_ms: u64,
    /// Fraction of spans delayed by a further `late-delay-ms`.
    #[serde(default)]
    pub late_ratio: f64,
    /// Extra delay of late spans, ms.
    #[serde(default = "d_late")]
    pub late_delay_ms: u64,
    /// Modulate the rate by hour of day.
    #[serde(default = "d_true")]
    pub diurnal: bool,
    /// Distinct users (`user_id` of the JSON lines: `u00000`…).
    #[serde(default = "d_users")]
    pub users: u64,
}

fn d_users() -> u64 {
    1000
}

fn d_seed() -> u64 {
    42
}
fn d_one() -> usize {
    1
}
fn d_services() -> usize {
    8
}
fn d_ops() -> usize {
    6
}
fn d_rate() -> f64 {
    1000.0
}
fn d_start() -> u64 {
    1_674_950_400_000 // 2023-01-29T00:00:00Z
}
fn d_err() -> f64 {
    0.02
}
fn d_ooo() -> u64 {
    2_000
}
fn d_late() -> u64 {
    30_000
}
fn d_true() -> bool {
    true
}

impl GeneratorConfig {
    /// Defaults with `events` spans.
    pub fn with_events(events: u64) -> Self {
        GeneratorConfig {
            seed: d_seed(),
            events,
            partitions: 1,
            services: d_services(),
            operators_per_service: d_ops(),
            events_per_second: d_rate(),
            start_ms: d_start(),
            error_ratio: d_err(),
            out_of_orderness_ms: d_ooo(),
            late_ratio: 0.0,
            late_delay_ms: d_late(),
            diurnal: true,
            users: d_users(),
        }
    }

    /// The names of key `i`: (service, operator).
    pub fn key_names(&self, i: usize) -> (String, String) {
        let s = i / self.operators_per_service.max(1);
        let o = i % self.operators_per_service.max(1);
        let service = if s < SERVICES.len() && self.services <= SERVICES.len() {
            SERVICES[s].to_string()
        } else {
            format!("service-{s:03}")
        };
        let op = format!("{} /api/v1/{service}/op{o}", VERBS[o % VERBS.len()]);
        (service, op)
    }

    /// Number of distinct keys.
    pub fn keys(&self) -> usize {
        self.services.max(1) * self.operators_per_service.max(1)
    }

    /// The spans of partition `p` as `(event_time_ms, key index, duration_us, is_error)`.
    pub fn partition(&self, p: usize) -> GeneratedSpans {
        let parts = self.partitions.max(1) as u64;
        let count = self.events / parts + u64::from((p as u64) < self.events % parts);
        let keys = self.keys();
        let medians: Vec<LogNormal<f64>> = (0..keys)
            .map(|k| {
                let median_us = 2_000.0 * (1.0 + (k % 7) as f64) * (1.0 + (k % 3) as f64 * 0.5);
                LogNormal::new(median_us.ln(), 0.6).expect("valid log-normal")
            })
            .collect();
        GeneratedSpans {
            rng: ChaCha8Rng::seed_from_u64(
                self.seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            left: count,
            base_us: self.start_ms as f64 * 1e3,
            step_us: 1e6 * parts as f64 / self.events_per_second.max(1e-9),
            durations: medians,
            config: self.clone(),
        }
    }

    /// Writes the spans of partition `p` only, as JSON lines (see [`Self::write_jsonl`]).
    ///
    /// # Errors
    /// Write errors.
    pub fn write_partition_jsonl(&self, p: usize, out: &mut impl Write) -> std::io::Result<u64> {
        let names: Vec<(String, String)> = (0..self.keys()).map(|k| self.key_names(k)).collect();
        let mut n = 0;
        for (ts, k, d, e) in self.partition(p) {
            write_line(out, ts, &names[k], d, e, self.user(p, n))?;
            n += 1;
        }
        Ok(n)
    }

    /// The user of span `i` of partition `p`: a hash of (seed, p, i), so the
    /// other fields do not change with it.
    fn user(&self, p: usize, i: u64) -> u64 {
        streamforge_dataflow::stable_hash(&(self.seed, p as u64, i)) % self.users.max(1)
    }

    /// Writes all spans as JSON lines (`ts` ms, `service`, `operator`,
    /// `duration_ms` (integer ms, rounded), `is_error`, `user_id`),
    /// partitions interleaved in time order of generation.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<u64> {
        let names: Vec<(String, String)> = (0..self.keys()).map(|k| self.key_names(k)).collect();
        let mut parts: Vec<_> = (0..self.partitions.max(1))
            .map(|p| self.partition(p).peekable())
            .collect();
        let mut n = 0;
        let mut written = vec![0u64; parts.len()];
        loop {
            let next = parts
                .iter_mut()
                .enumerate()
                .filter_map(|(i, p)| p.peek().map(|s| (s.0, i)))
                .min();
            let Some((_, i)) = next else { break };
            let (ts, k, d, e) = parts[i].next().expect("peeked");
            write_line(out, ts, &names[k], d, e, self.user(i, written[i]))?;
            written[i] += 1;
            n += 1;
        }
        Ok(n)
    }
}

fn write_line(
    out: &mut impl Write,
    ts: u64,
    (s, o): &(String, String),
    d_us: i64,
    e: bool,
    user: u64,
) -> std::io::Result<()> {
    // Round half away from zero to whole ms.
    let ms = (d_us.unsigned_abs() + 500) / 1000;
    let sign = if d_us < 0 && ms > 0 { "-" } else { "" };
    writeln!(
        out,
        "{{\"ts\":{ts},\"service\":\"{s}\",\"operator\":\"{o}\",\"duration_ms\":{sign}{ms},\"is_error\":{e},\"user_id\":\"u{user:05}\"}}"
    )
}

/// Iterator over one generated partition.
pub struct GeneratedSpans {
    rng: ChaCha8Rng,
    left: u64,
    base_us: f64,
    step_us: f64,
    durations: Vec<LogNormal<f64>>,
    config: GeneratorConfig,
}

impl Iterator for GeneratedSpans {
    type Item = (u64, usize, i64, bool);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let c = &self.config;
        let hour = ((self.base_us / 3.6e9) % 24.0 + 24.0) % 24.0;
        let load = if c.diurnal {
            0.55 - 0.45 * (std::f64::consts::TAU * (hour - 3.0) / 24.0).cos()
        } else {
            1.0
        };
        self.base_us += self.step_us / load.max(0.05);
        let mut jitter = self.rng.gen_range(0..=c.out_of_orderness_ms);
        if c.late_ratio > 0.0 && self.rng.gen_bool(c.late_ratio.clamp(0.0, 1.0)) {
            jitter += c.late_delay_ms;
        }
        let ts = ((self.base_us / 1e3) as u64).saturating_sub(jitter);
        let key = self.rng.gen_range(0..self.durations.len());
        let is_error = self.rng.gen_bool(c.error_ratio.clamp(0.0, 1.0));
        let mut d = self.durations[key].sample(&mut self.rng);
        if is_error {
            d *= 3.0;
        }
        Some((ts, key, d.round() as i64, is_error))
    }
}

/// A generated partition as a [`PartitionReader`] of spans.
pub fn generator_partition(config: &GeneratorConfig, p: usize) -> Box<dyn PartitionReader<Span>> {
    generator_partition_at(config, p, None)
}

/// [`generator_partition`] continuing after the first `position.offset` spans
/// (regenerated and skipped: the generator is deterministic).
pub fn generator_partition_at(
    config: &GeneratorConfig,
    p: usize,
    position: Option<&PartitionPosition>,
) -> Box<dyn PartitionReader<Span>> {
    let produced = position.map_or(0, |pos| pos.offset);
    let mut spans = config.partition(p);
    for _ in 0..produced {
        if spans.next().is_none() {
            break;
        }
    }
    let keys = (0..config.keys())
        .map(|k| {
            let (s, o) = config.key_names(k);
            SpanKey::new(&s, &o, "span")
        })
        .collect();
    Box::new(GeneratorPartition {
        spans,
        keys,
        p,
        produced,
    })
}

struct GeneratorPartition {
    spans: GeneratedSpans,
    keys: Vec<SpanKey>,
    p: usize,
    produced: u64,
}

impl PartitionReader<Span> for GeneratorPartition {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<Span>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        for _ in 0..max_items {
            let Some((ts, k, duration_us, is_error)) = self.spans.next() else {
                return Ok(ReadStatus::Finished);
            };
            self.produced += 1;
            out.push(SourceItem::Record {
                event_time_ms: ts,
                record: Span {
                    event_time_ms: ts,
                    key: self.keys[k].clone(),
                    duration_us,
                    is_error,
                },
            });
        }
        Ok(if self.spans.left == 0 {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn describe(&self) -> String {
        format!("generator/{}", self.p)
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.produced,
            line: self.produced,
            ..PartitionPosition::default()
        }
    }
}
