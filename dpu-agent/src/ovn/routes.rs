//! The gateway router's routes that take the cluster's traffic: OVN decides
//! where a remote pod is (BGP-learned routes imported into the router);
//! these are counted for status, route import's apart, and a cluster CIDR
//! none of them touches is named.

use super::{ClusterRoutes, Row};
use ipnet::IpNet;
use noverlay_ovsdb::replica::{Replica, map_value, uuids};
use serde_json::Value;
use std::net::IpAddr;

/// What ovnkube's route import writes in `external_ids` of its routes.
pub const ROUTE_IMPORT_OWNER: (&str, &str) = ("k8s.ovn.org/owner-controller", "RouteImport");

/// Whether two prefixes share an address: one holds the other.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// A route's `ip_prefix`: a prefix, or a bare address (a host route).
pub(super) fn parse_prefix(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Whether a static route takes packets by their destination to a next
/// hop: not a source-policy route, not in another route table (used only
/// by ports that name it), not a discard.
fn routes_by_destination(row: &Row) -> bool {
    let text = |column: &str| row.get(column).and_then(Value::as_str).unwrap_or_default();
    text("policy") != "src-ip" && text("route_table").is_empty() && text("nexthop") != "discard"
}

/// Counts the router's routes that take cluster traffic; names the
/// cluster CIDRs none does.
pub fn cluster_routes(replica: &Replica, router: &Row, cidrs: &[IpNet]) -> ClusterRoutes {
    let mut found = ClusterRoutes::default();
    let mut routed = vec![false; cidrs.len()];
    for row in uuids(router.get("static_routes"))
        .iter()
        .filter_map(|uuid| replica.row("Logical_Router_Static_Route", uuid))
        .filter(|row| routes_by_destination(row))
    {
        let Some(prefix) = row
            .get("ip_prefix")
            .and_then(Value::as_str)
            .and_then(parse_prefix)
        else {
            continue;
        };
        let mut takes_cluster_traffic = false;
        for (cidr, routed) in cidrs.iter().zip(routed.iter_mut()) {
            if overlaps(cidr, &prefix) {
                *routed = true;
                takes_cluster_traffic = true;
            }
        }
        if takes_cluster_traffic {
            found.routes += 1;
            let (key, owner) = ROUTE_IMPORT_OWNER;
            if map_value(row.get("external_ids"), key).as_deref() == Some(owner) {
                found.imported += 1;
            }
        }
    }
    found.unrouted = cidrs
        .iter()
        .zip(routed)
        .filter(|(_, routed)| !routed)
        .map(|(cidr, _)| *cidr)
        .collect();
    found
}
