//! A mergeable quantile sketch (DDSketch).
//!
//! Wraps `sketches-ddsketch` (a port of DataDog's DDSketch, Masson et al., VLDB
//! 2019): every quantile it returns is within a relative error `alpha` of a value
//! of the input's true quantile rank. Bins are counts, so the result does not
//! depend on insertion or merge order — the property that makes results identical
//! across worker counts.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::encoding::{decode_from_java_bytes, encode_to_java_bytes};
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
///
/// Serialized (checkpoints) in DDSketch's compact Java-compatible encoding:
/// only occupied bins, varint-coded — about 20 bytes for a few distinct values
/// instead of the 1 KB+ of the in-memory bin array.
#[derive(Clone)]
pub struct QuantileSketch {
    inner: DDSketch,
}

impl Serialize for QuantileSketch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_to_java_bytes(&self.inner))
    }
}

impl<'de> Deserialize<'de> for QuantileSketch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(d)?;
        let inner = decode_from_java_bytes(&bytes).map_err(serde::de::Error::custom)?;
        Ok(QuantileSketch { inner })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trip_is_lossless_and_mergeable() {
        let mut a = QuantileSketch::default();
        for i in 1..=5_000u32 {
            a.add(f64::from(i % 977) * 1.7 + 0.3);
        }
        let bytes = bincode::serialize(&a).unwrap();
        assert!(bytes.len() < 8_000, "{} bytes", bytes.len());
        let mut b: QuantileSketch = bincode::deserialize(&bytes).unwrap();
        assert_eq!(a.count(), b.count());
        for q in [0.0, 0.25, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(a.quantile(q), b.quantile(q), "q = {q}");
        }
        // Continuing after a restore gives what continuing without one gives.
        let mut more = QuantileSketch::default();
        for v in [0.5, 3.0, 12_000.0] {
            a.add(v);
            more.add(v);
        }
        b.merge(&more);
        for q in [0.5, 0.95, 1.0] {
            assert_eq!(a.quantile(q), b.quantile(q), "q = {q} after more values");
        }
        let small = bincode::serialize(&more).unwrap();
        assert!(small.len() < 100, "{} bytes for 3 values", small.len());
    }
}
