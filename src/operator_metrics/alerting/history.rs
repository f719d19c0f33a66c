//! `threshold_history`: the job's aggregate rows as a differential dataflow
//! collection of threshold samples over the last `analysis_days`.
//!
//! A row arriving at time `(e, m)` (its window's end + allowed lateness) adds
//! its [`Sample`] to group (hour of day of `window_start`, key) at `(e, m)` and
//! retracts it at event time `window_start + days + 1 ms`, so the collection
//! accumulated at any hour boundary `H` holds exactly the rows with `m ≤ H`
//! and `window_start ≥ H − days`. Both updates are moved up to the next hour
//! boundary (`m ≤ H ⇔ ⌈m⌉ ≤ H` for a boundary `H`), so the thresholds are
//! recomputed once per group and hour, not once per row. Retractions are sent when the watermark reaches
//! them (the operator holds its capability there), so a finished input does
//! not drag the rules a week into the future.
//!
//! Groups are integers — (hour, hash of service|operator_name, key hash) —
//! so the arrangement and the reduce never copy or compare strings; the key
//! strings go to the publisher once per key and worker on a side output.
//!
//! The operator's state is the rows some future rule publication may still
//! need. It is written into checkpoints and, on a restore, fed into the
//! collection again; rows are dropped only once the publisher (whose output
//! frontier comes back on the `published` input) is past their retraction time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Stream;

use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointGraph, CheckpointMsg, FINAL};
use streamforge_dataflow::keyed_state;
use streamforge_dataflow::time::{emit_at, hold_back, Epoch, FrontierView};
use streamforge_dataflow::Time;

use super::{state_hash, RuleUpdate};
use crate::operator_metrics::thresholds::{hour_of_day, Sample};
use crate::operator_metrics::OperatorAggRow;
use streamforge_dataflow::stable_hash;
use streamforge_sources::span::parts_hash;

/// A threshold group: (hour of day, hash of (service, operator_name), key
/// hash — the `SpanKey` stable hash of service, operator_name, operator_class).
pub type HistoryKey = (u8, u64, u64);

/// Key strings for the publisher: (key hash, (service, operator_name)) hash,
/// service, operator_name, operator_class).
pub type KeyNames = (u64, u64, String, String, String);

/// The hash of (service, operator_name) used in [`HistoryKey`] and to route
/// rule publication.
pub fn so_hash(service: &str, operator_name: &str) -> u64 {
    stable_hash(&(service, operator_name))
}

/// The first hour boundary `≥ ms`.
pub fn ceil_hour(ms: u64) -> u64 {
    ms.div_ceil(3_600_000) * 3_600_000
}

/// A differential update of the history collection.
pub type HistoryUpdate = ((HistoryKey, Sample), Time, isize);

/// One kept row: its epoch, add time, retraction time, group and sample.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Kept {
    epoch: Epoch,
    added_ms: u64,
    retract_ms: u64,
    group: HistoryKey,
    sample: Sample,
}

/// One entry of the operator's part of a checkpoint (keyed state, by the
/// key hash of the row's key, see [`state_hash`]): a kept row, or the
/// names of a key some kept row has.
#[derive(Deserialize)]
enum Entry {
    Kept(Kept),
    Names(KeyNames),
}

/// [`Entry`] by reference, for writing (bincode encodes both alike).
#[derive(Serialize)]
enum EntryRef<'a> {
    Kept(&'a Kept),
    Names(&'a KeyNames),
}

/// Extension trait: `rows.threshold_history(..)`.
pub trait ThresholdHistory<'scope> {
    /// The history collection of these rows (see the module docs).
    /// `published` is the hourly publisher's output, fed back (only its
    /// frontier is read). With `checkpoints`, the kept rows are this worker's
    /// part of every checkpoint and a restore feeds them in again.
    ///
    /// # Panics
    /// When a restored part cannot be read.
    fn threshold_history(
        self,
        name: &str,
        analysis_days: u32,
        published: Stream<'scope, Time, Vec<RuleUpdate>>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> (
        Stream<'scope, Time, Vec<HistoryUpdate>>,
        Stream<'scope, Time, Vec<KeyNames>>,
    );
}

impl<'scope> ThresholdHistory<'scope> for Stream<'scope, Time, Vec<OperatorAggRow>> {
    fn threshold_history(
        self,
        name: &str,
        analysis_days: u32,
        published: Stream<'scope, Time, Vec<RuleUpdate>>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> (
        Stream<'scope, Time, Vec<HistoryUpdate>>,
        Stream<'scope, Time, Vec<KeyNames>>,
    ) {
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let ctx: Option<Arc<CheckpointContext>> = checkpoints.as_ref().map(|g| g.context().clone());
        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let (out, updates) = builder.new_output::<Vec<HistoryUpdate>>();
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let (names_out, names_stream) = builder.new_output::<Vec<KeyNames>>();
        let mut rows_in = builder.new_input(self, Pipeline);
        // Only the frontier matters; it does not hold the outputs back.
        let mut published_in = builder.new_input_connection(published, Pipeline, []);
        let mut out = OutputBuilder::from(out);
        let mut ack_out = OutputBuilder::from(ack_out);
        let mut names_out = OutputBuilder::from(names_out);
        let keep_ms = u64::from(analysis_days) * 86_400_000;
        let part_name = format!("{name}-w{index}");
        let part_prefix = format!("{name}-w");

        builder.build(move |mut caps| {
            let mut names_caps = CapabilitySet::from_elem(caps.pop().expect("names output"));
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut caps = CapabilitySet::from_elem(caps.pop().expect("updates output"));
            // Rows kept for future publications, by (retraction time, seq).
            let mut kept: BTreeMap<(u64, u64), Kept> = BTreeMap::new();
            // Retractions not yet sent: (retraction ms, seq) → group, sample.
            let mut pending: BTreeMap<(u64, u64), (HistoryKey, Sample)> = BTreeMap::new();
            // Key strings by key hash (sent once per key from this worker).
            let mut names: HashMap<u64, KeyNames> = HashMap::new();
            let mut seq = 0u64;
            let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
            if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
                // Each kept row is loaded on the worker that owns its key
                // group: every row is fed in exactly once, on some worker
                // (the reduce re-keys them), with the names of its key.
                keyed_state::restore_owned(restore, &part_prefix, index, peers, |e| match e {
                    Entry::Kept(mut k) => {
                        pending.insert((k.retract_ms, seq), (k.group, k.sample));
                        k.epoch = first_epoch;
                        kept.insert((k.retract_ms, seq), k);
                        seq += 1;
                    }
                    Entry::Names(n) => {
                        names.insert(n.0, n);
                    }
                })
                .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
            }
            // Sent in the first activation: the output has no receivers yet
            // while the operator is being built.
            let mut unsent_names: Vec<KeyNames> = names.values().cloned().collect();
            let mut unsent: Vec<HistoryUpdate> = kept
                .values()
                .map(|k| {
                    let t = Time {
                        epoch: first_epoch,
                        event_ms: ceil_hour(k.added_ms),
                    };
                    ((k.group, k.sample), t, 1)
                })
                .collect();
            let mut last_oldest: Option<Epoch> = Some(0);
            move |frontiers| {
                if !unsent.is_empty() {
                    let cap = caps.first().expect("capability").clone();
                    let mut handle = out.activate();
                    for u in unsent.drain(..) {
                        handle.session(&cap.delayed(&u.1)).give(u);
                    }
                }
                if !unsent_names.is_empty() {
                    let cap = names_caps.first().expect("names capability").clone();
                    let t = Time {
                        epoch: first_epoch,
                        event_ms: 0,
                    };
                    names_out
                        .activate()
                        .session(&cap.delayed(&t))
                        .give_iterator(unsent_names.drain(..));
                }
                let view = FrontierView::of(&frontiers[0]);
                let oldest = view.oldest_epoch;
                let epoch_moved = oldest != last_oldest;
                last_oldest = oldest;
                let mut write =
                    |id: u64, kept: &BTreeMap<(u64, u64), Kept>, names: &HashMap<u64, KeyNames>| {
                        if let Some(ctx) = ctx.as_ref() {
                            let rows = kept.values().filter(|k| k.epoch <= id);
                            let ids: std::collections::BTreeSet<u64> =
                                rows.clone().map(|k| k.group.2).collect();
                            let entries = rows
                                .map(|k| (state_hash(k.group.2), EntryRef::Kept(k)))
                                .chain(ids.iter().filter_map(|i| {
                                    names.get(i).map(|n| (state_hash(n.0), EntryRef::Names(n)))
                                }));
                            let bytes = keyed_state::encode_groups(entries);
                            let msg = ctx.write_part(id, part_name.clone(), Some(&bytes));
                            let cap = ack_caps.first().expect("ack capability");
                            ack_out.activate().session(&cap).give(msg);
                        }
                    };
                if epoch_moved {
                    if let Some(c) =
                        streamforge_dataflow::checkpoint::checkpoint_to_write(oldest, first_epoch)
                    {
                        write(c, &kept, &names);
                    }
                }
                {
                    let mut handle = out.activate();
                    let mut names_handle = names_out.activate();
                    rows_in.for_each_time(|cap, data| {
                        let t = *cap.time();
                        let mut session = handle.session(&cap);
                        let mut new_names = Vec::new();
                        for row in data.flat_map(|d| d.drain(..)) {
                            let sample = Sample::of(&row);
                            let id =
                                parts_hash(&row.service, &row.operator_name, &row.operator_class);
                            let so = so_hash(&row.service, &row.operator_name);
                            let group: HistoryKey = (hour_of_day(row.window_start_ms), so, id);
                            if let std::collections::hash_map::Entry::Vacant(v) = names.entry(id) {
                                let n =
                                    (id, so, row.service, row.operator_name, row.operator_class);
                                new_names.push(n.clone());
                                v.insert(n);
                            }
                            let retract_ms = (row.window_start_ms + keep_ms + 1).max(t.event_ms);
                            let at = Time {
                                epoch: t.epoch,
                                event_ms: ceil_hour(t.event_ms),
                            };
                            session.give(((group, sample), at, 1));
                            pending.insert((retract_ms, seq), (group, sample));
                            kept.insert(
                                (retract_ms, seq),
                                Kept {
                                    epoch: t.epoch,
                                    added_ms: t.event_ms,
                                    retract_ms,
                                    group,
                                    sample,
                                },
                            );
                            seq += 1;
                        }
                        if !new_names.is_empty() {
                            names_handle
                                .session(&cap.retain(2))
                                .give_iterator(new_names.into_iter());
                        }
                    });
                }
                published_in.for_each(|_, _| {});
                // Send the retractions the watermark has reached.
                let due = match view.watermark_ms {
                    Some(w) => {
                        let later = pending.split_off(&(w + 1, 0));
                        std::mem::replace(&mut pending, later)
                    }
                    // The input ended: the collection's future does not matter.
                    None => std::mem::take(&mut pending),
                };
                if view.watermark_ms.is_some() && !due.is_empty() {
                    let emit = emit_at(&caps, oldest);
                    let mut handle = out.activate();
                    for ((ms, _), (group, sample)) in due {
                        let t = emit(ms);
                        let at = Time {
                            epoch: t.epoch,
                            event_ms: ceil_hour(t.event_ms),
                        };
                        handle
                            .session(&caps.delayed(&t))
                            .give(((group, sample), at, -1));
                    }
                }
                // Forget rows no publication can need any more.
                let published = FrontierView::of(&frontiers[1]).watermark_ms;
                match published {
                    Some(p) => {
                        let later = kept.split_off(&(p, 0));
                        kept = later;
                    }
                    None if oldest.is_none() => kept.clear(),
                    None => {}
                }
                if epoch_moved && oldest.is_none() {
                    write(FINAL, &kept, &names);
                }
                let hold = pending.keys().next().map_or(u64::MAX, |(ms, _)| *ms);
                hold_back(&mut caps, frontiers[0].frontier().iter(), hold);
                ack_caps.downgrade(frontiers[0].frontier().iter());
                names_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        if let Some(g) = checkpoints {
            g.add_writer(acks);
        }
        (updates, names_stream)
    }
}
