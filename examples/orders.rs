//! The orders pipeline (seed 003) written with the DataStream API — the same
//! job as `examples/jobs/orders.toml`, with the same output rows:
//! orders (JSON) → typed decode with field completion (a missing
//! `order_id`, `event_time` or `amount` is an anomaly) → dedup by order id →
//! sliding windows 1 min / 30 s: `order_cnt`, `gmv_total` (exact, in cents),
//! `user_cnt` (distinct users) → JSON lines or ClickHouse.
//!
//! ```text
//! streamforge generate orders --events 100000 --partitions 2 --out out/orders.jsonl
//! cargo run --release --example orders -- --input 'out/orders-*.jsonl' --out out/orders-api.jsonl -w 2
//! cargo run --release --example orders -- --kafka 127.0.0.1:19092 --clickhouse http://127.0.0.1:18123
//! ```
//! Flags: `--input GLOB` (files) or `--kafka BROKERS` (topic `orders_stream`,
//! bounded); `--out FILE` (JSON lines) or `--clickhouse URL` (table
//! `orders_window_metrics`); `--dead-letter FILE`; `-w N` workers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use streamforge::api::{execute, JobOptions, WatermarkStrategy};
use streamforge::operators::{Count, DistinctCount, Sliding, Sum};
use streamforge::sinks::batched::BatchLimits;
use streamforge::sinks::clickhouse::{ClickHouse, ClickHouseSinkConfig};
use streamforge::sources::KafkaSourceConfig;

/// An order as it arrives; `amount` is kept as its JSON text (exact).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RawOrder {
    event_time: u64,
    order_id: String,
    user_id: String,
    amount: Box<RawValue>,
    #[serde(default = "unknown")]
    status: String,
    #[serde(default = "unknown")]
    category: String,
    #[serde(default = "unknown")]
    city: String,
}

fn unknown() -> String {
    "unknown".into()
}

/// A validated order: the amount in cents.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    event_time: u64,
    order_id: String,
    user_id: String,
    cents: i64,
    status: String,
    category: String,
    city: String,
}

/// `433.27` → 43327; anything else than a non-negative number with at most
/// two decimals is rejected (never rounded).
fn cents(text: &str) -> Result<i64, String> {
    let bad = || format!("column `amount`: {text} is not a non-negative amount with 2 decimals");
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    int.parse::<i64>()
        .ok()
        .and_then(|i| i.checked_mul(100))
        .and_then(|c| c.checked_add(frac))
        .ok_or_else(bad)
}

fn validate(o: RawOrder) -> Result<Order, String> {
    Ok(Order {
        cents: cents(o.amount.get())?,
        event_time: o.event_time,
        order_id: o.order_id,
        user_id: o.user_id,
        status: o.status,
        category: o.category,
        city: o.city,
    })
}

/// One output row as the job file writes it.
fn json_row(start: u64, end: u64, n: u64, cents: i64, users: u64, clickhouse: bool) -> String {
    let gmv = format!("{}.{:02}", cents / 100, cents % 100);
    if clickhouse {
        format!(
            r#"{{"event_window_start":{},"event_window_end":{},"window_start_ms":{start},"order_cnt":{n},"gmv_total":{gmv},"user_cnt":{users},"version":0}}"#,
            start / 1000,
            end / 1000
        )
    } else {
        format!(
            r#"{{"window_start_ms":{start},"window_end_ms":{end},"order_cnt":{n},"gmv_total":{gmv},"user_cnt":{users}}}"#
        )
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let workers: usize = flag("-w").map_or(Ok(1), |w| w.parse())?;
    let mut options = JobOptions::new("orders-api").workers(workers);
    if let Some(d) = flag("--dead-letter") {
        options = options.dead_letter(d);
    }
    let input = flag("--input");
    let kafka = flag("--kafka");
    let clickhouse = flag("--clickhouse");
    let out = flag("--out").unwrap_or_else(|| "out/orders-api.jsonl".into());
    if input.is_none() && kafka.is_none() {
        return Err("give --input GLOB or --kafka BROKERS".into());
    }
    let summary = execute(&options, move |env| {
        let watermarks = WatermarkStrategy::for_bounded_out_of_orderness_ms(2_000);
        let raw = match (&input, &kafka) {
            (Some(glob), _) => env.from_jsonl(
                "source",
                &[PathBuf::from(glob)],
                watermarks,
                |o: &RawOrder| o.event_time,
            )?,
            (None, Some(brokers)) => {
                let config: KafkaSourceConfig = toml::from_str(&format!(
                    "topic = \"orders_stream\"\nbounded = true\n[properties]\n\"bootstrap.servers\" = {brokers:?}\n"
                ))
                .map_err(|e| streamforge::error::Error::Invalid(e.to_string()))?;
                env.from_kafka("source", &config, watermarks, |o: &RawOrder| o.event_time)?
            }
            (None, None) => unreachable!("checked"),
        };
        let windows = raw
            .try_map("validate", validate)
            .key_by(|o: &Order| o.order_id.clone())
            .dedup("dedup", 600_000)
            .key_by(|_| ())
            .window(Sliding::new(60_000, 30_000))
            .aggregate(
                "window",
                (
                    Count,
                    Sum::of(|o: &Order| o.cents),
                    DistinctCount::of(|o: &Order| o.user_id.clone()),
                ),
            );
        let to_ch = clickhouse.is_some();
        let rows = windows.results.map(move |r| {
            let (n, cents, users) = r.value;
            json_row(r.window.start_ms, r.window.end_ms, n, cents, users, to_ch)
        });
        match &clickhouse {
            Some(url) => {
                let config: ClickHouseSinkConfig = toml::from_str(&format!(
                    "url = {url:?}\ntable = \"orders_window_metrics\"\n"
                ))
                .map_err(|e| streamforge::error::Error::Invalid(e.to_string()))?;
                let limits = BatchLimits {
                    rows: config.batch_rows,
                    bytes: config.batch_bytes,
                    interval: config.batch_interval,
                };
                let target = ClickHouse::new(&config, Default::default())?;
                rows.sink_commit(
                    "clickhouse",
                    target,
                    |l: &String| l.as_bytes().to_vec(),
                    Vec::len,
                    limits,
                );
            }
            None => rows.sink_lines("jsonl", out.clone(), None),
        }
        Ok(())
    })?;
    println!(
        "orders-api: events {}  rows {}  late {}  dead-lettered {}  elapsed {:.3}s",
        summary.events,
        summary.written,
        summary.late,
        summary.dead_letters,
        summary.elapsed_seconds
    );
    Ok(())
}
