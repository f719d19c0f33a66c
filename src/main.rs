//! The `streamforge` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};
use streamforge::job::{self, JobConfig, SinkConfig};
use streamforge::sources::GeneratorConfig;
use streamforge_dataflow::launch::ClusterArgs;

// Records, rows and batches are many small allocations: mimalloc's
// thread-local free lists serve them far faster than glibc's malloc. The
// crate asks for every block as an aligned allocation; mimalloc 3 serves an
// aligned request whose size is not a power of two by over-allocating on its
// slow path (a 192-byte row: ~185 instructions, every time), mimalloc 2
// (`v2`) from the plain size class, so the binary uses 2.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flink-style stream processing on timely dataflow.
#[derive(Parser)]
#[command(name = "streamforge", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr (levels from RUST_LOG, e.g. `RUST_LOG=info`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

/// A database `streamforge schema` writes DDL for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SchemaTarget {
    /// ClickHouse (18.16 and newer).
    Clickhouse,
    /// PostgreSQL.
    Postgres,
}

/// timely's worker/cluster flags, parsed by timely itself.
#[derive(Args, Clone, Debug)]
#[command(disable_help_flag = true)]
struct Timely {
    /// Worker threads per process.
    #[arg(short = 'w', long = "threads", default_value_t = 1)]
    workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    processes: usize,
    /// Index of this process.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// Hostfile: one host:port per process.
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// Report connection progress.
    #[arg(short = 'r', long = "report")]
    report: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

impl Timely {
    fn cluster_args(&self) -> ClusterArgs {
        ClusterArgs {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
            report: self.report,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum GenerateKind {
    /// Trace spans (the main job's input).
    Spans,
    /// Orders (the orders pipeline's input).
    Orders,
    /// NEXMark auction events: persons, auctions and bids (1 : 3 : 46).
    Nexmark,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file (timely flags -w -n -p -h as in any timely program).
    #[command(disable_help_flag = true)]
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Resume from `latest` (the newest complete checkpoint) or a
        /// checkpoint/savepoint directory `…/chk-<id>`.
        #[arg(long)]
        restore: Option<job::RestoreFrom>,
        /// Override a job setting, as Flink's -D: `--set sinks.0.path='"out.csv"'`
        /// (dotted keys, array elements by index, values in TOML syntax;
        /// relative paths stay relative to the job file's directory).
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        #[command(flatten)]
        timely: Timely,
    },
    /// Print the DDL of the seed tables (flink_operator_agg_result,
    /// hourly_alarm_rules), or apply it with --apply.
    Schema {
        /// `clickhouse` or `postgres`.
        database: SchemaTarget,
        /// Run the DDL against the server instead of printing it.
        #[arg(long)]
        apply: bool,
        /// ClickHouse HTTP address, or PostgreSQL connection string
        /// (default: STREAMFORGE_CLICKHOUSE / STREAMFORGE_POSTGRES).
        #[arg(long)]
        url: Option<String>,
        /// ClickHouse database.
        #[arg(long, default_value = "default")]
        db: String,
    },
    /// Generate hourly alarm rules (hourly_alarm_rules) from stored aggregate
    /// rows: a JSONL file or exactly-once directory, or the
    /// flink_operator_agg_result table in ClickHouse or PostgreSQL. Writes
    /// the rules as JSON lines (stdout or --out).
    Thresholds {
        /// Rows: `PATH` (JSONL file/dir), `clickhouse:URL[#db.table]` or
        /// `postgres:CONNINFO[#table]`.
        #[arg(long)]
        from: String,
        /// Days of history back from the newest stored window.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Groups with fewer stored rows get no rule.
        #[arg(long, default_value_t = 3)]
        min_samples: usize,
        /// Output file (JSONL); default stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rule version (ms since the Unix epoch; also generated_time). A
        /// job's rule file applies a rule to windows starting at or after its
        /// version; default: now. Use an older version (e.g. 0) to apply the
        /// rules to a replay of older data.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Stop the job running with JOB's checkpoint directory with a final
    /// checkpoint (a savepoint) and print its directory; restore it with
    /// `run JOB --restore DIR`, with any worker count.
    Savepoint {
        /// The job file (TOML) of the running job.
        job: PathBuf,
        /// Give up after this long.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
    },
    /// Benchmark harness: named workloads (main job in memory and from JSONL,
    /// sliding windows, alerting, checkpoints, latency, Kafka when a broker
    /// is given) over worker counts; writes results.json, results.md,
    /// throughput.svg and latency.svg.
    Bench {
        /// Small sizes, one repeat, no warm-up (under 2 minutes).
        #[arg(long)]
        quick: bool,
        /// Output directory.
        #[arg(long, default_value = "out/bench")]
        out: PathBuf,
        /// Workloads to run (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Worker counts to sweep (per process).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// Process counts to sweep (> 1: local clusters; not the latency workload).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        processes: Vec<usize>,
        /// Repeats per point (median reported; --quick: 1).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Spans per throughput run (default 10 M, --quick 1 M).
        #[arg(long)]
        events: Option<u64>,
        /// Compare with this command on the same JSONL input (`{input}` or
        /// $INPUT), run in alternation with the main-jsonl job.
        #[arg(long)]
        baseline: Option<String>,
        /// Kafka brokers for the kafka workload (default STREAMFORGE_KAFKA).
        #[arg(long)]
        brokers: Option<String>,
        /// Run the workloads with flow control off (`[flow-control]
        /// enabled = false`), to compare.
        #[arg(long)]
        no_flow_control: bool,
    },
    /// Run the main job on the bundled real sample (TrainTicket spans), print a
    /// table and a summary.
    #[command(disable_help_flag = true)]
    Demo {
        /// Where to write the aggregate rows.
        #[arg(long, default_value = "out/demo/flink_operator_agg_result.jsonl")]
        out: PathBuf,
        #[command(flatten)]
        timely: Timely,
    },
    /// Launch every process of a local hostfile running JOB; stop all if one dies.
    #[command(disable_help_flag = true)]
    Cluster {
        /// The job file (TOML).
        job: PathBuf,
        /// Hostfile: one host:port per process.
        #[arg(short = 'h', long = "hostfile")]
        hostfile: PathBuf,
        /// Worker threads per process.
        #[arg(short = 'w', long = "threads", default_value_t = 1)]
        workers: usize,
        /// Resume the first start from `latest` or a checkpoint directory.
        #[arg(long)]
        restore: Option<job::RestoreFrom>,
        /// Restarts from the last complete checkpoint after a process dies
        /// (jobs with a [checkpoint] section only).
        #[arg(long, default_value_t = 3)]
        max_restarts: u32,
        /// Wait before the first restart; doubled after each (at most 30 s).
        #[arg(long, default_value = "1s")]
        restart_backoff: humantime::Duration,
        /// Override a job setting in every process (as `run --set`).
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Print help.
        #[arg(long, action = ArgAction::Help)]
        help: Option<bool>,
    },
    /// Replay a file (CSV/JSONL, .gz) or generated spans into a Kafka topic.
    Produce {
        /// Topic to write.
        #[arg(long)]
        topic: String,
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Input file (CSV with header, or JSONL; optionally .gz).
        #[arg(long, conflicts_with = "generate")]
        input: Option<PathBuf>,
        /// Replay this many generated spans instead of a file.
        #[arg(long)]
        generate: Option<u64>,
        /// Messages per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Field whose value keys each message.
        #[arg(long)]
        key_field: Option<String>,
        /// Create the topic with this many partitions if missing.
        #[arg(long)]
        partitions: Option<i32>,
        /// Value format (CSV input can be sent as CSV rows or JSON objects).
        #[arg(long, value_enum, default_value = "json")]
        format: streamforge::tools::produce::ValueFormat,
        /// Extra librdkafka property, KEY=VALUE (repeatable).
        #[arg(short = 'X', value_parser = parse_kv)]
        property: Vec<(String, String)>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Re-run a table job over the event-time range [FROM, TO) (the seed's
    /// replay): bounded, reading [FROM − window − dedup ttl, TO + window),
    /// nothing late, writing only the windows that overlap the range with a
    /// new `version`, so they replace the earlier rows (ReplacingMergeTree).
    #[command(disable_help_flag = true)]
    Replay {
        /// The job file (TOML, with a [window]).
        job: PathBuf,
        /// Start: ms since the epoch or RFC 3339 (`2023-01-29T00:10:00Z`).
        #[arg(long, value_parser = parse_time_ms)]
        from: u64,
        /// End (exclusive), as --from.
        #[arg(long, value_parser = parse_time_ms)]
        to: u64,
        /// Read these files (JSON lines or CSV; globs) instead of the job's
        /// source, e.g. the original input or the repaired anomaly log.
        #[arg(long)]
        input: Vec<String>,
        /// The version of the replayed rows (default: now in ms).
        #[arg(long)]
        version: Option<u64>,
        /// As `run --set`.
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        #[command(flatten)]
        timely: Timely,
    },
    /// Write generated events as JSON lines: `spans` (ts, service, operator,
    /// duration_ms, is_error, user_id), `orders` (event_time, order_id,
    /// user_id, amount, status, category, city; with duplicates, malformed,
    /// incomplete and late events) or `nexmark` (flat NEXMark persons,
    /// auctions and bids, `event_type` 0/1/2, `dateTime` ms).
    Generate {
        /// What to generate.
        #[arg(value_enum, default_value = "spans")]
        kind: GenerateKind,
        /// Number of spans or orders.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Event-time rate per second (default: 1000 spans, 50 orders, 10000
        /// NEXMark events).
        #[arg(long)]
        rate: Option<f64>,
        /// Services.
        #[arg(long, default_value_t = 8)]
        services: usize,
        /// Operators per service.
        #[arg(long, default_value_t = 6)]
        operators: usize,
        /// Write this many partition files `OUT-<i>.jsonl` (interleaved in event
        /// time) instead of one file.
        #[arg(long)]
        partitions: Option<usize>,
        /// Distinct users (`user_id` u00000…; default: 1000 for spans, 2000
        /// for orders).
        #[arg(long)]
        users: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_time_ms(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is neither ms nor an RFC 3339 time: {e}"))
        .and_then(|t| {
            u64::try_from(t.timestamp_millis()).map_err(|_| format!("{s:?} is before 1970"))
        })
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn job_base(job: &Path) -> PathBuf {
    job.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| ".".into())
}

fn run(cli: Cli) -> Result<(), streamforge::error::Error> {
    match cli.command {
        Command::Run {
            job,
            restore,
            set,
            timely,
        } => {
            let value = job::load_value(&job, &set)?;
            let args = timely.cluster_args();
            let from = restore.unwrap_or_default();
            let invalid = |reason| streamforge::error::Error::JobFile {
                path: job.display().to_string(),
                reason,
            };
            let (name, summary) = if streamforge::job::table::TableJob::is_table_job(&value) {
                let config =
                    streamforge::job::table::TableJob::from_value(value).map_err(invalid)?;
                let summary = streamforge::job::table::run(&config, &job_base(&job), &args, &from)?;
                (config.name, summary)
            } else {
                let config = JobConfig::from_value(value).map_err(invalid)?;
                let summary = job::run_from(&config, &job_base(&job), &args, &from)?;
                (config.name, summary)
            };
            if let Some(id) = summary.restored_from {
                println!("{name} restored from checkpoint {id}");
            }
            println!(
                "{name} process {}/{}: {summary}",
                args.process, args.processes
            );
        }
        Command::Bench {
            quick,
            out,
            workloads,
            workers,
            processes,
            repeats,
            events,
            baseline,
            brokers,
            no_flow_control,
        } => {
            let args = streamforge::tools::bench::BenchArgs {
                quick,
                out: out.clone(),
                workloads,
                workers,
                processes,
                repeats: if quick { 1 } else { repeats },
                events,
                baseline,
                brokers,
                flow_control: !no_flow_control,
            };
            streamforge::tools::bench::run(&args)?;
            print!("{}", std::fs::read_to_string(out.join("results.md"))?);
            println!(
                "\nwrote {0}/results.json, {0}/results.md, {0}/throughput.svg, {0}/latency.svg",
                out.display()
            );
        }
        Command::Demo { out, timely } => {
            let job_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs/demo.toml");
            let mut config = JobConfig::load(&job_path)?;
            let out = std::env::current_dir()?.join(out);
            config.sinks = vec![
                SinkConfig::Stdout { max_rows: 15 },
                SinkConfig::Jsonl { path: out.clone() },
            ];
            println!(
                "streamforge demo: {} on the bundled TrainTicket sample (data/sample)",
                config.name
            );
            let summary = job::run(&config, &job_base(&job_path), &timely.cluster_args())?;
            println!("\nsummary: {summary}");
            println!("rows written to {}", out.display());
        }
        Command::Produce {
            topic,
            brokers,
            input,
            generate,
            rate,
            key_field,
            partitions,
            format,
            property,
            quiet,
        } => {
            let mut properties: std::collections::BTreeMap<String, String> =
                property.into_iter().collect();
            properties
                .entry("bootstrap.servers".into())
                .or_insert(brokers);
            let input = match (input, generate) {
                (Some(path), _) => streamforge::tools::produce::ProduceInput::File(path),
                (None, Some(n)) => streamforge::tools::produce::ProduceInput::Generator(
                    GeneratorConfig::with_events(n),
                ),
                (None, None) => {
                    return Err(streamforge::error::Error::Invalid(
                        "give --input FILE or --generate N".into(),
                    ))
                }
            };
            let opts = streamforge::tools::produce::ProduceOptions {
                topic: topic.clone(),
                properties,
                input,
                rate,
                key_field,
                partitions,
                format,
                progress: !quiet,
            };
            let start = std::time::Instant::now();
            let n = streamforge::tools::produce::produce(&opts)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "produced {n} messages to {topic} in {secs:.2}s ({:.0}/s)",
                n as f64 / secs
            );
        }
        Command::Cluster {
            job,
            hostfile,
            workers,
            restore,
            max_restarts,
            restart_backoff,
            set,
            ..
        } => {
            let value = job::load_value(&job, &set)?;
            let checkpointed = value.get("checkpoint").is_some();
            let exe = std::env::current_exe()?;
            let mut base = vec!["run".to_string(), job.display().to_string()];
            for (k, v) in &set {
                base.extend(["--set".to_string(), format!("{k}={v}")]);
            }
            let mut first = base.clone();
            match &restore {
                Some(job::RestoreFrom::Path(p)) => {
                    first.extend(["--restore".to_string(), p.display().to_string()])
                }
                Some(job::RestoreFrom::Latest) => {
                    first.extend(["--restore".to_string(), "latest".to_string()])
                }
                _ => {}
            }
            let mut again = base;
            again.extend(["--restore".to_string(), "latest".to_string()]);
            let policy = streamforge::cluster::RestartPolicy {
                max_restarts: if checkpointed { max_restarts } else { 0 },
                backoff: restart_backoff.into(),
                checkpoint_dir: value
                    .get("checkpoint")
                    .and_then(|c| c.get("dir"))
                    .and_then(|d| d.as_str())
                    .map(|d| job_base(&job).join(d)),
            };
            streamforge::cluster::supervise(&exe, &first, &again, &hostfile, workers, &policy)?;
        }
        Command::Schema {
            database,
            apply,
            url,
            db,
        } => {
            let ddl = match database {
                SchemaTarget::Clickhouse => {
                    streamforge::operator_metrics::schema::clickhouse_ddl(&db)
                }
                SchemaTarget::Postgres => streamforge::operator_metrics::schema::postgres_ddl(),
            };
            if !apply {
                for s in &ddl {
                    println!("{s};\n");
                }
                return Ok(());
            }
            match database {
                SchemaTarget::Clickhouse => {
                    let url = url
                        .or_else(|| std::env::var("STREAMFORGE_CLICKHOUSE").ok())
                        .unwrap_or_else(|| "http://127.0.0.1:8123".into());
                    let config: streamforge::sinks::clickhouse::ClickHouseSinkConfig =
                        toml::from_str(&format!("url = {url:?}\ndatabase = {db:?}\ntable = \"-\""))
                            .expect("config");
                    let ch = streamforge::sinks::clickhouse::ClickHouse::new(
                        &config,
                        Default::default(),
                    )?;
                    ch.query(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"))?;
                    for s in &ddl {
                        ch.query(s)?;
                    }
                    eprintln!("applied {} statements to {url} database {db}", ddl.len());
                }
                SchemaTarget::Postgres => {
                    let url = url
                        .or_else(|| std::env::var("STREAMFORGE_POSTGRES").ok())
                        .ok_or_else(|| {
                            streamforge::error::Error::Invalid(
                                "--url or STREAMFORGE_POSTGRES is needed".into(),
                            )
                        })?;
                    streamforge::sinks::postgres::execute(&url, &ddl.join(";\n"))?;
                    eprintln!("applied {} statements to {url}", ddl.len());
                }
            }
        }
        Command::Thresholds {
            from,
            days,
            min_samples,
            out,
            version,
        } => {
            let rows = streamforge::operator_metrics::thresholds::read_rows(&from, days)?;
            let settings = streamforge::operator_metrics::thresholds::ThresholdSettings {
                analysis_days: days,
                min_samples,
                ..Default::default()
            };
            let now = version.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            });
            let rules = streamforge::operator_metrics::thresholds::generate(&rows, &settings, now);
            let mut text = String::new();
            for r in &rules {
                text.push_str(&serde_json::to_string(r).expect("json"));
                text.push('\n');
            }
            match out {
                Some(path) => std::fs::write(&path, text)?,
                None => print!("{text}"),
            }
            eprintln!(
                "{} rules from {} rows (last {days} days, ≥ {min_samples} samples)",
                rules.len(),
                rows.len()
            );
        }
        Command::Replay {
            job,
            from,
            to,
            input,
            version,
            set,
            timely,
        } => {
            let value = job::load_value(&job, &set)?;
            let invalid = |reason| streamforge::error::Error::JobFile {
                path: job.display().to_string(),
                reason,
            };
            if !streamforge::job::table::TableJob::is_table_job(&value) {
                return Err(invalid("replay needs a job file with a [schema]".into()));
            }
            let cwd = std::env::current_dir()?;
            let replay = streamforge::job::table::Replay {
                from_ms: from,
                to_ms: to,
                inputs: (!input.is_empty()).then(|| {
                    input
                        .iter()
                        .map(|p| cwd.join(p).display().to_string())
                        .collect()
                }),
                version: version.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(1, |d| d.as_millis() as u64)
                }),
            };
            let value = streamforge::job::table::replay_value(value, &replay).map_err(invalid)?;
            let config = streamforge::job::table::TableJob::from_value(value).map_err(invalid)?;
            let args = timely.cluster_args();
            let summary = streamforge::job::table::run(
                &config,
                &job_base(&job),
                &args,
                &job::RestoreFrom::Fresh,
            )?;
            println!(
                "{} replay [{from}, {to}) version {} process {}/{}: {summary}",
                config.name, replay.version, args.process, args.processes
            );
        }
        Command::Savepoint { job, timeout } => {
            let value = job::load_value(&job, &[])?;
            let invalid = |reason| streamforge::error::Error::JobFile {
                path: job.display().to_string(),
                reason,
            };
            let dir = if streamforge::job::table::TableJob::is_table_job(&value) {
                let config =
                    streamforge::job::table::TableJob::from_value(value).map_err(invalid)?;
                let c = config.checkpoint.ok_or_else(|| {
                    streamforge::error::Error::Invalid("the job has no [checkpoint] section".into())
                })?;
                job_base(&job).join(c.dir)
            } else {
                let config = JobConfig::from_value(value).map_err(invalid)?;
                streamforge::job::checkpoint_dir(&config, &job_base(&job))?
            };
            let path = streamforge::job::savepoint(&dir, timeout.into())?;
            println!("savepoint {}", path.display());
        }
        Command::Generate {
            kind: GenerateKind::Nexmark,
            events,
            out,
            seed,
            rate,
            ..
        } => {
            let mut g = streamforge::sources::nexmark::NexmarkConfig::with_events(events);
            g.seed = seed;
            g.events_per_second = rate.unwrap_or(g.events_per_second);
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
            let n = g.write_jsonl(&mut w)?;
            std::io::Write::flush(&mut w)?;
            println!("wrote {n} NEXMark events to {}", out.display());
        }
        Command::Generate {
            kind: GenerateKind::Orders,
            events,
            out,
            seed,
            rate,
            partitions,
            users,
            ..
        } => {
            let mut g = streamforge::sources::orders::OrdersConfig::with_events(events);
            g.seed = seed;
            g.events_per_second = rate.unwrap_or(g.events_per_second);
            g.users = users.unwrap_or(g.users);
            g.partitions = partitions.unwrap_or(1).max(1);
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let paths: Vec<PathBuf> = match partitions {
                None => vec![out.clone()],
                Some(_) => {
                    let stem = out.with_extension("");
                    (0..g.partitions)
                        .map(|p| PathBuf::from(format!("{}-{p}.jsonl", stem.display())))
                        .collect()
                }
            };
            for (p, path) in paths.iter().enumerate() {
                let mut w =
                    std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
                let n = g.write_partition_jsonl(p, &mut w)?;
                std::io::Write::flush(&mut w)?;
                println!("wrote {n} order events to {}", path.display());
            }
        }
        Command::Generate {
            kind: GenerateKind::Spans,
            events,
            out,
            seed,
            rate,
            services,
            operators,
            partitions,
            users,
        } => {
            let mut g = GeneratorConfig::with_events(events);
            g.users = users.unwrap_or(g.users);
            g.seed = seed;
            g.events_per_second = rate.unwrap_or(g.events_per_second);
            g.services = services;
            g.operators_per_service = operators;
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            if let Some(parts) = partitions {
                g.partitions = parts.max(1);
                let stem = out.with_extension("");
                for p in 0..g.partitions {
                    let path = PathBuf::from(format!("{}-{p}.jsonl", stem.display()));
                    let mut w =
                        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
                    let n = g.write_partition_jsonl(p, &mut w)?;
                    std::io::Write::flush(&mut w)?;
                    println!("wrote {n} spans to {}", path.display());
                }
            } else {
                let mut w =
                    std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
                let n = g.write_jsonl(&mut w)?;
                std::io::Write::flush(&mut w)?;
                println!("wrote {n} spans to {}", out.display());
            }
        }
    }
    Ok(())
}
