//! Checkpoints as consistent cuts on epochs, and the commit protocol.
//!
//! The model (docs/ARCHITECTURE.md): a timestamp is `(epoch, event_ms)`. Every
//! `interval` each source moves to the next epoch at a batch boundary and
//! reports the position of each of its partitions *at* the old epoch. Checkpoint
//! `c` is the state after every record of epochs `≤ c`:
//!
//! * **sources** — for each partition, the last position reported at an epoch
//!   `≤ c` (collected by the committer, written as part `sources`);
//! * **operators** — each stateful operator writes its state when epoch `c`
//!   completes at its input (its part), then applies newer records;
//! * **sinks** — pre-commit the rows of epochs `≤ c` (their part), and commit
//!   them when checkpoint `c` is [`Completion`]-announced.
//!
//! Every part-writing operator sends a [`CheckpointMsg::Part`] to the
//! **committer** (worker 0) with a capability of an epoch `≤ c`, so when epoch
//! `c` is complete at the committer's input every part of `c` is on disk. The
//! committer writes the manifest only when all `writers × workers` parts of `c`
//! are there (an operator whose input jumped over `c` has none, and `c` is then
//! skipped), and announces completion through a feedback edge to the sinks.
//!
//! When the input ends every participant writes its last part under
//! [`FINAL`]; the committer renames it to an id above every epoch used and
//! completes it, so a run always ends with a checkpoint.
//!
//! A **savepoint** (a stop request) is a regular checkpoint: each source
//! *freezes* at its next cut (reads nothing more, keeps its capabilities, and
//! keeps cutting, reporting its positions as `frozen`). The first checkpoint
//! at which every partition is frozen or finished is the savepoint (manifest
//! `savepoint = true`); the committer then marks the stop done, the frozen
//! sources drop their capabilities, and what the shutdown writes after it
//! (the [`FINAL`] parts) is discarded. Because no source stops before all are
//! frozen, no window can fire on a watermark that leaves a stopped
//! partition out, at any number of source workers. When every source
//! finishes instead, the final checkpoint is the savepoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{CapabilitySet, Concatenate, ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use crate::checkpoint_store::{Checkpoint, CheckpointError, CheckpointStore, PartEntry};
use crate::time::{Epoch, FrontierView, Time, TimeSummary};

/// The id under which the last checkpoint of a run is written; the committer
/// renames it to a real id when it completes.
pub const FINAL: u64 = u64::MAX;

/// Where a partition of a source is, in a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Connector-defined offset of the next item (file: byte offset in the
    /// decompressed stream; Kafka: next offset; generator: items produced).
    pub offset: u64,
    /// Lines or records consumed (dead-letter positions continue from it).
    pub line: u64,
    /// The partition's largest event time so far (its watermark's base).
    pub max_seen: Option<u64>,
    /// The partition has been read to its end.
    pub finished: bool,
    /// The source stopped reading this partition for a savepoint: it reads
    /// nothing after this position until the job is restored. Ignored on
    /// restore.
    #[serde(default)]
    pub frozen: bool,
}

/// Messages from participants to the committer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CheckpointMsg {
    /// A participant wrote (or had nothing to write for) its part of a checkpoint.
    Part {
        /// Checkpoint id ([`FINAL`] for the last one).
        checkpoint: u64,
        /// Part name, unique per operator and worker.
        name: String,
        /// The written part; `None` when the participant had nothing to store.
        entry: Option<PartEntry>,
    },
    /// A source partition's position at the end of the message's epoch.
    Position {
        /// Source operator name.
        source: String,
        /// Partition index.
        partition: u32,
        /// Its position.
        position: PartitionPosition,
    },
}

/// A checkpoint announced complete to the sinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The completed checkpoint's id.
    pub id: u64,
    /// Its parts were written under [`FINAL`] (the last checkpoint of the run).
    pub was_final: bool,
}

/// Checkpoint settings of a job.
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    /// The store directory (shared by all processes of a cluster).
    pub dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept.
    pub retain: usize,
}

/// Source positions by source name and partition.
pub type SourcePositions = BTreeMap<String, BTreeMap<u32, PartitionPosition>>;

/// The checkpoint a run resumes from.
#[derive(Debug)]
pub struct Restore {
    /// The store the checkpoint is in.
    pub store: CheckpointStore,
    /// The verified checkpoint.
    pub checkpoint: Checkpoint,
    /// Its source positions.
    pub sources: SourcePositions,
}

impl Restore {
    /// Reads the source positions of a verified checkpoint.
    ///
    /// # Errors
    /// The `sources` part is unreadable.
    pub fn new(store: CheckpointStore, checkpoint: Checkpoint) -> Result<Self, CheckpointError> {
        let bytes = store.read_part(&checkpoint, "sources")?;
        let sources = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            id: checkpoint.manifest.id,
            reason: format!("sources part: {e}"),
        })?;
        Ok(Restore {
            store,
            checkpoint,
            sources,
        })
    }

    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.checkpoint.manifest.id
    }

    /// Names of the parts starting with `prefix`.
    pub fn parts_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.checkpoint
            .manifest
            .parts
            .keys()
            .filter(move |k| k.starts_with(prefix))
            .map(String::as_str)
    }

    /// Reads a part (checksum verified).
    ///
    /// # Errors
    /// Missing or damaged part.
    pub fn part(&self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        self.store.read_part(&self.checkpoint, name)
    }
}

/// The checkpoint a stateful operator writes when the oldest open epoch of its
/// input moved to `oldest`: epoch `oldest − 1` is complete there, and its
/// state is this run's part of that checkpoint — if this run took part in it
/// (`≥ first_epoch`). `None` (the input ended) is the final checkpoint, which
/// operators write separately.
///
/// # Examples
/// ```
/// use streamforge_dataflow::checkpoint::checkpoint_to_write;
/// assert_eq!(checkpoint_to_write(Some(5), 3), Some(4));
/// assert_eq!(checkpoint_to_write(Some(3), 3), None); // epoch 2 was before the restore
/// assert_eq!(checkpoint_to_write(Some(0), 0), None);
/// ```
pub fn checkpoint_to_write(oldest: Option<Epoch>, first_epoch: Epoch) -> Option<u64> {
    oldest
        .and_then(|b| b.checked_sub(1))
        .filter(|c| *c >= first_epoch)
}

/// Per-process checkpoint context, shared by all workers.
#[derive(Debug)]
pub struct CheckpointContext {
    /// The store.
    pub store: CheckpointStore,
    /// Time between checkpoints.
    pub interval: Duration,
    /// The checkpoint this run resumes from.
    pub restore: Option<Restore>,
    /// Job name (recorded in manifests).
    pub job: String,
    /// When the run started (epochs are counted from here).
    pub started: Instant,
    /// Completed checkpoints of this run (metrics; set on the committer's process).
    pub stats: CheckpointStats,
}

/// What the committer reports about completed checkpoints (metrics).
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints completed by this run.
    pub completed_total: std::sync::atomic::AtomicU64,
    /// Id of the last one.
    pub last_id: std::sync::atomic::AtomicU64,
    /// Its size in bytes (all parts).
    pub last_bytes: std::sync::atomic::AtomicU64,
    /// Its duration, µs: from the epoch boundary to the manifest on disk.
    pub last_duration_us: std::sync::atomic::AtomicU64,
    /// When it completed, ms since the Unix epoch.
    pub last_unix_ms: std::sync::atomic::AtomicU64,
}

const STOP_FILE: &str = "STOP";
const STOPPED_FILE: &str = "STOPPED";

impl CheckpointContext {
    /// A context over `settings`; `restore` is the checkpoint to resume from.
    /// Without one, earlier checkpoints in the store are deleted (a fresh run
    /// starts a fresh history). A stop request left in the store is removed.
    ///
    /// # Errors
    /// The store cannot be opened or cleared.
    pub fn new(
        settings: &CheckpointSettings,
        job: &str,
        restore: Option<Restore>,
    ) -> Result<Self, CheckpointError> {
        let store = CheckpointStore::open(&settings.dir, settings.retain)?;
        if restore.is_none() {
            store.clear()?;
        }
        store.remove_incomplete(FINAL)?;
        for marker in [STOP_FILE, STOPPED_FILE] {
            let path = store.dir().join(marker);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|source| CheckpointError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        Ok(CheckpointContext {
            store,
            interval: settings.interval,
            restore,
            job: job.to_string(),
            started: Instant::now(),
            stats: CheckpointStats::default(),
        })
    }

    /// The first epoch of this run: one after the restored checkpoint, or 0.
    pub fn first_epoch(&self) -> Epoch {
        self.restore.as_ref().map_or(0, |r| r.id() + 1)
    }

    /// The epoch the sources should be in now: one per elapsed interval, so
    /// that all workers (and processes) cut at about the same moments.
    pub fn epoch_now(&self) -> Epoch {
        let ticks = self.started.elapsed().as_nanos() / self.interval.as_nanos().max(1);
        self.first_epoch() + ticks as u64
    }

    /// Whether a savepoint (stop with a final checkpoint) was requested.
    pub fn stop_requested(&self) -> bool {
        self.store.dir().join(STOP_FILE).exists()
    }

    /// Whether the savepoint of a stop request is complete, so that the frozen
    /// sources can drop their capabilities and the job can end.
    pub fn savepoint_done(&self) -> bool {
        self.store.dir().join(STOPPED_FILE).exists()
    }

    /// Records that checkpoint `id` is the savepoint of the stop request.
    ///
    /// # Panics
    /// On an I/O error (fail-stop).
    fn mark_savepoint_done(&self, id: u64) {
        let path = self.store.dir().join(STOPPED_FILE);
        std::fs::write(&path, format!("{id}\n"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Asks the job running on the store `dir` to stop with a savepoint.
    ///
    /// # Errors
    /// The request file cannot be written.
    pub fn request_stop(dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(STOP_FILE), b"stop\n")
    }

    /// Writes a part of checkpoint `id` and returns the message for the committer.
    ///
    /// # Panics
    /// On an I/O error (fail-stop: the run restarts from the last checkpoint).
    pub fn write_part(&self, id: u64, name: String, bytes: Option<&[u8]>) -> CheckpointMsg {
        let entry = bytes.map(|b| {
            self.store
                .write_part(id, &name, b)
                .unwrap_or_else(|e| panic!("checkpoint {id}: {e}"))
        });
        CheckpointMsg::Part {
            checkpoint: id,
            name,
            entry,
        }
    }
}

/// The checkpoint plumbing of one dataflow on one worker: participants add
/// their message streams, sinks take the completion stream, and
/// [`CheckpointGraph::finish`] builds the committer.
pub struct CheckpointGraph<'scope> {
    ctx: Arc<CheckpointContext>,
    scope: Scope<'scope, Time>,
    messages: Vec<Stream<'scope, Time, Vec<CheckpointMsg>>>,
    writers: usize,
    completions: Stream<'scope, Time, Vec<Completion>>,
    handle: timely::dataflow::operators::feedback::Handle<'scope, Time, Vec<Completion>>,
}

impl<'scope> CheckpointGraph<'scope> {
    /// Starts the plumbing in `scope`.
    pub fn new(scope: Scope<'scope, Time>, ctx: Arc<CheckpointContext>) -> Self {
        let (handle, completions) = scope.feedback::<Vec<Completion>>(TimeSummary {
            epoch: 0,
            event_ms: 1,
        });
        CheckpointGraph {
            ctx,
            scope,
            messages: Vec::new(),
            writers: 0,
            completions,
            handle,
        }
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<CheckpointContext> {
        &self.ctx
    }

    /// Completed checkpoints, delivered to every worker.
    pub fn completions(&self) -> Stream<'scope, Time, Vec<Completion>> {
        self.completions.clone()
    }

    /// Adds the messages of a source (positions only).
    pub fn add_positions(&mut self, stream: Stream<'scope, Time, Vec<CheckpointMsg>>) {
        self.messages.push(stream);
    }

    /// Adds the messages of an operator that writes one part per checkpoint on
    /// every worker.
    pub fn add_writer(&mut self, stream: Stream<'scope, Time, Vec<CheckpointMsg>>) {
        self.messages.push(stream);
        self.writers += 1;
    }

    /// Builds the committer (worker 0) and closes the completion loop.
    pub fn finish(self) {
        let CheckpointGraph {
            ctx,
            scope,
            messages,
            writers,
            completions: _,
            handle,
        } = self;
        let expected = writers * scope.peers();
        let input = scope.concatenate(messages);
        let mut builder = OperatorBuilder::new("checkpoint-committer".to_string(), scope);
        let (out, completions) = builder.new_output::<Vec<Completion>>();
        let mut input = builder.new_input(input, Exchange::new(|_: &CheckpointMsg| 0));
        let mut out = OutputBuilder::from(out);
        let leader = scope.index() == 0;
        builder.build(move |mut caps| {
            let mut caps = CapabilitySet::from_elem(caps.pop().expect("output"));
            let mut committer = Committer::new(ctx, expected);
            move |frontiers| {
                input.for_each_time(|cap, data| {
                    let epoch = cap.time().epoch;
                    for batch in data {
                        committer.receive(epoch, batch.drain(..));
                    }
                });
                let view = FrontierView::of(&frontiers[0]);
                let done = if leader {
                    committer.advance(view.oldest_epoch)
                } else {
                    None
                };
                if let Some(done) = done {
                    if let Some(cap) = caps.first() {
                        out.activate().session(&cap).give(done);
                    }
                }
                caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        completions.broadcast().connect_loop(handle);
    }
}

struct Committer {
    ctx: Arc<CheckpointContext>,
    expected: usize,
    /// Position messages by epoch, applied in epoch order as epochs complete.
    pending: BTreeMap<Epoch, Vec<CheckpointMsg>>,
    parts: BTreeMap<u64, BTreeMap<String, Option<PartEntry>>>,
    positions: SourcePositions,
    /// The oldest epoch of the input frontier at the last activation.
    oldest: Option<Epoch>,
    max_epoch: Epoch,
    finished: bool,
    /// The savepoint of a stop request, once complete: later checkpoints,
    /// the final one included, are discarded.
    savepoint: Option<u64>,
}

impl Committer {
    fn new(ctx: Arc<CheckpointContext>, expected: usize) -> Self {
        let mut positions = ctx
            .restore
            .as_ref()
            .map(|r| r.sources.clone())
            .unwrap_or_default();
        // A restored savepoint's partitions read again.
        for p in positions.values_mut().flat_map(|s| s.values_mut()) {
            p.frozen = false;
        }
        let first = ctx.first_epoch();
        Committer {
            ctx,
            expected,
            pending: BTreeMap::new(),
            parts: BTreeMap::new(),
            positions,
            oldest: Some(0),
            max_epoch: first,
            finished: false,
            savepoint: None,
        }
    }

    fn receive(&mut self, epoch: Epoch, msgs: impl Iterator<Item = CheckpointMsg>) {
        self.max_epoch = self.max_epoch.max(epoch);
        for m in msgs {
            match m {
                CheckpointMsg::Part {
                    checkpoint,
                    name,
                    entry,
                } => {
                    if checkpoint != FINAL {
                        self.max_epoch = self.max_epoch.max(checkpoint);
                    }
                    self.parts
                        .entry(checkpoint)
                        .or_default()
                        .insert(name, entry);
                }
                p @ CheckpointMsg::Position { .. } => {
                    self.pending.entry(epoch).or_default().push(p)
                }
            }
        }
    }

    /// Applies the positions of epochs before `upto` (all when `None`).
    fn apply_positions(&mut self, upto: Option<Epoch>) {
        while let Some(e) = self.pending.first_entry() {
            if upto.is_some_and(|u| *e.key() >= u) {
                break;
            }
            for m in e.remove() {
                if let CheckpointMsg::Position {
                    source,
                    partition,
                    position,
                } = m
                {
                    self.positions
                        .entry(source)
                        .or_default()
                        .insert(partition, position);
                }
            }
        }
    }

    /// Called with the input's oldest epoch; completes the newest checkpoint
    /// that became complete, if all its parts are there.
    fn advance(&mut self, oldest: Option<Epoch>) -> Option<Completion> {
        if self.finished || oldest == self.oldest {
            return None;
        }
        self.oldest = oldest;
        self.apply_positions(oldest);
        let id = match oldest {
            Some(b) => match b.checked_sub(1) {
                Some(c) if c >= self.ctx.first_epoch() => c,
                _ => return None,
            },
            None => {
                self.finished = true;
                FINAL
            }
        };
        let parts = self.parts.remove(&id).unwrap_or_default();
        self.parts.retain(|c, _| *c > id);
        if self.savepoint.is_some() {
            // After the savepoint: what the stopping job wrote is not a
            // checkpoint (its final parts may hold windows fired by the
            // shutdown itself).
            if id == FINAL {
                self.ctx
                    .store
                    .remove_incomplete(FINAL)
                    .unwrap_or_else(|e| panic!("final checkpoint: {e}"));
            }
            return None;
        }
        if self.expected > 0 && parts.len() < self.expected {
            tracing::debug!(
                checkpoint = id,
                parts = parts.len(),
                expected = self.expected,
                "checkpoint skipped: an operator's input moved past it in one step"
            );
            return None;
        }
        let (real, was_final) = if id == FINAL {
            let real = self.max_epoch + 1;
            self.ctx
                .store
                .rename(FINAL, real)
                .unwrap_or_else(|e| panic!("final checkpoint: {e}"));
            (real, true)
        } else {
            (id, false)
        };
        let sources = serde_json::to_vec(&self.positions).expect("positions serialize");
        let mut entries: BTreeMap<String, PartEntry> = parts
            .into_iter()
            .filter_map(|(n, e)| Some((n, e?)))
            .collect();
        let entry = self
            .ctx
            .store
            .write_part(real, "sources", &sources)
            .unwrap_or_else(|e| panic!("checkpoint {real}: {e}"));
        entries.insert("sources".into(), entry);
        // The savepoint of a stop request: the first checkpoint at which
        // every partition of every source is frozen (or finished) — a
        // consistent cut whatever order the source workers stopped in.
        let all_frozen = !self.positions.is_empty()
            && self
                .positions
                .values()
                .flat_map(|s| s.values())
                .all(|p| p.frozen || p.finished);
        let stop = self.ctx.stop_requested();
        let savepoint = stop && (was_final || all_frozen);
        let mut meta = BTreeMap::new();
        meta.insert("job".into(), self.ctx.job.clone());
        meta.insert("final".into(), was_final.to_string());
        meta.insert("savepoint".into(), savepoint.to_string());
        meta.insert(
            "created_unix_ms".into(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
                .to_string(),
        );
        let bytes: u64 = entries.values().map(|e| e.len).sum();
        self.ctx
            .store
            .complete(real, entries, meta)
            .unwrap_or_else(|e| panic!("checkpoint {real}: {e}"));
        // Duration: from the moment the sources were due to cut (the epoch
        // boundary) to the manifest on disk.
        let due = self
            .ctx
            .interval
            .saturating_mul((real + 1 - self.ctx.first_epoch()) as u32);
        let duration_ms = self.ctx.started.elapsed().saturating_sub(due).as_secs_f64() * 1e3;
        {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &self.ctx.stats;
            s.completed_total.fetch_add(1, Relaxed);
            s.last_id.store(real, Relaxed);
            s.last_bytes.store(bytes, Relaxed);
            s.last_duration_us
                .store((duration_ms * 1e3) as u64, Relaxed);
            s.last_unix_ms.store(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                Relaxed,
            );
        }
        if savepoint && !was_final {
            self.savepoint = Some(real);
            self.ctx.mark_savepoint_done(real);
        }
        tracing::info!(
            checkpoint = real,
            was_final,
            savepoint,
            bytes,
            duration_ms = format!("{duration_ms:.1}"),
            "checkpoint complete"
        );
        Some(Completion {
            id: real,
            was_final,
        })
    }
}
