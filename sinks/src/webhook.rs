//! The HTTP webhook sink: records POSTed as a JSON array, with retries.
//!
//! One request per batch (`Content-Type: application/json`, body `[r1, r2, …]`,
//! each record a JSON value). 2xx is success; connection errors, 408, 429 and
//! 5xx are retried with backoff (100 ms doubling to 5 s) until `retry-timeout`;
//! other 4xx statuses fail at once (the receiver rejected the data: retrying
//! cannot help). The webhook has no commit marker, so delivery is
//! at-least-once: after a crash the records of the checkpoint being committed
//! are POSTed again (receivers deduplicate by the record's fields, e.g. an
//! alert's key, window and metric).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::SinkError;
use crate::retry::{retry, Attempt};
use crate::write_ahead::CommitTarget;

/// A webhook sink in a job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The URL to POST to (`${ENV}` is expanded).
    pub url: String,
    /// How long to keep retrying a failing batch (default `"10m"`).
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// Records per request at most (default 500).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Send what is buffered after this long (default `"1s"`; jobs without
    /// checkpoints).
    #[serde(default = "default_batch_interval", with = "humantime_serde")]
    pub batch_interval: Duration,
}

fn default_retry_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_batch_rows() -> usize {
    500
}
fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}

/// Counters of a webhook sink.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Records delivered (acknowledged with 2xx).
    pub records_total: AtomicU64,
    /// Requests that succeeded.
    pub requests_total: AtomicU64,
    /// Requests retried.
    pub retries_total: AtomicU64,
}

/// A webhook as a [`CommitTarget`]; records are JSON texts.
pub struct Webhook {
    url: String,
    config: WebhookSinkConfig,
    agent: ureq::Agent,
    counters: Arc<WebhookCounters>,
}

impl Webhook {
    /// A webhook target.
    ///
    /// # Errors
    /// The URL names an unset environment variable.
    pub fn new(
        config: &WebhookSinkConfig,
        counters: Arc<WebhookCounters>,
    ) -> Result<Self, SinkError> {
        Ok(Webhook {
            url: streamforge_dataflow::env::expand_env(&config.url)?,
            config: config.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            counters,
        })
    }

    /// POSTs `records` (JSON texts) as one JSON array, retrying.
    ///
    /// # Errors
    /// A status that retrying cannot fix, or still failing after the retry
    /// time.
    pub fn post(&self, records: &[String]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut body =
            String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push('[');
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(r);
        }
        body.push(']');
        let err = |reason: String| SinkError::Webhook {
            url: self.url.clone(),
            reason,
        };
        retry(
            self.config.retry_timeout,
            |why| {
                self.counters.retries_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.url, why, "webhook failed; retrying");
            },
            |why| {
                err(format!(
                    "still failing after {:?}: {why}",
                    self.config.retry_timeout
                ))
            },
            || match self
                .agent
                .post(&self.url)
                .set("Content-Type", "application/json")
                .send_string(&body)
            {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    let why = format!("HTTP {code}: {}", text.trim());
                    if code == 408 || code == 429 || code >= 500 {
                        Err(Attempt::Transient(why))
                    } else {
                        Err(Attempt::Fatal(err(why)))
                    }
                }
                Err(ureq::Error::Transport(t)) => Err(Attempt::Transient(t.to_string())),
            },
        )?;
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records_total
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl CommitTarget for Webhook {
    type Record = String;

    fn recover(&mut self, _writer: usize) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }

    fn commit(
        &mut self,
        _writer: usize,
        _checkpoint: Option<u64>,
        records: &[String],
    ) -> Result<(), SinkError> {
        for chunk in records.chunks(self.config.batch_rows.max(1)) {
            self.post(chunk)?;
        }
        Ok(())
    }
}
