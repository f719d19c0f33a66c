//! `streamforge bench --quick` (with a baseline command) finishes in under
//! 2 minutes and writes results.json, results.md and two SVG plots of the
//! expected shape.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_quick_writes_json_markdown_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let start = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .args(["bench", "--quick", "--workers", "1,2", "--out"])
        .arg(&out)
        .args(["--baseline", "wc -l {input}"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let summary = json["summary"].as_array().unwrap();
    let mut want = vec![
        "alerting",
        "checkpointed",
        "latency",
        "main-jsonl",
        "main-memory",
        "sliding",
    ];
    if std::env::var("STREAMFORGE_KAFKA").is_ok() {
        want.push("kafka");
    }
    for w in &want {
        for workers in [1, 2] {
            let s = summary
                .iter()
                .find(|s| s["workload"] == *w && s["workers"] == workers)
                .unwrap_or_else(|| panic!("{w} -w {workers} missing"));
            assert!(s["events_per_second"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["mb_per_second"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["peak_rss_mb"].as_f64().unwrap() > 1.0, "{s}");
            assert!(s["rows"].as_u64().unwrap() > 0, "{s}");
        }
    }
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), want.len() * 2, "one run per point with --quick");
    let latency = runs.iter().find(|r| r["workload"] == "latency").unwrap()["latency"].clone();
    for kind in ["rows", "alerts"] {
        assert!(latency[kind]["count"].as_u64().unwrap() > 0, "{kind}");
        let p50 = latency[kind]["p50_ms"].as_u64().unwrap();
        let p99 = latency[kind]["p99_ms"].as_u64().unwrap();
        assert!(p50 > 0 && p50 <= p99, "{kind}: {p50} {p99}");
        assert_eq!(latency[kind]["cdf"].as_array().unwrap().len(), 101);
    }
    let baseline = &json["baseline"];
    assert_eq!(baseline["pairs"].as_array().unwrap().len(), 1);
    assert!(baseline["median_ratio"].as_f64().unwrap() > 0.0);

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| workload | processes | workers | events/s | MB/s | peak RSS MB |"));
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| workload"))
            .count(),
        summary.len()
    );
    assert!(md.contains("Baseline `wc -l {input}`"));
    assert!(stdout.contains("results.json"));
    // A process sweep: the same spans over a 2-process local cluster.
    let out2 = dir.path().join("bench-processes");
    let run = Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .args([
            "bench",
            "--quick",
            "--workloads",
            "main-memory",
            "--workers",
            "1",
        ])
        .args(["--processes", "1,2", "--out"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("results.json")).unwrap()).unwrap();
    let runs2 = json2["runs"].as_array().unwrap();
    let events = |p: u64| {
        runs2
            .iter()
            .find(|r| r["processes"] == p)
            .unwrap_or_else(|| panic!("no run with {p} processes"))["events"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(events(2), events(1));
    assert!(runs2
        .iter()
        .all(|r| r["peak_rss_mb"].as_f64().unwrap() > 1.0));
    for (svg, title) in [
        ("throughput.svg", "throughput vs workers"),
        ("latency.svg", "latency CDF"),
    ] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
        assert!(text.contains(title), "{svg}");
        assert!(text.matches("<polyline").count() >= 2, "{svg}: no series");
    }
}
