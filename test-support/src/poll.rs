//! Waiting for a condition that becomes true asynchronously (an agent
//! converging, a flow restored), with a deadline and a message naming what
//! did not happen.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `ready` until it holds or `timeout` passes; the error names `what`.
pub async fn eventually(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let started = tokio::time::Instant::now();
    loop {
        if ready() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually`] for tests without a runtime (processes, namespaces).
pub fn eventually_blocking(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL_EVERY);
    }
}
