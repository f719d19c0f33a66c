//! A mergeable quantile sketch (DDSketch).
//!
//! Wraps `sketches-ddsketch` (a port of DataDog's DDSketch, Masson et al., VLDB
//! 2019): every quantile it returns is within a relative error `alpha` of a value
//! of the input's true quantile rank. Bins are counts, so the result does not
//! depend on insertion or merge order — the property that makes results identical
//! across worker counts.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of [`QuantileSketch::default`]: 1 %.
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.01;

/// A mergeable quantile sketch with bounded relative error.
///
/// # Examples
/// ```
/// use streamforge_operators::QuantileSketch;
/// let mut a = QuantileSketch::default();
/// let mut b = QuantileSketch::default();
/// for v in 1..=50 { a.add(v as f64) }
/// for v in 51..=100 { b.add(v as f64) }
/// a.merge(&b);
/// let p95 = a.quantile(0.95).unwrap();
/// assert!((p95 - 95.0).abs() <= 95.0 * 0.02, "p95 = {p95}");
/// assert_eq!(a.count(), 100);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct QuantileSketch {
    inner: DDSketch,
}

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileSketch")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        QuantileSketch::new(DEFAULT_RELATIVE_ACCURACY)
    }
}

impl QuantileSketch {
    /// A sketch whose quantiles have relative error at most `relative_accuracy`
    /// (e.g. 0.01), with at most 2048 bins per sign.
    pub fn new(relative_accuracy: f64) -> Self {
        QuantileSketch {
            inner: DDSketch::new(Config::new(relative_accuracy, 2048, 1.0e-9)),
        }
    }

    /// Adds one value.
    #[inline]
    pub fn add(&mut self, value: f64) {
        self.inner.add(value)
    }

    /// Merges another sketch of the same accuracy into this one.
    pub fn merge(&mut self, other: &QuantileSketch) {
        // Both sketches come from `new` with the same accuracy inside one job;
        // a config mismatch is a programming error.
        self.inner
            .merge(&other.inner)
            .expect("merging sketches of different accuracy");
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), or `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.inner.quantile(q).ok().flatten()
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.inner.count() as u64
    }
}
