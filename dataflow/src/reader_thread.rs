//! A partition reader that reads and decodes on a thread of its own.
//!
//! A worker that reads a file partition does everything for each record:
//! read (and inflate) the file, split the CSV record or JSON line, decode
//! the values, and then the job's own work (steps, key, windows, sinks).
//! [`on_reader_thread`] moves the reader — I/O, decompression, parsing,
//! decoding — onto a thread of its own (Flink's source reader thread), a
//! bounded number of chunks ahead of the worker, so reading overlaps with
//! the job's work and uses cores the workers leave idle (one file at
//! `-w 2`: the second worker has only its share of the windows to do).
//!
//! Checkpoints stay exact: the reader thread records the inner reader's
//! [`PartitionReader::position`] (and bytes read) after each run of
//! [`MARK_ITEMS`] items, and the worker side reports the position after the
//! last run it *delivered*. What the thread read ahead and the worker never
//! delivered is read again after a restore. Runs are delivered whole, so a
//! call may return up to `MARK_ITEMS - 1` items more than `max_items`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};

use crate::checkpoint::PartitionPosition;
use crate::source::{PartitionReader, ReadStatus, SourceItem};

/// Items the reader thread reads per chunk.
pub const CHUNK_ITEMS: usize = 1024;
/// Items between two positions the reader thread records in a chunk: the
/// worker delivers whole runs of this many items (so at most this many
/// more than a call asks for; a rate-limited source stays smooth).
pub const MARK_ITEMS: usize = 64;
/// Chunks the reader thread keeps ready ahead of the worker.
pub const CHUNKS_AHEAD: usize = 4;

type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Where the inner reader stood after the chunk's first `end` items.
struct Mark {
    end: usize,
    position: PartitionPosition,
    bytes_read: Option<u64>,
}

/// One chunk: the items, positions inside it, and the inner reader's
/// status after it.
struct Chunk<D> {
    items: Vec<SourceItem<D>>,
    marks: Vec<Mark>,
    status: ReadStatus,
}

/// Whether [`plan`] found cores for reader threads.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Decides, for the workers of this process, whether file partitions get
/// reader threads: when the process runs fewer workers than the machine has
/// cores (`std::thread::available_parallelism`), a reader thread uses a core
/// the workers leave idle; when every core has a worker, reader threads only
/// add hand-over costs (measured on the main job at `-w 2` on 2 cores: −5 %).
/// `STREAMFORGE_READER_THREADS=1` or `=0` decides instead. Returns the
/// decision, which [`enabled`] gives until the next call.
///
/// # Examples
/// ```
/// use streamforge_dataflow::reader_thread::{enabled, plan};
/// if std::env::var_os("STREAMFORGE_READER_THREADS").is_none() {
///     assert!(!plan(usize::MAX));
///     assert!(!enabled());
/// }
/// ```
pub fn plan(workers_per_process: usize) -> bool {
    let on = forced().unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get()) > workers_per_process
    });
    set_enabled(on);
    on
}

/// The choice `STREAMFORGE_READER_THREADS=1|0` forces, if any.
fn forced() -> Option<bool> {
    match std::env::var("STREAMFORGE_READER_THREADS").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// Turns reader threads on for a file source with fewer partitions than
/// the cluster has workers (unless `STREAMFORGE_READER_THREADS=0`): the
/// workers that read nothing only have their share of the keyed work, so
/// their cores are there for the readers (one JSONL file at `-w 2` on 2
/// cores: +16 %). Call it after [`plan`]; it never turns them off.
///
/// # Examples
/// ```
/// use streamforge_dataflow::reader_thread::{enabled, plan_for_source, set_enabled};
/// set_enabled(false);
/// plan_for_source(2, 2);
/// assert!(!enabled());
/// if std::env::var_os("STREAMFORGE_READER_THREADS").is_none() {
///     plan_for_source(1, 2);
///     assert!(enabled());
/// }
/// ```
pub fn plan_for_source(partitions: usize, total_workers: usize) {
    if partitions < total_workers && forced() != Some(false) {
        set_enabled(true);
    }
}

/// Sets what [`enabled`] gives, as [`plan`] would (tests and benchmarks
/// that need one mode whatever the machine).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The last decision of [`plan`] or [`set_enabled`] (`false` before any).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A reader running its inner reader on a thread of its own.
struct ReaderThread<D> {
    name: String,
    chunks: Receiver<Result<Chunk<D>, ReadError>>,
    /// The chunk being delivered: items not yet delivered, their marks, the
    /// index of the next item, the status after the chunk.
    items: std::vec::IntoIter<SourceItem<D>>,
    marks: std::vec::IntoIter<Mark>,
    next: usize,
    status: ReadStatus,
    /// Position and bytes read after the last delivered item.
    position: PartitionPosition,
    bytes_read: Option<u64>,
    /// The reader's error, received after items the worker has not taken.
    failed: Option<ReadError>,
}

impl<D> ReaderThread<D> {
    /// Everything delivered, and the thread has stopped: live statuses are
    /// not expected (see [`on_reader_thread`]), so the thread stops after
    /// any status but `More`.
    fn finished(&self) -> bool {
        self.marks.len() == 0 && self.status != ReadStatus::More
    }

    fn stopped(&self) -> ReadError {
        format!("the reader thread of {} stopped", self.name).into()
    }
}

/// `inner` read on a thread of its own, up to [`CHUNKS_AHEAD`] chunks of
/// [`CHUNK_ITEMS`] items ahead of the worker (see the module docs).
///
/// For readers that block on local I/O (files). Live readers that return
/// [`ReadStatus::Idle`] or rely on a waker or on being paused (Kafka) keep
/// their own threads and are not wrapped: the wrapper forwards neither
/// [`PartitionReader::set_waker`] nor [`PartitionReader::set_paused`] (a
/// held-back partition simply stops taking chunks; the thread then waits
/// on the full queue), and it ends at the first status other than `More`.
///
/// # Errors
/// The thread cannot be started (the error of `std::thread::Builder::spawn`).
///
/// # Examples
/// ```
/// use streamforge_dataflow::reader_thread::{on_reader_thread, MARK_ITEMS};
/// use streamforge_dataflow::source::{PartitionReader, ReadStatus, SourceItem, VecPartition};
/// let items: Vec<(u64, u32)> = (0..5_000u64).map(|i| (i, i as u32)).collect();
/// let mut r = on_reader_thread(Box::new(VecPartition::new("p", items)))?;
/// let (mut out, mut got) = (Vec::new(), Vec::new());
/// let records = |out: &mut Vec<SourceItem<u32>>| -> Vec<u32> {
///     out.drain(..).map(|i| match i { SourceItem::Record { record, .. } => record, _ => unreachable!() }).collect()
/// };
/// while r.read_batch(100, &mut out).unwrap() != ReadStatus::Finished {
///     // Whole runs of MARK_ITEMS: at least what was asked, less than a run more.
///     assert!(out.len() >= 100 && out.len() < 100 + MARK_ITEMS);
///     got.extend(records(&mut out));
///     // The position is that of the items delivered so far.
///     assert_eq!(r.position().offset, got.len() as u64);
/// }
/// got.extend(records(&mut out));
/// assert_eq!(got, (0..5_000u32).collect::<Vec<_>>());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn on_reader_thread<D: Send + 'static>(
    mut inner: Box<dyn PartitionReader<D> + Send>,
) -> std::io::Result<Box<dyn PartitionReader<D>>> {
    let name = inner.describe();
    let position = inner.position();
    let bytes_read = inner.bytes_read();
    let (tx, rx) = sync_channel(CHUNKS_AHEAD);
    let read = move || loop {
        let mut items = Vec::with_capacity(CHUNK_ITEMS + MARK_ITEMS);
        let mut marks = Vec::with_capacity(CHUNK_ITEMS / MARK_ITEMS + 1);
        let mut status = ReadStatus::More;
        let mut failed = None;
        while items.len() < CHUNK_ITEMS && status == ReadStatus::More {
            match inner.read_batch(MARK_ITEMS, &mut items) {
                Ok(s) => {
                    status = s;
                    marks.push(Mark {
                        end: items.len(),
                        position: inner.position(),
                        bytes_read: inner.bytes_read(),
                    });
                }
                Err(e) => {
                    // What the failing call added has no position.
                    items.truncate(marks.last().map_or(0, |m: &Mark| m.end));
                    failed = Some(e);
                    break;
                }
            }
        }
        let sent = tx.send(Ok(Chunk {
            items,
            marks,
            status,
        }));
        if let Some(e) = failed {
            let _ = tx.send(Err(e));
            return;
        }
        if sent.is_err() || status != ReadStatus::More {
            return;
        }
    };
    std::thread::Builder::new()
        .name("sf-reader".into())
        .spawn(read)?;
    Ok(Box::new(ReaderThread {
        name,
        chunks: rx,
        items: Vec::new().into_iter(),
        marks: Vec::new().into_iter(),
        next: 0,
        status: ReadStatus::More,
        position,
        bytes_read,
        failed: None,
    }))
}

impl<D> PartitionReader<D> for ReaderThread<D> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, ReadError> {
        let mut given = 0;
        loop {
            if self.marks.len() == 0 {
                if self.finished() {
                    return Ok(ReadStatus::Finished);
                }
                // With items in hand, take only a chunk that is ready, and
                // keep an error for the next call.
                let next = if given == 0 {
                    if let Some(e) = self.failed.take() {
                        return Err(e);
                    }
                    self.chunks.recv().map_err(|_| self.stopped())?
                } else {
                    match self.chunks.try_recv() {
                        Ok(next) => next,
                        Err(_) => return Ok(ReadStatus::More),
                    }
                };
                match next {
                    Ok(chunk) => {
                        self.items = chunk.items.into_iter();
                        self.marks = chunk.marks.into_iter();
                        self.next = 0;
                        self.status = chunk.status;
                    }
                    Err(e) if given == 0 => return Err(e),
                    Err(e) => {
                        self.failed = Some(e);
                        return Ok(ReadStatus::More);
                    }
                }
                continue;
            }
            let mark = self.marks.next().expect("checked above");
            out.extend(self.items.by_ref().take(mark.end - self.next));
            given += mark.end - self.next;
            self.next = mark.end;
            self.position = mark.position;
            self.bytes_read = mark.bytes_read;
            if given >= max_items {
                return Ok(if self.finished() {
                    ReadStatus::Finished
                } else {
                    ReadStatus::More
                });
            }
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn bytes_read(&self) -> Option<u64> {
        self.bytes_read
    }

    fn position(&self) -> PartitionPosition {
        self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::VecPartition;

    /// A reader that fails after `ok` items.
    struct Failing {
        ok: u64,
        read: u64,
    }

    impl PartitionReader<u64> for Failing {
        fn read_batch(
            &mut self,
            max_items: usize,
            out: &mut Vec<SourceItem<u64>>,
        ) -> Result<ReadStatus, ReadError> {
            for _ in 0..max_items {
                if self.read == self.ok {
                    return Err("disk gone".into());
                }
                out.push(SourceItem::Record {
                    event_time_ms: self.read,
                    record: self.read,
                });
                self.read += 1;
            }
            Ok(ReadStatus::More)
        }
        fn describe(&self) -> String {
            "failing".into()
        }
        fn position(&self) -> PartitionPosition {
            PartitionPosition {
                offset: self.read,
                ..PartitionPosition::default()
            }
        }
    }

    #[test]
    fn positions_are_those_of_delivered_chunks_and_errors_arrive_in_order() {
        let mut r = on_reader_thread(Box::new(Failing {
            ok: 2 * CHUNK_ITEMS as u64 + 10,
            read: 0,
        }))
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(r.position().offset, 0);
        // Give the thread time to run ahead: positions must not follow it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(r.position().offset, 0);
        assert_eq!(r.read_batch(1, &mut out).unwrap(), ReadStatus::More);
        assert_eq!(
            (out.len(), r.position().offset),
            (MARK_ITEMS, MARK_ITEMS as u64)
        );
        assert_eq!(
            r.read_batch(CHUNK_ITEMS, &mut out).unwrap(),
            ReadStatus::More
        );
        assert_eq!(r.position().offset, (CHUNK_ITEMS + MARK_ITEMS) as u64);
        assert_eq!(
            r.read_batch(CHUNK_ITEMS, &mut out).unwrap(),
            ReadStatus::More
        );
        // The items of the failing call's last run are not delivered.
        assert_eq!(r.position().offset, 2 * CHUNK_ITEMS as u64);
        let e = r.read_batch(CHUNK_ITEMS, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
        assert_eq!(out.len(), 2 * CHUNK_ITEMS);
    }

    #[test]
    fn a_finished_reader_stays_finished() {
        let mut r = on_reader_thread(Box::new(VecPartition::new("v", vec![(1u64, 1u8)]))).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.read_batch(10, &mut out).unwrap(), ReadStatus::Finished);
        assert_eq!(r.read_batch(10, &mut out).unwrap(), ReadStatus::Finished);
        assert_eq!(out.len(), 1);
    }
}
