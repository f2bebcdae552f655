//! Any bytes from the switch as one OpenFlow message: the hello, errors,
//! flow-monitor events, flow-stats replies and the flow decoder, down to
//! what the agent does with another controller's flows (placement next to
//! them, the probes of an install) must never panic, and the decoded text
//! of a flow must parse back as a dump line.
#![no_main]

use dpu_agent::{
    coexist,
    flows::{self, BasePipeline, FlowSettings, PortMap},
    switch::ReadFlow,
    twins::TwinChecks,
};
use libfuzzer_sys::fuzz_target;
use noverlay_openflow::{decode, wire};
use noverlay_proto::contract::{FamilyContract, Masquerade, Mode, Offer};
use std::sync::OnceLock;

fn plan() -> &'static [flows::Flow] {
    static PLAN: OnceLock<Vec<flows::Flow>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let families = vec![FamilyContract {
            masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net"))
                .expect("masq"),
            cluster_cidrs: vec!["198.18.128.0/17".parse().expect("cidr")],
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        }];
        let offer = Offer::new(1, Mode::IN_SCOPE, families, 1400).expect("offer");
        let ports = PortMap {
            host_representor: 1,
            patch: 2,
            uplink: 3,
            bridge_mac: [2, 0, 0xc6, 0x12, 0, 0x0a],
        };
        let settings = FlowSettings {
            cookie: 0x6e6f_7672,
            base_pipeline: BasePipeline::On,
            ct_zone: flows::DEFAULT_CT_ZONE,
        };
        flows::plan_flows(&offer, &ports, &settings)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::Header::parse(data);
    let _ = wire::hello_versions(data).map(|v| wire::negotiate(&wire::VERSIONS, &v));
    let _ = wire::error_type_code(data);
    let _ = wire::is_flow_monitor_event(data);
    let _ = wire::flow_mod_match_and_instructions(data);
    // As a flow-stats reply, and as a bare flow-stats body.
    let body = wire::multipart_reply(data).map_or(data, |(_, _, body)| body);
    for body in [body, data] {
        let Some(entries) = wire::parse_flow_stats(body) else {
            continue;
        };
        let mut foreign = Vec::new();
        for entry in entries {
            let _ = decode::match_text(&entry.match_fields);
            let _ = decode::instructions_text(&entry.instructions);
            let line = decode::dump_line(&entry);
            let read = ReadFlow(entry);
            let _ = (read.identity(), read.match_and_packets(), read.cookie());
            if let Some(flow) = read.as_foreign() {
                foreign.push(flow);
            } else {
                // Our own decoder's text must read as a dump line.
                panic!("decoded flow does not parse back: {line}");
            }
        }
        let placement = coexist::place(plan(), &foreign, BasePipeline::On, 0x6e6f_7672);
        let mut checks = TwinChecks::default();
        checks.read(&foreign);
        let probes = checks.plan(&placement.install);
        assert!(probes.len() <= placement.install.len());
    }
});
