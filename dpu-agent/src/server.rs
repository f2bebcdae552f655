//! The gRPC server: the DpuAgent service, health and reflection, served over
//! the mTLS listener.

use crate::{
    config::ValidConfig,
    flows::{self, FlowSettings, PortMap},
    negotiation::{self, NegotiationError},
    tls_listener::{self, PeerInfo},
};
use futures::{Stream, StreamExt};
use noverlay_proto::{
    MAX_MESSAGE_BYTES,
    contract::{Contract, Offer},
    pb::{self, dpu_agent_server},
    tls::{self, PeerIdentity, TlsError},
};
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// State shared by the RPC handlers and the agent's other tasks.
pub struct AgentState {
    offer: watch::Sender<Offer>,
    ports: watch::Sender<Option<PortMap>>,
    flow_settings: FlowSettings,
    record: Mutex<StatusRecord>,
    tls: Mutex<(TlsAcceptor, PeerIdentity)>,
    /// Connections refused during the mTLS handshake (auth failures).
    refused_connections: AtomicU64,
}

#[derive(Default)]
struct StatusRecord {
    last_report: Option<pb::HostReport>,
    peer_identity: String,
    last_negotiated_unix: i64,
    gateway_interface: Option<String>,
    last_error: String,
    installed_flows: Vec<String>,
    installed_flows_unix: i64,
    flow_repairs: u64,
    negotiations: u64,
    refused_negotiations: u64,
}

/// A cheap handle to the running agent, for reloads, tests and the demo.
#[derive(Clone)]
pub struct AgentHandle {
    state: Arc<AgentState>,
}

impl AgentHandle {
    /// The offer currently served.
    pub fn offer(&self) -> Offer {
        self.state.offer.borrow().clone()
    }

    /// Applies a reloaded config. Only what the DPU is the authority for
    /// (cluster CIDRs, underlay IPs, MTU) may change at runtime; a change of
    /// anything the host negotiated (families, masquerade subnets, mode) needs
    /// a restart so that the host renegotiates. Returns the revision served.
    pub fn reload(&self, config: &ValidConfig) -> Result<u64, ReloadError> {
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
                "address families, masquerade subnets or mode changed",
            ));
        }
        let revised = current
            .revised(next.families.clone(), next.mtu)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        // Everything that can fail comes before anything changes: a failed
        // reload leaves the running state whole.
        let tls_config = tls::server_config(&config.raw.tls, &config.raw.authorised_host)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let revision = revised.revision;
        self.state.offer.send_if_modified(|offer| {
            let changed = *offer != revised;
            *offer = revised;
            changed
        });
        self.state.ports.send_if_modified(|ports| {
            let changed = *ports != config.static_ports && config.static_ports.is_some();
            if changed {
                *ports = config.static_ports;
            }
            changed
        });
        *lock(&self.state.tls) = (
            TlsAcceptor::from(tls_config),
            config.authorised_host.clone(),
        );
        Ok(revision)
    }

    /// Records the port map discovered from OVSDB (or given by hand).
    pub fn set_ports(&self, ports: Option<PortMap>) {
        self.state.ports.send_replace(ports);
    }

    /// The flows the agent wants on the bridge, if the ports are known.
    pub fn desired_flows(&self) -> Option<Vec<flows::Flow>> {
        let ports = (*self.state.ports.borrow())?;
        Some(flows::plan_flows(
            &self.offer(),
            &ports,
            &self.state.flow_settings,
        ))
    }

    pub fn flow_settings(&self) -> FlowSettings {
        self.state.flow_settings
    }

    /// Wakes on every offer or port-map change (for the flow programmer).
    pub fn subscribe(&self) -> (watch::Receiver<Offer>, watch::Receiver<Option<PortMap>>) {
        (self.state.offer.subscribe(), self.state.ports.subscribe())
    }

    /// Sets the error shown in GetStatus; empty clears it.
    pub fn set_last_error(&self, error: String) {
        lock(&self.state.record).last_error = error;
    }

    /// Records our flows as OVS reported them just now.
    pub fn set_installed_flows(&self, flows: Vec<String>) {
        let mut record = lock(&self.state.record);
        record.installed_flows = flows;
        record.installed_flows_unix = unix_now();
    }

    /// Our flows as last read from the bridge (with counters).
    pub fn installed_flows(&self) -> Vec<String> {
        lock(&self.state.record).installed_flows.clone()
    }

    /// Counts one restore of flows that were wiped or altered.
    pub fn count_flow_repair(&self) {
        lock(&self.state.record).flow_repairs += 1;
    }

    pub fn flow_repairs(&self) -> u64 {
        lock(&self.state.record).flow_repairs
    }

    /// Successful and refused negotiations since start.
    pub fn negotiations(&self) -> (u64, u64) {
        let record = lock(&self.state.record);
        (record.negotiations, record.refused_negotiations)
    }

    pub fn last_error(&self) -> String {
        lock(&self.state.record).last_error.clone()
    }

    /// The port map in use, if known.
    pub fn ports(&self) -> Option<PortMap> {
        *self.state.ports.borrow()
    }

    /// How many connections failed the mTLS handshake since start.
    pub fn refused_connections(&self) -> u64 {
        self.state.refused_connections.load(Ordering::Relaxed)
    }

    /// The last report the host sent, if any.
    pub fn last_host_report(&self) -> Option<pb::HostReport> {
        lock(&self.state.record).last_report.clone()
    }
}

/// A poisoned lock only means a handler panicked mid-update of plain data;
/// the data is still usable, so keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, restart needed: {0}")]
    NeedsRestart(&'static str),
    #[error("reload refused: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving, dpu-agent.
pub struct DpuAgent {
    listener: TcpListener,
    handle: AgentHandle,
}

impl DpuAgent {
    /// Binds the listen address and loads the TLS identity; fails before
    /// serving anything if either is wrong.
    pub async fn bind(config: &ValidConfig) -> Result<Self, ServeError> {
        let tls_config = tls::server_config(&config.raw.tls, &config.raw.authorised_host)?;
        let addr = config.raw.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = AgentState {
            offer: watch::Sender::new(config.offer.clone()),
            ports: watch::Sender::new(config.static_ports),
            flow_settings: config.flow_settings(),
            record: Mutex::default(),
            tls: Mutex::new((
                TlsAcceptor::from(tls_config),
                config.authorised_host.clone(),
            )),
            refused_connections: AtomicU64::new(0),
        };
        Ok(DpuAgent {
            listener,
            handle: AgentHandle {
                state: Arc::new(state),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn handle(&self) -> AgentHandle {
        self.handle.clone()
    }

    /// Serves until `shutdown` is cancelled; open watch streams end then too.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        // grpcurl 1.8 speaks only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status(pb::DPU_AGENT_SERVICE, tonic_health::ServingStatus::Serving)
            .await;

        let service = dpu_agent_server::DpuAgentServer::new(DpuService {
            state: self.handle.state.clone(),
            shutdown: shutdown.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(64);
        let tls_state = self.handle.state.clone();
        let refused_state = self.handle.state.clone();
        let accept = tokio::spawn(tls_listener::accept_loop(
            self.listener,
            move || {
                let (acceptor, identity) = &*lock(&tls_state.tls);
                (acceptor.clone(), identity.to_string())
            },
            conn_tx,
            move || {
                refused_state
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
            },
            shutdown.clone(),
        ));
        let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        accept.abort();
        result.map_err(ServeError::from)
    }
}

struct DpuService {
    state: Arc<AgentState>,
    shutdown: CancellationToken,
}

fn peer_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<PeerInfo>()
        .map(|p| format!("{} ({})", p.identity, p.remote))
        .unwrap_or_else(|| "unknown peer".into())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl DpuService {
    fn negotiate_for(
        &self,
        peer: &str,
        proposal: &pb::NegotiateRequest,
    ) -> Result<Contract, Status> {
        let offer = self.state.offer.borrow().clone();
        match negotiation::negotiate(proposal, &offer) {
            Ok(contract) => Ok(contract),
            Err(e) => {
                lock(&self.state.record).refused_negotiations += 1;
                tracing::warn!(%peer, host = %proposal.host_name, error = %e, "negotiation refused");
                Err(match e {
                    NegotiationError::Mismatch(_) => Status::failed_precondition(e.to_string()),
                    NegotiationError::Invalid(_) => Status::invalid_argument(e.to_string()),
                })
            }
        }
    }
}

type ContractStream = Pin<Box<dyn Stream<Item = Result<pb::ContractUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl dpu_agent_server::DpuAgent for DpuService {
    async fn negotiate(
        &self,
        request: Request<pb::NegotiateRequest>,
    ) -> Result<Response<pb::NegotiateResponse>, Status> {
        let peer = peer_of(&request);
        let identity = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        let contract = self.negotiate_for(&peer, request.get_ref())?;
        tracing::info!(%peer, host = %request.get_ref().host_name, revision = contract.revision, "negotiated");
        {
            let mut record = lock(&self.state.record);
            record.peer_identity = identity;
            record.negotiations += 1;
            record.last_negotiated_unix = unix_now();
            record.gateway_interface = Some(contract.gateway_interface.clone());
        }
        Ok(Response::new(pb::NegotiateResponse {
            contract: Some(contract.to_pb()),
        }))
    }

    type WatchContractStream = ContractStream;

    async fn watch_contract(
        &self,
        request: Request<pb::NegotiateRequest>,
    ) -> Result<Response<ContractStream>, Status> {
        let peer = peer_of(&request);
        let proposal = request.into_inner();
        // Refuse a watch that would not negotiate now.
        self.negotiate_for(&peer, &proposal)?;
        tracing::info!(%peer, "contract watch started");
        let gateway = proposal.gateway_interface;
        let updates = WatchStream::new(self.state.offer.subscribe())
            .map(move |offer| {
                offer
                    .contract_for(&gateway)
                    .map(|c| pb::ContractUpdate {
                        contract: Some(c.to_pb()),
                    })
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(updates)))
    }

    async fn report_applied(
        &self,
        request: Request<pb::HostReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let peer = peer_of(&request);
        let report = request.into_inner();
        if report.applied {
            tracing::info!(%peer, revision = report.revision, routes = report.routes.len(), "host applied contract");
        } else {
            tracing::warn!(%peer, revision = report.revision, error = %report.error, "host failed to apply contract");
        }
        lock(&self.state.record).last_report = Some(report);
        Ok(Response::new(pb::ReportAck {
            current_revision: self.state.offer.borrow().revision,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let handle = AgentHandle {
            state: self.state.clone(),
        };
        let offer = handle.offer();
        let record = lock(&self.state.record);
        let contract = match &record.gateway_interface {
            Some(gateway) => offer.contract_for(gateway).map(|c| c.to_pb()).ok(),
            None => None,
        }
        .unwrap_or_else(|| {
            // Not negotiated yet: show the offer, without a gateway interface.
            let mut shown = offer
                .contract_for("unknown")
                .map(|c| c.to_pb())
                .unwrap_or_default();
            shown.gateway_interface.clear();
            shown
        });
        let desired_flows = handle
            .desired_flows()
            .map(|f| flows::render_flows(&f, self.state.flow_settings.cookie))
            .unwrap_or_default();
        Ok(Response::new(pb::AgentStatus {
            contract: Some(contract),
            desired_flows,
            last_host_report: record.last_report.clone(),
            peer_identity: record.peer_identity.clone(),
            last_negotiated_unix: record.last_negotiated_unix,
            last_error: record.last_error.clone(),
            installed_flows: record.installed_flows.clone(),
            installed_flows_unix: record.installed_flows_unix,
            port_map: handle.ports().map(|p| pb::PortMap {
                host_representor: p.host_representor,
                patch: p.patch,
                uplink: p.uplink,
                bridge_mac: noverlay_proto::contract::format_mac(&p.bridge_mac),
            }),
            flow_repairs: record.flow_repairs,
        }))
    }
}
