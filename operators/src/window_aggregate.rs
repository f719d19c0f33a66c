//! Keyed event-time window aggregation with allowed lateness and a late side output.
//!
//! # Semantics
//!
//! * Records are routed to workers by the [`stable_hash`] of their key.
//! * A record delivered at time `(epoch, t)` — `t` is the watermark of its source
//!   partition when it was read, or less (see `streamforge_dataflow::source`) — is
//!   added to every window `w` of its event time with `w.end + allowed_lateness > t`.
//!   When no window qualifies it goes to the **late side output** (Flink's
//!   `sideOutputLateData`). As `t` is fixed by the source, the decision is the same
//!   for any number of workers or processes.
//! * A window fires **once**, with its final value, when the input watermark (the
//!   minimum event-time coordinate of the input frontier) reaches
//!   `end + allowed_lateness`, and its state is dropped. With lateness 0 this is
//!   exactly Flink's on-time firing; with lateness > 0 streamforge emits one final
//!   row instead of an on-time row followed by updates (see docs/ARCHITECTURE.md).
//! * Epochs (checkpoints): records of an epoch newer than the oldest incomplete
//!   one are stashed until that epoch completes, so the state at each epoch
//!   boundary reflects exactly the records of earlier epochs.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::{
    CheckpointContext, CheckpointGraph, CheckpointMsg, Restore, FINAL,
};
use streamforge_dataflow::hash::key_group;
use streamforge_dataflow::keyed_state;
use streamforge_dataflow::stable_hash;
use streamforge_dataflow::time::{Epoch, FrontierView, Time};

use crate::aggregate::AggregateFunction;
use crate::assigner::{Window, WindowAssigner};

/// The window definition: an assigner plus allowed lateness.
#[derive(Clone, Debug)]
pub struct WindowSpec<W> {
    /// Which windows a record belongs to.
    pub assigner: W,
    /// How long after `end` a window still accepts records, in ms.
    pub allowed_lateness_ms: u64,
}

impl<W> WindowSpec<W> {
    /// A spec with no allowed lateness.
    pub fn new(assigner: W) -> Self {
        WindowSpec {
            assigner,
            allowed_lateness_ms: 0,
        }
    }
    /// Sets the allowed lateness in ms.
    pub fn allowed_lateness_ms(mut self, ms: u64) -> Self {
        self.allowed_lateness_ms = ms;
        self
    }
}

/// One fired window for one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult<K, O> {
    /// The window.
    pub window: Window,
    /// The key.
    pub key: K,
    /// The aggregate's result.
    pub value: O,
}

/// The outputs of a window aggregate: `(results, late records)`.
pub type WindowOutputs<'scope, K, O, D> = (
    Stream<'scope, Time, Vec<WindowResult<K, O>>>,
    Stream<'scope, Time, Vec<D>>,
);

/// Records of later epochs, with a late-port capability each.
type Stash<D> = BTreeMap<Epoch, Vec<(Capability<Time>, Vec<D>)>>;

/// Extension trait: `stream.window_aggregate(..)`.
pub trait WindowAggregate<'scope, D: ExchangeData> {
    /// Aggregates `self` per key and event-time window.
    ///
    /// * `key` borrows the key of a record; `event_time_ms` reads its event time.
    /// * Returns `(results, late)`: one [`WindowResult`] per fired (window, key),
    ///   and the records that were too late for all their windows.
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
    /// use streamforge_operators::{Count, Tumbling, Window, WindowAggregate, WindowSpec};
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    ///
    /// let (rows, late) = streamforge_dataflow::time::example(|scope| {
    ///     // Records are (key, event time); 10 s tumbling windows; 1 s out-of-orderness.
    ///     let data: Vec<(u64, (u64, u64))> = [1_000, 2_500, 12_000, 500]
    ///         .into_iter().map(|t| (t, (7, t))).collect();
    ///     let (spans, _dead) = partitioned_source(
    ///         scope, SourceSettings::new("src", 1_000), 1,
    ///         move |_| vec_partition("p", data.clone()), None);
    ///     let (rows, late) = spans.window_aggregate(
    ///         "count", WindowSpec::new(Tumbling::new(10_000)),
    ///         |r: &(u64, u64)| &r.0, |r| r.1, Count);
    ///     let rows = rows.map(|r| (r.window.start_ms, r.key, r.value));
    ///     (rows.capture(), late.capture())
    /// });
    /// let mut rows: Vec<_> = rows.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// rows.sort();
    /// assert_eq!(rows, vec![(0, 7, 2), (10_000, 7, 1)]);
    /// // 500 arrived when the watermark was 11 000: window [0, 10 000) had closed.
    /// let late: Vec<_> = late.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(late, vec![(7, 500)]);
    /// ```
    fn window_aggregate<K, W, A, KF, TF>(
        self,
        name: &str,
        spec: WindowSpec<W>,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        W: WindowAssigner,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;

    /// [`WindowAggregate::window_aggregate`] taking part in checkpoints: when
    /// epoch `c` completes at its input it writes its open windows (by key
    /// group) as its part of checkpoint `c`, and on a restore it loads the key
    /// groups this worker owns from every worker's part.
    ///
    /// # Panics
    /// When the restored state cannot be read (a corrupt checkpoint is detected
    /// before the run starts; this is a defect or a changed job).
    #[allow(clippy::too_many_arguments)]
    fn window_aggregate_checkpointed<K, W, A, KF, TF>(
        self,
        name: &str,
        spec: WindowSpec<W>,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        W: WindowAssigner,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;
}

struct OpenWindow<K, Acc> {
    window: Window,
    entries: HashTable<(u64, K, Acc)>,
}

impl<'scope, D: ExchangeData> WindowAggregate<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn window_aggregate<K, W, A, KF, TF>(
        self,
        name: &str,
        spec: WindowSpec<W>,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        W: WindowAssigner,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        let (results, late, _) = window_core(self, name, spec, key, event_time_ms, aggregate, None);
        (results, late)
    }

    fn window_aggregate_checkpointed<K, W, A, KF, TF>(
        self,
        name: &str,
        spec: WindowSpec<W>,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        W: WindowAssigner,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        let ctx = checkpoints.context().clone();
        let (results, late, acks) =
            window_core(self, name, spec, key, event_time_ms, aggregate, Some(ctx));
        checkpoints.add_writer(acks);
        (results, late)
    }
}

/// The outputs of the operator: results, late records, checkpoint messages.
type CoreOutputs<'scope, K, O, D> = (
    Stream<'scope, Time, Vec<WindowResult<K, O>>>,
    Stream<'scope, Time, Vec<D>>,
    Stream<'scope, Time, Vec<CheckpointMsg>>,
);

fn window_core<'scope, D, K, W, A, KF, TF>(
    stream: Stream<'scope, Time, Vec<D>>,
    name: &str,
    spec: WindowSpec<W>,
    key: KF,
    event_time_ms: TF,
    aggregate: A,
    ctx: Option<Arc<CheckpointContext>>,
) -> CoreOutputs<'scope, K, A::Out, D>
where
    D: ExchangeData,
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
    W: WindowAssigner,
    A: AggregateFunction<D>,
    A::Out: 'static,
    KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
    TF: Fn(&D) -> u64 + 'static,
{
    {
        let scope = stream.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let mut builder = OperatorBuilder::new(name.to_owned(), scope);
        let route = key.clone();
        // Route by key group, so that state can be re-distributed by key group.
        let mut input = builder.new_input(
            stream,
            Exchange::new(move |d: &D| key_group(stable_hash(route(d)))),
        );
        let (results_out, results) = builder.new_output::<Vec<WindowResult<K, A::Out>>>();
        let (late_out, late) = builder.new_output::<Vec<D>>();
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let mut results_out = OutputBuilder::from(results_out);
        let mut late_out = OutputBuilder::from(late_out);
        let mut ack_out = OutputBuilder::from(ack_out);
        let lateness = spec.allowed_lateness_ms;
        let assigner = spec.assigner;
        let part_name = format!("{name}-w{index}");
        let part_prefix = format!("{name}-w");
        let metrics = streamforge_dataflow::metrics::operator_metrics(name, index);

        builder.build(move |mut caps| {
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut late_caps = CapabilitySet::from_elem(caps.pop().expect("late output"));
            let mut result_caps = CapabilitySet::from_elem(caps.pop().expect("results output"));
            let mut windows: Vec<OpenWindow<K, A::Acc>> = Vec::new();
            if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
                let started = std::time::Instant::now();
                restore_windows(
                    restore,
                    &part_prefix,
                    index,
                    peers,
                    &mut windows,
                    &aggregate,
                )
                .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
                let entries: usize = windows.iter().map(|w| w.entries.len()).sum();
                tracing::info!(
                    operator = %part_prefix,
                    worker = index,
                    checkpoint = restore.id(),
                    entries,
                    ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                    "window state restored"
                );
            }
            // Records of epochs newer than the one being applied, with a late-port
            // capability so they can still be emitted as late after the frontier moves.
            let mut stash: Stash<D> = BTreeMap::new();
            let mut fired: Vec<WindowResult<K, A::Out>> = Vec::new();
            // Late records of this activation, with the capability to emit them at.
            let mut late: Vec<(Capability<Time>, Vec<D>)> = Vec::new();
            let mut last_oldest: Option<Epoch> = Some(0);

            move |frontiers| {
                let view = FrontierView::of(&frontiers[0]);
                let oldest = view.oldest_epoch;
                let epoch_moved = oldest != last_oldest;
                last_oldest = oldest;
                let apply =
                    |windows: &mut Vec<OpenWindow<K, A::Acc>>,
                     cap: &Capability<Time>,
                     data: &mut Vec<D>,
                     late: &mut Vec<(Capability<Time>, Vec<D>)>| {
                        let t = cap.time().event_ms;
                        metrics
                            .records_in
                            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        let mut late_batch = Vec::new();
                        for d in data.drain(..) {
                            let e = event_time_ms(&d);
                            if assigner.max_end(e) + lateness <= t {
                                late_batch.push(d);
                                continue;
                            }
                            let k = key(&d);
                            let h = stable_hash(k);
                            assigner.assign(e, |w| {
                                if w.end_ms + lateness <= t {
                                    return;
                                }
                                let acc = find_or_open(windows, w, h, k, &aggregate);
                                aggregate.add(acc, &d);
                            });
                        }
                        if !late_batch.is_empty() {
                            late.push((cap.clone(), late_batch));
                        }
                    };
                // Applies the stashed records of epochs below `below` (all: `None`).
                let drain_stash =
                    |below: Option<Epoch>,
                     stash: &mut Stash<D>,
                     windows: &mut Vec<OpenWindow<K, A::Acc>>,
                     late: &mut Vec<(Capability<Time>, Vec<D>)>| {
                        while let Some(entry) = stash.first_entry() {
                            if below.is_some_and(|e| *entry.key() >= e) {
                                break;
                            }
                            for (cap, mut data) in entry.remove() {
                                apply(windows, &cap, &mut data, late);
                            }
                        }
                    };
                // Writes the open windows as this worker's part of checkpoint `id`.
                let mut write_snapshot = |id: u64, windows: &[OpenWindow<K, A::Acc>]| {
                    if let Some(ctx) = ctx.as_ref() {
                        let msg = ctx.write_part(id, part_name.clone(), Some(&snapshot(windows)));
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                };
                let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
                if epoch_moved {
                    // Epochs before `oldest` are complete: apply their stashed
                    // records; the state is then the state after them.
                    drain_stash(oldest, &mut stash, &mut windows, &mut late);
                    if let Some(c) =
                        streamforge_dataflow::checkpoint::checkpoint_to_write(oldest, first_epoch)
                    {
                        write_snapshot(c, &windows);
                    }
                }
                input.for_each_time(|cap, data| {
                    let t = *cap.time();
                    if view.oldest_epoch.is_some_and(|e| t.epoch > e) {
                        let retained = cap.retain(1);
                        let entry = stash.entry(t.epoch).or_default();
                        for d in data {
                            entry.push((retained.clone(), std::mem::take(d)));
                        }
                        return;
                    }
                    let cap = cap.retain(1);
                    for d in data {
                        apply(&mut windows, &cap, d, &mut late);
                    }
                });
                // The current epoch's stashed records.
                drain_stash(oldest.map(|e| e + 1), &mut stash, &mut windows, &mut late);
                if !late.is_empty() {
                    let mut handle = late_out.activate();
                    for (cap, mut batch) in late.drain(..) {
                        handle.session(&cap).give_container(&mut batch);
                    }
                }
                // Fire every window whose end + lateness the watermark has reached and
                // that no stashed record can still contribute to.
                let stash_low = stash
                    .values()
                    .flatten()
                    .map(|(c, _)| c.time().event_ms)
                    .min();
                let limit = match (view.watermark_ms, stash_low) {
                    (None, None) => u64::MAX,
                    (Some(w), None) | (None, Some(w)) => w,
                    (Some(a), Some(b)) => a.min(b),
                };
                // Stopping for a savepoint: keep the windows open (they are in
                // the final checkpoint), do not fire them.
                let stopping = oldest.is_none() && ctx.as_ref().is_some_and(|c| c.stop_requested());
                let ready = if stopping {
                    0
                } else {
                    windows
                        .iter()
                        .take_while(|w| w.window.end_ms + lateness <= limit)
                        .count()
                };
                if ready > 0 {
                    // A window's results are emitted at (oldest epoch, end +
                    // allowed lateness): the event-time coordinate of a result
                    // does not depend on how far the watermark jumped, so
                    // operators downstream (thresholds, alerting) see the same
                    // times in every run. The result capabilities are held back
                    // to the next window's firing time for that (below).
                    let emit = streamforge_dataflow::time::emit_at(&result_caps, oldest);
                    let mut handle = results_out.activate();
                    for open in windows.drain(..ready) {
                        let window = open.window;
                        let out_time = emit(window.end_ms + lateness);
                        let cap = result_caps.delayed(&out_time);
                        fired.extend(open.entries.into_iter().map(|(_, k, acc)| WindowResult {
                            window,
                            key: k,
                            value: aggregate.get_result(&acc),
                        }));
                        metrics
                            .records_out
                            .fetch_add(fired.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        handle.session(&cap).give_container(&mut fired);
                    }
                }
                if epoch_moved && oldest.is_none() {
                    // The input ended (or stopped): the last checkpoint.
                    write_snapshot(FINAL, &windows);
                }
                // Hold the result capabilities at the next firing time (the
                // first open window's end + lateness, or a stashed record's
                // time: its windows end later).
                let hold = windows
                    .first()
                    .map(|w| w.window.end_ms + lateness)
                    .into_iter()
                    .chain(stash_low)
                    .min()
                    .unwrap_or(u64::MAX);
                metrics.state_entries.store(
                    windows.iter().map(|w| w.entries.len() as i64).sum(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                streamforge_dataflow::time::hold_back(
                    &mut result_caps,
                    frontiers[0].frontier().iter(),
                    hold,
                );
                late_caps.downgrade(frontiers[0].frontier().iter());
                ack_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        (results, late, acks)
    }
}

/// Serializes open windows by key group (the shared keyed-state layout,
/// [`streamforge_dataflow::keyed_state`]): entries `(Window, K, Acc)`.
fn snapshot<K: Serialize, Acc: Serialize>(windows: &[OpenWindow<K, Acc>]) -> Vec<u8> {
    keyed_state::encode_groups(windows.iter().flat_map(|open| {
        open.entries
            .iter()
            .map(move |(h, k, acc)| (*h, (&open.window, k, acc)))
    }))
}

/// Loads, from every worker's part, the key groups that `index` owns.
fn restore_windows<K, D, A>(
    restore: &Restore,
    prefix: &str,
    index: usize,
    peers: usize,
    windows: &mut Vec<OpenWindow<K, A::Acc>>,
    aggregate: &A,
) -> Result<(), String>
where
    K: Hash + Eq + Clone + DeserializeOwned,
    A: AggregateFunction<D>,
{
    keyed_state::restore_owned(
        restore,
        prefix,
        index,
        peers,
        |(w, k, acc): (Window, K, A::Acc)| {
            let h = stable_hash(&k);
            *find_or_open(windows, w, h, &k, aggregate) = acc;
        },
    )
}

/// The accumulator of `(w, key)`, opening the window or the entry when new.
#[inline]
fn find_or_open<'w, K: Eq + Clone, Acc, D, A: AggregateFunction<D, Acc = Acc>>(
    windows: &'w mut Vec<OpenWindow<K, Acc>>,
    w: Window,
    h: u64,
    k: &K,
    aggregate: &A,
) -> &'w mut Acc {
    // Open windows are sorted by (end, start); the newest are at the back and
    // most records belong there.
    let idx = match windows.iter().rposition(|o| o.window == w) {
        Some(i) => i,
        None => {
            let pos = windows
                .partition_point(|o| (o.window.end_ms, o.window.start_ms) < (w.end_ms, w.start_ms));
            windows.insert(
                pos,
                OpenWindow {
                    window: w,
                    entries: HashTable::new(),
                },
            );
            pos
        }
    };
    let entries = &mut windows[idx].entries;
    match entries.entry(h, |(h2, k2, _)| *h2 == h && k2 == k, |(h2, _, _)| *h2) {
        Entry::Occupied(o) => &mut o.into_mut().2,
        Entry::Vacant(v) => {
            &mut v
                .insert((h, k.clone(), aggregate.create_accumulator()))
                .into_mut()
                .2
        }
    }
}
