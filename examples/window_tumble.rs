//! `examples/jobs/window-tumble.toml` written with the typed API: TUMBLE 60 s
//! per (service, operator) with count, error count, sum/avg/max duration,
//! over the JSON lines of `streamforge generate`, into the same CSV. The
//! pair measures the cost of the job file's dynamic rows
//! (`scripts/bench-table-jobs.sh`).
//!
//! `cargo run --release --example window_tumble -- 'out/spans*.jsonl' out/tumble-api.csv -w 2`

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use streamforge::api::{execute, JobOptions, WatermarkStrategy};
use streamforge::operators::{Count, CountIf, Max, Sum, Tumbling};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Event {
    ts: u64,
    service: String,
    operator: String,
    duration_ms: i64,
    is_error: bool,
    user_id: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let input = PathBuf::from(
        args.get(1)
            .ok_or("usage: window_tumble INPUT OUT.csv [-w N]")?,
    );
    let out = PathBuf::from(
        args.get(2)
            .ok_or("usage: window_tumble INPUT OUT.csv [-w N]")?,
    );
    let workers = match args.iter().position(|a| a == "-w") {
        Some(i) => args.get(i + 1).ok_or("-w N")?.parse()?,
        None => 1,
    };
    let summary = execute(
        &JobOptions::new("window-tumble-api").workers(workers),
        move |env| {
            env.from_jsonl(
                "source",
                std::slice::from_ref(&input),
                WatermarkStrategy::for_bounded_out_of_orderness_ms(2_000),
                |e: &Event| e.ts,
            )?
            .key_by(|e| (e.service.clone(), e.operator.clone()))
            .window(Tumbling::new(60_000))
            .aggregate(
                "window",
                (
                    Count,
                    CountIf::of(|e: &Event| e.is_error),
                    Sum::of(|e: &Event| e.duration_ms),
                    Max::of(|e: &Event| e.duration_ms),
                ),
            )
            .results
            .map(|r| {
                let (n, errors, sum, max) = r.value;
                let avg = serde_json::to_string(&(sum as f64 / n as f64)).expect("finite");
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(Vec::new());
                w.write_record([
                    r.key.0,
                    r.key.1,
                    r.window.start_ms.to_string(),
                    r.window.end_ms.to_string(),
                    n.to_string(),
                    errors.to_string(),
                    sum.to_string(),
                    avg,
                    max.map_or(String::new(), |m| m.to_string()),
                ])
                .expect("in-memory CSV");
                let mut line =
                    String::from_utf8(w.into_inner().expect("in-memory CSV")).expect("UTF-8");
                line.pop();
                line
            })
            .sink_lines(
                "csv",
                out.clone(),
                Some(
                    "service,operator,window_start_ms,window_end_ms,cnt,err_cnt,sum_duration_ms,\
                 avg_duration_ms,max_duration_ms"
                        .into(),
                ),
            );
            Ok(())
        },
    )?;
    println!(
        "window-tumble-api: events {}  rows {}  late {}  dead-lettered {}  elapsed {:.3}s  events/s {:.0}",
        summary.events,
        summary.written,
        summary.late,
        summary.dead_letters,
        summary.elapsed_seconds,
        summary.events as f64 / summary.elapsed_seconds.max(1e-9)
    );
    Ok(())
}
