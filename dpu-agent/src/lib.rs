//! dpu-agent: the DPU side of DPU host no-overlay routing.
//!
//! - The plan: [`flows`] (offer + port map -> the bridge's flows, pure) and
//!   [`negotiation`] (a host's proposal + our offer -> the contract, pure),
//!   from the config ([`config`]).
//! - Sharing the bridge with other controllers: [`coexist`] (pure).
//! - The state hub every task shares: [`state`].
//! - The edges, one module each: the gRPC service ([`server`], over the
//!   mTLS listener [`tls_listener`]), OVSDB port discovery ([`ovsdb`]), the
//!   OpenFlow switch ([`openflow`]) driven by the [`programmer`] loop, and
//!   the Prometheus collector ([`metrics`]).

pub mod coexist;
pub mod config;
pub mod flows;
pub mod handshakes;
pub mod metrics;
pub mod negotiation;
pub mod openflow;
pub mod ovsdb;
pub mod programmer;
pub mod server;
pub mod state;
pub mod tls_listener;

use noverlay_runtime::systemd::Watchdog;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts what programs the bridge: OVSDB port discovery (unless the ports
/// are given by hand) and the flow programmer. Nothing when `program` is off.
pub fn start_datapath(
    handle: state::AgentHandle,
    config: &config::ValidConfig,
    watchdog: &Watchdog,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let bridge = &config.raw.bridge;
    if !bridge.program {
        return Vec::new();
    }
    let mut tasks = Vec::new();
    if config.static_ports.is_none() {
        let names = ovsdb::PortNames {
            bridge: bridge.name.clone(),
            host_representor: bridge.host_representor.clone(),
            patch: bridge.patch_port.clone(),
            uplink: bridge.uplink.clone(),
        };
        tasks.push(tokio::spawn(ovsdb::discovery::run_port_discovery(
            handle.clone(),
            bridge.ovsdb_socket.clone(),
            names,
            shutdown.clone(),
        )));
    }
    let switch = openflow::OvsOfctl {
        target: bridge.openflow_target(),
    };
    tasks.push(tokio::spawn(programmer::run_flow_programmer(
        handle,
        switch,
        Duration::from_millis(bridge.verify_interval_ms),
        watchdog.heartbeat("flow programmer"),
        shutdown,
    )));
    tasks
}

/// Removes every flow with our cookie from the bridge, in one bundle. Flows
/// of any other cookie stay exactly as they are (the agent never gives its
/// cookie to another controller's flow, see [`coexist`]).
pub async fn cleanup(config: &config::ValidConfig) -> Result<(), openflow::SwitchError> {
    use openflow::FlowSwitch;
    let switch = openflow::OvsOfctl {
        target: config.raw.bridge.openflow_target(),
    };
    switch
        .replace(&flows::render_bundle(&[], config.raw.bridge.cookie))
        .await
}
