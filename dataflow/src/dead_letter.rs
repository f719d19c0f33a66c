//! Dead letters: malformed input, kept with the reason and the raw bytes.

use serde::{Deserialize, Serialize};

/// A record a source could not decode. The job keeps running; dead letters go to
/// their own output so that nothing is lost.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from: a file path, or `topic/partition` for Kafka.
    pub source: String,
    /// Position inside the source: 1-based line number for files, offset for Kafka.
    pub position: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The raw input, lossily decoded as UTF-8 (invalid bytes become U+FFFD).
    pub raw: String,
}
