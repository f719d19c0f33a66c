//! streamforge sinks: JSON-lines files, a readable stdout table, Kafka.
//!
//! File and table sinks run on worker 0 of the cluster (all rows are routed there), buffer the
//! rows of each timestamp until the input frontier passes it, and write them in
//! sorted order — so a file is the same whatever the worker count.
#![deny(missing_docs)]

pub mod batched;
pub mod clickhouse;
pub mod error;
pub mod jsonl;
pub mod jsonl_exactly_once;
pub mod kafka;
pub mod kafka_exactly_once;
pub mod postgres;
pub mod retry;
pub mod stdout;
pub mod webhook;
pub mod write_ahead;

pub use error::SinkError;
pub use jsonl::{SinkJsonl, SinkLines};
pub use jsonl_exactly_once::{read_committed, SinkJsonlExactlyOnce, SinkLinesExactlyOnce};
pub use kafka::{KafkaSinkConfig, SinkKafka};
pub use kafka_exactly_once::SinkKafkaExactlyOnce;
pub use stdout::SinkStdoutTable;
