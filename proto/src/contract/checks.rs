//! Which addresses may play which part in a contract: cluster CIDRs,
//! masquerade subnets, underlay IPs. Pure checks, each refusal naming the
//! value and the reason.

use super::{ContractError, Masquerade};
use ipnet::IpNet;
use std::{net::IpAddr, str::FromStr};

/// Whether `cidr` may be routed through the DPU as a cluster CIDR. Rejects
/// prefixes that would hijack or break the host: the default route, loopback,
/// multicast, unspecified, reserved (240.0.0.0/4 with the broadcast address,
/// IPv4-mapped IPv6), link-local, and anything overlapping the masquerade
/// subnet (the host's own path to the DPU).
pub fn check_cluster_cidr(cidr: &IpNet, masquerade_subnet: &IpNet) -> Result<(), ContractError> {
    let reject = |reason: &'static str| ContractError::RejectedCidr {
        cidr: *cidr,
        reason,
    };
    if cidr.prefix_len() == 0 {
        return Err(reject("it is a default route"));
    }
    if cidr.trunc() != *cidr {
        return Err(ContractError::NotCanonical(cidr.to_string()));
    }
    let loopback: IpNet = match cidr {
        IpNet::V4(_) => net("127.0.0.0/8"),
        IpNet::V6(_) => net("::1/128"),
    };
    let multicast: IpNet = match cidr {
        IpNet::V4(_) => net("224.0.0.0/4"),
        IpNet::V6(_) => net("ff00::/8"),
    };
    let link_local: IpNet = match cidr {
        IpNet::V4(_) => net("169.254.0.0/16"),
        IpNet::V6(_) => net("fe80::/10"),
    };
    let unspecified: IpNet = match cidr {
        IpNet::V4(_) => net("0.0.0.0/8"),
        IpNet::V6(_) => net("::/128"),
    };
    let reserved: IpNet = match cidr {
        IpNet::V4(_) => net("240.0.0.0/4"),
        IpNet::V6(_) => net("::ffff:0:0/96"),
    };
    if overlaps(cidr, &loopback) {
        return Err(reject("it overlaps loopback"));
    }
    if overlaps(cidr, &multicast) {
        return Err(reject("it overlaps multicast"));
    }
    if overlaps(cidr, &unspecified) {
        return Err(reject("it overlaps the unspecified range"));
    }
    if overlaps(cidr, &reserved) {
        return Err(reject(match cidr {
            IpNet::V4(_) => "it overlaps 240.0.0.0/4 (reserved, with the broadcast address)",
            IpNet::V6(_) => "it overlaps ::ffff:0:0/96 (IPv4-mapped addresses)",
        }));
    }
    if overlaps(cidr, &link_local) {
        return Err(reject("it is link-local"));
    }
    if overlaps(cidr, masquerade_subnet) {
        return Err(reject(
            "it overlaps the masquerade subnet (the host's own path to the DPU)",
        ));
    }
    Ok(())
}

/// Shortest masquerade prefix per family: the host's own checks skip the
/// masquerade subnet, so a broad one would switch them off.
pub const SHORTEST_MASQUERADE_PREFIX_V4: u8 = 16;
pub const SHORTEST_MASQUERADE_PREFIX_V6: u8 = 64;

/// A masquerade subnet is a small, private range: never loopback,
/// multicast, unspecified or reserved space, never broader than /16 (IPv4)
/// or /64 (IPv6).
pub(super) fn check_masquerade_subnet(subnet: &IpNet) -> Result<(), ContractError> {
    let bad = |reason: &'static str| ContractError::BadMasquerade {
        subnet: *subnet,
        reason,
    };
    let (shortest, special): (u8, [(&str, &'static str); 4]) = match subnet {
        IpNet::V4(_) => (
            SHORTEST_MASQUERADE_PREFIX_V4,
            [
                ("127.0.0.0/8", "it overlaps loopback"),
                ("224.0.0.0/4", "it overlaps multicast"),
                ("0.0.0.0/8", "it overlaps the unspecified range"),
                (
                    "240.0.0.0/4",
                    "it overlaps 240.0.0.0/4 (reserved, with the broadcast address)",
                ),
            ],
        ),
        IpNet::V6(_) => (
            SHORTEST_MASQUERADE_PREFIX_V6,
            [
                ("::1/128", "it overlaps loopback"),
                ("ff00::/8", "it overlaps multicast"),
                ("::/128", "it overlaps the unspecified address"),
                ("::ffff:0:0/96", "it overlaps IPv4-mapped addresses"),
            ],
        ),
    };
    if subnet.prefix_len() < shortest {
        return Err(bad(match subnet {
            IpNet::V4(_) => "it is broader than /16",
            IpNet::V6(_) => "it is broader than /64",
        }));
    }
    match special
        .iter()
        .find(|(range, _)| overlaps(subnet, &net(range)))
    {
        Some((_, reason)) => Err(bad(reason)),
        None => Ok(()),
    }
}

/// True when two prefixes share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn net(text: &str) -> IpNet {
    // Only called with the literals above.
    IpNet::from_str(text).unwrap_or_default()
}

/// The node underlay IP is the source of path traffic on the wire: a
/// unicast address of the node's, never the masquerade range.
pub(super) fn check_underlay_ip(ip: &IpAddr, masquerade: &Masquerade) -> Result<(), ContractError> {
    let bad = |reason: &'static str| ContractError::BadUnderlayIp { ip: *ip, reason };
    if ip.is_unspecified() {
        return Err(bad("it is the unspecified address"));
    }
    if ip.is_loopback() {
        return Err(bad("it is a loopback address"));
    }
    if ip.is_multicast() || *ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(bad("it is not a unicast address"));
    }
    if masquerade.subnet.contains(ip) {
        return Err(bad("it is inside the masquerade subnet"));
    }
    Ok(())
}
