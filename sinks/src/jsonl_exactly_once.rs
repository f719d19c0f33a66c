//! Exactly-once JSON-lines file sink: two-phase commit on checkpoints.
//!
//! The output is a directory. Worker 0 writes the rows of the current epochs
//! to `.inprogress.jsonl`; when checkpoint `c` is cut at its input it fsyncs
//! that file and renames it to `.pending-<c>.jsonl` (**pre-commit**, its part
//! of the checkpoint), and when the committer announces checkpoint `c`
//! complete it renames every pending file `≤ c` to `part-<c>.jsonl`
//! (**commit**). Readers see only `part-*.jsonl` files: the committed output is
//! their concatenation in id order ([`read_committed`]).
//!
//! On a restore from checkpoint `R`, pending files `≤ R` are committed (the crash
//! came between the manifest and the rename: an idempotent re-commit), and
//! pending or committed files `> R` and the in-progress file are deleted (their
//! rows will be produced again by the replay). A fresh run empties the directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
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

const INPROGRESS: &str = ".inprogress.jsonl";

fn pending_name(id: u64) -> String {
    format!(".pending-{id:020}.jsonl")
}

fn part_name(id: u64) -> String {
    format!("part-{id:020}.jsonl")
}

/// The committed part files of a sink directory, in commit order.
///
/// # Errors
/// The directory cannot be listed.
pub fn committed_parts(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut parts: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let id = name
                .strip_prefix("part-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((id, e.path()))
        })
        .collect();
    parts.sort();
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// The committed lines of a sink directory (or of a plain JSONL file).
///
/// # Errors
/// I/O errors.
pub fn read_committed(path: &Path) -> std::io::Result<Vec<String>> {
    let files = if path.is_dir() {
        committed_parts(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut lines = Vec::new();
    for f in files {
        lines.extend(fs::read_to_string(f)?.lines().map(str::to_string));
    }
    Ok(lines)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Brings the directory to the state of checkpoint `restored` (`(id,
/// was_final)`; `None`: a fresh run, which empties it). The sink does this
/// itself on worker 0; a job calls it before its workers start too, so that a
/// bad path fails before any dataflow is built (idempotent).
///
/// # Errors
/// The directory cannot be created, listed or changed (e.g. the path is a file).
pub fn reconcile(dir: &Path, restored: Option<(u64, bool)>) -> Result<(), SinkError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let id_of = |prefix: &str, name: &str| -> Option<u64> {
            name.strip_prefix(prefix)?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        };
        let remove = || fs::remove_file(&path).map_err(io_err(&path));
        if name == INPROGRESS {
            remove()?;
        } else if let Some(id) = id_of(".pending-", &name) {
            match restored {
                Some((r, was_final)) if id == FINAL && was_final => {
                    fs::rename(&path, dir.join(part_name(r))).map_err(io_err(&path))?
                }
                Some((r, _)) if id <= r => {
                    fs::rename(&path, dir.join(part_name(id))).map_err(io_err(&path))?
                }
                _ => remove()?,
            }
        } else if let Some(id) = id_of("part-", &name) {
            if restored.is_none_or(|(r, _)| id > r) {
                remove()?;
            }
        }
    }
    Ok(())
}

/// Extension trait: `stream.sink_jsonl_exactly_once(..)`.
pub trait SinkJsonlExactlyOnce<'scope, D> {
    /// Writes every record as one JSON line into the directory `dir`, committed
    /// per checkpoint (see the module docs). Lines of one timestamp are sorted.
    ///
    /// # Errors
    /// The directory cannot be created or reconciled with the restored
    /// checkpoint (checked before the dataflow runs).
    ///
    /// # Panics
    /// On a write error while running (fail-stop: the job restarts from the
    /// last checkpoint and nothing committed is lost).
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointGraph, CheckpointSettings};
    /// use streamforge_dataflow::source::{checkpointed_source, vec_partition, SourceSettings};
    /// use streamforge_sinks::{read_committed, SinkJsonlExactlyOnce};
    ///
    /// let dir = std::env::temp_dir().join(format!("sf-eo-doc-{}", std::process::id()));
    /// let settings = CheckpointSettings {
    ///     dir: dir.join("ckpt"), interval: Duration::from_millis(1), retain: 2,
    /// };
    /// let ctx = Arc::new(CheckpointContext::new(&settings, "doc", None).unwrap());
    /// let (c, out) = (ctx.clone(), dir.join("rows"));
    /// let o = out.clone();
    /// streamforge_dataflow::time::example(move |scope| {
    ///     let mut graph = CheckpointGraph::new(scope, c);
    ///     let data: Vec<(u64, u64)> = (0..50_000).map(|i| (i, i)).collect();
    ///     let mut settings = SourceSettings::new("src", 0);
    ///     settings.batch_items = 100;
    ///     settings.items_per_activation = 100;
    ///     let (s, _dead) = checkpointed_source(scope, settings, 1,
    ///         move |_, _| vec_partition("p", data.clone()), None, &mut graph);
    ///     s.sink_jsonl_exactly_once("out", o, None, &mut graph).unwrap();
    ///     graph.finish();
    /// });
    /// // Every row committed exactly once, over several checkpoints.
    /// let mut got: Vec<u64> = read_committed(&out).unwrap()
    ///     .iter().map(|l| l.parse().unwrap()).collect();
    /// got.sort();
    /// assert!(got == (0..50_000).collect::<Vec<u64>>());
    /// let parts = streamforge_sinks::jsonl_exactly_once::committed_parts(&out).unwrap();
    /// assert!(parts.len() > 1, "{parts:?}");
    /// // The run ended with a complete final checkpoint.
    /// let (latest, skipped) = ctx.store.latest().unwrap();
    /// assert!(skipped.is_empty());
    /// assert_eq!(latest.unwrap().manifest.meta["final"], "true");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    fn sink_jsonl_exactly_once(
        self,
        name: &str,
        dir: impl Into<PathBuf>,
        written: Option<Arc<AtomicU64>>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError>;
}

impl<'scope, D: ExchangeData + Serialize> SinkJsonlExactlyOnce<'scope, D>
    for Stream<'scope, Time, Vec<D>>
{
    fn sink_jsonl_exactly_once(
        self,
        name: &str,
        dir: impl Into<PathBuf>,
        written: Option<Arc<AtomicU64>>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError> {
        sink_encoded_exactly_once(
            self,
            name,
            dir.into(),
            written,
            checkpoints,
            None,
            |d: D| serde_json::to_vec(&d).expect("serializable row"),
        )
    }
}

/// Extension trait: `stream.sink_lines_exactly_once(..)` for pre-encoded
/// lines (CSV rows).
pub trait SinkLinesExactlyOnce<'scope> {
    /// As [`SinkJsonlExactlyOnce::sink_jsonl_exactly_once`], for lines
    /// encoded by the caller; every part file starts with `header` (so each
    /// committed part is a complete CSV file, as Flink's part files).
    ///
    /// # Errors
    /// As [`SinkJsonlExactlyOnce::sink_jsonl_exactly_once`].
    fn sink_lines_exactly_once(
        self,
        name: &str,
        dir: impl Into<PathBuf>,
        header: Option<String>,
        written: Option<Arc<AtomicU64>>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError>;
}

impl<'scope> SinkLinesExactlyOnce<'scope> for Stream<'scope, Time, Vec<String>> {
    fn sink_lines_exactly_once(
        self,
        name: &str,
        dir: impl Into<PathBuf>,
        header: Option<String>,
        written: Option<Arc<AtomicU64>>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError> {
        sink_encoded_exactly_once(
            self,
            name,
            dir.into(),
            written,
            checkpoints,
            header,
            String::into_bytes,
        )
    }
}

fn sink_encoded_exactly_once<'scope, D: ExchangeData>(
    stream: Stream<'scope, Time, Vec<D>>,
    name: &str,
    dir: PathBuf,
    written: Option<Arc<AtomicU64>>,
    checkpoints: &mut CheckpointGraph<'scope>,
    header: Option<String>,
    encode: impl Fn(D) -> Vec<u8> + 'static,
) -> Result<(), SinkError> {
    let ctx = checkpoints.context().clone();
    let scope = stream.scope();
    let index = scope.index();
    let leader = index == 0;
    if leader {
        let restored = ctx.restore.as_ref().map(|r| {
            let was_final =
                r.checkpoint.manifest.meta.get("final").map(String::as_str) == Some("true");
            (r.id(), was_final)
        });
        reconcile(&dir, restored)?;
    }
    let written = written.unwrap_or_default();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
    let mut data = builder.new_input(stream, Exchange::new(|_: &D| 0));
    // Completions do not hold back the acknowledgements (no connection).
    let mut completions = builder.new_input_connection(
        checkpoints.completions(),
        Pipeline,
        std::iter::empty::<(usize, Antichain<_>)>(),
    );
    let mut ack_out = OutputBuilder::from(ack_out);
    let part = format!("{name}-w{index}");
    let first_epoch = ctx.first_epoch();

    builder.build(move |mut caps| {
        let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
        let mut pending: BTreeMap<Time, Vec<Vec<u8>>> = BTreeMap::new();
        let mut out: Option<BufWriter<File>> = None;
        let mut rows_in_progress = 0u64;
        let mut precommitted: Vec<u64> = Vec::new();
        let mut last_oldest: Option<Epoch> = Some(0);
        let inprogress = dir.join(INPROGRESS);
        let inprogress_w = inprogress.clone();
        let written = written.clone();

        let write_until = move |upto: &dyn Fn(&Time) -> bool,
                                pending: &mut BTreeMap<Time, Vec<Vec<u8>>>,
                                out: &mut Option<BufWriter<File>>,
                                rows: &mut u64| {
            while let Some(entry) = pending.first_entry() {
                if !upto(entry.key()) {
                    break;
                }
                let mut lines = entry.remove();
                lines.sort_unstable();
                let w = out.get_or_insert_with(|| {
                    let f = File::create(&inprogress_w)
                        .unwrap_or_else(|e| panic!("{}: {e}", inprogress_w.display()));
                    let mut w = BufWriter::with_capacity(1 << 20, f);
                    if let Some(h) = &header {
                        w.write_all(h.as_bytes())
                            .and_then(|()| w.write_all(b"\n"))
                            .unwrap_or_else(|e| panic!("{}: {e}", inprogress_w.display()));
                    }
                    w
                });
                for l in &lines {
                    w.write_all(l)
                        .and_then(|()| w.write_all(b"\n"))
                        .unwrap_or_else(|e| panic!("{}: {e}", inprogress_w.display()));
                }
                *rows += lines.len() as u64;
                written.fetch_add(lines.len() as u64, Ordering::Relaxed);
            }
        };

        move |frontiers| {
            data.for_each_time(|cap, batches| {
                let lines = pending.entry(*cap.time()).or_default();
                for d in batches.flat_map(|d| d.drain(..)) {
                    lines.push(encode(d));
                }
            });
            let frontier = &frontiers[0];
            let view = FrontierView::of(frontier);
            let oldest = view.oldest_epoch;
            if oldest != last_oldest {
                last_oldest = oldest;
                let id = match oldest {
                    None => Some(FINAL),
                    Some(b) => b.checked_sub(1).filter(|c| *c >= first_epoch),
                };
                if let Some(id) = id {
                    // Pre-commit: every row of epochs ≤ id, and nothing newer.
                    write_until(
                        &|t: &Time| oldest.is_none_or(|b| t.epoch < b),
                        &mut pending,
                        &mut out,
                        &mut rows_in_progress,
                    );
                    let mut bytes = None;
                    if let Some(mut w) = out.take() {
                        let target = dir.join(pending_name(id));
                        w.flush()
                            .and_then(|()| w.get_ref().sync_all())
                            .and_then(|()| fs::rename(&inprogress, &target))
                            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
                        precommitted.push(id);
                        bytes = Some(
                            serde_json::to_vec(&serde_json::json!({
                                "file": pending_name(id),
                                "rows": rows_in_progress,
                            }))
                            .expect("json"),
                        );
                        rows_in_progress = 0;
                    }
                    let msg = ctx.write_part(id, part.clone(), bytes.as_deref());
                    let cap = ack_caps.first().expect("ack capability");
                    ack_out.activate().session(&cap).give(msg);
                }
            }
            if leader {
                // Only rows of completed epochs: a complete timestamp of a
                // later epoch, e.g. (12, 200) under the frontier
                // {(11, 500), (12, 300)}, belongs to a later checkpoint and
                // must not reach this checkpoint's file (it did, and a
                // restore then fired its window again: duplicates).
                write_until(
                    &|t: &Time| oldest.is_none_or(|b| t.epoch < b),
                    &mut pending,
                    &mut out,
                    &mut rows_in_progress,
                );
            }
            completions.for_each(|_, batches| {
                for Completion { id, was_final } in batches.drain(..) {
                    precommitted.retain(|&p| {
                        let target = if p == FINAL {
                            if !was_final {
                                return true;
                            }
                            id
                        } else if p <= id {
                            p
                        } else {
                            return true;
                        };
                        let from = dir.join(pending_name(p));
                        let to = dir.join(part_name(target));
                        fs::rename(&from, &to)
                            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
                        false
                    });
                }
            });
            ack_caps.downgrade(frontier.frontier().iter());
        }
    });
    checkpoints.add_writer(acks);
    Ok(())
}
