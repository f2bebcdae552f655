//! The agent's edges that are not its loop: calls to the DPU under a
//! deadline and how a failed one ends the session, and small helpers of
//! the loop (recording an apply into the status, an optional timer).

use super::{Applied, HostStatus};
use crate::client;
use std::time::Duration;
use tonic::Code;

/// Why one session with the DPU ended.
pub(super) enum SessionEnd {
    Shutdown,
    Lost(String),
    Refused(String),
}

/// What an apply found of our routes, into the status.
pub(super) fn record_routes(status: &mut HostStatus, applied: Applied) {
    status.routes = applied.routes;
    status.route_conflicts = applied.conflicts;
    status.route_takebacks = applied.takebacks;
    status.nft_watch_lost = applied.nft_watch_lost.unwrap_or_default();
    status.nft_watch_restarts = applied.nft_watch_restarts;
    status.route_event_overruns = applied.route_event_overruns;
}

/// The DPU agent's address as an IP, when `dpu.address` is one (a name is
/// resolved by the agent after each connect).
pub(super) fn literal_dpu_ip(config: &crate::config::ValidHostConfig) -> Option<std::net::IpAddr> {
    config
        .raw
        .dpu
        .address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
}

/// How long resolving the DPU's name may take.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

/// Every address `address` (host:port) resolves to, under a deadline.
pub(super) async fn resolve(address: &str) -> Result<Vec<std::net::IpAddr>, String> {
    match tokio::time::timeout(RESOLVE_DEADLINE, tokio::net::lookup_host(address)).await {
        Ok(Ok(found)) => Ok(found.map(|a| a.ip()).collect()),
        Ok(Err(e)) => Err(format!("{address}: {e}")),
        Err(_) => Err(format!("{address}: no answer within {RESOLVE_DEADLINE:?}")),
    }
}

/// At most this many of the DPU's facts are kept for status.
const MAX_SHOWN_FACTS: usize = 32;

/// The DPU's account of where its facts came from, as the host shows it:
/// control characters escaped, each line shortened, the list bounded.
pub(super) fn shown_facts(facts: &[String]) -> Vec<String> {
    facts
        .iter()
        .take(MAX_SHOWN_FACTS)
        .map(|f| noverlay_proto::text::loggable(f))
        .collect()
}

/// Sleeps until `at` (the caller polls this only when there is one).
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long one unary call (or the start of the watch) may take: a DPU that
/// accepts the connection and then stalls must not stall the host.
pub const RPC_DEADLINE: Duration = Duration::from_secs(10);

/// `call` under [`RPC_DEADLINE`]; a timeout is a DEADLINE_EXCEEDED status.
pub(super) async fn deadline<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(RPC_DEADLINE, call)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "{what}: no answer from the DPU within {RPC_DEADLINE:?}"
            )))
        })
}

/// Refusals are the DPU's answer to our config; anything else is an outage.
pub(super) fn end_for(status: tonic::Status) -> SessionEnd {
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument => {
            SessionEnd::Refused(status.message().to_string())
        }
        _ => SessionEnd::Lost(format!(
            "{}: {}",
            status.code(),
            std::error::Error::source(&status)
                .map(client::error_chain)
                .unwrap_or_else(|| status.message().to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_name_resolves_to_every_address_it_has() {
        let ips = super::resolve("localhost:50051").await.expect("resolves");
        assert!(
            ips.contains(&std::net::IpAddr::from([127, 0, 0, 1])),
            "{ips:?}"
        );
        let error = super::resolve("no-such-dpu.invalid:50051")
            .await
            .expect_err("does not resolve");
        assert!(error.contains("no-such-dpu.invalid"), "{error}");
    }
}
