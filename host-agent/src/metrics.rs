//! The host-agent's Prometheus metrics (opt-in: `metrics_listen`), read
//! from the agent's status at each scrape.

use crate::agent::{HostStatus, Phase};
use noverlay_runtime::metrics::encode::{self, Labels};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};
use std::fmt;
use tokio::sync::watch;

/// A registry holding the agent's metrics.
pub fn registry(status: watch::Receiver<HostStatus>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector { status }));
    registry
}

#[derive(Debug)]
struct HostCollector {
    status: watch::Receiver<HostStatus>,
}

const PHASES: [&str; 5] = [
    "connecting",
    "following",
    "refused",
    "unreachable",
    "out_of_scope",
];

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Connecting => "connecting",
        Phase::Following => "following",
        Phase::Refused(_) => "refused",
        Phase::Unreachable(_) => "unreachable",
        Phase::OutOfScope => "out_of_scope",
    }
}

impl Collector for HostCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let status = self.status.borrow().clone();
        let current = phase_name(&status.phase);
        let phases: Vec<(Labels, f64)> = PHASES
            .iter()
            .map(|p| {
                (
                    vec![("state", p.to_string())],
                    f64::from(u8::from(*p == current)),
                )
            })
            .collect();
        encode::labelled_gauges(
            &mut e,
            "noverlay_host_negotiation_state",
            "1 for the state the agent is in with the DPU.",
            &phases,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_host_contract_revision",
            "Revision of the contract applied on the host (0: none).",
            status.applied.as_ref().map_or(0.0, |c| c.revision as f64),
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_disconnects",
            "Sessions with the DPU that ended (connect failures included).",
            status.disconnects,
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_reconciles",
            "Reconciles of the host state against the plan.",
            status.reconciles,
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_repairs",
            "Reconciles that found drift and repaired it.",
            status.repairs,
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_route_takebacks",
            "Routes of ours found replaced by another writer and taken back.",
            status.route_takebacks,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_host_nft_watch_up",
            "1 while the nftables event watcher hears changes, 0 while it reopens its socket.",
            f64::from(u8::from(status.nft_watch_lost.is_empty())),
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_nft_watch_restarts",
            "Times the nftables event watcher lost its socket and got it back.",
            status.nft_watch_restarts,
        )?;
        encode::counter(
            &mut e,
            "noverlay_host_route_event_overruns",
            "Times the kernel dropped route events for host-agent (a full event socket); each was answered by reading every route again.",
            status.route_event_overruns,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_host_route_conflicts",
            "Planned routes another writer keeps replacing, left to it for now (see status).",
            status.route_conflicts.len() as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_host_certificate_expiry_unix",
            "Unix time at which the certificate host-agent presents (as loaded at start or the last reload) expires.",
            status.certificate_expiry_unix as f64,
        )?;
        encode::gauge(
            &mut e,
            "noverlay_host_error",
            "1 while the last contract or apply failed.",
            f64::from(u8::from(status.last_error.is_some())),
        )?;
        encode::metric(
            &mut e,
            "noverlay_host_apply_seconds",
            "Time to apply the plan to the kernel.",
            &status.apply_latency.0,
        )
    }
}
