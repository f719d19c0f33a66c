//! Checkpoints keep completing while the source workers' watermarks differ.
//!
//! A worker whose watermark is below another's keeps that worker's last
//! watermark advert (its capabilities) to follow it when its own partitions
//! go idle. Kept at the advert's epoch, it held that epoch open for as long
//! as the other worker stood still or after it had finished, and no
//! checkpoint completed until the run ended.

use std::sync::Arc;
use std::time::Duration;

use streamforge_dataflow::checkpoint::{
    CheckpointContext, CheckpointGraph, CheckpointSettings, PartitionPosition,
};
use streamforge_dataflow::source::{
    checkpointed_source, PartitionReader, ReadStatus, SourceItem, SourceSettings,
};
use streamforge_dataflow::time::Time;
use timely::dataflow::operators::Inspect;

/// `items` event times, one per read, `delay` per read.
struct Slow {
    items: Vec<u64>,
    pos: usize,
    delay: Duration,
}

impl PartitionReader<u64> for Slow {
    fn read_batch(
        &mut self,
        _max_items: usize,
        out: &mut Vec<SourceItem<u64>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        std::thread::sleep(self.delay);
        if let Some(&t) = self.items.get(self.pos) {
            out.push(SourceItem::Record {
                event_time_ms: t,
                record: t,
            });
            self.pos += 1;
        }
        Ok(if self.pos == self.items.len() {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn describe(&self) -> String {
        "slow".into()
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.pos as u64,
            line: self.pos as u64,
            ..PartitionPosition::default()
        }
    }
}

#[test]
fn checkpoints_complete_after_a_worker_ahead_has_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = CheckpointSettings {
        dir: tmp.path().join("ckpt"),
        interval: Duration::from_millis(5),
        retain: 1_000,
    };
    let ctx = Arc::new(CheckpointContext::new(&settings, "progress", None).unwrap());
    let c = ctx.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let ctx = c.clone();
        worker.dataflow::<Time, _, _>(move |scope| {
            let mut graph = CheckpointGraph::new(scope, ctx);
            let (records, _dead) = checkpointed_source(
                scope,
                SourceSettings {
                    batch_items: 1,
                    items_per_activation: 1,
                    ..SourceSettings::new("src", 0)
                },
                2,
                |i, _| {
                    Box::new(if i == 0 {
                        // Worker 0: a slow partition, far behind.
                        Slow {
                            items: (0..150).collect(),
                            pos: 0,
                            delay: Duration::from_millis(2),
                        }
                    } else {
                        // Worker 1: far ahead (it advertises its
                        // watermark), and done soon.
                        Slow {
                            items: (1_000_000..1_000_005).collect(),
                            pos: 0,
                            delay: Duration::from_millis(2),
                        }
                    }) as Box<dyn PartitionReader<u64>>
                },
                None,
                &mut graph,
            );
            records.inspect(|_| {});
            graph.finish();
        });
    })
    .unwrap()
    .join();
    // ~300 ms of input at 5 ms per checkpoint: dozens of checkpoints (the
    // stall left only the final one).
    let completed = ctx
        .stats
        .completed_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(completed >= 10, "only {completed} checkpoints completed");
}

/// A savepoint at 2 source workers with throttled sources: every source
/// freezes, the savepoint is the newest checkpoint, the run ends without
/// reading everything, and the frozen positions are where it stopped.
#[test]
fn a_savepoint_stops_every_source_worker() {
    use streamforge_dataflow::checkpoint::Restore;
    use streamforge_dataflow::checkpoint_store::CheckpointStore;
    use streamforge_dataflow::source::vec_partition;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let settings = CheckpointSettings {
        dir: dir.clone(),
        interval: Duration::from_millis(50),
        retain: 3,
    };
    let ctx = Arc::new(CheckpointContext::new(&settings, "stop", None).unwrap());
    let c = ctx.clone();
    let stopper = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            CheckpointContext::request_stop(&dir).unwrap();
        })
    };
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = read.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let ctx = c.clone();
        let r = r.clone();
        worker.dataflow::<Time, _, _>(move |scope| {
            let mut graph = CheckpointGraph::new(scope, ctx);
            let (records, _dead) = checkpointed_source(
                scope,
                SourceSettings {
                    rate_limit: Some(4_000),
                    ..SourceSettings::new("src", 100)
                },
                5,
                |i, _| {
                    vec_partition(
                        format!("p{i}"),
                        (0..4_000u64).map(|t| (t * (i as u64 + 1), t)).collect(),
                    )
                },
                None,
                &mut graph,
            );
            records.inspect(move |_| {
                r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
            graph.finish();
        });
    })
    .unwrap()
    .join();
    stopper.join().unwrap();
    let read = read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read > 0 && read < 20_000, "read {read} of 20000");
    let store = CheckpointStore::open(&dir, 3).unwrap();
    let (latest, _) = store.latest().unwrap();
    let latest = latest.expect("a savepoint");
    assert_eq!(
        latest.manifest.meta.get("savepoint").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        latest.manifest.meta.get("final").map(String::as_str),
        Some("false")
    );
    let r = Restore::new(store, latest).unwrap();
    let positions = &r.sources["src"];
    assert_eq!(positions.len(), 5);
    assert!(
        positions.values().all(|p| p.frozen && !p.finished),
        "{positions:?}"
    );
    let total: u64 = positions.values().map(|p| p.offset).sum();
    assert_eq!(total, read, "the savepoint holds exactly what was read");
}
