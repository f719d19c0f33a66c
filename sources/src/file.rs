//! File replay: CSV and JSON-lines files, plain or gzip, one partition per file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use streamforge_dataflow::checkpoint::PartitionPosition;
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
        Box::new(r)
    } else {
        f.seek(SeekFrom::Start(skip)).map_err(err)?;
        Box::new(f)
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
pub fn open_jsonl_at<D: 'static, Dec: RecordDecoder<D>>(
    path: &Path,
    mut decoder: Dec,
    position: Option<&PartitionPosition>,
) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
    let (skip, lines) = position.map_or((0, 0), |p| (p.offset, p.line));
    if let Some(p) = position {
        decoder.resume(p.max_seen);
    }
    Ok(Box::new(JsonlPartition {
        name: path.display().to_string(),
        reader: BufReader::with_capacity(1 << 20, open_raw(path, skip)?),
        decoder,
        line_no: lines,
        carry: Vec::new(),
        done: false,
        consumed: skip,
    }))
}

/// Opens a CSV file with a header row (plain or `.gz`) as a partition whose
/// rows `decoder` turns into records (it is bound to the header first),
/// continuing at `position` when restoring.
///
/// # Errors
/// The file cannot be opened, its header cannot be read or does not fit the
/// decoder, or the position is past its end.
pub fn open_csv_at<D: 'static, Dec: CsvDecoder<D>>(
    path: &Path,
    mut decoder: Dec,
    position: Option<&PartitionPosition>,
) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
    let name = path.display().to_string();
    let (skip, lines) = position.map_or((0, 0), |p| (p.offset, p.line));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(open_raw(path, 0)?);
    let headers = reader
        .byte_headers()
        .map_err(|e| SourceError::Mapping {
            path: name.clone(),
            reason: e.to_string(),
        })?
        .clone();
    decoder
        .bind(&headers)
        .map_err(|reason| SourceError::Mapping {
            path: name.clone(),
            reason,
        })?;
    if let Some(p) = position {
        decoder.resume(p.max_seen);
        // Continue after the checkpointed record (the header was read above).
        reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .buffer_capacity(1 << 20)
            .from_reader(open_raw(path, skip)?);
    }
    Ok(Box::new(CsvPartition {
        name,
        reader,
        decoder,
        record: csv::ByteRecord::new(),
        base: (skip, lines.saturating_sub(1)),
    }))
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

struct CsvPartition<Dec> {
    name: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    decoder: Dec,
    record: csv::ByteRecord,
    /// Byte offset and line of the reader's start (after a restore).
    base: (u64, u64),
}

impl<D, Dec: CsvDecoder<D>> PartitionReader<D> for CsvPartition<Dec> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        for _ in 0..max_items {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(ReadStatus::Finished),
                Ok(true) => {}
                Err(e) if e.is_io_error() => return Err(Box::new(e)),
                Err(e) => {
                    let line = self.base.1 + e.position().map_or(0, |p| p.line());
                    out.push(SourceItem::DeadLetter(DeadLetter {
                        source: self.name.clone(),
                        position: line,
                        reason: e.to_string(),
                        raw: String::new(),
                    }));
                    continue;
                }
            }
            let line = self.base.1 + self.record.position().map_or(0, |p| p.line());
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
        Some(self.reader.position().byte())
    }

    fn position(&self) -> PartitionPosition {
        let p = self.reader.position();
        PartitionPosition {
            offset: self.base.0 + p.byte(),
            line: self.base.1 + p.line(),
            ..PartitionPosition::default()
        }
    }
}
