//! What the host agent reports about itself: where it stands with the DPU,
//! the contract in place, its counters. Read by tests, the demo and the
//! metrics collector.

use noverlay_proto::contract::Contract;
use noverlay_runtime::metrics::encode::LATENCY_BUCKETS;
use prometheus_client::metrics::histogram::Histogram;

/// Where the agent stands with the DPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Connecting,
    /// Following contract revisions.
    Following,
    /// The DPU refused the proposal (mismatch); nothing was applied for it.
    Refused(String),
    /// The DPU cannot be reached; the last good state stays.
    Unreachable(String),
    /// The configured mode is out of scope: everything we own was removed.
    OutOfScope,
}

/// What the agent has done: for `host-agent status`, metrics, tests and
/// the demo.
#[derive(Debug, Clone, Default)]
pub struct HostStatus {
    pub phase: Phase,
    /// The contract in place on the host.
    pub applied: Option<Contract>,
    /// Our routes as the kernel listed them after the last successful
    /// apply or reconcile (`ip route` syntax); a planned route that is not
    /// ours in the kernel (or missing) is listed as the kernel has it,
    /// marked `[not ours: planned ...]` (or `[missing: ...]`).
    pub routes: Vec<String>,
    /// Planned routes another writer keeps replacing, left to it for now.
    pub route_conflicts: Vec<String>,
    /// Routes of ours taken back from other writers.
    pub route_takebacks: u64,
    /// Why the nftables event watcher is deaf (empty: it hears).
    pub nft_watch_lost: String,
    /// Times the nftables event watcher got its socket back.
    pub nft_watch_restarts: u64,
    /// Times rtnetlink events were lost and everything read again.
    pub route_event_overruns: u64,
    /// Where the DPU took each fact of the applied contract from, as it
    /// said (escaped, bounded): shown, never acted on.
    pub dpu_facts: Vec<String>,
    /// Where this host's config took its masquerade subnets from.
    pub host_facts: Vec<String>,
    /// OVN's routes for the cluster CIDRs, as the DPU last said: shown,
    /// never acted on.
    pub dpu_ovn_routes: Option<DpuOvnRoutes>,
    /// Our nft table as the kernel had it after the last contract applied.
    pub nft_ruleset: String,
    /// Unix time (seconds) of the last contract applied; 0 if none.
    pub applied_unix: i64,
    /// When the certificate host-agent presents expires (Unix seconds), as
    /// loaded at start or by the last TLS reload.
    pub certificate_expiry_unix: i64,
    /// The last contract or apply error, if the last attempt failed.
    pub last_error: Option<String>,
    /// How many sessions with the DPU ended (connect failures included).
    pub disconnects: u64,
    /// How many reconciles found and fixed drift (deleted route, flushed
    /// ruleset, link flap...).
    pub repairs: u64,
    /// Reconciles run (event-driven and periodic), whether or not they changed anything.
    pub reconciles: u64,
    /// Time to apply a plan to the kernel (contract applies and reconciles).
    pub apply_latency: ApplyLatency,
}

/// The apply latency histogram (seconds); clones share it.
#[derive(Debug, Clone)]
pub struct ApplyLatency(pub Histogram);

impl Default for ApplyLatency {
    fn default() -> Self {
        ApplyLatency(Histogram::new(LATENCY_BUCKETS))
    }
}

/// OVN's routes for the cluster CIDRs on the DPU (the routing decision is
/// OVN's): how many take cluster traffic, how many BGP taught it (route
/// import), and the cluster CIDRs none takes (OVN drops their traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DpuOvnRoutes {
    pub cluster_routes: u32,
    pub imported: u32,
    pub unrouted_cidrs: Vec<String>,
}

impl DpuOvnRoutes {
    /// From the DPU's word: only CIDRs that parse, at most as many as a
    /// contract may hold.
    pub fn from_pb(routes: &noverlay_proto::pb::OvnRoutes) -> Self {
        DpuOvnRoutes {
            cluster_routes: routes.cluster_routes,
            imported: routes.imported,
            unrouted_cidrs: routes
                .unrouted_cidrs
                .iter()
                .filter_map(|cidr| cidr.parse::<ipnet::IpNet>().ok())
                .take(noverlay_proto::contract::MAX_CLUSTER_CIDRS)
                .map(|cidr| cidr.to_string())
                .collect(),
        }
    }
}
