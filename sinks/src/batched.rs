//! The batched sink: at-least-once output into any [`CommitTarget`] for jobs
//! without checkpoints, flushed by rows, bytes and interval.

use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::Time;

use crate::write_ahead::CommitTarget;

/// When a batch is flushed.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Rows buffered.
    pub rows: usize,
    /// Bytes buffered (as measured by the sink's size function).
    pub bytes: usize,
    /// Time since the first buffered row.
    pub interval: Duration,
}

/// Extension trait: `stream.sink_batched(..)`.
pub trait SinkBatched<'scope, D> {
    /// Buffers the records of this worker, encoded by `encode`, and commits
    /// them into `target` whenever `limits` are reached, the interval passed,
    /// or the input ended. A commit blocks the worker while the target retries
    /// (backpressure: a slow or down database slows the job).
    ///
    /// # Panics
    /// When a commit fails for good (fail-stop).
    fn sink_batched<T: CommitTarget>(
        self,
        name: &str,
        target: T,
        encode: impl Fn(&D) -> T::Record + 'static,
        size: impl Fn(&T::Record) -> usize + 'static,
        limits: BatchLimits,
    );
}

impl<'scope, D: ExchangeData> SinkBatched<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn sink_batched<T: CommitTarget>(
        self,
        name: &str,
        mut target: T,
        encode: impl Fn(&D) -> T::Record + 'static,
        size: impl Fn(&T::Record) -> usize + 'static,
        limits: BatchLimits,
    ) {
        let scope = self.scope();
        let index = scope.index();
        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Pipeline);
        let name = name.to_string();
        let mut buffer: Vec<T::Record> = Vec::new();
        let mut bytes = 0usize;
        let mut since: Option<Instant> = None;
        builder.build(move |_caps| {
            move |frontiers| {
                let frontier = &frontiers[0];
                input.for_each_time(|_, batches| {
                    for batch in batches {
                        for d in batch.iter() {
                            let r = encode(d);
                            bytes += size(&r);
                            buffer.push(r);
                        }
                    }
                    if since.is_none() {
                        since = Some(Instant::now());
                        activator.activate_after(limits.interval);
                    }
                });
                let ended = frontier.is_empty();
                let due = since.is_some_and(|s| s.elapsed() >= limits.interval);
                if !buffer.is_empty()
                    && (ended || due || buffer.len() >= limits.rows || bytes >= limits.bytes)
                {
                    target
                        .commit(index, None, &buffer)
                        .unwrap_or_else(|e| panic!("sink {name}: {e}"));
                    buffer.clear();
                    bytes = 0;
                    since = None;
                }
            }
        });
    }
}
