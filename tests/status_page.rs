//! The status page in a real browser: headless Chromium (Debian package;
//! scripts/test.sh installs it) screenshots the page of the alerting
//! TrainTicket job after it ended (the server lingers), and the PNG is a
//! rendered page — the right size, many colours, a good share of ink — not an
//! error or a blank tab.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn chromium_renders_the_status_page() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "no chromium: run scripts/test.sh (it installs the Debian package), or \
                 `apt-get install chromium`"
            )
        });
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let job = common::trainticket_two_days(
        "name = \"status-page-test\"",
        &format!(
            r#"[alerting]
[alerting.rules]
kind = "generated"
[[alerting.sinks]]
kind = "jsonl"
path = "alerts.jsonl"
[metrics]
address = "127.0.0.1:{port}"
linger = "60s"
"#
        ),
    );
    let path = dir.path().join("job.toml");
    std::fs::write(&path, job).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .args(["run", path.to_str().unwrap(), "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    // Wait until the job has raised its alerts (the page then shows them).
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "no status page");
        let status = ureq::get(&format!("{url}status.json"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if status.is_some_and(|s| s["alerts_by_level"]["HIGH"].as_u64() > Some(0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let shot = dir.path().join("status.png");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        shot.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 900));
    let bpp = info.line_size / info.width as usize;
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let ink = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|c| *c < 200))
        .count();
    // Text, table borders and the graph boxes: many colours (anti-aliasing)
    // and a few percent of dark pixels; a blank or error page has neither.
    assert!(colours.len() > 50, "{} colours", colours.len());
    let share = ink as f64 / pixels.len() as f64;
    assert!(share > 0.01 && share < 0.6, "ink share {share}");
    std::fs::copy(
        &shot,
        std::env::temp_dir().join("streamforge-status-page.png"),
    )
    .ok();
}
