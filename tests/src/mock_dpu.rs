//! A scripted DPU for testing the real host-agent: it answers Negotiate with
//! whatever the test says, streams the contracts the test sends, and hands
//! the host's reports back to the test. Served over the same mTLS listener
//! as the real dpu-agent.

use futures::StreamExt;
use noverlay_proto::{
    pb::{self, dpu_agent_server},
    tls::{self, TlsFiles},
};
use noverlay_runtime::systemd::Watchdog;
use noverlay_tls_gate as tls_gate;
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Admits the one identity the mock was started with.
#[derive(Clone)]
struct MockAdmission {
    acceptor: tokio_rustls::TlsAcceptor,
    identity: String,
}

impl tls_gate::Admission for MockAdmission {
    fn acceptor(&self) -> (tokio_rustls::TlsAcceptor, String) {
        (self.acceptor.clone(), self.identity.clone())
    }

    fn refused(&self) {}
}

/// The test's side of a mock DPU.
pub struct MockDpu {
    pub addr: SocketAddr,
    /// Contracts to stream to the host's watch (first = current).
    pub contracts: mpsc::UnboundedSender<pb::Contract>,
    /// Reports the host sent.
    pub reports: mpsc::UnboundedReceiver<pb::HostReport>,
    /// While set, ReportApplied records the report and never answers (a
    /// DPU that accepted the connection and stalled).
    pub stall_reports: Arc<AtomicBool>,
    /// While set, Negotiate never answers.
    pub stall_negotiate: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

struct Script {
    negotiate: Result<pb::Contract, Status>,
    watch: Mutex<Option<mpsc::UnboundedReceiver<pb::Contract>>>,
    reports: mpsc::UnboundedSender<pb::HostReport>,
    stall_reports: Arc<AtomicBool>,
    stall_negotiate: Arc<AtomicBool>,
}

struct MockService(Arc<Script>);

type ContractStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ContractUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl dpu_agent_server::DpuAgent for MockService {
    async fn negotiate(
        &self,
        _request: Request<pb::NegotiateRequest>,
    ) -> Result<Response<pb::NegotiateResponse>, Status> {
        if self.0.stall_negotiate.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        self.0.negotiate.clone().map(|contract| {
            Response::new(pb::NegotiateResponse {
                contract: Some(contract),
            })
        })
    }

    type WatchContractStream = ContractStream;

    async fn watch_contract(
        &self,
        _request: Request<pb::NegotiateRequest>,
    ) -> Result<Response<ContractStream>, Status> {
        let rx = self
            .0
            .watch
            .lock()
            .await
            .take()
            .ok_or_else(|| Status::unavailable("the mock serves one watch"))?;
        let stream = UnboundedReceiverStream::new(rx).map(|contract| {
            Ok(pb::ContractUpdate {
                contract: Some(contract),
                ovn_routes: None,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_applied(
        &self,
        request: Request<pb::HostReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let _ = self.0.reports.send(request.into_inner());
        if self.0.stall_reports.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(pb::ReportAck::default()))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

impl MockDpu {
    /// Starts a mock that answers Negotiate with `negotiate` and presents
    /// `tls`, authorising the client identity `authorised_host`.
    pub async fn start(
        tls: &TlsFiles,
        authorised_host: &str,
        negotiate: Result<pb::Contract, Status>,
    ) -> anyhow::Result<Self> {
        Self::start_at(tls, authorised_host, negotiate, "127.0.0.1:0".parse()?).await
    }

    /// As [`MockDpu::start`], listening on `addr`: a DPU agent restarted
    /// where the host already dials.
    pub async fn start_at(
        tls: &TlsFiles,
        authorised_host: &str,
        negotiate: Result<pb::Contract, Status>,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let server_config = tls::server_config(tls, authorised_host)?;
        // The port of a mock just stopped may take a moment to be free.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let addr = listener.local_addr()?;
        let (contracts, watch_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let stall_reports = Arc::new(AtomicBool::new(false));
        let stall_negotiate = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Script {
            negotiate,
            watch: Mutex::new(Some(watch_rx)),
            reports: reports_tx,
            stall_reports: stall_reports.clone(),
            stall_negotiate: stall_negotiate.clone(),
        });
        let shutdown = CancellationToken::new();
        let (conn_tx, conn_rx) = mpsc::channel(8);
        tokio::spawn(tls_gate::accept_loop(
            listener,
            MockAdmission {
                acceptor: tokio_rustls::TlsAcceptor::from(server_config),
                identity: authorised_host.to_string(),
            },
            conn_tx,
            Watchdog::with_timeout(None).heartbeat("mock accept loop"),
            shutdown.clone(),
        ));
        let service = dpu_agent_server::DpuAgentServer::new(MockService(script));
        let serve_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, serve_shutdown.cancelled_owned())
                .await
        });
        Ok(MockDpu {
            addr,
            contracts,
            reports,
            stall_reports,
            stall_negotiate,
            shutdown,
        })
    }

    pub async fn next_report(&mut self) -> anyhow::Result<pb::HostReport> {
        tokio::time::timeout(std::time::Duration::from_secs(15), self.reports.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("mock DPU report channel closed"))
    }
}

impl Drop for MockDpu {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
