//! Keyed process functions: per-key state and event-time timers (Flink's
//! `KeyedProcessFunction`), applied in a deterministic order.
//!
//! # Semantics
//!
//! * Records are routed by the key group of their key (`stable_hash`), as
//!   in every keyed operator, so state can be restored with any number of
//!   workers.
//! * Each key has one state value of the function's type `S` (a struct, a
//!   `Vec` for list state, a map for map state), `None` until set. With a
//!   TTL the state of a key that nothing touched for `ttl` of event time is
//!   dropped (Flink's `StateTtlConfig` on event time).
//! * A record delivered at `(epoch, t)` (`t`: its partition's watermark when
//!   read, see `streamforge_dataflow::source`) is handed to
//!   [`KeyedProcessFunction::process_element`] with `current_ms = t`. An
//!   event-time timer at `T` fires ([`KeyedProcessFunction::on_timer`],
//!   `current_ms = T`) once the watermark reaches `T`.
//! * **Order.** Elements and timers are applied in order of time: records
//!   by `(t, event time, encoded record)`, a timer at `T` before any record
//!   with `t ≥ T`; of one key's timers at one `T`, the function's timer
//!   before the state-TTL timer (timers of different keys touch different
//!   states, so their order among themselves is free). A record is applied
//!   once the watermark is past `t` (all
//!   records at `t` have arrived), so the order — and hence every state and
//!   every output — is the same for any number of workers or processes and
//!   any arrival order. Records wait for that in a per-worker buffer (about
//!   one watermark step).
//! * **Epochs.** Checkpoint `c` is the state after exactly the records of
//!   epochs `≤ c`: while epoch `c` is open, nothing at or after the first
//!   buffered record of a later epoch is applied; when `c` completes, the
//!   part holds the states, the timers and the buffered records of epochs
//!   `≤ c` (by key group, [`streamforge_dataflow::keyed_state`]). Records of
//!   later epochs are not in it: the sources re-deliver them after a restore.
//! * Outputs carry the event time the function gives them and leave at
//!   `(oldest open epoch, t)` for a record, at `T − 1` for a timer at `T`
//!   (the last instant before the watermark reached it, so that a record a
//!   timer releases at its own event time `< T` is not late downstream).
//! * End of input fires every timer (Flink's final `MAX` watermark),
//!   including timers registered while doing so; a savepoint keeps them.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::{
    checkpoint_to_write, CheckpointContext, CheckpointGraph, CheckpointMsg, FINAL,
};
use streamforge_dataflow::hash::key_group;
use streamforge_dataflow::time::{emit_at, hold_back, Epoch, FrontierView, Time};
use streamforge_dataflow::{keyed_state, stable_hash, EventTime};

/// What a process function may do while it handles a record or a timer.
pub struct ProcessContext<'a, O> {
    /// The time being processed: the record's delivery time (its partition's
    /// watermark when it was read) or the timer's time, ms.
    pub current_ms: u64,
    out: &'a mut Vec<(EventTime, O)>,
    timers: &'a mut Vec<u64>,
}

impl<O> ProcessContext<'_, O> {
    /// Emits `value` with event time `event_time_ms`.
    pub fn output(&mut self, event_time_ms: EventTime, value: O) {
        self.out.push((event_time_ms, value));
    }

    /// Registers an event-time timer of the current key at `ms`; it fires
    /// once when the watermark reaches `ms` (a timer at or before
    /// `current_ms` fires before the next later record). Registering the
    /// same time twice fires once.
    pub fn register_timer(&mut self, ms: u64) {
        self.timers.push(ms);
    }
}

/// A function over the records of one key, with keyed state and timers.
pub trait KeyedProcessFunction<K, D>: 'static {
    /// The state of one key (value, list or map state: any serializable type).
    type State: Serialize + DeserializeOwned + 'static;
    /// What the function emits.
    type Out: 'static;

    /// Handles one record of `key` with event time `event_time_ms`.
    fn process_element(
        &self,
        key: &K,
        state: &mut Option<Self::State>,
        record: D,
        event_time_ms: EventTime,
        ctx: &mut ProcessContext<'_, Self::Out>,
    );

    /// Handles a timer of `key` (`ctx.current_ms` is the timer's time).
    fn on_timer(
        &self,
        key: &K,
        state: &mut Option<Self::State>,
        ctx: &mut ProcessContext<'_, Self::Out>,
    );
}

/// Options of a keyed process operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Drop a key's state when nothing touched it for this long (event
    /// time, ms); `None`: keep it until the function clears it.
    pub state_ttl_ms: Option<u64>,
    /// Outputs of a timer at `T` leave at `T − 1` rounded down to a multiple
    /// of this (ms), but not before the time the timer was registered at:
    /// the outputs of one step share one timestamp — one timely message and
    /// one progress update instead of one per record — and downstream
    /// frontiers are held up to this much longer. Never later than `T − 1`,
    /// so never late downstream. 0 or 1: exactly `T − 1`.
    pub emit_granularity_ms: u64,
}

/// One key's state and when it expires.
#[derive(Serialize, Deserialize)]
struct Slot<S> {
    state: Option<S>,
    /// Event time at which the TTL drops the state.
    expires_ms: Option<u64>,
}

impl<S> Slot<S> {
    /// After a call at `now`: the state lives `ttl_ms` more (if any);
    /// returns its new expiry.
    fn renew(&mut self, now: u64, ttl_ms: Option<u64>) -> Option<u64> {
        self.expires_ms = match (self.state.is_some(), ttl_ms) {
            (true, Some(ttl)) => Some(now + ttl),
            _ => None,
        };
        self.expires_ms
    }
}

/// A buffered record: (delivery time, event time, epoch, key hash, key, record).
type Pending<K, D> = (u64, EventTime, Epoch, u64, K, D);

/// Entries of a checkpoint part (by key group of the key hash).
#[derive(Serialize, Deserialize)]
enum Entry<K, S, D> {
    State(K, Slot<S>),
    /// (key, time, is a TTL timer, time it was registered at)
    Timer(K, u64, bool, u64),
    Pending(u64, EventTime, K, D),
}

/// Extension trait: `stream.keyed_process(..)`.
pub trait KeyedProcess<'scope, D: ExchangeData> {
    /// Applies `function` per key (see the module docs for the order).
    /// Returns the outputs as `(event time, value)`.
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
    /// use streamforge_operators::keyed_process::*;
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    ///
    /// // Emits a running count per key, and the final count 10 s after the
    /// // key's first record (a timer).
    /// struct Counter;
    /// impl KeyedProcessFunction<u32, (u32, u64)> for Counter {
    ///     type State = u64;
    ///     type Out = (u32, u64, bool);
    ///     fn process_element(&self, k: &u32, s: &mut Option<u64>, _: (u32, u64), e: u64,
    ///                        ctx: &mut ProcessContext<'_, Self::Out>) {
    ///         if s.is_none() { ctx.register_timer(e + 10_000) }
    ///         let n = s.get_or_insert(0);
    ///         *n += 1;
    ///         ctx.output(e, (*k, *n, false));
    ///     }
    ///     fn on_timer(&self, k: &u32, s: &mut Option<u64>, ctx: &mut ProcessContext<'_, Self::Out>) {
    ///         ctx.output(ctx.current_ms, (*k, s.take().unwrap_or(0), true));
    ///     }
    /// }
    /// let out = streamforge_dataflow::time::example(|scope| {
    ///     let data: Vec<(u64, (u32, u64))> =
    ///         [(1, 1_000), (2, 2_000), (1, 5_000), (2, 20_000), (1, 30_000)]
    ///         .into_iter().map(|(k, t)| (t, (k, t))).collect();
    ///     // One record per batch: each is delivered at the watermark before it
    ///     // (the previous record's time), so (1, 30 000) comes after the
    ///     // timers at 11 000 and 12 000, and (2, 20 000) before them.
    ///     let settings = SourceSettings { batch_items: 1, ..SourceSettings::new("src", 0) };
    ///     let (s, _) = partitioned_source(scope, settings, 1,
    ///         move |_| vec_partition("p", data.clone()), None);
    ///     s.keyed_process("count", ProcessSpec::default(), |r: &(u32, u64)| &r.0,
    ///         |r: &(u32, u64)| r.1, Counter).capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![
    ///     (1_000, (1, 1, false)), (2_000, (2, 1, false)), (5_000, (1, 2, false)),
    ///     (11_000, (1, 2, true)), (12_000, (2, 2, true)), (20_000, (2, 2, false)),
    ///     (30_000, (1, 1, false)), (40_000, (1, 1, true)),
    /// ]);
    /// ```
    fn keyed_process<K, KF, TF, P>(
        self,
        name: &str,
        spec: ProcessSpec,
        key: KF,
        event_time_ms: TF,
        function: P,
    ) -> Stream<'scope, Time, Vec<(EventTime, P::Out)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
        P: KeyedProcessFunction<K, D>;

    /// [`KeyedProcess::keyed_process`] taking part in checkpoints (states,
    /// timers and buffered records by key group; restorable with another
    /// worker count).
    ///
    /// # Panics
    /// When the restored state cannot be read (a corrupt checkpoint is
    /// rejected before the run starts; this is a defect or a changed job).
    #[allow(clippy::too_many_arguments)]
    fn keyed_process_checkpointed<K, KF, TF, P>(
        self,
        name: &str,
        spec: ProcessSpec,
        key: KF,
        event_time_ms: TF,
        function: P,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Stream<'scope, Time, Vec<(EventTime, P::Out)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
        P: KeyedProcessFunction<K, D>;
}

impl<'scope, D: ExchangeData> KeyedProcess<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn keyed_process<K, KF, TF, P>(
        self,
        name: &str,
        spec: ProcessSpec,
        key: KF,
        event_time_ms: TF,
        function: P,
    ) -> Stream<'scope, Time, Vec<(EventTime, P::Out)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
        P: KeyedProcessFunction<K, D>,
    {
        process_core(self, name, spec, key, event_time_ms, function, None).0
    }

    fn keyed_process_checkpointed<K, KF, TF, P>(
        self,
        name: &str,
        spec: ProcessSpec,
        key: KF,
        event_time_ms: TF,
        function: P,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Stream<'scope, Time, Vec<(EventTime, P::Out)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
        P: KeyedProcessFunction<K, D>,
    {
        let ctx = checkpoints.context().clone();
        let (out, acks) = process_core(self, name, spec, key, event_time_ms, function, Some(ctx));
        checkpoints.add_writer(acks);
        out
    }
}

/// Orders buffered records: delivery time, event time, then the encoded
/// record (a total order that does not depend on arrival).
fn record_order<K, D: Serialize>(a: &Pending<K, D>, b: &Pending<K, D>) -> CmpOrdering {
    (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
        let ea = bincode::serialize(&a.5).unwrap_or_default();
        let eb = bincode::serialize(&b.5).unwrap_or_default();
        ea.cmp(&eb)
    })
}

#[allow(clippy::type_complexity)]
fn process_core<'scope, D, K, KF, TF, P>(
    stream: Stream<'scope, Time, Vec<D>>,
    name: &str,
    spec: ProcessSpec,
    key: KF,
    event_time_ms: TF,
    function: P,
    ctx: Option<Arc<CheckpointContext>>,
) -> (
    Stream<'scope, Time, Vec<(EventTime, P::Out)>>,
    Stream<'scope, Time, Vec<CheckpointMsg>>,
)
where
    D: ExchangeData,
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
    KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
    TF: Fn(&D) -> u64 + 'static,
    P: KeyedProcessFunction<K, D>,
{
    let scope = stream.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let route = key.clone();
    let mut input = builder.new_input(
        stream,
        Exchange::new(move |d: &D| key_group(stable_hash(route(d)))),
    );
    let (out, outputs) = builder.new_output::<Vec<(EventTime, P::Out)>>();
    let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
    let mut out = OutputBuilder::from(out);
    let mut ack_out = OutputBuilder::from(ack_out);
    let part_name = format!("{name}-w{index}");
    let part_prefix = format!("{name}-w");
    let metrics = streamforge_dataflow::metrics::operator_metrics(name, index);

    builder.build(move |mut caps| {
        let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
        let mut out_caps = CapabilitySet::from_elem(caps.pop().expect("output"));
        let mut store: KeyedStore<K, P::State> = KeyedStore::new(spec.emit_granularity_ms);
        let mut pending: Vec<Pending<K, D>> = Vec::new();
        if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
            keyed_state::restore_owned(
                restore,
                &part_prefix,
                index,
                peers,
                |e: Entry<K, P::State, D>| match e {
                    Entry::State(k, slot) => store
                        .states
                        .entry(stable_hash(&k))
                        .or_default()
                        .push((k, slot)),
                    Entry::Timer(k, t, ttl, floor) => {
                        store.insert_timer(t, stable_hash(&k), &k, ttl, floor)
                    }
                    Entry::Pending(t, e, k, d) => {
                        let h = stable_hash(&k);
                        // Restored records belong to epochs before this run.
                        pending.push((t, e, 0, h, k, d));
                    }
                },
            )
            .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
        }
        let mut outputs: Vec<(EventTime, P::Out)> = Vec::new();
        let mut new_timers: Vec<u64> = Vec::new();
        let mut last_oldest: Option<Epoch> = Some(0);
        let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());

        move |frontiers| {
            let view = FrontierView::of(&frontiers[0]);
            let oldest = view.oldest_epoch;
            let epoch_moved = oldest != last_oldest;
            last_oldest = oldest;
            input.for_each_time(|cap, data| {
                let t = *cap.time();
                for batch in data {
                    metrics
                        .records_in
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for d in batch.drain(..) {
                        let k = key(&d).clone();
                        let e = event_time_ms(&d);
                        pending.push((t.event_ms, e, t.epoch, stable_hash(&k), k, d));
                    }
                }
            });
            let stopping = oldest.is_none() && ctx.as_ref().is_some_and(|c| c.stop_requested());
            // Writes states, timers and the buffered records of epochs ≤ id.
            let mut write =
                |id: u64, store: &KeyedStore<K, P::State>, pending: &[Pending<K, D>]| {
                    if let Some(ctx) = ctx.as_ref() {
                        let entries = store.entries().chain(
                            pending
                                .iter()
                                .filter(|p| id == FINAL || p.2 <= id)
                                .map(|p| (p.3, EntryRef::Pending(p.0, p.1, &p.4, &p.5))),
                        );
                        let bytes = keyed_state::encode_groups(entries);
                        let msg = ctx.write_part(id, part_name.clone(), Some(&bytes));
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                };
            if epoch_moved {
                if let Some(c) = checkpoint_to_write(oldest, first_epoch) {
                    write(c, &store, &pending);
                }
            }
            // How far to apply: records with t < limit, timers with T ≤ limit.
            let watermark = if stopping {
                None
            } else {
                Some(view.watermark_ms.unwrap_or(u64::MAX))
            };
            if let Some(watermark) = watermark {
                let block =
                    oldest.and_then(|o| pending.iter().filter(|p| p.2 > o).map(|p| p.0).min());
                let limit = block.map_or(watermark, |b| b.min(watermark));
                let ended = view.watermark_ms.is_none() && block.is_none();
                pending.sort_by(record_order);
                let ready = pending.partition_point(|p| p.0 < limit || ended);
                let mut records = pending.drain(..ready).peekable();
                let mut handle = out.activate();
                let (mut batch, mut batch_at) = (Vec::new(), None::<u64>);
                loop {
                    let next_record = records.peek().map(|p| p.0);
                    let next_timer = store.first_timer_ms().filter(|t| *t <= limit || ended);
                    let (timer, now) = match (next_timer, next_record) {
                        (Some(tt), Some(rt)) if tt <= rt => (true, tt),
                        (Some(tt), None) => (true, tt),
                        (_, Some(rt)) => (false, rt),
                        (None, None) => break,
                    };
                    let emit_ms = if timer {
                        let (t, h, k, ttl_timer, at) = store.pop_timer();
                        let slot = store.slot(h, &k);
                        if slot.expires_ms.is_some_and(|x| x <= t) {
                            slot.state = None;
                            slot.expires_ms = None;
                        }
                        if !ttl_timer {
                            let mut c = ProcessContext {
                                current_ms: t,
                                out: &mut outputs,
                                timers: &mut new_timers,
                            };
                            function.on_timer(&k, &mut slot.state, &mut c);
                            let expiry = slot.renew(t, spec.state_ttl_ms);
                            let empty = slot.state.is_none();
                            store.schedule(h, &k, t, &mut new_timers, expiry);
                            if empty {
                                store.remove(h, &k);
                            }
                        } else if slot.state.is_none() {
                            store.remove(h, &k);
                        }
                        // Before the watermark reached the timer (`t − 1`,
                        // rounded down to the granularity): a record a timer
                        // releases at its own event time (< t) is not late
                        // downstream.
                        at
                    } else {
                        let (t, e, _, h, k, d) = records.next().expect("record");
                        let slot = store.slot(h, &k);
                        if slot.expires_ms.is_some_and(|x| x <= now) {
                            slot.state = None;
                        }
                        let mut c = ProcessContext {
                            current_ms: now,
                            out: &mut outputs,
                            timers: &mut new_timers,
                        };
                        function.process_element(&k, &mut slot.state, d, e, &mut c);
                        let expiry = slot.renew(now, spec.state_ttl_ms);
                        let empty = slot.state.is_none();
                        store.schedule(h, &k, now, &mut new_timers, expiry);
                        if empty {
                            store.remove(h, &k);
                        }
                        t
                    };
                    if !outputs.is_empty() {
                        // Consecutive outputs at one time leave as one batch.
                        if batch_at.is_some_and(|b| b != emit_ms) {
                            let at = emit_at(&out_caps, oldest)(batch_at.expect("batch"));
                            handle
                                .session(&out_caps.delayed(&at))
                                .give_container(&mut batch);
                        }
                        batch.append(&mut outputs);
                        batch_at = Some(emit_ms);
                    }
                }
                if let Some(b) = batch_at.filter(|_| !batch.is_empty()) {
                    let at = emit_at(&out_caps, oldest)(b);
                    handle
                        .session(&out_caps.delayed(&at))
                        .give_container(&mut batch);
                }
            }
            metrics
                .state_entries
                .store(store.entry_count() as i64, Ordering::Relaxed);
            if epoch_moved && oldest.is_none() {
                write(FINAL, &store, &pending);
            }
            // Hold the output capability at the next time anything can be
            // emitted: the first buffered record or the first timer.
            let hold = pending
                .iter()
                .map(|p| p.0)
                .chain(store.first_emit_ms())
                .min()
                .unwrap_or(u64::MAX);
            hold_back(&mut out_caps, frontiers[0].frontier().iter(), hold);
            ack_caps.downgrade(frontiers[0].frontier().iter());
        }
    });
    (outputs, acks)
}

/// Borrowed checkpoint entries (encoded exactly as [`Entry`]).
#[derive(Serialize)]
enum EntryRef<'a, K, S, D> {
    State(&'a K, &'a Slot<S>),
    Timer(&'a K, u64, bool, u64),
    Pending(u64, EventTime, &'a K, &'a D),
}

/// A timer's key, whether it is a TTL timer, and the time it was
/// registered at.
type TimerKey<K> = (K, bool, u64);

/// The keyed state of one worker: per key hash the keys' slots, and the
/// timers ordered by (time, key hash), each with its keys and whether it is
/// a TTL timer. Timers of different keys are independent, so only the order
/// of one key's timers matters: by time, and at one time its function timer
/// before its TTL timer (see [`KeyedStore::pop_timer`]).
struct KeyedStore<K, S> {
    states: HashMap<u64, Vec<(K, Slot<S>)>>,
    /// (time, key hash) → (key, is a TTL timer, time registered at).
    timers: BTreeMap<(u64, u64), Vec<TimerKey<K>>>,
    timer_count: usize,
    /// The emit times of the function timers (a multiset): the output
    /// capability is held at the first.
    emits: BTreeMap<u64, usize>,
    /// [`ProcessSpec::emit_granularity_ms`], at least 1.
    granularity_ms: u64,
}

impl<K, S> KeyedStore<K, S> {
    fn new(granularity_ms: u64) -> Self {
        KeyedStore {
            states: HashMap::new(),
            timers: BTreeMap::new(),
            timer_count: 0,
            emits: BTreeMap::new(),
            granularity_ms: granularity_ms.max(1),
        }
    }

    /// Where the outputs of a timer at `t` registered at `floor` leave: `t −
    /// 1` rounded down to the granularity, not before `min(floor, t − 1)`.
    fn emit_ms(&self, t: u64, floor: u64) -> u64 {
        let last = t.saturating_sub(1);
        (last - last % self.granularity_ms).max(floor.min(last))
    }

    fn count_emit(&mut self, at: u64, add: bool) {
        if add {
            *self.emits.entry(at).or_default() += 1;
        } else if let std::collections::btree_map::Entry::Occupied(mut o) = self.emits.entry(at) {
            *o.get_mut() -= 1;
            if *o.get() == 0 {
                o.remove();
            }
        }
    }
}

impl<K: Eq + Clone + Serialize, S: Serialize> KeyedStore<K, S> {
    /// The slot of key `k` (hash `h`), created empty when missing.
    fn slot(&mut self, h: u64, k: &K) -> &mut Slot<S> {
        let slots = self.states.entry(h).or_default();
        let i = match slots.iter().position(|(k2, _)| k2 == k) {
            Some(i) => i,
            None => {
                slots.push((
                    k.clone(),
                    Slot {
                        state: None,
                        expires_ms: None,
                    },
                ));
                slots.len() - 1
            }
        };
        &mut slots[i].1
    }

    /// Forgets the slot of `k`.
    fn remove(&mut self, h: u64, k: &K) {
        if let Some(slots) = self.states.get_mut(&h) {
            slots.retain(|(k2, _)| k2 != k);
            if slots.is_empty() {
                self.states.remove(&h);
            }
        }
    }

    /// Moves the timers a function registered for `k` at `now` (`new`; one
    /// before `now` fires at `now`) into the timer set, with the state's TTL
    /// timer at `expiry`.
    fn schedule(&mut self, h: u64, k: &K, now: u64, new: &mut Vec<u64>, expiry: Option<u64>) {
        for t in new.drain(..) {
            self.insert_timer(t.max(now), h, k, false, now);
        }
        if let Some(x) = expiry {
            self.insert_timer(x, h, k, true, now);
        }
    }

    /// Adds a timer at `t` for `k` registered at `floor` (once: the same
    /// timer again keeps the earlier registration).
    fn insert_timer(&mut self, t: u64, h: u64, k: &K, ttl: bool, floor: u64) {
        let keys = self.timers.entry((t, h)).or_default();
        if let Some(at) = keys
            .iter()
            .position(|(k2, ttl2, _)| *ttl2 == ttl && k2 == k)
        {
            let old = keys[at].2;
            if floor < old && !ttl {
                keys[at].2 = floor;
                let (from, to) = (self.emit_ms(t, old), self.emit_ms(t, floor));
                self.count_emit(from, false);
                self.count_emit(to, true);
            }
            return;
        }
        keys.push((k.clone(), ttl, floor));
        self.timer_count += 1;
        if !ttl {
            let at = self.emit_ms(t, floor);
            self.count_emit(at, true);
        }
    }

    /// The time of the first timer.
    fn first_timer_ms(&self) -> Option<u64> {
        self.timers.first_key_value().map(|(&(t, _), _)| t)
    }

    /// The first time a timer's outputs can leave at (TTL timers have none).
    fn first_emit_ms(&self) -> Option<u64> {
        self.emits.first_key_value().map(|(&at, _)| at)
    }

    /// Takes the first timer: (time, key hash, key, is a TTL timer). Of the
    /// timers at one (time, key hash), a function timer goes before a TTL
    /// timer, so a key's function timer sees its state before the TTL at the
    /// same time clears it; between different keys the order does not matter.
    fn pop_timer(&mut self) -> (u64, u64, K, bool, u64) {
        let mut first = self.timers.first_entry().expect("timer");
        let (t, h) = *first.key();
        let keys = first.get_mut();
        let i = keys.iter().position(|(_, ttl, _)| !ttl).unwrap_or(0);
        let (k, ttl, floor) = keys.swap_remove(i);
        if keys.is_empty() {
            first.remove();
        }
        self.timer_count -= 1;
        let at = self.emit_ms(t, floor);
        if !ttl {
            self.count_emit(at, false);
        }
        (t, h, k, ttl, at)
    }

    /// States and timers as checkpoint entries by key hash.
    fn entries<'a, D: 'a>(&'a self) -> impl Iterator<Item = (u64, EntryRef<'a, K, S, D>)> + 'a {
        self.states
            .iter()
            .flat_map(|(h, v)| {
                v.iter()
                    .map(move |(k, slot)| (*h, EntryRef::State(k, slot)))
            })
            .chain(self.timers.iter().flat_map(|(&(t, h), keys)| {
                keys.iter()
                    .map(move |(k, ttl, floor)| (h, EntryRef::Timer(k, t, *ttl, *floor)))
            }))
    }

    fn entry_count(&self) -> usize {
        self.states.values().map(Vec::len).sum::<usize>() + self.timer_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_pop_by_time_and_a_keys_function_timer_before_its_ttl_timer() {
        let mut store: KeyedStore<String, u32> = KeyedStore::new(0);
        let (a, b) = ("a".to_string(), "b".to_string());
        // Inserted out of order; the TTL timer of `a` at 20 before its
        // function timer at 20; a repeated timer is kept once.
        store.insert_timer(20, 7, &a, true, 0);
        store.insert_timer(30, 9, &b, false, 0);
        store.insert_timer(20, 7, &a, false, 0);
        store.insert_timer(20, 7, &a, false, 0);
        store.insert_timer(10, 9, &b, true, 0);
        assert_eq!(store.entry_count(), 4);
        assert_eq!(store.first_timer_ms(), Some(10));
        // TTL timers emit nothing and hold nothing back.
        assert_eq!(store.first_emit_ms(), Some(19));
        let popped: Vec<(u64, u64, String, bool, u64)> =
            (0..4).map(|_| store.pop_timer()).collect();
        assert_eq!(
            popped,
            vec![
                (10, 9, b.clone(), true, 9),
                (20, 7, a.clone(), false, 19),
                (20, 7, a.clone(), true, 19),
                (30, 9, b.clone(), false, 29),
            ]
        );
        assert_eq!((store.entry_count(), store.first_timer_ms()), (0, None));
        assert_eq!(store.first_emit_ms(), None);
    }

    #[test]
    fn timer_outputs_leave_rounded_down_but_not_before_the_registration() {
        let mut store: KeyedStore<String, u32> = KeyedStore::new(100);
        let k = "k".to_string();
        // t − 1 = 1 249 rounds down to 1 200; registered at 1 230 it leaves
        // at 1 230; registered at the timer's own time, at t − 1.
        assert_eq!(store.emit_ms(1_250, 0), 1_200);
        assert_eq!(store.emit_ms(1_250, 1_230), 1_230);
        assert_eq!(store.emit_ms(1_250, 1_250), 1_249);
        store.insert_timer(1_250, 1, &k, false, 1_230);
        assert_eq!(store.first_emit_ms(), Some(1_230));
        // The same timer registered earlier again: the earlier registration.
        store.insert_timer(1_250, 1, &k, false, 1_000);
        assert_eq!(store.first_emit_ms(), Some(1_200));
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.pop_timer().4, 1_200);
        assert_eq!(store.first_emit_ms(), None);
    }

    #[test]
    fn timers_of_colliding_keys_are_kept_apart() {
        let mut store: KeyedStore<String, u32> = KeyedStore::new(0);
        let (a, b) = ("a".to_string(), "b".to_string());
        store.insert_timer(5, 1, &a, false, 2);
        store.insert_timer(5, 1, &b, false, 3);
        let entries: Vec<String> = store
            .entries::<()>()
            .map(|(h, e)| match e {
                EntryRef::Timer(k, t, ttl, floor) => format!("{h} {k} {t} {ttl} {floor}"),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(entries, ["1 a 5 false 2", "1 b 5 false 3"]);
        let mut keys = vec![store.pop_timer().2, store.pop_timer().2];
        keys.sort();
        assert_eq!(keys, [a, b]);
    }
}
