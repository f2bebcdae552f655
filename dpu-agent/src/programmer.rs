//! Keeps the gateway bridge's flows equal to the plan: installs on every
//! offer or port change, verifies on every flow change OVS reports (and on a
//! slow timer), and restores flows that were wiped or altered.
//!
//! Every read is of the whole bridge: our flows (by cookie) are checked
//! against what we installed, and everyone else's decide which of our
//! planned flows go on at all ([`coexist::place`]): a flow of another
//! cookie is never overwritten or deleted.

use crate::{
    coexist::{self, ForeignFlow, Placement},
    flows::{Flow, MatchKey},
    state::{AgentHandle, Source},
    switch::{FlowIdentity, FlowSwitch, ReadFlow, SwitchError},
    twins::{Contested, TwinChecks},
};
use noverlay_runtime::{logging::Repeats, systemd::Heartbeat};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The bridge as last read: our flows (with counters) and everyone else's.
struct Bridge {
    ours: Vec<ReadFlow>,
    foreign: Vec<ForeignFlow>,
}

/// Reads the whole bridge and splits it by cookie. Only other controllers'
/// flows are turned into text (to be placed next to); ours stay as read.
async fn read_bridge<S: FlowSwitch>(switch: &S, cookie: u64) -> Result<Bridge, String> {
    let read = switch.dump().await.map_err(|e| e.to_string())?;
    let (ours, others): (Vec<ReadFlow>, Vec<ReadFlow>) =
        read.into_iter().partition(|flow| flow.cookie() == cookie);
    Ok(Bridge {
        ours,
        foreign: others.iter().filter_map(ReadFlow::as_foreign).collect(),
    })
}

/// Runs until `shutdown`: follows the agent's offer and port map and keeps
/// exactly our cookie's flows on the bridge. Flows with other cookies are
/// never touched: every write is a bundle scoped to our cookie, and no flow
/// of ours has another controller's table, priority and match.
pub async fn run_flow_programmer<S: FlowSwitch>(
    handle: AgentHandle,
    switch: S,
    verify_interval: Duration,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) {
    let mut beat = heartbeat.ticker();
    let (mut offers, mut ports) = handle.subscribe();
    let mut host_view = handle.watch_host_view();
    let mut changes = switch.watch();
    let mut verify = tokio::time::interval(verify_interval);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let settings = handle.flow_settings();
    let cookie = settings.cookie;
    // The flows last installed and how OVS reported them back.
    let mut installed: Option<Installed> = None;
    // Everyone else's flows as last read; None until the bridge was read.
    let mut foreign: Option<Vec<ForeignFlow>> = None;
    // Our flows were found wiped or altered: reinstall and count a repair.
    let mut restore = false;
    // When the check that found them wiped began.
    let mut wiped_at: Option<std::time::Instant> = None;
    // The last install failed: try again on the next wake-up.
    let mut retry = false;
    // A switch that keeps failing the same way is logged once a minute.
    let mut failing = Repeats::default();
    // Which planned flows each install probes for a twin written meanwhile;
    // the flow whose probe was refused, until the bridge is read again.
    let mut checks = TwinChecks::default();
    let mut contested: Option<MatchKey> = None;
    // Go round again at once (the bridge is read afresh), without waiting.
    let mut again = false;
    loop {
        if let Some(plan) = handle.desired_flows() {
            if foreign.is_none() {
                match read_bridge(&switch, cookie).await {
                    Ok(bridge) => foreign = Some(bridge.foreign),
                    Err(e) => {
                        handle.set_source(Source::Flows, Err(e));
                        retry = true;
                    }
                }
            }
            if let Some(others) = &foreign {
                let placement = coexist::place(&plan, others, settings.base_pipeline, cookie);
                handle.set_sharing(&placement);
                checks.read(others);
                if checks.settle(contested.take().as_ref(), &placement.install) {
                    tracing::warn!(
                        unprobed = checks.unprobed(),
                        "the flow that refused our probe is no twin (it overlaps ours at the same priority); ours goes on without a probe"
                    );
                }
                let want = &placement.install;
                let stale = installed.as_ref().is_none_or(|have| &have.plan != want);
                if stale || restore || retry {
                    let restoring = Restoring {
                        pending: &mut restore,
                        wiped_at: &mut wiped_at,
                    };
                    let attempt = install(&handle, &switch, &placement, cookie, &checks, restoring);
                    match attempt.await {
                        Err(SwitchError::Contested { found, .. }) => {
                            tracing::warn!(
                                found = %found.describe(cookie),
                                "another controller wrote a flow overlapping ours after the bridge was read; nothing installed, reading again"
                            );
                            handle.count_contested_install();
                            if let Contested::Flow(flow) = found {
                                contested = Some(flow.match_key());
                            }
                            foreign = None;
                            again = true;
                            retry = true;
                        }
                        Err(e) => {
                            if let Some(suppressed) = failing.due(&e.to_string()) {
                                tracing::error!(error = %e, suppressed, "installing flows failed; will retry");
                            }
                            retry = true;
                        }
                        Ok(Some((done, others))) => {
                            failing.clear();
                            installed = Some(done);
                            // A twin that appeared meanwhile changes the
                            // placement: the next round sees it.
                            foreign = Some(others);
                            retry = false;
                        }
                        Ok(None) => retry = true,
                    }
                }
            }
        }
        if std::mem::take(&mut again) {
            continue;
        }
        let check = tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = offers.changed() => if changed.is_err() { return } else { false },
            changed = ports.changed() => if changed.is_err() { return } else { false },
            changed = host_view.changed() => if changed.is_err() { return } else { false },
            Some(()) = changes.recv() => {
                // Check at once: a bundle's events come after its commit,
                // so what is queued already is the same change.
                while changes.try_recv().is_ok() {}
                true
            }
            _ = verify.tick() => true,
            _ = beat.tick() => {
                heartbeat.beat();
                false
            }
        };
        if check {
            let checked_at = std::time::Instant::now();
            match read_bridge(&switch, cookie).await {
                Ok(bridge) => {
                    if let Some(expected) = &installed
                        && drifted(&handle, bridge.ours, expected)
                    {
                        restore = true;
                        wiped_at.get_or_insert(checked_at);
                    }
                    foreign = Some(bridge.foreign);
                }
                Err(e) => {
                    // The switch is unreachable (restarting?): restore when it is back.
                    if let Some(suppressed) = failing.due(&e) {
                        tracing::warn!(error = %e, suppressed, "cannot read flows");
                    }
                    handle.set_source(Source::Flows, Err(e));
                    restore = true;
                }
            }
        }
    }
}

/// How many times an install is retried at once when what OVS reports
/// back does not have the shape of the plan.
const INSTALL_ATTEMPTS: usize = 3;

/// What was installed last: the plan and our flows as OVS reported them
/// back (the reference later reads are compared against).
struct Installed {
    plan: Vec<Flow>,
    /// Sorted by identity.
    read_back: Vec<ReadFlow>,
}

/// A restore the next install completes: counted (once) as soon as its
/// bundle is committed, since from then on the flows are on the bridge,
/// even if the read-back that follows fails and the install is retried.
struct Restoring<'a> {
    pending: &'a mut bool,
    /// When the check that found the flows wiped began.
    wiped_at: &'a mut Option<std::time::Instant>,
}

/// Installs the placement's flows and learns how OVS reports them back.
/// The read-back is trusted only if it has the plan's shape, so that a
/// flow someone adds in between is never learned as ours. Returns what was
/// installed and everyone else's flows as read back, or None (with the
/// error recorded) to retry later; Err when the switch refused the install
/// (recorded too; the caller logs it).
async fn install<S: FlowSwitch>(
    handle: &AgentHandle,
    switch: &S,
    placement: &Placement,
    cookie: u64,
    checks: &TwinChecks,
    restoring: Restoring<'_>,
) -> Result<Option<(Installed, Vec<ForeignFlow>)>, SwitchError> {
    let want = &placement.install;
    let mut planned_shape: Vec<(u8, u16)> = want.iter().map(|f| (f.table, f.priority)).collect();
    planned_shape.sort_unstable();
    for attempt in 1..=INSTALL_ATTEMPTS {
        if let Err(e) = switch.replace(want, cookie, checks).await {
            handle.set_source(Source::Flows, Err(e.to_string()));
            return Err(e);
        }
        if std::mem::take(restoring.pending) {
            let took = restoring.wiped_at.take().map(|at| at.elapsed());
            if let Some(took) = took {
                handle.observe_restore(took);
            }
            handle.count_flow_repair();
            tracing::warn!(took = ?took, "flows restored");
        }
        let bridge = match read_bridge(switch, cookie).await {
            Ok(bridge) => bridge,
            Err(e) => {
                handle.set_source(Source::Flows, Err(e));
                return Ok(None);
            }
        };
        let mut shape: Vec<(u8, u16)> = bridge
            .ours
            .iter()
            .map(ReadFlow::table_and_priority)
            .collect();
        shape.sort_unstable();
        if shape == planned_shape {
            if attempt > 1 {
                // Someone changed our flows while we installed them.
                handle.count_flow_repair();
            }
            tracing::info!(
                flows = bridge.ours.len(),
                provided_by_others = placement.provided.len(),
                conflicts = placement.conflicts.len(),
                "flows installed"
            );
            handle.set_source(Source::Flows, flows_outcome(placement));
            handle.set_installed_flows(bridge.ours.clone());
            let mut read_back = bridge.ours;
            read_back.sort_by(|a, b| a.identity().cmp(&b.identity()));
            let installed = Installed {
                plan: want.to_vec(),
                read_back,
            };
            return Ok(Some((installed, bridge.foreign)));
        }
        tracing::warn!(
            attempt,
            found = bridge.ours.len(),
            planned = want.len(),
            "flows read back differ from the plan (changed meanwhile?); reinstalling"
        );
    }
    handle.set_source(
        Source::Flows,
        Err(format!(
            "flows read back from the bridge kept differing from the {} planned",
            want.len()
        )),
    );
    Ok(None)
}

/// The flows source is failing while a planned flow conflicts with another
/// controller's (it is not installed: its traffic is not ours to steer).
fn flows_outcome(placement: &Placement) -> Result<(), String> {
    match placement.conflicts.as_slice() {
        [] => Ok(()),
        conflicts => Err(format!(
            "{} planned flow(s) not installed: another controller's flow has the same table, priority and match but other actions: {}{}",
            conflicts.len(),
            conflicts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            match placement.withheld.len() {
                0 => String::new(),
                n => format!(
                    "; {n} more left out: the other flow of their lookup/path pair (both or neither)"
                ),
            }
        )),
    }
}

/// A flow set's identities (no counters), sorted: equal for the same flows
/// read twice, whatever order the switch lists them in.
fn fingerprint(flows: &[ReadFlow]) -> Vec<FlowIdentity<'_>> {
    let mut identities: Vec<FlowIdentity<'_>> = flows.iter().map(ReadFlow::identity).collect();
    identities.sort_unstable();
    identities
}

/// True when our flows on the bridge differ from what we installed (wiped
/// by a restart or a neighbour's rewrite, replaced by someone else).
fn drifted(handle: &AgentHandle, ours: Vec<ReadFlow>, expected: &Installed) -> bool {
    let unchanged = fingerprint(&ours)
        .into_iter()
        .eq(expected.read_back.iter().map(ReadFlow::identity));
    if unchanged {
        handle.set_installed_flows(ours);
        return false;
    }
    tracing::warn!(
        found = ours.len(),
        expected = expected.read_back.len(),
        "our flows were changed or wiped; restoring"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use noverlay_openflow::reply::FlowStats;

    fn native(packets: u64, priority: u16, instructions: &[u8]) -> ReadFlow {
        ReadFlow(FlowStats {
            table: 0,
            priority,
            cookie: 7,
            packets,
            bytes: packets * 98,
            match_fields: vec![0x80, 0, 0, 4, 0, 0, 0, 1],
            instructions: instructions.to_vec(),
        })
    }

    #[test]
    fn a_native_read_compares_without_counters_or_order_but_sees_any_byte_change() {
        let installed = [native(0, 510, &[1, 2]), native(0, 50, &[3])];
        let later = [native(9, 50, &[3]), native(42, 510, &[1, 2])];
        assert_eq!(fingerprint(&installed), fingerprint(&later));
        let altered = [native(9, 50, &[3]), native(42, 510, &[1, 3])];
        assert_ne!(fingerprint(&installed), fingerprint(&altered));
        assert_ne!(fingerprint(&installed), fingerprint(&later[..1]));
    }
}
