//! Dedup's kept records leave at timestamps rounded down to
//! `EMIT_GRANULARITY_MS`: never after the record's own event time (so never
//! late downstream), never before its delivery time, and far fewer distinct
//! timestamps than records.

use std::collections::BTreeSet;

use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
use streamforge_operators::dedup::DedupByKey;
use timely::dataflow::operators::capture::{Capture, Extract};

#[test]
fn kept_records_leave_at_rounded_timestamps_never_after_their_event_time() {
    // 4 000 distinct orders 5 ms apart, every 10th repeated 3 ms later.
    let mut data: Vec<(u64, (u32, u64))> = Vec::new();
    for i in 0..4_000u32 {
        let t = 1_000 + 5 * u64::from(i);
        data.push((t, (i, t)));
        if i % 10 == 0 {
            data.push((t + 3, (i, t + 3)));
        }
    }
    let out = streamforge_dataflow::time::example(move |scope| {
        let mut settings = SourceSettings::new("orders", 500);
        settings.batch_items = 64;
        let (s, _) = partitioned_source(
            scope,
            settings,
            1,
            move |_| vec_partition("p", data.clone()),
            None,
        );
        s.dedup("dedup", |r: &(u32, u64)| &r.0, |r: &(u32, u64)| r.1, 60_000)
            .capture()
    });
    let mut kept = Vec::new();
    let mut times = BTreeSet::new();
    for (time, batch) in out.extract() {
        for (e, (id, t)) in batch {
            assert_eq!(e, t, "the output carries the record's event time");
            assert!(time.event_ms <= t, "order {id} at {t} left at {time:?}");
            kept.push(id);
            times.insert(time.event_ms);
        }
    }
    kept.sort_unstable();
    assert_eq!(kept, (0..4_000).collect::<Vec<u32>>(), "each order once");
    // 20 s of event time: about one timestamp per 100 ms granule (or per
    // coarser one), not one per record.
    let granules = 5 * 4_000 / 100 + 2;
    assert!(
        times.len() <= granules,
        "{} distinct timestamps for 4 000 records (at most {granules})",
        times.len()
    );
    assert!(times.iter().all(|t| t % 100 == 0 || *t < 2_000));
}
