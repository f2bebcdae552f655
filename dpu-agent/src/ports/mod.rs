//! The bridge's ports: an OVSDB monitor (the `noverlay-ovsdb` client) of the
//! Open_vSwitch database's Bridge, Port and Interface tables, from which
//! [`derive`] tells which port is which and [`discovery`] publishes the
//! port map to the agent's state.

pub mod derive;
pub mod discovery;

pub use derive::SwitchDb;
use serde_json::{Value, json};

/// The bridge and port names to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNames {
    pub bridge: String,
    /// None: each of these is derived from the bridge (`derive.rs`).
    pub host_representor: Option<String>,
    pub patch: Option<String>,
    pub uplink: Option<String>,
}

/// Why the port map cannot be derived (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "bridge {0:?} (config [bridge] name) not found in OVSDB: `ovs-vsctl list-br` lists the bridges"
    )]
    NoBridge(String),
    #[error(
        "port {port:?} (config [bridge] {key}) not found on bridge {bridge:?}: `ovs-vsctl list-ports {bridge}` lists its ports"
    )]
    NoPort {
        bridge: String,
        port: String,
        /// The config key that names the port.
        key: &'static str,
    },
    #[error(
        "bridge {bridge:?} has no patch port to {integration:?} (ovn-controller makes it once the gateway router is bound to this chassis): wait for it, or set [bridge] patch_port"
    )]
    NoPatch { bridge: String, integration: String },
    #[error(
        "bridge {bridge:?} has several patch ports to {integration:?} ({}): set [bridge] patch_port to the default network's",
        found.join(", ")
    )]
    ManyPatches {
        bridge: String,
        integration: String,
        found: Vec<String>,
    },
    #[error(
        "the uplink of bridge {bridge:?} cannot be told from OVSDB ({system_interfaces} interfaces of type system, no external_ids:bridge-uplink, no port named after the bridge's br<nic> name): set [bridge] uplink"
    )]
    NoUplink {
        bridge: String,
        system_interfaces: usize,
    },
    #[error(
        "bridge {bridge:?}'s external_ids:bridge-uplink names {named:?}, which is not one of its ports: fix the external id or set [bridge] uplink"
    )]
    UplinkNotOnBridge { bridge: String, named: String },
    #[error(
        "bridge {bridge:?} has {} ports besides its own, the patch ports and the uplink {uplink:?} ({}); the host representor must be the only one: set [bridge] host_representor",
        left.len(),
        if left.is_empty() { "none".to_string() } else { left.join(", ") }
    )]
    HostRepresentor {
        bridge: String,
        uplink: String,
        left: Vec<String>,
    },
    #[error("interface {0:?} has no OpenFlow port number yet (ofport {1})")]
    NoOfport(String, String),
    #[error("bridge {0:?} has no MAC address (mac_in_use of its internal interface)")]
    NoMac(String),
    #[error(transparent)]
    Ovsdb(#[from] noverlay_ovsdb::Error),
}

/// The monitor request of port discovery: the columns `derive.rs` reads.
pub fn monitor_request() -> Value {
    json!({
        "method": "monitor",
        "id": noverlay_ovsdb::session::MONITOR_ID,
        "params": ["Open_vSwitch", null, {
            "Bridge": {"columns": ["name", "ports", "external_ids"]},
            "Port": {"columns": ["name", "interfaces"]},
            "Interface": {"columns": ["name", "ofport", "mac_in_use", "type", "options"]},
            "Open_vSwitch": {"columns": ["external_ids"]},
        }],
    })
}
