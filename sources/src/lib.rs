//! streamforge sources: the span record of the main job, field mappings for CSV
//! and JSONL input, file replay (plain or gzip), and a deterministic synthetic span
//! generator. Each source is a set of [`PartitionReader`]s driven by the runtime's
//! partitioned source core, which owns watermarks.
//!
//! [`PartitionReader`]: streamforge_dataflow::source::PartitionReader
#![deny(missing_docs)]

pub mod decode;
pub mod error;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod mapping;
pub mod nexmark;
pub mod orders;
pub mod record;
pub mod row;
pub mod span;
pub mod value;

pub use error::SourceError;
pub use file::{file_partitions, FileFormat, FileSourceConfig};
pub use generator::GeneratorConfig;
pub use kafka::KafkaSourceConfig;
pub use mapping::SpanMapping;
pub use span::{KeyInterner, Span, SpanKey};
