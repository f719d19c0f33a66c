//! Oracle tests: seeded random out-of-order input through the dataflow and through
//! a naive sequential model give identical rows and late records, at 1, 2 and 4
//! workers, for tumbling and sliding windows with and without allowed lateness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use streamforge::prelude::*;
use timely::dataflow::operators::Inspect;

/// (key, event time, value)
type Rec = (u64, u64, i64);
/// (window start, window end, key) → (count, sum, max, min, distinct values)
type Acc = (u64, i64, Option<i64>, Option<i64>, BTreeSet<i64>);
type Rows = BTreeMap<(u64, u64, u64), (u64, i64, Option<i64>, Option<i64>, u64)>;

#[derive(Clone, Debug)]
struct Case {
    partitions: Vec<Vec<Rec>>,
    size_ms: u64,
    slide_ms: Option<u64>,
    lateness_ms: u64,
    bound_ms: u64,
    epoch_every: Option<usize>,
}

fn random_case(seed: u64, records: usize, parts: usize, disorder_ms: u64, late_ratio: f64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let partitions = (0..parts)
        .map(|_| {
            let mut t = rng.gen_range(0..5_000u64);
            (0..records / parts)
                .map(|_| {
                    t += rng.gen_range(0..300);
                    let mut jitter = rng.gen_range(0..=disorder_ms);
                    if rng.gen_bool(late_ratio) {
                        jitter += rng.gen_range(0..20_000);
                    }
                    (
                        rng.gen_range(0..13u64),
                        t.saturating_sub(jitter),
                        rng.gen_range(-50..500i64),
                    )
                })
                .collect()
        })
        .collect();
    Case {
        partitions,
        size_ms: 10_000,
        slide_ms: None,
        lateness_ms: 0,
        bound_ms: disorder_ms / 2,
        epoch_every: None,
    }
}

fn key_of(r: &Rec) -> &u64 {
    &r.0
}

fn windows_of(case: &Case, e: u64) -> Vec<(u64, u64)> {
    // Naive: every aligned window start s with s <= e < s + size.
    let step = case.slide_ms.unwrap_or(case.size_ms);
    let mut out = vec![];
    let mut s = (e / step) * step;
    loop {
        if s + case.size_ms > e {
            out.push((s, s + case.size_ms));
        }
        if s < step {
            break;
        }
        s -= step;
        if s + case.size_ms <= e {
            break;
        }
    }
    out.sort();
    out
}

/// The sequential model: each partition in order, watermark = max seen − bound.
fn model(case: &Case) -> (Rows, Vec<Rec>) {
    let mut acc: BTreeMap<(u64, u64, u64), Acc> = BTreeMap::new();
    let mut late = vec![];
    for part in &case.partitions {
        let mut max_seen: Option<u64> = None;
        for &(k, e, v) in part {
            let wm = max_seen.map_or(0, |m| m.saturating_sub(case.bound_ms));
            let live: Vec<_> = windows_of(case, e)
                .into_iter()
                .filter(|(_, end)| end + case.lateness_ms > wm)
                .collect();
            if live.is_empty() {
                late.push((k, e, v));
            }
            for (s, end) in live {
                let a = acc.entry((s, end, k)).or_default();
                a.0 += 1;
                a.1 += v;
                a.2 = Some(a.2.map_or(v, |m| m.max(v)));
                a.3 = Some(a.3.map_or(v, |m| m.min(v)));
                a.4.insert(v);
            }
            max_seen = Some(max_seen.map_or(e, |m| m.max(e)));
        }
    }
    late.sort();
    (
        acc.into_iter()
            .map(|(k, a)| (k, (a.0, a.1, a.2, a.3, a.4.len() as u64)))
            .collect(),
        late,
    )
}

fn dataflow(case: &Case, workers: usize) -> (Rows, Vec<Rec>) {
    let rows = Arc::new(Mutex::new(Rows::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let (r, l, c) = (rows.clone(), late.clone(), case.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (r, l, c) = (r.clone(), l.clone(), c.clone());
        worker.dataflow::<Time, _, _>(move |scope| {
            let parts = c.partitions.clone();
            let (recs, _dead) = partitioned_source(
                scope,
                SourceSettings {
                    batch_items: 7,
                    // Workers read at different paces, so their epochs drift apart.
                    items_per_activation: 37 + 29 * scope.index(),
                    epoch_every_items: c.epoch_every,
                    ..SourceSettings::new("src", c.bound_ms)
                },
                parts.len(),
                move |i| {
                    vec_partition(
                        format!("p{i}"),
                        parts[i].iter().map(|r| (r.1, *r)).collect(),
                    )
                },
                None,
            );
            let agg = (
                Count,
                Sum::of(|r: &Rec| r.2),
                Max::of(|r: &Rec| r.2),
                Min::of(|r: &Rec| r.2),
                DistinctCount::of(|r: &Rec| r.2),
            );
            let (out, late_out) = match c.slide_ms {
                None => recs.window_aggregate(
                    "w",
                    WindowSpec::new(Tumbling::new(c.size_ms)).allowed_lateness_ms(c.lateness_ms),
                    key_of,
                    |r: &Rec| r.1,
                    agg,
                ),
                Some(slide) => recs.window_aggregate(
                    "w",
                    WindowSpec::new(Sliding::new(c.size_ms, slide))
                        .allowed_lateness_ms(c.lateness_ms),
                    key_of,
                    |r: &Rec| r.1,
                    agg,
                ),
            };
            out.inspect(move |w| {
                let prev = r
                    .lock()
                    .unwrap()
                    .insert((w.window.start_ms, w.window.end_ms, w.key), w.value);
                assert!(
                    prev.is_none(),
                    "window {:?} key {} emitted twice",
                    w.window,
                    w.key
                );
            });
            late_out.inspect(move |x| l.lock().unwrap().push(*x));
        });
    })
    .expect("timely starts")
    .join();
    let rows = std::mem::take(&mut *rows.lock().unwrap());
    let mut late = std::mem::take(&mut *late.lock().unwrap());
    late.sort();
    (rows, late)
}

fn check(case: &Case, workers: &[usize]) {
    let (rows, late) = model(case);
    assert!(!rows.is_empty(), "degenerate case: no rows");
    for &w in workers {
        let (got_rows, got_late) = dataflow(case, w);
        assert_eq!(got_late.len(), late.len(), "late count at {w} workers");
        assert_eq!(got_late, late, "late records at {w} workers");
        assert_eq!(got_rows, rows, "rows at {w} workers");
    }
}

#[test]
fn tumbling_matches_model_at_1_2_4_workers() {
    let case = random_case(7, 20_000, 3, 4_000, 0.03);
    let (_, late) = model(&case);
    assert!(!late.is_empty(), "the case must exercise lateness");
    check(&case, &[1, 2, 4]);
}

#[test]
fn sliding_with_lateness_matches_model_at_1_2_4_workers() {
    let mut case = random_case(11, 20_000, 4, 6_000, 0.05);
    case.size_ms = 9_000;
    case.slide_ms = Some(3_000);
    case.lateness_ms = 2_500;
    let (_, late) = model(&case);
    assert!(!late.is_empty(), "the case must exercise lateness");
    check(&case, &[1, 2, 4]);
}

#[test]
fn epoch_boundaries_do_not_change_results() {
    // Sources bump epochs independently (every 500 items per worker): records of
    // newer epochs are stashed by the window operator until older ones complete.
    let mut case = random_case(5, 20_000, 4, 5_000, 0.03);
    case.size_ms = 8_000;
    case.slide_ms = Some(4_000);
    case.lateness_ms = 1_000;
    case.epoch_every = Some(500);
    check(&case, &[1, 2, 4]);
}

#[test]
fn seed_window_of_22_seconds_matches_model() {
    let mut case = random_case(3, 10_000, 2, 2_000, 0.02);
    case.size_ms = 22_000;
    check(&case, &[1, 2]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn windows_match_model_for_any_size_slide_lateness_disorder(
        seed in any::<u64>(),
        size_ms in 1_000u64..30_000,
        slide_div in 0u64..4,
        lateness_ms in prop_oneof![Just(0u64), 0u64..10_000],
        disorder_ms in 0u64..8_000,
        parts in 1usize..4,
        late_ratio in 0.0f64..0.1,
    ) {
        let mut case = random_case(seed, 3_000, parts, disorder_ms, late_ratio);
        case.size_ms = size_ms;
        case.slide_ms = (slide_div > 0).then(|| (size_ms / (slide_div + 1)).max(1));
        case.lateness_ms = lateness_ms;
        check(&case, &[1, 2]);
    }
}
