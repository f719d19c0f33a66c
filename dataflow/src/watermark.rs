//! Per-partition watermarks with bounded out-of-orderness.

use crate::time::EventTime;

/// Watermark of one source partition: `max event time seen − out_of_orderness_ms`.
///
/// This is Flink's `BoundedOutOfOrdernessWatermarks` expressed in our frontier
/// convention: Flink's watermark `W` means "no more records with timestamp ≤ W" and
/// is `max − bound − 1`; ours means "no more records with time < W", so
/// `W = max − bound`. A window `[start, end)` is late for a record when
/// `end + allowed_lateness ≤ W`, the same instants as Flink's
/// `window.maxTimestamp() + allowedLateness <= currentWatermark`.
///
/// # Examples
/// ```
/// use streamforge_dataflow::watermark::PartitionWatermark;
/// let mut w = PartitionWatermark::new(1_000);
/// assert_eq!(w.current(), 0);
/// w.observe(5_000);
/// w.observe(4_200); // out of order but within the bound
/// assert_eq!(w.current(), 4_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionWatermark {
    max_seen: Option<EventTime>,
    out_of_orderness_ms: u64,
}

impl PartitionWatermark {
    /// A partition watermark that tolerates `out_of_orderness_ms` of disorder.
    pub fn new(out_of_orderness_ms: u64) -> Self {
        PartitionWatermark {
            max_seen: None,
            out_of_orderness_ms,
        }
    }

    /// The current watermark (0 before any record).
    #[inline]
    pub fn current(&self) -> EventTime {
        self.max_seen
            .map_or(0, |m| m.saturating_sub(self.out_of_orderness_ms))
    }

    /// Accounts for a record with event time `event_time_ms`.
    #[inline]
    pub fn observe(&mut self, event_time_ms: EventTime) {
        match self.max_seen {
            Some(m) if m >= event_time_ms => {}
            _ => self.max_seen = Some(event_time_ms),
        }
    }

    /// Restores a watermark from its saved maximum (checkpoint restore).
    pub fn from_max_seen(max_seen: Option<EventTime>, out_of_orderness_ms: u64) -> Self {
        PartitionWatermark {
            max_seen,
            out_of_orderness_ms,
        }
    }

    /// The maximum event time seen so far.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.max_seen
    }
}
