//! The host-agent's Prometheus metrics (opt-in: `metrics_listen`).

use crate::agent::{HostStatus, Phase};
use noverlay_proto::metrics::Exposition;

/// The agent's status as Prometheus text.
pub fn render(status: &HostStatus) -> String {
    let phases = [
        "connecting",
        "following",
        "refused",
        "unreachable",
        "out_of_scope",
    ];
    let current = match status.phase {
        Phase::Connecting => "connecting",
        Phase::Following => "following",
        Phase::Refused(_) => "refused",
        Phase::Unreachable(_) => "unreachable",
        Phase::OutOfScope => "out_of_scope",
    };
    let phase_samples: Vec<(String, f64)> = phases
        .iter()
        .map(|p| (p.to_string(), f64::from(u8::from(*p == current))))
        .collect();
    Exposition::default()
        .labelled(
            "noverlay_host_negotiation_state",
            "1 for the state the agent is in with the DPU.",
            "gauge",
            "state",
            &phase_samples,
        )
        .gauge(
            "noverlay_host_contract_revision",
            "Revision of the contract applied on the host (0: none).",
            status
                .applied
                .as_ref()
                .map(|c| c.revision as f64)
                .unwrap_or(0.0),
        )
        .counter(
            "noverlay_host_disconnects_total",
            "Sessions with the DPU that ended (connect failures included).",
            status.disconnects,
        )
        .counter(
            "noverlay_host_reconciles_total",
            "Reconciles of the host state against the plan.",
            status.reconciles,
        )
        .counter(
            "noverlay_host_repairs_total",
            "Reconciles that found drift and repaired it.",
            status.repairs,
        )
        .gauge(
            "noverlay_host_error",
            "1 while the last contract or apply failed.",
            f64::from(u8::from(status.last_error.is_some())),
        )
        .histogram(
            "noverlay_host_apply_seconds",
            "Time to apply the plan to the kernel.",
            &status.apply_latency,
        )
        .finish()
}
