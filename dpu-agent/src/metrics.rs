//! The dpu-agent's Prometheus metrics (opt-in: `metrics_listen`), read from
//! the state hub at each scrape.

use crate::{
    flows::{Flow, MatchKey},
    state::{AgentHandle, GuardState, Source},
    switch::ReadFlow,
};
use noverlay_runtime::metrics::encode::{self, Labels};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};
use std::{collections::HashMap, fmt};

/// A registry holding the agent's metrics.
pub fn registry(handle: AgentHandle) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DpuCollector { handle }));
    registry
}

struct DpuCollector {
    handle: AgentHandle,
}

impl fmt::Debug for DpuCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DpuCollector")
    }
}

impl Collector for DpuCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let handle = &self.handle;
        let peer = handle.peer();
        let flows = handle.flow_record();
        encode::gauge(
            &mut e,
            "noverlay_dpu_contract_revision",
            "Revision of the contract the DPU serves.",
            handle.offer().revision as f64,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_negotiations",
            "Successful negotiations with the host.",
            peer.negotiations,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_negotiations_refused",
            "Negotiations refused for a mismatch or a malformed proposal.",
            peer.refused_negotiations,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_auth_failures",
            "Connections refused during the mTLS handshake.",
            handle.refused_connections(),
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_certificate_expiry_unix",
            "Unix time at which the certificate dpu-agent presents (as loaded at start or the last reload) expires.",
            handle.tls().expiry_unix as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_host_applied_revision",
            "Revision the host last reported as applied (0: none).",
            peer.last_report
                .as_ref()
                .filter(|r| r.applied)
                .map_or(0.0, |r| r.revision as f64),
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_flows_installed",
            "Flows with our cookie on the bridge, as last read.",
            flows.installed.len() as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_flows_provided_by_others",
            "Planned flows left out because another controller's flow already does the job.",
            flows.provided.len() as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_flow_conflicts",
            "Planned flows not installed: another controller's flow has the same table, priority and match but other actions.",
            flows.conflicts.len() as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_flows_withheld",
            "Planned flows left out because the other flow of their lookup/path pair conflicts (both or neither).",
            flows.withheld.len() as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_foreign_flows_in_our_tables",
            "Other controllers' flows in our CIDR or related table (100, 101), or matching or setting reg11-reg15.",
            flows.trespassing.len() as f64,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_flow_installs_contested",
            "Installs refused (nothing written) because another controller's flow overlapping one of ours appeared between our read of the bridge and our commit; the bridge is read again and the install placed around it.",
            flows.contested_installs,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_flow_repairs",
            "Times our flows were found wiped or altered and restored.",
            flows.repairs,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_flow_last_repair_unix",
            "Unix time of the last restore of our flows (0: none).",
            flows.last_repair_unix as f64,
        )?;
        encode::metric(
            &mut e,
            "noverlay_dpu_flow_restore_seconds",
            "From the check that found our flows wiped or altered (a flow-monitor event, or the periodic check) to the restore bundle committed.",
            handle.restore_latency(),
        )?;
        let guard = handle.guard();
        encode::gauge(
            &mut e,
            "noverlay_dpu_uplink_guard_on",
            "1 while the uplink guard (nftables netdev egress on the uplink) is in place.",
            f64::from(u8::from(guard.state == GuardState::On)),
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_uplink_guard_dropped_packets",
            "Masquerade-sourced packets the uplink guard kept off the underlay since start: host traffic that was about to leave un-NATed.",
            guard.dropped_packets_total,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_uplink_guard_dropped_to_masquerade_packets",
            "Masquerade-destined packets the uplink guard kept off the underlay since start: replies to the host that OVN handed back while our flows were missing, flooded towards the uplink.",
            guard.to_masquerade_packets_total,
        )?;
        encode::counter(
            &mut e,
            "noverlay_dpu_uplink_guard_repairs",
            "Times the uplink guard was found missing or altered and restored.",
            guard.repairs,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_dpu_ovn_mismatches",
            "Ways OVN's gateway router, as the northbound database has it, would blackhole the path (0 when it agrees, or no [ovn] section); the ovn source's error names them.",
            handle.ovn_mismatches() as f64,
        )?;
        if let Some(routes) = handle.ovn_routes() {
            encode::labelled_gauges(
                &mut e,
                "noverlay_dpu_ovn_cluster_routes",
                "The gateway router's static routes that take traffic to the cluster CIDRs (inside one or holding one, the default route included), one per next hop, by origin: route_import (BGP-learned, imported by ovnkube) or other.",
                &[
                    (
                        vec![("origin", "route_import".to_string())],
                        routes.imported as f64,
                    ),
                    (
                        vec![("origin", "other".to_string())],
                        routes.routes.saturating_sub(routes.imported) as f64,
                    ),
                ],
            )?;
            encode::gauge(
                &mut e,
                "noverlay_dpu_ovn_unrouted_cluster_cidrs",
                "Cluster CIDRs the gateway router has no route for at all: OVN drops the host's traffic to them (the ovn source's error names them).",
                routes.unrouted.len() as f64,
            )?;
        }
        if let Some(fragments) = handle.fragments() {
            let per_family = |value: fn(&crate::fragments::FamilyFragments) -> u64| {
                [("ipv4", fragments.ipv4), ("ipv6", fragments.ipv6)]
                    .iter()
                    .map(|(family, f)| (vec![("family", family.to_string())], value(f)))
                    .collect::<Vec<(Labels, u64)>>()
            };
            encode::labelled_counters(
                &mut e,
                "noverlay_dpu_fragments_too_small",
                "Fragments Open vSwitch's conntrack dropped for being smaller than its minimum (all bridges of this ovs-vswitchd): a datagram cut again by a router on the way is lost on the DPU (userspace datapath).",
                &per_family(|f| f.too_small),
            )?;
            encode::labelled_counters(
                &mut e,
                "noverlay_dpu_fragments_reassembled",
                "Datagrams Open vSwitch's conntrack reassembled from fragments (all bridges of this ovs-vswitchd).",
                &per_family(|f| f.completed),
            )?;
            let min_sizes: Vec<(Labels, f64)> = per_family(|f| f.min_size)
                .into_iter()
                .map(|(labels, size)| (labels, size as f64))
                .collect();
            encode::labelled_gauges(
                &mut e,
                "noverlay_dpu_fragment_min_bytes",
                "Open vSwitch's smallest fragment (but the last) that conntrack takes; set with ovs-appctl dpctl/ipf-set-min-frag.",
                &min_sizes,
            )?;
        }
        let sources = handle.sources();
        let errors: Vec<(Labels, f64)> = Source::ALL
            .iter()
            .map(|s| {
                let failing = sources.get(*s).error().is_some();
                (
                    vec![("source", s.name().to_string())],
                    f64::from(u8::from(failing)),
                )
            })
            .collect();
        encode::labelled_gauges(
            &mut e,
            "noverlay_dpu_error",
            "1 while the source (ovsdb, flows, peer, reload, guard) is failing.",
            &errors,
        )?;
        encode::labelled_counters(
            &mut e,
            "noverlay_dpu_flow_packets",
            "Packets matched by each of our flows, as last read, labelled by what the flow is for. Starts again at 0 whenever the flow is added again: after a restore (ovnkube-node's rewrites of the bridge) and after a restart; use rate() or increase(), which take resets.",
            &flow_packets(
                &handle.desired_flows().unwrap_or_default(),
                &flows.installed,
            ),
        )
    }
}

/// Each installed flow's packet counter, labelled by table, priority, role,
/// family, variant and CIDR: labels that survive CIDR and port changes of
/// other flows, and tell every flow apart (one series each). A flow under
/// our cookie that the plan does not have is `unplanned`, told apart by its
/// match.
fn flow_packets(desired: &[Flow], installed: &[ReadFlow]) -> Vec<(Labels, u64)> {
    let planned: HashMap<MatchKey, &Flow> = desired.iter().map(|f| (f.match_key(), f)).collect();
    installed
        .iter()
        .map(|flow| {
            let (key, packets) = flow.match_and_packets();
            let (role, family, variant, cidr) = match planned.get(&key) {
                Some(f) => (
                    f.role.name(),
                    f.family_name(),
                    f.variant().to_string(),
                    f.cidr.map(|c| c.to_string()).unwrap_or_default(),
                ),
                None => ("unplanned", "", key.fields().join(","), String::new()),
            };
            let labels = vec![
                ("table", key.table.to_string()),
                ("priority", key.priority.to_string()),
                ("role", role.to_string()),
                ("family", family.to_string()),
                ("variant", variant),
                ("cidr", cidr),
            ];
            (labels, packets)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowSettings, PortMap, plan_flows, test_offer};

    const PORTS: PortMap = PortMap {
        host_representor: 1,
        patch: 2,
        uplink: 3,
        bridge_mac: [2, 0, 0xc6, 0x12, 0, 0x0a],
    };

    const SETTINGS: FlowSettings = FlowSettings {
        cookie: 0x6e6f7672,
        base_pipeline: crate::flows::BasePipeline::On,
        ct_zone: 64000,
    };

    /// A flow as the switch reports it: encoded, then read back.
    fn read_back(table: u8, priority: u16, matches: &str, actions: &str, packets: u64) -> ReadFlow {
        let spec = noverlay_openflow::spec::FlowSpec::parse(
            SETTINGS.cookie,
            table,
            priority,
            matches,
            actions,
        )
        .expect("spec");
        ReadFlow(noverlay_openflow::reply::FlowStats::of(&spec, packets, 0).expect("encoded"))
    }

    /// Every flow of a dual-stack plan, installed and read back, is a
    /// series of its own: Prometheus keeps one sample per label set.
    #[test]
    fn every_flow_of_a_dual_stack_plan_is_a_series_of_its_own() {
        use noverlay_proto::contract::{FamilyContract, Masquerade, Mode, Offer};
        let family = |subnet: &str, cidrs: &[&str], underlay: &str| FamilyContract {
            masquerade: Masquerade::from_subnet(subnet.parse().expect("net")).expect("masq"),
            cluster_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            underlay_ip: underlay.parse().expect("ip"),
        };
        let offer = Offer::new(
            1,
            Mode::IN_SCOPE,
            vec![
                family(
                    "169.254.0.0/17",
                    &["198.18.128.0/17", "198.19.0.0/24"],
                    "198.18.0.10",
                ),
                family("fd69::/112", &["fd00:10:244::/48"], "2001:db8::10"),
            ],
            1400,
        )
        .expect("offer");
        let desired = plan_flows(&offer, &PORTS, &SETTINGS);
        let installed: Vec<ReadFlow> = desired
            .iter()
            .map(|f| read_back(f.table, f.priority, &f.matches, &f.actions, 1))
            .collect();
        let samples = flow_packets(&desired, &installed);
        assert_eq!(samples.len(), desired.len());
        let mut series: Vec<&Labels> = samples.iter().map(|(labels, _)| labels).collect();
        series.sort();
        let repeated: Vec<_> = series.windows(2).filter(|w| w[0] == w[1]).collect();
        assert!(repeated.is_empty(), "repeated series: {repeated:?}");
    }

    #[test]
    fn flow_counters_are_labelled_by_role_and_cidr_not_by_flow_text() {
        let offer = test_offer(&["198.18.128.0/17"], "198.18.0.10");
        let desired = plan_flows(&offer, &PORTS, &SETTINGS);
        // As the switch reports them (field order differs from the plan's).
        let installed = [
            read_back(
                100,
                100,
                "ip,reg12=0xc6128000/0xffff8000",
                "set_field:0x2->reg11",
                12,
            ),
            read_back(
                0,
                510,
                "ip,in_port=1,nw_src=169.254.0.2,reg11=0x2",
                "goto_table:2",
                9,
            ),
            read_back(1, 100, "ip,ct_state=+trk+est,ct_mark=0x1", "output:2", 5),
            read_back(4, 7, "ip", "drop", 1),
        ];
        let samples = flow_packets(&desired, &installed);
        let label = |labels: &Labels, key: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let seen: Vec<(String, u64)> = samples
            .iter()
            .map(|(l, n)| {
                let text: Vec<String> = ["table", "priority", "role", "family", "variant", "cidr"]
                    .iter()
                    .map(|key| label(l, key))
                    .collect();
                (text.join(" "), *n)
            })
            .collect();
        let row = |labels: &str, n| (labels.to_string(), n);
        assert_eq!(
            seen,
            vec![
                row("100 100 cluster_cidr ipv4  198.18.128.0/17", 12),
                row("0 510 host_to_ovn ipv4  ", 9),
                row("1 100 return_to_ovn ipv4 ct_state=+trk+est ", 5),
                row("4 7 unplanned  ip ", 1),
            ]
        );
    }
}
