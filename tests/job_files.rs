//! Every job file shipped in examples/jobs parses, and bad job files fail with a
//! message that names the problem.

use streamforge::job::JobConfig;

#[test]
fn example_job_files_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml")
            && !path.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            let value = streamforge::job::load_value(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            if streamforge::job::table::TableJob::is_table_job(&value) {
                let job = streamforge::job::table::TableJob::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                job.validate(&dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else {
                JobConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            n += 1;
        }
    }
    assert!(n >= 9, "{n} job files");
}

#[test]
fn unknown_fields_and_bad_durations_are_errors() {
    let base = r#"
name = "x"
[source]
kind = "generator"
events = 10
[window]
kind = "tumbling"
size = "60s"
"#;
    assert!(JobConfig::parse(base).is_ok());
    let err =
        JobConfig::parse(&base.replace("size = \"60s\"", "size = \"60 parsecs\"")).unwrap_err();
    assert!(err.contains("size"), "{err}");
    let err =
        JobConfig::parse(&base.replace("events = 10", "events = 10\nevnets = 3")).unwrap_err();
    assert!(err.contains("evnets"), "{err}");
    let err = JobConfig::parse(&base.replace("tumbling", "hopping")).unwrap_err();
    assert!(err.contains("hopping"), "{err}");
}

#[test]
fn sliding_without_slide_is_rejected_before_running() {
    let job = JobConfig::parse(
        r#"
name = "x"
[source]
kind = "generator"
events = 10
[window]
kind = "sliding"
size = "60s"
"#,
    )
    .unwrap();
    let err =
        streamforge::job::run(&job, std::path::Path::new("."), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("slide"), "{err}");
}

#[test]
fn missing_input_files_are_reported_with_the_pattern() {
    let job = JobConfig::parse(
        r#"
name = "x"
[source]
kind = "file"
paths = ["does-not-exist-*.jsonl"]
[source.mapping]
event-time = { field = "ts" }
service = { field = "s" }
operator-name = { field = "o" }
duration = { field = "d" }
[window]
kind = "tumbling"
size = "60s"
"#,
    )
    .unwrap();
    let err =
        streamforge::job::run(&job, std::path::Path::new("."), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("does-not-exist-*.jsonl"), "{err}");
}
