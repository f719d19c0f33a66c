//! Top-level errors, wrapping each layer's.

use thiserror::Error;

/// Anything that can stop a job from starting or finishing.
#[derive(Debug, Error)]
pub enum Error {
    /// The job file could not be read or parsed.
    #[error("job file {path}: {reason}")]
    JobFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An invalid setting in an otherwise well-formed job.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// Runtime (cluster options, execution).
    #[error(transparent)]
    Dataflow(#[from] streamforge_dataflow::DataflowError),
    /// A source could not be opened.
    #[error(transparent)]
    Source(#[from] streamforge_sources::SourceError),
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] streamforge_sinks::SinkError),
    /// I/O outside sources and sinks (e.g. writing generated data).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A checkpoint could not be found, read or written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A process of a local cluster failed.
    #[error("cluster: {0}")]
    Cluster(String),
}
