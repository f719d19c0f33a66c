//! The main job end to end: generated JSONL files with malformed lines through
//! the job at 1, 2 and 4 workers and as a 2-process cluster, against the
//! sequential model; the TrainTicket day at -w 1, -w 2 and a 2-process cluster.

mod common;

use std::path::Path;

use common::{
    assert_rows_eq, assert_rows_match_model, hostfile, model, read_rows, run_cluster, shared_data,
    Item, GENERATED_MAPPING, NEZHA_MAPPING,
};
use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig};
use streamforge::sources::GeneratorConfig;

/// Writes 3 JSONL partitions of generated spans with malformed lines mixed in,
/// and returns what the model reads from them.
fn write_inputs(dir: &Path) -> Vec<Vec<Item>> {
    let mut parts = vec![];
    for p in 0..3u64 {
        let mut g = GeneratorConfig::with_events(12_000);
        g.seed = 100 + p;
        g.events_per_second = 40.0;
        g.out_of_orderness_ms = 4_000;
        g.late_ratio = 0.01;
        g.late_delay_ms = 45_000;
        g.error_ratio = 0.05;
        let mut buf = vec![];
        g.write_jsonl(&mut buf).unwrap();
        let mut text = String::new();
        let mut items = vec![];
        for (i, line) in String::from_utf8(buf).unwrap().lines().enumerate() {
            let bad = match i % 997 {
                13 => Some("{\"ts\": 12, \"service\": \"x\"".to_string()), // truncated JSON
                500 => Some(line.replace("\"duration_ms\"", "\"duration\"")), // missing field
                800 => Some(line.replace("\"is_error\":false", "\"is_error\":\"maybe\"")),
                _ => None,
            };
            let line = bad.unwrap_or_else(|| line.to_string());
            text.push_str(&line);
            text.push('\n');
            items.push(parse_model(&line));
        }
        std::fs::write(dir.join(format!("spans-{p}.jsonl")), text).unwrap();
        parts.push(items);
    }
    parts
}

/// The model's own reading of a line (serde_json::Value, independent of the
/// source's decoder).
fn parse_model(line: &str) -> Item {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Item::Dead;
    };
    let (Some(ts), Some(s), Some(o), Some(d), Some(e)) = (
        v["ts"].as_u64(),
        v["service"].as_str(),
        v["operator"].as_str(),
        v["duration_ms"].as_f64(),
        v["is_error"].as_bool(),
    ) else {
        return Item::Dead;
    };
    Item::Span(
        ts,
        s.into(),
        o.into(),
        "span".into(),
        (d * 1e3).round() as i64,
        e,
    )
}

fn file_job(dir: &Path, pattern: &str, out: &str) -> String {
    format!(
        r#"
name = "oracle"
late-output = "{out}/late.jsonl"
dead-letter = "{out}/dead.jsonl"
[source]
kind = "file"
paths = ["{pattern}"]
{GENERATED_MAPPING}[watermark]
out-of-orderness = "3s"
[window]
kind = "tumbling"
size = "60s"
[[sinks]]
kind = "jsonl"
path = "{out}/rows.jsonl"
"#,
        pattern = dir.join(pattern).display(),
        out = dir.join(out).display()
    )
}

#[test]
fn file_job_matches_model_with_late_and_dead_letters_at_1_2_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path());
    let expected = model(&parts, 60_000, 3_000);
    assert!(
        expected.late > 0 && expected.dead > 0,
        "the input must exercise late and dead letters"
    );
    for workers in [1, 2, 4] {
        let out = format!("out-w{workers}");
        let config = JobConfig::parse(&file_job(dir.path(), "spans-*.jsonl", &out)).unwrap();
        let summary = job::run(
            &config,
            dir.path(),
            &ClusterArgs {
                workers,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(summary.late, expected.late, "late count at -w {workers}");
        assert_eq!(
            summary.dead_letters, expected.dead,
            "dead-letter count at -w {workers}"
        );
        assert_eq!(
            summary.rows,
            expected.rows.len() as u64,
            "row count at -w {workers}"
        );
        let rows = read_rows(&dir.path().join(&out).join("rows.jsonl"));
        assert_rows_match_model(&rows, &expected, &format!("rows at -w {workers}"));
        let dead = std::fs::read_to_string(dir.path().join(&out).join("dead.jsonl")).unwrap();
        assert_eq!(dead.lines().count() as u64, expected.dead);
        let first: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
        assert!(
            first["source"].as_str().unwrap().ends_with(".jsonl"),
            "{first}"
        );
        assert!(
            first["position"].as_u64().unwrap() > 0
                && !first["reason"].as_str().unwrap().is_empty()
        );
        assert!(!first["raw"].as_str().unwrap().is_empty());
        let late = std::fs::read_to_string(dir.path().join(&out).join("late.jsonl")).unwrap();
        assert_eq!(late.lines().count() as u64, expected.late);
    }
}

#[test]
fn two_process_cluster_matches_model() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path());
    let expected = model(&parts, 60_000, 3_000);
    run_cluster(
        dir.path(),
        "job",
        &file_job(dir.path(), "spans-*.jsonl", "cluster"),
        2,
        2,
    );
    assert_rows_match_model(
        &read_rows(&dir.path().join("cluster/rows.jsonl")),
        &expected,
        "2 processes",
    );
    let late = std::fs::read_to_string(dir.path().join("cluster/late.jsonl")).unwrap();
    assert_eq!(late.lines().count() as u64, expected.late);
    let dead = std::fs::read_to_string(dir.path().join("cluster/dead.jsonl")).unwrap();
    assert_eq!(dead.lines().count() as u64, expected.dead);
}

fn trainticket_job(out: &Path) -> String {
    let spans = shared_data().join("nezha/trainticket/spans_2023-01-29.csv.gz");
    format!(
        r#"
name = "trainticket"
[source]
kind = "file"
paths = ["{}"]
{NEZHA_MAPPING}[watermark]
out-of-orderness = "2m"
[window]
kind = "tumbling"
size = "60s"
[[sinks]]
kind = "jsonl"
path = "{}"
"#,
        spans.display(),
        out.display()
    )
}

#[test]
fn trainticket_day_gives_the_same_rows_at_w1_w2_and_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = vec![];
    for workers in [1, 2] {
        let out = dir.path().join(format!("w{workers}.jsonl"));
        let config = JobConfig::parse(&trainticket_job(&out)).unwrap();
        let s = job::run(
            &config,
            dir.path(),
            &ClusterArgs {
                workers,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.events, 328_848, "every span of the day is read");
        outputs.push(read_rows(&out));
    }
    let out = dir.path().join("cluster.jsonl");
    run_cluster(dir.path(), "job", &trainticket_job(&out), 2, 1);
    outputs.push(read_rows(&out));
    assert!(outputs[0].len() > 10_000, "{} rows", outputs[0].len());
    let total: u64 = outputs[0].iter().map(|r| r.total_count).sum();
    assert!(total > 328_000, "nearly all spans are in windows: {total}");
    assert!(outputs[0]
        .iter()
        .any(|r| r.service == "ts-auth-service" && r.operator_name == "/api/v1/users/login"));
    assert_rows_eq(&outputs[1], &outputs[0], "-w 2 vs -w 1");
    assert_rows_eq(&outputs[2], &outputs[0], "2 processes vs -w 1");
}

#[test]
fn cluster_stops_every_process_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = hostfile(dir.path(), 3);
    // Process 1 fails at once; the others would sleep for a minute.
    let script = r#"case "$4" in 1) exit 3;; *) sleep 60;; esac"#;
    let start = std::time::Instant::now();
    let err = streamforge::cluster::launch_local(
        Path::new("sh"),
        &["-c".into(), script.into(), "sh".into()],
        &hosts,
        1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("process 1 failed"), "{err}");
    assert!(
        start.elapsed().as_secs() < 20,
        "the sleeping processes were killed"
    );
}

#[test]
fn flights_run_with_carrier_as_service_and_cancelled_as_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flights.jsonl");
    let text = common::flights_job(&out);
    let config = JobConfig::parse(&text).unwrap();
    let s = job::run(
        &config,
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.events, 336_776);
    assert_eq!(s.dead_letters, 0);
    let rows = read_rows(&out);
    let total: u64 = rows.iter().map(|r| r.total_count).sum();
    let errors: u64 = rows.iter().map(|r| r.error_count).sum();
    assert_eq!(total + s.late, 336_776);
    assert_eq!(s.late, 0);
    // 8,255 flights have no dep_time (cancelled).
    assert_eq!(errors, 8_255);
    assert!(rows
        .iter()
        .any(|r| r.service == "UA" && r.operator_name == "EWR-IAH"));
}

#[test]
fn onlineboutique_spans_run_with_pod_names_mapped_to_services() {
    let spans = shared_data().join("nezha/onlineboutique/spans_2022-08-22.csv.gz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ob.jsonl");
    let text = trainticket_job(&out).replace(
        &shared_data()
            .join("nezha/trainticket/spans_2023-01-29.csv.gz")
            .display()
            .to_string(),
        &spans.display().to_string(),
    );
    let config = JobConfig::parse(&text).unwrap();
    let s = job::run(
        &config,
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.events, 852_420);
    assert_eq!(s.dead_letters, 0);
    let rows = read_rows(&out);
    let services: std::collections::BTreeSet<_> = rows.iter().map(|r| r.service.as_str()).collect();
    assert!(
        services.contains("frontend") && services.contains("cartservice"),
        "{services:?}"
    );
    assert!(
        services
            .iter()
            .all(|s| !s.ends_with(|c: char| c.is_ascii_digit()) || s.contains("redis")),
        "{services:?}"
    );
    let total: u64 = rows.iter().map(|r| r.total_count).sum();
    assert_eq!(total + s.late, 852_420);
}

#[test]
fn generator_job_is_deterministic_and_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let job = |out: &str| {
        format!(
            r#"
name = "generated"
[source]
kind = "generator"
events = 60000
partitions = 3
seed = 9
events-per-second = 50.0
late-ratio = 0.01
[watermark]
out-of-orderness = "1s"
[window]
kind = "tumbling"
size = "22s"
[[sinks]]
kind = "jsonl"
path = "{out}"
"#
        )
    };
    let mut outputs = vec![];
    for workers in [1, 2, 2] {
        let out = dir.path().join(format!("g{}.jsonl", outputs.len()));
        let config = JobConfig::parse(&job(&out.display().to_string())).unwrap();
        let s = job::run(
            &config,
            dir.path(),
            &ClusterArgs {
                workers,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.events, 60_000);
        outputs.push((read_rows(&out), s.late));
    }
    // The model over the generator's own partitions.
    let config = JobConfig::parse(&job("unused")).unwrap();
    let streamforge::job::SourceConfig::Generator(g) = &config.source else {
        unreachable!()
    };
    let parts: Vec<Vec<Item>> = (0..g.partitions)
        .map(|p| {
            g.partition(p)
                .map(|(ts, k, d, e)| {
                    let (s, o) = g.key_names(k);
                    Item::Span(ts, s, o, "span".into(), d, e)
                })
                .collect()
        })
        .collect();
    let expected = model(&parts, 22_000, 1_000);
    assert!(expected.late > 0);
    for (rows, late) in &outputs {
        assert_eq!(*late, expected.late);
        assert_rows_match_model(rows, &expected, "generator job");
    }
    assert_eq!(outputs[0].0.first().unwrap().window_size, 22);
}
