//! `streamforge cluster`: launch every local process of a hostfile and stop them
//! all when one fails (timely clusters are fail-stop).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamforge_dataflow::launch::read_hostfile;

use crate::error::Error;

/// Launches `program args… -n N -p I -h hostfile -w workers` for each process `I`
/// of the hostfile, waits for all, and kills the rest as soon as one exits with
/// a failure. Every host must be local (`127.0.0.1`, `localhost`, `::1`).
///
/// # Errors
/// A non-local host, a process that could not start, or one that failed (its
/// index and exit status are in the message).
pub fn launch_local(
    program: &Path,
    args: &[String],
    hostfile: &Path,
    workers: usize,
) -> Result<(), Error> {
    supervise(
        program,
        args,
        args,
        hostfile,
        workers,
        &RestartPolicy {
            max_restarts: 0,
            backoff: Duration::ZERO,
            checkpoint_dir: None,
        },
    )
}

/// When and how often [`supervise`] restarts a failed cluster.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Restarts allowed in total.
    pub max_restarts: u32,
    /// Wait before the first restart; doubled after each, at most 30 s.
    pub backoff: Duration,
    /// The job's checkpoint directory: a run that completed a new checkpoint
    /// made progress, and the backoff starts again from `backoff`.
    pub checkpoint_dir: Option<std::path::PathBuf>,
}

/// Runs the cluster with `first` arguments; when any process dies, kills the
/// others and (up to `policy.max_restarts` times, with backoff) starts all of
/// them again with `again` (which restores the last complete checkpoint).
///
/// # Errors
/// As [`launch_local`], once the restarts are used up.
pub fn supervise(
    program: &Path,
    first: &[String],
    again: &[String],
    hostfile: &Path,
    workers: usize,
    policy: &RestartPolicy,
) -> Result<(), Error> {
    let mut restarts = 0;
    let mut backoff = policy.backoff;
    let mut args = first;
    let newest = || {
        policy.checkpoint_dir.as_ref().and_then(|d| {
            streamforge_dataflow::checkpoint_store::CheckpointStore::open(d, usize::MAX)
                .ok()?
                .newest_complete_id()
        })
    };
    loop {
        let before = newest();
        match launch_once(program, args, hostfile, workers) {
            Ok(()) => return Ok(()),
            Err(e) if restarts < policy.max_restarts => {
                restarts += 1;
                if newest() != before {
                    backoff = policy.backoff;
                }
                eprintln!(
                    "streamforge cluster: {e}; restart {restarts}/{} from the last checkpoint in {backoff:?}",
                    policy.max_restarts
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                args = again;
            }
            Err(e) => return Err(e),
        }
    }
}

fn launch_once(
    program: &Path,
    args: &[String],
    hostfile: &Path,
    workers: usize,
) -> Result<(), Error> {
    let hosts = read_hostfile(hostfile)?;
    for h in &hosts {
        let host = h.rsplit_once(':').map_or(h.as_str(), |(host, _)| host);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
            return Err(Error::Cluster(format!(
                "host {h} is not local; start remote processes there with -p"
            )));
        }
    }
    let n = hosts.len();
    let mut children: Vec<Option<Child>> = Vec::new();
    for p in 0..n {
        let child = Command::new(program)
            .args(args)
            .args([
                "-n",
                &n.to_string(),
                "-p",
                &p.to_string(),
                "-w",
                &workers.to_string(),
            ])
            .arg("-h")
            .arg(hostfile)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| Error::Cluster(format!("process {p}: {e}")));
        match child {
            Ok(c) => {
                children.push(Some(c));
                // Give the lower processes a head start: timely retries a
                // refused connection only after a second.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                kill_all(&mut children);
                return Err(e);
            }
        }
    }
    loop {
        let mut running = 0;
        for p in 0..n {
            let Some(child) = children[p].as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) if status.success() => children[p] = None,
                Ok(Some(status)) => {
                    children[p] = None;
                    kill_all(&mut children);
                    return Err(Error::Cluster(format!(
                        "process {p} failed ({status}); stopped the others"
                    )));
                }
                Err(e) => {
                    kill_all(&mut children);
                    return Err(Error::Cluster(format!("process {p}: {e}")));
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
