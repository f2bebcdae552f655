//! Keeps the uplink guard converged: written before the first flow install,
//! rewritten when the masquerade subnets change, restored at once when
//! anyone else's nftables transaction (or a periodic check) finds it
//! missing or altered, left in place on exit (restarts are hitless), never
//! written over a same-named table that is not ours.

use crate::{
    GUARD_CHAIN, GUARD_MARK, GuardHub, GuardPlan, GuardState, errno_text, observe, rules, table_id,
    unix_now,
};
use noverlay_nft::{
    ChangeListener, Depth, NftError, Nftables, TableDump, Transaction, ownership,
    ownership::TableOwner,
};
use noverlay_runtime::systemd::Heartbeat;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// At most one warning about dropped packets per this long (the count of
/// the drops in between goes into the next one).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the operator needs to know when the kernel cannot run the guard.
pub const UNSUPPORTED: &str = "the kernel refused a netdev egress chain: the uplink guard needs Linux >= 5.16 built with CONFIG_NETFILTER_EGRESS; running without it";

/// Runs until `shutdown`, on the uplink the agent's state names (from the
/// config, or found in OVSDB). `settled` is told once the first attempt is
/// over (guard written, unsupported or failed), so that flows go on only
/// after the guard does.
pub async fn run_uplink_guard(
    handle: impl GuardHub,
    check_interval: Duration,
    heartbeat: Heartbeat,
    settled: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let nft = match Nftables::open() {
        Ok(nft) => nft,
        Err(e) => {
            // Without a netlink socket there is nothing to retry with.
            let error = format!("cannot open nftables: {e}; running without the uplink guard");
            tracing::error!("{error}");
            handle.update(|g| g.state = GuardState::Failed);
            handle.report(Err(error));
            let _ = settled.send(());
            return;
        }
    };
    let changes = Changes::default();
    if let Err(e) = noverlay_nft::watch_foreign_changes(nft.port(), changes.clone()) {
        tracing::warn!(error = %e, "cannot watch nftables; the guard is checked periodically only");
    }
    let _stop_watching = changes.close_on_drop();
    let wake = changes.notify.clone();
    keep_converged(
        handle,
        nft,
        wake,
        check_interval,
        heartbeat,
        settled,
        shutdown,
    )
    .await
}

/// The guard's table in the kernel: read (None when absent) and written.
/// nftables in the agent; a double in the tests of the loop's decisions.
pub trait GuardTable: Send + Sync + 'static {
    fn read(&self) -> impl Future<Output = Result<Option<TableDump>, NftError>> + Send;
    fn commit(&self, transaction: Transaction)
    -> impl Future<Output = Result<(), NftError>> + Send;
}

impl GuardTable for Nftables {
    async fn read(&self) -> Result<Option<TableDump>, NftError> {
        Nftables::read(self, &table_id(), Depth::ChainsAndRules).await
    }

    async fn commit(&self, transaction: Transaction) -> Result<(), NftError> {
        Nftables::commit(self, transaction).await
    }
}

/// The loop: once the uplink is known, converges, then waits for an offer
/// or uplink change, a wake-up (someone else's nftables change) or the
/// periodic check (every `check_interval`).
pub async fn keep_converged<T: GuardTable, H: GuardHub>(
    handle: H,
    table: T,
    wake: Arc<Notify>,
    check_interval: Duration,
    heartbeat: Heartbeat,
    settled: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut uplinks = handle.uplinks();
    // Configured, or found in OVSDB (with the ports, before any flow).
    let uplink = tokio::select! {
        _ = shutdown.cancelled() => return,
        found = uplinks.wait_for(Option::is_some) => found.ok().and_then(|name| name.clone()),
    };
    let Some(uplink) = uplink else { return };
    let mut guard = Guard::new(handle.clone(), table, uplink);
    let mut offers = handle.offers();
    let mut settled = Some(settled);
    let mut check = tokio::time::interval(check_interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = heartbeat.ticker();
    loop {
        if let Some(uplink) = uplinks.borrow_and_update().clone() {
            guard.follow_uplink(uplink);
        }
        guard.converge().await;
        if let Some(settled) = settled.take() {
            let _ = settled.send(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = offers.changed() => if changed.is_err() { return },
            changed = uplinks.changed() => if changed.is_err() { return },
            _ = wake.notified() => {}
            _ = check.tick() => {}
            _ = beat.tick() => heartbeat.beat(),
        }
    }
}

/// The guard's keeper: the table, what was last written, and the drop
/// accounting.
struct Guard<T, H> {
    handle: H,
    table: T,
    uplink: String,
    /// The plan last written or found in place; None until then.
    in_place: Option<GuardPlan>,
    unsupported: bool,
    /// The guard's packet counter as last read (it restarts at 0 when the
    /// table is rewritten).
    /// The counters (masquerade sources, destinations) as last accounted.
    last_counters: (u64, u64),
    unwarned_drops: (u64, u64),
    last_warning: Option<Instant>,
}

impl<T: GuardTable, H: GuardHub> Guard<T, H> {
    fn new(handle: H, table: T, uplink: String) -> Self {
        handle.update(|g| g.device = uplink.clone());
        Guard {
            handle,
            table,
            uplink,
            in_place: None,
            unsupported: false,
            last_counters: (0, 0),
            unwarned_drops: (0, 0),
            last_warning: None,
        }
    }

    /// Guards `uplink` from the next round on (the plan names the device, so
    /// a changed one is rewritten).
    fn follow_uplink(&mut self, uplink: String) {
        if uplink != self.uplink {
            tracing::info!(from = %self.uplink, to = %uplink, "the uplink changed; moving the guard");
            self.handle.update(|g| g.device = uplink.clone());
            self.uplink = uplink;
        }
    }

    /// One round: read the table, account its drops, rewrite it if it is
    /// not the plan (and is ours). Errors are recorded, and retried on the
    /// next round.
    async fn converge(&mut self) {
        if self.unsupported {
            return;
        }
        let plan = GuardPlan::new(&self.handle.offers().borrow().clone(), &self.uplink);
        let id = table_id();
        let dump = match self.table.read().await {
            Ok(dump) => dump,
            Err(e) => return self.fail(format!("read nft table {id}: {e}")),
        };
        if let TableOwner::Foreign(why) = ownership::owner(dump.as_ref(), GUARD_MARK, GUARD_CHAIN) {
            return self.fail(format!(
                "nft table {id} exists and is not ours ({why}); refusing to touch it, running without the uplink guard until it is removed"
            ));
        }
        let observed = observe(dump.as_ref());
        if plan.is_met_by(&observed) {
            if self.in_place.is_none() {
                tracing::info!(device = %plan.uplink, "uplink guard in place (kept from an earlier run)");
            }
            self.account(&observed);
            self.in_place = Some(plan.clone());
            return self.record(&plan, observed);
        }
        // Missing or altered: drops counted since the last read still count.
        if dump.is_some() {
            self.account(&observed);
        }
        let repair = self.in_place.as_ref() == Some(&plan);
        match self.write(&plan).await {
            Ok(()) => {}
            Err(e) if e.refused_with() == Some(libc_eopnotsupp()) => {
                self.unsupported = true;
                tracing::error!(device = %plan.uplink, "{UNSUPPORTED}");
                self.handle.update(|g| g.state = GuardState::Unsupported);
                self.handle.report(Err(format!(
                    "{UNSUPPORTED} ({})",
                    errno_text(libc_eopnotsupp())
                )));
                return;
            }
            Err(e) => {
                return self.fail(format!(
                    "write nft table {id} (egress of {:?}): {e}",
                    plan.uplink
                ));
            }
        }
        self.last_counters = (0, 0);
        if repair {
            tracing::warn!(device = %plan.uplink, "uplink guard was missing or altered; restored");
            self.handle.update(|g| {
                g.repairs += 1;
                g.last_repair_unix = unix_now();
            });
        } else {
            tracing::info!(device = %plan.uplink, subnets = ?plan.subnets, "uplink guard written");
        }
        self.in_place = Some(plan.clone());
        // What is reported is what the kernel has.
        match self.table.read().await {
            Ok(dump) => self.record(&plan, observe(dump.as_ref())),
            Err(e) => self.fail(format!("read nft table {id}: {e}")),
        }
    }

    async fn write(&self, plan: &GuardPlan) -> Result<(), NftError> {
        self.table.commit(rules::replace(plan)?).await
    }

    /// Counts new drops (masquerade sources and destinations apart) and
    /// warns about them, at most every [`WARN_EVERY`].
    fn account(&mut self, observed: &super::Observed) {
        let counters = (observed.dropped_packets, observed.to_masquerade_packets);
        let new = |now: u64, last: u64| now.checked_sub(last).unwrap_or(now);
        let sourced = new(counters.0, self.last_counters.0);
        let destined = new(counters.1, self.last_counters.1);
        self.last_counters = counters;
        if sourced == 0 && destined == 0 {
            return;
        }
        self.handle.update(|g| {
            g.dropped_packets_total += sourced;
            g.to_masquerade_packets_total += destined;
        });
        self.unwarned_drops.0 += sourced;
        self.unwarned_drops.1 += destined;
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            tracing::warn!(
                dropped = self.unwarned_drops.0,
                dropped_to_masquerade = self.unwarned_drops.1,
                device = %self.uplink,
                "the uplink guard dropped packets to or from a masquerade subnet: host traffic about to leave un-NATed, or replies to the host flooded towards the underlay (our flows were missing, or something else sends them out)"
            );
            self.unwarned_drops = (0, 0);
            self.last_warning = Some(Instant::now());
        }
    }

    fn record(&self, plan: &GuardPlan, observed: super::Observed) {
        self.handle.update(|g| {
            g.state = GuardState::On;
            g.subnets = plan.subnets.iter().map(ToString::to_string).collect();
            g.ruleset = observed.text;
            g.dropped_packets = observed.dropped_packets;
            g.dropped_bytes = observed.dropped_bytes;
            g.to_masquerade_packets = observed.to_masquerade_packets;
            g.to_masquerade_bytes = observed.to_masquerade_bytes;
        });
        self.handle.report(Ok(()));
    }

    fn fail(&self, error: String) {
        // Retried every round: logged when it begins or changes.
        if self.handle.reported_error().as_deref() != Some(error.as_str()) {
            tracing::error!(error = %error, "uplink guard");
        }
        self.handle.update(|g| g.state = GuardState::Failed);
        self.handle.report(Err(error));
    }
}

fn libc_eopnotsupp() -> i32 {
    noverlay_nft::nftnl::nftnl_sys::libc::EOPNOTSUPP
}

/// nftables changes by others, as a wake-up; closed when the guard ends.
#[derive(Clone, Default)]
struct Changes {
    notify: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

impl Changes {
    fn close_on_drop(&self) -> CloseOnDrop {
        CloseOnDrop(self.closed.clone())
    }
}

impl ChangeListener for Changes {
    fn foreign_change(&self) {
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

struct CloseOnDrop(Arc<AtomicBool>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Removes the guard's table if it is ours (absent is fine); a same-named
/// table of someone else's is an error and stays.
pub async fn remove() -> Result<(), String> {
    let id = table_id();
    let nft = Nftables::open().map_err(|e| format!("cannot open nftables: {e}"))?;
    let dump = nft
        .read(&id, Depth::Chains)
        .await
        .map_err(|e| format!("read nft table {id}: {e}"))?;
    match ownership::owner(dump.as_ref(), GUARD_MARK, GUARD_CHAIN) {
        TableOwner::Absent => Ok(()),
        TableOwner::Foreign(why) => {
            Err(format!("nft table {id} is not ours ({why}); left in place"))
        }
        TableOwner::Ours => {
            let delete = rules::delete().map_err(|e| e.to_string())?;
            nft.commit(delete)
                .await
                .map_err(|e| format!("delete nft table {id}: {e}"))
        }
    }
}
