//! A readable stdout table.

use std::collections::BTreeMap;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::Time;

/// Extension trait: `stream.sink_stdout_table(..)`.
pub trait SinkStdoutTable<'scope, D> {
    /// Prints records as an aligned table on worker 0: the given `(column, width)`
    /// pairs of each record's JSON form, rows sorted per timestamp, at most
    /// `max_rows` rows (then a count of the rest).
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::stdout::format_row;
    /// let row = serde_json::json!({"service": "cart", "total_count": 3});
    /// let cols = vec!["service".to_string(), "total_count".to_string()];
    /// assert_eq!(format_row(&row, &cols, &[8, 11]), "cart      3");
    /// ```
    fn sink_stdout_table(self, name: &str, columns: Vec<(String, usize)>, max_rows: usize);
}

/// Formats one row's columns, each padded to its width, two spaces apart,
/// trailing blanks trimmed.
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
                            println!("{}", h.join("  "));
                            header = true;
                        }
                        println!("{r}");
                        printed += 1;
                    } else {
                        hidden += 1;
                    }
                }
            }
            if frontier.is_empty() && hidden > 0 {
                println!("… {hidden} more rows");
                hidden = 0;
            }
        });
    }
}
