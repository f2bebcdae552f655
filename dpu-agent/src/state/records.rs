//! What the state hub records of the peer, our flows, the uplink guard and
//! the TLS identity it serves with, as status and metrics read them.

use crate::switch::ReadFlow;
use ipnet::IpNet;
use noverlay_proto::{pb, tls::PeerIdentity};
use tokio_rustls::TlsAcceptor;

/// The TLS acceptor and the host identity it admits, swapped on reload.
#[derive(Clone)]
pub struct TlsIdentity {
    pub acceptor: TlsAcceptor,
    pub authorised_host: PeerIdentity,
    /// When the certificate the acceptor presents expires (Unix seconds).
    pub expiry_unix: i64,
}

/// The host on the other end, as last seen.
#[derive(Debug, Clone, Default)]
pub struct PeerRecord {
    /// The authorised identity of the last peer that negotiated.
    pub identity: String,
    pub last_negotiated_unix: i64,
    /// The gateway interface the host negotiated, if one has.
    pub gateway_interface: Option<String>,
    pub last_report: Option<pb::HostReport>,
    pub negotiations: u64,
    pub refused_negotiations: u64,
}

/// Our flows as last read from the bridge.
#[derive(Debug, Clone, Default)]
pub struct FlowRecord {
    /// As the switch reported them, counters included.
    pub installed: Vec<ReadFlow>,
    pub read_unix: i64,
    /// Restores of flows found wiped or altered.
    pub repairs: u64,
    /// Unix time (seconds) of the last restore; 0 if none.
    pub last_repair_unix: i64,
    /// Planned flows another controller's flow already does (rendered).
    pub provided: Vec<String>,
    /// Planned flows left out for a conflicting foreign twin (rendered).
    pub conflicts: Vec<String>,
    /// Planned flows left out because their pair's other flow conflicts.
    pub withheld: Vec<String>,
    /// Foreign flows in our tables or registers, as dumped.
    pub trespassing: Vec<String>,
    /// Installs refused because another controller's flow overlapping one
    /// of ours appeared between our read and our commit.
    pub contested_installs: u64,
}

/// The gateway router's routes for the cluster CIDRs: how the routing
/// decision, OVN's, stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRoutes {
    /// Static routes inside a cluster CIDR or holding one (a default route
    /// holds them all), one per next hop.
    pub routes: usize,
    /// Of those, the ones ovnkube's route import wrote (BGP-learned).
    pub imported: usize,
    /// Cluster CIDRs no route touches: OVN drops their traffic.
    pub unrouted: Vec<IpNet>,
}

/// Open vSwitch's fragment reassembly (`dpctl/ipf-get-status`), read by
/// [`crate::fragments`].
/// One family's reassembly state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyFragments {
    pub enabled: bool,
    /// Fragments (but the last) smaller than this are dropped.
    pub min_size: u64,
    pub accepted: u64,
    pub completed: u64,
    pub expired: u64,
    pub too_small: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragmentStatus {
    pub ipv4: FamilyFragments,
    pub ipv6: FamilyFragments,
}
