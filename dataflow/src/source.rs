//! The partitioned source core: replayable partitions in, a watermarked stream out.
//!
//! Every connector (file, generator, Kafka) implements [`PartitionReader`]; this
//! module owns what they have in common, so that all of them share one definition
//! of the watermark:
//!
//! * partition `i` of `n` is read by worker `i % peers` of the whole cluster;
//! * each partition has a [`PartitionWatermark`] (bounded out-of-orderness);
//! * a record that is at or ahead of its partition's watermark is emitted at
//!   `(epoch, W_batch)`, the watermark when its batch started (≤ its own time);
//!   a record *behind* the watermark is emitted exactly at `(epoch, W)`, the
//!   watermark of its partition when it was read — so an operator can decide
//!   lateness from the record's timestamp alone, identically for any number of
//!   workers or processes;
//! * the worker's capability is held at the minimum watermark of its unfinished
//!   partitions, and the partition with the lowest watermark is read first, so
//!   partitions advance together;
//! * malformed input becomes a [`DeadLetter`] on the second output.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};
use timely::PartialOrder;

use crate::checkpoint::{CheckpointContext, CheckpointGraph, CheckpointMsg, PartitionPosition};
use crate::dead_letter::DeadLetter;
use crate::flow_control::{FlowControl, Gate};
use crate::time::{time, Epoch, EventTime, Time, TimeSummary};
use crate::watermark::PartitionWatermark;

/// One item read from a partition.
#[derive(Debug)]
pub enum SourceItem<D> {
    /// A decoded record with its event time in milliseconds.
    Record {
        /// Event time in ms since the Unix epoch.
        event_time_ms: EventTime,
        /// The record.
        record: D,
    },
    /// Input that could not be decoded.
    DeadLetter(DeadLetter),
}

/// What a partition reader has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// More input is available now.
    More,
    /// No input right now; ask again after the given delay (live sources).
    Idle(Duration),
    /// The partition is exhausted.
    Finished,
}

/// A replayable partition of a source.
pub trait PartitionReader<D> {
    /// Appends up to `max_items` items to `out` and says what is left.
    ///
    /// # Errors
    /// An I/O or connector failure that is not a property of one record (those are
    /// dead letters). The source treats it as fatal: the job stops (fail-stop) so
    /// that it can be restarted from a checkpoint, and nothing is silently lost.
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>>;

    /// A name for logs and dead letters (a path, `topic/partition`).
    fn describe(&self) -> String;

    /// Called once, before the first read, with a waker that reschedules the
    /// source. Live readers call it when data arrives (e.g. from rdkafka's
    /// non-empty-queue callback) so an idle source needs no polling loop.
    fn set_waker(&mut self, _waker: Waker) {}

    /// Bytes read so far (for the in-flight budget of flow control);
    /// `None`: the source counts each record as its in-memory size.
    fn bytes_read(&self) -> Option<u64> {
        None
    }

    /// Flow control paused (`true`) or resumed (`false`) this partition.
    /// The source stops calling [`PartitionReader::read_batch`] as soon as
    /// it holds a partition back, whatever the reader does; it pauses the
    /// reader once the hold has lasted [`PAUSE_READER_AFTER`], so live
    /// readers stop fetching (Kafka: `pause` in librdkafka) on long holds
    /// without paying a refetch for every short one.
    fn set_paused(&mut self, _paused: bool) {}

    /// Where the reader is, for a checkpoint: `offset` and `line` of
    /// [`PartitionPosition`] (the source core fills in the watermark). Opening
    /// the partition with this position must continue with the next item.
    fn position(&self) -> PartitionPosition;
}

/// Reschedules a source from any thread.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Settings shared by all partitioned sources.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Operator name (shown in logs and metrics).
    pub name: String,
    /// Bounded out-of-orderness of every partition, in ms.
    pub out_of_orderness_ms: u64,
    /// Items read per batch (the granularity of a timely message).
    pub batch_items: usize,
    /// Items read per activation before yielding to other operators.
    pub items_per_activation: usize,
    /// Bump the epoch after every this many items read by a worker. Checkpoints
    /// will drive epochs; this fixed schedule exists so tests can exercise epoch
    /// boundaries (results must not change). `None`: epoch 0 throughout.
    pub epoch_every_items: Option<usize>,
    /// A partition that has had no data for this long stops holding the
    /// watermark back; it rejoins when data returns (its records are then
    /// emitted no earlier than the current watermark). `None`: never idle.
    pub idle_timeout: Option<Duration>,
    /// Read at most this many items per second per worker (replay throttle;
    /// `None`: as fast as possible).
    pub rate_limit: Option<u64>,
    /// Backpressure from the job's stateful operators (`None`: off).
    pub flow: Option<FlowControl>,
}

impl SourceSettings {
    /// Settings with the given name and out-of-orderness and default batching
    /// (1024 items per batch, 8 Ki items per activation: a budget that keeps
    /// the records in flight within the caches, e.g. ~1.5 MB of 5-column rows).
    pub fn new(name: impl Into<String>, out_of_orderness_ms: u64) -> Self {
        SourceSettings {
            name: name.into(),
            out_of_orderness_ms,
            batch_items: 1024,
            items_per_activation: 8 * 1024,
            epoch_every_items: None,
            idle_timeout: None,
            rate_limit: None,
            flow: None,
        }
    }
}

/// Counters a source updates as it runs (shared across the workers of a process).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Records emitted.
    pub records_total: AtomicU64,
    /// Dead letters emitted.
    pub dead_letters_total: AtomicU64,
    /// Records emitted behind their partition's watermark (candidates for lateness).
    pub behind_watermark_total: AtomicU64,
    /// The highest watermark (ms) any worker of this process reached.
    pub watermark_ms: AtomicU64,
}

struct Partition<D> {
    index: u32,
    reader: Box<dyn PartitionReader<D>>,
    watermark: PartitionWatermark,
    finished: bool,
    /// Do not read before this instant (the reader said it has nothing).
    idle_until: Option<Instant>,
    /// Since when the reader has returned no data.
    quiet_since: Option<Instant>,
    /// Flow control holds this partition back (since when).
    held_since: Option<Instant>,
    /// The reader itself is paused ([`PartitionReader::set_paused`]).
    reader_paused: bool,
    /// [`PartitionReader::bytes_read`] at the last batch.
    bytes_seen: u64,
}

impl<D> Partition<D> {
    fn is_idle(&self, now: Instant, timeout: Option<Duration>) -> bool {
        match (self.quiet_since, timeout) {
            (Some(since), Some(t)) => now.duration_since(since) >= t,
            _ => false,
        }
    }
}

/// Builds a source over `partitions` partitions; this worker reads those with
/// `index % peers == worker index`, each created by `open(index)`.
///
/// Returns the record stream and the dead-letter stream.
///
/// # Panics
/// When a reader returns an error (see [`PartitionReader::read_batch`]).
///
/// # Examples
/// ```
/// use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// let (records, dead) = streamforge_dataflow::time::example(|scope| {
///     let parts = vec![vec![(1_000u64, "a"), (3_000, "b"), (500, "late")]];
///     let (s, d) = partitioned_source(
///         scope,
///         SourceSettings::new("src", 1_000),
///         1,
///         move |i| vec_partition(format!("p{i}"), parts[i].clone()),
///         None,
///     );
///     (s.capture(), d.capture())
/// });
/// let records = records.extract();
/// // "late" was read when the partition watermark was 3000 − 1000 = 2000,
/// // so it is emitted at event-time coordinate 2000.
/// let late_time = records.iter().find(|(_, v)| v.contains(&"late")).unwrap().0;
/// assert_eq!(late_time.event_ms, 2_000);
/// assert!(dead.extract().is_empty());
/// ```
pub fn partitioned_source<'scope, D, F>(
    scope: Scope<'scope, Time>,
    settings: SourceSettings,
    partitions: usize,
    mut open: F,
    counters: Option<Arc<SourceCounters>>,
) -> (
    Stream<'scope, Time, Vec<D>>,
    Stream<'scope, Time, Vec<DeadLetter>>,
)
where
    D: 'static,
    F: FnMut(usize) -> Box<dyn PartitionReader<D>> + 'static,
{
    let (records, dead, _) = source_core(
        scope,
        settings,
        partitions,
        move |i, _| open(i),
        counters,
        None,
    );
    (records, dead)
}

/// [`partitioned_source`] taking part in checkpoints: it starts in the epoch
/// after the restored checkpoint, reopens each partition at its saved position
/// (`open(index, Some(position))`) with its saved watermark, moves to a new
/// epoch every checkpoint interval, and reports its partitions' positions to
/// the committer at each epoch change. When a savepoint is requested it
/// freezes at its next cut (reads nothing more, keeps cutting and reporting
/// its positions as frozen) and stops, without finishing its partitions,
/// once the committer has completed the savepoint (see
/// [`crate::checkpoint`]).
pub fn checkpointed_source<'scope, D, F>(
    scope: Scope<'scope, Time>,
    settings: SourceSettings,
    partitions: usize,
    open: F,
    counters: Option<Arc<SourceCounters>>,
    checkpoints: &mut CheckpointGraph<'scope>,
) -> (
    Stream<'scope, Time, Vec<D>>,
    Stream<'scope, Time, Vec<DeadLetter>>,
)
where
    D: 'static,
    F: FnMut(usize, Option<&PartitionPosition>) -> Box<dyn PartitionReader<D>> + 'static,
{
    let ctx = checkpoints.context().clone();
    let (records, dead, positions) =
        source_core(scope, settings, partitions, open, counters, Some(ctx));
    checkpoints.add_positions(positions);
    (records, dead)
}

#[allow(clippy::type_complexity)]
fn source_core<'scope, D, F>(
    scope: Scope<'scope, Time>,
    settings: SourceSettings,
    partitions: usize,
    mut open: F,
    counters: Option<Arc<SourceCounters>>,
    ctx: Option<Arc<CheckpointContext>>,
) -> (
    Stream<'scope, Time, Vec<D>>,
    Stream<'scope, Time, Vec<DeadLetter>>,
    Stream<'scope, Time, Vec<CheckpointMsg>>,
)
where
    D: 'static,
    F: FnMut(usize, Option<&PartitionPosition>) -> Box<dyn PartitionReader<D>> + 'static,
{
    let mut builder = OperatorBuilder::new(settings.name.clone(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(Rc::clone(&info.address));
    let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
    let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let woken_by = woken.clone();
    let waker: Waker = Arc::new(move || {
        woken_by.store(true, Ordering::Release);
        let _ = sync_activator.activate();
    });
    let (records_out, records) = builder.new_output::<Vec<D>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    // Watermark adverts: every active worker announces its watermark to all
    // workers through a feedback edge (+1 ms). A worker whose partitions are all
    // idle lifts its capabilities to the adverts it receives, so it stops holding
    // the cluster's watermark back (Flink's "idle source" status).
    let (advert_loop, adverts_in) = scope.feedback::<Vec<()>>(TimeSummary {
        epoch: 0,
        event_ms: 1,
    });
    let (advert_out, adverts) = builder.new_output::<Vec<()>>();
    let (position_out, positions) = builder.new_output::<Vec<CheckpointMsg>>();
    let mut adverts_in = builder.new_input(adverts_in, Pipeline);
    let mut records_out = OutputBuilder::from(records_out);
    let mut dead_out = OutputBuilder::from(dead_out);
    let mut advert_out = OutputBuilder::from(advert_out);
    let mut position_out = OutputBuilder::from(position_out);
    let index = scope.index();
    let peers = scope.peers();
    let counters = counters.unwrap_or_default();
    let metrics = crate::metrics::operator_metrics(&settings.name, index);
    metrics.is_source.store(true, Ordering::Relaxed);

    builder.build(move |mut caps| {
        let position_cap = caps.pop().expect("position output");
        let advert_cap = caps.pop().expect("advert output");
        let dead_cap = caps.pop().expect("dead-letter output");
        let record_cap = caps.pop().expect("record output");
        let mut caps = Some((record_cap, dead_cap, advert_cap, position_cap));
        let mut advertised: Option<EventTime> = None;
        // The newest advert from the workers (a capability for each output), kept
        // until our own capabilities pass it.
        let mut lift: Option<[Capability<Time>; 4]> = None;
        let saved = ctx
            .as_ref()
            .and_then(|c| c.restore.as_ref())
            .and_then(|r| r.sources.get(&settings.name));
        let mut parts: Vec<Partition<D>> = (0..partitions)
            .filter(|i| i % peers == index)
            .map(|i| {
                let position = saved.and_then(|s| s.get(&(i as u32)));
                let mut reader = open(i, position);
                reader.set_waker(waker.clone());
                // A reopened reader counts from its restored offset.
                let bytes_seen = reader.bytes_read().unwrap_or(0);
                Partition {
                    index: i as u32,
                    reader,
                    watermark: PartitionWatermark::from_max_seen(
                        position.and_then(|p| p.max_seen),
                        settings.out_of_orderness_ms,
                    ),
                    finished: position.is_some_and(|p| p.finished),
                    idle_until: None,
                    quiet_since: None,
                    held_since: None,
                    reader_paused: false,
                    bytes_seen,
                }
            })
            .collect();
        let mut epoch: Epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
        let started = Instant::now();
        let mut emitted = 0u64;
        let checkpointing = ctx.is_some();
        let name = settings.name.clone();
        // Reports every partition's position at the capability's epoch (the
        // epoch that is being left).
        let report = move |parts: &[Partition<D>],
                           frozen: bool,
                           pcap: &Capability<Time>,
                           out: &mut OutputBuilder<
            Time,
            timely::container::CapacityContainerBuilder<Vec<CheckpointMsg>>,
        >| {
            if !checkpointing || parts.is_empty() {
                return;
            }
            let mut out = out.activate();
            let mut session = out.session(pcap);
            for p in parts {
                let mut position = p.reader.position();
                position.max_seen = p.watermark.max_seen();
                position.finished = p.finished;
                position.frozen = frozen;
                session.give(CheckpointMsg::Position {
                    source: name.clone(),
                    partition: p.index,
                    position,
                });
            }
        };
        // Stopping for a savepoint: read nothing more, keep the capabilities
        // (and cutting) until the committer says the savepoint is complete.
        let mut frozen = false;
        let mut last_cut = Instant::now();
        let mut since_bump = 0usize;
        let mut items: Vec<SourceItem<D>> = Vec::with_capacity(settings.batch_items);
        let mut on_time: Vec<D> = Vec::with_capacity(settings.batch_items);
        let mut behind: Vec<(EventTime, D)> = Vec::new();
        let mut dead_batch: Vec<DeadLetter> = Vec::new();
        // Flow control: batches read but not yet past the probes (time of
        // the batch, bytes), their total, and since when a partition has
        // been paused.
        let mut in_flight: std::collections::VecDeque<(Time, u64)> = Default::default();
        let mut in_flight_total = 0u64;
        let mut throttled_since: Option<Instant> = None;
        let record_size = std::mem::size_of::<D>() as u64;
        activator.activate();

        move |_frontiers| {
            adverts_in.for_each_time(|cap, _| {
                if lift
                    .as_ref()
                    .is_none_or(|l| l[0].time().less_equal(cap.time()))
                {
                    lift = Some([cap.retain(0), cap.retain(1), cap.retain(2), cap.retain(3)]);
                }
            });
            let Some((rcap, dcap, acap, pcap)) = caps.as_mut() else {
                lift = None;
                return;
            };
            if rcap.time().epoch < epoch {
                // First activation after a restore: start in the new epoch.
                let t = time(epoch, rcap.time().event_ms);
                rcap.downgrade(&t);
                dcap.downgrade(&t);
                acap.downgrade(&t);
                pcap.downgrade(&t);
            }
            let mut throttled = false;
            let mut records_out = records_out.activate();
            let mut dead_out = dead_out.activate();
            let mut budget = if frozen {
                0
            } else {
                settings.items_per_activation
            };
            if let Some(rate) = settings.rate_limit {
                let allowed = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
                let left = allowed.saturating_sub(emitted) as usize;
                if left < budget {
                    budget = left;
                    throttled = true;
                }
            }
            let now = Instant::now();
            if woken.swap(false, Ordering::Acquire) {
                // A reader has data again: stop waiting out its idle delay.
                for p in parts.iter_mut() {
                    p.idle_until = None;
                }
            }
            let flow = settings.flow.as_ref();
            if let Some(f) = flow {
                while in_flight.front().is_some_and(|(t, _)| f.passed(t)) {
                    in_flight_total -= in_flight.pop_front().map_or(0, |(_, b)| b);
                }
            }
            let gate: Option<Gate> = flow.map(|f| f.gate(epoch.max(rcap.time().epoch)));
            let budget_left = |total: u64| {
                flow.and_then(|f| f.settings.in_flight_bytes)
                    .is_none_or(|b| total <= b)
            };
            // Whether flow control lets a partition with this watermark be
            // read now.
            let admitted = |wm: EventTime, total: u64| {
                gate.is_none_or(|g| g.admits(wm) && (budget_left(total) || !g.ahead(wm)))
            };
            while budget > 0 {
                // Read the lagging partition first so that partitions advance together.
                let Some(p) = parts
                    .iter_mut()
                    .filter(|p| {
                        !p.finished
                            && p.idle_until.is_none_or(|u| u <= now)
                            && admitted(p.watermark.current(), in_flight_total)
                    })
                    .min_by_key(|p| p.watermark.current())
                else {
                    break;
                };
                p.held_since = None;
                if p.reader_paused {
                    p.reader_paused = false;
                    p.reader.set_paused(false);
                }
                p.idle_until = None;
                // A partition back from idleness may be behind the capability.
                let floor = rcap.time().event_ms;
                let batch_start = p.watermark.current().max(floor);
                let status = p
                    .reader
                    .read_batch(settings.batch_items.min(budget), &mut items)
                    .unwrap_or_else(|e| {
                        panic!(
                            "source {}: partition {} failed: {e}",
                            settings.name,
                            p.reader.describe()
                        )
                    });
                budget = budget.saturating_sub(items.len().max(1));
                // A sent batch leaves `on_time` empty unless the channel
                // hands a buffer back: size it once, not by doubling.
                on_time.reserve(items.len());
                for item in items.drain(..) {
                    match item {
                        SourceItem::Record {
                            event_time_ms,
                            record,
                        } => {
                            let w = p.watermark.current().max(floor);
                            if event_time_ms >= w {
                                on_time.push(record);
                            } else {
                                behind.push((w, record));
                            }
                            p.watermark.observe(event_time_ms);
                        }
                        SourceItem::DeadLetter(d) => dead_batch.push(d),
                    }
                }
                let n = on_time.len() + behind.len();
                let got = n + dead_batch.len();
                counters
                    .records_total
                    .fetch_add(n as u64, Ordering::Relaxed);
                metrics.records_out.fetch_add(n as u64, Ordering::Relaxed);
                counters
                    .behind_watermark_total
                    .fetch_add(behind.len() as u64, Ordering::Relaxed);
                counters
                    .dead_letters_total
                    .fetch_add(dead_batch.len() as u64, Ordering::Relaxed);
                let t = time(epoch.max(rcap.time().epoch), batch_start);
                if !on_time.is_empty() {
                    let c = rcap.delayed(&t);
                    records_out.session(&c).give_container(&mut on_time);
                }
                // The latest time of the batch (behind records are at the
                // watermark when read, which only rises).
                let t_last = match behind.last() {
                    Some(&(w, _)) if w > batch_start => time(t.epoch, w),
                    _ => t,
                };
                let mut run = behind.drain(..).peekable();
                while let Some((w, r)) = run.next() {
                    let c = rcap.delayed(&time(epoch.max(rcap.time().epoch), w));
                    let mut session = records_out.session(&c);
                    session.give(r);
                    while let Some((_, r)) = run.next_if(|(w2, _)| *w2 == w) {
                        session.give(r);
                    }
                }
                drop(run);
                if !dead_batch.is_empty() {
                    let c = dcap.delayed(&t);
                    dead_out.session(&c).give_container(&mut dead_batch);
                }
                if flow.is_some() && got > 0 {
                    let bytes = match p.reader.bytes_read() {
                        Some(b) => b.saturating_sub(std::mem::replace(&mut p.bytes_seen, b)),
                        None => got as u64 * record_size,
                    };
                    in_flight_total += bytes;
                    match in_flight.back_mut() {
                        Some((last, b)) if *last == t_last => *b += bytes,
                        _ => in_flight.push_back((t_last, bytes)),
                    }
                }
                since_bump += n;
                emitted += got as u64;
                let bump = settings
                    .epoch_every_items
                    .is_some_and(|every| since_bump >= every);
                if got > 0 {
                    p.quiet_since = None;
                } else if p.quiet_since.is_none() {
                    p.quiet_since = Some(now);
                }
                match status {
                    ReadStatus::More => {}
                    ReadStatus::Finished => p.finished = true,
                    ReadStatus::Idle(d) => p.idle_until = Some(now + d),
                }
                if bump {
                    // A cut: positions at the old epoch, then move on.
                    report(&parts, frozen, pcap, &mut position_out);
                    epoch = epoch.max(rcap.time().epoch) + 1;
                    pcap.downgrade(&time(epoch, rcap.time().event_ms));
                    since_bump = 0;
                }
            }
            // Pause what flow control holds back (live readers stop
            // fetching), and account the throttled time.
            let mut paused = 0i64;
            if flow.is_some() {
                for p in parts.iter_mut().filter(|p| !p.finished) {
                    if admitted(p.watermark.current(), in_flight_total) {
                        p.held_since = None;
                        if p.reader_paused {
                            p.reader_paused = false;
                            p.reader.set_paused(false);
                        }
                        continue;
                    }
                    let since = *p.held_since.get_or_insert(now);
                    if !p.reader_paused && now.duration_since(since) >= PAUSE_READER_AFTER {
                        p.reader_paused = true;
                        p.reader.set_paused(true);
                        metrics.reader_pauses.fetch_add(1, Ordering::Relaxed);
                    }
                    // Paused is not idle: it keeps its watermark.
                    p.quiet_since = None;
                    paused += 1;
                }
                metrics.paused_partitions.store(paused, Ordering::Relaxed);
                let now = Instant::now();
                if let Some(since) = throttled_since.take() {
                    let ns = now.duration_since(since).as_nanos() as u64;
                    metrics.throttled_ns.fetch_add(ns, Ordering::Relaxed);
                }
                if paused > 0 {
                    throttled_since = Some(now);
                }
            }
            // Checkpoint cuts happen between activations (at most
            // `items_per_activation` items apart), once per interval.
            if let Some(c) = ctx.as_ref() {
                if frozen && c.savepoint_done() {
                    // The savepoint holds every partition here: stop without
                    // finishing them.
                    caps = None;
                    lift = None;
                    return;
                }
                let target = c.epoch_now();
                // Frozen sources cut at most every FROZEN_CUT: checkpoints
                // complete only when every participant sees the same oldest
                // epoch, which a frontier moving at every activation (a tiny
                // interval) would never hold still long enough for.
                let due = !frozen || last_cut.elapsed() >= FROZEN_CUT;
                if target > epoch.max(rcap.time().epoch) && due {
                    last_cut = Instant::now();
                    // A savepoint was asked for: freeze at this cut. The
                    // positions of the epoch being left are the last ones.
                    frozen = frozen || c.stop_requested();
                    report(&parts, frozen, pcap, &mut position_out);
                    epoch = target;
                    pcap.downgrade(&time(epoch, rcap.time().event_ms));
                }
            }
            if parts.iter().all(|p| p.finished) {
                report(&parts, frozen, pcap, &mut position_out);
                caps = None;
                lift = None;
                return;
            }
            // The watermark: minimum over partitions that are neither finished nor
            // idle. While all are idle, follow the other workers' adverts.
            let floor = rcap.time().event_ms;
            let active_low = parts
                .iter()
                // A frozen partition does not turn idle: the watermark stays
                // where the savepoint has it.
                .filter(|p| !p.finished && (frozen || !p.is_idle(now, settings.idle_timeout)))
                .map(|p| p.watermark.current())
                .min();
            epoch = epoch.max(rcap.time().epoch);
            match active_low {
                Some(low) => {
                    let t = time(epoch, low.max(floor));
                    counters
                        .watermark_ms
                        .fetch_max(t.event_ms, Ordering::Relaxed);
                    rcap.downgrade(&t);
                    dcap.downgrade(&t);
                    acap.downgrade(&t);
                    pcap.downgrade(&t);
                    if advertised != Some(t.event_ms) {
                        advertised = Some(t.event_ms);
                        advert_out.activate().session(&*acap).give(());
                    }
                    if lift
                        .as_ref()
                        .is_some_and(|l| l[0].time().less_equal(rcap.time()))
                    {
                        lift = None;
                    }
                    // A kept advert must not hold an old epoch open: that
                    // stalled every checkpoint while a worker ahead stood
                    // still or had finished (its last advert stays here
                    // until our watermark passes it).
                    if let Some(l) = lift.as_mut() {
                        if l[0].time().epoch < epoch {
                            let t = time(epoch, l[0].time().event_ms);
                            for c in l.iter_mut() {
                                c.downgrade(&t);
                            }
                        }
                    }
                }
                None => {
                    if let Some([r, d, a, q]) = lift.take() {
                        if rcap.time().less_equal(r.time()) {
                            if r.time().epoch > rcap.time().epoch.max(epoch) {
                                report(&parts, frozen, pcap, &mut position_out);
                            }
                            *rcap = r;
                            *dcap = d;
                            *acap = a;
                            *pcap = q;
                            epoch = epoch.max(rcap.time().epoch);
                        }
                    }
                }
            }
            let wake = parts
                .iter()
                .filter(|p| !p.finished)
                .map(|p| match p.idle_until {
                    // A paused partition looks at the probes again shortly.
                    _ if p.held_since.is_some() => FLOW_POLL,
                    Some(u) => u.saturating_duration_since(now),
                    None => Duration::ZERO,
                })
                .min()
                .unwrap_or(Duration::ZERO);
            let wake = match (ctx.as_ref(), throttled) {
                // Frozen: cut on time and look for the end of the savepoint.
                (Some(c), _) if frozen => c.interval.min(FROZEN_CUT),
                (_, true) => wake.max(Duration::from_millis(2)),
                // Wake up for the next checkpoint cut even when idle.
                (Some(c), false) if !wake.is_zero() => wake.min(c.interval),
                _ => wake,
            };
            if wake.is_zero() {
                activator.activate();
            } else {
                activator.activate_after(wake);
            }
        }
    });
    adverts.broadcast().connect_loop(advert_loop);
    (records, dead, positions)
}

/// How long flow control holds a partition back before it pauses the
/// reader too (a Kafka consumer refetches after a resume: short holds keep
/// the prefetched messages, which `queued.max.messages.kbytes` bounds).
pub const PAUSE_READER_AFTER: Duration = Duration::from_millis(200);

/// How often a source with paused partitions looks at the probes again.
const FLOW_POLL: Duration = Duration::from_millis(1);

/// The shortest time between two cuts of a frozen source.
const FROZEN_CUT: Duration = Duration::from_millis(10);

/// A partition over an in-memory vector of `(event_time_ms, record)`; for tests,
/// examples and replaying generated data.
pub fn vec_partition<D: 'static>(
    name: impl Into<String>,
    items: Vec<(EventTime, D)>,
) -> Box<dyn PartitionReader<D>> {
    Box::new(VecPartition::new(name, items))
}

/// The reader of [`vec_partition`]: `offset` and `line` of its position are
/// the number of items read.
pub struct VecPartition<D> {
    name: String,
    items: std::vec::IntoIter<(EventTime, D)>,
    taken: u64,
}

impl<D> VecPartition<D> {
    /// A reader over `items`, `(event_time_ms, record)`.
    pub fn new(name: impl Into<String>, items: Vec<(EventTime, D)>) -> VecPartition<D> {
        VecPartition {
            name: name.into(),
            items: items.into_iter(),
            taken: 0,
        }
    }
}

impl<D> PartitionReader<D> for VecPartition<D> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        let before = out.len();
        out.extend(
            self.items
                .by_ref()
                .take(max_items)
                .map(|(event_time_ms, record)| SourceItem::Record {
                    event_time_ms,
                    record,
                }),
        );
        self.taken += (out.len() - before) as u64;
        Ok(if self.items.len() == 0 {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.taken,
            line: self.taken,
            ..PartitionPosition::default()
        }
    }
}
