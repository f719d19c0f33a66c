//! Tools around jobs, off the run path: `streamforge bench` (the benchmark
//! harness) and `streamforge produce` (replaying a file or the generator
//! into a Kafka topic). A job run never calls them.

pub mod bench;
pub mod produce;
