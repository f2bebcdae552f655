//! dpu-agent: the DPU side of DPU host no-overlay routing.
//!
//! It serves the contract to the host over mTLS gRPC ([`server`]),
//! negotiating it ([`negotiation`]) from its own config ([`config`]), and
//! plans the gateway bridge flows ([`flows`]).

pub mod config;
pub mod flows;
pub mod metrics;
pub mod negotiation;
pub mod openflow;
pub mod ovsdb;
pub mod programmer;
pub mod server;
pub mod tls_listener;

use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts what programs the bridge: OVSDB port discovery (unless the ports
/// are given by hand) and the flow programmer. Nothing when `program` is off.
pub fn start_datapath(
    handle: server::AgentHandle,
    config: &config::ValidConfig,
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
        tasks.push(tokio::spawn(programmer::run_port_discovery(
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
        shutdown,
    )));
    tasks
}
