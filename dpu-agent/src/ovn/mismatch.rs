//! The ways OVN's configuration would blackhole the path, each naming what
//! it found and what the contract needs.

use ipnet::IpNet;
use std::{fmt, net::IpAddr};

/// One way OVN's configuration would blackhole the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    NoRouter(String),
    NoPort {
        router: String,
        port: String,
    },
    PortMac {
        port: String,
        found: String,
        bridge_mac: String,
    },
    PortAddress {
        port: String,
        found: Vec<String>,
        underlay_ip: IpAddr,
    },
    NoMasqueradeRoute {
        router: String,
        subnet: IpNet,
        found: Vec<String>,
    },
    RouteNextHop {
        router: String,
        subnet: IpNet,
        found: String,
        dummy_next_hop: IpAddr,
    },
    NoMacBinding {
        port: String,
        ip: IpAddr,
    },
    /// No static route of the router takes traffic to this cluster CIDR
    /// (none inside it, none holding it, no default route): OVN drops it.
    /// Normal for a moment while BGP and route import converge.
    NoClusterRoute {
        router: String,
        cidr: IpNet,
    },
    /// The port's `options:gateway_mtu` is below the host's MTU: OVN would
    /// answer the larger packets with an ICMP error from the node IP.
    GatewayMtu {
        port: String,
        gateway_mtu: u32,
        mtu: u32,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoRouter(router) => write!(
                f,
                "gateway router {router:?} not found in the northbound database"
            ),
            Mismatch::NoPort { router, port } => {
                write!(f, "port {port:?} not found on gateway router {router:?}")
            }
            Mismatch::PortMac {
                port,
                found,
                bridge_mac,
            } => write!(
                f,
                "gateway router port {port:?} has MAC {found}, but the bridge's MAC is {bridge_mac}: the host's traffic handed to the router would not be taken"
            ),
            Mismatch::PortAddress {
                port,
                found,
                underlay_ip,
            } => write!(
                f,
                "gateway router port {port:?} has networks {found:?}, none of them the underlay IP {underlay_ip}"
            ),
            Mismatch::NoMasqueradeRoute {
                router,
                subnet,
                found,
            } => write!(
                f,
                "gateway router {router:?} has no route for the masquerade subnet {subnet} (its routes: {found:?}): replies to the host would be dropped"
            ),
            Mismatch::RouteNextHop {
                router,
                subnet,
                found,
                dummy_next_hop,
            } => write!(
                f,
                "gateway router {router:?} routes the masquerade subnet {subnet} via {found}, not via the dummy next hop {dummy_next_hop}"
            ),
            Mismatch::NoMacBinding { port, ip } => write!(
                f,
                "no static MAC binding for the dummy next hop {ip} on port {port:?}: the router would ask for its MAC and nobody answers"
            ),
            Mismatch::NoClusterRoute { router, cidr } => write!(
                f,
                "gateway router {router:?} has no route for the cluster CIDR {cidr} (none inside it, none holding it, no default route): OVN drops the host's traffic to it; are the remote nodes' pod subnets learned (BGP) and imported?"
            ),
            Mismatch::GatewayMtu {
                port,
                gateway_mtu,
                mtu,
            } => write!(
                f,
                "gateway router port {port:?} has options:gateway_mtu={gateway_mtu}, below the contract's MTU {mtu}: OVN answers the host's larger packets with \"fragmentation needed\" from the node IP, which the host owns and drops, so path MTU discovery fails; set the MTU (ovnkube's mtu) to at most {gateway_mtu}"
            ),
        }
    }
}
