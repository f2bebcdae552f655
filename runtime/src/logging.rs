//! Log output shared by both agents: human-readable by default, JSON lines
//! for log collectors. `RUST_LOG` overrides the default `info` filter.

use std::str::FromStr;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use human or json")),
        }
    }
}

/// Installs the global subscriber. Logs go to stderr (journald keeps them).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Decides whether a recurring failure is worth a log line: the first
/// time, and at most once per `every` while the same text repeats (each of
/// a few failures that alternate is tracked on its own). A retry loop that
/// fails the same way every few seconds then says so once a minute instead
/// of filling the journal.
#[derive(Debug)]
pub struct Repeats {
    every: std::time::Duration,
    /// Each failure's text, when it was last logged, and how many times
    /// it was not logged since.
    seen: Vec<(String, tokio::time::Instant, u64)>,
}

/// How often a failure that repeats unchanged is logged again.
pub const REPEATED_FAILURE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Repeats {
    /// Once a minute per failure.
    fn default() -> Self {
        Repeats::new(REPEATED_FAILURE_EVERY)
    }
}

/// Failures tracked at once; past it the oldest is forgotten.
const TRACKED_FAILURES: usize = 8;

impl Repeats {
    pub fn new(every: std::time::Duration) -> Self {
        Repeats {
            every,
            seen: Vec::new(),
        }
    }

    /// Some(times suppressed since its last line) when `text` should be
    /// logged now; None to stay quiet.
    pub fn due(&mut self, text: &str) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if let Some((_, at, suppressed)) = self.seen.iter_mut().find(|(t, _, _)| t == text) {
            if now.duration_since(*at) < self.every {
                *suppressed += 1;
                return None;
            }
            *at = now;
            return Some(std::mem::take(suppressed));
        }
        if self.seen.len() == TRACKED_FAILURES {
            self.seen.remove(0);
        }
        self.seen.push((text.to_string(), now, 0));
        Some(0)
    }

    /// The failures are over: the next one is logged at once.
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_repeated_failure_is_logged_once_per_period_and_a_new_one_at_once() {
        let mut repeats = Repeats::new(Duration::from_secs(60));
        assert_eq!(repeats.due("refused"), Some(0));
        assert_eq!(repeats.due("refused"), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(repeats.due("refused"), None);
        assert_eq!(
            repeats.due("timed out"),
            Some(0),
            "another failure: at once"
        );
        assert_eq!(
            repeats.due("timed out"),
            None,
            "alternating failures each wait"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(repeats.due("refused"), Some(2));
        assert_eq!(repeats.due("timed out"), None);
        repeats.clear();
        assert_eq!(repeats.due("timed out"), Some(0));
    }
}
