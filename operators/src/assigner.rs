//! Window assigners: which event-time windows a record belongs to.
//!
//! An assigner maps an event time to windows `[start, end)` (milliseconds). The
//! window aggregate asks the assigner for every record and keeps state per
//! (window, key), so windows are values, not positions in a grid. Session windows
//! fit this shape: an assigner returns `[e, e + gap)` for each record and the
//! operator merges overlapping windows of a key, combining their accumulators with
//! [`AggregateFunction::merge`](crate::AggregateFunction::merge) — the one missing
//! piece is that merge step in the operator (not built yet).

use serde::{Deserialize, Serialize};

/// An event-time window `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start, ms since the Unix epoch.
    pub start_ms: u64,
    /// Exclusive end, ms since the Unix epoch.
    pub end_ms: u64,
}

impl Window {
    /// Window length in ms.
    pub fn size_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// Assigns event times to windows.
pub trait WindowAssigner: Clone + 'static {
    /// Calls `f` for each window containing `event_time_ms`, in increasing order of
    /// end.
    fn assign(&self, event_time_ms: u64, f: impl FnMut(Window));
    /// The end of the last window containing `event_time_ms` — a record is late for
    /// all its windows when this plus allowed lateness is at most the watermark.
    fn max_end(&self, event_time_ms: u64) -> u64;
}

/// Tumbling (fixed, non-overlapping) windows of `size_ms`, aligned to the epoch
/// plus `offset_ms`.
///
/// # Examples
/// ```
/// use streamforge_operators::{Tumbling, Window, WindowAssigner};
/// let t = Tumbling::new(60_000);
/// let mut got = vec![];
/// t.assign(61_500, |w| got.push(w));
/// assert_eq!(got, vec![Window { start_ms: 60_000, end_ms: 120_000 }]);
/// assert_eq!(t.max_end(61_500), 120_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tumbling {
    /// Window size in ms (> 0).
    pub size_ms: u64,
    /// Alignment offset in ms (< size).
    pub offset_ms: u64,
}

impl Tumbling {
    /// Tumbling windows of `size_ms` (must be > 0).
    ///
    /// # Panics
    /// If `size_ms` is 0 (job configs are validated before this point).
    pub fn new(size_ms: u64) -> Self {
        assert!(size_ms > 0, "tumbling window size must be > 0");
        Tumbling {
            size_ms,
            offset_ms: 0,
        }
    }

    #[inline]
    fn start(&self, t: u64) -> u64 {
        let shifted = t + self.size_ms - self.offset_ms;
        shifted - shifted % self.size_ms + self.offset_ms - self.size_ms
    }
}

impl WindowAssigner for Tumbling {
    #[inline]
    fn assign(&self, event_time_ms: u64, mut f: impl FnMut(Window)) {
        let start = self.start(event_time_ms);
        f(Window {
            start_ms: start,
            end_ms: start + self.size_ms,
        });
    }
    #[inline]
    fn max_end(&self, event_time_ms: u64) -> u64 {
        self.start(event_time_ms) + self.size_ms
    }
}

/// Sliding (hopping) windows of `size_ms` every `slide_ms`; a record belongs to
/// `ceil(size/slide)` windows (Flink's `SlidingEventTimeWindows`).
///
/// # Examples
/// ```
/// use streamforge_operators::{Sliding, Window, WindowAssigner};
/// let s = Sliding::new(60_000, 30_000);
/// let mut got = vec![];
/// s.assign(70_000, |w| got.push(w));
/// assert_eq!(got, vec![
///     Window { start_ms: 30_000, end_ms: 90_000 },
///     Window { start_ms: 60_000, end_ms: 120_000 },
/// ]);
/// assert_eq!(s.max_end(70_000), 120_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sliding {
    /// Window size in ms (> 0).
    pub size_ms: u64,
    /// Slide in ms (> 0, ≤ size).
    pub slide_ms: u64,
}

impl Sliding {
    /// Sliding windows; `slide_ms` must be in `1..=size_ms`.
    ///
    /// # Panics
    /// On a zero size or slide, or a slide larger than the size.
    pub fn new(size_ms: u64, slide_ms: u64) -> Self {
        assert!(
            size_ms > 0 && slide_ms > 0 && slide_ms <= size_ms,
            "need 0 < slide ≤ size"
        );
        Sliding { size_ms, slide_ms }
    }
}

impl WindowAssigner for Sliding {
    #[inline]
    fn assign(&self, event_time_ms: u64, mut f: impl FnMut(Window)) {
        let last_start = event_time_ms - event_time_ms % self.slide_ms;
        // Windows starting in (t - size, t], ascending.
        let first_start = {
            let lowest = (event_time_ms + 1).saturating_sub(self.size_ms);
            lowest.div_ceil(self.slide_ms) * self.slide_ms
        };
        let mut s = first_start;
        while s <= last_start {
            f(Window {
                start_ms: s,
                end_ms: s + self.size_ms,
            });
            s += self.slide_ms;
        }
    }
    #[inline]
    fn max_end(&self, event_time_ms: u64) -> u64 {
        event_time_ms - event_time_ms % self.slide_ms + self.size_ms
    }
}
