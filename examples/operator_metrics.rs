//! The main job written against the API instead of a job file: generated spans →
//! 22 s tumbling windows per (service, operator) → a table on stdout.
//!
//! `cargo run --release --example operator_metrics -- -w 2`

use streamforge::operator_metrics::{metrics_aggregate, to_row};
use streamforge::prelude::*;
use streamforge::sources::generator::generator_partition;
use streamforge::sources::GeneratorConfig;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Inspect;

fn main() {
    let mut generator = GeneratorConfig::with_events(200_000);
    generator.partitions = 2;
    generator.late_ratio = 0.001;
    timely::execute_from_args(std::env::args(), move |worker| {
        let generator = generator.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            let (spans, _dead) = partitioned_source(
                scope,
                SourceSettings::new("spans", 5_000),
                generator.partitions,
                move |i| generator_partition(&generator, i),
                None,
            );
            let (rows, late) = spans.window_aggregate(
                "operator-metrics",
                WindowSpec::new(Tumbling::new(22_000)),
                |s: &Span| &s.key,
                |s: &Span| s.event_time_ms,
                metrics_aggregate(),
            );
            rows.map(to_row).sink_stdout_table(
                "table",
                vec![
                    ("window_start".into(), 19),
                    ("service".into(), 16),
                    ("operator_name".into(), 36),
                    ("total_count".into(), 11),
                ],
                10,
            );
            late.inspect(|s| eprintln!("late: {s:?}"));
        });
    })
    .expect("timely starts");
}
