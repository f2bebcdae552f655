//! The `[ovn]` section (where OVN's northbound database is, and the
//! gateway router in it) and what the config takes from that database: the
//! gateway router's port, read through [`GatewayPortSource`] (implemented
//! on the database in `ovn.rs`: the config does not talk to OVN itself).

use ipnet::IpNet;
use serde::Deserialize;
use std::{net::IpAddr, path::PathBuf};

/// The `[ovn]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvnConfig {
    /// The local northbound database's unix socket, e.g.
    /// "/var/run/ovn/ovnnb_db.sock".
    pub nb_socket: PathBuf,
    /// The node's gateway router, e.g. "GR_node1".
    pub gateway_router: String,
    /// Its port towards breth0; OVN-Kubernetes names it "rtoe-<router>".
    pub external_port: Option<String>,
}

impl OvnConfig {
    pub fn external_port(&self) -> String {
        self.external_port
            .clone()
            .unwrap_or_else(|| format!("rtoe-{}", self.gateway_router))
    }

    /// The first bad field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.nb_socket.is_absolute() {
            return Err((
                "ovn.nb_socket",
                format!("{:?} is not an absolute path", self.nb_socket),
            ));
        }
        for (field, name) in [
            ("ovn.gateway_router", Some(&self.gateway_router)),
            ("ovn.external_port", self.external_port.as_ref()),
        ] {
            if let Some(name) = name
                && (name.is_empty() || name.len() > 256 || name.chars().any(char::is_control))
            {
                return Err((
                    field,
                    format!("{name:?} is not an OVN name (1 to 256 printable characters)"),
                ));
            }
        }
        Ok(())
    }
}

/// The gateway router's external port as OVN's northbound database had it
/// when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPort {
    /// The gateway router, e.g. "GR_node1".
    pub router: String,
    /// e.g. "rtoe-GR_node1".
    pub name: String,
    /// Its `networks`, e.g. 198.18.1.2/24 and 2001:db8::2/64.
    pub networks: Vec<IpNet>,
    /// The router's static routes (prefix, next hop), e.g. the masquerade
    /// subnet via the dummy next hop.
    pub routes: Vec<(IpNet, IpAddr)>,
}

impl GatewayPort {
    /// The routes of `family` that have the shape ovnkube gives the
    /// masquerade subnet's: the whole subnet via its dummy next hop.
    pub fn masquerade_routes(
        &self,
        family: noverlay_proto::contract::Family,
    ) -> Vec<(IpNet, IpAddr)> {
        self.routes
            .iter()
            .filter(|(prefix, via)| {
                noverlay_proto::contract::Family::of_net(prefix) == family
                    && noverlay_proto::contract::Masquerade::from_subnet(*prefix)
                        .is_ok_and(|m| m.dummy_next_hop == *via)
            })
            .copied()
            .collect()
    }
}

/// Reads the gateway router's external port (with a deadline of its own);
/// the error says why not, for one line.
pub trait GatewayPortSource {
    fn gateway_port(&self, config: &OvnConfig) -> Result<GatewayPort, String>;
}
