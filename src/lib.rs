//! **streamforge** — Flink-style stream processing on timely dataflow.
//!
//! This front crate re-exports the layers (`dataflow`, `operators`, `sources`,
//! `sinks`), defines the main job (operator metrics, seed table
//! `flink_operator_agg_result`), job files, and the cluster launcher used by the
//! `streamforge` binary.
//!
//! ```
//! use streamforge::prelude::*;
//! let t = Tumbling::new(60_000);
//! assert_eq!(t.max_end(61_000), 120_000);
//! ```
#![deny(missing_docs)]

pub mod alerting;
pub mod alerts;
pub mod api;
pub mod bench;
pub mod cluster;
pub mod connectors;
pub mod error;
pub mod job;
pub mod main_job;
pub mod metrics;
pub mod produce;
pub mod schema;
pub mod sql;
pub mod table_job;
pub mod thresholds;

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
