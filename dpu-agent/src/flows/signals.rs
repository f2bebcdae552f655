//! The flows for the network's own signals (docs/design.md, "ICMP errors,
//! path MTU and fragments"): ICMP errors and fragments from the underlay
//! sorted by conntrack into our related table, and traceroute's first hop
//! answered by OVN's gateway router. Part of the plan in [`super`].

use super::{
    FamilyMatch, Flow, FlowRole, FlowSettings, LOOKUP_CLUSTER, LOOKUP_NOT_YET, LOOKUP_STATE_REG,
    OVN_CT_MARK, PATH_PRIORITY, PortMap,
};
use noverlay_openflow::nxm::format_reg_match;
use noverlay_proto::contract::{FamilyContract, format_mac};

/// Our table that sorts what comes from the underlay and may belong to
/// one of our connections (ICMP errors, fragments): conntrack has run on
/// the packet (without NAT) before it gets here.
pub const RELATED_TABLE: u8 = 101;
/// Priority of the flows in [`RELATED_TABLE`] that take a packet as ours
/// (its miss flow: 0).
pub const RELATED_PRIORITY: u16 = 100;
/// The Ethernet source of the host's packets with TTL 1 on their way into
/// OVN: a locally administered address no one else sends from (its middle
/// bytes spell "novr", as our cookie does), so that OVN's gateway router,
/// which answers TTL 1 to the packet's Ethernet source, answers to it and
/// the answer can be told from every other packet OVN sends to the host.
pub const FIRST_HOP_MAC: [u8; 6] = [0x02, 0x6e, 0x6f, 0x76, 0x72, 0x01];
/// ICMPv4 errors that quote the packet they are about: destination
/// unreachable (fragmentation needed among them), time exceeded,
/// parameter problem.
pub const ICMPV4_ERRORS: [u8; 3] = [3, 11, 12];
/// ICMPv6 errors: destination unreachable, packet too big, time exceeded,
/// parameter problem.
pub const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];
/// Priority of the first-hop flows: above the path flows they refine.
pub const FIRST_HOP_PRIORITY: u16 = PATH_PRIORITY + 1;

/// What comes back from the underlay that is not a reply our path already
/// carries: ICMP errors about our connections (path MTU discovery,
/// traceroute, unreachables from routers on the way) and fragments of our
/// replies. Both are sorted by conntrack in our zone, without NAT, so that
/// what is not ours goes back to table 0 unchanged: an error whose
/// connection we committed (ct_mark 0x1, original source the host
/// masquerade IP) is un-NATed and handed straight to the host (through
/// OVN it would come back with a source that is no cluster address, which
/// no return flow of ours carries); a fragment of one of our replies is
/// un-NATed and sent on to table 1 as the ingress flow does (next to
/// OVN-Kubernetes, whose reassembly flow loops fragments in the userspace
/// datapath, this is the only way they reach OVN).
pub(super) fn related_flows(
    flows: &mut Vec<Flow>,
    family: &FamilyContract,
    fm: &FamilyMatch,
    ports: &PortMap,
    settings: &FlowSettings,
) {
    let mac = format_mac(&ports.bridge_mac);
    let zone = settings.ct_zone;
    let not_yet = format_reg_match(LOOKUP_STATE_REG, LOOKUP_NOT_YET, u32::MAX);
    let from_underlay = |proto: &str| {
        format!(
            "in_port={},dl_dst={mac},{proto},{}={}",
            ports.uplink, fm.dst, family.underlay_ip
        )
    };
    let classify = format!("ct(zone={zone},table={RELATED_TABLE})");
    for kind in fm.icmp_errors {
        flows.push(Flow {
            table: 0,
            priority: PATH_PRIORITY,
            role: FlowRole::UplinkIcmpError,
            cidr: None,
            matches: format!(
                "{},icmp_type={kind},nw_frag=no,{not_yet}",
                from_underlay(fm.icmp)
            ),
            actions: classify.clone(),
        });
    }
    flows.push(Flow {
        table: 0,
        priority: PATH_PRIORITY,
        role: FlowRole::UplinkFragment,
        cidr: None,
        matches: format!("{},nw_frag=yes,{not_yet}", from_underlay(fm.proto)),
        actions: classify,
    });
    let ours = format!(
        "ct_mark={OVN_CT_MARK:#x},{}={}",
        fm.ct_src, family.masquerade.host_ip
    );
    flows.push(Flow {
        table: RELATED_TABLE,
        priority: RELATED_PRIORITY,
        role: FlowRole::IcmpErrorToHost,
        cidr: None,
        matches: format!("{},ct_state=+trk+rel,{ours}", fm.proto),
        actions: format!("ct(zone={zone},nat),{}", straight_to_host(family, ports)),
    });
    flows.push(Flow {
        table: RELATED_TABLE,
        priority: RELATED_PRIORITY,
        role: FlowRole::FragmentToOvn,
        cidr: None,
        // -rel: disjoint from the error flow (a related connection's
        // packets can be +est+rel).
        matches: format!("{},ct_state=+trk+est-rel,{ours}", fm.proto),
        actions: format!("ct(zone={zone},nat,table=1)"),
    });
}

/// The actions that hand a packet of our own making straight to the host,
/// framed as table 3 frames OVN's packets to it: from the dummy next hop's
/// MAC to the bridge MAC (the host's).
fn straight_to_host(family: &FamilyContract, ports: &PortMap) -> String {
    format!(
        "set_field:{}->eth_src,set_field:{}->eth_dst,output:{}",
        format_mac(&family.masquerade.dummy_next_hop_mac()),
        format_mac(&ports.bridge_mac),
        ports.host_representor
    )
}

/// OVN's gateway router answers a packet that arrives with TTL 1 (the
/// first hop of a traceroute) itself: a time exceeded from its own address
/// (the node IP), sent back to the packet's Ethernet source. Two things
/// keep that answer from the host: the host's frames carry the host's MAC,
/// which is also the router's, so OVN hands the answer back to the router
/// (which drops it); and the node IP is the host's own address, so the host
/// would drop an error from it as a martian. So the host's packets with
/// TTL 1 leave for OVN from [`FIRST_HOP_MAC`], and a time exceeded from the
/// router's address to that MAC can only be an answer to one of them: it
/// goes straight to the host, its source rewritten to OVN's masquerade IP
/// (how the router appears on the host's side). No conntrack; the only cost
/// to other packets is the TTL in the host's megaflows.
pub(super) fn first_hop_flows(
    flows: &mut Vec<Flow>,
    family: &FamilyContract,
    fm: &FamilyMatch,
    ports: &PortMap,
) {
    let masq = family.masquerade.host_ip;
    let first_hop_mac = format_mac(&FIRST_HOP_MAC);
    flows.push(Flow {
        table: 0,
        priority: FIRST_HOP_PRIORITY,
        role: FlowRole::HostToOvnFirstHop,
        cidr: None,
        matches: format!(
            "in_port={},{},{}={masq},nw_ttl=1,{}",
            ports.host_representor,
            fm.proto,
            fm.src,
            format_reg_match(LOOKUP_STATE_REG, LOOKUP_CLUSTER, u32::MAX)
        ),
        actions: format!("set_field:{first_hop_mac}->eth_src,goto_table:2"),
    });
    flows.push(Flow {
        table: 0,
        priority: FIRST_HOP_PRIORITY,
        role: FlowRole::FirstHopAnswerToHost,
        cidr: None,
        matches: format!(
            "in_port={},dl_dst={first_hop_mac},{},{}={},{}={masq},icmp_type={}",
            ports.patch, fm.icmp, fm.src, family.underlay_ip, fm.dst, fm.time_exceeded,
        ),
        actions: format!(
            "set_field:{}->{},{}",
            family.masquerade.ovn_ip(),
            fm.src_field,
            straight_to_host(family, ports)
        ),
    });
}
