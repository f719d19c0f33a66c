//! The write-ahead-log sink: exactly-once output into any [`CommitTarget`]
//! (Kafka transactions, PostgreSQL, ClickHouse), committed per checkpoint.
//!
//! Every worker keeps the records it receives. When checkpoint `c` is cut at
//! its input, the worker's not-yet-committed records of epochs `≤ c` become its
//! checkpoint part `<name>-w<i>` (**pre-commit**). When the committer announces
//! `c` complete, the worker hands them to [`CommitTarget::commit`] with the
//! marker `c` (**commit**): a target with transactions stores records and
//! marker atomically.
//!
//! On a restore from checkpoint `R`, worker `i` takes over every old writer
//! `j ≡ i (mod workers)` whose part is in `R`: [`CommitTarget::recover`] fences
//! it where the target can and returns its marker; the part's records tagged
//! above the marker are committed again with marker `R` (**idempotent
//! re-commit**: the crash came between the manifest and the commit). A target
//! without markers gets them all again and must be idempotent itself (keyed
//! upserts, `ReplacingMergeTree`). Records after `R` come again from the replay.
//!
//! This is Flink's `GenericWriteAheadSink` pattern: records become visible one
//! checkpoint later (as with any exactly-once sink) and the commit blocks the
//! worker while a checkpoint's records are written — a slow or down target
//! slows the job (backpressure) instead of buffering without bound.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Stream;
use timely::progress::Antichain;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::{CheckpointGraph, CheckpointMsg, Completion, FINAL};
use streamforge_dataflow::time::{Epoch, FrontierView};
use streamforge_dataflow::Time;

use crate::error::SinkError;

/// Environment variable (tests): abort the process right before worker 0's
/// N-th commit of every write-ahead-log sink.
pub const CRASH_BEFORE_COMMIT: &str = "STREAMFORGE_CRASH_BEFORE_COMMIT";

/// Where a write-ahead-log sink commits: one instance per worker.
pub trait CommitTarget: 'static {
    /// A record as stored in the log and handed to [`CommitTarget::commit`].
    type Record: Serialize + DeserializeOwned + Clone + 'static;

    /// Takes over writer `writer` (fencing its earlier incarnations where the
    /// target can) and returns the last checkpoint it committed, if the target
    /// records markers.
    ///
    /// # Errors
    /// The target cannot be reached or read.
    fn recover(&mut self, writer: usize) -> Result<Option<u64>, SinkError>;

    /// Commits `records` as writer `writer`'s checkpoint `checkpoint`
    /// (`None`: no checkpoints, plain batches), together with the marker where
    /// the target has transactions. Transient failures are retried inside.
    ///
    /// # Errors
    /// A failure that retrying cannot fix (schema mismatch, retry time out).
    fn commit(
        &mut self,
        writer: usize,
        checkpoint: Option<u64>,
        records: &[Self::Record],
    ) -> Result<(), SinkError>;
}

/// The write-ahead log of one writer: records by the checkpoint that
/// pre-committed them ([`FINAL`] for the final checkpoint), oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAheadLog<R> {
    /// `(checkpoint id, records)`.
    pub checkpoints: Vec<(u64, Vec<R>)>,
}

impl<R> Default for WriteAheadLog<R> {
    fn default() -> Self {
        WriteAheadLog {
            checkpoints: Vec::new(),
        }
    }
}

impl<R: Clone> WriteAheadLog<R> {
    /// The records to commit again after a restore from checkpoint `restored`
    /// (`was_final`: it was a final checkpoint, whose records are tagged
    /// [`FINAL`]), given the writer's last committed checkpoint `marker`.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::write_ahead::WriteAheadLog;
    /// use streamforge_dataflow::checkpoint::FINAL;
    /// let wal = WriteAheadLog { checkpoints: vec![(4, vec!["a"]), (5, vec!["b"])] };
    /// // Checkpoint 4 was committed, 5 was not: only its records go again.
    /// assert_eq!(wal.to_resend(5, false, Some(4)), vec!["b"]);
    /// assert_eq!(wal.to_resend(5, false, None).len(), 2);
    /// assert!(wal.to_resend(5, false, Some(5)).is_empty());
    /// // A final checkpoint's records count as the restored id.
    /// let fin = WriteAheadLog { checkpoints: vec![(FINAL, vec!["c"])] };
    /// assert_eq!(fin.to_resend(9, true, Some(8)), vec!["c"]);
    /// assert!(fin.to_resend(9, true, Some(9)).is_empty());
    /// ```
    pub fn to_resend(&self, restored: u64, was_final: bool, marker: Option<u64>) -> Vec<R> {
        self.checkpoints
            .iter()
            .filter_map(|(id, records)| {
                let id = if *id == FINAL && was_final {
                    restored
                } else {
                    *id
                };
                (id <= restored && marker.is_none_or(|m| id > m)).then_some(records)
            })
            .flatten()
            .cloned()
            .collect()
    }
}

/// Extension trait: `stream.sink_write_ahead(..)`.
pub trait SinkWriteAhead<'scope, D> {
    /// Commits every record, encoded by `encode`, into `target` once per
    /// checkpoint (see the module docs). `target` is this worker's instance.
    ///
    /// # Errors
    /// The restore cannot read a part, reach the target or re-commit (checked
    /// before the dataflow runs).
    ///
    /// # Panics
    /// When a commit fails while running (fail-stop: the job restarts from the
    /// last checkpoint and the log makes up for it).
    fn sink_write_ahead<T: CommitTarget>(
        self,
        name: &str,
        target: T,
        encode: impl Fn(&D) -> T::Record + 'static,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError>;
}

impl<'scope, D: ExchangeData> SinkWriteAhead<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn sink_write_ahead<T: CommitTarget>(
        self,
        name: &str,
        mut target: T,
        encode: impl Fn(&D) -> T::Record + 'static,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError> {
        let ctx = checkpoints.context().clone();
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let part_prefix = format!("{name}-w");
        if let Some(r) = &ctx.restore {
            let was_final =
                r.checkpoint.manifest.meta.get("final").map(String::as_str) == Some("true");
            for part in r.parts_with_prefix(&part_prefix) {
                let Ok(j) = part[part_prefix.len()..].parse::<usize>() else {
                    continue;
                };
                if j % peers != index {
                    continue;
                }
                let corrupt = |e: &dyn std::fmt::Display| SinkError::Restore {
                    sink: name.to_string(),
                    reason: format!("part {part}: {e}"),
                };
                let bytes = r.part(part).map_err(|e| corrupt(&e))?;
                let wal: WriteAheadLog<T::Record> =
                    bincode::deserialize(&bytes).map_err(|e| corrupt(&e))?;
                let marker = target.recover(j)?;
                let resend = wal.to_resend(r.id(), was_final, marker);
                if !resend.is_empty() {
                    tracing::info!(
                        part,
                        records = resend.len(),
                        checkpoint = r.id(),
                        ?marker,
                        "re-committing the records of a checkpoint whose commit did not happen"
                    );
                    target.commit(j, Some(r.id()), &resend)?;
                }
            }
        }

        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let mut data = builder.new_input(self, Pipeline);
        // Completions do not hold back the acknowledgements (no connection).
        let mut completions = builder.new_input_connection(
            checkpoints.completions(),
            Pipeline,
            std::iter::empty::<(usize, Antichain<_>)>(),
        );
        let mut ack_out = OutputBuilder::from(ack_out);
        let part = format!("{part_prefix}{index}");
        let first_epoch = ctx.first_epoch();
        let name = name.to_string();
        // Test hook: abort the process right before this worker's N-th commit
        // (a crash between the manifest and the commit, on demand).
        let mut crash_before: Option<u64> = std::env::var(CRASH_BEFORE_COMMIT)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|_| index == 0);

        builder.build(move |mut caps| {
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut by_epoch: BTreeMap<Epoch, Vec<T::Record>> = BTreeMap::new();
            let mut wal = WriteAheadLog::<T::Record>::default();
            let mut last_oldest: Option<Epoch> = Some(0);
            move |frontiers| {
                data.for_each_time(|cap, batches| {
                    let records = by_epoch.entry(cap.time().epoch).or_default();
                    for batch in batches {
                        records.extend(batch.iter().map(&encode));
                    }
                });
                let oldest = FrontierView::of(&frontiers[0]).oldest_epoch;
                if oldest != last_oldest {
                    last_oldest = oldest;
                    let id = match oldest {
                        None => Some(FINAL),
                        Some(b) => b.checked_sub(1).filter(|c| *c >= first_epoch),
                    };
                    if let Some(id) = id {
                        // Pre-commit: the records of epochs ≤ id join the log.
                        let later = match oldest {
                            Some(b) => by_epoch.split_off(&b),
                            None => BTreeMap::new(),
                        };
                        let records: Vec<T::Record> = std::mem::replace(&mut by_epoch, later)
                            .into_values()
                            .flatten()
                            .collect();
                        if !records.is_empty() {
                            wal.checkpoints.push((id, records));
                        }
                        let bytes = (!wal.checkpoints.is_empty())
                            .then(|| bincode::serialize(&wal).expect("serializable log"));
                        let msg = ctx.write_part(id, part.clone(), bytes.as_deref());
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                }
                completions.for_each(|_, batches| {
                    for Completion { id, was_final } in batches.drain(..) {
                        let done = |p: u64| if p == FINAL { was_final } else { p <= id };
                        let n = wal.checkpoints.iter().take_while(|(p, _)| done(*p)).count();
                        if n > 0 {
                            if let Some(left) = crash_before.as_mut() {
                                *left = left.saturating_sub(1);
                                if *left == 0 {
                                    eprintln!("{CRASH_BEFORE_COMMIT}: aborting before committing checkpoint {id}");
                                    std::process::abort();
                                }
                            }
                            let records: Vec<T::Record> =
                                wal.checkpoints.drain(..n).flat_map(|(_, r)| r).collect();
                            target
                                .commit(index, Some(id), &records)
                                .unwrap_or_else(|e| panic!("sink {name}: checkpoint {id}: {e}"));
                        }
                    }
                });
                ack_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        checkpoints.add_writer(acks);
        Ok(())
    }
}
