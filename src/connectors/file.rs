//! `kind = "file"`: JSON-lines or CSV files (by extension, `.gz` too), one
//! partition per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use streamforge_sources::row::Row;

use super::{DecoderFactory, SourceConnector, SourceKind};
use crate::api::{DataStream, StreamEnv, WatermarkStrategy};
use crate::error::Error;

/// The registration.
pub const SOURCE: SourceKind = SourceKind {
    kind: "file",
    parse: |v| Ok(Arc::new(super::settings::<FileSource>(v)?)),
};

/// Settings of a file source.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileSource {
    /// Files or glob patterns.
    pub paths: Vec<String>,
    /// Dead-letter records whose event time is more than this ahead of
    /// their partition's largest event time so far.
    #[serde(default, with = "humantime_serde")]
    pub max_future: Option<Duration>,
}

impl SourceConnector for FileSource {
    fn max_future_ms(&self) -> Option<u64> {
        self.max_future.map(|d| d.as_millis() as u64)
    }

    fn open<'s>(
        &self,
        env: &mut StreamEnv<'s>,
        base: &Path,
        watermarks: WatermarkStrategy,
        decoder: DecoderFactory,
    ) -> Result<DataStream<'s, Row>, Error> {
        let paths: Vec<PathBuf> = self.paths.iter().map(|p| base.join(p)).collect();
        env.from_files_with("source", &paths, watermarks, move || decoder())
    }
}
