//! Bounds on connections that have not authenticated yet: a stranger who
//! opens thousands of TCP connections and never finishes a handshake must
//! not use up the agent's file descriptors or drown its log, and the
//! authorised host must still get in.
//!
//! At most [`MAX_PENDING`] handshakes run at once, and at most
//! [`MAX_PENDING_PER_SOURCE`] from one address. A connection beyond either
//! bound evicts the oldest pending handshake (of its own source first): a
//! flood holds only a fixed number of descriptors, and a newcomer (the host
//! reconnecting) always gets its turn.

use noverlay_runtime::lock;
use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const MAX_PENDING: usize = 256;
pub const MAX_PENDING_PER_SOURCE: usize = 32;

struct Pending {
    id: u64,
    source: IpAddr,
    cancel: CancellationToken,
}

/// The handshakes in progress, oldest first.
#[derive(Clone, Default)]
pub struct PendingHandshakes {
    inner: Arc<Mutex<(u64, VecDeque<Pending>)>>,
}

/// One admitted handshake; dropping it (done, failed or timed out) frees
/// its slot. `cancelled` resolves when a newer connection evicted it.
pub struct Slot {
    handshakes: PendingHandshakes,
    id: u64,
    pub cancelled: CancellationToken,
}

impl PendingHandshakes {
    /// Admits a handshake from `source`, evicting the oldest one of the same
    /// source (or overall) when a bound is reached.
    pub fn admit(&self, source: IpAddr) -> Slot {
        let mut guard = lock(&self.inner);
        let (next_id, pending) = &mut *guard;
        let from_source = pending.iter().filter(|p| p.source == source).count();
        let evict = if from_source >= MAX_PENDING_PER_SOURCE {
            pending.iter().position(|p| p.source == source)
        } else if pending.len() >= MAX_PENDING {
            Some(0)
        } else {
            None
        };
        if let Some(oldest) = evict.and_then(|i| pending.remove(i)) {
            oldest.cancel.cancel();
        }
        let id = *next_id;
        *next_id += 1;
        let cancelled = CancellationToken::new();
        pending.push_back(Pending {
            id,
            source,
            cancel: cancelled.clone(),
        });
        Slot {
            handshakes: self.clone(),
            id,
            cancelled,
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.handshakes.inner).1.retain(|p| p.id != self.id);
    }
}

/// Lets through at most `burst` log lines per `window`, and says how many
/// it held back when the next window opens.
pub struct LogLimiter {
    state: Mutex<LimiterState>,
    burst: u32,
    window: Duration,
}

struct LimiterState {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            state: Mutex::new(LimiterState {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
            burst,
            window,
        }
    }

    /// Whether to log this event, and how many were held back before it
    /// (to be said in the same line).
    pub fn admit(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        if state.window_start.elapsed() >= self.window {
            state.window_start = Instant::now();
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_source_evicts_its_own_oldest() {
        let handshakes = PendingHandshakes::default();
        let attacker: IpAddr = "192.0.2.66".parse().expect("ip");
        let host: IpAddr = "192.0.2.1".parse().expect("ip");
        let flood: Vec<Slot> = (0..1500).map(|_| handshakes.admit(attacker)).collect();
        assert_eq!(handshakes.len(), MAX_PENDING_PER_SOURCE);
        let evicted = flood.iter().filter(|s| s.cancelled.is_cancelled()).count();
        assert_eq!(evicted, 1500 - MAX_PENDING_PER_SOURCE);
        let slot = handshakes.admit(host);
        assert!(!slot.cancelled.is_cancelled());
        assert_eq!(handshakes.len(), MAX_PENDING_PER_SOURCE + 1);
        drop(flood);
        assert_eq!(handshakes.len(), 1, "finished handshakes free their slots");
    }

    #[test]
    fn many_sources_are_bounded_in_total() {
        let handshakes = PendingHandshakes::default();
        let slots: Vec<Slot> = (0..1000u32)
            .map(|i| handshakes.admit(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
            .collect();
        assert_eq!(handshakes.len(), MAX_PENDING);
        assert!(
            slots[..1000 - MAX_PENDING]
                .iter()
                .all(|s| s.cancelled.is_cancelled())
        );
        assert!(
            slots[1000 - MAX_PENDING..]
                .iter()
                .all(|s| !s.cancelled.is_cancelled())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn log_lines_are_bounded_per_window_and_the_rest_counted() {
        let limiter = LogLimiter::new(3, Duration::from_secs(10));
        let logged: Vec<Option<u64>> = (0..10).map(|_| limiter.admit()).collect();
        assert_eq!(&logged[..3], &[Some(0), Some(0), Some(0)]);
        assert!(logged[3..].iter().all(Option::is_none));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(limiter.admit(), Some(7), "the held-back count is said");
    }
}
