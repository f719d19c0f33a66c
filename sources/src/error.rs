//! Source errors.

use thiserror::Error;

/// Errors raised when configuring or opening a source.
#[derive(Debug, Error)]
pub enum SourceError {
    /// No file matched a configured path or pattern.
    #[error("no input file matches {0:?}")]
    NoFiles(String),
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The field mapping does not fit the input (e.g. a CSV column is missing).
    #[error("{path}: field mapping: {reason}")]
    Mapping {
        /// The file.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// Kafka: the client could not be created or the topic could not be read.
    #[error("kafka topic {topic}: {reason}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
    /// A configuration value names an environment variable that is not set.
    #[error("environment variable {0} is not set (referenced as ${{{0}}} in the job)")]
    MissingEnv(String),
    /// An unknown file format.
    #[error(
        "cannot tell the format of {0:?}: use a .csv/.jsonl name (optionally .gz) or set `format`"
    )]
    UnknownFormat(String),
}
