//! Flow control (backpressure) from the sources.
//!
//! Timely has no flow control of its own: a source that reads faster than
//! the rest of the job fills the channels and, worse, the state of every
//! window that cannot fire until the *slowest* partition's watermark passes
//! it. A [`FlowControl`] gives the sources a view of how far the job has
//! got: a probe at the input of each stateful operator (not its output,
//! which trails its input by a window), shared by every source of the
//! worker. A source then pauses a partition
//!
//! * whose watermark is more than `watermark_slack_ms` ahead of the probed
//!   frontier (Flink's watermark alignment, `max-allowed-watermark-drift`),
//! * or every partition when its epoch is more than `max_epochs_ahead`
//!   checkpoint epochs ahead of the probed frontier,
//! * or, when the bytes it has read but the probe has not yet passed exceed
//!   `in_flight_bytes`, every partition that is ahead of the frontier.
//!
//! It cannot deadlock: the probed frontier is held only by the sources'
//! own capabilities and records in flight (the operators between a source
//! and a probe are stateless), the source downgrades its capabilities to
//! its partitions' watermarks before it yields whether it read or not, and
//! the partition whose watermark holds the frontier is never ahead of it,
//! so it is always admitted. A paused partition is not idle: it keeps its
//! place in the watermark (its records are merely not read yet), and pausing
//! never changes which records are late: that is decided from each
//! record's partition watermark, whatever order the partitions are read in.

use std::fmt;

use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::dataflow::Stream;
use timely::Container;

use crate::time::{Epoch, EventTime, Time};

/// The limits of flow control; `None` turns a limit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSettings {
    /// A partition whose watermark is more than this ahead (ms) of the
    /// slowest stateful operator's input frontier pauses.
    pub watermark_slack_ms: Option<u64>,
    /// A source more than this many epochs ahead of that frontier pauses.
    pub max_epochs_ahead: Option<u64>,
    /// Bytes read but not yet past the probes above which the partitions
    /// ahead of the frontier pause (per worker).
    pub in_flight_bytes: Option<u64>,
}

impl Default for FlowSettings {
    /// 30 s of watermark slack, 2 epochs, 64 MiB in flight per worker.
    fn default() -> Self {
        FlowSettings {
            watermark_slack_ms: Some(30_000),
            max_epochs_ahead: Some(2),
            in_flight_bytes: Some(64 << 20),
        }
    }
}

impl FlowSettings {
    /// No limits: sources read as fast as they can.
    pub fn off() -> Self {
        FlowSettings {
            watermark_slack_ms: None,
            max_epochs_ahead: None,
            in_flight_bytes: None,
        }
    }
}

/// One worker's flow control: the limits and the probes of the stateful
/// operators' inputs. Clones share the probes.
///
/// # Examples
/// A probe that is attached to nothing (a job without stateful operators)
/// holds nothing back:
/// ```
/// use streamforge_dataflow::flow_control::{FlowControl, FlowSettings};
/// use streamforge_dataflow::time::time;
/// let flow = FlowControl::new(FlowSettings::default());
/// assert_eq!(flow.frontier_low(), None);
/// assert!(flow.passed(&time(0, 5)));
/// let gate = flow.gate(0);
/// assert!(gate.admits(u64::MAX));
/// ```
#[derive(Clone)]
pub struct FlowControl {
    probe: ProbeHandle<Time>,
    /// The limits.
    pub settings: FlowSettings,
}

impl fmt::Debug for FlowControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowControl")
            .field("settings", &self.settings)
            .field("frontier_low", &self.frontier_low())
            .finish()
    }
}

/// What a source may read now (see [`FlowControl::gate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Partitions with a watermark above this pause (`u64::MAX`: none).
    pub max_watermark: EventTime,
    /// The source is too many epochs ahead: read nothing.
    pub epochs_ahead: bool,
    /// The probed frontier's lowest event time (`None`: nothing holds it).
    pub frontier_ms: Option<EventTime>,
}

impl Gate {
    /// Whether a partition with watermark `watermark` may be read.
    #[inline]
    pub fn admits(&self, watermark: EventTime) -> bool {
        !self.epochs_ahead && watermark <= self.max_watermark
    }

    /// Whether a partition with watermark `watermark` is ahead of the
    /// frontier (the in-flight budget pauses only those).
    #[inline]
    pub fn ahead(&self, watermark: EventTime) -> bool {
        self.frontier_ms.is_some_and(|f| watermark > f)
    }
}

impl FlowControl {
    /// Flow control with these limits and no probe yet.
    pub fn new(settings: FlowSettings) -> Self {
        FlowControl {
            probe: ProbeHandle::new(),
            settings,
        }
    }

    /// Flow control with these limits, `None` when they are all off.
    pub fn enabled(settings: FlowSettings) -> Option<Self> {
        (settings != FlowSettings::off()).then(|| FlowControl::new(settings))
    }

    /// [`FlowControl::attach`] when there is flow control; `stream` as it
    /// is otherwise.
    pub fn attach_to<'s, C: Container + Clone + 'static>(
        flow: Option<&FlowControl>,
        stream: Stream<'s, Time, C>,
    ) -> Stream<'s, Time, C> {
        match flow {
            Some(f) => f.attach(stream),
            None => stream,
        }
    }

    /// Adds `stream` (the input of a stateful operator) to the probed
    /// frontier; returns the stream to build the operator on.
    pub fn attach<'s, C: Container + Clone + 'static>(
        &self,
        stream: Stream<'s, Time, C>,
    ) -> Stream<'s, Time, C> {
        stream.probe_with(&self.probe)
    }

    /// The lowest epoch and lowest event time over the probed frontier
    /// (each minimum separately: the frontier is an antichain of the
    /// product order); `None` when nothing holds it.
    pub fn frontier_low(&self) -> Option<(Epoch, EventTime)> {
        self.probe.with_frontier(|f| {
            let epoch = f.iter().map(|t| t.epoch).min()?;
            let ms = f.iter().map(|t| t.event_ms).min()?;
            Some((epoch, ms))
        })
    }

    /// Whether every probe has passed `t` (records at `t` are no longer in
    /// flight).
    pub fn passed(&self, t: &Time) -> bool {
        !self.probe.less_equal(t)
    }

    /// The gate for a source now at `epoch`.
    pub fn gate(&self, epoch: Epoch) -> Gate {
        let Some((low_epoch, low_ms)) = self.frontier_low() else {
            return Gate {
                max_watermark: EventTime::MAX,
                epochs_ahead: false,
                frontier_ms: None,
            };
        };
        Gate {
            max_watermark: self
                .settings
                .watermark_slack_ms
                .map_or(EventTime::MAX, |s| low_ms.saturating_add(s)),
            epochs_ahead: self
                .settings
                .max_epochs_ahead
                .is_some_and(|n| epoch > low_epoch.saturating_add(n)),
            frontier_ms: Some(low_ms),
        }
    }
}
