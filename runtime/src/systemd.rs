//! systemd integration (the `sd-notify` crate): readiness, stopping, and a
//! watchdog that proves the work is being done.
//!
//! The watchdog is fed by heartbeats from the agent's own loops (the flow
//! programmer, the host reconcile loop, the server's accept loop), never by
//! a timer of its own: `WATCHDOG=1` goes out only while every registered
//! loop has beaten recently, so a wedged loop gets the service restarted.

use crate::lock;
use sd_notify::NotifyState;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a loop beats when systemd runs no watchdog: cheap, and keeps
/// one code path.
const IDLE_PERIOD: Duration = Duration::from_secs(10);

/// Tells systemd the service is ready (nothing when not under systemd).
pub fn ready() {
    notify(NotifyState::Ready, "ready");
}

/// Tells systemd what the service is doing (`systemctl status` shows it).
pub fn status(text: &str) {
    notify(NotifyState::Status(text), "status");
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    notify(NotifyState::Stopping, "stopping");
}

fn notify(state: NotifyState, what: &str) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, what, "systemd notification failed");
    }
}

/// The loops that must keep beating, and the watchdog timeout.
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `WatchdogSec` as systemd passed it; None when the watchdog is off.
    timeout: Option<Duration>,
    loops: Mutex<Vec<Beat>>,
}

struct Beat {
    id: u64,
    name: &'static str,
    last: Instant,
}

impl Watchdog {
    /// Reads `$WATCHDOG_USEC` (and `$WATCHDOG_PID`) as systemd sets them.
    pub fn from_env() -> Self {
        Self::with_timeout(sd_notify::watchdog_enabled().filter(|t| !t.is_zero()))
    }

    pub fn with_timeout(timeout: Option<Duration>) -> Self {
        Watchdog {
            inner: Arc::new(Inner {
                timeout,
                loops: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers a loop. It must call [`Heartbeat::beat`] at least every
    /// [`Heartbeat::period`]; dropping the heartbeat (the loop ended)
    /// unregisters it, unless the loop is panicking.
    pub fn heartbeat(&self, name: &'static str) -> Heartbeat {
        let mut loops = lock(&self.inner.loops);
        let id = loops.iter().map(|b| b.id + 1).max().unwrap_or(0);
        loops.push(Beat {
            id,
            name,
            last: Instant::now(),
        });
        Heartbeat {
            inner: self.inner.clone(),
            id,
        }
    }

    /// Loops that have not beaten within half the timeout.
    pub fn stale_loops(&self) -> Vec<&'static str> {
        let Some(timeout) = self.inner.timeout else {
            return Vec::new();
        };
        let now = Instant::now();
        lock(&self.inner.loops)
            .iter()
            .filter(|b| now.duration_since(b.last) > timeout / 2)
            .map(|b| b.name)
            .collect()
    }

    /// Pings systemd while every loop beats; stops pinging (and says which
    /// loop is stuck) when one does not. Returns at once when the watchdog
    /// is off.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_with(shutdown, || notify(NotifyState::Watchdog, "watchdog"))
            .await
    }

    /// [`Watchdog::run`] with the ping made by `ping` (tests).
    pub async fn run_with(self, shutdown: CancellationToken, mut ping: impl FnMut()) {
        let Some(timeout) = self.inner.timeout else {
            return;
        };
        let mut tick = tokio::time::interval(timeout / 4);
        let mut reported: Vec<&'static str> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stale = self.stale_loops();
            if stale.is_empty() {
                ping();
            } else if stale != reported {
                tracing::error!(loops = ?stale, ?timeout, "loop stuck; withholding the systemd watchdog ping");
            }
            reported = stale;
        }
    }
}

/// One loop's proof of life.
pub struct Heartbeat {
    inner: Arc<Inner>,
    id: u64,
}

impl Heartbeat {
    pub fn beat(&self) {
        if let Some(beat) = lock(&self.inner.loops).iter_mut().find(|b| b.id == self.id) {
            beat.last = Instant::now();
        }
    }

    /// How often the loop must beat: a quarter of the timeout, so that a
    /// healthy but busy loop never looks stale.
    pub fn period(&self) -> Duration {
        self.inner.timeout.map_or(IDLE_PERIOD, |t| t / 4)
    }

    /// An interval ticking every [`Heartbeat::period`], for a loop's select.
    pub fn ticker(&self) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // A loop that panicked stays registered (and stale): the watchdog
        // must stop, not forget it.
        if !std::thread::panicking() {
            lock(&self.inner.loops).retain(|b| b.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn pings_stop_while_a_loop_is_wedged_and_resume_when_it_beats() {
        let watchdog = Watchdog::with_timeout(Some(Duration::from_secs(4)));
        let worker = watchdog.heartbeat("worker");
        let pings = Arc::new(AtomicU32::new(0));
        let counted = pings.clone();
        let shutdown = CancellationToken::new();
        tokio::spawn(watchdog.clone().run_with(shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        // Beating every period: a ping every second.
        for _ in 0..4 {
            worker.beat();
            tokio::time::sleep(worker.period()).await;
        }
        let healthy = pings.load(Ordering::SeqCst);
        assert!(healthy >= 3, "healthy loop got {healthy} pings");
        // Wedged: no beat for 6 s; pings stop once it is 2 s stale.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let wedged = pings.load(Ordering::SeqCst) - healthy;
        assert!(wedged <= 2, "{wedged} pings while wedged");
        assert_eq!(watchdog.stale_loops(), vec!["worker"]);
        let before = pings.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(pings.load(Ordering::SeqCst), before, "pinged while stale");
        worker.beat();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            pings.load(Ordering::SeqCst) > before,
            "no ping after recovery"
        );
        // A loop that ends normally no longer holds the watchdog.
        drop(worker);
        assert!(watchdog.stale_loops().is_empty());
        shutdown.cancel();
    }

    #[test]
    fn without_a_watchdog_nothing_is_ever_stale() {
        let watchdog = Watchdog::with_timeout(None);
        let beat = watchdog.heartbeat("x");
        assert_eq!(beat.period(), IDLE_PERIOD);
        assert!(watchdog.stale_loops().is_empty());
    }
}
