//! **streamforge** — Flink-style stream processing on timely dataflow.
//!
//! This front crate re-exports the layers (`dataflow`, `operators`, `sources`,
//! `sinks`) and holds, by responsibility:
//! - [`api`]: the DataStream API (sources of any record, keyed windows,
//!   dedup, keyed process, sinks) over the timely operators;
//! - [`sql`]: the SQL expressions and aggregates of job files;
//! - [`connectors`]: sources and sinks of job files, selected by `kind`;
//! - [`job`]: job files and running them (table jobs, the span-mapping job,
//!   checkpoints, restores, savepoints, the run summary);
//! - [`operator_metrics`]: the main job's domain (seed table
//!   `flink_operator_agg_result`, thresholds, alerting);
//! - [`tools`]: the benchmark harness and the Kafka producer, off the run
//!   path; [`cluster`] and [`metrics`]: the launcher and the status page.
//!
//! ```
//! use streamforge::prelude::*;
//! let t = Tumbling::new(60_000);
//! assert_eq!(t.max_end(61_000), 120_000);
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod cluster;
pub mod connectors;
pub mod error;
pub mod job;
pub mod metrics;
pub mod operator_metrics;
pub mod sql;
pub mod tools;

pub use streamforge_dataflow as dataflow;
pub use streamforge_operators as operators;
pub use streamforge_sinks as sinks;
pub use streamforge_sources as sources;

/// Everything a job author needs: `use streamforge::prelude::*`.
pub mod prelude {
    pub use streamforge_dataflow::source::{partitioned_source, vec_partition, SourceSettings};
    pub use streamforge_dataflow::{stable_hash, DeadLetter, Time};
    pub use streamforge_operators::{
        AggregateFunction, Avg, Count, CountIf, DistinctCount, Max, Min, Quantiles, Sliding, Sum,
        Tumbling, Window, WindowAggregate, WindowAssigner, WindowResult, WindowSpec,
    };
    pub use streamforge_sinks::{SinkJsonl, SinkStdoutTable};
    pub use streamforge_sources::{Span, SpanKey};
}
