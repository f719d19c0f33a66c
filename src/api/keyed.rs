//! Keyed streams: windows with allowed lateness and a late side output.

use std::hash::Hash;
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Inspect;
use timely::dataflow::Stream;

use streamforge_dataflow::{EventTime, Time};
use streamforge_operators::dedup::Dedup;
use streamforge_operators::{
    AggregateFunction, KeyedProcess, KeyedProcessFunction, ProcessContext, ProcessSpec,
    SessionSpec, SessionWindowAggregate, WindowAggregate, WindowAssigner, WindowResult, WindowSpec,
};

use super::env::Env;
use super::stream::{DataStream, StreamData};

/// A stream partitioned by key (`DataStream::key_by`).
pub struct KeyedStream<'s, K, T> {
    /// `(key, event time, record)`.
    pub(crate) stream: Stream<'s, Time, Vec<(K, EventTime, T)>>,
    pub(crate) env: Env<'s>,
}

/// A keyed stream with a window assigner, waiting for its aggregate.
pub struct WindowedStream<'s, K, T, W> {
    keyed: KeyedStream<'s, K, T>,
    spec: WindowSpec<W>,
}

/// A keyed stream with session windows, waiting for its aggregate.
pub struct SessionWindowedStream<'s, K, T> {
    keyed: KeyedStream<'s, K, T>,
    spec: SessionSpec,
}

/// What a window aggregate produces: one result per fired (window, key),
/// at the window's last millisecond, and the records that were too late for
/// all their windows (Flink's `sideOutputLateData`).
pub struct WindowOutput<'s, K, O, T> {
    /// The fired windows.
    pub results: DataStream<'s, WindowResult<K, O>>,
    /// Records too late for every window they belong to.
    pub late: DataStream<'s, T>,
}

/// An aggregate over records applied to `(key, event time, record)` — the
/// keyed stream's elements.
#[derive(Clone)]
pub struct OnValue<A>(pub A);

impl<K, T, A: AggregateFunction<T>> AggregateFunction<(K, EventTime, T)> for OnValue<A> {
    type Acc = A::Acc;
    type Out = A::Out;
    fn create_accumulator(&self) -> A::Acc {
        self.0.create_accumulator()
    }
    #[inline]
    fn add(&self, acc: &mut A::Acc, input: &(K, EventTime, T)) {
        self.0.add(acc, &input.2)
    }
    fn merge(&self, acc: &mut A::Acc, other: A::Acc) {
        self.0.merge(acc, other)
    }
    fn get_result(&self, acc: &A::Acc) -> A::Out {
        self.0.get_result(acc)
    }
}

impl<'s, K, T> KeyedStream<'s, K, T>
where
    K: StreamData + Hash + Eq + Clone + Serialize + DeserializeOwned,
    T: StreamData,
{
    /// Windows of `assigner` ([`Tumbling`](streamforge_operators::Tumbling),
    /// [`Sliding`](streamforge_operators::Sliding)) per key, no allowed
    /// lateness until [`WindowedStream::allowed_lateness_ms`].
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Tumbling};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     // (key, event time): 10 s tumbling windows per key.
    ///     env.from_partitions("in", vec![vec![(1u32, 1_000u64), (1, 9_000), (2, 3_000), (1, 12_000)]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |r: &(u32, u64)| r.1)
    ///         .key_by(|r| r.0)
    ///         .window(Tumbling::new(10_000))
    ///         .aggregate("count", Count)
    ///         .results
    ///         .map(|r| (r.key, r.window.start_ms, r.value))
    ///         .sink_vec("rows", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut rows = got.lock().unwrap().clone();
    /// rows.sort();
    /// assert_eq!(rows, vec![(1, 0, 2), (1, 10_000, 1), (2, 0, 1)]);
    /// ```
    pub fn window<W: WindowAssigner>(self, assigner: W) -> WindowedStream<'s, K, T, W> {
        WindowedStream {
            keyed: self,
            spec: WindowSpec::new(assigner),
        }
    }

    /// Session windows per key: a record opens `[e, e + gap_ms)`, sessions
    /// that overlap or touch merge (Flink's `EventTimeSessionWindows`); see
    /// [`streamforge_operators::session_window`] for the exact rules, which
    /// make the results identical at any parallelism.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::Count;
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     // (user, event time): clicks 4 s apart form one session, then a pause.
    ///     let clicks = [("a", 1_000), ("a", 5_000), ("b", 2_000), ("a", 30_000)]
    ///         .map(|(u, t)| (u.to_string(), t as u64)).to_vec();
    ///     env.from_partitions("clicks", vec![clicks],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |c: &(String, u64)| c.1)
    ///         .key_by(|c| c.0.clone())
    ///         .session_window(10_000)
    ///         .aggregate("sessions", Count)
    ///         .results
    ///         .map(|r| (r.key, r.window.start_ms, r.window.end_ms, r.value))
    ///         .sink_vec("rows", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut rows = got.lock().unwrap().clone();
    /// rows.sort();
    /// assert_eq!(rows, vec![("a".into(), 1_000, 15_000, 2), ("a".into(), 30_000, 40_000, 1),
    ///                       ("b".into(), 2_000, 12_000, 1)]);
    /// ```
    pub fn session_window(self, gap_ms: u64) -> SessionWindowedStream<'s, K, T> {
        SessionWindowedStream {
            keyed: self,
            spec: SessionSpec::with_gap(gap_ms),
        }
    }

    /// Keeps, per key, the first record by event time and drops the others
    /// until the watermark reaches that record's event time + `ttl_ms`
    /// (ties: the smallest encoding wins; see
    /// [`streamforge_operators::dedup`]). Kept records leave once the
    /// watermark passes their event time. Takes part in checkpoints.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     // (order id, event time), over two partitions
    ///     env.from_partitions("orders",
    ///             vec![vec![(1, 2_000), (2, 3_000)], vec![(1, 1_500), (1, 40_000)]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(1_000), |o: &(u32, u64)| o.1)
    ///         .key_by(|o| o.0)
    ///         .dedup("dedup", 10_000)
    ///         .sink_vec("kept", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut kept = got.lock().unwrap().clone();
    /// kept.sort();
    /// assert_eq!(kept, vec![(1, 1_500), (1, 40_000), (2, 3_000)]);
    /// ```
    pub fn dedup(self, name: &str, ttl_ms: u64) -> DataStream<'s, T> {
        self.process(name, Dedup::<T>::spec(), Dedup::new(ttl_ms))
    }

    /// Applies a keyed process function: per-key state and event-time
    /// timers, in an order that does not depend on parallelism (see
    /// [`streamforge_operators::keyed_process`]). Outputs carry the event
    /// time the function gives them. Takes part in checkpoints.
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::keyed_process::{KeyedProcessFunction, ProcessContext, ProcessSpec};
    /// // Keyed value state and an event-time timer: per user, the number of
    /// // events in the 10 s after the user's first one, emitted when it ends.
    /// struct Burst;
    /// impl KeyedProcessFunction<String, (String, u64)> for Burst {
    ///     type State = (u64, u64); // (first event time, count)
    ///     type Out = (String, u64);
    ///     fn process_element(&self, user: &String, state: &mut Option<(u64, u64)>, _: (String, u64),
    ///                        t: u64, ctx: &mut ProcessContext<'_, Self::Out>) {
    ///         let s = state.get_or_insert_with(|| { ctx.register_timer(t + 10_000); (t, 0) });
    ///         if t < s.0 + 10_000 { s.1 += 1 }
    ///     }
    ///     fn on_timer(&self, user: &String, state: &mut Option<(u64, u64)>,
    ///                 ctx: &mut ProcessContext<'_, Self::Out>) {
    ///         if let Some((_, n)) = state.take() { ctx.output(ctx.current_ms, (user.clone(), n)) }
    ///     }
    /// }
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     let events = vec![("u1", 0u64), ("u2", 1_000), ("u1", 4_000), ("u1", 12_000), ("u2", 30_000)];
    ///     env.from_partitions("in", vec![events.into_iter().map(|(u, t)| (u.to_string(), t)).collect()],
    ///             WatermarkStrategy::default(), |e: &(String, u64)| e.1)
    ///         .key_by(|e: &(String, u64)| e.0.clone())
    ///         .process("burst", ProcessSpec::default(), Burst)
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut out = got.lock().unwrap().clone();
    /// out.sort();
    /// // The five events are read in one batch, so all are processed at the
    /// // watermark before the batch, ahead of the timers (10 000 and 11 000):
    /// // u1's event at 12 000 and u2's at 30 000 are outside their key's first
    /// // 10 s and are not counted.
    /// assert_eq!(out, vec![("u1".into(), 2), ("u2".into(), 1)]);
    /// ```
    pub fn process<P>(self, name: &str, spec: ProcessSpec, function: P) -> DataStream<'s, P::Out>
    where
        P: KeyedProcessFunction<K, T>,
        P::Out: StreamData,
    {
        let env = self.env;
        let name = env.borrow_mut().claim(name);
        let input = self.stream;
        let f = OnRecord(function);
        let key = key_of::<K, T>;
        let time = |d: &(K, EventTime, T)| d.1;
        let out = {
            let mut inner = env.borrow_mut();
            match inner.checkpoints.as_mut() {
                Some(graph) => input.keyed_process_checkpointed(&name, spec, key, time, f, graph),
                None => input.keyed_process(&name, spec, key, time, f),
            }
        };
        DataStream::after_state(out, env)
    }
}

/// A process function over records applied to `(key, event time, record)`.
struct OnRecord<P>(P);

impl<K: 'static, T: 'static, P: KeyedProcessFunction<K, T>>
    KeyedProcessFunction<K, (K, EventTime, T)> for OnRecord<P>
{
    type State = P::State;
    type Out = P::Out;
    fn process_element(
        &self,
        key: &K,
        state: &mut Option<P::State>,
        record: (K, EventTime, T),
        event_time_ms: EventTime,
        ctx: &mut ProcessContext<'_, P::Out>,
    ) {
        self.0
            .process_element(key, state, record.2, event_time_ms, ctx)
    }
    fn on_timer(
        &self,
        key: &K,
        state: &mut Option<P::State>,
        ctx: &mut ProcessContext<'_, P::Out>,
    ) {
        self.0.on_timer(key, state, ctx)
    }
}

impl<'s, K, T, W> WindowedStream<'s, K, T, W>
where
    K: StreamData + Hash + Eq + Clone + Serialize + DeserializeOwned,
    T: StreamData,
    W: WindowAssigner,
{
    /// Windows accept records until the watermark passes `end + ms`; each
    /// window fires once, with its final value, at `end + ms` (see
    /// docs/ARCHITECTURE.md, "Lateness and window firing").
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Tumbling};
    /// let counts = |lateness: u64| {
    ///     let got = Arc::new(Mutex::new(Vec::new()));
    ///     let g = got.clone();
    ///     let summary = execute(&JobOptions::new("doc"), move |env| {
    ///         // 9 000 arrives after the watermark reached 12 000: 3 s late for [0, 10 000).
    ///         env.from_partitions("in", vec![vec![1_000u64, 12_000, 9_000, 30_000]],
    ///                 WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |t: &u64| *t)
    ///             .key_by(|_| ())
    ///             .window(Tumbling::new(10_000))
    ///             .allowed_lateness_ms(lateness)
    ///             .aggregate("count", Count)
    ///             .results
    ///             .map(|r| (r.window.start_ms, r.value))
    ///             .sink_vec("rows", g.clone());
    ///         Ok(())
    ///     }).unwrap();
    ///     let mut rows = got.lock().unwrap().clone();
    ///     rows.sort();
    ///     (rows, summary.late)
    /// };
    /// assert_eq!(counts(0), (vec![(0, 1), (10_000, 1), (30_000, 1)], 1));
    /// assert_eq!(counts(5_000), (vec![(0, 2), (10_000, 1), (30_000, 1)], 0));
    /// ```
    pub fn allowed_lateness_ms(mut self, ms: u64) -> Self {
        self.spec.allowed_lateness_ms = ms;
        self
    }

    /// Aggregates each window and key incrementally with `aggregate` (Flink's
    /// `AggregateFunction`; tuples of aggregates compute several at once).
    /// Takes part in checkpoints when the job has them (state by key group,
    /// restorable with another worker count).
    ///
    /// # Examples
    /// Count, sum and max of order amounts per user in sliding windows (20 s
    /// every 10 s), at two workers:
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Max, Sliding, Sum};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     // (user, event time, amount), over two partitions
    ///     env.from_partitions("orders",
    ///             vec![vec![('a', 1_000, 5), ('a', 12_000, 7)], vec![('b', 3_000, 2), ('a', 15_000, 1)]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |o: &(char, u64, i64)| o.1)
    ///         .key_by(|o| o.0)
    ///         .window(Sliding::new(20_000, 10_000))
    ///         .aggregate("stats", (Count, Sum::of(|o: &(char, u64, i64)| o.2), Max::of(|o: &(char, u64, i64)| o.2)))
    ///         .results
    ///         .map(|r| (r.key, r.window.start_ms, r.value))
    ///         .sink_vec("rows", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut rows = got.lock().unwrap().clone();
    /// rows.sort();
    /// // Windows start at 0 (the epoch), so 1 000 and 3 000 are in [0, 20 000) only.
    /// assert_eq!(rows, vec![
    ///     ('a', 0, (3, 13, Some(7))),
    ///     ('a', 10_000, (2, 8, Some(7))),
    ///     ('b', 0, (1, 2, Some(2))),
    /// ]);
    /// ```
    pub fn aggregate<A>(self, name: &str, aggregate: A) -> WindowOutput<'s, K, A::Out, T>
    where
        A: AggregateFunction<T>,
        A::Out: StreamData,
    {
        let env = self.keyed.env.clone();
        let (results, late) = self.aggregate_elements(name, OnValue(aggregate));
        window_output(env, results, late)
    }

    /// The window operator with an aggregate over whole elements `(key,
    /// event time, record)`: results, and late elements (uncounted).
    #[allow(clippy::type_complexity)]
    pub(crate) fn aggregate_elements<A>(
        self,
        name: &str,
        agg: A,
    ) -> (
        Stream<'s, Time, Vec<WindowResult<K, A::Out>>>,
        Stream<'s, Time, Vec<(K, EventTime, T)>>,
    )
    where
        A: AggregateFunction<(K, EventTime, T)>,
        A::Out: StreamData,
    {
        let env = self.keyed.env;
        let name = env.borrow_mut().claim(name);
        let input = self.keyed.stream;
        let key = key_of::<K, T>;
        let time = |d: &(K, EventTime, T)| d.1;
        let mut inner = env.borrow_mut();
        match inner.checkpoints.as_mut() {
            Some(graph) => {
                input.window_aggregate_checkpointed(&name, self.spec, key, time, agg, graph)
            }
            None => input.window_aggregate(&name, self.spec, key, time, agg),
        }
    }
}

/// The key of a keyed stream's element.
pub(crate) fn key_of<K, T>(d: &(K, EventTime, T)) -> &K {
    &d.0
}

impl<'s, K, T> SessionWindowedStream<'s, K, T>
where
    K: StreamData + Hash + Eq + Clone + Serialize + DeserializeOwned,
    T: StreamData,
{
    /// Sessions accept records until the watermark passes `end + ms`, and
    /// fire once then.
    ///
    /// # Examples
    /// 9 000 arrives when the watermark is 30 000: without lateness the
    /// session [1 000, 6 000) has fired and 9 000 is late; with 30 s of
    /// lateness it merges in (the gap is 5 s).
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::Count;
    /// let sessions = |lateness: u64| {
    ///     let got = Arc::new(Mutex::new(Vec::new()));
    ///     let g = got.clone();
    ///     let summary = execute(&JobOptions::new("doc"), move |env| {
    ///         env.from_partitions("clicks", vec![vec![1_000u64, 30_000, 5_500, 9_000]],
    ///                 WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |t: &u64| *t)
    ///             .key_by(|_| 'u')
    ///             .session_window(5_000)
    ///             .allowed_lateness_ms(lateness)
    ///             .aggregate("sessions", Count)
    ///             .results
    ///             .map(|r| (r.window.start_ms, r.window.end_ms, r.value))
    ///             .sink_vec("rows", g.clone());
    ///         Ok(())
    ///     }).unwrap();
    ///     let mut rows = got.lock().unwrap().clone();
    ///     rows.sort();
    ///     (rows, summary.late)
    /// };
    /// assert_eq!(sessions(0), (vec![(1_000, 6_000, 1), (30_000, 35_000, 1)], 2));
    /// assert_eq!(sessions(30_000), (vec![(1_000, 14_000, 3), (30_000, 35_000, 1)], 0));
    /// ```
    pub fn allowed_lateness_ms(mut self, ms: u64) -> Self {
        self.spec = self.spec.allowed_lateness_ms(ms);
        self
    }

    /// Aggregates each session and key incrementally (accumulators of
    /// merging sessions are merged). Results carry `end − 1` as event time.
    /// Takes part in checkpoints.
    ///
    /// # Examples
    /// 4 000 bridges the sessions of 1 000 and 7 000 (gap 3 s): they merge
    /// into one, and the sums merge with them.
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Sum};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     // (event time, amount): 4 000 arrives last, within the out-of-orderness.
    ///     env.from_partitions("clicks", vec![vec![(1_000u64, 1i64), (7_000, 10), (4_000, 100), (20_000, 1_000)]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(5_000), |c: &(u64, i64)| c.0)
    ///         .key_by(|_| 'u')
    ///         .session_window(3_000)
    ///         .aggregate("sessions", (Count, Sum::of(|c: &(u64, i64)| c.1)))
    ///         .results
    ///         .map(|r| (r.window.start_ms, r.window.end_ms, r.value))
    ///         .sink_vec("rows", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut rows = got.lock().unwrap().clone();
    /// rows.sort();
    /// assert_eq!(rows, vec![(1_000, 10_000, (3, 111)), (20_000, 23_000, (1, 1_000))]);
    /// ```
    pub fn aggregate<A>(self, name: &str, aggregate: A) -> WindowOutput<'s, K, A::Out, T>
    where
        A: AggregateFunction<T>,
        A::Out: StreamData,
    {
        let env = self.keyed.env.clone();
        let (results, late) = self.aggregate_elements(name, OnValue(aggregate));
        window_output(env, results, late)
    }

    /// The session operator with an aggregate over whole elements `(key,
    /// event time, record)`: results, and late elements (uncounted).
    #[allow(clippy::type_complexity)]
    pub(crate) fn aggregate_elements<A>(
        self,
        name: &str,
        agg: A,
    ) -> (
        Stream<'s, Time, Vec<WindowResult<K, A::Out>>>,
        Stream<'s, Time, Vec<(K, EventTime, T)>>,
    )
    where
        A: AggregateFunction<(K, EventTime, T)>,
        A::Out: StreamData,
    {
        let env = self.keyed.env;
        let name = env.borrow_mut().claim(name);
        let input = self.keyed.stream;
        let key = key_of::<K, T>;
        let time = |d: &(K, EventTime, T)| d.1;
        let mut inner = env.borrow_mut();
        match inner.checkpoints.as_mut() {
            Some(graph) => {
                input.session_window_aggregate_checkpointed(&name, self.spec, key, time, agg, graph)
            }
            None => input.session_window_aggregate(&name, self.spec, key, time, agg),
        }
    }
}

/// Window results at `end − 1`, and late records counted.
#[allow(clippy::type_complexity)]
fn window_output<'s, K: StreamData, O: StreamData, T: StreamData>(
    env: Env<'s>,
    results: Stream<'s, Time, Vec<WindowResult<K, O>>>,
    late: Stream<'s, Time, Vec<(K, EventTime, T)>>,
) -> WindowOutput<'s, K, O, T> {
    window_output_with(env, results, late, |(_, t, r)| (t, r))
}

/// [`window_output`] with late elements turned into records by `record`.
#[allow(clippy::type_complexity)]
pub(crate) fn window_output_with<'s, K, O, E, R>(
    env: Env<'s>,
    results: Stream<'s, Time, Vec<WindowResult<K, O>>>,
    late: Stream<'s, Time, Vec<E>>,
    record: impl Fn(E) -> (EventTime, R) + 'static,
) -> WindowOutput<'s, K, O, R>
where
    K: StreamData,
    O: StreamData,
    E: StreamData,
    R: StreamData,
{
    let counters = env.borrow().counters.clone();
    let late = late
        .inspect_batch(move |_, b| {
            counters.late.fetch_add(b.len() as u64, Ordering::Relaxed);
        })
        .map(record);
    let results = results.map(|r| (r.window.end_ms - 1, r));
    WindowOutput {
        results: DataStream::after_state(results, env.clone()),
        late: DataStream::after_state(late, env),
    }
}
