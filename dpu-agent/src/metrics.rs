//! The dpu-agent's Prometheus metrics (opt-in: `metrics_listen`).

use crate::{openflow::without_counters, server::AgentHandle};
use noverlay_proto::metrics::Exposition;

/// The current metrics of the agent, as Prometheus text.
pub fn render(handle: &AgentHandle) -> String {
    let (negotiations, refused) = handle.negotiations();
    let report = handle.last_host_report();
    let flows = handle.installed_flows();
    let packets: Vec<(String, f64)> = flows
        .iter()
        .map(|flow| {
            let packets = flow
                .split(", ")
                .find_map(|part| part.strip_prefix("n_packets="))
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
            let name = without_counters(flow);
            let name = name.split_once(", ").map(|(_, rest)| rest).unwrap_or(&name);
            (name.to_string(), packets)
        })
        .collect();
    Exposition::default()
        .gauge(
            "noverlay_dpu_contract_revision",
            "Revision of the contract the DPU serves.",
            handle.offer().revision as f64,
        )
        .counter(
            "noverlay_dpu_negotiations_total",
            "Successful negotiations with the host.",
            negotiations,
        )
        .counter(
            "noverlay_dpu_negotiations_refused_total",
            "Negotiations refused for a mismatch or a malformed proposal.",
            refused,
        )
        .counter(
            "noverlay_dpu_auth_failures_total",
            "Connections refused during the mTLS handshake.",
            handle.refused_connections(),
        )
        .gauge(
            "noverlay_dpu_host_applied_revision",
            "Revision the host last reported as applied (0: none).",
            report
                .as_ref()
                .filter(|r| r.applied)
                .map(|r| r.revision as f64)
                .unwrap_or(0.0),
        )
        .gauge(
            "noverlay_dpu_flows_installed",
            "Flows with our cookie on the bridge, as last read.",
            flows.len() as f64,
        )
        .counter(
            "noverlay_dpu_flow_repairs_total",
            "Times our flows were found wiped or altered and restored.",
            handle.flow_repairs(),
        )
        .gauge(
            "noverlay_dpu_error",
            "1 while the agent has an unresolved datapath error.",
            f64::from(u8::from(!handle.last_error().is_empty())),
        )
        .labelled(
            "noverlay_dpu_flow_packets",
            "Packets matched by each of our flows, as last read.",
            "counter",
            "flow",
            &packets,
        )
        .finish()
}
