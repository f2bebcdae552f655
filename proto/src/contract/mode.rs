//! The address family and the mode (node, gateway, transport) a contract
//! is for, and their wire forms.

use super::ContractError;
use crate::pb;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::{fmt, net::IpAddr};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of_net(net: &IpNet) -> Self {
        Self::of_addr(&net.addr())
    }

    pub fn of_addr(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub fn to_pb(self) -> pb::AddressFamily {
        match self {
            Family::Ipv4 => pb::AddressFamily::Ipv4,
            Family::Ipv6 => pb::AddressFamily::Ipv6,
        }
    }

    pub fn from_pb(raw: i32) -> Result<Self, ContractError> {
        match pb::AddressFamily::try_from(raw) {
            Ok(pb::AddressFamily::Ipv4) => Ok(Family::Ipv4),
            Ok(pb::AddressFamily::Ipv6) => Ok(Family::Ipv6),
            _ => Err(ContractError::UnknownFamily(raw)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// Node mode. Only [`NodeMode::DpuHost`] is in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeMode {
    DpuHost,
    Full,
    Dpu,
}

/// Gateway mode. Only [`GatewayMode::Shared`] is in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    Shared,
    Local,
}

/// Pod network transport. Only [`Transport::NoOverlay`] is in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    NoOverlay,
    Geneve,
}

/// The three settings that together decide whether the path exists at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    pub node_mode: NodeMode,
    pub gateway_mode: GatewayMode,
    pub transport: Transport,
}

impl Mode {
    /// The only mode this project serves: DPU host, shared gateway, no overlay.
    pub const IN_SCOPE: Mode = Mode {
        node_mode: NodeMode::DpuHost,
        gateway_mode: GatewayMode::Shared,
        transport: Transport::NoOverlay,
    };

    pub fn is_in_scope(&self) -> bool {
        *self == Self::IN_SCOPE
    }

    pub fn to_pb(self) -> pb::Mode {
        pb::Mode {
            node_mode: match self.node_mode {
                NodeMode::DpuHost => pb::NodeMode::DpuHost,
                NodeMode::Full => pb::NodeMode::Full,
                NodeMode::Dpu => pb::NodeMode::Dpu,
            } as i32,
            gateway_mode: match self.gateway_mode {
                GatewayMode::Shared => pb::GatewayMode::Shared,
                GatewayMode::Local => pb::GatewayMode::Local,
            } as i32,
            transport: match self.transport {
                Transport::NoOverlay => pb::Transport::NoOverlay,
                Transport::Geneve => pb::Transport::Geneve,
            } as i32,
        }
    }

    pub fn from_pb(mode: Option<&pb::Mode>) -> Result<Self, ContractError> {
        let mode = mode.ok_or(ContractError::Missing("mode"))?;
        let node_mode = match pb::NodeMode::try_from(mode.node_mode) {
            Ok(pb::NodeMode::DpuHost) => NodeMode::DpuHost,
            Ok(pb::NodeMode::Full) => NodeMode::Full,
            Ok(pb::NodeMode::Dpu) => NodeMode::Dpu,
            _ => return Err(ContractError::UnknownEnum("mode.node_mode", mode.node_mode)),
        };
        let gateway_mode = match pb::GatewayMode::try_from(mode.gateway_mode) {
            Ok(pb::GatewayMode::Shared) => GatewayMode::Shared,
            Ok(pb::GatewayMode::Local) => GatewayMode::Local,
            _ => {
                return Err(ContractError::UnknownEnum(
                    "mode.gateway_mode",
                    mode.gateway_mode,
                ));
            }
        };
        let transport = match pb::Transport::try_from(mode.transport) {
            Ok(pb::Transport::NoOverlay) => Transport::NoOverlay,
            Ok(pb::Transport::Geneve) => Transport::Geneve,
            _ => return Err(ContractError::UnknownEnum("mode.transport", mode.transport)),
        };
        Ok(Mode {
            node_mode,
            gateway_mode,
            transport,
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = match self.node_mode {
            NodeMode::DpuHost => "dpu-host",
            NodeMode::Full => "full",
            NodeMode::Dpu => "dpu",
        };
        let gateway = match self.gateway_mode {
            GatewayMode::Shared => "shared",
            GatewayMode::Local => "local",
        };
        let transport = match self.transport {
            Transport::NoOverlay => "no-overlay",
            Transport::Geneve => "geneve",
        };
        write!(f, "node {node}, gateway {gateway}, transport {transport}")
    }
}
