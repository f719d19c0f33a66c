//! Checkpoints and exactly-once output: kill -9 at random moments, restore,
//! compare the committed output with a failure-free run; rescaling through a
//! savepoint; falling back past a corrupt checkpoint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{committed_lines, file_lines, kill_loop};
use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig};
use streamforge::sources::GeneratorConfig;

const EVENTS: u64 = 1_200_000;
const RATE_PER_WORKER: u64 = 50_000;

/// Writes `EVENTS` generated spans (with late ones) as two partition files.
fn input(dir: &Path) -> Vec<PathBuf> {
    let mut g = GeneratorConfig::with_events(EVENTS);
    g.partitions = 2;
    g.events_per_second = 2_000.0;
    g.late_ratio = 0.002;
    g.late_delay_ms = 20_000;
    (0..2)
        .map(|p| {
            let path = dir.join(format!("spans-{p}.jsonl"));
            let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            g.write_partition_jsonl(p, &mut w).unwrap();
            std::io::Write::flush(&mut w).unwrap();
            path
        })
        .collect()
}

/// The main job over the two files; with `checkpoint`, exactly-once sinks in
/// directories, a checkpoint every 100 ms, and a replay throttle.
fn job_text(out: &str, checkpoint: bool) -> String {
    let mut text = format!(
        r#"name = "kill-test"
late-output = "{out}/late"
[source]
kind = "file"
paths = ["spans-0.jsonl", "spans-1.jsonl"]
{mapping}
[watermark]
out-of-orderness = "5s"
[window]
kind = "tumbling"
size = "10s"
[[sinks]]
kind = "jsonl"
path = "{out}/rows"
"#,
        mapping = common::GENERATED_MAPPING
    );
    if checkpoint {
        text = format!("rate-limit = {RATE_PER_WORKER}\n{text}");
        text.push_str("[checkpoint]\ndir = \"ckpt\"\ninterval = \"100ms\"\nretain = 3\n");
    }
    text
}

struct Fixture {
    dir: tempfile::TempDir,
    job: PathBuf,
    /// The same job without the replay throttle (to finish quickly).
    fast_job: PathBuf,
    want_rows: Vec<String>,
    want_late: Vec<String>,
}

/// Input files, a failure-free reference run (no checkpoints), and the
/// checkpointed job file.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let reference = JobConfig::parse(&job_text("ref", false)).unwrap();
    let summary = job::run(&reference, dir.path(), &ClusterArgs::default()).unwrap();
    assert_eq!(summary.events, EVENTS);
    assert!(summary.late > 0, "the input should have late records");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, job_text("out", true)).unwrap();
    let fast_job = dir.path().join("fast.toml");
    let fast = job_text("out", true).replace(&format!("rate-limit = {RATE_PER_WORKER}\n"), "");
    assert!(!fast.contains("rate-limit"));
    std::fs::write(&fast_job, fast).unwrap();
    let want_rows = file_lines(&dir.path().join("ref/rows"));
    let want_late = file_lines(&dir.path().join("ref/late"));
    assert!(want_rows.len() > 1000);
    Fixture {
        dir,
        job,
        fast_job,
        want_rows,
        want_late,
    }
}

fn assert_output(f: &Fixture, what: &str) {
    let rows = committed_lines(&f.dir.path().join("out/rows"));
    let late = committed_lines(&f.dir.path().join("out/late"));
    if rows != f.want_rows || late != f.want_late {
        // Keep the evidence: outputs, checkpoints and logs of the failed run.
        let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("failed-kill-test");
        let _ = std::fs::remove_dir_all(&keep);
        let _ = Command::new("cp")
            .arg("-r")
            .arg(f.dir.path())
            .arg(&keep)
            .status();
        let extra: Vec<&String> = rows
            .iter()
            .filter(|r| f.want_rows.binary_search(r).is_err())
            .take(5)
            .collect();
        let missing: Vec<&String> = f
            .want_rows
            .iter()
            .filter(|r| rows.binary_search(r).is_err())
            .take(5)
            .collect();
        let mut dups = rows.clone();
        dups.dedup();
        eprintln!(
            "{what}: rows {} (want {}), duplicates {}, late {} (want {}); kept in {}\n\
             extra (first 5): {extra:?}\nmissing (first 5): {missing:?}",
            rows.len(),
            f.want_rows.len(),
            rows.len() - dups.len(),
            late.len(),
            f.want_late.len(),
            keep.display()
        );
    }
    assert_eq!(rows.len(), f.want_rows.len(), "{what}: row count");
    assert!(
        rows == f.want_rows,
        "{what}: rows differ from the failure-free run"
    );
    assert!(late == f.want_late, "{what}: late records differ");
}

#[test]
fn kill_9_twenty_times_then_output_equals_the_failure_free_run() {
    let f = fixture();
    let report = kill_loop(
        &f.job,
        &f.dir.path().join("ckpt"),
        20,
        0x5eed,
        0..300,
        &[1, 2],
    );
    assert_eq!(report.restored.len(), 20, "every restart restored");
    assert!(
        report.last_output.contains("restored from checkpoint"),
        "{}",
        report.last_output
    );
    assert_output(&f, "after 20 kills");
}

#[test]
fn rescale_through_savepoints_2_to_1_and_1_to_2() {
    let f = fixture();
    let exe = env!("CARGO_BIN_EXE_streamforge");
    let mut restore: Option<PathBuf> = None;
    // Three legs: -w 2, savepoint, -w 1, savepoint, -w 2 to the end.
    for (leg, workers) in [2, 1, 2].into_iter().enumerate() {
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg(if leg == 2 { &f.fast_job } else { &f.job })
            .args(["-w", &workers.to_string()]);
        if let Some(p) = &restore {
            cmd.arg("--restore").arg(p);
        }
        // The savepoint this leg restores, by the id its manifest records.
        let want = restore.as_ref().map(|p| {
            let m = std::fs::read_to_string(p.join("MANIFEST.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&m).unwrap()["id"]
                .as_u64()
                .unwrap()
        });
        if leg == 2 {
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(common::restored_id(&stderr), want, "leg {leg}: {stderr}");
            break;
        }
        let log = f.dir.path().join(format!("rescale-leg-{leg}.stderr"));
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1_500));
        let out = Command::new(exe)
            .arg("savepoint")
            .arg(&f.job)
            .output()
            .unwrap();
        assert!(out.status.success(), "savepoint failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let path = PathBuf::from(text.trim().strip_prefix("savepoint ").unwrap());
        assert!(
            child.wait().unwrap().success(),
            "the job should stop cleanly"
        );
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert_eq!(common::restored_id(&stderr), want, "leg {leg}: {stderr}");
        // The savepoint holds open windows (it did not drain): the windows part
        // of some worker is larger than an empty snapshot.
        let manifest = std::fs::read_to_string(path.join("MANIFEST.json")).unwrap();
        assert!(manifest.contains("\"savepoint\": \"true\""), "{manifest}");
        let sources = std::fs::read_to_string(path.join("part-sources.bin")).unwrap();
        assert!(
            sources.contains("\"finished\":false"),
            "savepoint at leg {leg} came after the end of the input: {sources}"
        );
        restore = Some(path);
    }
    assert_output(&f, "2 → 1 → 2 workers through savepoints");
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let f = fixture();
    let exe = env!("CARGO_BIN_EXE_streamforge");
    let mut child = Command::new(exe)
        .arg("run")
        .arg(&f.job)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_200));
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    let store = f.dir.path().join("ckpt");
    let mut complete: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("MANIFEST.json").exists())
        .collect();
    complete.sort();
    assert!(
        complete.len() >= 2,
        "need two complete checkpoints: {complete:?}"
    );
    let newest = complete.last().unwrap();
    let window_part = std::fs::read_dir(newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("window"))
        .unwrap();
    let mut bytes = std::fs::read(&window_part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&window_part, bytes).unwrap();
    let out = Command::new(exe)
        .arg("run")
        .arg(&f.fast_job)
        .args(["--restore", "latest", "-w", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    let newest_id: u64 = newest
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("chk-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stderr.contains(&format!("checkpoint {newest_id} is not usable"))
            && stderr.contains("falling back"),
        "{stderr}"
    );
    let used: u64 = stdout
        .split("restored from checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(used < newest_id, "restored {used}, newest was {newest_id}");
    assert_eq!(common::restored_id(&stderr), Some(used), "{stderr}");
    assert_output(&f, "restore past a corrupt checkpoint");
}

/// Pids of the direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command name "(…)": state, ppid, …
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn cluster_restarts_after_kill_9_of_one_process_twenty_times() {
    let f = fixture();
    let hosts = common::hostfile(f.dir.path(), 2);
    // stderr to a file: a pipe nobody reads would fill up and block the processes.
    let log_path = f.dir.path().join("cluster.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // A slower replay than the other kill tests: 20 kills, each waiting for a
    // new checkpoint, must fit before the input ends (at 50 k/s per worker
    // the cluster sometimes finished after 15–16 kills).
    let slow_job = f.dir.path().join("slow.toml");
    let slow = job_text("out", true).replace(
        &format!("rate-limit = {RATE_PER_WORKER}\n"),
        &format!("rate-limit = {}\n", RATE_PER_WORKER * 3 / 5),
    );
    assert_ne!(slow, job_text("out", true));
    std::fs::write(&slow_job, slow).unwrap();
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .arg("cluster")
        .arg(&slow_job)
        .arg("-h")
        .arg(&hosts)
        .args([
            "-w",
            "1",
            "--max-restarts",
            "40",
            "--restart-backoff",
            "10ms",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        // Info logs (restored checkpoint, completions) for a failure's evidence.
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xc105);
    let store = streamforge::dataflow::checkpoint_store::CheckpointStore::open(
        f.dir.path().join("ckpt"),
        usize::MAX,
    )
    .unwrap();
    let restarts = || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .matches("from the last checkpoint")
            .count()
    };
    let mut kills = 0;
    let mut last = None;
    while kills < 20 {
        // Wait until the restarted cluster has made progress (a new complete
        // checkpoint), then kill at a random moment.
        let wait = std::time::Instant::now();
        while store.newest_complete_id() == last {
            assert!(
                wait.elapsed() < Duration::from_secs(60),
                "no progress after kill {kills}: {}",
                std::fs::read_to_string(&log_path).unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        last = store.newest_complete_id();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        assert!(
            supervisor.try_wait().unwrap().is_none(),
            "the cluster finished after {kills} kills: make the input longer"
        );
        let kids = children(supervisor.id());
        if kids.len() < 2 {
            continue; // between restarts
        }
        let victim = kids[rng.gen_range(0..kids.len())];
        if Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success()
        {
            // Count the kill once the supervisor has restarted the cluster for it.
            let wait = std::time::Instant::now();
            while restarts() == kills && wait.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            kills = restarts();
        }
    }
    let status = supervisor.wait().unwrap();
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(restarts(), 20, "{stderr}");
    // Every restart restored both processes (no fresh start) from one
    // checkpoint, never older than the previous restart's. (Two restarts can
    // name the same one: a checkpoint completed between the wait and the
    // kill counts as the progress the next kill waits for.)
    let ids: Vec<u64> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v["event"] == "restored")
        .map(|v| v["checkpoint"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    assert_eq!(ids.len(), 2 * 20, "two processes × 20 restarts: {ids:?}");
    for id in &ids {
        let n = ids.iter().filter(|i| *i == id).count();
        assert!(n % 2 == 0, "both processes restore {id}: {ids:?}");
    }
    assert_output(&f, "2-process cluster after 20 kills");
}
