//! The stream environment and running a job written with the API.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::operators::core::Concatenate;
use timely::dataflow::operators::Inspect;
use timely::dataflow::{Scope, Stream};

use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointGraph, Restore};
use streamforge_dataflow::flow_control::{FlowControl, FlowSettings};
use streamforge_dataflow::launch::ClusterArgs;
use streamforge_dataflow::source::SourceCounters;
use streamforge_dataflow::{DataflowError, DeadLetter, Time};
use streamforge_sinks::{SinkJsonl, SinkJsonlExactlyOnce};

use crate::error::Error;
use crate::job::{CheckpointConfig, RestoreFrom};

/// How a job written with the API runs: its name, workers and cluster,
/// checkpoints, and where dead letters go.
///
/// # Examples
/// ```
/// use streamforge::api::JobOptions;
/// let o = JobOptions::new("orders").workers(4);
/// assert_eq!((o.name.as_str(), o.cluster.workers), ("orders", 4));
/// assert!(o.checkpoint.is_none());
/// ```
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Job name (checkpoint manifests, logs).
    pub name: String,
    /// Workers per process and the cluster (timely's `-w -n -p -h`).
    pub cluster: ClusterArgs,
    /// Checkpoints: every source and stateful operator takes part, file
    /// sinks become exactly-once.
    pub checkpoint: Option<CheckpointConfig>,
    /// Where the run starts from (needs `checkpoint`).
    pub restore: RestoreFrom,
    /// JSONL file (a directory of committed parts with checkpoints) for the
    /// job's dead letters; `None`: they are only counted.
    pub dead_letter: Option<PathBuf>,
    /// Read at most this many records per second per worker (replay throttle).
    pub rate_limit: Option<u64>,
    /// Backpressure limits of the sources (docs/ARCHITECTURE.md, "Flow
    /// control"); on by default.
    pub flow: FlowSettings,
}

impl JobOptions {
    /// One worker, no checkpoints, dead letters counted only.
    /// # Examples
    /// ```
    /// use streamforge::api::JobOptions;
    /// use streamforge::job::RestoreFrom;
    /// let o = JobOptions::new("orders");
    /// assert_eq!(o.name, "orders");
    /// assert!(o.checkpoint.is_none() && o.dead_letter.is_none() && o.rate_limit.is_none());
    /// assert_eq!(o.restore, RestoreFrom::Fresh);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        JobOptions {
            name: name.into(),
            cluster: ClusterArgs::default(),
            checkpoint: None,
            restore: RestoreFrom::Fresh,
            dead_letter: None,
            rate_limit: None,
            flow: FlowSettings::default(),
        }
    }

    /// The sources' backpressure limits ([`FlowSettings::off`]: none).
    /// # Examples
    /// ```
    /// use streamforge::api::JobOptions;
    /// use streamforge::dataflow::flow_control::FlowSettings;
    /// let o = JobOptions::new("skewed").flow_control(FlowSettings {
    ///     watermark_slack_ms: Some(5_000),
    ///     ..FlowSettings::default()
    /// });
    /// assert_eq!(o.flow.watermark_slack_ms, Some(5_000));
    /// assert_eq!(JobOptions::new("x").flow, FlowSettings::default());
    /// ```
    pub fn flow_control(mut self, flow: FlowSettings) -> Self {
        self.flow = flow;
        self
    }

    /// Worker threads in this process.
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// // Two workers: each builds the graph and reads its share of the partitions.
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let summary = execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     s.lock().unwrap().push((env.worker_index(), env.workers()));
    ///     env.from_partitions("in", vec![vec![1u64, 2], vec![3]], WatermarkStrategy::default(), |t| *t)
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap();
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort();
    /// assert_eq!(seen, vec![(0, 2), (1, 2)]);
    /// assert_eq!(summary.events, 3);
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.cluster.workers = workers;
        self
    }

    /// Timely's options (workers, processes, this process, hostfile).
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use streamforge::api::{execute, JobOptions};
    /// use streamforge::dataflow::launch::ClusterArgs;
    /// let peers = Arc::new(AtomicUsize::new(0));
    /// let p = peers.clone();
    /// let cluster = ClusterArgs { workers: 3, ..Default::default() };
    /// execute(&JobOptions::new("doc").cluster(cluster), move |env| {
    ///     p.store(env.workers(), Ordering::Relaxed);
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(peers.load(Ordering::Relaxed), 3);
    /// ```
    pub fn cluster(mut self, cluster: ClusterArgs) -> Self {
        self.cluster = cluster;
        self
    }

    /// Checkpoints into `config.dir` every `config.interval`.
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::job::CheckpointConfig;
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = CheckpointConfig {
    ///     dir: dir.path().join("ckpt"),
    ///     interval: Duration::from_millis(10),
    ///     retain: 2,
    /// };
    /// let options = JobOptions::new("doc").checkpoint(config);
    /// let summary = execute(&options, |env| {
    ///     assert!(env.checkpointing());
    ///     env.from_partitions("in", vec![(0..1_000u64).collect()], WatermarkStrategy::default(), |t| *t)
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(summary.events, 1_000);
    /// // The run left complete checkpoints behind (at least the final one).
    /// let store = streamforge::dataflow::checkpoint_store::CheckpointStore::open(
    ///     dir.path().join("ckpt"), 2).unwrap();
    /// assert!(store.newest_complete_id().is_some());
    /// ```
    pub fn checkpoint(mut self, config: CheckpointConfig) -> Self {
        self.checkpoint = Some(config);
        self
    }

    /// Resume from a checkpoint or savepoint.
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::job::{CheckpointConfig, RestoreFrom};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = CheckpointConfig { dir: dir.path().to_path_buf(), interval: Duration::from_secs(1), retain: 2 };
    /// let job = |options: &JobOptions| execute(options, |env| {
    ///     env.from_partitions("in", vec![vec![1u64, 2, 3]], WatermarkStrategy::default(), |t| *t)
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap();
    /// let first = job(&JobOptions::new("doc").checkpoint(config.clone()));
    /// assert_eq!((first.events, first.restored_from), (3, None));
    /// // Restored from the final checkpoint: nothing is left to read.
    /// let again = job(&JobOptions::new("doc").checkpoint(config).restore(RestoreFrom::Latest));
    /// assert!(again.restored_from.is_some());
    /// assert_eq!(again.events, 0);
    /// ```
    pub fn restore(mut self, from: RestoreFrom) -> Self {
        self.restore = from;
        self
    }

    /// Write dead letters as JSON lines to `path`.
    /// # Examples
    /// ```
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("dead.jsonl");
    /// let summary = execute(&JobOptions::new("doc").dead_letter(&path), |env| {
    ///     env.from_partitions("in", vec![vec![4u64, 0, 2]], WatermarkStrategy::default(), |_| 0)
    ///         .try_map("invert", |x: u64| if x == 0 { Err("zero") } else { Ok(100 / x) })
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(summary.dead_letters, 1);
    /// let text = std::fs::read_to_string(&path).unwrap();
    /// assert_eq!(text.lines().count(), 1);
    /// assert!(text.contains("zero") && text.contains("invert"), "{text}");
    /// ```
    pub fn dead_letter(mut self, path: impl Into<PathBuf>) -> Self {
        self.dead_letter = Some(path.into());
        self
    }
}

/// What a run did, for this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSummary {
    /// Records read by this process's sources.
    pub events: u64,
    /// Records written by this process's sinks.
    pub written: u64,
    /// Records too late for all their windows (late side outputs).
    pub late: u64,
    /// Dead letters (undecodable input, rejected `try_map` records).
    pub dead_letters: u64,
    /// Wall time of the run.
    pub elapsed_seconds: f64,
    /// The checkpoint the run was restored from.
    pub restored_from: Option<u64>,
}

/// Counters of a run, shared by the workers of a process.
#[derive(Debug, Default)]
pub(crate) struct RunCounters {
    pub(crate) source: Arc<SourceCounters>,
    pub(crate) written: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
}

pub(crate) struct EnvInner<'s> {
    pub(crate) scope: Scope<'s, Time>,
    pub(crate) checkpoints: Option<CheckpointGraph<'s>>,
    pub(crate) dead: Vec<Stream<'s, Time, Vec<DeadLetter>>>,
    pub(crate) counters: Arc<RunCounters>,
    pub(crate) options: Arc<JobOptions>,
    pub(crate) names: BTreeSet<String>,
    pub(crate) error: Option<Error>,
    /// The worker's flow control (`None`: off): every source reads through
    /// it, the first stateful operator on each path probes its input.
    pub(crate) flow: Option<FlowControl>,
}

/// The shared handle every stream of a job holds.
pub(crate) type Env<'s> = Rc<RefCell<EnvInner<'s>>>;

impl EnvInner<'_> {
    /// Registers an operator name; a name used twice is an error (names
    /// identify operator state in checkpoints and metrics).
    pub(crate) fn claim(&mut self, name: &str) -> String {
        if !self.names.insert(name.to_string()) && self.error.is_none() {
            self.error = Some(Error::Invalid(format!(
                "operator name {name:?} is used twice (names identify state in checkpoints)"
            )));
        }
        name.to_string()
    }

    /// Records a build error (reported by [`execute`] when the build returns).
    pub(crate) fn fail(&mut self, e: impl Into<Error>) {
        if self.error.is_none() {
            self.error = Some(e.into());
        }
    }
}

/// Where a job is built: sources are created from it, and every stream made
/// from them shares it (checkpoints, dead letters, counters). One per worker.
pub struct StreamEnv<'s> {
    pub(crate) inner: Env<'s>,
}

impl<'s> StreamEnv<'s> {
    /// This worker's index in the cluster.
    pub fn worker_index(&self) -> usize {
        self.inner.borrow().scope.index()
    }

    /// The number of workers in the cluster.
    pub fn workers(&self) -> usize {
        self.inner.borrow().scope.peers()
    }

    /// Whether the job takes part in checkpoints.
    pub fn checkpointing(&self) -> bool {
        self.inner.borrow().checkpoints.is_some()
    }

    /// The timely scope, for operators the API does not wrap.
    /// # Examples
    /// ```
    /// use streamforge::api::{execute, JobOptions};
    /// use timely::dataflow::Scope;
    /// execute(&JobOptions::new("doc").workers(2), |env| {
    ///     assert_eq!(env.scope().index(), env.worker_index());
    ///     assert_eq!(env.scope().peers(), 2);
    ///     Ok(())
    /// }).unwrap();
    /// ```
    pub fn scope(&self) -> Scope<'s, Time> {
        self.inner.borrow().scope
    }

    /// Sends the dead letters to their sink and builds the committer.
    fn finish(self) -> Result<(), Error> {
        let mut inner = self.inner.borrow_mut();
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        let dead = std::mem::take(&mut inner.dead);
        let counters = inner.counters.clone();
        let scope = inner.scope;
        let dead = scope.concatenate(dead).inspect_batch(move |_, b| {
            counters
                .dead_letters
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        let path = inner.options.dead_letter.clone();
        let mut graph = inner.checkpoints.take();
        if let Some(path) = path {
            match graph.as_mut() {
                Some(g) => dead.sink_jsonl_exactly_once("dead-letter-jsonl", path, None, g)?,
                None => dead.sink_jsonl("dead-letter-jsonl", path, None)?,
            }
        }
        if let Some(g) = graph {
            g.finish();
        }
        Ok(())
    }
}

/// Runs `build` on every worker of this process (and, with a hostfile, as
/// one process of a cluster) until all sources are finished, and returns
/// what this process did.
///
/// `build` is called once per worker with that worker's [`StreamEnv`]; it
/// must build the same graph on every worker.
///
/// # Errors
/// Invalid options, a checkpoint that cannot be found or read, an error
/// `build` returned, or a worker that failed.
/// # Examples
/// ```
/// use std::sync::{Arc, Mutex};
/// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
/// let got = Arc::new(Mutex::new(Vec::new()));
/// let g = got.clone();
/// let summary = execute(&JobOptions::new("doc"), move |env| {
///     env.from_partitions("in", vec![vec![1u64, 2, 3]], WatermarkStrategy::default(), |t| *t)
///         .map(|x| x * 10)
///         .sink_vec("out", g.clone());
///     Ok(())
/// }).unwrap();
/// assert_eq!(*got.lock().unwrap(), vec![10, 20, 30]);
/// assert_eq!((summary.events, summary.written), (3, 3));
/// // An error of `build` is the job's error.
/// let err = execute(&JobOptions::new("doc"), |_| {
///     Err(streamforge::error::Error::Invalid("no sources".into()))
/// });
/// assert!(err.unwrap_err().to_string().contains("no sources"));
/// ```
pub fn execute<F>(options: &JobOptions, build: F) -> Result<RunSummary, Error>
where
    F: Fn(&mut StreamEnv<'_>) -> Result<(), Error> + Send + Sync + 'static,
{
    let ctx = match &options.checkpoint {
        Some(cfg) => Some(Arc::new(crate::job::open_checkpoints(
            &options.name,
            &cfg.dir,
            cfg,
            &options.restore,
        )?)),
        None if options.restore != RestoreFrom::Fresh => {
            return Err(Error::Invalid("restoring needs checkpoints".into()))
        }
        None => None,
    };
    let restored_from = ctx
        .as_ref()
        .and_then(|c| c.restore.as_ref().map(Restore::id));
    if let Some(id) = restored_from {
        crate::job::log_restored(&options.name, id);
    }
    let config = options.cluster.timely_config()?;
    streamforge_dataflow::reader_thread::plan(options.cluster.workers);
    let counters = Arc::new(RunCounters::default());
    let options = Arc::new(options.clone());
    let start = Instant::now();
    let c = counters.clone();
    let build = Arc::new(build);
    let guards = timely::execute(config, move |worker| {
        let peers = worker.peers();
        let build = build.clone();
        let (ctx, counters, options) = (ctx.clone(), c.clone(), options.clone());
        worker.dataflow::<Time, _, _>(move |scope| {
            let result = build_on(scope, ctx, counters, options, &*build);
            crate::job::fail_stop_build(result, scope.index(), peers)
        })
    })
    .map_err(DataflowError::Execution)?;
    crate::job::join_workers(guards)?;
    Ok(RunSummary {
        events: counters.source.records_total.load(Ordering::Relaxed),
        written: counters.written.load(Ordering::Relaxed),
        late: counters.late.load(Ordering::Relaxed),
        dead_letters: counters.dead_letters.load(Ordering::Relaxed),
        elapsed_seconds: start.elapsed().as_secs_f64(),
        restored_from,
    })
}

fn build_on<'s, F>(
    scope: Scope<'s, Time>,
    ctx: Option<Arc<CheckpointContext>>,
    counters: Arc<RunCounters>,
    options: Arc<JobOptions>,
    build: &F,
) -> Result<(), Error>
where
    F: Fn(&mut StreamEnv<'_>) -> Result<(), Error>,
{
    let flow = FlowControl::enabled(options.flow.clone());
    let inner = EnvInner {
        scope,
        checkpoints: ctx.map(|c| CheckpointGraph::new(scope, c)),
        dead: Vec::new(),
        counters,
        options,
        names: BTreeSet::new(),
        error: None,
        flow,
    };
    let mut env = StreamEnv {
        inner: Rc::new(RefCell::new(inner)),
    };
    build(&mut env)?;
    env.finish()
}
