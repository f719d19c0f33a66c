//! Sink errors.

use thiserror::Error;

/// Errors raised by sinks.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A Kafka producer could not be created or initialised.
    #[error("kafka topic {topic}: {reason}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
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
