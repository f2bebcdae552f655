//! The gRPC server, and only that: the DpuAgent service, health and
//! reflection, served over the mTLS listener. The state it serves lives in
//! [`crate::state`].

use crate::{
    config::ValidConfig,
    flows,
    state::{AgentHandle, TlsIdentity},
    switch::ReadFlow,
};
use futures::{Stream, StreamExt};
use noverlay_proto::{
    MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES,
    contract::Contract,
    negotiation::{self, NegotiationError},
    pb::{self, dpu_agent_server},
    text::loggable,
    tls::{self, TlsError},
};
use noverlay_runtime::systemd::{Heartbeat, Watchdog};
use noverlay_tls_gate::{self as tls_listener, Admission, PeerInfo};
use std::{net::SocketAddr, pin::Pin};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

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

/// HTTP/2 pings to a connected host, and how long it has to answer.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Concurrent streams per connection: the host needs two (the watch and a
/// unary call); grpcurl one.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;

/// A bound, not yet serving, dpu-agent.
pub struct DpuAgent {
    listener: TcpListener,
    handle: AgentHandle,
    heartbeat: Heartbeat,
}

impl DpuAgent {
    /// Binds the listen address and loads the TLS identity; fails before
    /// serving anything if either is wrong.
    pub async fn bind(config: &ValidConfig) -> Result<Self, ServeError> {
        let tls_config = tls::server_config(&config.raw.tls, &config.raw.authorised_host)?;
        let expiry_unix = tls::certificate_expiry_unix(&config.raw.tls.cert)?;
        let addr = config.raw.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let handle = AgentHandle::new(
            config,
            TlsIdentity {
                acceptor: TlsAcceptor::from(tls_config),
                authorised_host: config.authorised_host.clone(),
                expiry_unix,
            },
        );
        Ok(DpuAgent {
            listener,
            handle,
            // Replaced by the daemon's (with_heartbeat); unwatched otherwise.
            heartbeat: Watchdog::with_timeout(None).heartbeat("grpc server"),
        })
    }

    /// Feeds `heartbeat` from the accept loop (the systemd watchdog).
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
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
            handle: self.handle.clone(),
            shutdown: shutdown.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);

        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(64);
        let accept = tokio::spawn(tls_listener::accept_loop(
            self.listener,
            self.handle.clone(),
            conn_tx,
            self.heartbeat,
            shutdown.clone(),
        ));
        let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
        let result = tonic::transport::Server::builder()
            // A host that vanished without closing is noticed.
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            // One connection cannot open streams without bound.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
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
    handle: AgentHandle,
    shutdown: CancellationToken,
}

fn peer_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<PeerInfo>()
        .map(|p| format!("{} ({})", p.identity, p.remote))
        .unwrap_or_else(|| "unknown peer".into())
}

impl DpuService {
    fn negotiate_for(
        &self,
        peer: &str,
        proposal: &pb::NegotiateRequest,
    ) -> Result<Contract, Status> {
        match negotiation::negotiate(proposal, &self.handle.offer()) {
            Ok(contract) => Ok(contract),
            Err(e) => {
                self.handle.record_refused_negotiation(e.to_string());
                tracing::warn!(%peer, host = %loggable(&proposal.host_name), error = %loggable(&e.to_string()), "negotiation refused");
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
        tracing::info!(%peer, host = %loggable(&request.get_ref().host_name), revision = contract.revision, "negotiated");
        self.handle
            .record_negotiation(identity, contract.gateway_interface.clone());
        Ok(Response::new(pb::NegotiateResponse {
            contract: Some(with_facts(contract.to_pb(), &self.handle)),
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
        let (offers, _) = self.handle.subscribe();
        // The contract as it is now (first at once), and again, unchanged,
        // whenever OVN's routes change: the host shows them.
        let changes = futures::stream::select(
            WatchStream::new(offers).map(drop),
            WatchStream::from_changes(self.handle.watch_ovn_routes()).map(drop),
        );
        let handle = self.handle.clone();
        let updates = changes
            .map(move |()| {
                handle
                    .offer()
                    .contract_for(&gateway)
                    .map(|c| pb::ContractUpdate {
                        contract: Some(with_facts(c.to_pb(), &handle)),
                        ovn_routes: handle.ovn_routes().as_ref().map(ovn_routes_to_pb),
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
            tracing::warn!(%peer, revision = report.revision, error = %loggable(&report.error), "host failed to apply contract");
        }
        self.handle.record_host_report(report);
        Ok(Response::new(pb::ReportAck {
            current_revision: self.handle.offer().revision,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let handle = &self.handle;
        let offer = handle.offer();
        let peer = handle.peer();
        let contract = match &peer.gateway_interface {
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
            .map(|f| flows::render_flows(&f, handle.flow_settings().cookie))
            .unwrap_or_default();
        let sources = handle.sources();
        let installed = handle.flow_record();
        Ok(Response::new(pb::AgentStatus {
            contract: Some(contract),
            desired_flows,
            last_host_report: peer.last_report,
            peer_identity: peer.identity,
            last_negotiated_unix: peer.last_negotiated_unix,
            last_error: sources.summary(),
            installed_flows: installed.installed.iter().map(ReadFlow::text).collect(),
            installed_flows_unix: installed.read_unix,
            port_map: handle.ports().map(|p| pb::PortMap {
                host_representor: p.host_representor,
                patch: p.patch,
                uplink: p.uplink,
                bridge_mac: noverlay_proto::contract::format_mac(&p.bridge_mac),
            }),
            flow_repairs: installed.repairs,
            contested_installs: installed.contested_installs,
            last_flow_repair_unix: installed.last_repair_unix,
            sources: sources.to_pb(),
            provided_flows: installed.provided,
            flow_conflicts: installed.conflicts,
            withheld_flows: installed.withheld,
            trespassing_flows: installed.trespassing,
            uplink_guard: Some(handle.guard().to_pb()),
            config_facts: handle.facts().iter().map(ToString::to_string).collect(),
            ovn_routes: handle.ovn_routes().as_ref().map(ovn_routes_to_pb),
        }))
    }
}

fn ovn_routes_to_pb(routes: &crate::ovn::ClusterRoutes) -> pb::OvnRoutes {
    pb::OvnRoutes {
        cluster_routes: u32::try_from(routes.routes).unwrap_or(u32::MAX),
        imported: u32::try_from(routes.imported).unwrap_or(u32::MAX),
        unrouted_cidrs: routes.unrouted.iter().map(ToString::to_string).collect(),
    }
}

/// A contract for the host, with where each of its facts came from.
fn with_facts(mut contract: pb::Contract, handle: &AgentHandle) -> pb::Contract {
    contract.facts = handle.facts().iter().map(ToString::to_string).collect();
    contract
}

/// Who may connect: the host identity in the config in force, with the
/// acceptor of the certificates last loaded.
impl Admission for AgentHandle {
    fn acceptor(&self) -> (TlsAcceptor, String) {
        let TlsIdentity {
            acceptor,
            authorised_host,
            ..
        } = self.tls();
        (acceptor, authorised_host.to_string())
    }

    fn refused(&self) {
        self.count_refused_connection();
    }
}
