//! Incremental aggregate functions (Flink's `AggregateFunction` shape).
//!
//! An aggregate keeps an accumulator per window and key: `create_accumulator`,
//! `add` one input, `merge` two accumulators (sliding/session windows and
//! restore with another parallelism), `get_result` when the window fires.
//! Tuples of aggregates are aggregates, so one pass computes several metrics:
//! `(Count, Sum::of(..), Max::of(..))`.

use std::collections::HashSet;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sketch::QuantileSketch;

/// An incremental aggregation over inputs of type `In`.
pub trait AggregateFunction<In>: Clone + 'static {
    /// Per-window, per-key state. Serializable so checkpoints can store it.
    type Acc: Clone + Serialize + DeserializeOwned + 'static;
    /// The value emitted when the window fires.
    type Out;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds one input.
    fn add(&self, acc: &mut Self::Acc, input: &In);
    /// Merges `other` into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// The result for a (non-empty) accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Numbers the built-in aggregates accept.
pub trait Numeric:
    Copy + Default + PartialOrd + std::ops::AddAssign + Serialize + DeserializeOwned + 'static
{
    /// Lossy conversion for averages.
    fn to_f64(self) -> f64;
}

macro_rules! numeric {
    ($($t:ty),*) => { $(impl Numeric for $t { #[inline] fn to_f64(self) -> f64 { self as f64 } })* };
}
numeric!(i32, i64, u32, u64, f32, f64);

/// Counts inputs.
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Count};
/// let mut acc = AggregateFunction::<&str>::create_accumulator(&Count);
/// Count.add(&mut acc, &"a");
/// Count.add(&mut acc, &"b");
/// assert_eq!(AggregateFunction::<&str>::get_result(&Count, &acc), 2);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<In> AggregateFunction<In> for Count {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _: &In) {
        *acc += 1
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Counts inputs matching a predicate.
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, CountIf};
/// let errors = CountIf::of(|x: &i64| *x < 0);
/// let mut acc = errors.create_accumulator();
/// for x in [1, -2, -3] { errors.add(&mut acc, &x) }
/// assert_eq!(errors.get_result(&acc), 2);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CountIf<F>(pub F);

impl<F> CountIf<F> {
    /// Counts inputs for which `predicate` holds.
    pub fn of(predicate: F) -> Self {
        CountIf(predicate)
    }
}

impl<In, F: Fn(&In) -> bool + Clone + 'static> AggregateFunction<In> for CountIf<F> {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, input: &In) {
        *acc += (self.0)(input) as u64
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Sums a numeric field. Integer sums are exact and order-independent; `f64` sums
/// may differ in the last bits with the order of inputs.
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Sum};
/// let s = Sum::of(|x: &(i64, &str)| x.0);
/// let mut acc = s.create_accumulator();
/// s.add(&mut acc, &(3, "a"));
/// s.add(&mut acc, &(4, "b"));
/// assert_eq!(s.get_result(&acc), 7);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Sum<F>(pub F);

impl<F> Sum<F> {
    /// Sums `field(input)`.
    pub fn of(field: F) -> Self {
        Sum(field)
    }
}

impl<In, V: Numeric, F: Fn(&In) -> V + Clone + 'static> AggregateFunction<In> for Sum<F> {
    type Acc = V;
    type Out = V;
    fn create_accumulator(&self) -> V {
        V::default()
    }
    #[inline]
    fn add(&self, acc: &mut V, input: &In) {
        *acc += (self.0)(input)
    }
    fn merge(&self, acc: &mut V, other: V) {
        *acc += other
    }
    fn get_result(&self, acc: &V) -> V {
        *acc
    }
}

/// Maximum of a numeric field (`None` for no input).
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Max};
/// let m = Max::of(|x: &i64| *x);
/// let mut acc = m.create_accumulator();
/// for x in [3, 9, 4] { m.add(&mut acc, &x) }
/// assert_eq!(m.get_result(&acc), Some(9));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Max<F>(pub F);

impl<F> Max<F> {
    /// Maximum of `field(input)`.
    pub fn of(field: F) -> Self {
        Max(field)
    }
}

impl<In, V: Numeric, F: Fn(&In) -> V + Clone + 'static> AggregateFunction<In> for Max<F> {
    type Acc = Option<V>;
    type Out = Option<V>;
    fn create_accumulator(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, input: &In) {
        let v = (self.0)(input);
        match acc {
            Some(m) if *m >= v => {}
            _ => *acc = Some(v),
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if let Some(v) = other {
            match acc {
                Some(m) if *m >= v => {}
                _ => *acc = Some(v),
            }
        }
    }
    fn get_result(&self, acc: &Option<V>) -> Option<V> {
        *acc
    }
}

/// Minimum of a numeric field (`None` for no input).
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Min};
/// let m = Min::of(|x: &i64| *x);
/// let mut acc = m.create_accumulator();
/// for x in [3, 9, 4] { m.add(&mut acc, &x) }
/// assert_eq!(m.get_result(&acc), Some(3));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Min<F>(pub F);

impl<F> Min<F> {
    /// Minimum of `field(input)`.
    pub fn of(field: F) -> Self {
        Min(field)
    }
}

impl<In, V: Numeric, F: Fn(&In) -> V + Clone + 'static> AggregateFunction<In> for Min<F> {
    type Acc = Option<V>;
    type Out = Option<V>;
    fn create_accumulator(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, input: &In) {
        let v = (self.0)(input);
        match acc {
            Some(m) if *m <= v => {}
            _ => *acc = Some(v),
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if let Some(v) = other {
            match acc {
                Some(m) if *m <= v => {}
                _ => *acc = Some(v),
            }
        }
    }
    fn get_result(&self, acc: &Option<V>) -> Option<V> {
        *acc
    }
}

/// Arithmetic mean of a numeric field: `sum / count` (0.0 for no input).
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Avg};
/// let a = Avg::of(|x: &i64| *x);
/// let mut acc = a.create_accumulator();
/// for x in [2, 4, 9] { a.add(&mut acc, &x) }
/// assert_eq!(a.get_result(&acc), 5.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Avg<F>(pub F);

impl<F> Avg<F> {
    /// Mean of `field(input)`.
    pub fn of(field: F) -> Self {
        Avg(field)
    }
}

impl<In, V: Numeric, F: Fn(&In) -> V + Clone + 'static> AggregateFunction<In> for Avg<F> {
    type Acc = (V, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (V, u64) {
        (V::default(), 0)
    }
    #[inline]
    fn add(&self, acc: &mut (V, u64), input: &In) {
        acc.0 += (self.0)(input);
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (V, u64), other: (V, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn get_result(&self, acc: &(V, u64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0.to_f64() / acc.1 as f64
        }
    }
}

/// Exact distinct count of a field, kept as a set of 64-bit stable hashes (so
/// two distinct values collide with probability ~n²/2⁶⁵).
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, DistinctCount};
/// let d = DistinctCount::of(|x: &(u32, u64)| x.1);
/// let mut acc = d.create_accumulator();
/// for x in [(1, 10), (2, 20), (3, 10)] { d.add(&mut acc, &x) }
/// assert_eq!(d.get_result(&acc), 2);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct DistinctCount<F>(pub F);

impl<F> DistinctCount<F> {
    /// Distinct values of `field(input)`.
    pub fn of(field: F) -> Self {
        DistinctCount(field)
    }
}

impl<In, V: Hash, F: Fn(&In) -> V + Clone + 'static> AggregateFunction<In> for DistinctCount<F> {
    type Acc = HashSet<u64>;
    type Out = u64;
    fn create_accumulator(&self) -> HashSet<u64> {
        HashSet::new()
    }
    #[inline]
    fn add(&self, acc: &mut HashSet<u64>, input: &In) {
        acc.insert(streamforge_dataflow::stable_hash(&(self.0)(input)));
    }
    fn merge(&self, acc: &mut HashSet<u64>, other: HashSet<u64>) {
        acc.extend(other)
    }
    fn get_result(&self, acc: &HashSet<u64>) -> u64 {
        acc.len() as u64
    }
}

/// Approximate quantiles of a field with a [`QuantileSketch`] (1 % relative
/// error); the result has one value per requested quantile, in order.
///
/// # Examples
/// ```
/// use streamforge_operators::{AggregateFunction, Quantiles};
/// let q = Quantiles::of(|x: &f64| *x, &[0.5, 0.99]);
/// let mut acc = q.create_accumulator();
/// for i in 1..=1000 { q.add(&mut acc, &(i as f64)) }
/// let r = q.get_result(&acc);
/// assert!((r[0] - 500.0).abs() < 10.0 && (r[1] - 990.0).abs() < 20.0, "{r:?}");
/// ```
#[derive(Clone, Debug)]
pub struct Quantiles<F> {
    field: F,
    quantiles: Vec<f64>,
}

impl<F> Quantiles<F> {
    /// Quantiles `qs` (each in 0..=1) of `field(input)`.
    pub fn of(field: F, qs: &[f64]) -> Self {
        Quantiles {
            field,
            quantiles: qs.to_vec(),
        }
    }
}

impl<In, F: Fn(&In) -> f64 + Clone + 'static> AggregateFunction<In> for Quantiles<F> {
    type Acc = QuantileSketch;
    type Out = Vec<f64>;
    fn create_accumulator(&self) -> QuantileSketch {
        QuantileSketch::default()
    }
    #[inline]
    fn add(&self, acc: &mut QuantileSketch, input: &In) {
        acc.add((self.field)(input))
    }
    fn merge(&self, acc: &mut QuantileSketch, other: QuantileSketch) {
        acc.merge(&other)
    }
    fn get_result(&self, acc: &QuantileSketch) -> Vec<f64> {
        self.quantiles
            .iter()
            .map(|q| acc.quantile(*q).unwrap_or(0.0))
            .collect()
    }
}

macro_rules! tuple_aggregate {
    ($($name:ident $idx:tt),+) => {
        impl<In, $($name: AggregateFunction<In>),+> AggregateFunction<In> for ($($name,)+) {
            type Acc = ($($name::Acc,)+);
            type Out = ($($name::Out,)+);
            fn create_accumulator(&self) -> Self::Acc {
                ($(self.$idx.create_accumulator(),)+)
            }
            #[inline]
            fn add(&self, acc: &mut Self::Acc, input: &In) {
                $(self.$idx.add(&mut acc.$idx, input);)+
            }
            fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
                $(self.$idx.merge(&mut acc.$idx, other.$idx);)+
            }
            fn get_result(&self, acc: &Self::Acc) -> Self::Out {
                ($(self.$idx.get_result(&acc.$idx),)+)
            }
        }
    };
}
tuple_aggregate!(A 0);
tuple_aggregate!(A 0, B 1);
tuple_aggregate!(A 0, B 1, C 2);
tuple_aggregate!(A 0, B 1, C 2, D 3);
tuple_aggregate!(A 0, B 1, C 2, D 3, E 4);
tuple_aggregate!(A 0, B 1, C 2, D 3, E 4, F 5);
