//! Bounds on connections that have not authenticated yet: a stranger who
//! opens thousands of TCP connections and never finishes a handshake must
//! not use up the agent's file descriptors or drown its log, and the
//! authorised host must still get in.
//!
//! A real client speaks first: its TLS hello follows its connection at
//! once. So connections are held in two classes. Silent ones (no byte yet)
//! are at most [`MAX_SILENT`], from anyone; past it the oldest silent one
//! is closed. Those that have spoken are at most [`MAX_PENDING`] handshakes,
//! [`MAX_PENDING_PER_SOURCE`] from one address; past either bound the
//! oldest of them (of the same source first) is closed. An idle flood,
//! however fast and from whatever address (another process on the host
//! shares the host's), only ever closes idle connections: the authorised
//! host's connection is silent for the moment its hello takes to arrive,
//! then out of the flood's reach. Descriptors stay bounded either way, and
//! a newcomer always gets its turn.

use noverlay_runtime::lock;
use std::{
    collections::VecDeque,
    net::IpAddr,
    os::fd::RawFd,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const MAX_PENDING: usize = 256;
pub const MAX_PENDING_PER_SOURCE: usize = 32;
/// Connections that have not sent a byte yet, from all sources together.
pub const MAX_SILENT: usize = 384;

struct Pending {
    id: u64,
    source: IpAddr,
    /// The client has sent its first bytes.
    spoke: bool,
    /// Its socket, looked at for those bytes before it is closed as silent
    /// (its handshake task may not have run yet). The slot can outlive the
    /// socket by a moment; a descriptor reused meanwhile only misleads one
    /// choice of which silent connection to close.
    socket: Option<RawFd>,
    cancel: CancellationToken,
}

/// Whether bytes from the client wait on `socket`, without reading them or
/// waiting.
pub fn has_sent_bytes(socket: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv into one valid byte, with MSG_PEEK (nothing consumed)
    // and MSG_DONTWAIT (never blocks); a closed descriptor is an error.
    let n = unsafe {
        libc::recv(
            socket,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// The connections not authenticated yet, oldest first.
#[derive(Clone, Default)]
pub struct PendingHandshakes {
    inner: Arc<Mutex<(u64, VecDeque<Pending>)>>,
}

/// One admitted connection; dropping it (done, failed or timed out) frees
/// its slot. `cancelled` resolves when it was closed to make room.
pub struct Slot {
    handshakes: PendingHandshakes,
    id: u64,
    pub cancelled: CancellationToken,
}

/// Closes the oldest connection `pick` chooses, if any.
fn evict_oldest(pending: &mut VecDeque<Pending>, pick: impl Fn(&Pending) -> bool) {
    if let Some(oldest) = pending
        .iter()
        .position(pick)
        .and_then(|i| pending.remove(i))
    {
        oldest.cancel.cancel();
    }
}

/// Counts `id` as having spoken and keeps the speakers within bounds.
fn promote(pending: &mut VecDeque<Pending>, id: u64) {
    let Some(source) = pending
        .iter_mut()
        .find(|p| p.id == id && !p.spoke)
        .map(|p| {
            p.spoke = true;
            p.source
        })
    else {
        return;
    };
    let speakers = |same: bool| {
        pending
            .iter()
            .filter(|p| p.spoke && (!same || p.source == source))
            .count()
    };
    if speakers(true) > MAX_PENDING_PER_SOURCE {
        evict_oldest(pending, |p| p.spoke && p.source == source && p.id != id);
    } else if speakers(false) > MAX_PENDING {
        evict_oldest(pending, |p| p.spoke && p.id != id);
    }
}

impl PendingHandshakes {
    /// Admits a connection from `source` on `socket`, silent until it
    /// speaks ([`Slot::spoke`]); the oldest silent one is closed past
    /// [`MAX_SILENT`] (one whose bytes are waiting is counted as speaking
    /// instead).
    pub fn admit(&self, source: IpAddr, socket: Option<RawFd>) -> Slot {
        let mut guard = lock(&self.inner);
        let (next_id, pending) = &mut *guard;
        loop {
            let silent = pending.iter().filter(|p| !p.spoke).count();
            if silent < MAX_SILENT {
                break;
            }
            let Some(oldest) = pending.iter().find(|p| !p.spoke) else {
                break;
            };
            let (id, spoken) = (oldest.id, oldest.socket.is_some_and(has_sent_bytes));
            if spoken {
                promote(pending, id);
            } else {
                evict_oldest(pending, |p| p.id == id);
            }
        }
        let id = *next_id;
        *next_id += 1;
        let cancelled = CancellationToken::new();
        pending.push_back(Pending {
            id,
            source,
            spoke: false,
            socket,
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

impl Slot {
    /// The client sent its first bytes: out of the silent class, into the
    /// bounded handshakes (which may close the oldest of them).
    pub fn spoke(&self) {
        promote(&mut lock(&self.handshakes.inner).1, self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.handshakes.inner).1.retain(|p| p.id != self.id);
    }
}

/// Connections refused before they authenticated, by why, between two
/// summaries: a flood is logged as a rate (one line per window), not as a
/// line per connection.
#[derive(Default)]
pub struct RefusalTally {
    counts: Mutex<[u64; 3]>,
}

/// Why a connection was refused before it authenticated.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// A newer connection took its slot.
    Evicted = 0,
    /// Its TLS handshake failed (no or a wrong certificate, not TLS).
    Failed = 1,
    /// It did not finish its handshake in time.
    TimedOut = 2,
}

impl RefusalTally {
    pub fn count(&self, why: Refusal) {
        lock(&self.counts)[why as usize] += 1;
    }

    /// The counts since the last call (evicted, failed, timed out), reset.
    pub fn take(&self) -> [u64; 3] {
        std::mem::take(&mut *lock(&self.counts))
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

    /// Admitted from `source`, and spoken.
    fn speaker(handshakes: &PendingHandshakes, source: IpAddr) -> Slot {
        let slot = handshakes.admit(source, None);
        slot.spoke();
        slot
    }

    #[test]
    fn an_idle_flood_is_held_to_the_silent_bound_and_a_newcomer_gets_in() {
        let handshakes = PendingHandshakes::default();
        let attacker: IpAddr = "192.0.2.66".parse().expect("ip");
        let host: IpAddr = "192.0.2.1".parse().expect("ip");
        let flood: Vec<Slot> = (0..1500)
            .map(|_| handshakes.admit(attacker, None))
            .collect();
        assert_eq!(handshakes.len(), MAX_SILENT);
        let evicted = flood.iter().filter(|s| s.cancelled.is_cancelled()).count();
        assert_eq!(evicted, 1500 - MAX_SILENT);
        let slot = speaker(&handshakes, host);
        assert!(!slot.cancelled.is_cancelled());
        drop(flood);
        assert_eq!(handshakes.len(), 1, "finished handshakes free their slots");
    }

    #[test]
    fn an_idle_flood_never_closes_a_handshake_under_way_even_from_its_address() {
        let handshakes = PendingHandshakes::default();
        let source: IpAddr = "127.0.0.1".parse().expect("ip");
        let host = speaker(&handshakes, source);
        let flood: Vec<Slot> = (0..1500).map(|_| handshakes.admit(source, None)).collect();
        assert!(
            !host.cancelled.is_cancelled(),
            "the host's handshake was closed"
        );
        assert_eq!(
            flood.iter().filter(|s| !s.cancelled.is_cancelled()).count(),
            MAX_SILENT
        );
        // Talkers from the same address: the oldest speaker (the host) goes.
        let talkers: Vec<Slot> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| speaker(&handshakes, source))
            .collect();
        assert!(host.cancelled.is_cancelled());
        assert!(talkers.iter().all(|s| !s.cancelled.is_cancelled()));
    }

    #[test]
    fn speakers_are_bounded_per_source_and_in_total() {
        let handshakes = PendingHandshakes::default();
        let one: IpAddr = "192.0.2.66".parse().expect("ip");
        let from_one: Vec<Slot> = (0..100).map(|_| speaker(&handshakes, one)).collect();
        assert_eq!(handshakes.len(), MAX_PENDING_PER_SOURCE);
        assert!(
            from_one[100 - MAX_PENDING_PER_SOURCE..]
                .iter()
                .all(|s| !s.cancelled.is_cancelled())
        );
        drop(from_one);
        let slots: Vec<Slot> = (0..1000u32)
            .map(|i| speaker(&handshakes, IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
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

    #[test]
    fn refusals_are_tallied_by_why_and_reset_when_taken() {
        let tally = RefusalTally::default();
        for why in [Refusal::Evicted, Refusal::Evicted, Refusal::TimedOut] {
            tally.count(why);
        }
        assert_eq!(tally.take(), [2, 0, 1]);
        assert_eq!(tally.take(), [0, 0, 0]);
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
