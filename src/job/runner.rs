//! Running jobs of any kind: worker build failures, joining the workers,
//! opening the checkpoint to resume from, the restored-run log line and
//! savepoints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointSettings, Restore};
use streamforge_dataflow::checkpoint_store::CheckpointStore;
use streamforge_dataflow::DataflowError;

use super::config::{CheckpointConfig, RestoreFrom};
use crate::error::Error;

/// A worker's dataflow build result. The other workers would wait forever
/// for the operators a failed build did not create: with peers, the process
/// stops (fail-stop) after printing the error.
pub(crate) fn fail_stop_build(
    result: Result<(), Error>,
    worker: usize,
    peers: usize,
) -> Result<(), String> {
    result.map_err(|e| {
        if peers > 1 {
            eprintln!("error: building the dataflow on worker {worker}: {e}");
            std::process::exit(1);
        }
        e.to_string()
    })
}

/// Waits for the workers of a run; the first error of any of them.
pub(crate) fn join_workers(
    guards: timely::communication::WorkerGuards<Result<(), String>>,
) -> Result<(), Error> {
    for r in guards.join() {
        r.map_err(DataflowError::Execution)?
            .map_err(Error::Invalid)?;
    }
    Ok(())
}

/// Logs the one machine-readable line of a restored run, on stderr:
/// `{"event":"restored","job":NAME,"checkpoint":ID}`.
pub(crate) fn log_restored(job: &str, id: u64) {
    eprintln!(
        "{}",
        serde_json::json!({"event": "restored", "job": job, "checkpoint": id})
    );
}

/// Finds the checkpoint to resume from and opens the checkpoint context of
/// job `job`.
pub(crate) fn open_checkpoints(
    job: &str,
    dir: &Path,
    cfg: &CheckpointConfig,
    from: &RestoreFrom,
) -> Result<CheckpointContext, Error> {
    let settings = CheckpointSettings {
        dir: dir.to_path_buf(),
        interval: cfg.interval,
        retain: cfg.retain,
    };
    let ckpt = |e: streamforge_dataflow::checkpoint_store::CheckpointError| {
        Error::Checkpoint(e.to_string())
    };
    let restore = match from {
        RestoreFrom::Fresh => None,
        RestoreFrom::Latest => {
            let store = CheckpointStore::open(dir, cfg.retain).map_err(ckpt)?;
            let (found, skipped) = store.latest().map_err(ckpt)?;
            for s in &skipped {
                eprintln!("streamforge: {s}; falling back to an older checkpoint");
            }
            match found {
                Some(c) => Some(Restore::new(store, c).map_err(ckpt)?),
                None => {
                    eprintln!(
                        "streamforge: no complete checkpoint in {}; starting from the beginning",
                        dir.display()
                    );
                    None
                }
            }
        }
        RestoreFrom::Path(p) => {
            let (store, c) = CheckpointStore::load_path(p).map_err(ckpt)?;
            Some(Restore::new(store, c).map_err(ckpt)?)
        }
    };
    if let Some(r) = &restore {
        let saved = r.checkpoint.manifest.meta.get("job");
        if saved.is_some_and(|j| j != job) {
            return Err(Error::Checkpoint(format!(
                "checkpoint {} belongs to job {:?}, not {:?}",
                r.id(),
                saved.unwrap_or(&String::new()),
                job
            )));
        }
    }
    CheckpointContext::new(&settings, job, restore).map_err(ckpt)
}

/// Asks the job running on checkpoint directory `dir` to stop with a
/// savepoint, waits for it, and returns its directory.
///
/// # Errors
/// No savepoint appeared within `timeout` (is the job running?), or I/O errors.
pub fn savepoint(dir: &Path, timeout: Duration) -> Result<PathBuf, Error> {
    let ckpt = |e: streamforge_dataflow::checkpoint_store::CheckpointError| {
        Error::Checkpoint(e.to_string())
    };
    let store = CheckpointStore::open(dir, usize::MAX).map_err(ckpt)?;
    let before = store.latest().map_err(ckpt)?.0.map(|c| c.manifest.id);
    CheckpointContext::request_stop(dir)?;
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let (Some(c), _) = store.latest().map_err(ckpt)? {
            let newer = before.is_none_or(|b| c.manifest.id > b);
            if newer && c.manifest.meta.get("savepoint").map(String::as_str) == Some("true") {
                return Ok(c.dir);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::Checkpoint(format!(
        "no savepoint in {} after {timeout:?}: is the job running?",
        dir.display()
    )))
}
