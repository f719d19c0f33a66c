//! Keyed event-time **session windows** (gap-based, merging) with allowed
//! lateness and a late side output.
//!
//! # Semantics
//!
//! For a record with event time `e` delivered at `(epoch, t)` (`t` is the
//! watermark of its source partition when it was read, or less; see
//! `streamforge_dataflow::source`), with gap `g` and allowed lateness `L`:
//!
//! * Its **proto-session** is `[e, e + g)`. Sessions of one key that overlap or
//!   touch merge (Flink's `TimeWindow.intersects`: `a.start <= b.end && a.end >=
//!   b.start`): the merged session is the union interval and the accumulators are
//!   combined with [`AggregateFunction::merge`].
//! * It is **late** — it goes to the late output and counts nowhere else — when
//!   `e + g + L <= t`. The decision depends on `(e, t)` only, so late records are
//!   emitted as soon as they arrive, at their own timestamp.
//! * It never merges into a session `S` with `S.end + L <= t`: `S` has fired,
//!   logically, at `t` (whether or not the operator has emitted it yet). The
//!   non-fired sessions it touches merge with it, and with each other through it.
//! * A session **fires once**, with its final value, when `min(input watermark,
//!   smallest t of the pending records) >= end + L`; its state is then dropped.
//!   Its row is emitted at `(oldest open epoch, end + L)`, and the result
//!   capabilities are held back to the next possible firing time, so the times
//!   of the rows do not depend on how far the watermark jumped.
//!
//! ## Records are applied in delivery-time order
//!
//! The "never merges into a fired session" rule depends on the order in which
//! records are applied. To make it deterministic the operator **applies records
//! in increasing `t`**: a non-late record is put into a per-worker pending buffer
//! and applied once no record with a smaller `t` can still arrive (every element
//! of the input frontier has `event_ms >= t`). Before the records at `t` are
//! applied, every session with `end + L <= t` is fired. Records with equal `t`
//! are applied in any order; that is harmless: the sessions left after firing
//! all have `end + L > t`, and applying a record at `t` only ever grows a session
//! (its end is at least `e + g`, and `e + g + L > t` as the record is not late),
//! so no session fires between two records at the same `t`, and merging among
//! non-fired sessions is the union of intervals under "touches" — the connected
//! components of the intervals, which do not depend on the order (nor do the
//! accumulators, for commutative and associative aggregates).
//!
//! As the delivery times are fixed by the sources (a partition's watermark
//! depends only on the partition's own order of records), the rows and the late
//! records are the same for any number of workers or processes, and with or
//! without epochs.
//!
//! ## Epochs and checkpoints
//!
//! Checkpoint `c` is exactly the state after all records of epochs `<= c`. To
//! keep the exact `t` order across epochs, while the oldest open input epoch is
//! `c` the operator applies pending records in `t` order but stops before the
//! first pending record of an epoch `> c`: with `t_block` the smallest `t` of
//! the pending records of epochs `> c`, only records with `t < t_block` are
//! applied. When epoch `c` completes (see
//! [`checkpoint_to_write`](streamforge_dataflow::checkpoint::checkpoint_to_write))
//! the operator writes its part of checkpoint `c` — its sessions plus its
//! pending (not yet applied) records of epochs `<= c`, by key group — and only
//! then applies and fires further. The sessions then hold only records of
//! epochs `<= c`, applied as a prefix in `t` order of all records; pending
//! records of epochs `> c` are not in the part (the sources deliver them again
//! after a restore, at the same `t`). A restore loads the owned key groups —
//! sessions and pending records — and the pending records are applied in `t`
//! order together with the arriving ones, so a restored run produces exactly the
//! rows of an uninterrupted one. A fired row is emitted at the oldest open
//! epoch: a session is either in snapshot `c` or its row is in an epoch `<= c`.
//!
//! At the end of the input everything is applied and fired, and the final part
//! is written — except when a savepoint was requested: then the sessions and
//! the pending records stay open (not fired) in the final part, as in
//! [`WindowAggregate`](crate::WindowAggregate).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
    checkpoint_to_write, CheckpointContext, CheckpointGraph, CheckpointMsg, FINAL,
};
use streamforge_dataflow::hash::key_group;
use streamforge_dataflow::keyed_state;
use streamforge_dataflow::stable_hash;
use streamforge_dataflow::time::{emit_at, hold_back, Epoch, FrontierView, Time};

use crate::aggregate::AggregateFunction;
use crate::assigner::Window;
use crate::window_aggregate::{WindowOutputs, WindowResult};

/// The session definition: the inactivity gap plus allowed lateness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// A session closes after this many ms without records (> 0).
    pub gap_ms: u64,
    /// How long after its `end` a session still accepts records, in ms.
    pub allowed_lateness_ms: u64,
}

impl SessionSpec {
    /// Sessions with a gap of `gap_ms` and no allowed lateness.
    ///
    /// # Panics
    /// If `gap_ms` is 0.
    pub fn with_gap(gap_ms: u64) -> Self {
        assert!(gap_ms > 0, "session gap must be > 0");
        SessionSpec {
            gap_ms,
            allowed_lateness_ms: 0,
        }
    }
    /// Sets the allowed lateness in ms.
    pub fn allowed_lateness_ms(mut self, ms: u64) -> Self {
        self.allowed_lateness_ms = ms;
        self
    }
}

/// Extension trait: `stream.session_window_aggregate(..)`.
pub trait SessionWindowAggregate<'scope, D: ExchangeData> {
    /// Aggregates `self` per key and event-time session (see the [module
    /// documentation](self) for the exact rules).
    ///
    /// * `key` borrows the key of a record; `event_time_ms` reads its event time.
    /// * Returns `(results, late)`: one [`WindowResult`] per fired session and
    ///   key (`window` is the session's `[first event, last event + gap)`), and
    ///   the records that were too late (`e + gap + lateness <= t`).
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
    /// use streamforge_operators::{Count, SessionSpec, SessionWindowAggregate};
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    ///
    /// let (rows, late) = streamforge_dataflow::time::example(|scope| {
    ///     // Records are (key, event time); 1 s out-of-orderness.
    ///     let data: Vec<(u64, (u64, u64))> = [1_000, 3_000, 10_000, 7_500, 20_000, 500]
    ///         .into_iter().map(|t| (t, (7, t))).collect();
    ///     let (spans, _dead) = partitioned_source(
    ///         scope, SourceSettings::new("src", 1_000), 1,
    ///         move |_| vec_partition("p", data.clone()), None);
    ///     // 5 s gap, 2 s allowed lateness.
    ///     let (rows, late) = spans.session_window_aggregate(
    ///         "sessions", SessionSpec::with_gap(5_000).allowed_lateness_ms(2_000),
    ///         |r: &(u64, u64)| &r.0, |r| r.1, Count);
    ///     let rows = rows.map(|r| (r.window.start_ms, r.window.end_ms, r.key, r.value));
    ///     (rows.capture(), late.capture())
    /// });
    /// let mut rows: Vec<_> = rows.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// rows.sort();
    /// // [1000, 8000) and [10 000, 15 000) were separate until 7 500 (read at
    /// // watermark 9 000, before [1000, 8000) fired at 8 000 + 2 000) bridged them.
    /// assert_eq!(rows, vec![(1_000, 15_000, 7, 4), (20_000, 25_000, 7, 1)]);
    /// // 500 arrived at watermark 19 000 ≥ 500 + 5 000 + 2 000: late.
    /// let late: Vec<_> = late.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(late, vec![(7, 500)]);
    /// ```
    fn session_window_aggregate<K, A, KF, TF>(
        self,
        name: &str,
        spec: SessionSpec,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;

    /// [`SessionWindowAggregate::session_window_aggregate`] taking part in
    /// checkpoints: when epoch `c` completes at its input it writes its open
    /// sessions and its pending records of epochs `<= c` (by key group) as its
    /// part of checkpoint `c`; on a restore it loads the key groups this worker
    /// owns from every worker's part.
    ///
    /// # Panics
    /// When the restored state cannot be read (a corrupt checkpoint is detected
    /// before the run starts; this is a defect or a changed job).
    #[allow(clippy::too_many_arguments)]
    fn session_window_aggregate_checkpointed<K, A, KF, TF>(
        self,
        name: &str,
        spec: SessionSpec,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;
}

impl<'scope, D: ExchangeData> SessionWindowAggregate<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn session_window_aggregate<K, A, KF, TF>(
        self,
        name: &str,
        spec: SessionSpec,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        let (results, late, _) =
            session_core(self, name, spec, key, event_time_ms, aggregate, None);
        (results, late)
    }

    fn session_window_aggregate_checkpointed<K, A, KF, TF>(
        self,
        name: &str,
        spec: SessionSpec,
        key: KF,
        event_time_ms: TF,
        aggregate: A,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> WindowOutputs<'scope, K, A::Out, D>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        A: AggregateFunction<D>,
        A::Out: 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        let ctx = checkpoints.context().clone();
        let (results, late, acks) =
            session_core(self, name, spec, key, event_time_ms, aggregate, Some(ctx));
        checkpoints.add_writer(acks);
        (results, late)
    }
}

/// One open session of a key.
struct Session<Acc> {
    /// Unique per worker: names the session in the firing index.
    id: u64,
    start: u64,
    end: u64,
    acc: Acc,
}

/// The open sessions of one key, sorted by start and pairwise separated
/// (`a.end < b.start`: touching sessions would have merged).
struct KeySessions<K, Acc> {
    hash: u64,
    key: K,
    sessions: Vec<Session<Acc>>,
}

/// An entry of this operator's checkpoint part (by key group of the key hash).
#[derive(Serialize, Deserialize)]
enum StateEntry<K, A, D> {
    /// An open session.
    Session {
        key: K,
        start: u64,
        end: u64,
        acc: A,
    },
    /// A record not yet applied, with its delivery time.
    Pending { t: u64, record: D },
}

/// Fired sessions: `(end + lateness, row)`.
type Fired<K, O> = Vec<(u64, WindowResult<K, O>)>;

/// The per-worker state and rules of the operator.
struct SessionState<K, D, A: AggregateFunction<D>, KF, TF> {
    key: KF,
    event_time_ms: TF,
    aggregate: A,
    gap: u64,
    lateness: u64,
    keys: HashTable<KeySessions<K, A::Acc>>,
    /// `(end + lateness, session id, key hash)` of every open session.
    by_fire: BTreeSet<(u64, u64, u64)>,
    next_id: u64,
    open_sessions: usize,
    /// Non-late records not applied yet: epoch → delivery time → records.
    /// No inner map is empty.
    pending: BTreeMap<Epoch, BTreeMap<u64, Vec<D>>>,
    pending_len: usize,
}

impl<K, D, A, KF, TF> SessionState<K, D, A, KF, TF>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    D: Serialize + DeserializeOwned,
    A: AggregateFunction<D>,
    KF: for<'a> Fn(&'a D) -> &'a K,
    TF: Fn(&D) -> u64,
{
    fn new(key: KF, event_time_ms: TF, aggregate: A, spec: SessionSpec) -> Self {
        SessionState {
            key,
            event_time_ms,
            aggregate,
            gap: spec.gap_ms,
            lateness: spec.allowed_lateness_ms,
            keys: HashTable::new(),
            by_fire: BTreeSet::new(),
            next_id: 0,
            open_sessions: 0,
            pending: BTreeMap::new(),
            pending_len: 0,
        }
    }

    fn fire_time(&self, end: u64) -> u64 {
        end.saturating_add(self.lateness)
    }

    /// Whether a record with event time `e` delivered at `t` is late.
    fn is_late(&self, e: u64, t: u64) -> bool {
        self.fire_time(e.saturating_add(self.gap)) <= t
    }

    fn push_pending(&mut self, epoch: Epoch, t: u64, record: D) {
        self.pending
            .entry(epoch)
            .or_default()
            .entry(t)
            .or_default()
            .push(record);
        self.pending_len += 1;
    }

    /// The smallest delivery time of the pending records, and its epoch.
    fn next_pending(&self) -> Option<(u64, Epoch)> {
        self.pending
            .iter()
            .filter_map(|(e, m)| m.first_key_value().map(|(t, _)| (*t, *e)))
            .min()
    }

    /// The smallest delivery time of the pending records of epochs after `oldest`.
    fn block(&self, oldest: Epoch) -> Option<u64> {
        self.pending
            .range(oldest.saturating_add(1)..)
            .filter_map(|(_, m)| m.first_key_value().map(|(t, _)| *t))
            .min()
    }

    fn take_pending(&mut self, epoch: Epoch, t: u64) -> Vec<D> {
        let by_t = self.pending.get_mut(&epoch).expect("pending epoch");
        let records = by_t.remove(&t).unwrap_or_default();
        if by_t.is_empty() {
            self.pending.remove(&epoch);
        }
        self.pending_len -= records.len();
        records
    }

    /// Adds a restored session (separated from the key's other sessions).
    fn insert_session(&mut self, hash: u64, key: K, start: u64, end: u64, acc: A::Acc) {
        let id = self.next_id;
        self.next_id += 1;
        let ks = self
            .keys
            .entry(
                hash,
                |ks| ks.hash == hash && ks.key == key,
                |ks: &KeySessions<K, A::Acc>| ks.hash,
            )
            .or_insert_with(|| KeySessions {
                hash,
                key: key.clone(),
                sessions: Vec::new(),
            })
            .into_mut();
        let pos = ks.sessions.partition_point(|s| s.start < start);
        ks.sessions.insert(
            pos,
            Session {
                id,
                start,
                end,
                acc,
            },
        );
        self.by_fire
            .insert((end.saturating_add(self.lateness), id, hash));
        self.open_sessions += 1;
    }

    /// Applies one non-late record; every session with `end + lateness <= t`
    /// (its delivery time) has been fired before.
    fn apply(&mut self, record: &D) {
        let k = (self.key)(record);
        let h = stable_hash(k);
        let e = (self.event_time_ms)(record);
        let (p_start, p_end) = (e, e.saturating_add(self.gap));
        let lateness = self.lateness;
        let id = self.next_id;
        self.next_id += 1;
        let ks = self
            .keys
            .entry(
                h,
                |ks| ks.hash == h && ks.key == *k,
                |ks: &KeySessions<K, A::Acc>| ks.hash,
            )
            .or_insert_with(|| KeySessions {
                hash: h,
                key: k.clone(),
                sessions: Vec::new(),
            })
            .into_mut();
        let sessions = &mut ks.sessions;
        // Sessions are sorted and separated, so their ends are sorted too and
        // the sessions touching [p_start, p_end) are the range i..j.
        let i = sessions.partition_point(|s| s.end < p_start);
        let j = i + sessions[i..].partition_point(|s| s.start <= p_end);
        let (start, end, acc) = if i == j {
            let mut acc = self.aggregate.create_accumulator();
            self.aggregate.add(&mut acc, record);
            self.open_sessions += 1;
            (p_start, p_end, acc)
        } else {
            let mut merged = sessions.drain(i..j);
            let first = merged.next().expect("a touching session");
            self.by_fire
                .remove(&(first.end.saturating_add(lateness), first.id, h));
            let (mut start, mut end, mut acc) = (first.start, first.end, first.acc);
            for s in merged {
                self.by_fire
                    .remove(&(s.end.saturating_add(lateness), s.id, h));
                self.aggregate.merge(&mut acc, s.acc);
                self.open_sessions -= 1;
                start = start.min(s.start);
                end = end.max(s.end);
            }
            self.aggregate.add(&mut acc, record);
            (start.min(p_start), end.max(p_end), acc)
        };
        sessions.insert(
            i,
            Session {
                id,
                start,
                end,
                acc,
            },
        );
        self.by_fire.insert((end.saturating_add(lateness), id, h));
    }

    /// Fires every session with `end + lateness <= limit`, in that order.
    fn fire_upto(&mut self, limit: u64, out: &mut Fired<K, A::Out>) {
        while let Some(&(at, id, h)) = self.by_fire.first() {
            if at > limit {
                break;
            }
            self.by_fire.pop_first();
            let Ok(mut entry) = self.keys.find_entry(h, |ks| {
                ks.hash == h && ks.sessions.iter().any(|s| s.id == id)
            }) else {
                debug_assert!(false, "session {id} of the firing index not found");
                continue;
            };
            let ks = entry.get_mut();
            let pos = ks
                .sessions
                .iter()
                .position(|s| s.id == id)
                .expect("found above");
            let s = ks.sessions.remove(pos);
            let key = if ks.sessions.is_empty() {
                entry.remove().0.key
            } else {
                ks.key.clone()
            };
            self.open_sessions -= 1;
            out.push((
                at,
                WindowResult {
                    window: Window {
                        start_ms: s.start,
                        end_ms: s.end,
                    },
                    key,
                    value: self.aggregate.get_result(&s.acc),
                },
            ));
        }
    }

    /// Applies the pending records that are due, in delivery-time order, and
    /// fires the sessions that are complete.
    ///
    /// `watermark`: the input watermark (`None`: the input ended); `oldest`:
    /// the oldest open epoch (records of later epochs block application).
    fn advance(
        &mut self,
        watermark: Option<u64>,
        oldest: Option<Epoch>,
        out: &mut Fired<K, A::Out>,
    ) {
        let block = oldest.and_then(|c| self.block(c));
        while let Some((t, epoch)) = self.next_pending() {
            // A record with a smaller t can still arrive, or a record of a
            // later epoch comes first (checkpoint c must not see it).
            if watermark.is_some_and(|w| t > w) || block.is_some_and(|b| t >= b) {
                break;
            }
            self.fire_upto(t, out);
            for record in self.take_pending(epoch, t) {
                self.apply(&record);
            }
        }
        let limit = match (watermark, self.next_pending()) {
            (None, None) => u64::MAX,
            (Some(w), None) => w,
            (None, Some((t, _))) => t,
            (Some(w), Some((t, _))) => w.min(t),
        };
        self.fire_upto(limit, out);
    }

    /// The next time a session can fire (the result capabilities are held there).
    fn hold(&self) -> u64 {
        let next_fire = self.by_fire.first().map(|f| f.0);
        let next_record = self.next_pending().map(|p| p.0);
        next_fire
            .into_iter()
            .chain(next_record)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// This worker's part: the open sessions and the pending records of
    /// epochs `<= upto` (all: `None`), by key group
    /// ([`streamforge_dataflow::keyed_state`]).
    fn snapshot(&self, upto: Option<Epoch>) -> Vec<u8> {
        let sessions = self.keys.iter().flat_map(|ks| {
            ks.sessions.iter().map(move |s| {
                (
                    ks.hash,
                    StateEntry::Session {
                        key: &ks.key,
                        start: s.start,
                        end: s.end,
                        acc: &s.acc,
                    },
                )
            })
        });
        let key = &self.key;
        let pending = self
            .pending
            .iter()
            .filter(|(e, _)| upto.is_none_or(|c| **e <= c))
            .flat_map(|(_, by_t)| by_t.iter())
            .flat_map(|(t, records)| {
                records.iter().map(move |record| {
                    (
                        stable_hash(key(record)),
                        StateEntry::Pending { t: *t, record },
                    )
                })
            });
        keyed_state::encode_groups(sessions.chain(pending))
    }

    /// Loads a restored entry; pending records get epoch `epoch` (the
    /// restored checkpoint's).
    fn restore(&mut self, entry: StateEntry<K, A::Acc, D>, epoch: Epoch) {
        match entry {
            StateEntry::Session {
                key,
                start,
                end,
                acc,
            } => {
                let h = stable_hash(&key);
                self.insert_session(h, key, start, end, acc);
            }
            StateEntry::Pending { t, record } => self.push_pending(epoch, t, record),
        }
    }
}

/// The outputs of the operator: results, late records, checkpoint messages.
type CoreOutputs<'scope, K, O, D> = (
    Stream<'scope, Time, Vec<WindowResult<K, O>>>,
    Stream<'scope, Time, Vec<D>>,
    Stream<'scope, Time, Vec<CheckpointMsg>>,
);

fn session_core<'scope, D, K, A, KF, TF>(
    stream: Stream<'scope, Time, Vec<D>>,
    name: &str,
    spec: SessionSpec,
    key: KF,
    event_time_ms: TF,
    aggregate: A,
    ctx: Option<Arc<CheckpointContext>>,
) -> CoreOutputs<'scope, K, A::Out, D>
where
    D: ExchangeData,
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
    A: AggregateFunction<D>,
    A::Out: 'static,
    KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
    TF: Fn(&D) -> u64 + 'static,
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
    let part_name = format!("{name}-w{index}");
    let part_prefix = format!("{name}-w");
    let metrics = streamforge_dataflow::metrics::operator_metrics(name, index);

    builder.build(move |mut caps| {
        let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
        let mut late_caps = CapabilitySet::from_elem(caps.pop().expect("late output"));
        let mut result_caps = CapabilitySet::from_elem(caps.pop().expect("results output"));
        let mut state = SessionState::new(key, event_time_ms, aggregate, spec);
        if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
            let started = std::time::Instant::now();
            let epoch = restore.id();
            keyed_state::restore_owned(restore, &part_prefix, index, peers, |entry| {
                state.restore(entry, epoch)
            })
            .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
            tracing::info!(
                operator = %part_prefix,
                worker = index,
                checkpoint = restore.id(),
                sessions = state.open_sessions,
                pending = state.pending_len,
                ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "session state restored"
            );
        }
        let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
        let mut fired: Fired<K, A::Out> = Vec::new();
        // Late records of this activation, with the capability to emit them at.
        let mut late: Vec<(Capability<Time>, Vec<D>)> = Vec::new();
        let mut last_oldest: Option<Epoch> = Some(0);

        move |frontiers| {
            let view = FrontierView::of(&frontiers[0]);
            let oldest = view.oldest_epoch;
            let epoch_moved = oldest != last_oldest;
            last_oldest = oldest;

            // Arrivals: late records go out now; the others wait in `pending`
            // until they can be applied in delivery-time order. (Every queued
            // message is at or after the frontier: of an epoch >= `oldest`.)
            input.for_each_time(|cap, data| {
                let t = *cap.time();
                let mut late_batch = Vec::new();
                for batch in data {
                    metrics.records_in.fetch_add(batch.len() as u64, Relaxed);
                    for d in batch.drain(..) {
                        if state.is_late((state.event_time_ms)(&d), t.event_ms) {
                            late_batch.push(d);
                        } else {
                            state.push_pending(t.epoch, t.event_ms, d);
                        }
                    }
                }
                if !late_batch.is_empty() {
                    late.push((cap.retain(1), late_batch));
                }
            });

            // Writes this worker's part of checkpoint `id`.
            let mut write_part =
                |id: u64, upto: Option<Epoch>, state: &SessionState<_, _, _, _, _>| {
                    if let Some(ctx) = ctx.as_ref() {
                        let msg =
                            ctx.write_part(id, part_name.clone(), Some(&state.snapshot(upto)));
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                };
            if epoch_moved {
                // Epoch c = oldest - 1 is complete, and nothing of a later
                // epoch has been applied (the block): write c before
                // applying or firing anything more.
                if let Some(c) = checkpoint_to_write(oldest, first_epoch) {
                    write_part(c, Some(c), &state);
                }
            }

            // Stopping for a savepoint: keep the sessions and the pending
            // records open (they are in the final part), apply and fire nothing.
            let stopping = oldest.is_none() && ctx.as_ref().is_some_and(|c| c.stop_requested());
            if !stopping {
                state.advance(view.watermark_ms, oldest, &mut fired);
            }

            if !late.is_empty() {
                let mut handle = late_out.activate();
                for (cap, mut batch) in late.drain(..) {
                    handle.session(&cap).give_container(&mut batch);
                }
            }
            if !fired.is_empty() {
                // A session's row is emitted at (oldest epoch, end + allowed
                // lateness); the result capabilities are held back to the next
                // firing time (below), so this is reachable.
                metrics.records_out.fetch_add(fired.len() as u64, Relaxed);
                let emit = emit_at(&result_caps, oldest);
                let mut handle = results_out.activate();
                let mut rows = fired.drain(..).peekable();
                while let Some((at, row)) = rows.next() {
                    let cap = result_caps.delayed(&emit(at));
                    let mut session = handle.session(&cap);
                    session.give(row);
                    while let Some((_, row)) = rows.next_if(|(a, _)| *a == at) {
                        session.give(row);
                    }
                }
            }
            if epoch_moved && oldest.is_none() {
                // The input ended (or stopped): the last checkpoint.
                write_part(FINAL, None, &state);
            }
            metrics
                .state_entries
                .store((state.open_sessions + state.pending_len) as i64, Relaxed);
            hold_back(
                &mut result_caps,
                frontiers[0].frontier().iter(),
                state.hold(),
            );
            late_caps.downgrade(frontiers[0].frontier().iter());
            ack_caps.downgrade(frontiers[0].frontier().iter());
        }
    });
    (results, late, acks)
}
