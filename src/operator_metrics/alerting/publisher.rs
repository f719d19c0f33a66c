//! `publish_hourly`: at every hour boundary `H` of event time, the rules of
//! hour of day `hour(H)` from the thresholds collection accumulated at `H`,
//! as [`RuleUpdate`]s with version `H` at event time `H`.
//!
//! Input: the changes of the per-group thresholds (the output of the
//! differential `reduce` over the history). Boundary `H` is published once no
//! change at event time `≤ H` can still arrive (every input frontier element
//! is past `H`); when the input ends, the boundaries up to the last change are
//! published. Keys (service, operator_name) that had a rule at the previous
//! publication and have none for this hour get a deletion (tombstone).
//! Boundaries before the first rule and after the last are skipped.
//!
//! State (this worker's keys): the last boundary published and the keys it
//! published — written into checkpoints, so a restored job publishes every
//! hour exactly once, with any worker count: after a rescale each key skips
//! the boundaries its old owner had published.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Stream;

use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointGraph, CheckpointMsg, FINAL};
use streamforge_dataflow::hash::{key_group, owner};
use streamforge_dataflow::keyed_state;
use streamforge_dataflow::time::{emit_at, hold_back, Epoch, FrontierView};
use streamforge_dataflow::Time;

use super::history::{ceil_hour, so_hash, HistoryKey, KeyNames};
use super::RuleUpdate;
use crate::operator_metrics::format_utc;
use crate::operator_metrics::thresholds::{hour_of_day, GroupThresholds, ThresholdSettings};

/// A change of one group's thresholds (see [`GroupThresholds::encode`]).
pub type ThresholdUpdate = ((HistoryKey, [u64; 14]), Time, isize);

const HOUR_MS: u64 = 3_600_000;

/// The publisher's state.
#[derive(Default)]
struct State {
    last: Option<u64>,
    published: BTreeSet<(String, String)>,
}

/// One entry of the publisher's part of a checkpoint (the keyed-state
/// layer): each worker's last boundary is operator state with union
/// redistribution (every worker loads all of them); the keys published at
/// it are keyed state, by [`so_hash`].
#[derive(serde::Deserialize)]
enum Entry {
    Last { worker: u32, last: Option<u64> },
    Published(String, String),
}

/// [`Entry`] by reference, for writing (bincode encodes both alike).
#[derive(serde::Serialize)]
enum EntryRef<'a> {
    Last { worker: u32, last: Option<u64> },
    Published(&'a str, &'a str),
}

/// The worker (of `peers`) that publishes the rules of (service,
/// operator_name): the owner of its key group, as the input exchange routes.
fn publisher_of(so: u64, peers: usize) -> usize {
    owner(key_group(so), peers) as usize
}

struct Publisher {
    settings: ThresholdSettings,
    /// Changes not yet folded into `current`, by event time.
    pending: BTreeMap<u64, Vec<(HistoryKey, [u64; 14], isize)>>,
    /// The thresholds collection accumulated up to the last boundary.
    current: BTreeMap<HistoryKey, BTreeMap<[u64; 14], isize>>,
    /// Key strings by key hash.
    names: HashMap<u64, KeyNames>,
    state: State,
    max_seen: Option<u64>,
    /// After a restore: the old worker count and each old worker's last
    /// boundary; a key skips boundaries its old owner published.
    floors: Option<(usize, Vec<Option<u64>>)>,
}

impl Publisher {
    fn next_boundary(&self) -> Option<u64> {
        let after_last = self.state.last.map(|l| l + HOUR_MS);
        let first_pending = self.pending.keys().next().map(|ms| ceil_hour(*ms));
        if !self.current.is_empty() || !self.state.published.is_empty() {
            after_last.or(first_pending)
        } else {
            match (after_last, first_pending) {
                (Some(a), Some(p)) => Some(a.max(p)),
                (None, p) => p,
                (Some(_), None) => None,
            }
        }
    }

    fn fold(&mut self, upto: u64) {
        let later = self.pending.split_off(&(upto + 1));
        for (_, changes) in std::mem::replace(&mut self.pending, later) {
            for (group, value, diff) in changes {
                let values = self.current.entry(group).or_default();
                let count = values.entry(value).or_default();
                *count += diff;
                if *count == 0 {
                    values.remove(&value);
                }
                if values.is_empty() {
                    self.current.remove(&group);
                }
            }
        }
    }

    /// Whether boundary `h_ms` was published for key (s, o) before a restore.
    fn done_before(&self, h_ms: u64, service: &str, operator_name: &str) -> bool {
        self.floors.as_ref().is_some_and(|(old_peers, lasts)| {
            let j = publisher_of(so_hash(service, operator_name), *old_peers);
            lasts.get(j).copied().flatten().is_some_and(|l| h_ms <= l)
        })
    }

    /// The updates of boundary `h_ms`.
    fn publish(&mut self, h_ms: u64) -> Vec<RuleUpdate> {
        self.fold(h_ms);
        if self
            .floors
            .as_ref()
            .is_some_and(|(_, lasts)| lasts.iter().flatten().all(|l| h_ms > *l))
        {
            self.floors = None;
        }
        let hour = hour_of_day(h_ms);
        let start = (hour, 0, 0);
        let mut out = Vec::new();
        let mut now = BTreeSet::new();
        // Formatting times is slow: once per boundary and per distinct time.
        let generated = format_utc(h_ms);
        let mut last_updated: HashMap<u64, String> = HashMap::new();
        for (group, values) in self.current.range(start..) {
            if group.0 != hour {
                break;
            }
            let Some((bits, _)) = values.iter().find(|(_, c)| **c > 0) else {
                continue;
            };
            let (_, _, service, operator_name, operator_class) = self
                .names
                .get(&group.2)
                .expect("key names arrive before the key's thresholds");
            now.insert((service.clone(), operator_name.clone()));
            if self.done_before(h_ms, service, operator_name) {
                continue;
            }
            let group = &(
                hour,
                service.clone(),
                operator_name.clone(),
                operator_class.clone(),
            );
            let last = last_updated
                .entry(bits[13])
                .or_insert_with(|| format_utc(bits[13]))
                .clone();
            let rule = GroupThresholds::decode(bits).rule_at(
                group,
                &self.settings,
                h_ms,
                generated.clone(),
                last,
            );
            out.push(RuleUpdate::of(rule));
        }
        for (service, operator_name) in self.state.published.difference(&now) {
            if self.done_before(h_ms, service, operator_name) {
                continue;
            }
            out.push(RuleUpdate {
                service: service.clone(),
                operator_name: operator_name.clone(),
                hour_of_day: hour,
                version: h_ms,
                rule: None,
            });
        }
        self.state.published = now;
        self.state.last = Some(h_ms);
        out
    }
}

/// Extension trait: `thresholds.publish_hourly(..)`.
pub trait PublishHourly<'scope> {
    /// Publishes the rules hourly (see the module docs). With `checkpoints`
    /// the publisher's state is in every checkpoint.
    ///
    /// # Panics
    /// When a restored part cannot be read.
    fn publish_hourly(
        self,
        name: &str,
        settings: ThresholdSettings,
        names: Stream<'scope, Time, Vec<KeyNames>>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> Stream<'scope, Time, Vec<RuleUpdate>>;
}

impl<'scope> PublishHourly<'scope> for Stream<'scope, Time, Vec<ThresholdUpdate>> {
    fn publish_hourly(
        self,
        name: &str,
        settings: ThresholdSettings,
        names: Stream<'scope, Time, Vec<KeyNames>>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> Stream<'scope, Time, Vec<RuleUpdate>> {
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let ctx: Option<Arc<CheckpointContext>> = checkpoints.as_ref().map(|g| g.context().clone());
        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let (out, rules) = builder.new_output::<Vec<RuleUpdate>>();
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let mut input = builder.new_input(
            self,
            Exchange::new(|((g, _), _, _): &ThresholdUpdate| key_group(g.1)),
        );
        let mut names_in = builder.new_input(names, Exchange::new(|n: &KeyNames| key_group(n.1)));
        let mut out = OutputBuilder::from(out);
        let mut ack_out = OutputBuilder::from(ack_out);
        let part_name = format!("{name}-w{index}");
        let part_prefix = format!("{name}-w");

        builder.build(move |mut caps| {
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut caps = CapabilitySet::from_elem(caps.pop().expect("rules output"));
            let mut p = Publisher {
                settings,
                pending: BTreeMap::new(),
                current: BTreeMap::new(),
                names: HashMap::new(),
                state: State::default(),
                max_seen: None,
                floors: None,
            };
            let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
            if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
                let mut lasts: Vec<Option<u64>> = Vec::new();
                keyed_state::restore_owned(restore, &part_prefix, index, peers, |e| match e {
                    Entry::Last { worker, last } => {
                        let j = worker as usize;
                        if lasts.len() <= j {
                            lasts.resize(j + 1, None);
                        }
                        lasts[j] = last;
                    }
                    Entry::Published(s, o) => {
                        p.state.published.insert((s, o));
                    }
                })
                .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
                // Go on from the oldest boundary any old worker had reached;
                // keys skip what their old owner had published.
                // (An old worker that had published nothing: from the start.)
                p.state.last = if lasts.iter().any(Option::is_none) {
                    None
                } else {
                    lasts.iter().flatten().min().copied()
                };
                p.floors = Some((lasts.len(), lasts));
            }
            let mut last_oldest: Option<Epoch> = Some(0);
            move |frontiers| {
                names_in.for_each(|_, data| {
                    for n in data.drain(..) {
                        p.names.entry(n.0).or_insert(n);
                    }
                });
                input.for_each_time(|_, data| {
                    for ((group, bits), t, diff) in data.flat_map(|d| d.drain(..)) {
                        p.max_seen = Some(p.max_seen.map_or(t.event_ms, |m| m.max(t.event_ms)));
                        p.pending
                            .entry(t.event_ms)
                            .or_default()
                            .push((group, bits, diff));
                    }
                });
                let view = FrontierView::of(&frontiers[0]);
                let names_view = FrontierView::of(&frontiers[1]);
                let oldest = view.oldest_epoch;
                let epoch_moved = oldest != last_oldest;
                last_oldest = oldest;
                let mut write = |id: u64, state: &State| {
                    if let Some(ctx) = ctx.as_ref() {
                        let keyed = state
                            .published
                            .iter()
                            .map(|(s, o)| (so_hash(s, o), EntryRef::Published(s, o)));
                        let union = [EntryRef::Last {
                            worker: index as u32,
                            last: state.last,
                        }];
                        let bytes = keyed_state::encode_groups_with_union(keyed, union);
                        let msg = ctx.write_part(id, part_name.clone(), Some(&bytes));
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                };
                if epoch_moved {
                    if let Some(c) =
                        streamforge_dataflow::checkpoint::checkpoint_to_write(oldest, first_epoch)
                    {
                        write(c, &p.state);
                    }
                }
                let max_seen = p.max_seen;
                // Boundary h: no threshold change and no key's names at ≤ h
                // can still arrive.
                let names_done = |h: u64| names_view.watermark_ms.is_none_or(|w| h < w);
                let allowed = |h: u64| {
                    names_done(h)
                        && match view.watermark_ms {
                            Some(w) => h < w,
                            None => max_seen.is_some_and(|m| h <= m),
                        }
                };
                while let Some(h) = p.next_boundary().filter(|h| allowed(*h)) {
                    let updates = p.publish(h);
                    if updates.is_empty() {
                        continue;
                    }
                    let t = emit_at(&caps, oldest)(h);
                    out.activate()
                        .session(&caps.delayed(&t))
                        .give_iterator(updates.into_iter());
                }
                if epoch_moved && oldest.is_none() {
                    write(FINAL, &p.state);
                }
                let hold = p.next_boundary().unwrap_or(u64::MAX);
                hold_back(&mut caps, frontiers[0].frontier().iter(), hold);
                ack_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        if let Some(g) = checkpoints {
            g.add_writer(acks);
        }
        rules
    }
}
