//! The validated contract: what the DPU issued and the host may apply.
//!
//! Wire messages ([`crate::pb`]) carry strings; [`Contract::try_from`] parses
//! them into typed values and enforces every rule a peer must not be trusted
//! with (no default route, no loopback, no multicast, masquerade addresses that
//! match the subnet, sane MTU, bounded size). Both agents plan only from this
//! type, so a rogue message can never reach the kernel or OVS.

mod checks;
mod error;
mod mode;
mod wire;

use crate::PROTOCOL_VERSION;
pub use checks::{
    SHORTEST_MASQUERADE_PREFIX_V4, SHORTEST_MASQUERADE_PREFIX_V6, check_cluster_cidr, overlaps,
};
use checks::{check_masquerade_subnet, check_underlay_ip};
pub use error::ContractError;
use ipnet::IpNet;
pub use mode::{Family, GatewayMode, Mode, NodeMode, Transport};
use std::{fmt, net::IpAddr};

/// Largest number of cluster CIDRs across all families. Real clusters have a
/// handful; thousands means a bug or an attack, and each CIDR costs a route
/// and a rule on the host.
pub const MAX_CLUSTER_CIDRS: usize = 1024;

/// MTU bounds for the cluster-CIDR routes. IPv6 needs at least 1280.
pub const MIN_MTU_IPV4: u32 = 576;
pub const MIN_MTU_IPV6: u32 = 1280;
pub const MAX_MTU: u32 = 9216;

/// Offset of the host masquerade IP in the masquerade subnet (OVN-Kubernetes: .2).
pub const HOST_MASQUERADE_OFFSET: u128 = 2;
/// Offset of OVN's masquerade IP (OVN-Kubernetes: .1, the gateway router's
/// address as the host's side sees it).
pub const OVN_MASQUERADE_OFFSET: u128 = 1;
/// Offset of the dummy next hop in the masquerade subnet (OVN-Kubernetes: .4).
pub const DUMMY_NEXT_HOP_OFFSET: u128 = 4;
/// Highest offset OVN-Kubernetes uses (.5, service hairpin): the subnet must hold it.
const HIGHEST_MASQUERADE_OFFSET: u128 = 5;

/// The masquerade subnet and the two addresses of it this path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masquerade {
    pub subnet: IpNet,
    /// SNAT source on the host, and the address on the gateway interface.
    pub host_ip: IpAddr,
    /// Next hop of the cluster-CIDR routes; resolved by a permanent neighbour.
    pub dummy_next_hop: IpAddr,
}

impl Masquerade {
    /// Derives the host masquerade IP (.2) and dummy next hop (.4) from the
    /// subnet, as OVN-Kubernetes does. The subnet must be canonical and hold
    /// offsets up to .5.
    pub fn from_subnet(subnet: IpNet) -> Result<Self, ContractError> {
        if subnet.trunc() != subnet {
            return Err(ContractError::NotCanonical(subnet.to_string()));
        }
        let host_bits = u32::from(subnet.max_prefix_len() - subnet.prefix_len());
        if host_bits < 128 && (1u128 << host_bits) <= HIGHEST_MASQUERADE_OFFSET {
            return Err(ContractError::MasqueradeTooSmall(subnet));
        }
        check_masquerade_subnet(&subnet)?;
        Ok(Masquerade {
            subnet,
            host_ip: offset(subnet.network(), HOST_MASQUERADE_OFFSET),
            dummy_next_hop: offset(subnet.network(), DUMMY_NEXT_HOP_OFFSET),
        })
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.subnet)
    }

    /// The host masquerade IP with the subnet's prefix length (e.g.
    /// 169.254.0.2/17): its connected route makes the dummy next hop on-link.
    pub fn host_address(&self) -> IpNet {
        // The prefix length comes from a valid IpNet of the same family.
        IpNet::new(self.host_ip, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }

    /// OVN's masquerade IP (.1): how the gateway router appears to the host.
    pub fn ovn_ip(&self) -> IpAddr {
        offset(self.subnet.network(), OVN_MASQUERADE_OFFSET)
    }

    /// MAC of the dummy next hop's permanent neighbour entry: 0a:58 followed by
    /// the last four bytes of the address (OVN-Kubernetes' IP-derived MAC).
    pub fn dummy_next_hop_mac(&self) -> [u8; 6] {
        let tail: [u8; 4] = match self.dummy_next_hop {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        [0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]]
    }
}

fn offset(network: IpAddr, by: u128) -> IpAddr {
    match network {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(by as u32)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(by)).into()),
    }
}

/// Formats a MAC address the way ip(8) and ovs-ofctl print it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a MAC address written as six colon-separated hex bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        // from_str_radix alone would accept a sign ("+a").
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One address family's part of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyContract {
    pub masquerade: Masquerade,
    /// Sorted and without duplicates.
    pub cluster_cidrs: Vec<IpNet>,
    pub underlay_ip: IpAddr,
}

impl FamilyContract {
    pub fn family(&self) -> Family {
        self.masquerade.family()
    }
}

/// What the DPU offers: everything of the contract but the host's gateway
/// interface, which only the host knows. Built from the DPU config; each
/// change of it is a new revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub revision: u64,
    pub mode: Mode,
    /// At most one per family, IPv4 first.
    pub families: Vec<FamilyContract>,
    pub mtu: u32,
}

/// For people (`dpu-agent check-config`): the offer, then a line per
/// family.
impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "offer: revision {}, {}, mtu {}",
            self.revision, self.mode, self.mtu
        )?;
        for family in &self.families {
            let masquerade = &family.masquerade;
            let cidrs: Vec<String> = family
                .cluster_cidrs
                .iter()
                .map(ToString::to_string)
                .collect();
            writeln!(
                f,
                "  {}: masquerade {} (host {}, next hop {} at {}), underlay {}, {} cluster CIDRs: {}",
                family.family(),
                masquerade.subnet,
                masquerade.host_ip,
                masquerade.dummy_next_hop,
                format_mac(&masquerade.dummy_next_hop_mac()),
                family.underlay_ip,
                cidrs.len(),
                cidrs.join(", ")
            )?;
        }
        Ok(())
    }
}

impl Offer {
    /// Validates and normalises (sorts, dedups) the parts of an offer.
    pub fn new(
        revision: u64,
        mode: Mode,
        mut families: Vec<FamilyContract>,
        mtu: u32,
    ) -> Result<Self, ContractError> {
        for family in &mut families {
            family.cluster_cidrs.sort();
            family.cluster_cidrs.dedup();
        }
        families.sort_by_key(FamilyContract::family);
        let offer = Offer {
            revision,
            mode,
            families,
            mtu,
        };
        offer.validate()?;
        Ok(offer)
    }

    /// The contract for a host whose gateway interface is `gateway_interface`.
    pub fn contract_for(&self, gateway_interface: &str) -> Result<Contract, ContractError> {
        validate_interface_name("gateway_interface", gateway_interface)?;
        Ok(Contract {
            revision: self.revision,
            protocol_version: PROTOCOL_VERSION,
            mode: self.mode,
            families: self.families.clone(),
            mtu: self.mtu,
            gateway_interface: gateway_interface.to_string(),
        })
    }

    /// The same offer with other families and MTU: the next revision if
    /// anything changed, else this one unchanged.
    pub fn revised(&self, families: Vec<FamilyContract>, mtu: u32) -> Result<Self, ContractError> {
        let next = Offer::new(self.revision, self.mode, families, mtu)?;
        if next == *self {
            return Ok(next);
        }
        Offer::new(self.revision + 1, self.mode, next.families, mtu)
    }

    pub fn family(&self, family: Family) -> Option<&FamilyContract> {
        self.families.iter().find(|f| f.family() == family)
    }

    /// The rules every offer obeys, whoever built it.
    fn validate(&self) -> Result<(), ContractError> {
        if self.revision == 0 {
            return Err(ContractError::Missing("revision"));
        }
        if !self.mode.is_in_scope() {
            return Err(ContractError::OutOfScope(self.mode));
        }
        if self.families.is_empty() {
            return Err(ContractError::Missing("families"));
        }
        let total: usize = self.families.iter().map(|f| f.cluster_cidrs.len()).sum();
        if total > MAX_CLUSTER_CIDRS {
            return Err(ContractError::TooManyCidrs {
                count: total,
                max: MAX_CLUSTER_CIDRS,
            });
        }
        for pair in self.families.windows(2) {
            if pair[0].family() == pair[1].family() {
                return Err(ContractError::DuplicateFamily(pair[0].family()));
            }
        }
        let min_mtu = if self.family(Family::Ipv6).is_some() {
            MIN_MTU_IPV6
        } else {
            MIN_MTU_IPV4
        };
        if !(min_mtu..=MAX_MTU).contains(&self.mtu) {
            return Err(ContractError::BadMtu {
                mtu: self.mtu,
                min: min_mtu,
                max: MAX_MTU,
            });
        }
        for family in &self.families {
            let fam = family.family();
            if Family::of_addr(&family.underlay_ip) != fam {
                return Err(ContractError::FamilyMismatch {
                    field: "underlay_ip",
                    value: family.underlay_ip.to_string(),
                    family: fam,
                });
            }
            if family.cluster_cidrs.is_empty() {
                return Err(ContractError::NoCidrs(fam));
            }
            for cidr in &family.cluster_cidrs {
                if Family::of_net(cidr) != fam {
                    return Err(ContractError::FamilyMismatch {
                        field: "cluster_cidrs",
                        value: cidr.to_string(),
                        family: fam,
                    });
                }
                check_cluster_cidr(cidr, &family.masquerade.subnet)?;
            }
            // Sorted: a prefix that covers another covers its successor.
            if let Some(pair) = family
                .cluster_cidrs
                .windows(2)
                .find(|pair| overlaps(&pair[0], &pair[1]))
            {
                return Err(ContractError::OverlappingCidrs(pair[0], pair[1]));
            }
            check_underlay_ip(&family.underlay_ip, &family.masquerade)?;
        }
        Ok(())
    }
}

/// The whole validated contract: the DPU's offer for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub revision: u64,
    pub protocol_version: u32,
    pub mode: Mode,
    /// At most one per family, IPv4 first.
    pub families: Vec<FamilyContract>,
    pub mtu: u32,
    pub gateway_interface: String,
}

impl Contract {
    /// Builds and validates a contract from typed parts.
    pub fn new(
        revision: u64,
        mode: Mode,
        families: Vec<FamilyContract>,
        mtu: u32,
        gateway_interface: String,
    ) -> Result<Self, ContractError> {
        Offer::new(revision, mode, families, mtu)?.contract_for(&gateway_interface)
    }

    /// All cluster CIDRs, IPv4 first.
    pub fn cluster_cidrs(&self) -> impl Iterator<Item = &IpNet> {
        self.families.iter().flat_map(|f| f.cluster_cidrs.iter())
    }
}

/// Keeps hostile values from flooding logs and error messages.
fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// Checks a Linux interface name: 1 to 15 bytes, no '/', whitespace or NUL.
pub fn validate_interface_name(field: &'static str, name: &str) -> Result<(), ContractError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ContractError::BadValue {
            field,
            value: truncate(name),
            expected: "a Linux interface name (1-15 characters, no '/', ':' or spaces)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test literal")
    }

    fn v4_family(cidrs: &[&str]) -> FamilyContract {
        FamilyContract {
            masquerade: Masquerade::from_subnet(net("169.254.0.0/17")).expect("masq"),
            cluster_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        }
    }

    fn v6_family(cidrs: &[&str]) -> FamilyContract {
        FamilyContract {
            masquerade: Masquerade::from_subnet(net("fd69::/112")).expect("masq"),
            cluster_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            underlay_ip: "2001:db8::10".parse().expect("ip"),
        }
    }

    fn contract(families: Vec<FamilyContract>) -> Result<Contract, ContractError> {
        Contract::new(1, Mode::IN_SCOPE, families, 1400, "eth0".into())
    }

    #[test]
    fn masquerade_addresses_follow_ovn_kubernetes_offsets() {
        let v4 = Masquerade::from_subnet(net("169.254.0.0/17")).expect("v4");
        assert_eq!(v4.host_ip.to_string(), "169.254.0.2");
        assert_eq!(v4.dummy_next_hop.to_string(), "169.254.0.4");
        assert_eq!(v4.host_address().to_string(), "169.254.0.2/17");
        assert_eq!(format_mac(&v4.dummy_next_hop_mac()), "0a:58:a9:fe:00:04");
        let v6 = Masquerade::from_subnet(net("fd69::/112")).expect("v6");
        assert_eq!(v6.host_ip.to_string(), "fd69::2");
        assert_eq!(v6.dummy_next_hop.to_string(), "fd69::4");
        assert_eq!(format_mac(&v6.dummy_next_hop_mac()), "0a:58:00:00:00:04");
    }

    #[test]
    fn mac_parsing_round_trips_and_rejects_garbage() {
        assert_eq!(
            parse_mac("0a:58:a9:fe:00:04")
                .map(|m| format_mac(&m))
                .as_deref(),
            Some("0a:58:a9:fe:00:04")
        );
        for bad in [
            "",
            "0a:58:a9:fe:00",
            "0a:58:a9:fe:00:04:05",
            "0a:58:a9:fe:00:4",
            "zz:58:a9:fe:00:04",
            "+a:58:a9:fe:00:04",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn masquerade_subnet_must_hold_offset_five_and_be_canonical() {
        assert_eq!(
            Masquerade::from_subnet(net("169.254.0.0/30")),
            Err(ContractError::MasqueradeTooSmall(net("169.254.0.0/30")))
        );
        for (subnet, reason) in [
            ("0.0.0.0/0", "broader than /16"),
            ("127.0.0.0/16", "loopback"),
            ("224.0.0.0/24", "multicast"),
            ("255.255.255.0/24", "reserved"),
            ("fd00::/48", "broader than /64"),
            ("ff02::/112", "multicast"),
        ] {
            let error = Masquerade::from_subnet(net(subnet))
                .expect_err(subnet)
                .to_string();
            assert!(error.contains(subnet) && error.contains(reason), "{error}");
        }
        assert!(Masquerade::from_subnet(net("169.254.0.0/29")).is_ok());
        assert_eq!(
            Masquerade::from_subnet(net("169.254.0.1/17")),
            Err(ContractError::NotCanonical("169.254.0.1/17".into()))
        );
    }

    #[test]
    fn contract_round_trips_through_the_wire_sorted() {
        let c = contract(vec![
            v6_family(&["fd00:10::/64"]),
            v4_family(&["198.19.0.0/16", "198.18.128.0/17", "198.19.0.0/16"]),
        ])
        .expect("valid");
        assert_eq!(c.families[0].family(), Family::Ipv4);
        assert_eq!(
            c.families[0].cluster_cidrs,
            vec![net("198.18.128.0/17"), net("198.19.0.0/16")]
        );
        let back = Contract::try_from(&c.to_pb()).expect("parses");
        assert_eq!(back, c);
    }

    #[test]
    fn rogue_cidrs_are_rejected_with_the_value_named() {
        for (cidr, reason) in [
            ("0.0.0.0/0", "default route"),
            ("127.0.0.0/16", "loopback"),
            ("224.0.0.0/8", "multicast"),
            ("169.254.128.0/24", "link-local"),
            ("0.0.0.0/8", "unspecified"),
            ("169.254.0.0/16", "link-local"),
            ("240.0.0.0/4", "reserved"),
            ("255.255.255.255/32", "broadcast"),
        ] {
            let err = contract(vec![v4_family(&[cidr])]).expect_err(cidr);
            let text = err.to_string();
            assert!(
                text.contains(cidr) && text.contains(reason),
                "{cidr}: {text}"
            );
        }
        for cidr in ["::/0", "::1/128", "ff02::/16", "fe80::/64", "::ffff:0:0/96"] {
            let err = contract(vec![v6_family(&[cidr])]).expect_err(cidr);
            assert!(err.to_string().contains(cidr), "{err}");
        }
        // Inside the IPv6 masquerade subnet (not link-local): the host's own
        // path to the DPU.
        let err = contract(vec![v6_family(&["fd69::/120"])]).expect_err("inside masq");
        assert!(err.to_string().contains("masquerade subnet"), "{err}");
    }

    #[test]
    fn overlapping_cidrs_and_bad_underlay_ips_are_named() {
        let err = contract(vec![v4_family(&[
            "198.18.0.0/16",
            "198.19.0.0/16",
            "198.18.128.0/17",
        ])])
        .expect_err("overlap");
        assert!(
            err.to_string()
                .contains("198.18.0.0/16 and 198.18.128.0/17 overlap"),
            "{err}"
        );
        for (ip, reason) in [
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "unicast"),
            ("127.0.0.1", "loopback"),
            ("169.254.0.2", "masquerade subnet"),
        ] {
            let mut family = v4_family(&["198.18.128.0/17"]);
            family.underlay_ip = ip.parse().expect("ip");
            let err = contract(vec![family]).expect_err(ip).to_string();
            assert!(err.contains(ip) && err.contains(reason), "{err}");
        }
    }

    #[test]
    fn wire_contract_with_wrong_masquerade_address_is_rejected() {
        let mut wire = contract(vec![v4_family(&["198.18.128.0/17"])])
            .expect("valid")
            .to_pb();
        wire.families[0].host_masquerade_ip = "169.254.0.9".into();
        let err = Contract::try_from(&wire).expect_err("wrong host ip");
        assert!(err.to_string().contains("169.254.0.9"), "{err}");
        assert!(err.to_string().contains("169.254.0.2"), "{err}");
    }

    #[test]
    fn wire_contract_limits_and_garbage() {
        let good = contract(vec![v4_family(&["198.18.128.0/17"])])
            .expect("valid")
            .to_pb();
        let mut many = good.clone();
        many.families[0].cluster_cidrs = (0..2000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        assert!(matches!(
            Contract::try_from(&many),
            Err(ContractError::TooManyCidrs { count: 2000, .. })
        ));
        let mut garbage = good.clone();
        garbage.families[0].cluster_cidrs = vec!["10.0.0.0/33".into()];
        assert!(
            Contract::try_from(&garbage)
                .expect_err("bad")
                .to_string()
                .contains("10.0.0.0/33")
        );
        let mut mtu = good.clone();
        mtu.mtu = 100;
        assert_eq!(
            Contract::try_from(&mtu),
            Err(ContractError::BadMtu {
                mtu: 100,
                min: 576,
                max: MAX_MTU
            })
        );
        let mut version = good.clone();
        version.protocol_version = 7;
        assert_eq!(
            Contract::try_from(&version),
            Err(ContractError::Version {
                ours: PROTOCOL_VERSION,
                theirs: 7
            })
        );
        let mut iface = good.clone();
        iface.gateway_interface = "eth0; rm -rf /".into();
        assert!(Contract::try_from(&iface).is_err());
        let mut mode = good;
        mode.mode = Some(
            Mode {
                transport: Transport::Geneve,
                ..Mode::IN_SCOPE
            }
            .to_pb(),
        );
        assert!(matches!(
            Contract::try_from(&mode),
            Err(ContractError::OutOfScope(_))
        ));
    }

    #[test]
    fn family_mismatch_and_duplicates_are_rejected() {
        let mut fam = v4_family(&["198.18.128.0/17"]);
        fam.underlay_ip = "2001:db8::1".parse().expect("ip");
        assert!(matches!(
            contract(vec![fam]),
            Err(ContractError::FamilyMismatch { .. })
        ));
        assert_eq!(
            contract(vec![
                v4_family(&["198.18.128.0/17"]),
                v4_family(&["198.19.0.0/16"])
            ]),
            Err(ContractError::DuplicateFamily(Family::Ipv4))
        );
        assert_eq!(
            contract(vec![v4_family(&[])]),
            Err(ContractError::NoCidrs(Family::Ipv4))
        );
    }
}
