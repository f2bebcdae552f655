//! The side-effect edge of the host: one trait, one backend per file.
//!
//! - [`kernel::Kernel`] programs the kernel: rtnetlink and nftables.
//! - [`dry_run::DryRun`] touches nothing and keeps the last plan (the demo,
//!   `--dry-run`, and tests of the agent loop).

pub mod dry_run;
pub mod kernel;
mod netlink_route;
mod nftables;
mod route_batch;

use crate::plan::{HostAddress, HostPlan, HostSettings};
use std::future::Future;

/// What the host has in place after an apply, for the report to the DPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Our routes as the kernel lists them, in `ip route` syntax.
    pub routes: Vec<String>,
    /// How many kernel objects this apply added, fixed or removed; 0 when
    /// everything was already in place.
    pub changes: usize,
    /// Planned routes another writer keeps replacing, left to it for now
    /// (one line each, for status).
    pub conflicts: Vec<String>,
    /// When a route held off may be taken back: reconcile again then.
    pub retry_at: Option<tokio::time::Instant>,
    /// Routes taken back from other writers since the agent started.
    pub takebacks: u64,
    /// Why the nftables event watcher is deaf, while it is (the table is
    /// then rewritten on every reconcile).
    pub nft_watch_lost: Option<String>,
    /// Times the watcher got its event socket back.
    pub nft_watch_restarts: u64,
    /// Times rtnetlink events were lost (the kernel overran the event
    /// socket); each was answered by reading everything again.
    pub route_event_overruns: u64,
}

/// Programs the host datapath.
pub trait Dataplane: Send + Sync {
    /// Makes the host match `plan` exactly for what we own: adds what is
    /// missing, replaces what differs, removes our leftovers. Idempotent.
    fn apply(
        &mut self,
        plan: &HostPlan,
    ) -> impl Future<Output = Result<Applied, DataplaneError>> + Send;

    /// Our nft table as the kernel has it (`nft list table` syntax, with
    /// counters), for the report to the DPU.
    fn nft_table(
        &mut self,
        table: &str,
    ) -> impl Future<Output = Result<String, DataplaneError>> + Send;

    /// The host's own addresses, to check contracts against.
    fn host_addresses(
        &mut self,
    ) -> impl Future<Output = Result<Vec<HostAddress>, DataplaneError>> + Send;

    /// Resolves when the host state may have drifted from the last apply
    /// (a kernel event: route deleted, link flapped, ruleset flushed). Never
    /// resolves for backends without events. Cancel-safe.
    fn drift(&mut self) -> impl Future<Output = ()> + Send;

    /// Consumes drift notifications that arrived in a burst, so that one
    /// reconcile answers them all.
    fn absorb_drift(&mut self) {}

    /// The next apply trusts nothing it remembers: it reads every object
    /// from the kernel and compares (the periodic safety net under events,
    /// for a change no event told of).
    fn audit_next(&mut self) {}

    /// Removes everything we own (routes with our protocol, our neighbour and
    /// address, our nft table). Keeps going past errors and returns them all.
    fn teardown(
        &mut self,
        settings: &HostSettings,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{operation}: {reason}")]
    Kernel { operation: String, reason: String },
    #[error("{} errors: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<DataplaneError>),
}
