//! Errors of the runtime layer.

use thiserror::Error;

/// Errors raised while configuring or launching a dataflow.
#[derive(Debug, Error)]
pub enum DataflowError {
    /// The timely worker/cluster options were invalid (`-w -n -p -h`).
    #[error("invalid cluster options: {0}")]
    ClusterOptions(String),
    /// A hostfile could not be read or is malformed.
    #[error("hostfile {path}: {reason}")]
    Hostfile {
        /// Path of the hostfile.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Timely failed to start or a worker panicked.
    #[error("dataflow execution failed: {0}")]
    Execution(String),
}
