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
    /// A restore could not read a sink's part of the checkpoint.
    #[error("sink {sink}: restore: {reason}")]
    Restore {
        /// The sink.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// A database sink failed (unreachable past its retry time, schema
    /// mismatch, rejected rows).
    #[error("{sink} {table}: {reason}")]
    Database {
        /// `clickhouse` or `postgres`.
        sink: &'static str,
        /// The table.
        table: String,
        /// What went wrong, with the server's message.
        reason: String,
    },
    /// A webhook rejected a batch, or kept failing past its retry time.
    #[error("webhook {url}: {reason}")]
    Webhook {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A configuration value names an unset environment variable.
    #[error(transparent)]
    MissingEnv(#[from] streamforge_dataflow::env::MissingEnv),
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
