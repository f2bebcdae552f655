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
