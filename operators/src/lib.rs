//! streamforge operators: window assigners, incremental aggregate functions,
//! a mergeable quantile sketch, and the keyed event-time window aggregate with a
//! late side output.
//!
//! One operator per file, each with an extension trait named after it; bring them
//! all in with `use streamforge::prelude::*`.
#![deny(missing_docs)]

pub mod aggregate;
pub mod assigner;
pub mod dedup;
pub mod hll;
pub mod keyed_process;
pub mod session_window;
pub mod sketch;
pub mod window_aggregate;

pub use aggregate::{
    AggregateFunction, Avg, Count, CountIf, DistinctCount, Max, Min, Numeric, Quantiles, Sum,
};
pub use assigner::{Sliding, Tumbling, Window, WindowAssigner};
pub use dedup::DedupByKey;
pub use keyed_process::{KeyedProcess, KeyedProcessFunction, ProcessContext, ProcessSpec};
pub use session_window::{SessionSpec, SessionWindowAggregate};
pub use sketch::QuantileSketch;
pub use window_aggregate::{WindowAggregate, WindowOutputs, WindowResult, WindowSpec};
