//! Sink errors.

use thiserror::Error;

/// Errors raised by sinks.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The output could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The output path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
