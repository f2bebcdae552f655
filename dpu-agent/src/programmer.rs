//! Keeps the gateway bridge's flows equal to the plan: installs on every
//! offer or port change, verifies on every flow change OVS reports (and on a
//! slow timer), and restores flows that were wiped or altered.

use crate::{
    flows::{self, Flow},
    openflow::{FlowSwitch, table_and_priority, without_counters},
    state::{AgentHandle, Source},
};
use noverlay_runtime::systemd::Heartbeat;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`: follows the agent's offer and port map and keeps
/// exactly our cookie's flows on the bridge. Flows with other cookies are
/// never touched: every write is a bundle scoped to our cookie.
pub async fn run_flow_programmer<S: FlowSwitch>(
    handle: AgentHandle,
    switch: S,
    verify_interval: Duration,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) {
    let mut beat = heartbeat.ticker();
    let (mut offers, mut ports) = handle.subscribe();
    let mut changes = switch.watch();
    let mut verify = tokio::time::interval(verify_interval);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cookie = handle.flow_settings().cookie;
    // The plan last installed and how OVS rendered it (no counters, sorted).
    let mut installed: Option<(Vec<Flow>, Vec<String>)> = None;
    // Our flows were found wiped or altered: reinstall and count a repair.
    let mut restore = false;
    // The last install failed: try again on the next wake-up.
    let mut retry = false;
    loop {
        if let Some(want) = handle.desired_flows() {
            let stale = installed.as_ref().is_none_or(|(have, _)| *have != want);
            if stale || restore || retry {
                match install(&handle, &switch, &want, cookie).await {
                    Some(done) => {
                        if restore {
                            handle.count_flow_repair();
                            tracing::warn!("flows restored");
                        }
                        installed = Some(done);
                        restore = false;
                        retry = false;
                    }
                    None => retry = true,
                }
            }
        }
        let check = tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = offers.changed() => if changed.is_err() { return } else { false },
            changed = ports.changed() => if changed.is_err() { return } else { false },
            Some(()) = changes.recv() => {
                // Let a burst of flow events (a whole bundle) settle.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while changes.try_recv().is_ok() {}
                true
            }
            _ = verify.tick() => true,
            _ = beat.tick() => {
                heartbeat.beat();
                false
            }
        };
        if check && let Some((_, expected)) = &installed {
            restore |= flows_drifted(&handle, &switch, cookie, expected).await;
        }
    }
}

/// How many times an install is retried at once when what OVS reports
/// back does not have the shape of the plan.
const INSTALL_ATTEMPTS: usize = 3;

/// Installs `want` and learns how OVS renders it (the fingerprint later
/// verifications compare against). The read-back is trusted only if it has
/// the plan's shape, so that a flow someone adds in between is never learned
/// as ours. Returns None (with the error recorded) to retry later.
async fn install<S: FlowSwitch>(
    handle: &AgentHandle,
    switch: &S,
    want: &[Flow],
    cookie: u64,
) -> Option<(Vec<Flow>, Vec<String>)> {
    let bundle = flows::render_bundle(want, cookie);
    let mut planned_shape: Vec<(u8, u16)> = want.iter().map(|f| (f.table, f.priority)).collect();
    planned_shape.sort_unstable();
    for attempt in 1..=INSTALL_ATTEMPTS {
        if let Err(e) = switch.replace(&bundle).await {
            tracing::error!(error = %e, "installing flows failed; will retry");
            handle.set_source(Source::Flows, Err(e.to_string()));
            return None;
        }
        let dumped = match switch.dump(cookie).await {
            Ok(dumped) => dumped,
            Err(e) => {
                handle.set_source(Source::Flows, Err(e.to_string()));
                return None;
            }
        };
        let mut shape: Vec<(u8, u16)> = dumped.iter().map(|f| table_and_priority(f)).collect();
        shape.sort_unstable();
        if shape == planned_shape {
            if attempt > 1 {
                // Someone changed our flows while we installed them.
                handle.count_flow_repair();
            }
            tracing::info!(flows = dumped.len(), "flows installed");
            handle.set_source(Source::Flows, Ok(()));
            let fingerprint = fingerprint(&dumped);
            handle.set_installed_flows(dumped);
            return Some((want.to_vec(), fingerprint));
        }
        tracing::warn!(
            attempt,
            found = dumped.len(),
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
    None
}

fn fingerprint(dumped: &[String]) -> Vec<String> {
    let mut flows: Vec<String> = dumped.iter().map(|f| without_counters(f)).collect();
    flows.sort();
    flows
}

/// True when our flows on the bridge differ from what we installed (wiped
/// by a restart, replaced by someone else) or cannot be read.
async fn flows_drifted<S: FlowSwitch>(
    handle: &AgentHandle,
    switch: &S,
    cookie: u64,
    expected: &[String],
) -> bool {
    match switch.dump(cookie).await {
        Ok(dumped) => {
            if fingerprint(&dumped) == expected {
                handle.set_installed_flows(dumped);
                return false;
            }
            tracing::warn!(
                found = dumped.len(),
                expected = expected.len(),
                "our flows were changed or wiped; restoring"
            );
            true
        }
        Err(e) => {
            // The switch is unreachable (restarting?): restore when it is back.
            tracing::warn!(error = %e, "cannot read flows");
            handle.set_source(Source::Flows, Err(e.to_string()));
            true
        }
    }
}
