//! Routes of ours that another writer took: once a key (destination and
//! metric in the main table) has held our route, it is ours by contract,
//! so a foreign route found there later is replaced by ours at once. (A
//! foreign route that held the key before ours ever did is someone else's,
//! and is left alone.) A writer that
//! keeps taking the same key back is not fought at netlink speed: after
//! [`FIGHT_TAKEBACKS`] take-backs within [`FIGHT_WINDOW`] we hold off,
//! doubling the pause up to [`MAX_HOLD_OFF`], and report the conflict.
//! Pure bookkeeping: time comes in as an argument.

use ipnet::IpNet;
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};
use tokio::time::Instant;

/// Take-backs of one key within [`FIGHT_WINDOW`] that make it a fight.
pub const FIGHT_TAKEBACKS: usize = 3;
pub const FIGHT_WINDOW: Duration = Duration::from_secs(10);
/// The first pause once a key is fought over, and the longest.
pub const FIRST_HOLD_OFF: Duration = Duration::from_secs(1);
pub const MAX_HOLD_OFF: Duration = Duration::from_secs(60);

/// One key someone else wrote over.
#[derive(Debug, Clone)]
struct Contest {
    /// When we took it back, the last few times (newest last).
    takebacks: Vec<Instant>,
    total: u64,
    /// While fought over: no take-back before this, and the pause after.
    hold_off_until: Option<Instant>,
    hold_off: Duration,
    /// The other writer's route as the kernel showed it last.
    theirs: String,
}

/// What to do now about a foreign route at one of our keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    TakeBack,
    /// Fought over: leave it until then.
    HoldOff(Instant),
}

/// The keys other writers took, and our answers.
#[derive(Debug, Default)]
pub struct Contests {
    keys: HashMap<IpNet, Contest>,
    /// Keys that have held our route (written or adopted by this agent).
    owned: HashSet<IpNet>,
    takebacks_total: u64,
}

impl Contests {
    /// The key `dst` holds our route now.
    pub fn own(&mut self, dst: IpNet) {
        self.owned.insert(dst);
    }

    /// Whether the key `dst` has held our route: a foreign route there now
    /// took it from us.
    pub fn owns(&self, dst: &IpNet) -> bool {
        self.owned.contains(dst)
    }

    /// A foreign route (`theirs`, as `ip route` shows it) sits at our key
    /// `dst`: take it back now, or hold off while the fight lasts.
    pub fn decide(&mut self, dst: IpNet, theirs: String, now: Instant) -> Decision {
        let contest = self.keys.entry(dst).or_insert_with(|| Contest {
            takebacks: Vec::new(),
            total: 0,
            hold_off_until: None,
            hold_off: FIRST_HOLD_OFF,
            theirs: String::new(),
        });
        contest.theirs = theirs;
        if let Some(until) = contest.hold_off_until
            && now < until
        {
            return Decision::HoldOff(until);
        }
        contest
            .takebacks
            .retain(|at| now.duration_since(*at) < FIGHT_WINDOW);
        if contest.takebacks.len() >= FIGHT_TAKEBACKS {
            // Fought over: pause, longer each time the fight goes on.
            let until = now + contest.hold_off;
            contest.hold_off = (contest.hold_off * 2).min(MAX_HOLD_OFF);
            contest.hold_off_until = Some(until);
            contest.takebacks.clear();
            return Decision::HoldOff(until);
        }
        contest.hold_off_until = None;
        contest.takebacks.push(now);
        contest.total += 1;
        self.takebacks_total += 1;
        Decision::TakeBack
    }

    /// Our route is at `dst` and in place: a key quiet for a whole
    /// [`FIGHT_WINDOW`] since our last take-back is no longer contested.
    pub fn settled(&mut self, dst: &IpNet, now: Instant) {
        let quiet = self.keys.get(dst).is_some_and(|c| {
            c.hold_off_until.is_none()
                && c.takebacks
                    .last()
                    .is_none_or(|at| now.duration_since(*at) >= FIGHT_WINDOW)
        });
        if quiet {
            self.keys.remove(dst);
        }
    }

    /// Keys no longer planned are forgotten.
    pub fn retain_planned(&mut self, planned: &[IpNet]) {
        let planned: std::collections::HashSet<&IpNet> = planned.iter().collect();
        self.keys.retain(|dst, _| planned.contains(dst));
        self.owned.retain(|dst| planned.contains(dst));
    }

    /// The keys held off now, for status: what the other writer has there
    /// and how often we took it back.
    pub fn conflicts(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<(IpNet, String)> = self
            .keys
            .iter()
            .filter_map(|(dst, c)| {
                let until = c.hold_off_until.filter(|until| now < *until)?;
                Some((
                    *dst,
                    format!(
                        "{dst}: another writer keeps replacing our route ({}); taken back {} times, holding off for {:?}",
                        c.theirs,
                        c.total,
                        until.duration_since(now)
                    ),
                ))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, text)| text).collect()
    }

    /// The soonest a held-off key may be taken back.
    pub fn next_retry(&self) -> Option<Instant> {
        self.keys.values().filter_map(|c| c.hold_off_until).min()
    }

    pub fn takebacks_total(&self) -> u64 {
        self.takebacks_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IpNet {
        "198.19.0.0/17".parse().expect("net")
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_overwrite_is_taken_back_and_a_fight_is_held_off_longer_each_time() {
        let mut contests = Contests::default();
        let theirs = || "198.19.0.0/17 via 198.19.1.1 dev ovn-k8s-mp0 proto 3".to_string();
        assert_eq!(
            contests.decide(key(), theirs(), Instant::now()),
            Decision::TakeBack
        );
        assert!(contests.conflicts(Instant::now()).is_empty());
        // Taken again and again, at netlink speed.
        for _ in 1..FIGHT_TAKEBACKS {
            tokio::time::advance(Duration::from_millis(5)).await;
            assert_eq!(
                contests.decide(key(), theirs(), Instant::now()),
                Decision::TakeBack
            );
        }
        tokio::time::advance(Duration::from_millis(5)).await;
        let now = Instant::now();
        assert_eq!(
            contests.decide(key(), theirs(), now),
            Decision::HoldOff(now + FIRST_HOLD_OFF)
        );
        assert_eq!(contests.next_retry(), Some(now + FIRST_HOLD_OFF));
        let conflicts = contests.conflicts(now);
        assert_eq!(conflicts.len(), 1);
        assert!(
            conflicts[0].contains("dev ovn-k8s-mp0 proto 3"),
            "{conflicts:?}"
        );
        assert!(conflicts[0].contains(&format!("taken back {FIGHT_TAKEBACKS} times")));
        // After the pause: one more try; the fight goes on, the pause doubles.
        tokio::time::advance(FIRST_HOLD_OFF).await;
        for _ in 0..FIGHT_TAKEBACKS {
            assert_eq!(
                contests.decide(key(), theirs(), Instant::now()),
                Decision::TakeBack
            );
        }
        let now = Instant::now();
        assert_eq!(
            contests.decide(key(), theirs(), now),
            Decision::HoldOff(now + FIRST_HOLD_OFF * 2)
        );
        assert_eq!(contests.takebacks_total(), 2 * FIGHT_TAKEBACKS as u64);
    }

    #[test]
    fn only_keys_that_held_our_route_are_ours() {
        let mut contests = Contests::default();
        assert!(!contests.owns(&key()));
        contests.own(key());
        assert!(contests.owns(&key()));
        contests.retain_planned(&[]);
        assert!(!contests.owns(&key()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_left_alone_long_enough_is_forgotten() {
        let mut contests = Contests::default();
        assert_eq!(
            contests.decide(key(), "x".into(), Instant::now()),
            Decision::TakeBack
        );
        contests.settled(&key(), Instant::now());
        assert!(contests.keys.contains_key(&key()), "too soon to forget");
        tokio::time::advance(FIGHT_WINDOW).await;
        contests.settled(&key(), Instant::now());
        assert!(contests.keys.is_empty());
        assert_eq!(contests.next_retry(), None);
    }
}
