//! Flow control under skew: one partition's event time runs 10× faster than
//! the other's, read by its own worker. Without backpressure its records
//! wait in the window operator until the slow partition's watermark
//! catches up, so memory grows with the input; with it, the fast partition
//! pauses within the watermark slack, memory stays bounded, and the rows
//! are the same (an independent model: both partitions are in order, so
//! nothing is late).
//!
//! One test in its own binary: it reads the process's peak RSS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamforge::api::{execute, GeneratorSource, JobOptions, RunSummary, WatermarkStrategy};
use streamforge::dataflow::flow_control::FlowSettings;
use streamforge::operators::{Count, Tumbling};

/// Records per partition.
const N: u64 = 600_000;
/// Keys (`index % KEYS`).
const KEYS: u64 = 500;
/// Tumbling window, ms.
const WINDOW_MS: u64 = 1_000;

/// Event time of record `i` of partition `p`: partition 0 steps 10 ms, 1
/// steps 1 ms.
fn event_time(p: usize, i: u64) -> u64 {
    if p == 0 {
        i * 10
    } else {
        i
    }
}

type Rows = BTreeMap<(u64, u64), u64>;

fn model() -> Rows {
    let mut rows = Rows::new();
    for p in 0..2 {
        for i in 0..N {
            let t = event_time(p, i);
            *rows.entry((i % KEYS, t - t % WINDOW_MS)).or_default() += 1;
        }
    }
    rows
}

/// Runs the skewed job at 2 workers; the rows, the largest window state
/// seen (entries over both workers, sampled every ms) and the summary.
fn run(flow: FlowSettings) -> (Rows, i64, RunSummary, u64) {
    streamforge::dataflow::metrics::clear();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let entries: i64 = streamforge::dataflow::metrics::snapshot()
                    .iter()
                    .filter(|(op, _, _)| op == "skew-count")
                    .map(|(_, _, m)| m.state_entries.load(Ordering::Relaxed))
                    .sum();
                peak.fetch_max(entries, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let options = JobOptions::new("skew").workers(2).flow_control(flow);
    let summary = execute(&options, move |env| {
        let g = g.clone();
        let source = GeneratorSource {
            partitions: 2,
            per_partition: N,
            f: |p: usize, i: u64| (i % KEYS, event_time(p, i)),
        };
        env.from_generator(
            "skew-source",
            source,
            WatermarkStrategy::for_bounded_out_of_orderness_ms(0),
            |r: &(u64, u64)| r.1,
        )
        .key_by(|r| r.0)
        .window(Tumbling::new(WINDOW_MS))
        .aggregate("skew-count", Count)
        .results
        .sink_fn("rows", move |_, r| {
            g.lock().unwrap().push((r.key, r.window.start_ms, r.value));
        });
        Ok(())
    })
    .expect("job runs");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let throttled: u64 = streamforge::dataflow::metrics::snapshot()
        .iter()
        .filter(|(op, _, _)| op == "skew-source")
        .map(|(_, _, m)| m.throttled_ns.load(Ordering::Relaxed))
        .sum();
    let mut rows = Rows::new();
    for (k, w, c) in got.lock().unwrap().drain(..) {
        assert!(
            rows.insert((k, w), c).is_none(),
            "one row per key and window"
        );
    }
    (rows, peak.load(Ordering::Relaxed), summary, throttled)
}

/// Peak resident memory of this process so far, MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

#[test]
fn a_skewed_partition_is_throttled_with_bounded_memory_and_the_same_rows() {
    let slack_ms = 2_000;
    let flow = FlowSettings {
        watermark_slack_ms: Some(slack_ms),
        ..FlowSettings::default()
    };
    let (rows, peak_entries, summary, throttled_ns) = run(flow);
    let rss_on = peak_rss_mb();
    let expected = model();
    assert_eq!(summary.events, 2 * N);
    assert_eq!(summary.late, 0);
    assert_eq!(
        rows, expected,
        "the rows of the unthrottled job (the model)"
    );
    assert!(throttled_ns > 0, "the fast partition was paused");
    // Open windows within the slack: the slow partition's window or two
    // (KEYS entries each) and the fast partition's slack / window + 2
    // windows (100 keys each), plus one batch of 1 024 records at most.
    let bound = 4 * (2 * KEYS as i64 + (slack_ms / WINDOW_MS + 3) as i64 * 100 + 1_024);
    assert!(
        peak_entries <= bound,
        "window state {peak_entries} entries with flow control (bound {bound})"
    );

    // Unthrottled, the fast partition's windows pile up: the bound above
    // would fail, and memory grows with the input.
    let (rows_off, peak_off, _, throttled_off) = run(FlowSettings::off());
    let rss_off = peak_rss_mb();
    assert_eq!(rows_off, expected);
    assert_eq!(throttled_off, 0);
    assert!(
        peak_off > 10 * bound,
        "without flow control the state grows: {peak_off} entries (bound {bound})"
    );
    eprintln!(
        "flow control: peak {peak_entries} entries, peak RSS {rss_on:.0} MB; \
         off: {peak_off} entries, peak RSS {rss_off:.0} MB"
    );
    assert!(rss_on < 150.0, "peak RSS {rss_on:.0} MB with flow control");
}
