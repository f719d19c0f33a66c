//! `/metrics` scraped while the alerting TrainTicket job runs (throttled,
//! with checkpoints) shows counters growing during the run and, at the end
//! (the server lingers), exactly the totals of the job's summary line; the
//! status page and `/status.json` describe the job; `--log-format json`
//! writes JSON log lines.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scrape(url: &str) -> Option<BTreeMap<String, f64>> {
    let text = ureq::get(url).call().ok()?.into_string().ok()?;
    let mut m = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ')?;
        // Drop the constant job label; keep the others.
        let name = match name.split_once('{') {
            Some((n, labels)) => {
                let kept: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.starts_with("streamforge_job="))
                    .collect();
                if kept.is_empty() {
                    n.to_string()
                } else {
                    format!("{n}{{{}}}", kept.join(","))
                }
            }
            None => name.to_string(),
        };
        m.insert(name, value.parse().ok()?);
    }
    Some(m)
}

/// A number after `label ` in the summary line.
fn summary_number(line: &str, label: &str) -> f64 {
    let at = line
        .find(&format!("{label} "))
        .unwrap_or_else(|| panic!("{label} in {line}"));
    line[at + label.len() + 1..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_match_the_job_totals_and_the_status_page_describes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let job = common::trainticket_two_days(
        "name = \"metrics-test\"\nrate-limit = 120000",
        &format!(
            r#"[[sinks]]
kind = "jsonl"
path = "rows"
[checkpoint]
dir = "checkpoints"
interval = "300ms"
[alerting]
[alerting.rules]
kind = "generated"
[[alerting.sinks]]
kind = "jsonl"
path = "alerts"
[metrics]
address = "127.0.0.1:{port}"
linger = "3s"
"#
        ),
    );
    let path = dir.path().join("job.toml");
    std::fs::write(&path, job).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .args([
            "run",
            path.to_str().unwrap(),
            "-w",
            "2",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let mut scrapes: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut page = String::new();
    let mut status = serde_json::Value::Null;
    let mut window_rate = 0.0f64;
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job did not end"
        );
        if let Some(m) = scrape(&format!("{url}/metrics")) {
            if page.is_empty() && m.get("streamforge_source_records_total") > Some(&0.0) {
                page = ureq::get(&url).call().unwrap().into_string().unwrap();
                let text = ureq::get(&format!("{url}/status.json"))
                    .call()
                    .unwrap()
                    .into_string()
                    .unwrap();
                status = serde_json::from_str(&text).unwrap();
            }
            if !page.is_empty() {
                // Recent per-operator rates (last 10 s) of the window.
                let text = ureq::get(&format!("{url}/status.json"))
                    .call()
                    .unwrap()
                    .into_string()
                    .unwrap();
                let s: serde_json::Value = serde_json::from_str(&text).unwrap();
                for op in s["operators"].as_array().into_iter().flatten() {
                    if op["operator"] == "metrics-test-window" {
                        window_rate =
                            window_rate.max(op["records_in_per_second"].as_f64().unwrap());
                    }
                }
            }
            scrapes.push(m);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}{err}");
    let summary = out
        .lines()
        .find(|l| l.contains("events "))
        .expect("summary line");

    // Growing during the run, equal to the summary at the end.
    let records = |m: &BTreeMap<String, f64>| m["streamforge_source_records_total"];
    let last = scrapes.last().expect("scrapes");
    let events = summary_number(summary, "events");
    assert!(
        scrapes
            .iter()
            .any(|m| records(m) > 0.0 && records(m) < events),
        "no scrape during the run"
    );
    assert!(scrapes.windows(2).all(|w| records(&w[0]) <= records(&w[1])));
    assert_eq!(records(last), events);
    assert_eq!(
        last["streamforge_window_rows_total"],
        summary_number(summary, "rows")
    );
    assert_eq!(
        last["streamforge_late_records_total"],
        summary_number(summary, "late")
    );
    assert_eq!(
        last["streamforge_rules_published_total"],
        summary_number(summary, "published")
    );
    for level in ["LOW", "MID", "HIGH"] {
        assert_eq!(
            last[&format!("streamforge_alerts_total{{level=\"{level}\"}}")],
            summary_number(summary, level),
            "{level}"
        );
    }
    assert!(last["streamforge_checkpoints_completed_total"] >= 2.0);
    assert!(last["streamforge_source_watermark_ms"] > 1.6e12);
    assert!(last["streamforge_windows_evaluated_total"] >= summary_number(summary, "rows"));
    // Per operator and worker: the window operator's output over both
    // workers is the rows; its input is the spans; the join saw every row.
    let per_op = |metric: &str, op: &str| -> f64 {
        (0..2)
            .map(|w| {
                last.get(&format!("{metric}{{operator=\"{op}\",worker=\"{w}\"}}"))
                    .copied()
                    .unwrap_or_else(|| panic!("{metric} {op} worker {w} missing"))
            })
            .sum()
    };
    let rows = summary_number(summary, "rows");
    assert_eq!(
        per_op(
            "streamforge_operator_records_out_total",
            "metrics-test-window"
        ),
        rows
    );
    assert_eq!(
        per_op(
            "streamforge_operator_records_in_total",
            "metrics-test-window"
        ),
        events
    );
    assert_eq!(
        per_op("streamforge_operator_records_in_total", "alert-join"),
        rows
    );
    assert_eq!(
        per_op(
            "streamforge_operator_records_out_total",
            "metrics-test-source"
        ),
        events
    );
    assert_eq!(
        per_op("streamforge_operator_state_entries", "metrics-test-window"),
        0.0
    );
    assert!(scrapes.iter().any(|m| {
        m.get("streamforge_operator_state_entries{operator=\"metrics-test-window\",worker=\"0\"}")
            .is_some_and(|v| *v > 0.0)
    }));
    // Flow control: the second day (worker 1) is a day ahead of the first
    // and waits for it, paused.
    assert!(
        per_op(
            "streamforge_source_throttled_seconds_total",
            "metrics-test-source"
        ) > 0.5,
        "the second day's partition was throttled"
    );
    assert!(scrapes.iter().any(|m| {
        m.get("streamforge_source_paused_partitions{operator=\"metrics-test-source\",worker=\"1\"}")
            == Some(&1.0)
    }));
    assert_eq!(
        per_op(
            "streamforge_source_paused_partitions",
            "metrics-test-source"
        ),
        0.0
    );

    // The status page and its JSON.
    for part in [
        "metrics-test",
        "Job graph",
        "alert-join",
        "threshold-history",
        "Watermark",
        "Flow control",
        "Operators",
        "Checkpoints",
    ] {
        assert!(page.contains(part), "{part} missing from the status page");
    }
    assert!(page.contains("http-equiv=\"refresh\""));
    assert_eq!(status["job"], "metrics-test");
    let workers: Vec<u64> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "metrics-test-source")
        .map(|s| s["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(workers, [0, 1], "flow control per source and worker");
    assert_eq!(status["rate_window_seconds"], 10);
    // The job reads ≤ 240 k records/s (rate-limit × 2 workers), split over
    // the window's two workers.
    assert!(
        window_rate > 1_000.0 && window_rate < 200_000.0,
        "recent records/s into the window on one worker: {window_rate}"
    );
    assert!(status["graph"].as_array().unwrap().len() >= 6);

    // JSON logs.
    let json_lines: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        json_lines
            .iter()
            .any(|l| l["fields"]["message"] == "metrics and status page"),
        "{err}"
    );
    assert!(json_lines
        .iter()
        .any(|l| l["fields"]["message"] == "checkpoint complete"));
}
