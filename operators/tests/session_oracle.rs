//! Oracle tests for session windows: seeded random out-of-order input through
//! the dataflow and through a naive sequential model give identical sessions
//! and late records, at 1, 2 and 4 workers, with and without epochs; a
//! proptest over the parameters; and checkpoint round trips (savepoint and
//! mid-run checkpoints, restored with other worker counts).
//!
//! The model consumes the delivery time `t` of every record as captured from
//! the source stream of the same run (delivery times are a property of the
//! source, tested there); the test also checks that they are the same in
//! every run. With the default `items_per_activation` (far above the input
//! sizes) every partition is read in batches of exactly `batch_items`, so its
//! delivery times depend on its own records only.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use streamforge_dataflow::checkpoint::{
    CheckpointContext, CheckpointGraph, CheckpointSettings, PartitionPosition, Restore,
};
use streamforge_dataflow::checkpoint_store::CheckpointStore;
use streamforge_dataflow::source::{
    checkpointed_source, partitioned_source, vec_partition, PartitionReader, ReadStatus,
    SourceItem, SourceSettings,
};
use streamforge_dataflow::time::Time;
use streamforge_operators::{Count, SessionSpec, SessionWindowAggregate, Sum};
use timely::dataflow::operators::Inspect;

/// (key, event time, value)
type Rec = (u64, u64, i64);
/// (start, end, key, count, sum)
type Row = (u64, u64, u64, u64, i64);

const BATCH: usize = 7;

#[derive(Clone, Debug)]
struct Case {
    partitions: Vec<Vec<Rec>>,
    gap_ms: u64,
    lateness_ms: u64,
    bound_ms: u64,
    epoch_every: Option<usize>,
}

impl Case {
    fn spec(&self) -> SessionSpec {
        SessionSpec::with_gap(self.gap_ms).allowed_lateness_ms(self.lateness_ms)
    }
}

/// Event times on a 50 ms grid, so that sessions often touch exactly and
/// records often arrive exactly when a session fires.
#[allow(clippy::too_many_arguments)]
fn random_case(
    seed: u64,
    records: usize,
    parts: usize,
    keys: u64,
    gap_ms: u64,
    lateness_ms: u64,
    disorder_ms: u64,
    late_ratio: f64,
) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let partitions = (0..parts)
        .map(|_| {
            let mut t = rng.gen_range(0..100u64) * 50;
            // A multiple of the batch size (see `checkpoint_round_trip`).
            (0..records / parts / BATCH * BATCH)
                .map(|_| {
                    // Steps of up to about the gap per key: sessions both form and break.
                    t += rng.gen_range(0..=gap_ms / 100) * 50;
                    let mut jitter = rng.gen_range(0..=disorder_ms / 50) * 50;
                    if rng.gen_bool(late_ratio) {
                        jitter += rng.gen_range(0..200) * 50;
                    }
                    (
                        rng.gen_range(0..keys),
                        t.saturating_sub(jitter) / 50 * 50,
                        rng.gen_range(-20..100i64),
                    )
                })
                .collect()
        })
        .collect();
    Case {
        partitions,
        gap_ms,
        lateness_ms,
        bound_ms: disorder_ms / 2,
        epoch_every: None,
    }
}

/// The sequential model: records in order of delivery time; before the
/// records at `t`, every session with `end + lateness <= t` fires; a record is
/// late when `e + gap + lateness <= t`, else it merges with every open session
/// of its key that touches `[e, e + gap)`, transitively.
fn model(deliveries: &[(Rec, u64)], gap: u64, lateness: u64) -> (Vec<Row>, Vec<Rec>) {
    let mut by_t = deliveries.to_vec();
    by_t.sort_by_key(|(_, t)| *t);
    let mut open: Vec<Row> = Vec::new();
    let mut rows = Vec::new();
    let mut late = Vec::new();
    let fire = |open: &mut Vec<Row>, rows: &mut Vec<Row>, t: Option<u64>| {
        open.retain(|s| {
            let fires = t.is_none_or(|t| s.1 + lateness <= t);
            if fires {
                rows.push(*s);
            }
            !fires
        })
    };
    for (i, &((k, e, v), t)) in by_t.iter().enumerate() {
        if i == 0 || by_t[i - 1].1 != t {
            fire(&mut open, &mut rows, Some(t));
        }
        if e + gap + lateness <= t {
            late.push((k, e, v));
            continue;
        }
        let (mut start, mut end, mut count, mut sum) = (e, e + gap, 1, v);
        while let Some(j) = open
            .iter()
            .position(|s| s.2 == k && s.0 <= end && s.1 >= start)
        {
            let s = open.swap_remove(j);
            start = start.min(s.0);
            end = end.max(s.1);
            count += s.3;
            sum += s.4;
        }
        open.push((start, end, k, count, sum));
    }
    fire(&mut open, &mut rows, None);
    rows.sort();
    late.sort();
    (rows, late)
}

/// What a run saw: source deliveries `(record, t)`, rows and late records
/// with the time they were emitted at.
#[derive(Default)]
struct Run {
    deliveries: Vec<(Rec, u64)>,
    rows: Vec<(Time, Row)>,
    late: Vec<(Time, Rec)>,
}

impl Run {
    fn sorted_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self.rows.iter().map(|r| r.1).collect();
        rows.sort();
        rows
    }
    fn sorted_late(&self) -> Vec<Rec> {
        let mut late: Vec<Rec> = self.late.iter().map(|r| r.1).collect();
        late.sort();
        late
    }
    fn sorted_deliveries(&self) -> Vec<(Rec, u64)> {
        let mut d = self.deliveries.clone();
        d.sort();
        d
    }
}

type Shared = Arc<Mutex<Run>>;

fn settings(case: &Case) -> SourceSettings {
    SourceSettings {
        batch_items: BATCH,
        epoch_every_items: case.epoch_every,
        ..SourceSettings::new("src", case.bound_ms)
    }
}

/// Inspects deliveries, rows and late records into `run`.
fn observe<'s>(
    run: &Shared,
    recs: timely::dataflow::Stream<'s, Time, Vec<Rec>>,
) -> timely::dataflow::Stream<'s, Time, Vec<Rec>> {
    let r = run.clone();
    recs.inspect_time(move |t, x| r.lock().unwrap().deliveries.push((*x, t.event_ms)))
}

fn observe_outputs<'s>(
    run: &Shared,
    (out, late): streamforge_operators::WindowOutputs<'s, u64, (u64, i64), Rec>,
) {
    let r = run.clone();
    out.inspect_time(move |t, w| {
        let row = (
            w.window.start_ms,
            w.window.end_ms,
            w.key,
            w.value.0,
            w.value.1,
        );
        r.lock().unwrap().rows.push((*t, row));
    });
    let r = run.clone();
    late.inspect_time(move |t, x| r.lock().unwrap().late.push((*t, *x)));
}

fn value(r: &Rec) -> i64 {
    r.2
}

/// Count and sum of the values.
type Agg = (Count, Sum<fn(&Rec) -> i64>);

fn aggregate() -> Agg {
    (Count, Sum::of(value as fn(&Rec) -> i64))
}

fn dataflow(case: &Case, workers: usize) -> Run {
    let run: Shared = Arc::default();
    let (r, c) = (run.clone(), case.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (r, c) = (r.clone(), c.clone());
        worker.dataflow::<Time, _, _>(move |scope| {
            let parts = c.partitions.clone();
            let (recs, _dead) = partitioned_source(
                scope,
                settings(&c),
                parts.len(),
                move |i| {
                    vec_partition(
                        format!("p{i}"),
                        parts[i].iter().map(|r| (r.1, *r)).collect(),
                    )
                },
                None,
            );
            let outputs = observe(&r, recs).session_window_aggregate(
                "sessions",
                c.spec(),
                |r: &Rec| &r.0,
                |r: &Rec| r.1,
                aggregate(),
            );
            observe_outputs(&r, outputs);
        });
    })
    .expect("timely starts")
    .join();
    let run = std::mem::take(&mut *run.lock().unwrap());
    run
}

/// Checks a run against the model of its own deliveries, and the times of
/// its outputs: rows at `end + lateness`, late records at their delivery time.
fn check_run(case: &Case, run: &Run, what: &str) -> (Vec<Row>, Vec<Rec>) {
    let (rows, late) = model(&run.deliveries, case.gap_ms, case.lateness_ms);
    assert_eq!(run.sorted_late(), late, "late records, {what}");
    assert_eq!(run.sorted_rows(), rows, "sessions, {what}");
    for (t, row) in &run.rows {
        assert_eq!(
            t.event_ms,
            row.1 + case.lateness_ms,
            "time of {row:?}, {what}"
        );
    }
    let delivered: BTreeMap<Rec, Vec<u64>> =
        run.deliveries
            .iter()
            .fold(BTreeMap::new(), |mut m, (r, t)| {
                m.entry(*r).or_default().push(*t);
                m
            });
    for (t, r) in &run.late {
        assert!(
            delivered[r].contains(&t.event_ms),
            "late {r:?} emitted at {t:?}, {what}"
        );
    }
    (rows, late)
}

fn check(case: &Case, workers: &[usize]) -> (Vec<Row>, Vec<Rec>) {
    // (deliveries, rows, late records) of the first run.
    type Outcome = (Vec<(Rec, u64)>, Vec<Row>, Vec<Rec>);
    let mut reference: Option<Outcome> = None;
    for epochs in [None, Some(13)] {
        let case = Case {
            epoch_every: epochs,
            ..case.clone()
        };
        for &w in workers {
            let run = dataflow(&case, w);
            let what = format!("{w} workers, epochs every {epochs:?}");
            let (rows, late) = check_run(&case, &run, &what);
            match &reference {
                None => reference = Some((run.sorted_deliveries(), rows, late)),
                Some((d, r, l)) => {
                    assert_eq!(&run.sorted_deliveries(), d, "deliveries, {what}");
                    assert_eq!(&rows, r, "sessions, {what}");
                    assert_eq!(&late, l, "late records, {what}");
                }
            }
        }
    }
    let (_, rows, late) = reference.expect("ran");
    (rows, late)
}

#[test]
fn model_merges_through_a_bridge_and_respects_fired_sessions() {
    // gap 10, lateness 0. a@0 → [0,10); b@20 → [20,30); c (e=10, at t=10)
    // touches [0,10) but it fired at 10: new session [10,20), which touches
    // [20,30) (not fired): merged [10,30). d (e=5, t=15): 5+10 <= 15, late.
    let deliveries = [
        ((1, 0, 1), 0),
        ((1, 20, 2), 0),
        ((1, 10, 4), 10),
        ((1, 5, 8), 15),
    ];
    let (rows, late) = model(&deliveries, 10, 0);
    assert_eq!(rows, vec![(0, 10, 1, 1, 1), (10, 30, 1, 2, 6)]);
    assert_eq!(late, vec![(1, 5, 8)]);
    // With t = 9 for c, [0,10) is still open: everything merges.
    let deliveries = [((1, 0, 1), 0), ((1, 20, 2), 0), ((1, 10, 4), 9)];
    assert_eq!(model(&deliveries, 10, 0).0, vec![(0, 30, 1, 3, 7)]);
}

#[test]
fn matches_model_at_1_2_4_workers_with_and_without_epochs() {
    let configs = [
        // (seed, gap, lateness, disorder, late ratio)
        (1, 1_000, 0, 1_000, 0.05),
        (2, 2_000, 1_500, 600, 0.1),
        (3, 500, 250, 2_000, 0.02),
    ];
    for (seed, gap, lateness, disorder, late_ratio) in configs {
        let case = random_case(seed, 600, 4, 6, gap, lateness, disorder, late_ratio);
        let (rows, late) = check(&case, &[1, 2, 4]);
        // Not degenerate: merged sessions, several sessions per key, late records.
        assert!(rows.iter().any(|r| r.3 > 3), "no merges (seed {seed})");
        assert!(
            rows.len() > 30,
            "too few sessions (seed {seed}): {}",
            rows.len()
        );
        assert!(!late.is_empty(), "no late records (seed {seed})");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn matches_model_at_2_workers(
        seed in 0u64..1_000_000,
        gap in 1u64..40,
        lateness in 0u64..30,
        bound in 0u64..20,
        parts in 1usize..6,
        keys in 1u64..8,
        late_ratio in 0.0f64..0.2,
        epoch_every in proptest::option::of(1usize..50),
    ) {
        let mut case = random_case(
            seed, 300, parts, keys, gap * 50, lateness * 50, bound * 100, late_ratio,
        );
        case.epoch_every = epoch_every;
        let run = dataflow(&case, 2);
        check_run(&case, &run, "2 workers");
    }
}

// ---------------------------------------------------------------------------
// Checkpoints.

/// A vec partition that reopens at a checkpointed position, optionally
/// taking its time over every read.
struct Replay {
    items: Vec<Rec>,
    pos: usize,
    delay: Duration,
}

impl PartitionReader<Rec> for Replay {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<Rec>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let end = (self.pos + max_items).min(self.items.len());
        out.extend(
            self.items[self.pos..end]
                .iter()
                .map(|r| SourceItem::Record {
                    event_time_ms: r.1,
                    record: *r,
                }),
        );
        self.pos = end;
        Ok(if self.pos == self.items.len() {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn describe(&self) -> String {
        "replay".into()
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.pos as u64,
            line: self.pos as u64,
            ..PartitionPosition::default()
        }
    }
}

/// The operator's checkpoint entries, as the test reads them back (the same
/// shape as the operator's private type; bincode does not encode names).
#[derive(Deserialize)]
#[allow(dead_code)]
enum Entry {
    Session {
        key: u64,
        start: u64,
        end: u64,
        acc: (u64, i64),
    },
    Pending {
        t: u64,
        record: Rec,
    },
}

/// What a checkpointed run does.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Requests a savepoint once this many records have been delivered; the
    /// sources cut an epoch at every activation (so they stop right after
    /// the request).
    StopAfter(usize),
    /// Runs to the end at 2 workers, the sources cutting every
    /// `case.epoch_every` records. Worker 1 takes 1 ms per read: its epochs
    /// advance one at a time and hold the oldest epoch back (so the committer
    /// completes most checkpoints) while worker 0 runs many epochs ahead —
    /// with lower event times (see [`shifted`]), so that records of epochs
    /// after the oldest come due and must wait for their epoch.
    Complete,
    /// Restores checkpoint `id` and runs to the end.
    Restore(u64),
}

/// A checkpointed run over `dir` (see [`Phase`]). The sources read one batch
/// per activation, so there are many epochs. Rows and late records come with
/// the times they were emitted at.
fn checkpointed(case: &Case, workers: usize, dir: &Path, phase: Phase) -> Run {
    let stop_after = match phase {
        Phase::StopAfter(n) => Some(n),
        _ => None,
    };
    let ckpt = CheckpointSettings {
        dir: dir.to_path_buf(),
        interval: match stop_after {
            Some(_) => Duration::from_nanos(1),
            // Epochs from `epoch_every` only.
            None => Duration::from_secs(3_600),
        },
        retain: 100_000,
    };
    let restore = match phase {
        Phase::Restore(id) => Some(id),
        _ => None,
    };
    let restore = restore.map(|id| {
        let store = CheckpointStore::open(dir, 100_000).unwrap();
        let c = store.load(id).unwrap();
        Restore::new(store, c).unwrap()
    });
    let ctx = Arc::new(CheckpointContext::new(&ckpt, "sessions", restore).unwrap());
    let run: Shared = Arc::default();
    let (r, c) = (run.clone(), case.clone());
    let stop_dir = dir.to_path_buf();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (r, c, ctx) = (r.clone(), c.clone(), ctx.clone());
        let stop_dir = stop_dir.clone();
        worker.dataflow::<Time, _, _>(move |scope| {
            let mut graph = CheckpointGraph::new(scope, ctx);
            let parts = c.partitions.clone();
            let (recs, _dead) = checkpointed_source(
                scope,
                SourceSettings {
                    // Every activation reads exactly one batch: partitions
                    // are multiples of the batch size, so the batches are
                    // those of an uninterrupted run, also after a restore.
                    items_per_activation: BATCH,
                    epoch_every_items: c.epoch_every.filter(|_| stop_after.is_none()),
                    ..settings(&c)
                },
                parts.len(),
                move |i, position| {
                    Box::new(Replay {
                        items: parts[i].clone(),
                        pos: position.map_or(0, |p| p.offset as usize),
                        delay: match phase {
                            Phase::Complete if i % 2 == 1 => Duration::from_millis(1),
                            // Each cut's frontier holds still for a moment, so
                            // that checkpoints before the savepoint complete.
                            Phase::StopAfter(_) => Duration::from_micros(300),
                            _ => Duration::ZERO,
                        },
                    }) as Box<dyn PartitionReader<Rec>>
                },
                None,
                &mut graph,
            );
            let seen = r.clone();
            let recs = recs.inspect_batch(move |_, _| {
                let n = seen.lock().unwrap().deliveries.len();
                if stop_after.is_some_and(|s| n >= s) {
                    CheckpointContext::request_stop(&stop_dir).unwrap();
                }
            });
            let outputs = observe(&r, recs).session_window_aggregate_checkpointed(
                "sessions",
                c.spec(),
                |r: &Rec| &r.0,
                |r: &Rec| r.1,
                aggregate(),
                &mut graph,
            );
            observe_outputs(&r, outputs);
            graph.finish();
        });
    })
    .expect("timely starts")
    .join();
    let run = std::mem::take(&mut *run.lock().unwrap());
    run
}

/// Ids of the complete checkpoints in `dir`, ascending.
fn complete_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("MANIFEST.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort();
    ids
}

/// (sessions, pending records) in the operator parts of checkpoint `id`.
fn state_entries(dir: &Path, id: u64) -> (usize, usize) {
    let store = CheckpointStore::open(dir, 100_000).unwrap();
    let restore = Restore::new(store.clone(), store.load(id).unwrap()).unwrap();
    let (mut sessions, mut pending) = (0, 0);
    streamforge_dataflow::keyed_state::restore_owned(&restore, "sessions-w", 0, 1, |e: Entry| {
        match e {
            Entry::Session { .. } => sessions += 1,
            Entry::Pending { .. } => pending += 1,
        }
    })
    .unwrap();
    (sessions, pending)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Rows of `part1` at epochs `<= upto` (what an exactly-once sink keeps of a
/// run restored from checkpoint `upto`) plus all rows of `part2`, and the
/// same for late records, sorted.
fn union(part1: &Run, upto: u64, part2: &Run) -> (Vec<Row>, Vec<Rec>) {
    let mut rows: Vec<Row> = part1
        .rows
        .iter()
        .filter(|(t, _)| t.epoch <= upto)
        .map(|r| r.1)
        .chain(part2.rows.iter().map(|r| r.1))
        .collect();
    rows.sort();
    let mut late: Vec<Rec> = part1
        .late
        .iter()
        .filter(|(t, _)| t.epoch <= upto)
        .map(|r| r.1)
        .chain(part2.late.iter().map(|r| r.1))
        .collect();
    late.sort();
    (rows, late)
}

/// Restores copies of `dir` from up to four of its complete checkpoints
/// before `before` (spread over the run) at `workers` workers and checks that
/// with the rows `part1` emitted up to each they give `expected`. Returns how
/// many of them held pending records.
fn restore_mid_run(
    case: &Case,
    dir: &Path,
    part1: &Run,
    before: u64,
    workers: usize,
    expected: &(Vec<Row>, Vec<Rec>),
) -> usize {
    let mids: Vec<u64> = complete_ids(dir)
        .into_iter()
        .filter(|c| *c < before)
        .collect();
    assert!(!mids.is_empty(), "no checkpoint before {before}");
    let mut picks: Vec<u64> = (0..4).map(|i| mids[i * (mids.len() - 1) / 3]).collect();
    picks.dedup();
    let mut with_pending = 0;
    for c in picks {
        with_pending += (state_entries(dir, c).1 > 0) as usize;
        let copy = dir.with_file_name(format!(
            "{}-from-{c}",
            dir.file_name().unwrap().to_str().unwrap()
        ));
        copy_dir(dir, &copy);
        let part2 = checkpointed(case, workers, &copy, Phase::Restore(c));
        let (rows, late) = union(part1, c, &part2);
        assert_eq!(
            late, expected.1,
            "late records, restored from checkpoint {c}"
        );
        assert_eq!(rows, expected.0, "sessions, restored from checkpoint {c}");
        for (t, row) in &part2.rows {
            assert_eq!(t.event_ms, row.1 + case.lateness_ms, "time of {row:?}");
        }
    }
    with_pending
}

/// Checkpoint round trips; the sources read one batch per activation, so
/// there are many epochs.
///
/// * A run at 2 workers that stops halfway with a savepoint, restored from
///   the savepoint at 3 workers and from checkpoints in its middle at 2.
/// * A complete run at 2 workers, restored from checkpoints in its middle at
///   3 workers and at 1.
///
/// In every case the rows and late records kept from the first run plus those
/// of the restored run are exactly those of an uninterrupted run.
///
/// The savepoint run's two source workers freeze at different cuts; the
/// savepoint is the first checkpoint at which both are frozen (were it the
/// moment the first stopped, the watermark would leave its partitions out
/// and sessions would fire that their records, delivered after the restore,
/// still belong to).
fn checkpoint_round_trip(case: &Case) {
    let full = dataflow(case, 1);
    let expected = check_run(case, &full, "uninterrupted");
    let tmp = tempfile::tempdir().unwrap();

    let dir = tmp.path().join("savepoint-run");
    let part1 = checkpointed(case, 2, &dir, Phase::StopAfter(full.deliveries.len() / 2));
    let savepoint = *complete_ids(&dir).last().expect("a savepoint");
    let (sessions, pending) = state_entries(&dir, savepoint);
    assert!(sessions > 0, "savepoint holds no sessions");
    let mut with_pending = (pending > 0) as usize;
    assert!(!part1.rows.is_empty(), "part 1 fired nothing");
    assert!(
        part1.deliveries.len() < full.deliveries.len() * 2 / 3,
        "part 1 did not stop halfway: {} of {} records",
        part1.deliveries.len(),
        full.deliveries.len()
    );
    let copy = tmp.path().join("from-savepoint");
    copy_dir(&dir, &copy);
    let part2 = checkpointed(case, 3, &copy, Phase::Restore(savepoint));
    // What part 1 emitted after the savepoint (the shutdown) is not part of
    // it: an exactly-once sink commits only up to the savepoint.
    let (rows, late) = union(&part1, savepoint, &part2);
    assert_eq!(
        late, expected.1,
        "late records, restored from the savepoint"
    );
    assert_eq!(rows, expected.0, "sessions, restored from the savepoint");
    with_pending += restore_mid_run(case, &dir, &part1, savepoint, 2, &expected);

    let dir = tmp.path().join("complete-run");
    let part1 = checkpointed(case, 2, &dir, Phase::Complete);
    assert_eq!(union(&part1, u64::MAX, &Run::default()), expected);
    let last = *complete_ids(&dir).last().expect("a final checkpoint");
    with_pending += restore_mid_run(case, &dir, &part1, last, 3, &expected);
    with_pending += restore_mid_run(case, &dir, &part1, last, 1, &expected);
    assert!(
        with_pending > 0,
        "no mid-run checkpoint held pending records"
    );
}

/// `case` with the odd partitions (read by worker 1 of 2) 20 s later in
/// event time.
fn shifted(mut case: Case) -> Case {
    for part in case.partitions.iter_mut().skip(1).step_by(2) {
        for r in part.iter_mut() {
            r.1 += 20_000;
        }
    }
    case
}

#[test]
fn checkpoint_round_trip_no_lateness() {
    let mut case = shifted(random_case(11, 600, 3, 5, 600, 0, 800, 0.05));
    case.epoch_every = Some(9);
    checkpoint_round_trip(&case);
}

#[test]
fn checkpoint_round_trip_with_lateness() {
    let mut case = shifted(random_case(12, 600, 4, 5, 1_000, 700, 1_200, 0.05));
    case.epoch_every = Some(11);
    checkpoint_round_trip(&case);
}
