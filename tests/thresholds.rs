//! Thresholds from the nycflights13 year (carrier = service, origin-dest =
//! operator, departure delay = duration): the generator's rules equal, for
//! several keys and UTC hours (peak 14, plain 18, night 2), the formulas
//! computed here by plain iteration over the stored rows.

mod common;

use std::collections::BTreeMap;

use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig};
use streamforge::operator_metrics::thresholds::{generate, ThresholdSettings};
use streamforge::operator_metrics::OperatorAggRow;

fn flights_rows(dir: &std::path::Path) -> Vec<OperatorAggRow> {
    let toml = common::flights_job(&dir.join("rows.jsonl"));
    job::run(
        &JobConfig::parse(&toml).unwrap(),
        dir,
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::read_to_string(dir.join("rows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (low, mid, high) by plain iteration: sorted copy, index ⌊q·n⌋, two-pass σ.
fn plain(values: &[f64], f: f64, below: bool) -> [f64; 3] {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let q = |p: f64| v[((p * n as f64).floor() as usize).min(n - 1)];
    let mut sum = 0.0;
    for x in &v {
        sum += x;
    }
    let avg = sum / n as f64;
    let mut ss = 0.0;
    for x in &v {
        ss += (x - avg) * (x - avg);
    }
    let std = if n > 1 {
        (ss / (n as f64 - 1.0)).sqrt()
    } else {
        0.0
    };
    if below {
        [
            f64::max(0.0, f64::min(q(0.25) - 0.5 * std * f, avg * 0.99)),
            f64::max(0.0, f64::min(q(0.10) - 1.0 * std * f, avg * 0.97)),
            f64::max(0.0, f64::min(q(0.05) - 2.0 * std * f, avg * 0.90)),
        ]
    } else {
        [
            f64::max(q(0.75) + 0.5 * std * f, avg * 1.1),
            f64::max(q(0.90) + 1.0 * std * f, avg * 1.3),
            f64::max(q(0.95) + 2.0 * std * f, avg * 1.8),
        ]
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn nycflights13_thresholds_equal_the_formulas_by_plain_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let rows = flights_rows(dir.path());
    assert!(rows.len() > 100_000, "{}", rows.len());
    let settings = ThresholdSettings {
        analysis_days: 400,
        ..ThresholdSettings::default()
    };
    let rules = generate(&rows, &settings, 1_700_000_000_000);
    assert!(rules.len() > 1000, "{}", rules.len());

    // Groups by plain iteration, in file order.
    let mut groups: BTreeMap<(u8, String, String), Vec<&OperatorAggRow>> = BTreeMap::new();
    for r in &rows {
        let hour = ((r.window_start_ms / 3_600_000) % 24) as u8;
        groups
            .entry((hour, r.service.clone(), r.operator_name.clone()))
            .or_default()
            .push(r);
    }
    let eligible = groups.values().filter(|g| g.len() >= 3).count();
    assert_eq!(rules.len(), eligible, "one rule per group with ≥ 3 samples");

    let mut checked = 0;
    let mut factors = std::collections::BTreeSet::new();
    for (service, op) in [("UA", "EWR-ORD"), ("DL", "JFK-ATL"), ("AA", "LGA-MIA")] {
        for (hour, f) in [(14u8, 1.2), (18, 1.0), (2, 0.8)] {
            let Some(g) = groups.get(&(hour, service.to_string(), op.to_string())) else {
                continue;
            };
            if g.len() < 3 {
                continue;
            }
            let rule = rules
                .iter()
                .find(|r| r.hour_of_day == hour && r.service == service && r.operator_name == op)
                .unwrap_or_else(|| panic!("no rule for {service} {op} {hour}"));
            assert_eq!(rule.sample_count, g.len() as u64);
            let col =
                |m: &dyn Fn(&OperatorAggRow) -> f64| g.iter().map(|r| m(r)).collect::<Vec<_>>();
            let checks = [
                (
                    "avg_duration",
                    plain(&col(&|r| r.avg_duration), f, false),
                    [
                        rule.avg_duration_low,
                        rule.avg_duration_mid,
                        rule.avg_duration_high,
                    ],
                ),
                (
                    "max_duration",
                    plain(&col(&|r| r.max_duration), f, false),
                    [
                        rule.max_duration_low,
                        rule.max_duration_mid,
                        rule.max_duration_high,
                    ],
                ),
                (
                    "traffic_volume",
                    plain(&col(&|r| r.total_count as f64), f, false),
                    [
                        rule.traffic_volume_low,
                        rule.traffic_volume_mid,
                        rule.traffic_volume_high,
                    ],
                ),
                (
                    "success_rate",
                    plain(
                        &col(&|r| r.success_count as f64 / r.total_count as f64),
                        f,
                        true,
                    ),
                    [
                        rule.success_rate_low,
                        rule.success_rate_mid,
                        rule.success_rate_high,
                    ],
                ),
            ];
            for (metric, want, got) in checks {
                for i in 0..3 {
                    assert!(
                        close(want[i], got[i]),
                        "{service} {op} hour {hour} {metric}[{i}]: {} vs {}",
                        got[i],
                        want[i]
                    );
                }
            }
            checked += 1;
            factors.insert((f * 10.0) as u32);
        }
    }
    assert!(
        checked >= 6 && factors.len() == 3,
        "checked {checked} (key, hour) groups, factors {factors:?}"
    );
}
