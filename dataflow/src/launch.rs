//! Worker and cluster launch, with timely's own option parsing.
//!
//! streamforge accepts exactly timely's flags — `-w` threads per process, `-n`
//! processes, `-p` this process's index, `-h` hostfile — and hands them to
//! `timely::Config::install_options` / `from_matches`, so they behave as in any
//! timely program.

use std::path::PathBuf;

use crate::error::DataflowError;

/// Worker/cluster options (timely's `-w -n -p -h -r`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Number of processes (`-n`).
    pub processes: usize,
    /// Index of this process (`-p`).
    pub process: usize,
    /// Hostfile with one `host:port` per process (`-h`).
    pub hostfile: Option<PathBuf>,
    /// Report connection progress (`-r`).
    pub report: bool,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            report: false,
        }
    }
}

impl ClusterArgs {
    /// The same options as timely command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "-w".to_string(),
            self.workers.to_string(),
            "-n".to_string(),
            self.processes.to_string(),
            "-p".to_string(),
            self.process.to_string(),
        ];
        if let Some(h) = &self.hostfile {
            args.push("-h".into());
            args.push(h.display().to_string());
        }
        if self.report {
            args.push("-r".into());
        }
        args
    }

    /// Total number of workers in the cluster.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes
    }

    /// Parses these options with timely's own parser into a `timely::Config`.
    ///
    /// # Errors
    /// [`DataflowError::ClusterOptions`] for inconsistent options (e.g. `-p` ≥ `-n`),
    /// [`DataflowError::Hostfile`] when the hostfile is unreadable or has fewer
    /// lines than processes.
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::launch::ClusterArgs;
    /// let args = ClusterArgs { workers: 2, ..Default::default() };
    /// assert!(args.timely_config().is_ok());
    /// let bad = ClusterArgs { processes: 2, process: 5, ..Default::default() };
    /// assert!(bad.timely_config().is_err());
    /// ```
    pub fn timely_config(&self) -> Result<timely::Config, DataflowError> {
        if self.workers == 0 || self.processes == 0 || self.process >= self.processes {
            return Err(DataflowError::ClusterOptions(format!(
                "need -w ≥ 1, -n ≥ 1 and -p < -n (got -w {} -n {} -p {})",
                self.workers, self.processes, self.process
            )));
        }
        if let Some(h) = &self.hostfile {
            let hosts = read_hostfile(h)?;
            if hosts.len() < self.processes {
                return Err(DataflowError::Hostfile {
                    path: h.display().to_string(),
                    reason: format!("{} hosts for {} processes", hosts.len(), self.processes),
                });
            }
        }
        let mut opts = getopts::Options::new();
        timely::Config::install_options(&mut opts);
        let matches = opts
            .parse(self.to_args())
            .map_err(|e| DataflowError::ClusterOptions(e.to_string()))?;
        timely::Config::from_matches(&matches).map_err(DataflowError::ClusterOptions)
    }
}

/// Reads a timely hostfile: one `host:port` per non-empty line.
///
/// # Errors
/// [`DataflowError::Hostfile`] when the file cannot be read or a line has no port.
pub fn read_hostfile(path: &std::path::Path) -> Result<Vec<String>, DataflowError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataflowError::Hostfile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for h in &hosts {
        if h.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(DataflowError::Hostfile {
                path: path.display().to_string(),
                reason: format!("line {h:?} is not host:port"),
            });
        }
    }
    Ok(hosts)
}
