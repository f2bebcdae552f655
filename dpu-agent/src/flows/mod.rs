//! The DPU flow plan: offer + port map -> the OpenFlow flows of the shared
//! gateway bridge, as text `ovs-ofctl add-flows` takes.
//!
//! Pure code: the same input always renders the same lines, in a stable
//! order, so plans can be diffed, golden-tested and compared with what OVS
//! reports. IPv4 and IPv6 share one renderer through [`FamilyMatch`].

mod match_key;
mod signals;

pub use match_key::MatchKey;
pub use signals::{
    FIRST_HOP_MAC, FIRST_HOP_PRIORITY, ICMPV4_ERRORS, ICMPV6_ERRORS, RELATED_PRIORITY,
    RELATED_TABLE,
};

use ipnet::IpNet;
use noverlay_openflow::nxm::{NxmField, Subfield, format_reg_match, format_reg_set};
use noverlay_proto::contract::{Family, Offer, format_mac};
use std::net::IpAddr;

/// Priority of the path flows in table 0 (free in OVN-Kubernetes' set).
pub const PATH_PRIORITY: u16 = 510;
/// Our table of cluster CIDRs: one flow per CIDR, reached by `resubmit`
/// from the path flows (OVN-Kubernetes uses tables 0-7 and 11).
pub const CIDR_TABLE: u8 = 100;
/// Priority of the per-CIDR flows in [`CIDR_TABLE`] (its miss flow: 0).
pub const CIDR_PRIORITY: u16 = 100;
/// Conntrack zone of the shared gateway bridge (OVN-Kubernetes default).
pub const DEFAULT_CT_ZONE: u16 = 64000;
/// ct_mark of connections that belong to OVN.
pub const OVN_CT_MARK: u32 = 0x1;
/// The register holding where a packet is in our CIDR lookup (one of
/// the `LOOKUP_*` values). Registers start at 0 for every packet on the
/// bridge and are cleared when it crosses a patch port; OVN-Kubernetes'
/// breth0 flows use only reg0.
pub const LOOKUP_STATE_REG: u8 = 11;
/// The first register of the address looked up: reg12 for IPv4,
/// reg12-reg15 for IPv6 (most significant word first).
pub const LOOKUP_ADDRESS_REG: u8 = 12;
/// Not looked up yet: the entry flows match.
pub const LOOKUP_NOT_YET: u32 = 0;
/// Looked up; the address is in no cluster CIDR. Also what a packet from
/// the underlay carries once our related table found it is not ours: either
/// way, no flow of ours matches it again and it goes on to the others'.
pub const LOOKUP_MISS: u32 = 1;
/// Looked up; the address is in a cluster CIDR: the path flows match.
pub const LOOKUP_CLUSTER: u32 = 2;

/// The bridge ports the flows refer to, by OpenFlow port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    pub host_representor: u32,
    pub patch: u32,
    pub uplink: u32,
    pub bridge_mac: [u8; 6],
}

/// Whether the agent provides the base pipeline (tables 1-3 and the ingress
/// ct flow) that its path flows chain into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BasePipeline {
    /// Only where nobody else provides it: a base flow is left out when
    /// another controller has a flow with the same table and match (at any
    /// priority). Next to OVN-Kubernetes, which has them all, none is
    /// installed; standalone, all are.
    #[default]
    Auto,
    /// Planned always; still never installed over another controller's flow
    /// with the same table, priority and match (that is reported as a
    /// conflict when its actions differ).
    On,
    /// Never: someone else provides it.
    Off,
}

/// Rendering settings that do not come from the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    pub cookie: u64,
    pub base_pipeline: BasePipeline,
    pub ct_zone: u16,
}

/// What a flow is for: a label that stays the same when CIDRs or port
/// numbers change (metrics name flows by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowRole {
    /// Host -> OVN (table 0, once the destination is a cluster address).
    HostToOvn,
    /// OVN -> host (table 0, once the source is a cluster address).
    OvnToHost,
    /// OVN -> underlay with the SNAT to the node IP (table 0, once the
    /// destination is a cluster address).
    OvnToUplink,
    /// Table 0: looks the destination of a host -> OVN candidate up.
    HostToOvnLookup,
    /// Table 0: looks the source of an OVN -> host candidate up.
    OvnToHostLookup,
    /// Table 0: looks the destination of an OVN -> underlay candidate up.
    OvnToUplinkLookup,
    /// Our CIDR table: one cluster CIDR.
    ClusterCidr,
    /// Our CIDR table: anything else (no action: the lookup misses).
    CidrMiss,
    /// Table 0: an ICMP error from the underlay to the node IP, to
    /// conntrack (no NAT) and our related table.
    UplinkIcmpError,
    /// Table 0: a fragment from the underlay to the node IP, likewise.
    UplinkFragment,
    /// Related table: an ICMP error about one of our connections, un-NATed
    /// and handed straight to the host.
    IcmpErrorToHost,
    /// Related table: a fragment of a reply on one of our connections,
    /// un-NATed and sent on as the ingress flow would (table 1).
    FragmentToOvn,
    /// Related table: anything else, back to table 0 as it came.
    RelatedMiss,
    /// Table 0: a host -> OVN packet with TTL 1, sent from
    /// [`FIRST_HOP_MAC`] so that OVN's answer leaves OVN and can be told
    /// apart.
    HostToOvnFirstHop,
    /// Table 0: OVN's gateway router's time exceeded to such a packet,
    /// straight to the host from OVN's masquerade IP.
    FirstHopAnswerToHost,
    /// Underlay ingress into conntrack (base pipeline, priority 50).
    UplinkIngress,
    /// Table 1: OVN's connections back to the patch port.
    ReturnToOvn,
    /// Table 1: everything else, NORMAL.
    ReturnNormal,
    /// Table 2: to the patch port with the bridge MAC.
    ToPatch,
    /// Table 3: to the host representor.
    ToHost,
}

impl FlowRole {
    /// Part of the base pipeline (not a path flow of ours).
    pub fn is_base(self) -> bool {
        matches!(
            self,
            FlowRole::UplinkIngress
                | FlowRole::ReturnToOvn
                | FlowRole::ReturnNormal
                | FlowRole::ToPatch
                | FlowRole::ToHost
        )
    }

    /// The other flow of a direction's lookup/path pair: one without the
    /// other looks traffic up and then drops it (or never looks it up).
    pub fn partner(self) -> Option<FlowRole> {
        use FlowRole::*;
        match self {
            HostToOvn => Some(HostToOvnLookup),
            HostToOvnLookup => Some(HostToOvn),
            OvnToHost => Some(OvnToHostLookup),
            OvnToHostLookup => Some(OvnToHost),
            OvnToUplink => Some(OvnToUplinkLookup),
            OvnToUplinkLookup => Some(OvnToUplink),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowRole::HostToOvn => "host_to_ovn",
            FlowRole::OvnToHost => "ovn_to_host",
            FlowRole::OvnToUplink => "ovn_to_uplink",
            FlowRole::HostToOvnLookup => "host_to_ovn_lookup",
            FlowRole::OvnToHostLookup => "ovn_to_host_lookup",
            FlowRole::OvnToUplinkLookup => "ovn_to_uplink_lookup",
            FlowRole::ClusterCidr => "cluster_cidr",
            FlowRole::CidrMiss => "cidr_miss",
            FlowRole::UplinkIcmpError => "uplink_icmp_error",
            FlowRole::UplinkFragment => "uplink_fragment",
            FlowRole::IcmpErrorToHost => "icmp_error_to_host",
            FlowRole::FragmentToOvn => "fragment_to_ovn",
            FlowRole::RelatedMiss => "related_miss",
            FlowRole::HostToOvnFirstHop => "host_to_ovn_first_hop",
            FlowRole::FirstHopAnswerToHost => "first_hop_answer_to_host",
            FlowRole::UplinkIngress => "uplink_ingress",
            FlowRole::ReturnToOvn => "return_to_ovn",
            FlowRole::ReturnNormal => "return_normal",
            FlowRole::ToPatch => "to_patch",
            FlowRole::ToHost => "to_host",
        }
    }
}

/// One flow: its match part (with table and priority) and its actions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub table: u8,
    pub priority: u16,
    pub role: FlowRole,
    /// The cluster CIDR the flow is for (a CIDR's own flow in our CIDR
    /// table only).
    pub cidr: Option<IpNet>,
    /// Match fields after table and priority, comma-separated.
    pub matches: String,
    pub actions: String,
}

impl Flow {
    /// The flow as one `ovs-ofctl add-flow` line, cookie first.
    pub fn render(&self, cookie: u64) -> String {
        let mut line = format!(
            "cookie={cookie:#x},table={},priority={}",
            self.table, self.priority
        );
        if !self.matches.is_empty() {
            line.push(',');
            line.push_str(&self.matches);
        }
        line.push_str(",actions=");
        line.push_str(&self.actions);
        line
    }

    pub fn match_key(&self) -> MatchKey {
        MatchKey::new(self.table, self.priority, &self.matches)
    }

    /// The address family the flow matches ("" for a flow of both).
    pub fn family_name(&self) -> &'static str {
        self.matches
            .split(',')
            .find_map(|field| match field {
                "ip" | "icmp" => Some("ipv4"),
                "ipv6" | "icmp6" => Some("ipv6"),
                _ => None,
            })
            .unwrap_or("")
    }

    /// What tells this flow from the others of its role and family (the
    /// ct_state of a return flow, the ICMP type of an error flow; "" where
    /// the role and family say it all), so that each flow's counter is a
    /// series of its own.
    pub fn variant(&self) -> &str {
        let field = match self.role {
            FlowRole::ReturnToOvn => "ct_state=",
            FlowRole::UplinkIcmpError => "icmp_type=",
            _ => return "",
        };
        self.matches
            .split(',')
            .find(|f| f.starts_with(field))
            .unwrap_or("")
    }
}

/// Match keywords of one address family in ovs-ofctl syntax.
struct FamilyMatch {
    proto: &'static str,
    icmp: &'static str,
    icmp_errors: &'static [u8],
    /// Time exceeded (in transit), the error a router answers TTL 1 with.
    time_exceeded: u8,
    src: &'static str,
    dst: &'static str,
    /// The original direction's source of a tracked packet's connection.
    ct_src: &'static str,
    /// The source address as set_field names it.
    src_field: &'static str,
    /// The address fields as a `move` names them.
    move_src: NxmField,
    move_dst: NxmField,
}

impl FamilyMatch {
    fn of(family: Family) -> Self {
        match family {
            Family::Ipv4 => FamilyMatch {
                proto: "ip",
                icmp: "icmp",
                icmp_errors: &ICMPV4_ERRORS,
                time_exceeded: 11,
                src: "nw_src",
                dst: "nw_dst",
                ct_src: "ct_nw_src",
                src_field: "ip_src",
                move_src: NxmField::Ipv4Src,
                move_dst: NxmField::Ipv4Dst,
            },
            Family::Ipv6 => FamilyMatch {
                proto: "ipv6",
                icmp: "icmp6",
                icmp_errors: &ICMPV6_ERRORS,
                time_exceeded: 3,
                src: "ipv6_src",
                dst: "ipv6_dst",
                ct_src: "ct_ipv6_src",
                src_field: "ipv6_src",
                move_src: NxmField::Ipv6Src,
                move_dst: NxmField::Ipv6Dst,
            },
        }
    }
}

/// The 32-bit words of a prefix as register matches from
/// [`LOOKUP_ADDRESS_REG`] on, most significant first; words the prefix
/// does not reach are not matched.
fn cidr_register_matches(net: &IpNet) -> Vec<String> {
    let (address, mask): (Vec<u8>, Vec<u8>) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let word = |bytes: &[u8]| bytes.iter().fold(0u32, |w, b| w << 8 | u32::from(*b));
    address
        .chunks(4)
        .zip(mask.chunks(4))
        .zip(LOOKUP_ADDRESS_REG..)
        .filter(|((_, mask), _)| word(mask) != 0)
        .map(|((value, mask), reg)| format_reg_match(reg, word(value), word(mask)))
        .collect()
}

/// Copies the packet's source or destination address into the address
/// registers, most significant word first.
fn address_moves(from: NxmField) -> Vec<String> {
    let words = from.bits() / 32;
    (0..words)
        .zip(LOOKUP_ADDRESS_REG..)
        .map(|(i, reg)| {
            let src = Subfield {
                field: from,
                offset: (words - 1 - i) * 32,
                bits: 32,
            };
            let dst = Subfield::whole(NxmField::Reg(reg));
            format!("move:{src}->{dst}")
        })
        .collect()
}

/// An address as the nat() action takes it: IPv6 in brackets.
fn nat_address(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The full desired flow set, sorted by table, priority descending, match.
pub fn plan_flows(offer: &Offer, ports: &PortMap, settings: &FlowSettings) -> Vec<Flow> {
    let mac = format_mac(&ports.bridge_mac);
    let zone = settings.ct_zone;
    let mut flows = Vec::new();
    for family in &offer.families {
        let fm = FamilyMatch::of(family.family());
        let masq = family.masquerade.host_ip;
        // One direction of the path: the packets it may carry (from a
        // port, to or from the masquerade IP), which of their addresses
        // must be in a cluster CIDR, and what to do with them then.
        let directions = [
            (
                FlowRole::HostToOvnLookup,
                FlowRole::HostToOvn,
                // Host -> OVN: the host already SNATed to its masquerade IP.
                format!(
                    "in_port={},{},{}={masq}",
                    ports.host_representor, fm.proto, fm.src
                ),
                fm.move_dst,
                "goto_table:2".to_string(),
            ),
            (
                FlowRole::OvnToHostLookup,
                FlowRole::OvnToHost,
                // OVN -> host: replies routed back to the masquerade subnet.
                format!("in_port={},{},{}={masq}", ports.patch, fm.proto, fm.dst),
                fm.move_src,
                "goto_table:3".to_string(),
            ),
            (
                FlowRole::OvnToUplinkLookup,
                FlowRole::OvnToUplink,
                // OVN -> underlay: the second (and last) SNAT, to the node IP.
                format!(
                    "in_port={},dl_src={mac},{},{}={masq}",
                    ports.patch, fm.proto, fm.src
                ),
                fm.move_dst,
                format!(
                    "ct(commit,zone={zone},nat(src={}),exec(set_field:{OVN_CT_MARK:#x}->ct_mark)),output:{}",
                    nat_address(&family.underlay_ip),
                    ports.uplink
                ),
            ),
        ];
        for (lookup_role, role, matches, address, actions) in directions {
            // First pass: copy the address, look it up in our CIDR table,
            // then run table 0 again, where this flow no longer matches.
            // On a miss nothing of ours matches then either, and the
            // packet goes on to the other controllers' lower-priority
            // flows as if ours were not there.
            let mut lookup = address_moves(address);
            lookup.push(format_reg_set(LOOKUP_STATE_REG, LOOKUP_MISS));
            lookup.push(format!("resubmit(,{CIDR_TABLE})"));
            lookup.push("resubmit(,0)".into());
            flows.push(Flow {
                table: 0,
                priority: PATH_PRIORITY,
                role: lookup_role,
                cidr: None,
                matches: format!(
                    "{matches},{}",
                    format_reg_match(LOOKUP_STATE_REG, LOOKUP_NOT_YET, u32::MAX)
                ),
                actions: lookup.join(","),
            });
            // Second pass, for a cluster address: the path itself.
            flows.push(Flow {
                table: 0,
                priority: PATH_PRIORITY,
                role,
                cidr: None,
                matches: format!(
                    "{matches},{}",
                    format_reg_match(LOOKUP_STATE_REG, LOOKUP_CLUSTER, u32::MAX)
                ),
                actions,
            });
        }
        signals::related_flows(&mut flows, family, &fm, ports, settings);
        signals::first_hop_flows(&mut flows, family, &fm, ports);
        for net in &family.cluster_cidrs {
            flows.push(Flow {
                table: CIDR_TABLE,
                priority: CIDR_PRIORITY,
                role: FlowRole::ClusterCidr,
                cidr: Some(*net),
                matches: std::iter::once(fm.proto.to_string())
                    .chain(cidr_register_matches(net))
                    .collect::<Vec<_>>()
                    .join(","),
                actions: format_reg_set(LOOKUP_STATE_REG, LOOKUP_CLUSTER),
            });
        }
        if settings.base_pipeline != BasePipeline::Off {
            // Underlay ingress: un-NAT replies, then table 1 picks OVN's.
            flows.push(Flow {
                table: 0,
                priority: 50,
                role: FlowRole::UplinkIngress,
                cidr: None,
                matches: format!("{},dl_dst={mac}", fm.proto),
                actions: format!("ct(zone={zone},nat,table=1)"),
            });
            for state in ["+trk+est", "+trk+rel"] {
                flows.push(Flow {
                    table: 1,
                    priority: 100,
                    role: FlowRole::ReturnToOvn,
                    cidr: None,
                    matches: format!("{},ct_state={state},ct_mark={OVN_CT_MARK:#x}", fm.proto),
                    actions: format!("output:{}", ports.patch),
                });
            }
        }
    }
    if !offer.families.is_empty() {
        flows.push(Flow {
            table: RELATED_TABLE,
            priority: 0,
            role: FlowRole::RelatedMiss,
            cidr: None,
            matches: String::new(),
            // As it came: conntrack's verdict forgotten, marked as seen so
            // that our table-0 flows let it pass to the others' flows.
            actions: format!(
                "ct_clear,{},resubmit(,0)",
                format_reg_set(LOOKUP_STATE_REG, LOOKUP_MISS)
            ),
        });
        flows.push(Flow {
            table: CIDR_TABLE,
            priority: 0,
            role: FlowRole::CidrMiss,
            cidr: None,
            matches: String::new(),
            actions: "drop".into(),
        });
    }
    if settings.base_pipeline != BasePipeline::Off {
        flows.push(Flow {
            table: 1,
            priority: 0,
            role: FlowRole::ReturnNormal,
            cidr: None,
            matches: String::new(),
            actions: "NORMAL".into(),
        });
        flows.push(Flow {
            table: 2,
            priority: 100,
            role: FlowRole::ToPatch,
            cidr: None,
            matches: String::new(),
            actions: format!("set_field:{mac}->eth_dst,output:{}", ports.patch),
        });
        flows.push(Flow {
            table: 3,
            priority: 100,
            role: FlowRole::ToHost,
            cidr: None,
            matches: String::new(),
            actions: format!(
                "move:NXM_OF_ETH_DST[]->NXM_OF_ETH_SRC[],set_field:{mac}->eth_dst,output:{}",
                ports.host_representor
            ),
        });
    }
    flows.sort_by(|a, b| {
        (a.table, std::cmp::Reverse(a.priority), &a.matches).cmp(&(
            b.table,
            std::cmp::Reverse(b.priority),
            &b.matches,
        ))
    });
    flows
}

/// An IPv4 offer for unit tests: masquerade 169.254.0.0/17, MTU 1400.
#[cfg(test)]
pub(crate) fn test_offer(cidrs: &[&str], underlay_ip: &str) -> Offer {
    use noverlay_proto::contract::{FamilyContract, Masquerade, Mode};
    Offer::new(
        1,
        Mode::IN_SCOPE,
        vec![FamilyContract {
            masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                .expect("masq"),
            cluster_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            underlay_ip: underlay_ip.parse().expect("ip"),
        }],
        1400,
    )
    .expect("offer")
}

/// The plan as `ovs-ofctl` lines.
pub fn render_flows(flows: &[Flow], cookie: u64) -> Vec<String> {
    flows.iter().map(|f| f.render(cookie)).collect()
}

/// One atomic, cookie-scoped replace for `ovs-ofctl --bundle add-flows`:
/// delete every flow of our cookie, then add the plan. Flows with any other
/// cookie are untouched.
pub fn render_bundle(flows: &[Flow], cookie: u64) -> String {
    let mut text = format!("delete cookie={cookie:#x}/-1\n");
    for flow in flows {
        text.push_str("add ");
        text.push_str(&flow.render(cookie));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use noverlay_proto::contract::{FamilyContract, Masquerade, Mode};
    use std::path::PathBuf;

    fn offer(dual: bool, cidrs_v4: &[&str]) -> Offer {
        let mut families = vec![FamilyContract {
            masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                .expect("masq"),
            cluster_cidrs: cidrs_v4.iter().map(|c| c.parse().expect("cidr")).collect(),
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        }];
        if dual {
            families.push(FamilyContract {
                masquerade: Masquerade::from_subnet("fd69::/112".parse().expect("net"))
                    .expect("masq"),
                cluster_cidrs: vec!["fd00:10:244::/48".parse().expect("cidr")],
                underlay_ip: "2001:db8::10".parse().expect("ip"),
            });
        }
        Offer::new(1, Mode::IN_SCOPE, families, 1400).expect("offer")
    }

    const PORTS: PortMap = PortMap {
        host_representor: 1,
        patch: 2,
        uplink: 3,
        bridge_mac: [0x02, 0x00, 0xc6, 0x12, 0x00, 0x0a],
    };

    const SETTINGS: FlowSettings = FlowSettings {
        cookie: 0x6e6f7672,
        base_pipeline: BasePipeline::On,
        ct_zone: DEFAULT_CT_ZONE,
    };

    fn assert_golden(name: &str, actual: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        noverlay_test_support::assert_golden(&dir, name, actual);
    }

    #[test]
    fn ipv4_bundle_matches_golden() {
        let flows = plan_flows(&offer(false, &["198.18.128.0/17"]), &PORTS, &SETTINGS);
        assert_golden("flows_ipv4.txt", &render_bundle(&flows, SETTINGS.cookie));
    }

    #[test]
    fn dual_stack_bundle_matches_golden() {
        let flows = plan_flows(
            &offer(true, &["198.18.128.0/17", "198.19.0.0/24"]),
            &PORTS,
            &SETTINGS,
        );
        assert_golden("flows_dual.txt", &render_bundle(&flows, SETTINGS.cookie));
    }

    #[test]
    fn path_flows_scale_with_cidrs_and_base_pipeline_is_optional() {
        let settings = FlowSettings {
            base_pipeline: BasePipeline::Off,
            ..SETTINGS
        };
        let flows = plan_flows(
            &offer(
                false,
                &["198.18.128.0/17", "198.19.0.0/24", "198.19.1.0/24"],
            ),
            &PORTS,
            &settings,
        );
        let per_cidr: Vec<_> = flows.iter().filter(|f| f.cidr.is_some()).collect();
        assert_eq!(per_cidr.len(), 3, "one flow per CIDR");
        assert!(per_cidr.iter().all(|f| f.table == CIDR_TABLE));
        assert_eq!(
            flows.len(),
            3 + 6 + 1 + 4 + 3 + 2,
            "and a constant: the lookup and path flows of three directions, the miss, \
             the ICMP error types and fragments from the underlay, the related table, \
             the first hop's two"
        );
        assert!(flows.iter().all(|f| !f.role.is_base()));
        let more = plan_flows(
            &offer(
                false,
                &[
                    "198.18.128.0/17",
                    "198.19.0.0/24",
                    "198.19.1.0/24",
                    "198.19.2.0/24",
                ],
            ),
            &PORTS,
            &settings,
        );
        assert_eq!(more.len(), flows.len() + 1);
    }

    #[test]
    fn every_line_carries_our_cookie() {
        let flows = plan_flows(&offer(true, &["198.18.128.0/17"]), &PORTS, &SETTINGS);
        let bundle = render_bundle(&flows, SETTINGS.cookie);
        assert!(bundle.starts_with("delete cookie=0x6e6f7672/-1\n"));
        assert!(
            bundle
                .lines()
                .skip(1)
                .all(|l| l.starts_with("add cookie=0x6e6f7672,"))
        );
    }
}
