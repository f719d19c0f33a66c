//! `alert_join`: closed windows joined against the broadcast rule state.
//!
//! Rows are keyed like the window operator (key groups); rule updates are
//! broadcast, every worker keeps them all (**broadcast state**: per
//! (service, operator_name, hour of day) the newest versions). A row of a
//! window starting at `ws` is evaluated once no rule update with version
//! `≤ ws` can still arrive (the rule input's frontier is past `ws`), with the
//! newest rule of its key and hour whose version is `≤ ws` — a versioned
//! (temporal) join, so the result does not depend on when updates arrived.
//! Alerts then pass convergence (keyed state) and leave at the row's time.
//!
//! Rows are evaluated in arrival order (per key that is window order) and only
//! once their checkpoint epoch is the oldest open one, so the state written for
//! checkpoint `c` — broadcast rules, convergence state, rows still waiting for
//! rules — reflects exactly the rows of epochs `≤ c`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::Stream;

use streamforge_dataflow::checkpoint::{CheckpointContext, CheckpointGraph, CheckpointMsg, FINAL};
use streamforge_dataflow::hash::key_group;
use streamforge_dataflow::keyed_state;
use streamforge_dataflow::stable_hash;
use streamforge_dataflow::time::{Epoch, FrontierView};
use streamforge_dataflow::Time;
use streamforge_sources::span::parts_hash;

use super::{state_hash, RuleUpdate};
use crate::operator_metrics::alerts::{evaluate, Alert, Convergence, MetricKey, Suppressor};
use crate::operator_metrics::thresholds::{hour_of_day, AlarmRule};
use crate::operator_metrics::OperatorAggRow;

/// Versions kept per (key, hour); older ones are dropped.
pub const VERSIONS_KEPT: usize = 4;

/// The rules of one (service, operator_name, hour of day) by version.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    service: String,
    operator_name: String,
    hour: u8,
    /// (version, rule), ascending; at most [`VERSIONS_KEPT`] (a small vector
    /// of boxes: a `BTreeMap` node per key would cost kilobytes).
    versions: Vec<(u64, Option<Box<AlarmRule>>)>,
}

/// Broadcast rule state: (service, operator_name, hour) → version → rule.
/// Keyed by a hash of the borrowed strings, so lookups do not allocate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleBook {
    rules: HashMap<u64, Vec<Entry>>,
}

fn book_hash(service: &str, operator_name: &str, hour: u8) -> u64 {
    stable_hash(&(service, operator_name, hour))
}

impl RuleBook {
    /// Applies an update (the same update twice is harmless).
    pub fn apply(&mut self, u: RuleUpdate) {
        let h = book_hash(&u.service, &u.operator_name, u.hour_of_day);
        let bucket = self.rules.entry(h).or_default();
        let i = match bucket.iter().position(|e| {
            e.hour == u.hour_of_day && e.service == u.service && e.operator_name == u.operator_name
        }) {
            Some(i) => i,
            None => {
                bucket.push(Entry {
                    service: u.service,
                    operator_name: u.operator_name,
                    hour: u.hour_of_day,
                    versions: Vec::new(),
                });
                bucket.len() - 1
            }
        };
        let versions = &mut bucket[i].versions;
        let rule = u.rule.map(Box::new);
        match versions.binary_search_by_key(&u.version, |(v, _)| *v) {
            Ok(at) => versions[at].1 = rule,
            Err(at) => versions.insert(at, (u.version, rule)),
        }
        if versions.len() > VERSIONS_KEPT {
            versions.remove(0);
        }
    }

    /// The rule for a window of `row`: the newest version `≤ window_start`
    /// for its key and hour of day (`None`: no rule, or deleted).
    ///
    /// # Examples
    /// ```
    /// # use streamforge::operator_metrics::alerting::{join::RuleBook, RuleUpdate};
    /// let mut book = RuleBook::default();
    /// let delete = |v| RuleUpdate { service: "s".into(), operator_name: "o".into(),
    ///     hour_of_day: 0, version: v, rule: None };
    /// book.apply(delete(100));
    /// assert!(book.lookup("s", "o", 50).is_none());
    /// assert!(book.lookup("s", "o", 150).is_none()); // deleted at 100
    /// ```
    pub fn lookup(
        &self,
        service: &str,
        operator_name: &str,
        window_start_ms: u64,
    ) -> Option<&AlarmRule> {
        let hour = hour_of_day(window_start_ms);
        self.rules
            .get(&book_hash(service, operator_name, hour))?
            .iter()
            .find(|e| e.hour == hour && e.service == service && e.operator_name == operator_name)?
            .versions
            .iter()
            .rev()
            .find(|(v, _)| *v <= window_start_ms)?
            .1
            .as_deref()
    }

    /// (key, hour) entries.
    pub fn len(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }

    /// Whether no rule was received.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Counters of the alerting operator.
#[derive(Debug, Default)]
pub struct AlertCounters {
    /// Windows evaluated.
    pub evaluated_total: AtomicU64,
    /// Alerts emitted, by level (LOW, MID, HIGH).
    pub alerts_total: [AtomicU64; 3],
    /// Alerts dropped entirely by convergence.
    pub suppressed_total: AtomicU64,
    /// Rule updates received (per worker; every worker gets all).
    pub rule_updates_total: AtomicU64,
    /// The rows input ended (stops a live rule-topic reader).
    pub rows_done: std::sync::atomic::AtomicBool,
}

/// One entry of the operator's part of a checkpoint (the keyed-state layer,
/// `streamforge_dataflow::keyed_state`): the rule book is broadcast state
/// (written by worker 0 into the union group, loaded by every worker);
/// convergence state and waiting rows are keyed state in their key's group.
#[derive(Deserialize)]
enum StateEntry {
    Book(RuleBook),
    Convergence(MetricKey, Convergence),
    Waiting(Time, OperatorAggRow),
}

/// [`StateEntry`] by reference, for writing (bincode encodes both alike).
#[derive(Serialize)]
enum StateEntryRef<'a> {
    Book(&'a RuleBook),
    Convergence(&'a MetricKey, &'a Convergence),
    Waiting(Time, &'a OperatorAggRow),
}

/// The key group of a row's key: the window operator's routing (`SpanKey`
/// hashes as its stable hash), so rows stay on their worker.
fn key_route(service: &str, operator_name: &str, operator_class: &str) -> u64 {
    key_group(state_hash(parts_hash(
        service,
        operator_name,
        operator_class,
    )))
}

fn route(row: &OperatorAggRow) -> u64 {
    key_route(&row.service, &row.operator_name, &row.operator_class)
}

/// Extension trait: `rows.alert_join(rules, ..)`.
pub trait AlertJoin<'scope> {
    /// Alerts of these rows against the `rules` stream (already broadcast),
    /// with convergence over `convergence_ms` of event time. With
    /// `checkpoints` its state is in every checkpoint.
    ///
    /// # Panics
    /// When a restored part cannot be read.
    fn alert_join(
        self,
        name: &str,
        rules: Stream<'scope, Time, Vec<RuleUpdate>>,
        convergence_ms: u64,
        counters: Arc<AlertCounters>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> Stream<'scope, Time, Vec<Alert>>;
}

impl<'scope> AlertJoin<'scope> for Stream<'scope, Time, Vec<OperatorAggRow>> {
    fn alert_join(
        self,
        name: &str,
        rules: Stream<'scope, Time, Vec<RuleUpdate>>,
        convergence_ms: u64,
        counters: Arc<AlertCounters>,
        checkpoints: Option<&mut CheckpointGraph<'scope>>,
    ) -> Stream<'scope, Time, Vec<Alert>> {
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let ctx: Option<Arc<CheckpointContext>> = checkpoints.as_ref().map(|g| g.context().clone());
        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let (out, alerts) = builder.new_output::<Vec<Alert>>();
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let mut rows_in = builder.new_input(self, Exchange::new(route));
        // Alerts leave at the rows' times: the rule input holds nothing back.
        let mut rules_in = builder.new_input_connection(rules, Pipeline, []);
        let mut out = OutputBuilder::from(out);
        let mut ack_out = OutputBuilder::from(ack_out);
        let part_name = format!("{name}-w{index}");
        let part_prefix = format!("{name}-w");
        let metrics = streamforge_dataflow::metrics::operator_metrics(name, index);

        builder.build(move |mut caps| {
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut alert_caps = CapabilitySet::from_elem(caps.pop().expect("alerts output"));
            let mut book = RuleBook::default();
            let mut suppressor = Suppressor::new(convergence_ms);
            // Rows waiting for their epoch or rules, in batches of one time.
            let mut waiting: VecDeque<(Capability<Time>, VecDeque<OperatorAggRow>)> =
                VecDeque::new();
            let first_epoch = ctx.as_ref().map_or(0, |c| c.first_epoch());
            if let Some(restore) = ctx.as_ref().and_then(|c| c.restore.as_ref()) {
                keyed_state::restore_owned(restore, &part_prefix, index, peers, |e| match e {
                    StateEntry::Book(b) => book = b,
                    StateEntry::Convergence(k, v) => suppressor.insert(k, v),
                    StateEntry::Waiting(t, row) => {
                        let t = Time {
                            epoch: first_epoch,
                            event_ms: t.event_ms,
                        };
                        waiting.push_back((alert_caps.delayed(&t), VecDeque::from([row])));
                    }
                })
                .unwrap_or_else(|e| panic!("restoring {part_prefix}*: {e}"));
            }
            let mut last_oldest: Option<Epoch> = Some(0);
            move |frontiers| {
                rules_in.for_each(|_, data| {
                    for u in data.drain(..) {
                        counters.rule_updates_total.fetch_add(1, Ordering::Relaxed);
                        book.apply(u);
                    }
                });
                let view = FrontierView::of(&frontiers[0]);
                let oldest = view.oldest_epoch;
                let epoch_moved = oldest != last_oldest;
                last_oldest = oldest;
                if oldest.is_none() {
                    counters.rows_done.store(true, Ordering::Relaxed);
                }
                let mut write = |id: u64,
                                 book: &RuleBook,
                                 suppressor: &Suppressor,
                                 waiting: &VecDeque<(
                    Capability<Time>,
                    VecDeque<OperatorAggRow>,
                )>| {
                    if let Some(ctx) = ctx.as_ref() {
                        let convergence = suppressor
                            .entries()
                            .map(|(k, v)| (state_hash(k.0), StateEntryRef::Convergence(k, v)));
                        let rows = waiting
                            .iter()
                            .filter(|(c, _)| c.time().epoch <= id)
                            .flat_map(|(c, rows)| rows.iter().map(move |r| (*c.time(), r)))
                            .map(|(t, r)| {
                                let h = parts_hash(&r.service, &r.operator_name, &r.operator_class);
                                (state_hash(h), StateEntryRef::Waiting(t, r))
                            });
                        // Every worker holds the whole book: one writes it.
                        let union = (index == 0).then_some(StateEntryRef::Book(book));
                        let bytes =
                            keyed_state::encode_groups_with_union(convergence.chain(rows), union);
                        let msg = ctx.write_part(id, part_name.clone(), Some(&bytes));
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                };
                if epoch_moved {
                    if let Some(c) =
                        streamforge_dataflow::checkpoint::checkpoint_to_write(oldest, first_epoch)
                    {
                        write(c, &book, &suppressor, &waiting);
                    }
                }
                rows_in.for_each_time(|cap, data| {
                    let rows: VecDeque<OperatorAggRow> = data.flat_map(|d| d.drain(..)).collect();
                    if !rows.is_empty() {
                        waiting.push_back((cap.retain(0), rows));
                    }
                });
                let rules_view = FrontierView::of(&frontiers[1]);
                let mut handle = out.activate();
                // Counted locally: a shared atomic per row is cache-line
                // ping-pong between workers.
                let (mut evaluated, mut suppressed, mut by_level) = (0u64, 0u64, [0u64; 3]);
                'batches: while let Some((cap, rows)) = waiting.front_mut() {
                    if oldest.is_some_and(|e| cap.time().epoch > e) {
                        break;
                    }
                    let mut alerts = Vec::new();
                    while let Some(row) = rows.front() {
                        if !rules_view.passed(row.window_start_ms + 1) {
                            break;
                        }
                        let row = rows.pop_front().expect("front");
                        evaluated += 1;
                        let Some(rule) =
                            book.lookup(&row.service, &row.operator_name, row.window_start_ms)
                        else {
                            continue;
                        };
                        let Some(alert) = evaluate(&row, rule) else {
                            continue;
                        };
                        match suppressor.converge(alert) {
                            Some(alert) => {
                                by_level[alert.level as usize] += 1;
                                alerts.push(alert);
                            }
                            None => suppressed += 1,
                        }
                    }
                    if !alerts.is_empty() {
                        handle.session(&*cap).give_container(&mut alerts);
                    }
                    if !rows.is_empty() {
                        break 'batches;
                    }
                    waiting.pop_front();
                }
                drop(handle);
                counters
                    .evaluated_total
                    .fetch_add(evaluated, Ordering::Relaxed);
                metrics.records_in.fetch_add(evaluated, Ordering::Relaxed);
                metrics
                    .records_out
                    .fetch_add(by_level.iter().sum::<u64>(), Ordering::Relaxed);
                metrics
                    .state_entries
                    .store(suppressor.len() as i64, Ordering::Relaxed);
                counters
                    .suppressed_total
                    .fetch_add(suppressed, Ordering::Relaxed);
                for (i, n) in by_level.iter().enumerate() {
                    if *n > 0 {
                        counters.alerts_total[i].fetch_add(*n, Ordering::Relaxed);
                    }
                }
                if epoch_moved && oldest.is_none() {
                    write(FINAL, &book, &suppressor, &waiting);
                }
                alert_caps.downgrade(frontiers[0].frontier().iter());
                ack_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        if let Some(g) = checkpoints {
            g.add_writer(acks);
        }
        alerts
    }
}
