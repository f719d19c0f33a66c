//! JSON-lines file sink.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::Time;

use crate::error::SinkError;

/// Extension trait: `stream.sink_jsonl(..)`.
pub trait SinkJsonl<'scope, D> {
    /// Writes every record as one JSON line to `path` (created with its parent
    /// directories, truncated), from worker 0. Lines of one timestamp are sorted
    /// bytewise and written once the frontier has passed it; the file is flushed
    /// when the input ends. `written` counts lines.
    ///
    /// # Errors
    /// When the file cannot be created (checked before the dataflow runs).
    ///
    /// # Panics
    /// On a write error while running (fail-stop: the job is restarted from a
    /// checkpoint rather than losing rows).
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::SinkJsonl;
    /// use timely::dataflow::operators::{ToStream, vec::Map};
    /// let dir = std::env::temp_dir().join(format!("sf-jsonl-{}", std::process::id()));
    /// let path = dir.join("out.jsonl");
    /// let p = path.clone();
    /// streamforge_dataflow::time::example(move |scope| {
    ///     let s = vec![3u32, 1, 2].to_stream(scope).container::<Vec<_>>();
    ///     s.map(|x| serde_json::json!({"x": x})).sink_jsonl("out", p, None).unwrap();
    /// });
    /// assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n");
    /// ```
    fn sink_jsonl(
        self,
        name: &str,
        path: impl Into<PathBuf>,
        written: Option<Arc<AtomicU64>>,
    ) -> Result<(), SinkError>;
}

impl<'scope, D: ExchangeData + Serialize> SinkJsonl<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn sink_jsonl(
        self,
        name: &str,
        path: impl Into<PathBuf>,
        written: Option<Arc<AtomicU64>>,
    ) -> Result<(), SinkError> {
        sink_encoded(self, name, path.into(), written, None, |d: D| {
            serde_json::to_vec(&d).expect("serializable row")
        })
    }
}

/// Extension trait: `stream.sink_lines(..)` for pre-encoded lines (CSV rows,
/// JSON built by the caller).
pub trait SinkLines<'scope> {
    /// Writes every line (without its newline) to `path` as
    /// [`SinkJsonl::sink_jsonl`] does, after `header` (e.g. a CSV header row).
    ///
    /// # Errors
    /// When the file cannot be created (checked before the dataflow runs).
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::jsonl::SinkLines;
    /// use timely::dataflow::operators::ToStream;
    /// let path = std::env::temp_dir().join(format!("sf-lines-{}.csv", std::process::id()));
    /// let p = path.clone();
    /// streamforge_dataflow::time::example(move |scope| {
    ///     vec!["b,2".to_string(), "a,1".to_string()].to_stream(scope)
    ///         .sink_lines("csv", p, Some("name,n".into()), None).unwrap();
    /// });
    /// assert_eq!(std::fs::read_to_string(&path).unwrap(), "name,n\na,1\nb,2\n");
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    fn sink_lines(
        self,
        name: &str,
        path: impl Into<PathBuf>,
        header: Option<String>,
        written: Option<Arc<AtomicU64>>,
    ) -> Result<(), SinkError>;
}

impl<'scope> SinkLines<'scope> for Stream<'scope, Time, Vec<String>> {
    fn sink_lines(
        self,
        name: &str,
        path: impl Into<PathBuf>,
        header: Option<String>,
        written: Option<Arc<AtomicU64>>,
    ) -> Result<(), SinkError> {
        sink_encoded(self, name, path.into(), written, header, String::into_bytes)
    }
}

/// Writes `encode(d)` lines of completed timestamps, sorted per timestamp,
/// from worker 0, after `header`.
fn sink_encoded<D: ExchangeData>(
    stream: Stream<'_, Time, Vec<D>>,
    name: &str,
    path: PathBuf,
    written: Option<Arc<AtomicU64>>,
    header: Option<String>,
    encode: impl Fn(D) -> Vec<u8> + 'static,
) -> Result<(), SinkError> {
    let shown = path.display().to_string();
    let mut out = if stream.scope().index() == 0 {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                path: shown.clone(),
                source,
            })?;
        }
        let f = File::create(&path).map_err(|source| SinkError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        if let Some(h) = &header {
            w.write_all(h.as_bytes())
                .and_then(|()| w.write_all(b"\n"))
                .map_err(|source| SinkError::Io {
                    path: shown.clone(),
                    source,
                })?;
        }
        Some(w)
    } else {
        None
    };
    let written = written.unwrap_or_default();
    let mut pending: BTreeMap<Time, Vec<Vec<u8>>> = BTreeMap::new();
    stream.sink(Exchange::new(|_: &D| 0), name, move |(input, frontier)| {
        input.for_each_time(|cap, data| {
            let lines = pending.entry(*cap.time()).or_default();
            for d in data.flat_map(|d| d.drain(..)) {
                lines.push(encode(d));
            }
        });
        let Some(out) = out.as_mut() else { return };
        let mut wrote = false;
        while let Some(entry) = pending.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let mut lines = entry.remove();
            lines.sort_unstable();
            for l in &lines {
                out.write_all(l)
                    .and_then(|()| out.write_all(b"\n"))
                    .unwrap_or_else(|e| panic!("{shown}: {e}"));
            }
            written.fetch_add(lines.len() as u64, Ordering::Relaxed);
            wrote = true;
        }
        if wrote || frontier.is_empty() {
            out.flush().unwrap_or_else(|e| panic!("{shown}: {e}"));
        }
    });
    Ok(())
}
