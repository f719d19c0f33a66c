//! The streamforge runtime: the time model (event-time watermarks as timely
//! frontiers, epochs for checkpoints), the partitioned source core that turns
//! replayable partitions into a watermarked stream, stable key hashing, dead
//! letters, and worker/cluster launch.
//!
//! Everything that decides *when* a record counts lives here, so that sources,
//! operators and sinks agree on one definition of a watermark.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod checkpoint_store;
pub mod dead_letter;
pub mod env;
pub mod error;
pub mod flow_control;
pub mod hash;
pub mod keyed_state;
pub mod launch;
pub mod metrics;
pub mod reader_thread;
pub mod source;
pub mod time;
pub mod watermark;

pub use dead_letter::DeadLetter;
pub use error::DataflowError;
pub use hash::stable_hash;
pub use time::{Epoch, EventTime, Time};
