//! A dataplane that changes nothing: it logs and keeps what it was asked to
//! apply. Used by `host-agent run --dry-run`, the demo and agent tests.

use super::{Applied, Dataplane, DataplaneError};
use crate::plan::{HostAddress, HostPlan, HostSettings};
use std::sync::{Arc, Mutex};

/// Shared view of what a [`DryRun`] was asked to do.
#[derive(Debug, Default, Clone)]
pub struct DryRunLog {
    inner: Arc<Mutex<Vec<DryRunEvent>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRunEvent {
    Applied(Box<HostPlan>),
    /// The next apply was asked to read everything (see
    /// [`Dataplane::audit_next`]).
    AuditAsked,
    TornDown,
}

impl DryRunLog {
    pub fn events(&self) -> Vec<DryRunEvent> {
        self.inner
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// What it was asked to change (applies and teardowns; not the audit
    /// requests of the periodic reconcile).
    pub fn changes(&self) -> Vec<DryRunEvent> {
        self.events()
            .into_iter()
            .filter(|e| *e != DryRunEvent::AuditAsked)
            .collect()
    }

    /// The plan of the last apply.
    pub fn last_applied(&self) -> Option<HostPlan> {
        self.events().into_iter().rev().find_map(|e| match e {
            DryRunEvent::Applied(plan) => Some(*plan),
            _ => None,
        })
    }

    fn push(&self, event: DryRunEvent) {
        match self.inner.lock() {
            Ok(mut events) => events.push(event),
            Err(poisoned) => poisoned.into_inner().push(event),
        }
    }
}

/// Touches nothing; `host_addresses` returns what it was built with.
pub struct DryRun {
    log: DryRunLog,
    host_addresses: Vec<HostAddress>,
    /// The table the last plan would have written.
    last_nft: Option<String>,
}

impl DryRun {
    pub fn new(host_addresses: Vec<HostAddress>) -> (Self, DryRunLog) {
        let log = DryRunLog::default();
        (
            DryRun {
                log: log.clone(),
                host_addresses,
                last_nft: None,
            },
            log,
        )
    }
}

impl Dataplane for DryRun {
    async fn apply(&mut self, plan: &HostPlan) -> Result<Applied, DataplaneError> {
        tracing::info!(
            revision = plan.revision,
            "dry run: would apply\n{}",
            plan.render()
        );
        self.log.push(DryRunEvent::Applied(Box::new(plan.clone())));
        self.last_nft = Some(plan.nft.render());
        Ok(Applied {
            routes: plan.render_routes(),
            changes: plan.routes.len(),
            ..Applied::default()
        })
    }

    async fn nft_table(&mut self, _table: &str) -> Result<String, DataplaneError> {
        Ok(self.last_nft.clone().unwrap_or_default())
    }

    async fn host_addresses(&mut self) -> Result<Vec<HostAddress>, DataplaneError> {
        Ok(self.host_addresses.clone())
    }

    async fn drift(&mut self) {
        std::future::pending::<()>().await
    }

    fn audit_next(&mut self) {
        self.log.push(DryRunEvent::AuditAsked);
    }

    async fn teardown(&mut self, _settings: &HostSettings) -> Result<(), DataplaneError> {
        tracing::info!("dry run: would remove everything we own");
        self.log.push(DryRunEvent::TornDown);
        Ok(())
    }
}
