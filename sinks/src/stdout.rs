//! A readable stdout table.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::Time;

/// Extension trait: `stream.sink_stdout_table(..)` and `stream.sink_table(..)`.
pub trait SinkStdoutTable<'scope, D> {
    /// Prints records as an aligned table on stdout; see [`Self::sink_table`].
    fn sink_stdout_table(self, name: &str, columns: Vec<(String, usize)>, max_rows: usize);

    /// Writes records as an aligned table to `out` on worker 0: the given
    /// `(column, width)` pairs of each record's JSON form, rows sorted per
    /// timestamp, at most `max_rows` rows, then a count of the rest.
    ///
    /// # Panics
    /// On a write error other than a closed pipe (`| head` is fine).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge_sinks::SinkStdoutTable;
    /// use timely::dataflow::operators::{ToStream, vec::Map};
    ///
    /// #[derive(Clone)]
    /// struct Shared(Arc<Mutex<Vec<u8>>>);
    /// impl std::io::Write for Shared {
    ///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
    ///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
    /// }
    /// let buf = Shared(Arc::new(Mutex::new(vec![])));
    /// let out = buf.clone();
    /// streamforge_dataflow::time::example(move |scope| {
    ///     let rows = vec![("cart", 3u64), ("ad", 5), ("email", 1)].to_stream(scope).container::<Vec<_>>();
    ///     rows.map(|(s, n)| serde_json::json!({"service": s, "total_count": n}))
    ///         .sink_table("t", vec![("service".into(), 8), ("total_count".into(), 11)], 2, out);
    /// });
    /// let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    /// assert_eq!(text, "service   total_count\nad        5\ncart      3\n… 1 more rows\n");
    /// ```
    fn sink_table(
        self,
        name: &str,
        columns: Vec<(String, usize)>,
        max_rows: usize,
        out: impl Write + 'static,
    );
}

/// Formats one row's columns (floats with 3 decimals), each padded to its width, two spaces apart,
/// trailing blanks trimmed.
///
/// # Examples
/// ```
/// use streamforge_sinks::stdout::format_row;
/// let row = serde_json::json!({"service": "cart", "total_count": 3});
/// let cols = vec!["service".to_string(), "total_count".to_string()];
/// assert_eq!(format_row(&row, &cols, &[8, 11]), "cart      3");
/// ```
pub fn format_row(row: &serde_json::Value, columns: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (c, w) in columns.iter().zip(widths) {
        let cell = match row.get(c) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.3}"),
                _ => n.to_string(),
            },
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let cell: String = cell.chars().take(*w).collect();
        line.push_str(&format!("{cell:<w$}  ", w = *w));
    }
    line.truncate(line.trim_end().len());
    line
}

impl<'scope, D: ExchangeData + Serialize> SinkStdoutTable<'scope, D>
    for Stream<'scope, Time, Vec<D>>
{
    fn sink_stdout_table(self, name: &str, columns: Vec<(String, usize)>, max_rows: usize) {
        self.sink_table(name, columns, max_rows, std::io::stdout())
    }

    fn sink_table(
        self,
        name: &str,
        columns: Vec<(String, usize)>,
        max_rows: usize,
        mut out: impl Write + 'static,
    ) {
        let widths: Vec<usize> = columns.iter().map(|(c, w)| (*w).max(c.len())).collect();
        let columns: Vec<String> = columns.into_iter().map(|(c, _)| c).collect();
        let mut printed = 0usize;
        let mut hidden = 0usize;
        let mut header = false;
        let mut pending: BTreeMap<Time, Vec<String>> = BTreeMap::new();
        self.sink(Exchange::new(|_: &D| 0), name, move |(input, frontier)| {
            input.for_each_time(|cap, data| {
                let rows = pending.entry(*cap.time()).or_default();
                for d in data.flat_map(|d| d.drain(..)) {
                    let v = serde_json::to_value(&d).expect("serializable row");
                    rows.push(format_row(&v, &columns, &widths));
                }
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let mut rows = entry.remove();
                rows.sort();
                for r in rows {
                    if printed < max_rows {
                        if !header {
                            let h: Vec<String> = columns
                                .iter()
                                .zip(&widths)
                                .map(|(c, w)| format!("{c:<w$}", w = *w))
                                .collect();
                            emit(writeln!(out, "{}", h.join("  ").trim_end()));
                            header = true;
                        }
                        emit(writeln!(out, "{r}"));
                        printed += 1;
                    } else {
                        hidden += 1;
                    }
                }
            }
            if frontier.is_empty() && hidden > 0 {
                emit(writeln!(out, "… {hidden} more rows"));
                hidden = 0;
            }
        });
    }
}

fn emit(result: std::io::Result<()>) {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("table output: {e}"),
        _ => {}
    }
}
