//! Alerting in the job on the two Nezha TrainTicket days (2023-01-29 gives the
//! history, 2023-01-30 gets alerts): in-job rules equal the batch generator,
//! alerts equal a plain sequential evaluation, hot updates from a rule file
//! change later windows only, 1/2 workers and 2 processes agree, a webhook
//! gets every alert through failures, and kill -9 loses or repeats nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig, JobSummary};
use streamforge::operator_metrics::alerting::RuleUpdate;
use streamforge::operator_metrics::alerts::{evaluate, Alert, Suppressor};
use streamforge::operator_metrics::thresholds::{
    hour_of_day, rules_of, AlarmRule, ThresholdSettings,
};
use streamforge::operator_metrics::OperatorAggRow;

const HOUR: u64 = 3_600_000;

/// The TrainTicket job over both days with 60 s windows and `alerting`
/// (TOML after `[alerting]`), writing into `out`.
fn job(out: &Path, alerting: &str, extra: &str) -> String {
    common::trainticket_two_days(
        &format!("name = \"tt-alerts\"\n{extra}"),
        &format!(
            "[[sinks]]\nkind = \"jsonl\"\npath = {:?}\n[alerting]\n{alerting}",
            out.join("rows.jsonl")
        ),
    )
}

fn generated(out: &Path, convergence: &str) -> String {
    format!(
        r#"convergence = "{convergence}"
[alerting.rules]
kind = "generated"
[alerting.publish]
jsonl = {:?}
[[alerting.sinks]]
kind = "jsonl"
path = {:?}
"#,
        out.join("rules.jsonl"),
        out.join("alerts.jsonl")
    )
}

fn run(toml: &str, dir: &Path, workers: usize) -> JobSummary {
    job::run(
        &JobConfig::parse(toml).unwrap(),
        dir,
        &ClusterArgs {
            workers,
            ..Default::default()
        },
    )
    .unwrap()
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    streamforge::sinks::read_committed(path)
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Alerts by a plain sequential evaluation: rows in window order per key,
/// the newest rule version ≤ window start for the key and hour, convergence.
fn plain_alerts(
    rows: &[OperatorAggRow],
    updates: &[RuleUpdate],
    convergence_ms: u64,
) -> Vec<Alert> {
    let mut book: BTreeMap<(String, String, u8), BTreeMap<u64, Option<AlarmRule>>> =
        BTreeMap::new();
    for u in updates {
        book.entry((u.service.clone(), u.operator_name.clone(), u.hour_of_day))
            .or_default()
            .insert(u.version, u.rule.clone());
    }
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| {
        (&a.service, &a.operator_name, a.window_start_ms).cmp(&(
            &b.service,
            &b.operator_name,
            b.window_start_ms,
        ))
    });
    let mut s = Suppressor::new(convergence_ms);
    let mut out = Vec::new();
    for r in &rows {
        let key = (
            r.service.clone(),
            r.operator_name.clone(),
            hour_of_day(r.window_start_ms),
        );
        let rule = book
            .get(&key)
            .and_then(|v| v.range(..=r.window_start_ms).next_back())
            .and_then(|(_, r)| r.as_ref());
        if let Some(a) = rule
            .and_then(|rule| evaluate(r, rule))
            .and_then(|a| s.converge(a))
        {
            out.push(a);
        }
    }
    out
}

fn sorted_json<T: serde::Serialize>(v: &[T]) -> Vec<String> {
    let mut s: Vec<String> = v
        .iter()
        .map(|x| serde_json::to_string(x).unwrap())
        .collect();
    s.sort();
    s
}

#[test]
fn generated_rules_equal_the_batch_generator_and_alerts_equal_plain_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let toml = job(dir.path(), &generated(dir.path(), "15m"), "");
    let summary = run(&toml, dir.path(), 2);
    let rows: Vec<OperatorAggRow> = read(&dir.path().join("rows.jsonl"));
    let updates: Vec<RuleUpdate> = read(&dir.path().join("rules.jsonl"));
    let alerts: Vec<Alert> = read(&dir.path().join("alerts.jsonl"));
    assert!(rows.len() > 30_000, "{}", rows.len());

    // Every (key, version) once.
    let mut seen = BTreeSet::new();
    for u in &updates {
        assert!(
            seen.insert((u.service.clone(), u.operator_name.clone(), u.version)),
            "published twice: {u:?}"
        );
        assert_eq!(u.version % HOUR, 0);
        assert_eq!(u.hour_of_day, hour_of_day(u.version));
    }
    // Each boundary's rules = the batch generator over the rows final by then
    // (end ≤ H) in the last 7 days, for the boundary's hour of day.
    let settings = ThresholdSettings::default();
    let versions: BTreeSet<u64> = updates.iter().map(|u| u.version).collect();
    let mut compared = 0;
    for &h in &versions {
        let window: Vec<&OperatorAggRow> = rows
            .iter()
            .filter(|r| r.window_start_ms + 60_000 <= h && r.window_start_ms + 7 * 24 * HOUR >= h)
            .collect();
        let want: Vec<AlarmRule> = rules_of(window, &settings, h)
            .into_iter()
            .filter(|r| r.hour_of_day == hour_of_day(h))
            .collect();
        let got: Vec<AlarmRule> = updates
            .iter()
            .filter(|u| u.version == h)
            .filter_map(|u| u.rule.clone())
            .collect();
        assert_eq!(sorted_json(&got), sorted_json(&want), "rules at {h}");
        compared += got.len();
    }
    assert!(compared > 1_000, "only {compared} rules compared");
    // Tombstones: hour 12 of 01-29 had no spans, so the 01-30 12:00 boundary
    // deletes the keys that had an hour-11 rule.
    let h12 = 1_675_080_000_000;
    let deleted = updates
        .iter()
        .filter(|u| u.version == h12 && u.rule.is_none())
        .count();
    let had = updates
        .iter()
        .filter(|u| u.version == h12 - HOUR && u.rule.is_some())
        .count();
    assert_eq!((deleted, had > 0), (had, true));

    // Alerts: the same as a plain sequential evaluation of the rows.
    let want = plain_alerts(&rows, &updates, 15 * 60_000);
    assert_eq!(sorted_json(&alerts), sorted_json(&want));
    assert!(alerts.len() > 500, "{}", alerts.len());
    let by_level = summary.alerts;
    assert_eq!(by_level.iter().sum::<u64>(), alerts.len() as u64);
    assert!(by_level.iter().all(|n| *n > 0), "{by_level:?}");
    for a in &alerts {
        assert!(a.rule_version <= a.window_start_ms);
        assert!(
            a.window_start_ms - a.rule_version < HOUR,
            "the hour's own rule"
        );
    }
}

#[test]
fn one_worker_two_workers_and_two_processes_raise_the_same_alerts() {
    let mut outputs = Vec::new();
    for (workers, processes) in [(1, 1), (2, 1), (1, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let toml = job(dir.path(), &generated(dir.path(), "15m"), "");
        if processes == 1 {
            run(&toml, dir.path(), workers);
        } else {
            common::run_cluster(dir.path(), "tt", &toml, processes, workers);
        }
        outputs.push((
            common::file_lines(&dir.path().join("rules.jsonl")),
            common::file_lines(&dir.path().join("alerts.jsonl")),
        ));
    }
    assert!(!outputs[0].1.is_empty());
    assert_eq!(outputs[0], outputs[1], "1 worker vs 2 workers");
    assert_eq!(outputs[0], outputs[2], "1 process vs 2 processes");
}

/// Rules for every hour of the keys in `keys` at `version`: `strict` alerts on
/// every window (avg duration above 0), otherwise never.
fn rule_file_lines(keys: &BTreeSet<(String, String)>, version: u64, strict: bool) -> Vec<String> {
    let th = if strict { 0.0 } else { 1e18 };
    let mut out = Vec::new();
    for (s, o) in keys {
        for hour in 0..24u8 {
            let rule = AlarmRule {
                hour_of_day: hour,
                service: s.clone(),
                operator_name: o.clone(),
                operator_class: "span".into(),
                avg_duration_low: th,
                avg_duration_mid: 1e18,
                avg_duration_high: 1e18,
                max_duration_low: 1e18,
                max_duration_mid: 1e18,
                max_duration_high: 1e18,
                success_rate_low: 0.0,
                success_rate_mid: 0.0,
                success_rate_high: 0.0,
                traffic_volume_low: 1e18,
                traffic_volume_mid: 1e18,
                traffic_volume_high: 1e18,
                alarm_template: "{level} {metric}".into(),
                analysis_days: 7,
                sample_count: 3,
                generated_time: String::new(),
                last_updated: String::new(),
                version,
            };
            out.push(serde_json::to_string(&rule).unwrap());
        }
    }
    out
}

#[test]
fn hot_update_changes_later_windows_only_and_every_setup_agrees() {
    let dir = tempfile::tempdir().unwrap();
    // Which keys exist: a run with an empty rule file.
    let probe = dir.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    std::fs::write(probe.join("rules.jsonl"), "").unwrap();
    let file_rules = |d: &Path| {
        format!(
            r#"convergence = "0s"
[alerting.rules]
kind = "file"
path = {:?}
[[alerting.sinks]]
kind = "jsonl"
path = {:?}
"#,
            d.join("rules.jsonl"),
            d.join("alerts.jsonl")
        )
    };
    run(&job(&probe, &file_rules(&probe), ""), &probe, 1);
    let rows: Vec<OperatorAggRow> = read(&probe.join("rows.jsonl"));
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| r.service.starts_with("ts-order") || r.service.starts_with("ts-travel-service"))
        .map(|r| (r.service.clone(), r.operator_name.clone()))
        .collect();
    assert!(!keys.is_empty());
    // v1 (never alerts) from the start; v2 (alerts on every window) from
    // 2023-01-30 13:00, mid-stream.
    let v2 = 1_675_083_600_000;
    let mut lines = rule_file_lines(&keys, 0, false);
    lines.extend(rule_file_lines(&keys, v2, true));
    let mut outputs = Vec::new();
    for (workers, processes) in [(1, 1), (2, 1), (2, 2)] {
        let d = dir.path().join(format!("w{workers}p{processes}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("rules.jsonl"), lines.join("\n") + "\n").unwrap();
        let toml = job(&d, &file_rules(&d), "");
        if processes == 1 {
            run(&toml, &d, workers);
        } else {
            common::run_cluster(&d, "hot", &toml, processes, workers);
        }
        let alerts: Vec<Alert> = read(&d.join("alerts.jsonl"));
        outputs.push(common::file_lines(&d.join("alerts.jsonl")));
        // Exactly the windows of those keys starting at or after v2, each with v2.
        let want = rows
            .iter()
            .filter(|r| keys.contains(&(r.service.clone(), r.operator_name.clone())))
            .filter(|r| r.window_start_ms >= v2 && r.avg_duration > 0.0)
            .count();
        assert_eq!(
            alerts.len(),
            want,
            "{workers} workers × {processes} processes"
        );
        assert!(want > 100, "{want}");
        assert!(alerts
            .iter()
            .all(|a| a.rule_version == v2 && a.window_start_ms >= v2));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

/// A webhook receiver that answers 503 to the first `fail` requests and keeps
/// the bodies of the accepted ones.
fn webhook_server(fail: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            n += 1;
            let status = if n <= fail {
                "503 Service Unavailable"
            } else {
                b.lock().unwrap().push(String::from_utf8(body).unwrap());
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, bodies)
}

#[test]
fn webhook_gets_every_alert_through_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bodies) = webhook_server(3);
    let alerting = generated(dir.path(), "15m")
        + &format!("[[alerting.sinks]]\nkind = \"webhook\"\nurl = {url:?}\nbatch-rows = 100\n");
    let summary = run(&job(dir.path(), &alerting, ""), dir.path(), 2);
    assert!(summary.webhook_retries >= 3, "{summary:?}");
    let mut posted: Vec<String> = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        let batch: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        assert!(batch.len() <= 100);
        posted.extend(batch.iter().map(|v| v.to_string()));
    }
    let file: Vec<serde_json::Value> = read(&dir.path().join("alerts.jsonl"));
    let mut want: Vec<String> = file.iter().map(|v| v.to_string()).collect();
    posted.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(posted, want);
}

#[test]
fn kill_9_loses_and_repeats_no_rule_or_alert() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    run(
        &job(&reference, &generated(&reference, "15m"), ""),
        &reference,
        2,
    );
    let out = dir.path().join("killed");
    std::fs::create_dir_all(&out).unwrap();
    let extra = format!(
        "rate-limit = 60000\n[checkpoint]\ndir = {:?}\ninterval = \"200ms\"\n",
        out.join("checkpoints")
    );
    let path = out.join("job.toml");
    std::fs::write(&path, job(&out, &generated(&out, "15m"), &extra)).unwrap();
    let report = common::kill_loop(&path, &out.join("checkpoints"), 4, 7, 300..1500, &[1, 2]);
    assert_eq!(report.restored.len(), 4, "every restart restored");
    for f in ["rules.jsonl", "alerts.jsonl", "rows.jsonl"] {
        let got = common::committed_lines(&out.join(f));
        let want = common::file_lines(&reference.join(f));
        assert!(!want.is_empty(), "{f}");
        assert_eq!(got.len(), want.len(), "{f}: lines after kills vs reference");
        assert_eq!(got, want, "{f}");
    }
}
