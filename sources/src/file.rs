//! File replay: CSV and JSON-lines files, plain or gzip, one partition per file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use streamforge_dataflow::checkpoint::PartitionPosition;
use streamforge_dataflow::reader_thread;
use streamforge_dataflow::source::{PartitionReader, ReadStatus, SourceItem};
use streamforge_dataflow::DeadLetter;

use crate::decode::Val;
use crate::error::SourceError;
use crate::mapping::{CompiledMapping, SpanMapping, MAX_SLOTS};
use crate::record::{CsvDecoder, RecordDecoder};
use crate::span::Span;
use crate::value::ValueDecoder;

/// File formats.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A file source: paths (glob patterns allowed), format and mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Files or glob patterns; each file is one partition (read in name order).
    pub paths: Vec<String>,
    /// Format; by default from the extension (`.csv`, `.jsonl`/`.ndjson`/`.json`,
    /// each optionally followed by `.gz`).
    pub format: Option<FileFormat>,
    /// Field mapping.
    pub mapping: SpanMapping,
}

impl FileFormat {
    /// The format implied by a file name.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Some(FileFormat::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            Some(FileFormat::Jsonl)
        } else {
            None
        }
    }
}

/// Expands the configured paths (globs) into the list of partitions, relative to
/// `base` for relative paths.
///
/// # Errors
/// [`SourceError::NoFiles`] when a pattern matches nothing.
pub fn file_partitions(
    config: &FileSourceConfig,
    base: &Path,
) -> Result<Vec<PathBuf>, SourceError> {
    expand_paths(&config.paths, base)
}

/// Expands paths and glob patterns (relative ones against `base`) into files,
/// each pattern's matches in name order.
///
/// # Errors
/// [`SourceError::NoFiles`] when a pattern matches nothing.
pub fn expand_paths(paths: &[String], base: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    for p in paths {
        let full = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        };
        let pattern = full.to_string_lossy().to_string();
        let mut matched: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| SourceError::Mapping {
                path: pattern.clone(),
                reason: e.to_string(),
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        if matched.is_empty() {
            return Err(SourceError::NoFiles(pattern));
        }
        matched.sort();
        files.extend(matched);
    }
    Ok(files)
}

/// Opens a file (decompressing `.gz`) positioned `skip` bytes into its
/// (decompressed) content.
fn open_raw(path: &Path, skip: u64) -> Result<Box<dyn Read + Send>, SourceError> {
    let err = |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz {
        let mut r = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f));
        let skipped = std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink()).map_err(err)?;
        if skipped < skip {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("checkpoint position {skip} is past the end ({skipped})"),
            )));
        }
        // A reader thread inflates as it parses; without one, a read-ahead
        // thread inflates while the worker parses.
        if reader_thread::enabled() {
            Box::new(r)
        } else {
            Box::new(ReadAhead::spawn(r).map_err(err)?)
        }
    } else {
        f.seek(SeekFrom::Start(skip)).map_err(err)?;
        Box::new(f)
    })
}

/// Bytes a [`ReadAhead`] thread decompresses per chunk.
const READ_AHEAD_CHUNK: usize = 256 << 10;
/// Chunks a [`ReadAhead`] thread keeps ready (its memory: this many
/// chunks, plus one being filled and one being read).
const READ_AHEAD_CHUNKS: usize = 4;

/// A reader whose input is read (and decompressed) on a thread of its own,
/// at most [`READ_AHEAD_CHUNKS`] chunks of [`READ_AHEAD_CHUNK`] bytes ahead
/// of the worker that parses it: gzip inflation (~25 % of a worker's time on
/// the TrainTicket CSV files) overlaps with parsing instead of adding to it.
/// Gzip files get one when their partition has no reader thread
/// ([`reader_thread::enabled`]): the main job at `-w 2` on 2 cores reads
/// ~20 % faster with it.
///
/// The bytes are exactly those of the inner reader, in order; an error of the
/// inner reader is returned once, where it happened, and the stream ends
/// after it. Dropping the reader stops the thread (its next send fails).
///
/// # Examples
/// ```
/// use std::io::Read;
/// use streamforge_sources::file::ReadAhead;
/// let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
/// let mut out = Vec::new();
/// ReadAhead::spawn(std::io::Cursor::new(data.clone()))?.read_to_end(&mut out)?;
/// assert_eq!(out, data);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<std::io::Result<(Vec<u8>, usize)>>,
    /// Read chunks go back to the thread to be filled again (no allocation,
    /// zeroing or page faults per chunk).
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    /// The filled length of `chunk` and the read position in it.
    len: usize,
    at: usize,
}

impl ReadAhead {
    /// Starts reading `inner` on a new thread.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(mut inner: impl Read + Send + 'static) -> std::io::Result<ReadAhead> {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_CHUNKS);
        let (spent_tx, spent) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD_CHUNKS + 2);
        let fill = move || loop {
            let mut chunk = spent
                .try_recv()
                .unwrap_or_else(|_| vec![0u8; READ_AHEAD_CHUNK]);
            let mut n = 0;
            while n < chunk.len() {
                match inner.read(&mut chunk[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if n > 0 {
                            let _ = tx.send(Ok((chunk, n)));
                        }
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            if n == 0 || tx.send(Ok((chunk, n))).is_err() {
                return;
            }
        };
        std::thread::Builder::new()
            .name("sf-read-ahead".into())
            .spawn(fill)?;
        Ok(ReadAhead {
            chunks: rx,
            spent: spent_tx,
            chunk: Vec::new(),
            len: 0,
            at: 0,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.len {
            match self.chunks.recv() {
                Ok(Ok((chunk, len))) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    if !spent.is_empty() {
                        let _ = self.spent.try_send(spent);
                    }
                    (self.len, self.at) = (len, 0);
                }
                Ok(Err(e)) => return Err(e),
                // The thread finished: the end of the input.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `reader` read and decoded on a thread of its own
/// ([`streamforge_dataflow::reader_thread`]) where the workers leave cores
/// for that ([`reader_thread::enabled`]), else `reader` itself.
fn on_reader_thread<D: Send + 'static>(
    path: &Path,
    reader: Box<dyn PartitionReader<D> + Send>,
) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
    if !reader_thread::enabled() {
        return Ok(reader);
    }
    reader_thread::on_reader_thread(reader).map_err(|source| SourceError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Opens one file as a partition of spans.
///
/// # Errors
/// The file cannot be opened, its format is unknown, the mapping is invalid, or
/// (CSV) a mapped column is missing from the header.
pub fn open_file_partition(
    path: &Path,
    format: Option<FileFormat>,
    mapping: &SpanMapping,
) -> Result<Box<dyn PartitionReader<Span>>, SourceError> {
    open_file_partition_at(path, format, mapping, None)
}

/// [`open_file_partition`] continuing at a checkpointed position (the byte
/// offset in the decompressed content and the number of lines or records read).
///
/// # Errors
/// As [`open_file_partition`], or the position is past the end of the file.
pub fn open_file_partition_at(
    path: &Path,
    format: Option<FileFormat>,
    mapping: &SpanMapping,
    position: Option<&PartitionPosition>,
) -> Result<Box<dyn PartitionReader<Span>>, SourceError> {
    let name = path.display().to_string();
    let format = format
        .or_else(|| FileFormat::from_path(path))
        .ok_or_else(|| SourceError::UnknownFormat(name.clone()))?;
    let mapping = mapping.compile().map_err(|reason| SourceError::Mapping {
        path: name.clone(),
        reason,
    })?;
    Ok(match format {
        FileFormat::Jsonl => open_jsonl_at(path, ValueDecoder::from_compiled(mapping), position)?,
        FileFormat::Csv => open_csv_at(path, SpanCsvDecoder::new(mapping), position)?,
    })
}

/// Opens a JSON-lines file (plain or `.gz`) as a partition whose lines
/// `decoder` turns into records, continuing at `position` when restoring.
/// Lines the decoder rejects become dead letters (line number, reason, raw
/// line); blank lines are skipped.
///
/// # Errors
/// The file cannot be opened, or the position is past its end.
pub fn open_jsonl_at<D: Send + 'static, Dec: RecordDecoder<D> + Send>(
    path: &Path,
    mut decoder: Dec,
    position: Option<&PartitionPosition>,
) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
    let (skip, lines) = position.map_or((0, 0), |p| (p.offset, p.line));
    if let Some(p) = position {
        decoder.resume(p.max_seen);
    }
    on_reader_thread(
        path,
        Box::new(JsonlPartition {
            name: path.display().to_string(),
            reader: BufReader::with_capacity(1 << 20, open_raw(path, skip)?),
            decoder,
            line_no: lines,
            carry: Vec::new(),
            done: false,
            consumed: skip,
        }),
    )
}

/// Opens a CSV file with a header row (plain or `.gz`) as a partition whose
/// rows `decoder` turns into records (it is bound to the header first),
/// continuing at `position` when restoring.
///
/// # Errors
/// The file cannot be opened, its header cannot be read or does not fit the
/// decoder, or the position is past its end.
pub fn open_csv_at<D: Send + 'static, Dec: CsvDecoder<D> + Send>(
    path: &Path,
    mut decoder: Dec,
    position: Option<&PartitionPosition>,
) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
    let name = path.display().to_string();
    let (skip, lines) = position.map_or((0, 0), |p| (p.offset, p.line));
    let builder = |headers: bool| {
        let mut b = simd_csv::ZeroCopyReaderBuilder::new();
        b.flexible(true)
            .has_headers(headers)
            .buffer_capacity(1 << 20);
        b
    };
    let mut reader = builder(true).from_reader(open_raw(path, 0)?);
    let headers = reader.byte_headers().map_err(|e| SourceError::Mapping {
        path: name.clone(),
        reason: e.to_string(),
    })?;
    let headers: csv::ByteRecord = headers.iter().collect();
    decoder
        .bind(&headers)
        .map_err(|reason| SourceError::Mapping {
            path: name.clone(),
            reason,
        })?;
    // The line after the header.
    let mut line = 2;
    if let Some(p) = position {
        decoder.resume(p.max_seen);
        // Continue after the checkpointed record (the header was read above).
        reader = builder(false).from_reader(open_raw(path, skip)?);
        line = lines.max(1);
    }
    on_reader_thread(
        path,
        Box::new(CsvPartition {
            name,
            reader,
            decoder,
            record: csv::ByteRecord::new(),
            skip,
            line,
        }),
    )
}

/// Decodes CSV rows into spans with a compiled mapping (columns found by
/// header name).
struct SpanCsvDecoder {
    mapping: CompiledMapping,
    columns: Vec<usize>,
}

impl SpanCsvDecoder {
    fn new(mapping: CompiledMapping) -> Self {
        SpanCsvDecoder {
            mapping,
            columns: Vec::new(),
        }
    }
}

impl CsvDecoder<Span> for SpanCsvDecoder {
    fn bind(&mut self, headers: &csv::ByteRecord) -> Result<(), String> {
        self.columns = self
            .mapping
            .slots()
            .iter()
            .map(|slot| {
                headers
                    .iter()
                    .position(|h| h == slot.as_bytes())
                    .ok_or_else(|| format!("no column {slot:?} in header"))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn decode_record(&mut self, record: &csv::ByteRecord) -> Result<(u64, Span), String> {
        let mut vals: [Val<'_>; MAX_SLOTS] = Default::default();
        for (slot, &col) in self.columns.iter().enumerate() {
            if let Some(bytes) = record.get(col) {
                match std::str::from_utf8(bytes) {
                    Ok(s) => vals[slot] = Val::Str(s.into()),
                    Err(_) => return Err(format!("{}: invalid UTF-8", self.mapping.slots()[slot])),
                }
            }
        }
        self.mapping.build(&vals)
    }
}

struct JsonlPartition<Dec> {
    name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    decoder: Dec,
    line_no: u64,
    carry: Vec<u8>,
    done: bool,
    /// Bytes handed to `consume` (the carry included).
    consumed: u64,
}

fn json_line<D, Dec: RecordDecoder<D>>(
    decoder: &mut Dec,
    name: &str,
    line_no: u64,
    line: &[u8],
    out: &mut Vec<SourceItem<D>>,
) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    out.push(match decoder.decode(line) {
        Ok((event_time_ms, record)) => SourceItem::Record {
            event_time_ms,
            record,
        },
        Err(reason) => SourceItem::DeadLetter(DeadLetter {
            source: name.to_string(),
            position: line_no,
            reason,
            raw: String::from_utf8_lossy(line).into_owned(),
        }),
    });
}

impl<D, Dec: RecordDecoder<D>> PartitionReader<D> for JsonlPartition<Dec> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        let JsonlPartition {
            name,
            reader,
            decoder,
            line_no,
            carry,
            done,
            consumed: total,
        } = self;
        if *done {
            return Ok(ReadStatus::Finished);
        }
        let start = out.len();
        while out.len() - start < max_items {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                if !carry.is_empty() {
                    *line_no += 1;
                    json_line(decoder, name, *line_no, carry, out);
                    carry.clear();
                }
                *done = true;
                return Ok(ReadStatus::Finished);
            }
            let mut consumed = 0;
            while out.len() - start < max_items {
                let rest = &buf[consumed..];
                let Some(i) = memchr::memchr(b'\n', rest) else {
                    carry.extend_from_slice(rest);
                    consumed = buf.len();
                    break;
                };
                *line_no += 1;
                if carry.is_empty() {
                    json_line(decoder, name, *line_no, &rest[..i], out);
                } else {
                    carry.extend_from_slice(&rest[..i]);
                    json_line(decoder, name, *line_no, carry, out);
                    carry.clear();
                }
                consumed += i + 1;
            }
            reader.consume(consumed);
            *total += consumed as u64;
        }
        Ok(ReadStatus::More)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.consumed)
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.consumed - self.carry.len() as u64,
            line: self.line_no,
            ..PartitionPosition::default()
        }
    }
}

/// A CSV file read with simd-csv's zero-copy reader (RFC 4180 records: a
/// field quoted whole is unquoted and its doubled quotes unescaped, any
/// other field is taken as it is), each record copied into one reused
/// `csv::ByteRecord` for the decoder.
struct CsvPartition<Dec> {
    name: String,
    reader: simd_csv::ZeroCopyReader<Box<dyn Read + Send>>,
    decoder: Dec,
    record: csv::ByteRecord,
    /// The byte offset of the reader's start (after a restore).
    skip: u64,
    /// The line the next record starts on (records and the line breaks
    /// inside their quoted fields; blank lines are skipped uncounted).
    line: u64,
}

impl<D, Dec: CsvDecoder<D>> PartitionReader<D> for CsvPartition<Dec> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        for _ in 0..max_items {
            let line = self.line;
            match self.reader.read_byte_record() {
                Ok(None) => return Ok(ReadStatus::Finished),
                Ok(Some(r)) => {
                    self.line += 1;
                    self.record.clear();
                    for (i, raw) in r.iter().enumerate() {
                        // Only a quoted field holds quotes to unescape or
                        // line breaks to count.
                        if raw.first() == Some(&b'"') {
                            self.line += memchr::memchr_iter(b'\n', raw).count() as u64;
                            self.record.push_field(&r.unescape(i).unwrap_or_default());
                        } else {
                            self.record.push_field(raw);
                        }
                    }
                }
                Err(e) if e.is_io_error() => return Err(Box::new(e)),
                Err(e) => {
                    out.push(SourceItem::DeadLetter(DeadLetter {
                        source: self.name.clone(),
                        position: line,
                        reason: e.to_string(),
                        raw: String::new(),
                    }));
                    continue;
                }
            }
            out.push(match self.decoder.decode_record(&self.record) {
                Ok((event_time_ms, record)) => SourceItem::Record {
                    event_time_ms,
                    record,
                },
                Err(reason) => SourceItem::DeadLetter(DeadLetter {
                    source: self.name.clone(),
                    position: line,
                    reason,
                    raw: self
                        .record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                }),
            });
        }
        Ok(ReadStatus::More)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.reader.position())
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.skip + self.reader.position(),
            line: self.line,
            ..PartitionPosition::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Fields as they are, the event time from the record number.
    struct Fields(u64);

    impl CsvDecoder<Vec<Vec<u8>>> for Fields {
        fn bind(&mut self, _headers: &csv::ByteRecord) -> Result<(), String> {
            Ok(())
        }
        fn decode_record(&mut self, r: &csv::ByteRecord) -> Result<(u64, Vec<Vec<u8>>), String> {
            self.0 += 1;
            if r.get(0) == Some(b"reject") {
                return Err("rejected".into());
            }
            Ok((self.0, r.iter().map(<[u8]>::to_vec).collect()))
        }
    }

    /// Reads `reader` to its end in batches of `batch`: records, dead-letter
    /// lines.
    fn drain(
        reader: &mut dyn PartitionReader<Vec<Vec<u8>>>,
        batch: usize,
    ) -> (Vec<Vec<Vec<u8>>>, Vec<u64>) {
        let (mut records, mut dead, mut out) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let status = reader.read_batch(batch, &mut out).unwrap();
            for item in out.drain(..) {
                match item {
                    SourceItem::Record { record, .. } => records.push(record),
                    SourceItem::DeadLetter(d) => dead.push(d.position),
                }
            }
            if status == ReadStatus::Finished {
                return (records, dead);
            }
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        if name.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap();
        } else {
            f.write_all(bytes).unwrap();
        }
        path
    }

    fn field() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-c,\"\\n ]{0,6}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The partition reads what the csv crate reads (quoted fields,
        /// doubled quotes, line breaks inside quotes, ragged records), and
        /// a reader reopened at any position it reported continues with the
        /// next record, plain or gzip, on a reader thread or not.
        #[test]
        fn the_reader_agrees_with_the_csv_crate_and_resumes_anywhere(
            rows in proptest::collection::vec(proptest::collection::vec(field(), 1..4), 0..200),
            cut in 0usize..210,
            gz in any::<bool>(),
            threads in any::<bool>(),
        ) {
            reader_thread::set_enabled(threads);
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            w.write_record(["a", "b", "c"]).unwrap();
            for r in &rows {
                // A record of one empty field is a blank line: skipped.
                if r.len() == 1 && r[0].is_empty() {
                    continue;
                }
                w.write_record(r).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let mut expected = Vec::new();
            let mut lines = Vec::new();
            let mut oracle = csv::ReaderBuilder::new().flexible(true).from_reader(&bytes[..]);
            let mut rec = csv::ByteRecord::new();
            while oracle.read_byte_record(&mut rec).unwrap() {
                expected.push(rec.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
                lines.push(rec.position().unwrap().line());
            }
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), if gz { "t.csv.gz" } else { "t.csv" }, &bytes);
            let mut r = open_csv_at(&path, Fields(0), None).unwrap();
            let (all, _) = drain(&mut *r, 7);
            prop_assert_eq!(&all, &expected);

            // Stop after `cut` records (or the run that holds the cut),
            // reopen at the reported position.
            let cut = cut.min(expected.len());
            let mut r = open_csv_at(&path, Fields(0), None).unwrap();
            let (mut head, mut out) = (Vec::new(), Vec::new());
            while head.len() < cut {
                r.read_batch(1, &mut out).unwrap();
                for item in out.drain(..) {
                    if let SourceItem::Record { record, .. } = item {
                        head.push(record);
                    }
                }
            }
            // A reader thread delivers whole runs: maybe more than `cut`.
            let at = r.position();
            if !head.is_empty() {
                prop_assert_eq!(at.line, lines.get(head.len()).copied().unwrap_or(at.line));
            }
            let mut rest = open_csv_at(&path, Fields(0), Some(&at)).unwrap();
            head.extend(drain(&mut *rest, 3).0);
            prop_assert_eq!(&head, &expected);
        }
    }

    #[test]
    fn dead_letters_name_the_line_their_record_starts_on() {
        let dir = tempfile::tempdir().unwrap();
        let text = "a,b\nx,\"two\nlines\"\nreject,1\n\"q\"\"uote\",2\nreject,\"\"\n";
        let path = write(dir.path(), "d.csv", text.as_bytes());
        let mut r = open_csv_at(&path, Fields(0), None).unwrap();
        let (records, dead) = drain(&mut *r, 10);
        assert_eq!(dead, vec![4, 6]);
        assert_eq!(
            records,
            vec![
                vec![b"x".to_vec(), b"two\nlines".to_vec()],
                vec![b"q\"uote".to_vec(), b"2".to_vec()]
            ]
        );
    }

    #[test]
    fn read_ahead_passes_errors_on_where_they_happen() {
        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = ReadAhead::spawn(Fails(300_000)).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(
            (out.len(), e.to_string()),
            (300_000, "disk gone".to_string())
        );
    }
}
