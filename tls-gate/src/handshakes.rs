//! Bounds on connections that have not authenticated yet: a stranger who
//! opens thousands of TCP connections and never finishes a handshake must
//! not use up the agent's file descriptors or drown its log, and the
//! authorised host must still get in, even when the stranger is another
//! process on the host itself (it shares the host's address).
//!
//! A real client speaks first, and at once: its TLS ClientHello follows its
//! connection in the same moment. So a connection is in one of three
//! stages, each bounded on its own: silent (no byte yet; at most
//! [`MAX_SILENT`] from anyone), partial (bytes, but not a whole ClientHello
//! yet; [`MAX_PARTIAL`], [`MAX_PARTIAL_PER_SOURCE`] from one source) and
//! past its ClientHello (the handshake under way; [`MAX_PENDING`],
//! [`MAX_PENDING_PER_SOURCE`] from one source). Past a bound the idlest
//! connection of that stage goes (the longest in it), of the same source
//! first; a connection is never closed to make room for one in an earlier
//! stage. A source is an IPv4 address or an IPv6 /64 (one host holds a
//! whole /64). So a flood, from whatever address, only ever closes what
//! idles in the stage it floods: the authorised host's connection passes
//! each stage in the moment its packets take, and is then the freshest of
//! the next. Descriptors stay bounded either way, and a newcomer always
//! gets its turn.

use noverlay_runtime::{lock, source_key};
use std::{
    collections::VecDeque,
    net::IpAddr,
    os::fd::RawFd,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Handshakes past their ClientHello, in all and from one source.
pub const MAX_PENDING: usize = 256;
pub const MAX_PENDING_PER_SOURCE: usize = 32;
/// Connections that have sent bytes but not a whole ClientHello yet.
pub const MAX_PARTIAL: usize = 64;
pub const MAX_PARTIAL_PER_SOURCE: usize = 16;
/// Connections that have not sent a byte yet, from all sources together.
pub const MAX_SILENT: usize = 384;

/// How far a connection got before authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Silent,
    Partial,
    PastHello,
}

impl Stage {
    /// The stage's bounds: in all, and from one source (None: no bound of
    /// its own per source).
    fn bounds(self) -> (usize, Option<usize>) {
        match self {
            Stage::Silent => (MAX_SILENT, None),
            Stage::Partial => (MAX_PARTIAL, Some(MAX_PARTIAL_PER_SOURCE)),
            Stage::PastHello => (MAX_PENDING, Some(MAX_PENDING_PER_SOURCE)),
        }
    }
}

struct Pending {
    id: u64,
    /// The source: an IPv4 address or an IPv6 /64.
    source: IpAddr,
    stage: Stage,
    /// When it entered its stage: the earliest is the idlest.
    since: Instant,
    /// Its socket, looked at for bytes before it is closed as silent (its
    /// handshake task may not have run yet). The slot can outlive the
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

/// Closes the idlest connection `pick` chooses, if any.
fn evict_idlest(pending: &mut VecDeque<Pending>, pick: impl Fn(&Pending) -> bool) {
    let idlest = pending
        .iter()
        .enumerate()
        .filter(|(_, p)| pick(p))
        .min_by_key(|(_, p)| (p.since, p.id))
        .map(|(i, _)| i);
    if let Some(gone) = idlest.and_then(|i| pending.remove(i)) {
        gone.cancel.cancel();
    }
}

/// Moves `id` on to `stage` (never back) and keeps that stage within its
/// bounds: past one, the idlest other connection in the stage goes, of the
/// same source first.
fn advance(pending: &mut VecDeque<Pending>, id: u64, stage: Stage) {
    let Some(source) = pending
        .iter_mut()
        .find(|p| p.id == id && p.stage != stage && p.stage != Stage::PastHello)
        .map(|p| {
            p.stage = stage;
            p.since = Instant::now();
            p.source
        })
    else {
        return;
    };
    let (in_all, per_source) = stage.bounds();
    let count = |same_source: bool| {
        pending
            .iter()
            .filter(|p| p.stage == stage && (!same_source || p.source == source))
            .count()
    };
    if per_source.is_some_and(|bound| count(true) > bound) {
        evict_idlest(pending, |p| {
            p.stage == stage && p.source == source && p.id != id
        });
    } else if count(false) > in_all {
        evict_idlest(pending, |p| p.stage == stage && p.id != id);
    }
}

impl PendingHandshakes {
    /// Admits a connection from `source` on `socket`, silent until it
    /// speaks ([`Slot::spoke`]); the idlest silent one is closed past
    /// [`MAX_SILENT`] (one whose bytes are waiting moves on instead).
    pub fn admit(&self, source: IpAddr, socket: Option<RawFd>) -> Slot {
        let mut guard = lock(&self.inner);
        let (next_id, pending) = &mut *guard;
        loop {
            let silent = pending.iter().filter(|p| p.stage == Stage::Silent).count();
            if silent < MAX_SILENT {
                break;
            }
            let Some(oldest) = pending.iter().find(|p| p.stage == Stage::Silent) else {
                break;
            };
            let (id, spoken) = (oldest.id, oldest.socket.is_some_and(has_sent_bytes));
            if spoken {
                advance(pending, id, Stage::Partial);
            } else {
                evict_idlest(pending, |p| p.id == id);
            }
        }
        let id = *next_id;
        *next_id += 1;
        let cancelled = CancellationToken::new();
        pending.push_back(Pending {
            id,
            source: source_key(source),
            stage: Stage::Silent,
            since: Instant::now(),
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
    /// The client sent its first bytes: out of the silent class.
    pub fn spoke(&self) {
        advance(&mut lock(&self.handshakes.inner).1, self.id, Stage::Partial);
    }

    /// The client's whole ClientHello was read: the handshake is under way.
    pub fn past_hello(&self) {
        advance(
            &mut lock(&self.handshakes.inner).1,
            self.id,
            Stage::PastHello,
        );
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
    fn a_flood_from_the_hosts_own_address_never_closes_its_handshake() {
        let handshakes = PendingHandshakes::default();
        let source: IpAddr = "127.0.0.1".parse().expect("ip");
        // The host's handshake, past its ClientHello.
        let host = speaker(&handshakes, source);
        host.past_hello();
        // Idle connections, and talkers that never finish a ClientHello,
        // from the same address, as many as they like.
        let silent: Vec<Slot> = (0..1500).map(|_| handshakes.admit(source, None)).collect();
        let partial: Vec<Slot> = (0..1500).map(|_| speaker(&handshakes, source)).collect();
        assert!(
            !host.cancelled.is_cancelled(),
            "the host's handshake was closed for connections that never sent a ClientHello"
        );
        let open = |slots: &[Slot]| slots.iter().filter(|s| !s.cancelled.is_cancelled()).count();
        // (The first talker's admission closed one idle connection.)
        assert_eq!(open(&silent), MAX_SILENT - 1);
        assert_eq!(open(&partial), MAX_PARTIAL_PER_SOURCE);
        // A fresh connection of the host's gets in past them all.
        let again = speaker(&handshakes, source);
        assert!(!again.cancelled.is_cancelled());
        again.past_hello();
        assert!(!again.cancelled.is_cancelled() && !host.cancelled.is_cancelled());
    }

    #[test]
    fn past_their_hello_the_idlest_of_a_source_goes_first() {
        let handshakes = PendingHandshakes::default();
        let source: IpAddr = "127.0.0.1".parse().expect("ip");
        let stalled: Vec<Slot> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| {
                let slot = speaker(&handshakes, source);
                slot.past_hello();
                slot
            })
            .collect();
        // The host's handshake reaches the stage last: the stalled one that
        // got there first goes, the host stays.
        let host = speaker(&handshakes, source);
        host.past_hello();
        assert!(!host.cancelled.is_cancelled());
        assert!(stalled[0].cancelled.is_cancelled());
        assert!(stalled[1..].iter().all(|s| !s.cancelled.is_cancelled()));
    }

    #[test]
    fn an_ipv6_host_is_one_source_whatever_address_of_its_slash_64_it_uses() {
        let handshakes = PendingHandshakes::default();
        let slots: Vec<Slot> = (0..100u16)
            .map(|i| {
                let ip = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i + 1]);
                let slot = speaker(&handshakes, ip);
                slot.past_hello();
                slot
            })
            .collect();
        let open = slots.iter().filter(|s| !s.cancelled.is_cancelled()).count();
        assert_eq!(open, MAX_PENDING_PER_SOURCE);
    }

    #[test]
    fn speakers_are_bounded_per_source_and_in_total() {
        let handshakes = PendingHandshakes::default();
        let one: IpAddr = "192.0.2.66".parse().expect("ip");
        let from_one: Vec<Slot> = (0..100)
            .map(|_| {
                let slot = speaker(&handshakes, one);
                slot.past_hello();
                slot
            })
            .collect();
        assert_eq!(handshakes.len(), MAX_PENDING_PER_SOURCE);
        assert!(
            from_one[100 - MAX_PENDING_PER_SOURCE..]
                .iter()
                .all(|s| !s.cancelled.is_cancelled())
        );
        drop(from_one);
        let slots: Vec<Slot> = (0..1000u32)
            .map(|i| {
                let slot = speaker(&handshakes, IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
                slot.past_hello();
                slot
            })
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
        // Partial hellos from many sources: their own bound in all.
        drop(slots);
        let partial: Vec<Slot> = (0..1000u32)
            .map(|i| speaker(&handshakes, IpAddr::from((0x0b00_0000 + i).to_be_bytes())))
            .collect();
        assert_eq!(handshakes.len(), MAX_PARTIAL);
        assert!(
            partial[1000 - MAX_PARTIAL..]
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
