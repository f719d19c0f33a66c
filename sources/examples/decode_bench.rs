//! Decode throughput of the row decoder vs the span mapping over a JSONL
//! file of generated spans: `cargo run --release -p streamforge-sources
//! --example decode_bench -- FILE`.
use std::sync::Arc;
use std::time::Instant;

use streamforge_sources::record::RecordDecoder;
use streamforge_sources::row::{Column, ColumnType, RowDecoder, Schema};

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let text = std::fs::read(&path).expect("read");
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut op = Column::new("operator_name", ColumnType::String);
    op.field = Some("operator".into());
    let schema = Arc::new(
        Schema::new(vec![
            Column::new("ts", ColumnType::Timestamp),
            Column::new("service", ColumnType::String),
            op,
            Column::new("duration_ms", ColumnType::Int),
            Column::new("is_error", ColumnType::Bool),
        ])
        .unwrap(),
    );
    let mapping: streamforge_sources::SpanMapping = toml::from_str(
        r#"
        event-time = { field = "ts", unit = "ms" }
        service = { field = "service" }
        operator-name = { field = "operator" }
        duration = { field = "duration_ms", unit = "ms" }
        is-error = { field = "is_error" }
        "#,
    )
    .unwrap();
    let (mut best_span, mut best_row) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        let mut d = streamforge_sources::value::ValueDecoder::json(&mapping).unwrap();
        let t = Instant::now();
        let n = lines.iter().filter(|l| d.decode(l).is_ok()).count();
        best_span = best_span.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        let mut d = RowDecoder::new(schema.clone(), "ts", None)
            .unwrap()
            .with_spare_columns(2);
        let t = Instant::now();
        let n = lines.iter().filter(|l| d.decode(l).is_ok()).count();
        best_row = best_row.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    println!("best of 7, ns/record: span mapping {best_span:.0}  row decoder {best_row:.0}");
}
