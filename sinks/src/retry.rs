//! Retrying a database write with exponential backoff until a deadline.

use std::time::{Duration, Instant};

use crate::error::SinkError;

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Worth retrying (connection refused or lost, server overloaded or
    /// restarting); the text says why.
    Transient(String),
    /// Retrying cannot help (schema mismatch, rejected data, bad credentials).
    Fatal(SinkError),
}

/// First backoff; doubles per failed attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, a fatal error, or `timeout` has passed
/// since the first failure; `on_retry` is called before each retry (counters,
/// logs). The error after the timeout is made by `timed_out` from the last
/// transient reason.
///
/// # Errors
/// The fatal error, or the timeout's.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use streamforge_sinks::retry::{retry, Attempt};
/// let mut calls = 0;
/// let timed_out = |why: &str| streamforge_sinks::SinkError::Database {
///     sink: "doc", table: "t".into(), reason: why.into(),
/// };
/// let r = retry(Duration::from_secs(5), |_| {}, timed_out, || {
///     calls += 1;
///     if calls < 3 { Err(Attempt::Transient("down".into())) } else { Ok(calls) }
/// });
/// assert_eq!(r.unwrap(), 3);
/// // Without time to retry, the transient failure becomes the error.
/// let r: Result<(), _> = retry(Duration::ZERO, |_| {}, timed_out,
///     || Err(Attempt::Transient("connection refused".into())));
/// assert!(r.unwrap_err().to_string().contains("connection refused"));
/// ```
pub fn retry<T>(
    timeout: Duration,
    mut on_retry: impl FnMut(&str),
    timed_out: impl FnOnce(&str) -> SinkError,
    mut attempt: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, SinkError> {
    let mut backoff = FIRST_BACKOFF;
    let mut first_failure: Option<Instant> = None;
    loop {
        match attempt() {
            Ok(t) => return Ok(t),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Transient(reason)) => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                if since.elapsed() >= timeout {
                    return Err(timed_out(&reason));
                }
                on_retry(&reason);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
