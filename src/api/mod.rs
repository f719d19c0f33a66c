//! The DataStream API: jobs over records of any shape, in the spirit of
//! Flink's DataStream API, on streamforge's timely operators and time model.
//!
//! A job is a function that builds its graph on a [`StreamEnv`]; [`execute`]
//! runs it on every worker (threads, processes of a cluster) and returns the
//! run's [`RunSummary`]:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use streamforge::api::{execute, JobOptions, WatermarkStrategy};
//! use streamforge::prelude::*;
//!
//! // (user, event time ms, amount)
//! let orders: Vec<(String, u64, i64)> = vec![
//!     ("ann".into(), 1_000, 5), ("bob".into(), 2_000, 7),
//!     ("ann".into(), 61_000, 1), ("bob".into(), 500, 3), // 500: behind the watermark
//! ];
//! let out = Arc::new(Mutex::new(Vec::new()));
//! let got = out.clone();
//! let late = Arc::new(Mutex::new(Vec::new()));
//! let late_seen = late.clone();
//! let summary = execute(&JobOptions::new("doc").workers(2), move |env| {
//!     let orders = env.from_partitions(
//!         "orders",
//!         vec![orders.clone()],
//!         WatermarkStrategy::for_bounded_out_of_orderness_ms(1_000),
//!         |o: &(String, u64, i64)| o.1,
//!     );
//!     let windows = orders
//!         .filter(|o| o.2 > 0)
//!         .key_by(|o| o.0.clone())
//!         .window(Tumbling::new(60_000))
//!         .aggregate("per-user", (Count, Sum::of(|o: &(String, u64, i64)| o.2)));
//!     windows
//!         .results
//!         .map(|r| (r.window.start_ms, r.key, r.value))
//!         .sink_vec("rows", got.clone());
//!     windows.late.map(|o| o.1).sink_vec("late", late.clone());
//!     Ok(())
//! })
//! .unwrap();
//! let mut rows = out.lock().unwrap().clone();
//! rows.sort();
//! assert_eq!(rows, vec![
//!     (0, "ann".to_string(), (1, 5)),
//!     (0, "bob".to_string(), (1, 7)),
//!     (60_000, "ann".to_string(), (1, 1)),
//! ]);
//! // bob's order at 500 came when the watermark was 61 000 − 1 000: late
//! // for [0, 60 000), so it is on the late side output, not in the row.
//! assert_eq!(*late_seen.lock().unwrap(), vec![500]);
//! assert_eq!((summary.events, summary.late, summary.dead_letters), (4, 1, 0));
//! ```
//!
//! # Records and time
//!
//! Every element of a [`DataStream`] carries its **event time** (ms since the
//! Unix epoch), as a Flink `StreamRecord` carries its timestamp: sources set
//! it with their event-time extractor, `map`/`filter`/`flat_map`/`try_map`
//! keep it, and a window result takes its window's last millisecond
//! (`end − 1`, Flink's `maxTimestamp`). Watermarks are timely frontiers (see
//! docs/ARCHITECTURE.md): per partition `max seen − out-of-orderness`, the
//! minimum over partitions, idle partitions excluded after the idle timeout.
//!
//! # Checkpoints and exactly-once
//!
//! With [`JobOptions::checkpoint`] every source and stateful operator of the
//! job takes part in checkpoints and the file sinks become exactly-once (a
//! directory of committed parts); [`JobOptions::restore`] resumes from the
//! newest complete checkpoint or a savepoint, with any worker count.
//!
//! # Bad input
//!
//! Records a source cannot decode, and records a `try_map` rejects, go to the
//! job's dead-letter output ([`JobOptions::dead_letter`]) with the reason and
//! the raw record; the job keeps running and counts them.

mod env;
pub(crate) mod keyed;
mod source;
mod stream;

pub use env::{execute, JobOptions, RunSummary, StreamEnv};
pub use keyed::{KeyedStream, OnValue, SessionWindowedStream, WindowOutput, WindowedStream};
pub use source::{GeneratorSource, WatermarkStrategy};
pub use stream::{DataStream, StreamData, Timestamped};
