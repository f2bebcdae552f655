//! Accepts TCP connections and completes the mTLS handshake before tonic
//! sees them, so that a refused peer is logged with its address and the
//! reason, and never reaches a gRPC handler. Connections that have not
//! authenticated yet are bounded ([`handshakes`]): a flood of them closes
//! only idle ones, and the authorised peer still gets in.
//!
//! The server decides who may connect through [`Admission`]: the TLS
//! acceptor for the next connection (so a certificate reload takes effect
//! from the next handshake) and where refusals are counted.

pub mod handshakes;

use handshakes::{LogLimiter, PendingHandshakes, Refusal, RefusalTally};
use noverlay_runtime::systemd::Heartbeat;
use std::{
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor, rustls::server::Acceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// A slow or silent client must not hold a handshake slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusal and accept-error log lines: at most this many per window (the
/// rest are counted in metrics and summed up in the next line).
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Refusals are also summed up as a rate, one line per window that had any:
/// a flood reads as its rate within seconds, not as a line per connection.
const RATE_WINDOW: Duration = Duration::from_secs(10);

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
    let tally = Arc::new(RefusalTally::default());
    let mut summary =
        tokio::time::interval_at(tokio::time::Instant::now() + RATE_WINDOW, RATE_WINDOW);
    let accept_errors = LogLimiter::new(LOG_BURST, LOG_WINDOW);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = beat.tick() => {
                heartbeat.beat();
                continue;
            }
            _ = summary.tick() => {
                log_refusal_rate(tally.take());
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
        let slot = pending.admit(remote.ip(), Some(tcp.as_raw_fd()));
        let refusals = refusals.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let handshake = async {
                // Each stage a client reaches puts it out of reach of
                // connections idling in an earlier one.
                tcp.peek(&mut [0u8; 1]).await?;
                slot.spoke();
                let hello = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
                slot.past_hello();
                hello.into_stream(tls.config().clone()).await
            };
            let handshake = tokio::select! {
                done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => done,
                _ = slot.cancelled.cancelled() => {
                    // Evicted by a newer connection: counted, summed up in
                    // the rate line (a flood would fill the log).
                    admission.refused();
                    tally.count(Refusal::Evicted);
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
                    tally.count(Refusal::Failed);
                    if let Some(held_back) = refusals.admit() {
                        tracing::warn!(%remote, error = %e, not_logged_before = held_back, "refused connection: mTLS handshake failed");
                    }
                }
                Err(_) => {
                    admission.refused();
                    tally.count(Refusal::TimedOut);
                    if let Some(held_back) = refusals.admit() {
                        tracing::warn!(%remote, timeout = ?HANDSHAKE_TIMEOUT, not_logged_before = held_back, "refused connection: mTLS handshake timed out");
                    }
                }
            }
        });
    }
}

/// One line for a window's refusals, with the rate: what a flood looks like
/// in the log.
fn log_refusal_rate([evicted, failed, timed_out]: [u64; 3]) {
    let total = evicted + failed + timed_out;
    if total > 0 {
        tracing::warn!(
            total,
            per_second = format!("{:.1}", total as f64 / RATE_WINDOW.as_secs_f64()),
            evicted,
            failed,
            timed_out,
            window = ?RATE_WINDOW,
            "unauthenticated connections refused in the last window (evicted: a newer connection took the slot before a handshake finished)"
        );
    }
}
