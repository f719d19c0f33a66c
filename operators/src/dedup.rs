//! Deduplication by key with a time-to-live on event time.
//!
//! # Semantics
//!
//! Of the records of one key, the **first by event time** is kept and the
//! others are dropped until the watermark reaches `first event time + ttl`;
//! after that the key is forgotten and its next record is a first again.
//! Ties on event time go to the record whose encoding (bincode) is smallest,
//! so the winner never depends on arrival order or parallelism.
//!
//! A record is held until the watermark passes its event time (no record
//! with an earlier event time can then arrive on time), so kept records
//! leave about one watermark step after they arrive, with their own event
//! time, at a timestamp rounded down to [`EMIT_GRANULARITY_MS`] but not
//! before the record's delivery time (a record on time stays on time
//! downstream). A record that arrives behind the watermark competes only with the
//! records still held for its key, and is dropped if its key already has a
//! winner. Built on [`keyed_process`](crate::keyed_process), so the state
//! takes part in checkpoints and restores with any worker count.

use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::CheckpointGraph;
use streamforge_dataflow::{EventTime, Time};

use crate::keyed_process::{KeyedProcess, KeyedProcessFunction, ProcessContext, ProcessSpec};

/// The state of one key.
#[derive(Serialize, Deserialize)]
pub struct DedupState<D> {
    /// Event time of the last record kept: records of the key with an event
    /// time before it plus the TTL are duplicates.
    pub kept_ms: Option<EventTime>,
    /// Records waiting for the watermark to pass their event time:
    /// `(event time, encoding, record)`.
    pub candidates: Vec<(EventTime, Vec<u8>, D)>,
}

/// The dedup process function (see the module docs).
pub struct Dedup<D> {
    /// How long a key is remembered after the record kept, ms of event time.
    pub ttl_ms: u64,
    _record: PhantomData<fn() -> D>,
}

/// Kept records leave at their event time rounded down to this many ms
/// (see [`ProcessSpec::emit_granularity_ms`]): one timestamp per 100 ms of
/// event time instead of one per record, downstream windows closing at most
/// 100 ms of event time later.
pub const EMIT_GRANULARITY_MS: u64 = 100;

impl<D> Dedup<D> {
    /// Dedup remembering keys for `ttl_ms` of event time.
    pub fn new(ttl_ms: u64) -> Self {
        Dedup {
            ttl_ms,
            _record: PhantomData,
        }
    }

    /// The keyed process options of a dedup.
    pub fn spec() -> ProcessSpec {
        ProcessSpec {
            emit_granularity_ms: EMIT_GRANULARITY_MS,
            ..ProcessSpec::default()
        }
    }

    /// Forgets the kept record once the decision time `now` (a record's
    /// delivery time, a timer's time − 1) reaches its TTL.
    fn expire(&self, s: &mut DedupState<D>, now: u64) {
        if s.kept_ms
            .is_some_and(|k| now >= k.saturating_add(self.ttl_ms))
        {
            s.kept_ms = None;
        }
    }

    fn duplicate(&self, kept: Option<EventTime>, e: EventTime) -> bool {
        kept.is_some_and(|k| e < k.saturating_add(self.ttl_ms))
    }
}

impl<K, D: Serialize + DeserializeOwned + 'static> KeyedProcessFunction<K, D> for Dedup<D> {
    type State = DedupState<D>;
    type Out = D;

    fn process_element(
        &self,
        _key: &K,
        state: &mut Option<DedupState<D>>,
        record: D,
        e: EventTime,
        ctx: &mut ProcessContext<'_, D>,
    ) {
        let s = state.get_or_insert_with(|| DedupState {
            kept_ms: None,
            candidates: Vec::new(),
        });
        self.expire(s, ctx.current_ms);
        if self.duplicate(s.kept_ms, e) {
            return;
        }
        // The encoding breaks ties on event time; computed when needed.
        s.candidates.push((e, Vec::new(), record));
        // Decided once the watermark is past the record's event time.
        ctx.register_timer(e.max(ctx.current_ms) + 1);
    }

    fn on_timer(
        &self,
        _key: &K,
        state: &mut Option<DedupState<D>>,
        ctx: &mut ProcessContext<'_, D>,
    ) {
        let Some(s) = state.as_mut() else { return };
        let now = ctx.current_ms;
        // A timer at T decides at T − 1: the watermark has just passed it.
        let decided = now.saturating_sub(1);
        self.expire(s, decided);
        if s.candidates.len() > 1 {
            for c in s.candidates.iter_mut().filter(|c| c.1.is_empty()) {
                c.1 = bincode::serialize(&c.2).unwrap_or_default();
            }
            s.candidates
                .sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        }
        let due = s.candidates.partition_point(|c| c.0 < now);
        for (e, _, record) in s.candidates.drain(..due) {
            if !self.duplicate(s.kept_ms, e) {
                ctx.output(e, record);
                s.kept_ms = Some(e);
            }
        }
        self.expire(s, decided);
        match s.kept_ms {
            // The kept record is forgotten when the watermark reaches its
            // TTL, whether or not other records of the key wait.
            Some(k) => ctx.register_timer(k.saturating_add(self.ttl_ms) + 1),
            None if s.candidates.is_empty() => *state = None,
            None => {}
        }
    }
}

/// Extension trait: `stream.dedup(..)`.
pub trait DedupByKey<'scope, D: ExchangeData> {
    /// Keeps the first record by event time of each key for `ttl_ms` (see
    /// the module docs); returns the kept records.
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
    /// use streamforge_operators::dedup::DedupByKey;
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    ///
    /// // (order id, event time): order 1 twice (the earlier wins, although it
    /// // arrives second), and again after the 10 s TTL.
    /// let out = streamforge_dataflow::time::example(|scope| {
    ///     let data: Vec<(u64, (u32, u64))> = [(1, 2_000), (1, 1_500), (2, 3_000), (1, 25_000)]
    ///         .into_iter().map(|(k, t)| (t, (k, t))).collect();
    ///     let (s, _) = partitioned_source(scope, SourceSettings::new("src", 1_000), 1,
    ///         move |_| vec_partition("p", data.clone()), None);
    ///     s.dedup("dedup", |r: &(u32, u64)| &r.0, |r: &(u32, u64)| r.1, 10_000).capture()
    /// });
    /// let mut kept: Vec<(u32, u64)> = out.extract().into_iter()
    ///     .flat_map(|(_, v)| v).map(|(_, r)| r).collect();
    /// kept.sort();
    /// assert_eq!(kept, vec![(1, 1_500), (1, 25_000), (2, 3_000)]);
    /// ```
    fn dedup<K, KF, TF>(
        self,
        name: &str,
        key: KF,
        event_time_ms: TF,
        ttl_ms: u64,
    ) -> Stream<'scope, Time, Vec<(EventTime, D)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;

    /// [`DedupByKey::dedup`] taking part in checkpoints.
    fn dedup_checkpointed<K, KF, TF>(
        self,
        name: &str,
        key: KF,
        event_time_ms: TF,
        ttl_ms: u64,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Stream<'scope, Time, Vec<(EventTime, D)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static;
}

impl<'scope, D: ExchangeData> DedupByKey<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn dedup<K, KF, TF>(
        self,
        name: &str,
        key: KF,
        event_time_ms: TF,
        ttl_ms: u64,
    ) -> Stream<'scope, Time, Vec<(EventTime, D)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        self.keyed_process(
            name,
            Dedup::<D>::spec(),
            key,
            event_time_ms,
            Dedup::new(ttl_ms),
        )
    }

    fn dedup_checkpointed<K, KF, TF>(
        self,
        name: &str,
        key: KF,
        event_time_ms: TF,
        ttl_ms: u64,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Stream<'scope, Time, Vec<(EventTime, D)>>
    where
        K: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
        KF: for<'a> Fn(&'a D) -> &'a K + Clone + 'static,
        TF: Fn(&D) -> u64 + 'static,
    {
        self.keyed_process_checkpointed(
            name,
            Dedup::<D>::spec(),
            key,
            event_time_ms,
            Dedup::new(ttl_ms),
            checkpoints,
        )
    }
}
