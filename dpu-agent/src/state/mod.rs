//! The agent's shared state hub: the offer served, the port map, the TLS
//! identity in use, and what each source of the agent's state last did.
//! The gRPC service, the flow programmer, port discovery, reloads and
//! metrics all go through [`AgentHandle`]; what it records of the peer,
//! the flows and the uplink guard is defined in `records.rs`.

mod host_view;
mod records;
mod sources;

use crate::{
    config::ValidConfig,
    flows::{self, FlowSettings, PortMap},
    switch::ReadFlow,
};
pub use host_view::HostView;
use noverlay_proto::{contract::Offer, pb, tls};
use noverlay_runtime::lock;
pub use noverlay_uplink_guard::{GuardRecord, GuardState};
pub use records::{
    ClusterRoutes, FamilyFragments, FlowRecord, FragmentStatus, PeerRecord, TlsIdentity,
};
pub use sources::{Source, SourceStatus, Sources};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct Record {
    peer: PeerRecord,
    flows: FlowRecord,
    guard: GuardRecord,
    sources: Sources,
    /// Ways OVN's half of the contract does not hold, as last checked.
    ovn_mismatches: usize,
    /// Open vSwitch's fragment reassembly counters, as last read (None:
    /// not read, or the read failed).
    fragments: Option<FragmentStatus>,
}

struct AgentState {
    /// The config in force (for telling what a reload may change).
    config: Mutex<crate::config::DpuConfig>,
    /// The offer's facts and where each came from.
    facts: Mutex<Vec<crate::config::Fact>>,
    offer: watch::Sender<Offer>,
    ports: watch::Sender<Option<PortMap>>,
    /// The uplink's device name: configured, or found in OVSDB (None until then).
    uplink: watch::Sender<Option<String>>,
    flow_settings: FlowSettings,
    tls: Mutex<TlsIdentity>,
    record: Mutex<Record>,
    /// Connections refused during the mTLS handshake (auth failures).
    refused_connections: AtomicU64,
    /// From the check that found our flows wiped to the flows back.
    restore_latency: prometheus_client::metrics::histogram::Histogram,
    /// Bumped whenever the flow record changes (flows read, a repair).
    flow_updates: watch::Sender<u64>,
    /// What the host said of the contracts it was sent.
    host_view: watch::Sender<HostView>,
    /// The gateway router's routes for the cluster CIDRs, as last read.
    ovn_routes: watch::Sender<Option<ClusterRoutes>>,
}

/// A cheap handle to the running agent's state.
#[derive(Clone)]
pub struct AgentHandle {
    state: Arc<AgentState>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, restart needed: {0}")]
    NeedsRestart(String),
    #[error("reload refused: {0}")]
    Invalid(String),
}

impl AgentHandle {
    /// The state of an agent configured by `config`, serving with `tls`.
    pub fn new(config: &ValidConfig, tls: TlsIdentity) -> Self {
        AgentHandle {
            state: Arc::new(AgentState {
                config: Mutex::new(config.raw.clone()),
                facts: Mutex::new(config.facts.clone()),
                offer: watch::Sender::new(config.offer.clone()),
                ports: watch::Sender::new(config.static_ports),
                uplink: watch::Sender::new(config.raw.bridge.uplink.clone()),
                flow_settings: config.flow_settings(),
                tls: Mutex::new(tls),
                record: Mutex::default(),
                refused_connections: AtomicU64::new(0),
                restore_latency: prometheus_client::metrics::histogram::Histogram::new(
                    noverlay_runtime::metrics::encode::LATENCY_BUCKETS,
                ),
                flow_updates: watch::Sender::new(0),
                host_view: watch::Sender::new(HostView::new(config.offer.clone())),
                ovn_routes: watch::Sender::new(None),
            }),
        }
    }

    /// The offer currently served.
    pub fn offer(&self) -> Offer {
        self.state.offer.borrow().clone()
    }

    /// Applies a reloaded config. Only what the DPU is the authority for
    /// (cluster CIDRs, underlay IPs, MTU) may change at runtime; a change of
    /// anything the host negotiated (families, masquerade subnets, mode) needs
    /// a restart so that the host renegotiates. Returns the revision served.
    /// The outcome is recorded as the [`Source::Reload`] status.
    pub fn reload(&self, config: &ValidConfig) -> Result<u64, ReloadError> {
        let result = self.try_reload(config);
        self.set_source(
            Source::Reload,
            result.as_ref().map(|_| ()).map_err(ToString::to_string),
        );
        result
    }

    fn try_reload(&self, config: &ValidConfig) -> Result<u64, ReloadError> {
        let current = self.offer();
        let next = &config.offer;
        let shape = |o: &Offer| {
            o.families
                .iter()
                .map(|f| f.masquerade.subnet)
                .collect::<Vec<_>>()
        };
        if shape(&current) != shape(next) || current.mode != next.mode {
            return Err(ReloadError::NeedsRestart(
                "address families, masquerade subnets or mode changed".into(),
            ));
        }
        let changed = lock(&self.state.config).changes_needing_restart(&config.raw);
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(format!(
                "{} changed; nothing of this config was applied",
                changed.join(", ")
            )));
        }
        let revised = current
            .revised(next.families.clone(), next.mtu)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        // Everything that can fail comes before anything changes: a failed
        // reload leaves the running state whole.
        let tls_config = tls::server_config(&config.raw.tls, &config.raw.authorised_host)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let expiry_unix = tls::certificate_expiry_unix(&config.raw.tls.cert)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let revision = revised.revision;
        // The facts first: a contract sent for the new offer names them.
        {
            let mut facts = lock(&self.state.facts);
            let found = facts
                .iter()
                .filter(|f| f.source == crate::config::FactSource::Ovsdb)
                .cloned()
                .collect::<Vec<_>>();
            *facts = config.facts.clone();
            facts.extend(found);
        }
        // Nothing the host said changes until it speaks of this one.
        self.state
            .host_view
            .send_if_modified(|view| view.serve(&revised));
        self.state.offer.send_if_modified(|offer| {
            let changed = *offer != revised;
            *offer = revised;
            changed
        });
        if config.static_ports.is_some() {
            self.state.ports.send_if_modified(|ports| {
                let changed = *ports != config.static_ports;
                *ports = config.static_ports;
                changed
            });
        }
        *lock(&self.state.tls) = TlsIdentity {
            acceptor: TlsAcceptor::from(tls_config),
            authorised_host: config.authorised_host.clone(),
            expiry_unix,
        };
        *lock(&self.state.config) = config.raw.clone();
        Ok(revision)
    }

    /// Records a fact found in OVSDB at run time (it replaces one of the
    /// same key).
    pub fn set_found_in_ovsdb(&self, key: &str, value: String) {
        let fact = crate::config::Fact::new(key, value, crate::config::FactSource::Ovsdb);
        let mut facts = lock(&self.state.facts);
        facts.retain(|f| f.key != fact.key);
        facts.push(fact);
    }

    /// Records the uplink found in OVSDB (the guard follows it).
    pub fn set_uplink(&self, uplink: String) {
        self.state.uplink.send_if_modified(|known| {
            let changed = known.as_deref() != Some(uplink.as_str());
            *known = Some(uplink);
            changed
        });
    }

    /// The uplink's device name, once known.
    pub fn watch_uplink(&self) -> watch::Receiver<Option<String>> {
        self.state.uplink.subscribe()
    }

    /// The offer's facts and where each came from, as of the last load.
    pub fn facts(&self) -> Vec<crate::config::Fact> {
        lock(&self.state.facts).clone()
    }

    /// The TLS acceptor for the next connection.
    pub fn tls(&self) -> TlsIdentity {
        lock(&self.state.tls).clone()
    }

    /// Records the port map discovered from OVSDB (or given by hand).
    pub fn set_ports(&self, ports: Option<PortMap>) {
        self.state.ports.send_replace(ports);
    }

    /// The port map in use, if known.
    pub fn ports(&self) -> Option<PortMap> {
        *self.state.ports.borrow()
    }

    /// The flows the agent wants on the bridge, if the ports are known.
    pub fn desired_flows(&self) -> Option<Vec<flows::Flow>> {
        let ports = self.ports()?;
        Some(flows::plan_flows(
            &self.flow_offer(),
            &ports,
            &self.state.flow_settings,
        ))
    }

    /// The offer the flows are planned from: the one served, except while
    /// the host refuses it after it applied an earlier one (of this agent's
    /// life); then only the cluster CIDRs that the host last applied and
    /// the served offer still has: no flow takes traffic to a CIDR the host
    /// refused. Not knowing what the host holds, nothing is withdrawn.
    pub fn flow_offer(&self) -> Offer {
        self.state.host_view.borrow().flow_offer(self.offer())
    }

    /// Wakes when what the host said of the contracts changes.
    pub fn watch_host_view(&self) -> watch::Receiver<HostView> {
        self.state.host_view.subscribe()
    }

    pub fn flow_settings(&self) -> FlowSettings {
        self.state.flow_settings
    }

    /// Wakes on every offer or port-map change (for the flow programmer).
    pub fn subscribe(&self) -> (watch::Receiver<Offer>, watch::Receiver<Option<PortMap>>) {
        (self.state.offer.subscribe(), self.state.ports.subscribe())
    }

    /// Records what `source` just did: Ok(()) or the error.
    pub fn set_source(&self, source: Source, outcome: Result<(), String>) {
        lock(&self.state.record)
            .sources
            .set(source, outcome, unix_now());
    }

    /// How many ways OVN's half of the contract does not hold (see the
    /// "ovn" source's error for what they are).
    pub fn set_ovn_mismatches(&self, count: usize) {
        lock(&self.state.record).ovn_mismatches = count;
    }

    pub fn ovn_mismatches(&self) -> usize {
        lock(&self.state.record).ovn_mismatches
    }

    /// The gateway router's routes for the cluster CIDRs (None: no [ovn]
    /// section, not read yet, or no such router).
    /// Wakes [`AgentHandle::watch_ovn_routes`] only on a change.
    pub fn set_ovn_routes(&self, routes: Option<ClusterRoutes>) {
        self.state.ovn_routes.send_if_modified(|held| {
            let changed = *held != routes;
            *held = routes;
            changed
        });
    }

    pub fn ovn_routes(&self) -> Option<ClusterRoutes> {
        self.state.ovn_routes.borrow().clone()
    }

    pub fn watch_ovn_routes(&self) -> watch::Receiver<Option<ClusterRoutes>> {
        self.state.ovn_routes.subscribe()
    }

    /// The source is not configured (shown as "off").
    pub fn set_source_off(&self, source: Source) {
        lock(&self.state.record).sources.set_off(source);
    }

    pub fn source(&self, source: Source) -> SourceStatus {
        lock(&self.state.record).sources.get(source).clone()
    }

    /// Every source's status, in [`Source::ALL`] order.
    pub fn sources(&self) -> Sources {
        lock(&self.state.record).sources.clone()
    }

    /// What is failing now, "source: error" joined by "; "; empty when
    /// nothing is.
    pub fn last_error(&self) -> String {
        self.sources().summary()
    }

    /// Records our flows as OVS reported them just now.
    pub fn set_installed_flows(&self, flows: Vec<ReadFlow>) {
        {
            let mut record = lock(&self.state.record);
            record.flows.installed = flows;
            record.flows.read_unix = unix_now();
        }
        self.state.flow_updates.send_modify(|n| *n += 1);
    }

    /// Our flows as last read from the bridge, as `ovs-ofctl dump-flows`
    /// prints them (with counters).
    pub fn installed_flows(&self) -> Vec<String> {
        lock(&self.state.record)
            .flows
            .installed
            .iter()
            .map(ReadFlow::text)
            .collect()
    }

    /// How many of our flows were on the bridge when last read.
    pub fn installed_flow_count(&self) -> usize {
        lock(&self.state.record).flows.installed.len()
    }

    /// Changes whenever our flows are read or repaired (for waiting on the
    /// programmer without polling).
    pub fn watch_flows(&self) -> watch::Receiver<u64> {
        self.state.flow_updates.subscribe()
    }

    pub fn flow_record(&self) -> FlowRecord {
        lock(&self.state.record).flows.clone()
    }

    /// Records which planned flows other controllers provide or conflict with.
    pub fn set_sharing(&self, placement: &crate::coexist::Placement) {
        let render = |shared: &[crate::coexist::Shared]| {
            shared.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let mut record = lock(&self.state.record);
        record.flows.provided = render(&placement.provided);
        record.flows.conflicts = render(&placement.conflicts);
        record.flows.withheld = placement.withheld.clone();
        if record.flows.trespassing != placement.trespassing {
            if !placement.trespassing.is_empty() {
                tracing::warn!(
                    flows = ?placement.trespassing,
                    "another controller's flows are in our tables or registers (table 100/101, reg11-reg15); ours are unchanged, but these may break the lookup"
                );
            }
            record.flows.trespassing = placement.trespassing.clone();
        }
    }

    /// Counts one restore of flows that were wiped or altered.
    pub fn count_flow_repair(&self) {
        {
            let mut record = lock(&self.state.record);
            record.flows.repairs += 1;
            record.flows.last_repair_unix = unix_now();
        }
        self.state.flow_updates.send_modify(|n| *n += 1);
    }

    /// Counts one install refused because a flow overlapping ours
    /// appeared after the bridge was read (see [`crate::twins`]).
    pub fn count_contested_install(&self) {
        lock(&self.state.record).flows.contested_installs += 1;
    }

    /// How long one restore took, from the check that found the flows
    /// wiped to the flows back.
    pub fn observe_restore(&self, took: std::time::Duration) {
        self.state.restore_latency.observe(took.as_secs_f64());
    }

    pub fn restore_latency(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.state.restore_latency
    }

    pub fn flow_repairs(&self) -> u64 {
        lock(&self.state.record).flows.repairs
    }

    /// Changes the uplink guard's record.
    pub fn update_guard(&self, change: impl FnOnce(&mut GuardRecord)) {
        change(&mut lock(&self.state.record).guard);
    }

    pub fn guard(&self) -> GuardRecord {
        lock(&self.state.record).guard.clone()
    }

    pub fn set_fragments(&self, status: Option<FragmentStatus>) {
        lock(&self.state.record).fragments = status;
    }

    pub fn fragments(&self) -> Option<FragmentStatus> {
        lock(&self.state.record).fragments
    }

    /// A successful negotiation by the authorised `identity`.
    pub fn record_negotiation(&self, identity: String, gateway_interface: String) {
        {
            let mut record = lock(&self.state.record);
            let peer = &mut record.peer;
            peer.identity = identity;
            peer.negotiations += 1;
            peer.last_negotiated_unix = unix_now();
            peer.gateway_interface = Some(gateway_interface);
        }
        self.set_source(Source::Peer, Ok(()));
    }

    /// A proposal the agent refused (mismatch or malformed).
    pub fn record_refused_negotiation(&self, error: String) {
        lock(&self.state.record).peer.refused_negotiations += 1;
        self.set_source(Source::Peer, Err(format!("negotiation refused: {error}")));
    }

    /// The host's report of what it applied (or failed to), kept within
    /// bounds: a peer cannot make the agent hold (or GetStatus return) more
    /// than this.
    pub fn record_host_report(&self, report: pb::HostReport) {
        let report = bounded_report(report);
        let outcome = if report.applied {
            Ok(())
        } else if report.refused {
            Err(format!(
                "host refuses revision {}: {}; its cluster CIDRs that the host did not apply before get no flows",
                report.revision, report.error
            ))
        } else {
            Err(format!(
                "host failed to apply revision {}: {}",
                report.revision, report.error
            ))
        };
        self.state
            .host_view
            .send_if_modified(|view| view.hear(&report));
        lock(&self.state.record).peer.last_report = Some(report);
        self.set_source(Source::Peer, outcome);
    }

    pub fn peer(&self) -> PeerRecord {
        lock(&self.state.record).peer.clone()
    }

    /// Successful and refused negotiations since start.
    pub fn negotiations(&self) -> (u64, u64) {
        let peer = self.peer();
        (peer.negotiations, peer.refused_negotiations)
    }

    /// The last report the host sent, if any.
    pub fn last_host_report(&self) -> Option<pb::HostReport> {
        self.peer().last_report
    }

    pub fn count_refused_connection(&self) {
        self.state
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections failed the mTLS handshake since start.
    pub fn refused_connections(&self) -> u64 {
        self.state.refused_connections.load(Ordering::Relaxed)
    }
}

/// Bounds on what is kept of a host report.
const MAX_HOST_NAME_BYTES: usize = 253;
const MAX_REPORT_ERROR_BYTES: usize = 4096;
const MAX_REPORTED_ROUTES: usize = 2 * noverlay_proto::contract::MAX_CLUSTER_CIDRS;
const MAX_ROUTE_BYTES: usize = 256;
const MAX_NFT_RULESET_BYTES: usize = 192 * 1024;

fn bounded_report(mut report: pb::HostReport) -> pb::HostReport {
    use noverlay_proto::text::truncated;
    report.host_name = truncated(&report.host_name, MAX_HOST_NAME_BYTES);
    report.error = truncated(&report.error, MAX_REPORT_ERROR_BYTES);
    report.routes.truncate(MAX_REPORTED_ROUTES);
    for route in &mut report.routes {
        *route = truncated(route, MAX_ROUTE_BYTES);
    }
    report.nft_ruleset = truncated(&report.nft_ruleset, MAX_NFT_RULESET_BYTES);
    report
}

pub use noverlay_runtime::unix_now;
