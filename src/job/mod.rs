//! Job files and running a job.
//!
//! A job file is TOML (`examples/jobs/*.toml`). Relative paths in it are
//! resolved against the job file's directory. Precedence: command-line flags
//! (`-w -n -p -h`) and `--set` overrides > job file > built-in defaults.
//!
//! Two kinds of job file share this machinery:
//! - [`table`]: a job over a declared schema (`[schema]`, `[[steps]]`,
//!   `[window]` with SQL select items), with sources and sinks chosen by
//!   `kind` from the connector registry (`crate::connectors`);
//! - [`span`]: the span-mapping form of the main job (`[source.mapping]`),
//!   typed end to end (`Span` → `OperatorAggRow`), kept for its exact
//!   database and Kafka sinks and as the throughput reference.
//!
//! The rest is shared: [`config`] (checkpoint and watermark settings,
//! `--set`), [`runner`] (worker failures, restores, savepoints),
//! [`summary`] (counters and the run summary), [`latency`] (window-end to
//! output latency, read by `streamforge bench`).

pub mod config;
pub mod latency;
pub mod runner;
pub mod span;
pub mod summary;
pub mod table;

pub use config::{load_value, CheckpointConfig, FlowControlConfig, RestoreFrom, WatermarkConfig};
pub use runner::savepoint;
pub(crate) use runner::{fail_stop_build, join_workers, log_restored, open_checkpoints};
pub use span::{
    checkpoint_dir, run, run_from, JobConfig, SinkConfig, SourceConfig, WindowConfig, WindowKind,
};
pub use summary::{JobCounters, JobSummary};
