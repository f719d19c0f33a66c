//! Seeded order events for the orders pipeline (seed 003): JSON lines with
//! the seed's fields `event_time` (ms), `order_id`, `user_id`, `amount`
//! (a decimal with 2 places) plus `status`, `category` and `city`, at a
//! diurnal rate, with repeated events (the same order sent again up to 2 s
//! later), malformed events (broken JSON, a missing `order_id` or
//! `event_time`, a non-numeric or negative `amount`), events missing their
//! optional fields, and late events.
//!
//! No real order data set exists; this generator is the stand-in.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Generator settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OrdersConfig {
    /// RNG seed.
    pub seed: u64,
    /// Orders (before duplicates) in all partitions.
    pub events: u64,
    /// Partitions (files or Kafka partitions).
    pub partitions: usize,
    /// Mean orders per second of event time (all partitions), modulated by
    /// the hour of day (low at night).
    pub events_per_second: f64,
    /// Event time of the first order, ms.
    pub start_ms: u64,
    /// Distinct users.
    pub users: u64,
    /// Share of orders sent twice.
    pub duplicate_ratio: f64,
    /// Share of events that are malformed.
    pub malformed_ratio: f64,
    /// Share of events without their optional fields.
    pub incomplete_ratio: f64,
    /// Share of events late by `late_delay_ms`.
    pub late_ratio: f64,
    /// Delay of late events, ms.
    pub late_delay_ms: u64,
    /// Disorder of on-time events, ms.
    pub out_of_orderness_ms: u64,
}

impl OrdersConfig {
    /// Defaults with `events` orders: 1 partition, 50 orders/s, 2 000
    /// users, 3 % duplicates, 0.5 % malformed, 5 % incomplete, 1 % late by
    /// 90 s, 1 s disorder, starting 2023-01-29T00:00:00Z.
    pub fn with_events(events: u64) -> Self {
        OrdersConfig {
            seed: 42,
            events,
            partitions: 1,
            events_per_second: 50.0,
            start_ms: 1_674_950_400_000,
            users: 2_000,
            duplicate_ratio: 0.03,
            malformed_ratio: 0.005,
            incomplete_ratio: 0.05,
            late_ratio: 0.01,
            late_delay_ms: 90_000,
            out_of_orderness_ms: 1_000,
        }
    }

    /// Writes the events of partition `p` as JSON lines; returns the lines
    /// written. Order ids are unique across partitions (`o<p>-<n>`).
    ///
    /// # Errors
    /// Write errors.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sources::orders::OrdersConfig;
    /// let mut buf = Vec::new();
    /// let n = OrdersConfig::with_events(1_000).write_partition_jsonl(0, &mut buf).unwrap();
    /// let text = String::from_utf8(buf).unwrap();
    /// assert_eq!(text.lines().count() as u64, n);
    /// assert!(n > 1_000, "duplicates are extra lines");
    /// let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    /// assert!(first["order_id"].is_string() && first["amount"].is_number());
    /// ```
    pub fn write_partition_jsonl(&self, p: usize, out: &mut impl Write) -> std::io::Result<u64> {
        const STATUS: [&str; 3] = ["paid", "paid", "created"];
        const CATEGORY: [&str; 5] = ["books", "electronics", "grocery", "fashion", "home"];
        const CITY: [&str; 6] = [
            "beijing", "shanghai", "shenzhen", "hangzhou", "chengdu", "wuhan",
        ];
        let parts = self.partitions.max(1) as u64;
        let count = self.events / parts + u64::from((p as u64) < self.events % parts);
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (p as u64 + 1).wrapping_mul(0x9E37_79B9));
        let mut t = self.start_ms as f64;
        let mut lines = 0;
        let mut pending: Vec<(u64, String)> = Vec::new();
        for n in 0..count {
            // Diurnal rate: 0.3× at 04:00, 1.7× at 16:00 (UTC).
            let hour = ((t as u64 / 3_600_000) % 24) as f64;
            let factor = 1.0 - 0.7 * ((hour - 4.0) / 24.0 * std::f64::consts::TAU).cos();
            let rate = (self.events_per_second / parts as f64 * factor).max(1e-6);
            t += rng.gen_range(0.0..2.0) * 1e3 / rate;
            let mut ts = (t as u64).saturating_sub(rng.gen_range(0..=self.out_of_orderness_ms));
            if rng.gen_bool(self.late_ratio) {
                ts = ts.saturating_sub(self.late_delay_ms);
            }
            let order_id = format!("o{p}-{n:07}");
            let user = format!("u{:05}", rng.gen_range(0..self.users.max(1)));
            let cents: u64 = (rng.gen_range(1.0f64..9.0).powi(3) * 100.0) as u64 + 1;
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let mut line = if rng.gen_bool(self.incomplete_ratio) {
                format!(
                    r#"{{"event_time":{ts},"order_id":"{order_id}","user_id":"{user}","amount":{amount}}}"#
                )
            } else {
                format!(
                    r#"{{"event_time":{ts},"order_id":"{order_id}","user_id":"{user}","amount":{amount},"status":"{}","category":"{}","city":"{}"}}"#,
                    STATUS[rng.gen_range(0..STATUS.len())],
                    CATEGORY[rng.gen_range(0..CATEGORY.len())],
                    CITY[rng.gen_range(0..CITY.len())]
                )
            };
            if rng.gen_bool(self.malformed_ratio) {
                line = match rng.gen_range(0..5) {
                    0 => line[..line.len() / 2].to_string(),
                    1 => line.replacen(&format!(r#""order_id":"{order_id}","#), "", 1),
                    2 => line.replacen(&format!(r#""event_time":{ts},"#), "", 1),
                    3 => line.replacen(&format!(r#""amount":{amount}"#), r#""amount":"abc""#, 1),
                    _ => line.replacen(
                        &format!(r#""amount":{amount}"#),
                        &format!(r#""amount":-{amount}"#),
                        1,
                    ),
                };
            }
            if rng.gen_bool(self.duplicate_ratio) {
                // Sent again a little later: the same event, or the same
                // order at a later event time.
                let again = if rng.gen_bool(0.5) {
                    line.clone()
                } else {
                    line.replacen(
                        &format!(r#""event_time":{ts}"#),
                        &format!(r#""event_time":{}"#, ts + 500),
                        1,
                    )
                };
                pending.push((t as u64 + rng.gen_range(0..2_000), again));
            }
            writeln!(out, "{line}")?;
            lines += 1;
            let (due, later): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(at, _)| *at <= t as u64);
            pending = later;
            for (_, l) in due {
                writeln!(out, "{l}")?;
                lines += 1;
            }
        }
        for (_, l) in pending {
            writeln!(out, "{l}")?;
            lines += 1;
        }
        Ok(lines)
    }
}
