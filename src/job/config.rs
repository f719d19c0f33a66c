//! Settings every job file shares: `[checkpoint]`, `[watermark]`, where a
//! run starts from, and reading a job file with `--set` overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// Checkpoint settings of a job file (`[checkpoint]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The checkpoint directory (shared by all processes of a cluster).
    pub dir: PathBuf,
    /// Time between checkpoints (default `"1s"`).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Complete checkpoints kept (default 3).
    #[serde(default = "default_retain")]
    pub retain: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_retain() -> usize {
    3
}

/// Where a run starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RestoreFrom {
    /// A fresh run (the checkpoint history is cleared).
    #[default]
    Fresh,
    /// The newest complete checkpoint; a fresh run when there is none.
    Latest,
    /// A checkpoint or savepoint directory (`…/chk-<id>`).
    Path(PathBuf),
}

impl std::str::FromStr for RestoreFrom {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "latest" {
            RestoreFrom::Latest
        } else {
            RestoreFrom::Path(s.into())
        })
    }
}

/// Watermark strategy: bounded out-of-orderness per partition.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Maximum expected disorder (e.g. `"5s"`; default 5 s).
    #[serde(with = "humantime_serde")]
    pub out_of_orderness: Duration,
    /// A partition without data for this long stops holding the watermark back
    /// (e.g. `"10s"`; default: never).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            out_of_orderness: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

/// Backpressure of the sources (`[flow-control]`, docs/ARCHITECTURE.md
/// "Flow control"): a partition pauses while its watermark is more than
/// `watermark-slack` ahead of the slowest stateful operator's input, the
/// source is more than `max-epochs-ahead` checkpoints ahead, or more than
/// `in-flight-mb` MiB per worker are read and not yet there.
///
/// # Examples
/// ```
/// use streamforge::job::FlowControlConfig;
/// let c: FlowControlConfig = toml::from_str("watermark-slack = \"5s\"").unwrap();
/// let s = c.settings();
/// assert_eq!(s.watermark_slack_ms, Some(5_000));
/// assert_eq!((s.max_epochs_ahead, s.in_flight_bytes), (Some(2), Some(64 << 20)));
/// let off: FlowControlConfig = toml::from_str("enabled = false").unwrap();
/// assert_eq!(off.settings().watermark_slack_ms, None);
/// assert!(toml::from_str::<FlowControlConfig>("slack = \"1s\"").is_err());
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FlowControlConfig {
    /// Flow control at all (default `true`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Watermark slack (default `"30s"`).
    #[serde(default = "default_slack", with = "humantime_serde")]
    pub watermark_slack: Duration,
    /// Checkpoint epochs a source may run ahead (default 2).
    #[serde(default = "default_epochs")]
    pub max_epochs_ahead: u64,
    /// MiB read per worker and not yet at a stateful operator (default 64).
    #[serde(default = "default_in_flight_mb")]
    pub in_flight_mb: u64,
}

fn default_true() -> bool {
    true
}

// The defaults are `FlowSettings::default()`'s.
fn flow_defaults() -> streamforge_dataflow::flow_control::FlowSettings {
    streamforge_dataflow::flow_control::FlowSettings::default()
}

fn default_slack() -> Duration {
    Duration::from_millis(flow_defaults().watermark_slack_ms.unwrap_or_default())
}

fn default_epochs() -> u64 {
    flow_defaults().max_epochs_ahead.unwrap_or_default()
}

fn default_in_flight_mb() -> u64 {
    flow_defaults().in_flight_bytes.unwrap_or_default() >> 20
}

impl Default for FlowControlConfig {
    fn default() -> Self {
        FlowControlConfig {
            enabled: true,
            watermark_slack: default_slack(),
            max_epochs_ahead: default_epochs(),
            in_flight_mb: default_in_flight_mb(),
        }
    }
}

impl FlowControlConfig {
    /// The limits for the sources.
    pub fn settings(&self) -> streamforge_dataflow::flow_control::FlowSettings {
        use streamforge_dataflow::flow_control::FlowSettings;
        if !self.enabled {
            return FlowSettings::off();
        }
        FlowSettings {
            watermark_slack_ms: Some(self.watermark_slack.as_millis() as u64),
            max_epochs_ahead: Some(self.max_epochs_ahead),
            in_flight_bytes: Some(self.in_flight_mb.saturating_mul(1 << 20)),
        }
    }
}

/// Reads a job file as TOML and applies `--set KEY=VALUE` overrides (as
/// Flink's `-D`): dotted keys, array elements by index (`sinks.0.path`),
/// values in TOML syntax (`'"out.csv"'`, `'["a.jsonl"]'`, `4`, `"2s"`);
/// a key that does not exist is added (array elements must exist).
///
/// # Errors
/// [`Error::JobFile`] when the file cannot be read or parsed, or an
/// override does not parse or names no place in the file.
///
/// # Examples
/// ```
/// let dir = std::env::temp_dir().join(format!("sf-set-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let job = dir.join("job.toml");
/// std::fs::write(&job, "name = \"a\"\n[[sinks]]\npath = \"x.csv\"\n").unwrap();
/// let v = streamforge::job::load_value(&job, &[("sinks.0.path".into(), "\"y.csv\"".into()),
///                                              ("source.paths".into(), "[\"in.jsonl\"]".into())]).unwrap();
/// assert_eq!(v["sinks"][0]["path"].as_str(), Some("y.csv"));
/// assert_eq!(v["source"]["paths"][0].as_str(), Some("in.jsonl"));
/// assert!(streamforge::job::load_value(&job, &[("sinks.3.path".into(), "1".into())]).is_err());
/// let v = streamforge::job::load_value(&job, &[("source.properties.\"bootstrap.servers\"".into(), "\"h:1\"".into())]).unwrap();
/// assert_eq!(v["source"]["properties"]["bootstrap.servers"].as_str(), Some("h:1"));
/// assert!(streamforge::job::load_value(&job, &[("name".into(), "not toml".into())]).is_err());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn load_value(path: &Path, sets: &[(String, String)]) -> Result<toml::Value, Error> {
    let err = |reason: String| Error::JobFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut value: toml::Value = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    for (key, raw) in sets {
        let parsed: toml::Table = toml::from_str(&format!("v = {raw}"))
            .map_err(|e| err(format!("--set {key}={raw}: not a TOML value: {e}")))?;
        let new = parsed.get("v").cloned().expect("parsed v");
        let mut at = &mut value;
        let parts = split_key(key);
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let missing = || err(format!("--set {key}: no `{part}` here"));
            at = match at {
                toml::Value::Array(items) => {
                    let n: usize = part.parse().map_err(|_| missing())?;
                    items.get_mut(n).ok_or_else(missing)?
                }
                toml::Value::Table(t) => {
                    if last {
                        t.entry(part.to_string())
                            .or_insert(toml::Value::Boolean(false))
                    } else {
                        t.entry(part.to_string())
                            .or_insert_with(|| toml::Value::Table(Default::default()))
                    }
                }
                _ => return Err(missing()),
            };
        }
        *at = new;
    }
    Ok(value)
}

/// Splits a dotted key; segments in double quotes may contain dots
/// (`source.properties."bootstrap.servers"`).
fn split_key(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}
