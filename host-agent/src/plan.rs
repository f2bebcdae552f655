//! The host plan: contract -> the routes, neighbour, address and nftables
//! rules the host must have. Pure code; the dataplane applies it.
//!
//! Also the host's own checks on a contract, beyond what every contract
//! obeys: it must be the contract the host asked for, and it must not
//! overlap the host's own addresses.

use crate::config::{Mp0Routes, ValidHostConfig};
use ipnet::IpNet;
use noverlay_nft::describe::write_set;
use noverlay_proto::contract::{Contract, Family, format_mac, overlaps};
use std::{fmt::Write as _, net::IpAddr};

/// What the plan needs besides the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    pub gateway_interface: String,
    pub mp0_interface: String,
    pub mp0_routes: Mp0Routes,
    pub route_protocol: u8,
    pub nft_table: String,
}

impl HostSettings {
    pub fn from_config(config: &ValidHostConfig) -> Self {
        HostSettings {
            gateway_interface: config.raw.gateway_interface.clone(),
            mp0_interface: config.raw.mp0_interface.clone(),
            mp0_routes: config.raw.mp0_routes,
            route_protocol: config.raw.ownership.route_protocol,
            nft_table: config.raw.ownership.nft_table.clone(),
        }
    }
}

/// An address the host puts on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedAddress {
    pub dev: String,
    pub addr: IpNet,
}

/// A permanent neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedNeighbour {
    pub dev: String,
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// A route in the main table, marked with our protocol number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedRoute {
    pub dst: IpNet,
    pub via: IpAddr,
    pub dev: String,
    pub mtu: u32,
    pub protocol: u8,
}

/// One family's SNAT: traffic to any of `cidrs` leaves with source `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatFamily {
    pub to: IpAddr,
    pub cidrs: Vec<IpNet>,
}

impl SnatFamily {
    /// The family's address set in our table, which its one rule looks the
    /// destination up in.
    pub fn set_name(&self) -> &'static str {
        match self.to {
            IpAddr::V4(_) => "cluster_cidrs_v4",
            IpAddr::V6(_) => "cluster_cidrs_v6",
        }
    }

    /// "ip" or "ip6", as nft names the family in rules.
    pub fn nft_family(&self) -> &'static str {
        match self.to {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        }
    }
}

/// Our nftables table: inet family, one nat postrouting chain, and per
/// family an interval set of the cluster CIDRs and one SNAT rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftPlan {
    pub table: String,
    pub chain: &'static str,
    pub gateway_interface: String,
    pub families: Vec<SnatFamily>,
}

/// The comment that marks our nft table as ours: a table of the same name
/// without it is someone else's and is never replaced or deleted.
pub const NFT_TABLE_MARK: &str = "owned by noverlay host-agent";

/// Name of our chain. (Not "snat": that is an nft keyword.)
pub const NFT_CHAIN: &str = "masquerade_to_dpu";

/// Everything the host must have for one contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub revision: u64,
    /// The protocol number marking our routes (and our address): what
    /// reconcile and cleanup recognise as ours.
    pub route_protocol: u8,
    pub addresses: Vec<PlannedAddress>,
    pub neighbours: Vec<PlannedNeighbour>,
    pub routes: Vec<PlannedRoute>,
    pub nft: NftPlan,
    pub mp0_interface: String,
    /// Remove routes through mp0 that cover a cluster CIDR (`Remove`), or
    /// leave them and route each CIDR as its two more specific halves (`Keep`).
    pub mp0_routes: Mp0Routes,
    pub cluster_cidrs: Vec<IpNet>,
}

/// The destinations routed for one cluster CIDR. Next to routes through
/// mp0 that are kept (ovnkube-node's route manager owns them by destination,
/// table and metric, and restores them when touched), the CIDR is routed as
/// its two halves: longest-prefix match makes them win over the whole-CIDR
/// mp0 route without touching it, while more specific routes (the node
/// subnet on mp0) still win over them. A CIDR that cannot be split is
/// refused by [`check_limits`].
pub fn route_destinations(cidr: &IpNet, mp0_routes: Mp0Routes) -> Vec<IpNet> {
    match mp0_routes {
        Mp0Routes::Remove => vec![*cidr],
        Mp0Routes::Keep => cidr
            .subnets(cidr.prefix_len() + 1)
            .map(|halves| halves.collect())
            .unwrap_or_else(|_| vec![*cidr]),
    }
}

/// Plans the host state for a validated contract.
pub fn plan(contract: &Contract, settings: &HostSettings) -> HostPlan {
    let dev = &settings.gateway_interface;
    let mut plan = HostPlan {
        revision: contract.revision,
        route_protocol: settings.route_protocol,
        addresses: Vec::new(),
        neighbours: Vec::new(),
        routes: Vec::new(),
        nft: NftPlan {
            table: settings.nft_table.clone(),
            chain: NFT_CHAIN,
            gateway_interface: dev.clone(),
            families: Vec::new(),
        },
        mp0_interface: settings.mp0_interface.clone(),
        mp0_routes: settings.mp0_routes,
        cluster_cidrs: contract.cluster_cidrs().copied().collect(),
    };
    for family in &contract.families {
        let masq = &family.masquerade;
        plan.addresses.push(PlannedAddress {
            dev: dev.clone(),
            addr: masq.host_address(),
        });
        plan.neighbours.push(PlannedNeighbour {
            dev: dev.clone(),
            ip: masq.dummy_next_hop,
            mac: masq.dummy_next_hop_mac(),
        });
        for cidr in &family.cluster_cidrs {
            for dst in route_destinations(cidr, settings.mp0_routes) {
                plan.routes.push(PlannedRoute {
                    dst,
                    via: masq.dummy_next_hop,
                    dev: dev.clone(),
                    mtu: contract.mtu,
                    protocol: settings.route_protocol,
                });
            }
        }
        plan.nft.families.push(SnatFamily {
            to: masq.host_ip,
            cidrs: family.cluster_cidrs.clone(),
        });
    }
    plan
}

/// A route through mp0 is "broad" when it covers a whole cluster CIDR (or
/// more): it would carry remote-pod traffic. Narrower routes, such as the
/// local node subnet, stay.
pub fn is_broad_cluster_route(dst: &IpNet, cluster_cidrs: &[IpNet]) -> bool {
    cluster_cidrs
        .iter()
        .any(|cidr| dst.prefix_len() <= cidr.prefix_len() && dst.contains(&cidr.network()))
}

/// nft's keyword for an address family's payload.
impl HostPlan {
    /// Routes as `ip route` prints them.
    pub fn render_routes(&self) -> Vec<String> {
        self.routes.iter().map(render_route).collect()
    }

    /// The plan for people: addresses, neighbours, routes, nftables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for a in &self.addresses {
            let _ = writeln!(out, "address {} dev {}", a.addr, a.dev);
        }
        for n in &self.neighbours {
            let _ = writeln!(
                out,
                "neighbour {} dev {} lladdr {} PERMANENT",
                n.ip,
                n.dev,
                format_mac(&n.mac)
            );
        }
        for r in self.render_routes() {
            let _ = writeln!(out, "route {r}");
        }
        out.push_str(&self.nft.render());
        let cidrs = self
            .cluster_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = match self.mp0_routes {
            Mp0Routes::Remove => writeln!(
                out,
                "remove routes via {} covering: {cidrs}",
                self.mp0_interface
            ),
            Mp0Routes::Keep => writeln!(
                out,
                "keep routes via {} (ours are more specific) for: {cidrs}",
                self.mp0_interface
            ),
        };
        out
    }
}

pub fn render_route(r: &PlannedRoute) -> String {
    format!(
        "{} via {} dev {} proto {} mtu {}",
        r.dst, r.via, r.dev, r.protocol, r.mtu
    )
}

impl NftPlan {
    /// The table as `nft list table inet <table>` prints it, freshly
    /// created (counters at zero), but with one set element per line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "table inet {} {{\n\tcomment \"{NFT_TABLE_MARK}\"\n",
            self.table
        );
        for family in &self.families {
            let mut cidrs = family.cidrs.clone();
            cidrs.sort();
            let elements: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            let key = match family.to {
                IpAddr::V4(_) => "ipv4_addr",
                IpAddr::V6(_) => "ipv6_addr",
            };
            write_set(&mut out, family.set_name(), key, &["interval"], &elements);
        }
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname != \"{}\" return",
            self.chain, self.gateway_interface
        );
        for family in &self.families {
            let (fam, to) = (family.nft_family(), family.to);
            let _ = writeln!(
                out,
                "\t\t{fam} daddr @{} {fam} saddr != {to} counter packets 0 bytes 0 snat {fam} to {to}",
                family.set_name()
            );
        }
        out.push_str("\t}\n}\n");
        out
    }
}

/// An address the host already has, as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub dev: String,
    pub addr: IpNet,
}

/// Why the host refuses a contract the DPU sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostCheckError {
    #[error(
        "cluster CIDR {cidr} overlaps the host's own address {addr} on {dev}: routing it to the DPU would cut the host off"
    )]
    OverlapsHostAddress {
        cidr: IpNet,
        addr: IpNet,
        dev: String,
    },
    #[error("the DPU sent {what} {got}, but the host proposed {proposed}")]
    NotWhatWasProposed {
        what: &'static str,
        got: String,
        proposed: String,
    },
    #[error(
        "cluster CIDR {cidr} is broader than /{shortest} ({field}): the host does not route that much of the address space through the DPU"
    )]
    TooBroad {
        cidr: IpNet,
        shortest: u8,
        field: &'static str,
    },
    #[error(
        "cluster CIDR {cidr} covers the DPU agent's own address {dpu}: the control channel would be routed into the path it sets up"
    )]
    CoversTheDpu { cidr: IpNet, dpu: IpAddr },
    #[error(
        "cluster CIDR {cidr} is a single address: with mp0_routes = \"keep\" every CIDR is routed as its two halves to win over mp0's route, and a single address has none (set mp0_routes = \"remove\" where nothing manages mp0's routes)"
    )]
    CannotSplit { cidr: IpNet },
    #[error(
        "contract revision {got} is older than revision {had}, already received in this session"
    )]
    RevisionBackwards { got: u64, had: u64 },
    #[error("contract revision {revision} came again with other content")]
    RevisionReused { revision: u64 },
}

/// The host's own limits on what a DPU may route through itself: no
/// cluster CIDR broader than the configured shortest prefix, none covering
/// any address the host reaches the DPU agent at (`dpu_ips`: the address
/// itself, or every address its name resolved to).
pub fn check_limits(
    contract: &Contract,
    config: &ValidHostConfig,
    dpu_ips: &[IpAddr],
) -> Result<(), HostCheckError> {
    for family in &contract.families {
        let kind = family.family();
        let shortest = config
            .shortest_prefixes
            .iter()
            .find(|(f, _)| *f == kind)
            .map_or(0, |(_, p)| *p);
        if let Some(cidr) = family
            .cluster_cidrs
            .iter()
            .find(|c| c.prefix_len() < shortest)
        {
            return Err(HostCheckError::TooBroad {
                cidr: *cidr,
                shortest,
                field: match kind {
                    Family::Ipv4 => "ipv4.shortest_cluster_prefix",
                    Family::Ipv6 => "ipv6.shortest_cluster_prefix",
                },
            });
        }
    }
    if config.raw.mp0_routes == Mp0Routes::Keep
        && let Some(cidr) = contract
            .cluster_cidrs()
            .find(|c| c.prefix_len() == c.max_prefix_len())
    {
        return Err(HostCheckError::CannotSplit { cidr: *cidr });
    }
    for dpu in dpu_ips {
        if let Some(cidr) = contract.cluster_cidrs().find(|c| c.contains(dpu)) {
            return Err(HostCheckError::CoversTheDpu {
                cidr: *cidr,
                dpu: *dpu,
            });
        }
    }
    Ok(())
}

/// Within one session, revisions only go forward, and a revision never
/// changes its content.
pub fn check_revision(contract: &Contract, last: Option<&Contract>) -> Result<(), HostCheckError> {
    let Some(last) = last else { return Ok(()) };
    if contract.revision < last.revision {
        return Err(HostCheckError::RevisionBackwards {
            got: contract.revision,
            had: last.revision,
        });
    }
    if contract.revision == last.revision && contract != last {
        return Err(HostCheckError::RevisionReused {
            revision: contract.revision,
        });
    }
    Ok(())
}

/// Checks a contract against what the host proposed: a DPU must not slip in
/// another masquerade subnet, family set or interface.
pub fn check_matches_proposal(
    contract: &Contract,
    config: &ValidHostConfig,
) -> Result<(), HostCheckError> {
    let got: Vec<IpNet> = contract
        .families
        .iter()
        .map(|f| f.masquerade.subnet)
        .collect();
    let proposed: Vec<IpNet> = config.masquerades.iter().map(|m| m.subnet).collect();
    let list = |nets: &[IpNet]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("+")
    };
    if got != proposed {
        return Err(HostCheckError::NotWhatWasProposed {
            what: "masquerade subnets",
            got: list(&got),
            proposed: list(&proposed),
        });
    }
    if contract.gateway_interface != config.raw.gateway_interface {
        return Err(HostCheckError::NotWhatWasProposed {
            what: "gateway interface",
            got: contract.gateway_interface.clone(),
            proposed: config.raw.gateway_interface.clone(),
        });
    }
    if contract.mode != config.raw.mode {
        return Err(HostCheckError::NotWhatWasProposed {
            what: "mode",
            got: contract.mode.to_string(),
            proposed: config.raw.mode.to_string(),
        });
    }
    Ok(())
}

/// Refuses cluster CIDRs that overlap the host's own prefixes. Addresses on
/// mp0 (the node subnet lies inside a cluster CIDR by design) and inside the
/// masquerade subnets (ours) are not the host's own in this sense.
pub fn check_against_host(
    contract: &Contract,
    host_addresses: &[HostAddress],
    mp0_interface: &str,
) -> Result<(), HostCheckError> {
    for host in host_addresses {
        if host.dev == mp0_interface
            || contract
                .families
                .iter()
                .any(|f| f.masquerade.subnet.contains(&host.addr.addr()))
        {
            continue;
        }
        let prefix = host.addr.trunc();
        if let Some(cidr) = contract.cluster_cidrs().find(|c| overlaps(c, &prefix)) {
            return Err(HostCheckError::OverlapsHostAddress {
                cidr: *cidr,
                addr: host.addr,
                dev: host.dev.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use noverlay_proto::contract::{FamilyContract, Masquerade, Mode};
    use std::path::PathBuf;

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    fn contract(dual: bool) -> Contract {
        let mut families = vec![FamilyContract {
            masquerade: Masquerade::from_subnet(net("169.254.0.0/17")).expect("masq"),
            cluster_cidrs: vec![net("198.18.128.0/17"), net("198.19.0.0/24")],
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        }];
        if dual {
            families.push(FamilyContract {
                masquerade: Masquerade::from_subnet(net("fd69::/112")).expect("masq"),
                cluster_cidrs: vec![net("fd00:10:244::/48")],
                underlay_ip: "2001:db8::10".parse().expect("ip"),
            });
        }
        Contract::new(7, Mode::IN_SCOPE, families, 1400, "eth0".into()).expect("contract")
    }

    fn settings() -> HostSettings {
        HostSettings {
            gateway_interface: "eth0".into(),
            mp0_interface: "ovn-k8s-mp0".into(),
            mp0_routes: Mp0Routes::Keep,
            route_protocol: 240,
            nft_table: "noverlay".into(),
        }
    }

    fn assert_golden(name: &str, actual: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        noverlay_test_support::assert_golden(&dir, name, actual);
    }

    #[test]
    fn ipv4_plan_matches_golden() {
        assert_golden(
            "host_plan_ipv4.txt",
            &plan(&contract(false), &settings()).render(),
        );
    }

    #[test]
    fn dual_stack_plan_matches_golden() {
        assert_golden(
            "host_plan_dual.txt",
            &plan(&contract(true), &settings()).render(),
        );
    }

    #[test]
    fn one_route_per_cidr_and_one_set_element_no_src() {
        let removing = HostSettings {
            mp0_routes: Mp0Routes::Remove,
            ..settings()
        };
        let p = plan(&contract(true), &removing);
        assert_eq!(p.routes.len(), 3);
        let cidrs_per_family: Vec<usize> = p.nft.families.iter().map(|f| f.cidrs.len()).collect();
        assert_eq!(cidrs_per_family, [2, 1]);
        assert_eq!(
            render_route(&p.routes[0]),
            "198.18.128.0/17 via 169.254.0.4 dev eth0 proto 240 mtu 1400"
        );
        // Next to kept mp0 routes: two routes (the halves) per CIDR, still
        // one set element per CIDR.
        let p = plan(&contract(true), &settings());
        assert_eq!(p.routes.len(), 6);
        assert_eq!(p.nft.families[0].cidrs.len(), 2);
        assert_eq!(p.addresses[1].addr, net("fd69::2/112"));
    }

    #[test]
    fn broad_mp0_routes_are_those_covering_a_cluster_cidr() {
        let cidrs = [net("10.244.0.0/16")];
        assert!(is_broad_cluster_route(&net("10.244.0.0/16"), &cidrs));
        assert!(is_broad_cluster_route(&net("10.0.0.0/8"), &cidrs));
        assert!(
            !is_broad_cluster_route(&net("10.244.1.0/24"), &cidrs),
            "node subnet stays"
        );
        assert!(!is_broad_cluster_route(&net("192.168.0.0/16"), &cidrs));
    }

    #[test]
    fn overlap_with_host_addresses_is_refused_but_mp0_and_masquerade_are_not() {
        let c = contract(false);
        let ok = [
            HostAddress {
                dev: "ovn-k8s-mp0".into(),
                addr: net("198.18.130.2/24"),
            },
            HostAddress {
                dev: "eth0".into(),
                addr: net("169.254.0.2/17"),
            },
            HostAddress {
                dev: "eth0".into(),
                addr: net("198.18.0.10/24"),
            },
        ];
        assert_eq!(check_against_host(&c, &ok, "ovn-k8s-mp0"), Ok(()));
        let bad = [HostAddress {
            dev: "eth1".into(),
            addr: net("198.19.0.7/16"),
        }];
        let err = check_against_host(&c, &bad, "ovn-k8s-mp0").expect_err("overlap");
        assert!(
            err.to_string().contains("198.19.0.0/24") && err.to_string().contains("eth1"),
            "{err}"
        );
    }

    #[test]
    fn limits_refuse_broad_cidrs_and_the_dpus_own_address() {
        // The config tests' example, with the DPU on an address a CIDR
        // could cover and a narrower shortest prefix.
        let text = crate::config::tests::EXAMPLE
            .replace("127.0.0.1:50051", "198.19.254.2:50051")
            .replace(
                "masquerade_subnet = \"169.254.0.0/17\"",
                "masquerade_subnet = \"169.254.0.0/17\"\nshortest_cluster_prefix = 16",
            );
        let config = crate::config::HostConfig::parse(&text)
            .and_then(|c| c.validate())
            .expect("valid");
        let with = |cidrs: &[&str]| {
            let masquerade = contract(false).families[0].masquerade;
            Contract::new(
                2,
                Mode::IN_SCOPE,
                vec![FamilyContract {
                    masquerade,
                    cluster_cidrs: cidrs.iter().map(|c| net(c)).collect(),
                    underlay_ip: "198.18.0.10".parse().expect("ip"),
                }],
                1400,
                "eth0".into(),
            )
            .expect("contract")
        };
        assert_eq!(
            check_limits(&with(&["198.18.128.0/17"]), &config, &[]),
            Ok(())
        );
        assert_eq!(
            check_limits(&with(&["198.0.0.0/15"]), &config, &[]),
            Err(HostCheckError::TooBroad {
                cidr: net("198.0.0.0/15"),
                shortest: 16,
                field: "ipv4.shortest_cluster_prefix",
            })
        );
        let dpu: std::net::SocketAddr = config.raw.dpu.address.parse().expect("ip:port");
        let covering = IpNet::new(dpu.ip(), 24)
            .expect("prefix")
            .trunc()
            .to_string();
        let error =
            check_limits(&with(&[&covering]), &config, &[dpu.ip()]).expect_err("covers the DPU");
        assert!(
            error.to_string().contains(&dpu.ip().to_string())
                && error.to_string().contains(&covering),
            "{error}"
        );
        // A name that resolved to several addresses: each is checked.
        let resolved: [IpAddr; 2] = ["198.19.7.1".parse().expect("ip"), dpu.ip()];
        let error = check_limits(&with(&["198.19.0.0/16"]), &config, &resolved)
            .expect_err("covers a resolved address");
        assert!(error.to_string().contains("198.19.7.1"), "{error}");
        // Next to mp0's routes a CIDR is routed as its halves: a single
        // address cannot be; where mp0's routes are removed it can.
        assert_eq!(
            check_limits(&with(&["198.18.200.1/32"]), &config, &[]),
            Err(HostCheckError::CannotSplit {
                cidr: net("198.18.200.1/32")
            })
        );
        let mut removing = config.clone();
        removing.raw.mp0_routes = Mp0Routes::Remove;
        assert_eq!(
            check_limits(&with(&["198.18.200.1/32"]), &removing, &[]),
            Ok(())
        );
    }

    #[test]
    fn kept_mp0_routes_are_outdone_by_halves_removed_ones_replaced_whole() {
        let cidr = net("198.18.128.0/17");
        assert_eq!(
            route_destinations(&cidr, Mp0Routes::Keep),
            [net("198.18.128.0/18"), net("198.18.192.0/18")]
        );
        assert_eq!(route_destinations(&cidr, Mp0Routes::Remove), [cidr]);
        let v6 = net("fd00:10:244::/48");
        assert_eq!(
            route_destinations(&v6, Mp0Routes::Keep),
            [net("fd00:10:244::/49"), net("fd00:10:244:8000::/49")]
        );
    }
}
