//! Accepts TCP connections and completes the mTLS handshake before tonic
//! sees them, so that a refused peer is logged with its address and the
//! reason, and never reaches a gRPC handler.

use crate::{
    handshakes::{LogLimiter, PendingHandshakes},
    state::{AgentHandle, TlsIdentity},
};
use noverlay_runtime::systemd::Heartbeat;
use std::sync::Arc;
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// A slow or silent client must not hold a handshake slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusal and accept-error log lines: at most this many per window (the
/// rest are counted in metrics and summed up in the next line).
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Who is on the other end of an authenticated connection. Available to
/// handlers as a request extension.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The authorised identity the client certificate matched.
    pub identity: String,
}

/// A connection whose client certificate passed the SAN pin.
pub struct AuthenticatedConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for AuthenticatedConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for AuthenticatedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Who may connect: the TLS acceptor (with the identity it pins) for the
/// next connection, and where refusals are counted.
pub trait Admission: Send + Sync + 'static {
    fn acceptor(&self) -> (TlsAcceptor, String);
    fn refused(&self);
}

impl Admission for AgentHandle {
    fn acceptor(&self) -> (TlsAcceptor, String) {
        let TlsIdentity {
            acceptor,
            authorised_host,
        } = self.tls();
        (acceptor, authorised_host.to_string())
    }

    fn refused(&self) {
        self.count_refused_connection();
    }
}

/// Runs the accept loop until `shutdown`, handing authenticated connections
/// to `accepted`. Each handshake runs in its own task so one slow client
/// cannot stall the others.
pub async fn accept_loop(
    listener: TcpListener,
    admission: impl Admission + Clone,
    accepted: mpsc::Sender<AuthenticatedConn>,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) {
    // The watchdog sees this loop alive as long as it comes round.
    let mut beat = heartbeat.ticker();
    let pending = PendingHandshakes::default();
    let refusals = Arc::new(LogLimiter::new(LOG_BURST, LOG_WINDOW));
    let accept_errors = LogLimiter::new(LOG_BURST, LOG_WINDOW);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = beat.tick() => {
                heartbeat.beat();
                continue;
            }
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if let Some(held_back) = accept_errors.admit() {
                        tracing::warn!(error = %e, not_logged_before = held_back, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small gRPC messages must not wait for Nagle and delayed ACKs
        // (a 40 ms stall per contract update otherwise).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "TCP_NODELAY not set");
        }
        let (tls, identity) = admission.acceptor();
        let accepted = accepted.clone();
        let admission = admission.clone();
        let slot = pending.admit(remote.ip());
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let handshake = tokio::select! {
                done = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)) => done,
                _ = slot.cancelled.cancelled() => {
                    // Evicted by a newer connection: counted, not logged
                    // (a flood would fill the log).
                    admission.refused();
                    return;
                }
            };
            drop(slot);
            match handshake {
                Ok(Ok(stream)) => {
                    tracing::debug!(%remote, %identity, "mTLS peer authenticated");
                    let conn = AuthenticatedConn {
                        stream,
                        peer: PeerInfo { remote, identity },
                    };
                    // The server is gone when the receiver is; nothing to do.
                    let _ = accepted.send(conn).await;
                }
                Ok(Err(e)) => {
                    admission.refused();
                    if let Some(held_back) = refusals.admit() {
                        tracing::warn!(%remote, error = %e, not_logged_before = held_back, "refused connection: mTLS handshake failed");
                    }
                }
                Err(_) => {
                    admission.refused();
                    if let Some(held_back) = refusals.admit() {
                        tracing::warn!(%remote, timeout = ?HANDSHAKE_TIMEOUT, not_logged_before = held_back, "refused connection: mTLS handshake timed out");
                    }
                }
            }
        });
    }
}
