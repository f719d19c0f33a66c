//! The checkpoint store: a directory of checkpoints, each a set of parts (one per
//! worker and operator) and a manifest.
//!
//! Layout: `DIR/chk-<id, 20 digits>/part-<name>.bin` and
//! `DIR/chk-<id>/MANIFEST.json`. Every file is written to a temporary name,
//! fsynced, and renamed into place; the manifest — written last, listing each
//! part's length and xxh3 checksum — is what makes a checkpoint complete. A
//! checkpoint whose manifest is missing, unreadable, or disagrees with its parts
//! is skipped with a reason, and the previous one is used. The newest
//! `retain` complete checkpoints are kept.
//!
//! This is the first piece of the checkpoint issue: the store is independent of
//! how parts are produced (state by key group, source positions, sink markers).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the checkpoint store.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("checkpoint store {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is incomplete or damaged.
    #[error("checkpoint {id} is not usable: {reason}")]
    Corrupt {
        /// Checkpoint id.
        id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A part that the manifest does not list was asked for.
    #[error("checkpoint {id} has no part {part:?}")]
    NoSuchPart {
        /// Checkpoint id.
        id: u64,
        /// The part name.
        part: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One part as recorded in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// Length in bytes.
    pub len: u64,
    /// xxh3-64 of the bytes.
    pub xxh3: u64,
}

/// The manifest of a complete checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Checkpoint id (the epoch it closes).
    pub id: u64,
    /// Parts by name.
    pub parts: BTreeMap<String, PartEntry>,
    /// Free-form metadata (job name, worker count, …).
    pub meta: BTreeMap<String, String>,
}

/// A complete, verified checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// A directory of checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
}

const MANIFEST: &str = "MANIFEST.json";

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

impl CheckpointStore {
    /// Opens (creating) a store that keeps the newest `retain` (≥ 1) checkpoints.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>, retain: usize) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(CheckpointStore {
            dir,
            retain: retain.max(1),
        })
    }

    fn chk_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("chk-{id:020}"))
    }

    /// Writes part `name` of checkpoint `id` (atomically) and returns its entry.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_part(
        &self,
        id: u64,
        name: &str,
        bytes: &[u8],
    ) -> Result<PartEntry, CheckpointError> {
        let dir = self.chk_dir(id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_atomic(&dir.join(format!("part-{name}.bin")), bytes)?;
        Ok(PartEntry {
            len: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_64(bytes),
        })
    }

    /// Completes checkpoint `id`: verifies that every part in `parts` is on disk
    /// with its checksum, then writes the manifest (the commit point) and drops
    /// checkpoints beyond the retention.
    ///
    /// # Errors
    /// A listed part is missing or differs, or I/O errors.
    pub fn complete(
        &self,
        id: u64,
        parts: BTreeMap<String, PartEntry>,
        meta: BTreeMap<String, String>,
    ) -> Result<Checkpoint, CheckpointError> {
        let manifest = Manifest { id, parts, meta };
        let dir = self.chk_dir(id);
        verify(&dir, &manifest)?;
        let text = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_atomic(&dir.join(MANIFEST), &text)?;
        self.apply_retention()?;
        Ok(Checkpoint { dir, manifest })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the parts written under id `from` to id `to` (used for the final
    /// checkpoint of a run, whose id is known only when it completes). A stale
    /// directory `to` is replaced.
    ///
    /// # Errors
    /// I/O errors.
    pub fn rename(&self, from: u64, to: u64) -> Result<(), CheckpointError> {
        let (a, b) = (self.chk_dir(from), self.chk_dir(to));
        if b.exists() {
            fs::remove_dir_all(&b).map_err(io(&b))?;
        }
        if a.exists() {
            fs::rename(&a, &b).map_err(io(&a))?;
        } else {
            fs::create_dir_all(&b).map_err(io(&b))?;
        }
        Ok(())
    }

    /// The id of the newest checkpoint that has a manifest (not verified; cheap,
    /// for progress checks).
    pub fn newest_complete_id(&self) -> Option<u64> {
        self.ids()
            .ok()?
            .into_iter()
            .rev()
            .find(|id| self.chk_dir(*id).join(MANIFEST).exists())
    }

    /// Deletes every checkpoint (a fresh run starts an empty history).
    ///
    /// # Errors
    /// I/O errors.
    pub fn clear(&self) -> Result<(), CheckpointError> {
        for id in self.ids()? {
            let d = self.chk_dir(id);
            fs::remove_dir_all(&d).map_err(io(&d))?;
        }
        Ok(())
    }

    /// Deletes the directory of checkpoint `id` if it has no manifest (parts
    /// left by a crashed run).
    ///
    /// # Errors
    /// I/O errors.
    pub fn remove_incomplete(&self, id: u64) -> Result<(), CheckpointError> {
        let d = self.chk_dir(id);
        if d.exists() && !d.join(MANIFEST).exists() {
            fs::remove_dir_all(&d).map_err(io(&d))?;
        }
        Ok(())
    }

    /// Loads the checkpoint in directory `path` (a `chk-<id>` directory, e.g. a
    /// savepoint), verified.
    ///
    /// # Errors
    /// Not a checkpoint directory, or corrupt.
    pub fn load_path(path: &Path) -> Result<(CheckpointStore, Checkpoint), CheckpointError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let id = name
            .strip_prefix("chk-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CheckpointError::Corrupt {
                id: 0,
                reason: format!("{} is not a chk-<id> directory", path.display()),
            })?;
        let parent = path.parent().unwrap_or(Path::new("."));
        let store = CheckpointStore {
            dir: parent.to_path_buf(),
            retain: usize::MAX,
        };
        let c = store.load(id)?;
        Ok((store, c))
    }

    /// Ids of all checkpoint directories, complete or not, ascending.
    fn ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids: Vec<u64> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Loads and verifies checkpoint `id`.
    ///
    /// # Errors
    /// [`CheckpointError::Corrupt`] when it is incomplete or damaged.
    pub fn load(&self, id: u64) -> Result<Checkpoint, CheckpointError> {
        let dir = self.chk_dir(id);
        let corrupt = |reason: String| CheckpointError::Corrupt { id, reason };
        let text =
            fs::read(dir.join(MANIFEST)).map_err(|e| corrupt(format!("no manifest ({e})")))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| corrupt(format!("unreadable manifest ({e})")))?;
        if manifest.id != id {
            return Err(corrupt(format!(
                "manifest names checkpoint {}",
                manifest.id
            )));
        }
        verify(&dir, &manifest)?;
        Ok(Checkpoint { dir, manifest })
    }

    /// The newest usable checkpoint, and the reasons newer ones were skipped.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn latest(&self) -> Result<(Option<Checkpoint>, Vec<CheckpointError>), CheckpointError> {
        let mut skipped = vec![];
        for id in self.ids()?.into_iter().rev() {
            match self.load(id) {
                Ok(c) => return Ok((Some(c), skipped)),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping checkpoint");
                    skipped.push(e);
                }
            }
        }
        Ok((None, skipped))
    }

    /// Reads a part of a verified checkpoint (checksum checked again).
    ///
    /// # Errors
    /// The part is not listed, unreadable, or differs from the manifest.
    pub fn read_part(
        &self,
        checkpoint: &Checkpoint,
        name: &str,
    ) -> Result<Vec<u8>, CheckpointError> {
        let id = checkpoint.manifest.id;
        let entry =
            checkpoint
                .manifest
                .parts
                .get(name)
                .ok_or_else(|| CheckpointError::NoSuchPart {
                    id,
                    part: name.to_string(),
                })?;
        let path = checkpoint.dir.join(format!("part-{name}.bin"));
        let bytes = fs::read(&path).map_err(io(&path))?;
        check(id, name, entry, &bytes)?;
        Ok(bytes)
    }

    /// Deletes all but the newest `retain` complete checkpoints, and incomplete
    /// ones older than the newest complete one.
    fn apply_retention(&self) -> Result<(), CheckpointError> {
        let ids = self.ids()?;
        let complete: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.chk_dir(*id).join(MANIFEST).exists())
            .collect();
        let keep_from = complete.len().saturating_sub(self.retain);
        let oldest_kept = complete.get(keep_from).copied();
        for id in ids {
            let drop = match oldest_kept {
                Some(k) => id < k,
                None => false,
            };
            if drop {
                let dir = self.chk_dir(id);
                fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }
}

fn check(id: u64, name: &str, entry: &PartEntry, bytes: &[u8]) -> Result<(), CheckpointError> {
    if bytes.len() as u64 != entry.len || xxhash_rust::xxh3::xxh3_64(bytes) != entry.xxh3 {
        return Err(CheckpointError::Corrupt {
            id,
            reason: format!("part {name:?} does not match its checksum"),
        });
    }
    Ok(())
}

fn verify(dir: &Path, manifest: &Manifest) -> Result<(), CheckpointError> {
    for (name, entry) in &manifest.parts {
        let path = dir.join(format!("part-{name}.bin"));
        let bytes = fs::read(&path).map_err(|e| CheckpointError::Corrupt {
            id: manifest.id,
            reason: format!("part {name:?} missing ({e})"),
        })?;
        check(manifest.id, name, entry, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        store: &CheckpointStore,
        id: u64,
        parts: &[(&str, &[u8])],
    ) -> Result<Checkpoint, CheckpointError> {
        let mut entries = BTreeMap::new();
        for (name, bytes) in parts {
            entries.insert(name.to_string(), store.write_part(id, name, bytes)?);
        }
        store.complete(
            id,
            entries,
            BTreeMap::from([("workers".to_string(), parts.len().to_string())]),
        )
    }

    #[test]
    fn latest_complete_checkpoint_is_found_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1, &[("w0", b"one"), ("w1", b"uno")]).unwrap();
        write(&store, 2, &[("w0", b"two"), ("w1", b"dos")]).unwrap();
        let (latest, skipped) = store.latest().unwrap();
        let latest = latest.unwrap();
        assert!(skipped.is_empty());
        assert_eq!(latest.manifest.id, 2);
        assert_eq!(store.read_part(&latest, "w1").unwrap(), b"dos");
        assert!(matches!(
            store.read_part(&latest, "w9"),
            Err(CheckpointError::NoSuchPart { .. })
        ));
    }

    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1, &[("w0", b"one")]).unwrap();
        let two = write(&store, 2, &[("w0", b"two")]).unwrap();
        fs::write(two.dir.join("part-w0.bin"), b"tw0").unwrap();
        let (latest, skipped) = store.latest().unwrap();
        assert_eq!(latest.unwrap().manifest.id, 1);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].to_string().contains("checkpoint 2")
                && skipped[0].to_string().contains("checksum")
        );
    }

    #[test]
    fn partial_and_truncated_checkpoints_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        write(&store, 1, &[("w0", b"one")]).unwrap();
        let two = write(&store, 2, &[("w0", b"two")]).unwrap();
        // Checkpoint 3: a part written, no manifest (a crash before completion).
        store.write_part(3, "w0", b"three").unwrap();
        // Checkpoint 2's manifest truncated.
        let m = fs::read(two.dir.join(MANIFEST)).unwrap();
        fs::write(two.dir.join(MANIFEST), &m[..m.len() / 2]).unwrap();
        let (latest, skipped) = store.latest().unwrap();
        assert_eq!(latest.unwrap().manifest.id, 1);
        let reasons: Vec<String> = skipped.iter().map(|e| e.to_string()).collect();
        assert!(
            reasons[0].contains("checkpoint 3") && reasons[0].contains("no manifest"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("checkpoint 2") && reasons[1].contains("unreadable"),
            "{reasons:?}"
        );
    }

    #[test]
    fn completion_requires_every_listed_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let e0 = store.write_part(5, "w0", b"zero").unwrap();
        let parts = BTreeMap::from([("w0".to_string(), e0.clone()), ("w1".to_string(), e0)]);
        let err = store.complete(5, parts, BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("w1"), "{err}");
        assert!(store.latest().unwrap().0.is_none());
    }

    #[test]
    fn retention_keeps_the_newest_n() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        for id in 1..=5 {
            write(&store, id, &[("w0", id.to_string().as_bytes())]).unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![4, 5]);
    }
}
