//! dpu-agent: the DPU side of DPU host no-overlay routing.
//!
//! - The plan: [`flows`] (offer + port map -> the bridge's flows, pure),
//!   from the config ([`config`]); a host's proposal + our offer -> the
//!   contract is `noverlay_proto::negotiation` (pure).
//! - Sharing the bridge with other controllers: [`coexist`] (pure).
//! - The state hub every task shares: [`state`].
//! - The edges, one module each: the gRPC service ([`server`], over the
//!   `noverlay-tls-gate` mTLS listener), the bridge's ports from OVSDB
//!   ([`ports`], over `noverlay-ovsdb`), the switch (the [`switch`] trait and
//!   its native implementation over `noverlay-openflow`) driven by the [`programmer`] loop, the
//!   uplink guard in nftables (`noverlay-uplink-guard`, reporting to the state
//!   hub as its `GuardHub`), and the Prometheus collector
//!   ([`metrics`]).

pub mod coexist;
pub mod config;
pub mod flows;
pub mod fragments;
pub mod metrics;
pub mod ovn;
pub mod ovnkube_follow;
pub mod ports;
pub mod programmer;
pub mod reload;
pub mod server;
pub mod state;
pub mod switch;
pub mod twins;

use noverlay_runtime::systemd::Watchdog;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the first flow install waits for the uplink guard's first
/// attempt (each of its kernel exchanges has its own deadline).
const GUARD_FIRST: Duration = Duration::from_secs(10);

/// Starts what programs the datapath: the uplink guard (unless disabled),
/// OVSDB port discovery (unless the ports are given by hand) and the flow
/// programmer, whose first install waits for the guard's first attempt;
/// none of them when `program` is off. And the check of OVN's gateway
/// router when the config has an `[ovn]` section.
pub fn start_datapath(
    handle: state::AgentHandle,
    config: &config::ValidConfig,
    watchdog: &Watchdog,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let bridge = &config.raw.bridge;
    let mut tasks = Vec::new();
    // Read-only: checked even where the agent does not program the bridge.
    match &config.raw.ovn {
        Some(ovn) => tasks.push(tokio::spawn(ovn::run_ovn_check(
            handle.clone(),
            ovn.clone(),
            shutdown.clone(),
        ))),
        None => handle.set_source_off(state::Source::Ovn),
    }
    if !bridge.program {
        return tasks;
    }
    tasks.push(tokio::spawn(fragments::run_fragment_watch(
        handle.clone(),
        bridge.vswitchd_control.clone(),
        bridge.ovsdb_socket.clone(),
        shutdown.clone(),
    )));
    let (guard_settled, guard_first) = tokio::sync::oneshot::channel();
    if config.raw.uplink_guard.enabled {
        tasks.push(tokio::spawn(noverlay_uplink_guard::run::run_uplink_guard(
            handle.clone(),
            Duration::from_millis(bridge.verify_interval_ms),
            watchdog.heartbeat("uplink guard"),
            guard_settled,
            shutdown.clone(),
        )));
    } else {
        tracing::warn!(
            "the uplink guard is disabled in the config: masquerade-sourced packets can reach the underlay while our flows are missing"
        );
        handle.update_guard(|g| {
            g.state = state::GuardState::Off;
            g.device = bridge.uplink.clone().unwrap_or_default();
        });
        handle.set_source(state::Source::Guard, Ok(()));
        drop(guard_settled);
    }
    if config.static_ports.is_none() {
        let names = ports::PortNames {
            bridge: bridge.name.clone(),
            host_representor: bridge.host_representor.clone(),
            patch: bridge.patch_port.clone(),
            uplink: bridge.uplink.clone(),
        };
        tasks.push(tokio::spawn(ports::discovery::run_port_discovery(
            handle.clone(),
            bridge.ovsdb_socket.clone(),
            names,
            shutdown.clone(),
        )));
    }
    let verify = Duration::from_millis(bridge.verify_interval_ms);
    let heartbeat = watchdog.heartbeat("flow programmer");
    let target = bridge.openflow_target();
    let bridge_name = bridge.name.clone();
    let guarded = config.raw.uplink_guard.enabled;
    tasks.push(tokio::spawn(async move {
        // Flows go on after the guard does (or after it failed, or gave up:
        // traffic must flow without it rather than not at all). A guard
        // waits for the uplink's name, and so do the ports (no flow is
        // planned without them): the deadline starts once it is known.
        if guarded {
            let mut uplinks = handle.watch_uplink();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = uplinks.wait_for(Option::is_some) => {}
            }
        }
        let _ = tokio::time::timeout(GUARD_FIRST, guard_first).await;
        // The target was checked at load; one that is not an endpoint
        // cannot reach here.
        let Some(endpoint) = noverlay_openflow::session::Endpoint::from_target(&target) else {
            tracing::error!(target = %target, "not an OpenFlow endpoint; no flows are programmed");
            return;
        };
        let switch = switch::NativeSwitch::on(endpoint, &bridge_name);
        programmer::run_flow_programmer(handle, switch, verify, heartbeat, shutdown).await
    }));
    tasks
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("removing the flows with cookie {cookie:#x} from {target}: {source}")]
    Flows {
        cookie: u64,
        target: String,
        source: switch::SwitchError,
    },
    #[error("removing the uplink guard: {0}")]
    Guard(String),
}

/// Removes what the agent put in place: every flow with our cookie from the
/// bridge (in one bundle) and the uplink guard's table. Flows of any other
/// cookie stay exactly as they are (the agent never gives its cookie to
/// another controller's flow, see [`coexist`]); a same-named table that is
/// not ours is left alone. Both are attempted; every failure is returned.
pub async fn cleanup(config: &config::ValidConfig) -> Result<(), Vec<CleanupError>> {
    use switch::FlowSwitch;
    let bridge = &config.raw.bridge;
    let target = bridge.openflow_target();
    let removed = match noverlay_openflow::session::Endpoint::from_target(&target) {
        Some(endpoint) => {
            switch::NativeSwitch::on(endpoint, &bridge.name)
                .replace(&[], bridge.cookie, &twins::TwinChecks::default())
                .await
        }
        None => Err(switch::SwitchError::Failed {
            operation: "OpenFlow connection",
            reason: format!("{target:?} is not a unix: or tcp: target"),
        }),
    };
    let mut errors = Vec::new();
    if let Err(source) = removed {
        errors.push(CleanupError::Flows {
            cookie: bridge.cookie,
            target: bridge.openflow_target(),
            source,
        });
    }
    if let Err(e) = noverlay_uplink_guard::run::remove().await {
        errors.push(CleanupError::Guard(e));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The uplink guard reads the offer and the uplink from the state hub and
/// records what it did there, as the `guard` source.
impl noverlay_uplink_guard::GuardHub for state::AgentHandle {
    fn offers(&self) -> tokio::sync::watch::Receiver<noverlay_proto::contract::Offer> {
        self.subscribe().0
    }

    fn uplinks(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.watch_uplink()
    }

    fn update(&self, change: impl FnOnce(&mut state::GuardRecord)) {
        self.update_guard(change);
    }

    fn report(&self, outcome: Result<(), String>) {
        self.set_source(state::Source::Guard, outcome);
    }

    fn reported_error(&self) -> Option<String> {
        self.source(state::Source::Guard)
            .error()
            .map(str::to_string)
    }
}
