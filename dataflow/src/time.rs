//! The time model.
//!
//! A timely timestamp in streamforge is [`Time`] = `Product<Epoch, EventTime>`:
//!
//! * the **event-time coordinate** is a watermark in milliseconds since the Unix
//!   epoch. A source emits every record at a time whose event-time coordinate is at
//!   most the watermark of the record's partition when it was read, and holds its
//!   capability at the minimum watermark of its partitions. So the input frontier of
//!   any operator, projected on this coordinate, *is* the Flink watermark: no record
//!   with a smaller delivery time can still arrive.
//! * the **epoch coordinate** counts checkpoints. A source bumps its epoch when it
//!   takes part in a checkpoint; epoch `k` is complete at an operator when no element
//!   of its input frontier has epoch `≤ k`. The state of every operator at that moment,
//!   plus the source positions recorded at the bump, is a consistent cut.
//!
//! See `docs/ARCHITECTURE.md` for the full argument.

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::CapabilitySet;
use timely::order::PartialOrder;
use timely::progress::frontier::MutableAntichain;
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// Checkpoint epoch number (0 before the first checkpoint).
pub type Epoch = u64;
/// Event time in milliseconds since the Unix epoch.
pub type EventTime = u64;
/// The timely timestamp of every streamforge dataflow: `(epoch, event_ms)`,
/// ordered as a product (both coordinates `≤`).
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize,
)]
pub struct Time {
    /// Checkpoint epoch.
    pub epoch: Epoch,
    /// Event-time coordinate (a watermark), ms since the Unix epoch.
    pub event_ms: EventTime,
}

impl PartialOrder for Time {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.epoch <= other.epoch && self.event_ms <= other.event_ms
    }
}

/// Path summary for [`Time`]: how much each coordinate advances along a path.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize,
)]
pub struct TimeSummary {
    /// Epochs added.
    pub epoch: u64,
    /// Milliseconds added.
    pub event_ms: u64,
}

impl PartialOrder for TimeSummary {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.epoch <= other.epoch && self.event_ms <= other.event_ms
    }
}

impl PathSummary<Time> for TimeSummary {
    #[inline]
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(Time {
            epoch: src.epoch.checked_add(self.epoch)?,
            event_ms: src.event_ms.checked_add(self.event_ms)?,
        })
    }
    #[inline]
    fn followed_by(&self, other: &Self) -> Option<Self> {
        Some(TimeSummary {
            epoch: self.epoch.checked_add(other.epoch)?,
            event_ms: self.event_ms.checked_add(other.event_ms)?,
        })
    }
}

impl Timestamp for Time {
    type Summary = TimeSummary;
    fn minimum() -> Self {
        Time::default()
    }
}

/// `Time` is a lattice (join = per-coordinate max, meet = min), so differential
/// dataflow collections can use it.
///
/// # Examples
/// ```
/// use differential_dataflow::lattice::Lattice;
/// use streamforge_dataflow::time::time;
/// assert_eq!(time(1, 500).join(&time(2, 300)), time(2, 500));
/// assert_eq!(time(1, 500).meet(&time(2, 300)), time(1, 300));
/// ```
impl differential_dataflow::lattice::Lattice for Time {
    #[inline]
    fn join(&self, other: &Self) -> Self {
        Time {
            epoch: self.epoch.max(other.epoch),
            event_ms: self.event_ms.max(other.event_ms),
        }
    }
    #[inline]
    fn meet(&self, other: &Self) -> Self {
        Time {
            epoch: self.epoch.min(other.epoch),
            event_ms: self.event_ms.min(other.event_ms),
        }
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Self {
        Time::default()
    }
    fn to_outer(self) {}
    fn summarize(_: TimeSummary) {}
}

/// Builds a [`Time`] from an epoch and an event-time watermark.
///
/// # Examples
/// ```
/// use streamforge_dataflow::time::time;
/// let t = time(2, 1_000);
/// assert_eq!((t.epoch, t.event_ms), (2, 1_000));
/// ```
pub fn time(epoch: Epoch, event_time_ms: EventTime) -> Time {
    Time {
        epoch,
        event_ms: event_time_ms,
    }
}

/// What an input frontier says about event time and epochs.
///
/// # Examples
/// ```
/// use streamforge_dataflow::time::{time, FrontierView};
/// use timely::progress::frontier::MutableAntichain;
/// let mut f = MutableAntichain::new();
/// f.update_iter([(time(1, 500), 1), (time(2, 300), 1)]);
/// let view = FrontierView::of(&f);
/// assert_eq!(view.watermark_ms, Some(300));
/// assert_eq!(view.oldest_epoch, Some(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontierView {
    /// Minimum event-time coordinate over the frontier: the watermark. `None` once
    /// the input is exhausted (the watermark is +∞).
    pub watermark_ms: Option<EventTime>,
    /// Minimum epoch over the frontier: the oldest epoch not yet complete.
    pub oldest_epoch: Option<Epoch>,
}

impl FrontierView {
    /// Reads a frontier.
    pub fn of(frontier: &MutableAntichain<Time>) -> Self {
        let mut watermark_ms = None::<EventTime>;
        let mut oldest_epoch = None::<Epoch>;
        for t in frontier.frontier().iter() {
            watermark_ms = Some(watermark_ms.map_or(t.event_ms, |w| w.min(t.event_ms)));
            oldest_epoch = Some(oldest_epoch.map_or(t.epoch, |e| e.min(t.epoch)));
        }
        FrontierView {
            watermark_ms,
            oldest_epoch,
        }
    }

    /// True when every record with event-time coordinate `< t_ms` has arrived.
    pub fn passed(&self, t_ms: EventTime) -> bool {
        self.watermark_ms.is_none_or(|w| w >= t_ms)
    }
}

/// Downgrades `caps` to the frontier `to` with every event-time coordinate
/// lowered to at most `hold` where the held capabilities allow it: an operator
/// that knows it will emit nothing before event time `hold` keeps the times it
/// emits at independent of how far the watermark jumped.
pub fn hold_back<'a>(
    caps: &mut CapabilitySet<Time>,
    to: impl Iterator<Item = &'a Time>,
    hold: u64,
) {
    let mut target: Vec<Time> = Vec::new();
    for f in to {
        let mut t = Time {
            epoch: f.epoch,
            event_ms: f.event_ms.min(hold),
        };
        if !caps.iter().any(|c| c.time().less_equal(&t)) {
            match caps
                .iter()
                .filter(|c| c.time().epoch <= t.epoch)
                .map(|c| c.time().event_ms)
                .min()
            {
                Some(m) => t.event_ms = t.event_ms.max(m),
                None => continue,
            }
        }
        target.push(t);
    }
    caps.downgrade(target.iter());
}

/// Where an operator holding `caps` emits what belongs at event time `ms`:
/// in the oldest open epoch of its input (`oldest`; the capabilities' own when
/// the input ended), at `ms` — or at the earliest event time the held
/// capabilities allow, if they do not reach back to `ms` (see [`hold_back`]).
///
/// # Panics
/// When `caps` holds no capability at or below `oldest`.
pub fn emit_at(caps: &CapabilitySet<Time>, oldest: Option<Epoch>) -> impl Fn(u64) -> Time {
    let floor = caps
        .iter()
        .filter(|c| oldest.is_none_or(|e| c.time().epoch <= e))
        .min_by_key(|c| c.time().event_ms)
        .map(|c| *c.time())
        .expect("a capability in the oldest open epoch");
    let epoch = oldest.unwrap_or(floor.epoch).max(floor.epoch);
    move |ms| Time {
        epoch,
        event_ms: ms.max(floor.event_ms),
    }
}

/// Runs a one-worker dataflow over [`Time`] to completion and returns what `func`
/// returned — `timely::example` for streamforge's timestamp, used by doctests.
pub fn example<R, F>(func: F) -> R
where
    R: Send + 'static,
    F: FnOnce(timely::dataflow::Scope<'_, Time>) -> R + Send + Sync + 'static,
{
    timely::execute_directly(|worker| worker.dataflow::<Time, _, _>(func))
}
