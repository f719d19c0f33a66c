//! The DataStream API against naive sequential models, at 1, 2 and 4
//! workers: sliding windows with an exact distinct count, dedup with a TTL,
//! a keyed process function with timers, typed decoding with dead letters,
//! and a savepoint restored with another worker count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use streamforge::api::{execute, JobOptions, RunSummary, WatermarkStrategy};
use streamforge::job::{CheckpointConfig, RestoreFrom};
use streamforge::operators::{KeyedProcessFunction, ProcessContext, ProcessSpec};
use streamforge::prelude::*;

/// An event: user, service, event time, amount.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    user: String,
    service: u32,
    ts: u64,
    amount: i64,
}

/// Seeded partitions of events; `late_ratio` of them far behind.
fn events(seed: u64, n: usize, parts: usize, disorder_ms: u64, late_ratio: f64) -> Vec<Vec<Event>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..parts)
        .map(|_| {
            let mut t = rng.gen_range(0..3_000u64);
            (0..n / parts)
                .map(|_| {
                    t += rng.gen_range(0..200);
                    let mut jitter = rng.gen_range(0..=disorder_ms);
                    if rng.gen_bool(late_ratio) {
                        jitter += rng.gen_range(0..30_000);
                    }
                    Event {
                        user: format!("u{:03}", rng.gen_range(0..40)),
                        service: rng.gen_range(0..5),
                        ts: t.saturating_sub(jitter),
                        amount: rng.gen_range(1..1_000),
                    }
                })
                .collect()
        })
        .collect()
}

/// Per partition in order: is each event behind its partition's watermark
/// (max seen − bound), and the watermark when it was read.
fn deliveries(parts: &[Vec<Event>], bound_ms: u64) -> Vec<(Event, u64)> {
    let mut out = Vec::new();
    for p in parts {
        let mut max_seen: Option<u64> = None;
        for e in p {
            let wm = max_seen.map_or(0, |m| m.saturating_sub(bound_ms));
            out.push((e.clone(), wm));
            max_seen = Some(max_seen.map_or(e.ts, |m| m.max(e.ts)));
        }
    }
    out
}

type HopRow = (u32, u64, u64, u64, i64, u64);

/// HOP 10 s / 5 s per service with allowed lateness: count, sum, distinct
/// users (the model: every aligned window containing the event that is still
/// open at its partition's watermark).
fn hop_model(parts: &[Vec<Event>], bound_ms: u64, lateness_ms: u64) -> (Vec<HopRow>, usize) {
    let mut acc: BTreeMap<(u32, u64), (u64, i64, BTreeSet<String>)> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in deliveries(parts, bound_ms) {
        let mut live = 0;
        let mut s = e.ts / 5_000 * 5_000;
        loop {
            if s + 10_000 > e.ts && s + 10_000 + lateness_ms > wm {
                let a = acc.entry((e.service, s)).or_default();
                a.0 += 1;
                a.1 += e.amount;
                a.2.insert(e.user.clone());
                live += 1;
            }
            if s < 5_000 {
                break;
            }
            s -= 5_000;
        }
        if live == 0 {
            late += 1;
        }
    }
    let rows = acc
        .into_iter()
        .map(|((svc, s), (n, sum, users))| (svc, s, s + 10_000, n, sum, users.len() as u64))
        .collect();
    (rows, late)
}

fn hop_job(parts: Vec<Vec<Event>>, workers: usize, bound_ms: u64) -> (Vec<HopRow>, RunSummary) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let got = out.clone();
    let summary = execute(&JobOptions::new("hop").workers(workers), move |env| {
        let w = env
            .from_partitions(
                "events",
                parts.clone(),
                WatermarkStrategy::for_bounded_out_of_orderness_ms(bound_ms),
                |e: &Event| e.ts,
            )
            .key_by(|e| e.service)
            .window(Sliding::new(10_000, 5_000))
            .allowed_lateness_ms(1_000)
            .aggregate(
                "hop",
                (
                    Count,
                    Sum::of(|e: &Event| e.amount),
                    DistinctCount::of(|e: &Event| e.user.clone()),
                ),
            );
        w.results
            .map(|r| {
                let (n, sum, users) = r.value;
                (r.key, r.window.start_ms, r.window.end_ms, n, sum, users)
            })
            .sink_vec("rows", got.clone());
        Ok(())
    })
    .expect("job runs");
    let mut rows = out.lock().unwrap().clone();
    rows.sort();
    (rows, summary)
}

#[test]
fn sliding_windows_with_distinct_users_match_the_model_at_1_2_4_workers() {
    let parts = events(1, 12_000, 3, 3_000, 0.03);
    let (want, late) = hop_model(&parts, 1_500, 1_000);
    assert!(late > 0, "the case must exercise lateness");
    for workers in [1, 2, 4] {
        let (rows, summary) = hop_job(parts.clone(), workers, 1_500);
        assert_eq!(rows, want, "rows at {workers} workers");
        assert_eq!(summary.late as usize, late, "late at {workers} workers");
        assert_eq!(summary.events, 12_000);
        assert_eq!(summary.written as usize, want.len());
    }
}

/// Kept events: per user, walk the events by (time, encoding); keep one when
/// no kept event of the user is within the TTL before it.
fn dedup_model(parts: &[Vec<Event>], ttl_ms: u64) -> Vec<Event> {
    let mut by_user: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in parts.iter().flatten() {
        by_user.entry(e.user.clone()).or_default().push(e.clone());
    }
    let mut kept = Vec::new();
    for (_, mut es) in by_user {
        es.sort_by_key(|e| (e.ts, bincode_of(e)));
        let mut last: Option<u64> = None;
        for e in es {
            if last.is_none_or(|k| e.ts >= k + ttl_ms) {
                last = Some(e.ts);
                kept.push(e);
            }
        }
    }
    kept.sort();
    kept
}

fn bincode_of(e: &Event) -> Vec<u8> {
    // The tie-break the operator documents: the record's encoding.
    let mut v = (e.user.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(e.user.as_bytes());
    v.extend_from_slice(&e.service.to_le_bytes());
    v.extend_from_slice(&e.ts.to_le_bytes());
    v.extend_from_slice(&e.amount.to_le_bytes());
    v
}

fn dedup_job(parts: Vec<Vec<Event>>, workers: usize, bound_ms: u64, ttl_ms: u64) -> Vec<Event> {
    dedup_job_with(
        parts,
        JobOptions::new("dedup").workers(workers),
        bound_ms,
        ttl_ms,
    )
}

fn dedup_job_with(
    parts: Vec<Vec<Event>>,
    options: JobOptions,
    bound_ms: u64,
    ttl_ms: u64,
) -> Vec<Event> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let got = out.clone();
    execute(&options, move |env| {
        env.from_partitions(
            "events",
            parts.clone(),
            WatermarkStrategy::for_bounded_out_of_orderness_ms(bound_ms),
            |e: &Event| e.ts,
        )
        .key_by(|e| e.user.clone())
        .dedup("dedup", ttl_ms)
        .sink_vec("kept", got.clone());
        Ok(())
    })
    .expect("job runs");
    let mut kept = out.lock().unwrap().clone();
    kept.sort();
    kept
}

#[test]
fn dedup_with_ttl_matches_the_model_and_is_deterministic_with_late_events() {
    // Disorder within the bound: nothing is behind the watermark, so the
    // first event by time of each user wins, then again after the TTL.
    let parts = events(2, 6_000, 3, 1_000, 0.0);
    let want = dedup_model(&parts, 4_000);
    assert!(want.len() > 40 && want.len() < 5_000, "{}", want.len());
    for workers in [1, 2, 4] {
        assert_eq!(
            dedup_job(parts.clone(), workers, 1_000, 4_000),
            want,
            "{workers} workers"
        );
    }
    // With events far behind the watermark the winner still does not depend
    // on parallelism.
    let parts = events(3, 6_000, 3, 2_000, 0.05);
    let one = dedup_job(parts.clone(), 1, 1_000, 4_000);
    assert!(!one.is_empty());
    for workers in [2, 4] {
        assert_eq!(
            dedup_job(parts.clone(), workers, 1_000, 4_000),
            one,
            "{workers} workers"
        );
    }
    // Nor on batching and checkpoint epochs: a throttled run with a
    // checkpoint every 20 ms keeps the same records.
    let dir = tempfile::tempdir().unwrap();
    let mut options = JobOptions::new("dedup-throttled")
        .workers(2)
        .checkpoint(CheckpointConfig {
            dir: dir.path().join("ckpt"),
            interval: Duration::from_millis(20),
            retain: 2,
        });
    options.rate_limit = Some(8_000);
    assert_eq!(
        dedup_job_with(parts, options, 1_000, 4_000),
        one,
        "throttled, checkpointed"
    );
}

/// Inactivity alerts: a user's event at `t` with no later event of the user
/// within 5 s emits `(user, t)` at `t + 5 s` — a timer per event.
struct Inactivity;

impl KeyedProcessFunction<String, Event> for Inactivity {
    type State = BTreeSet<u64>;
    type Out = (String, u64);
    fn process_element(
        &self,
        _user: &String,
        seen: &mut Option<BTreeSet<u64>>,
        _e: Event,
        ts: u64,
        ctx: &mut ProcessContext<'_, (String, u64)>,
    ) {
        seen.get_or_insert_with(BTreeSet::new).insert(ts);
        ctx.register_timer(ts + 5_000);
    }
    fn on_timer(
        &self,
        user: &String,
        seen: &mut Option<BTreeSet<u64>>,
        ctx: &mut ProcessContext<'_, (String, u64)>,
    ) {
        let Some(set) = seen.as_mut() else { return };
        let t = ctx.current_ms - 5_000;
        if set.contains(&t) && set.range(t + 1..ctx.current_ms).next().is_none() {
            ctx.output(ctx.current_ms, (user.clone(), t));
        }
        // Event times up to t are decided.
        *set = set.split_off(&(t + 1));
        if set.is_empty() {
            *seen = None;
        }
    }
}

fn inactivity_model(parts: &[Vec<Event>]) -> Vec<(String, u64)> {
    let mut by_user: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for e in parts.iter().flatten() {
        by_user.entry(e.user.clone()).or_default().insert(e.ts);
    }
    let mut out = Vec::new();
    for (u, ts) in by_user {
        let v: Vec<u64> = ts.into_iter().collect();
        for (i, t) in v.iter().enumerate() {
            if v.get(i + 1).is_none_or(|n| *n >= t + 5_000) {
                out.push((u.clone(), *t));
            }
        }
    }
    out
}

#[test]
fn keyed_process_with_timers_matches_the_model_at_1_2_4_workers() {
    // Sparse users so that gaps of ≥ 5 s occur; disorder within the bound.
    let mut parts = events(4, 3_000, 2, 800, 0.0);
    for (i, e) in parts.iter_mut().flatten().enumerate() {
        e.user = format!("u{}", i % 7);
        e.ts *= 9;
    }
    let want = inactivity_model(&parts);
    assert!(want.len() > 20, "{}", want.len());
    for workers in [1, 2, 4] {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (got, p) = (out.clone(), parts.clone());
        execute(&JobOptions::new("inactive").workers(workers), move |env| {
            env.from_partitions(
                "events",
                p.clone(),
                WatermarkStrategy::for_bounded_out_of_orderness_ms(8_000),
                |e: &Event| e.ts,
            )
            .key_by(|e| e.user.clone())
            .process("inactivity", ProcessSpec::default(), Inactivity)
            .sink_vec("alerts", got.clone());
            Ok(())
        })
        .expect("job runs");
        let mut got = out.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn typed_jsonl_source_dead_letters_values_that_do_not_fit_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"user":"a","service":1,"ts":1000,"amount":5}"#,
            r#"{"user":"b","service":1,"ts":99999999999999999999,"amount":5}"#,
            r#"{"user":"c","service":1,"ts":1200,"amount":"NaN"}"#,
            r#"{"user":"d","service":-1,"ts":1300,"amount":5}"#,
            r#"{"user":"e","service":1,"ts":1400"#,
            "",
            r#"{"user":"f","service":2,"ts":1500,"amount":7,"extra":true}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let out = Arc::new(Mutex::new(Vec::new()));
    let (got, path) = (out.clone(), input.clone());
    let summary = execute(&JobOptions::new("typed").dead_letter(&dead), move |env| {
        env.from_jsonl::<Event, _>(
            "events",
            std::slice::from_ref(&path),
            WatermarkStrategy::default(),
            |e| e.ts,
        )?
        .sink_vec("rows", got.clone());
        Ok(())
    })
    .unwrap();
    let users: Vec<String> = out.lock().unwrap().iter().map(|e| e.user.clone()).collect();
    assert_eq!(users, ["a", "f"]);
    assert_eq!((summary.events, summary.dead_letters), (2, 4));
    let dead: Vec<DeadLetter> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_line: BTreeMap<u64, &DeadLetter> = dead.iter().map(|d| (d.position, d)).collect();
    assert_eq!(by_line.keys().copied().collect::<Vec<_>>(), [2, 3, 4, 5]);
    // The huge timestamp is rejected, not saturated to u64::MAX (which would
    // have closed every window of the partition).
    assert!(by_line[&2].raw.contains("99999999999999999999"));
    assert!(
        by_line[&3].reason.contains("invalid type"),
        "{}",
        by_line[&3].reason
    );
    assert!(
        by_line[&4].reason.contains("invalid value"),
        "{}",
        by_line[&4].reason
    );
    assert!(by_line[&5].reason.contains("EOF"), "{}", by_line[&5].reason);
}

/// The checkpointed job of the restore test: filter → dedup → HOP windows
/// with a distinct count → exactly-once JSONL.
fn checkpointed_job(
    parts: Vec<Vec<Event>>,
    dir: PathBuf,
    workers: usize,
    restore: RestoreFrom,
    rate: Option<u64>,
) -> RunSummary {
    let mut options = JobOptions::new("restore")
        .workers(workers)
        .checkpoint(CheckpointConfig {
            dir: dir.join("ckpt"),
            interval: Duration::from_millis(50),
            retain: 3,
        })
        .restore(restore);
    options.rate_limit = rate;
    let out = dir.join("rows");
    execute(&options, move |env| {
        let w = env
            .from_partitions(
                "events",
                parts.clone(),
                WatermarkStrategy::for_bounded_out_of_orderness_ms(1_000),
                |e: &Event| e.ts,
            )
            .filter(|e| e.amount % 7 != 0)
            .key_by(|e| (e.user.clone(), e.amount % 3))
            .dedup("dedup", 2_000)
            .key_by(|e| e.service)
            .window(Sliding::new(10_000, 5_000))
            .aggregate(
                "hop",
                (Count, DistinctCount::of(|e: &Event| e.user.clone())),
            );
        w.results
            .map(|r| (r.key, r.window.start_ms, r.value))
            .sink_jsonl("rows", out.clone());
        Ok(())
    })
    .expect("job runs")
}

#[test]
fn savepoint_restored_with_another_worker_count_equals_an_uninterrupted_run() {
    let parts = events(5, 8_000, 4, 1_500, 0.02);
    let base = tempfile::tempdir().unwrap();
    let whole = base.path().join("whole");
    checkpointed_job(parts.clone(), whole.clone(), 2, RestoreFrom::Fresh, None);
    let want = streamforge::sinks::read_committed(&whole.join("rows")).unwrap();
    assert!(want.len() > 100);

    // A throttled run at 2 workers stopped with a savepoint mid-way, resumed
    // at 3 workers. Its two source workers freeze at different cuts; the
    // savepoint is the first checkpoint at which both are frozen, so no
    // window fires before the records of a frozen worker's partitions (a
    // window emitted as 57 + 7 rows when they stopped one after the other).
    // 2 000 events/s per worker: the 8 000 take 2 s, the stop comes at 0.6 s.
    let split = base.path().join("split");
    let (p, d) = (parts.clone(), split.clone());
    let first =
        std::thread::spawn(move || checkpointed_job(p, d, 2, RestoreFrom::Fresh, Some(2_000)));
    std::thread::sleep(Duration::from_millis(600));
    let savepoint = streamforge::job::savepoint(&split.join("ckpt"), Duration::from_secs(20))
        .expect("savepoint");
    let first = first.join().unwrap();
    assert!(first.events > 0 && first.events < 8_000, "{}", first.events);
    let resumed = checkpointed_job(
        parts.clone(),
        split.clone(),
        3,
        RestoreFrom::Path(savepoint),
        None,
    );
    let id = resumed.restored_from.expect("a restored run");
    assert!(id > 0);
    // The resumed run read only what the savepoint had not.
    assert_eq!(first.events + resumed.events, 8_000, "events read once");
    let got = streamforge::sinks::read_committed(&split.join("rows")).unwrap();
    let (mut a, mut b) = (got.clone(), want.clone());
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "rows after savepoint + restore at another worker count"
    );
}
