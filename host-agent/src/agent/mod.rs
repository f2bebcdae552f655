//! The host agent's life: connect, negotiate, follow the contract, apply it,
//! report; reconnect with backoff when the DPU goes away, keeping the last
//! good state in place meanwhile.

mod calls;
mod tls_reload;

pub use calls::RPC_DEADLINE;
use calls::{SessionEnd, deadline, end_for, record_routes, sleep_until};
pub use tls_reload::TlsReloader;

pub use crate::status::{ApplyLatency, DpuOvnRoutes, HostStatus, Phase};
use crate::{
    backoff::Backoff,
    client::{self, DpuClient},
    config::ValidHostConfig,
    dataplane::{Applied, Dataplane, DataplaneError},
    plan::{self, HostPlan, HostSettings},
};
use noverlay_proto::{
    contract::Contract,
    pb,
    tls::{self, TlsError},
};
use noverlay_runtime::{
    logging::Repeats,
    systemd::{Heartbeat, Watchdog},
};
use rustls::ClientConfig;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long to gather a burst of kernel events before reconciling once.
const DRIFT_DEBOUNCE: Duration = Duration::from_millis(2);

/// Full reconcile interval: the safety net under the event-driven repair.
pub const PERIODIC_RECONCILE: Duration = Duration::from_secs(60);
/// A failed repair is tried again after this, doubling while it fails.
const REPAIR_RETRY_FIRST: Duration = Duration::from_millis(250);
const REPAIR_RETRY_MAX: Duration = Duration::from_secs(30);

pub struct HostAgent<D> {
    config: ValidHostConfig,
    settings: HostSettings,
    tls: watch::Receiver<Arc<ClientConfig>>,
    tls_updates: watch::Sender<Arc<ClientConfig>>,
    dataplane: D,
    status: watch::Sender<HostStatus>,
    /// The plan of the last accepted contract: what repairs restore, even
    /// while the DPU is unreachable.
    desired: Option<HostPlan>,
    periodic: tokio::time::Interval,
    /// The last contract accepted in this session with the DPU: revisions
    /// must go forward from it (a restarted DPU starts a new session).
    session_contract: Option<Contract>,
    /// Proves to the systemd watchdog that the reconcile loop comes round.
    heartbeat: Heartbeat,
    beat: tokio::time::Interval,
    /// A failure that repeats unchanged (the DPU still unreachable, the
    /// gateway interface still missing) is logged once a minute.
    failing: Repeats,
    /// A route held off (another writer keeps replacing it), or a failed
    /// repair, is tried again then.
    retry_at: Option<tokio::time::Instant>,
    /// The wait before retrying a failed repair: from [`REPAIR_RETRY_FIRST`],
    /// doubling to [`REPAIR_RETRY_MAX`] while it fails.
    repair_retry: Duration,
    /// The addresses the DPU agent is reached at (its name resolved after
    /// each connect): no cluster CIDR may cover one.
    dpu_ips: Vec<std::net::IpAddr>,
}

/// The outcome of waiting for something while keeping the host converged.
enum Waited<T> {
    Done(T),
    Shutdown,
}

impl<D: Dataplane> HostAgent<D> {
    pub fn new(config: ValidHostConfig, dataplane: D) -> Result<Self, TlsError> {
        let (tls_updates, tls) = watch::channel(tls::client_config(&config.raw.tls)?);
        let certificate_expiry_unix = tls::certificate_expiry_unix(&config.raw.tls.cert)?;
        let mut periodic = tokio::time::interval(PERIODIC_RECONCILE);
        periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Replaced by the daemon's (with_heartbeat); unwatched otherwise.
        let heartbeat = Watchdog::with_timeout(None).heartbeat("host reconcile loop");
        let dpu_ips = calls::literal_dpu_ip(&config).into_iter().collect();
        let host_facts = config.facts.clone();
        Ok(HostAgent {
            settings: HostSettings::from_config(&config),
            config,
            tls,
            tls_updates,
            dataplane,
            status: watch::Sender::new(HostStatus {
                certificate_expiry_unix,
                host_facts,
                ..HostStatus::default()
            }),
            desired: None,
            periodic,
            session_contract: None,
            beat: heartbeat.ticker(),
            failing: Repeats::default(),
            retry_at: None,
            repair_retry: REPAIR_RETRY_FIRST,
            dpu_ips,
            heartbeat,
        })
    }

    /// Feeds `heartbeat` from the reconcile loop (the systemd watchdog).
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.beat = heartbeat.ticker();
        self.heartbeat = heartbeat;
        self
    }

    /// Reconciles and audits every `every` instead of every
    /// [`PERIODIC_RECONCILE`] (tests).
    pub fn with_periodic_reconcile(mut self, every: Duration) -> Self {
        self.periodic = tokio::time::interval(every);
        self.periodic
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self
    }

    pub fn status(&self) -> watch::Receiver<HostStatus> {
        self.status.subscribe()
    }

    /// Where rotated TLS credentials go (SIGHUP): the next connection to the
    /// DPU uses them; the current one is not interrupted.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader {
            configs: self.tls_updates.clone(),
            status: self.status.clone(),
        }
    }

    /// Runs until `shutdown`. Never gives up on the DPU: refusals and
    /// outages are retried with capped exponential backoff.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DataplaneError> {
        if !self.config.raw.mode.is_in_scope() {
            tracing::warn!(mode = %self.config.raw.mode, "mode is out of scope: removing everything this agent owns");
            self.dataplane.teardown(&self.settings).await?;
            self.status.send_modify(|s| {
                s.phase = Phase::OutOfScope;
                s.applied = None;
            });
            return Ok(());
        }
        let (initial, max) = self.config.backoff_bounds();
        let mut backoff = Backoff::new(initial, max);
        loop {
            let end = self.session(&shutdown, &mut backoff).await;
            let phase = match end {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost(reason) => {
                    let kept = self.status.borrow().applied.as_ref().map(|c| c.revision);
                    if let Some(suppressed) = self.failing.due(&reason) {
                        tracing::warn!(error = %reason, suppressed, kept_revision = ?kept, "DPU unreachable; keeping the last good state");
                    }
                    Phase::Unreachable(reason)
                }
                SessionEnd::Refused(reason) => {
                    if let Some(suppressed) = self.failing.due(&reason) {
                        tracing::error!(error = %reason, suppressed, "DPU refused negotiation; nothing applied for it");
                    }
                    Phase::Refused(reason)
                }
            };
            self.status.send_modify(|s| {
                s.phase = phase;
                s.disconnects += 1;
            });
            let delay = backoff.next_delay();
            tracing::debug!(?delay, "reconnecting");
            if let Waited::Shutdown = self.wait(&shutdown, tokio::time::sleep(delay)).await {
                return Ok(());
            }
        }
    }

    /// Waits for `future` while repairing drift: kernel events and the
    /// periodic reconcile are served whatever the DPU connection is doing.
    async fn wait<F: std::future::Future>(
        &mut self,
        shutdown: &CancellationToken,
        future: F,
    ) -> Waited<F::Output> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Waited::Shutdown,
                output = &mut future => return Waited::Done(output),
                _ = self.dataplane.drift() => {
                    // Let the rest of a burst (a link flap is several
                    // events) arrive, then reconcile once.
                    tokio::time::sleep(DRIFT_DEBOUNCE).await;
                    self.dataplane.absorb_drift();
                    self.reconcile("kernel event").await;
                }
                _ = self.periodic.tick() => {
                    // Events may have been missed: this one reads everything.
                    self.dataplane.audit_next();
                    self.reconcile("periodic").await
                }
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    self.reconcile("retry").await;
                }
                _ = self.beat.tick() => self.heartbeat.beat(),
            }
        }
    }

    /// Re-applies the desired plan; only differences reach the kernel. A
    /// failure is retried after `repair_retry`.
    async fn reconcile(&mut self, trigger: &'static str) {
        let Some(plan) = self.desired.clone() else {
            return;
        };
        let result = self.apply_timed(&plan).await;
        self.status.send_modify(|s| s.reconciles += 1);
        match result {
            Ok(applied) => {
                if applied.changes > 0 {
                    tracing::warn!(
                        trigger,
                        changes = applied.changes,
                        revision = plan.revision,
                        "repaired host state"
                    );
                } else {
                    tracing::debug!(trigger, "host state in place");
                }
                self.repair_retry = REPAIR_RETRY_FIRST;
                self.status.send_modify(|s| {
                    if applied.changes > 0 {
                        s.repairs += 1;
                    }
                    s.last_error = None;
                    record_routes(s, applied);
                });
            }
            Err(e) => {
                // Tried again soon, not at the next event or periodic tick:
                // a failed apply forgets what it knew of the table, so the
                // retry lists it (a route a lookup could not see, such as a
                // throw route on our key, is found then).
                let at = tokio::time::Instant::now() + self.repair_retry;
                self.retry_at = Some(self.retry_at.map_or(at, |other| other.min(at)));
                self.repair_retry = (self.repair_retry * 2).min(REPAIR_RETRY_MAX);
                if let Some(suppressed) = self.failing.due(&e.to_string()) {
                    tracing::error!(trigger, error = %e, suppressed, "repairing host state failed; will retry");
                }
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken, backoff: &mut Backoff) -> SessionEnd {
        self.session_contract = None;
        let address = self.config.raw.dpu.address.clone();
        let identity = self.config.dpu_identity.clone();
        let tls_config = self.tls.borrow().clone();
        let connecting = client::connect(&address, &identity, tls_config);
        let mut client = match self.wait(shutdown, connecting).await {
            Waited::Shutdown => return SessionEnd::Shutdown,
            Waited::Done(Ok(client)) => client,
            Waited::Done(Err(e)) => return SessionEnd::Lost(e.to_string()),
        };
        if calls::literal_dpu_ip(&self.config).is_none() {
            match calls::resolve(&address).await {
                Ok(ips) => self.dpu_ips = ips,
                // The last addresses it resolved to are checked meanwhile.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve dpu.address to check the contract against it")
                }
            }
        }
        let proposal = self.config.proposal();
        let mut negotiating = client.clone();
        let negotiated = deadline("Negotiate", negotiating.negotiate(proposal.clone()));
        let contract = match self.wait(shutdown, negotiated).await {
            Waited::Shutdown => return SessionEnd::Shutdown,
            Waited::Done(Ok(response)) => response.into_inner().contract.unwrap_or_default(),
            Waited::Done(Err(status)) => return end_for(status),
        };
        tracing::info!(revision = contract.revision, "negotiated with the DPU");
        // Whatever kept failing before this session is logged afresh.
        self.failing.clear();
        let mut watching = client.clone();
        let watched = deadline("WatchContract", watching.watch_contract(proposal));
        let mut stream = match self.wait(shutdown, watched).await {
            Waited::Shutdown => return SessionEnd::Shutdown,
            Waited::Done(Ok(response)) => response.into_inner(),
            Waited::Done(Err(status)) => return end_for(status),
        };
        self.status.send_modify(|s| s.phase = Phase::Following);
        backoff.reset();
        // A new session's DPU may be a restarted one that has never heard
        // from us: report what we hold even when the contract is unchanged.
        if let Some(report) = self.on_contract(&contract, Reporting::Always).await
            && let Waited::Shutdown = self.send_report(shutdown, &mut client, report).await
        {
            return SessionEnd::Shutdown;
        }
        loop {
            match self.wait(shutdown, stream.message()).await {
                Waited::Shutdown => return SessionEnd::Shutdown,
                Waited::Done(Ok(Some(update))) => {
                    let ovn_routes = update.ovn_routes.as_ref().map(DpuOvnRoutes::from_pb);
                    self.status.send_if_modified(|s| {
                        let changed = s.dpu_ovn_routes != ovn_routes;
                        s.dpu_ovn_routes = ovn_routes;
                        changed
                    });
                    let contract = update.contract.unwrap_or_default();
                    if let Some(report) = self.on_contract(&contract, Reporting::OnChange).await
                        && let Waited::Shutdown =
                            self.send_report(shutdown, &mut client, report).await
                    {
                        return SessionEnd::Shutdown;
                    }
                }
                Waited::Done(Ok(None)) => {
                    return SessionEnd::Lost("the DPU closed the contract watch".into());
                }
                Waited::Done(Err(status)) => return end_for(status),
            }
        }
    }

    /// Applies `plan` and records how long the kernel took.
    async fn apply_timed(&mut self, plan: &HostPlan) -> Result<Applied, DataplaneError> {
        let started = tokio::time::Instant::now();
        let result = self.dataplane.apply(plan).await;
        if let Ok(applied) = &result {
            self.retry_at = applied.retry_at;
        }
        let took = started.elapsed().as_secs_f64();
        self.status.borrow().apply_latency.0.observe(took);
        result
    }

    /// Validates, plans, applies and reports one contract. A contract that
    /// fails any check is refused and reported; the last good state stays.
    /// Returns the report for the DPU, if there is anything to report (an
    /// unchanged contract only with [`Reporting::Always`]).
    async fn on_contract(
        &mut self,
        wire: &pb::Contract,
        reporting: Reporting,
    ) -> Option<pb::HostReport> {
        let contract = match self.accept(wire).await {
            Ok(contract) => {
                self.session_contract = Some(contract.clone());
                contract
            }
            Err(reason) => {
                let kept = self.status.borrow().applied.as_ref().map(|c| c.revision);
                tracing::error!(revision = wire.revision, error = %reason, kept_revision = ?kept, "rejected contract from the DPU");
                self.status
                    .send_modify(|s| s.last_error = Some(reason.clone()));
                return Some(pb::HostReport {
                    refused: true,
                    ..self.report(wire.revision, Err(reason))
                });
            }
        };
        if self.status.borrow().applied.as_ref() == Some(&contract) {
            return match reporting {
                Reporting::OnChange => None,
                Reporting::Always => {
                    let held = self.status.borrow();
                    let (routes, nft_ruleset) = (held.routes.clone(), held.nft_ruleset.clone());
                    drop(held);
                    Some(self.report(contract.revision, Ok((routes, nft_ruleset))))
                }
            };
        }
        let plan = plan::plan(&contract, &self.settings);
        // Repairs restore this plan from now on; if it cannot be applied, the
        // last good one goes back (with no last good plan, repairs retry it).
        let last_good = self.desired.replace(plan.clone());
        match self.apply_timed(&plan).await {
            Ok(applied) => {
                self.failing.clear();
                tracing::info!(
                    revision = contract.revision,
                    routes = plan.routes.len(),
                    "host state applied"
                );
                // What the DPU is told is what the kernel has.
                let nft_ruleset = match self.dataplane.nft_table(&plan.nft.table).await {
                    Ok(table) => table,
                    Err(e) => format!("(cannot read the table back: {e})"),
                };
                let dpu_facts = calls::shown_facts(&wire.facts);
                self.status.send_modify(|s| {
                    s.applied = Some(contract.clone());
                    s.dpu_facts = dpu_facts;
                    record_routes(s, applied.clone());
                    s.nft_ruleset = nft_ruleset.clone();
                    s.applied_unix = noverlay_runtime::unix_now();
                    s.last_error = None;
                });
                Some(self.report(contract.revision, Ok((applied.routes, nft_ruleset))))
            }
            Err(e) => {
                let reason = e.to_string();
                if let Some(suppressed) = self.failing.due(&reason) {
                    tracing::error!(revision = contract.revision, error = %reason, suppressed, "applying host state failed");
                }
                if let Some(good) = last_good {
                    // Nothing stays half-applied: back to the last good state.
                    // The failed revision is tried again when the DPU sends a
                    // new one or the host reconnects.
                    let restored = self.apply_timed(&good).await;
                    let kept = good.revision;
                    self.desired = Some(good);
                    match restored {
                        Ok(_) => {
                            tracing::warn!(kept_revision = kept, "last good host state restored")
                        }
                        Err(e) => {
                            if let Some(suppressed) = self.failing.due(&e.to_string()) {
                                tracing::error!(kept_revision = kept, error = %e, suppressed, "restoring the last good host state failed; repairs retry it")
                            }
                        }
                    }
                }
                self.status
                    .send_modify(|s| s.last_error = Some(reason.clone()));
                Some(self.report(contract.revision, Err(reason)))
            }
        }
    }

    async fn accept(&mut self, wire: &pb::Contract) -> Result<Contract, String> {
        let contract = Contract::try_from(wire).map_err(|e| e.to_string())?;
        plan::check_revision(&contract, self.session_contract.as_ref())
            .map_err(|e| e.to_string())?;
        plan::check_matches_proposal(&contract, &self.config).map_err(|e| e.to_string())?;
        plan::check_limits(&contract, &self.config, &self.dpu_ips).map_err(|e| e.to_string())?;
        let addresses = self
            .dataplane
            .host_addresses()
            .await
            .map_err(|e| format!("cannot read host addresses: {e}"))?;
        plan::check_against_host(&contract, &addresses, &self.settings.mp0_interface)
            .map_err(|e| e.to_string())?;
        Ok(contract)
    }

    /// Sends a report under a deadline, repairing the host meanwhile: local
    /// repair never waits on the peer.
    async fn send_report(
        &mut self,
        shutdown: &CancellationToken,
        client: &mut DpuClient,
        report: pb::HostReport,
    ) -> Waited<()> {
        let mut reporting = client.clone();
        let sent = deadline("ReportApplied", reporting.report_applied(report));
        match self.wait(shutdown, sent).await {
            Waited::Shutdown => Waited::Shutdown,
            Waited::Done(result) => {
                if let Err(status) = result {
                    tracing::warn!(error = %noverlay_proto::text::loggable(status.message()), "could not report to the DPU");
                }
                Waited::Done(())
            }
        }
    }

    /// The report of `revision`: the routes and nft table the host holds,
    /// or why it holds none of it.
    fn report(
        &self,
        revision: u64,
        outcome: Result<(Vec<String>, String), String>,
    ) -> pb::HostReport {
        match outcome {
            Ok((routes, nft_ruleset)) => pb::HostReport {
                revision,
                applied: true,
                error: String::new(),
                routes,
                nft_ruleset,
                host_name: self.config.raw.host_name.clone(),
                refused: false,
            },
            Err(error) => pb::HostReport {
                revision,
                applied: false,
                error,
                routes: Vec::new(),
                nft_ruleset: String::new(),
                host_name: self.config.raw.host_name.clone(),
                refused: false,
            },
        }
    }
}

/// Whether an unchanged contract is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reporting {
    /// The first contract of a session: the DPU may not know what we hold.
    Always,
    /// A contract from the watch: only a change is news.
    OnChange,
}
