//! One long-lived OpenFlow connection (1.4, or 1.3 where the bridge allows
//! no later version) to a bridge (its unix management
//! socket, or a `ptcp:` listener of ovs-vswitchd over TCP), opened on first use and again after it breaks (ovs-vswitchd restarted,
//! a request missed its deadline). A reader task routes replies to their
//! requests by xid, answers echo requests, and turns flow-monitor updates
//! into wake-ups; every request has a deadline.

mod bundle;
mod hello;
mod io;
mod pending;

pub use hello::names;

use super::wire::{self, FlowStats};
use crate::lock;
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    sync::mpsc,
};

/// Where the switch listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket, e.g. /var/run/openvswitch/breth0.mgmt.
    Unix(PathBuf),
    /// host:port of a TCP listener (ovs-vswitchd's `ptcp:`).
    Tcp(String),
}

impl Endpoint {
    /// From an OpenFlow target as ovs-ofctl writes it: `unix:<path>` or
    /// `tcp:<ip>:<port>` (`tcp:[<ipv6>]:<port>`). None for others (`ssl:`).
    pub fn from_target(target: &str) -> Option<Self> {
        if let Some(path) = target.strip_prefix("unix:") {
            return Some(Endpoint::Unix(path.into()));
        }
        let address = target.strip_prefix("tcp:")?;
        address
            .parse::<std::net::SocketAddr>()
            .is_ok()
            .then(|| Endpoint::Tcp(address.to_string()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

async fn open(endpoint: &Endpoint) -> std::io::Result<(Reader, Writer)> {
    Ok(match endpoint {
        Endpoint::Unix(path) => {
            let (reader, writer) = UnixStream::connect(path).await?.into_split();
            (Box::new(reader), Box::new(writer))
        }
        Endpoint::Tcp(address) => {
            let stream = TcpStream::connect(address).await?;
            // Requests are whole messages written at once: no need to wait.
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
    })
}

/// Deadline of one request (and of connecting).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// An echo request this often on an open connection; one unanswered
/// within [`REQUEST_DEADLINE`] drops the connection.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
/// The largest message accepted from the switch (OpenFlow's own limit).
const MAX_MESSAGE: usize = 65535;
/// Echo replies waiting to be written; a switch that sends more echo
/// requests than it reads replies loses the connection.
const MAX_QUEUED_ECHOES: usize = 64;
/// The most flow-stats reply bytes one read of the bridge collects (about
/// 100,000 flows like ours; ovnkube's bridge holds hundreds): past it the
/// read fails and the connection is dropped, the memory freed.
pub const MAX_FLOW_STATS_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("the OpenFlow connection to {0} broke")]
    Broken(String),
    #[error("no answer from {0} within {REQUEST_DEADLINE:?} (ovs-vswitchd stuck?)")]
    Timeout(String),
    #[error("the switch refused {what}: OpenFlow error type {kind}, code {code}")]
    Refused {
        what: String,
        /// The xid of the refused message inside a bundle.
        message: Option<u32>,
        kind: u16,
        code: u16,
    },
    #[error("malformed reply from the switch: {0}")]
    Malformed(&'static str),
    #[error(
        "the switch sent more than {MAX_FLOW_STATS_BYTES} bytes of flow stats for one request; dropped the connection"
    )]
    TooLarge,
    /// The switch's hello offers none of [`wire::VERSIONS`].
    #[error(
        "the switch at {endpoint} allows {} only; dpu-agent speaks {}",
        names(offered),
        names(&wire::VERSIONS)
    )]
    NoCommonVersion { endpoint: String, offered: Vec<u8> },
}

/// A live connection: its version, its writer and its requests in flight.
struct Connection {
    version: u8,
    writer: tokio::sync::Mutex<Writer>,
    pending: pending::InFlight,
    alive: Arc<std::sync::atomic::AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The session: cheap to clone, shared by the programmer and cleanup.
#[derive(Clone)]
pub struct Session {
    endpoint: Endpoint,
    connection: Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>,
    watchers: Arc<Mutex<Vec<mpsc::UnboundedSender<()>>>>,
    next_xid: Arc<AtomicU32>,
}

impl Session {
    /// Requests in flight on the live connection.
    #[cfg(test)]
    async fn in_flight(&self) -> usize {
        match self.connection.lock().await.as_ref() {
            Some(connection) => lock(&connection.pending).len(),
            None => 0,
        }
    }

    /// A session on the unix socket at `path`; nothing is opened yet.
    pub fn new(path: PathBuf) -> Self {
        Self::on(Endpoint::Unix(path))
    }

    /// A session on `endpoint`; nothing is opened yet.
    pub fn on(endpoint: Endpoint) -> Self {
        Session {
            endpoint,
            connection: Arc::default(),
            watchers: Arc::default(),
            next_xid: Arc::new(AtomicU32::new(1)),
        }
    }

    fn name(&self) -> String {
        self.endpoint.to_string()
    }

    pub fn xid(&self) -> u32 {
        self.next_xid.fetch_add(1, Ordering::Relaxed)
    }

    /// Receives `()` on every flow change the switch reports, and when the
    /// connection breaks (changes may have been missed).
    pub fn watch(&self) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.watchers).push(tx);
        rx
    }

    /// The OpenFlow version of the live connection, opening one if needed.
    pub async fn version(&self) -> Result<u8, SessionError> {
        Ok(self.connection().await?.version)
    }

    /// The live connection, opening one (hellos exchanged, the version
    /// negotiated, then the flow monitor) if there is none.
    async fn connection(&self) -> Result<Arc<Connection>, SessionError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.alive.load(Ordering::Acquire)) {
            return Ok(c.clone());
        }
        *slot = None;
        let connect_error = |reason: String| SessionError::Connect {
            path: self.name(),
            reason,
        };
        let (mut reader, mut writer) = tokio::time::timeout(REQUEST_DEADLINE, open(&self.endpoint))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        writer
            .write_all(&wire::hello(self.xid()))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let version = tokio::time::timeout(
            REQUEST_DEADLINE,
            hello::negotiate(&mut reader, &self.name()),
        )
        .await
        .map_err(|_| SessionError::Timeout(self.name()))??;
        let monitor_xid = self.xid();
        writer
            .write_all(&wire::flow_monitor_request(
                version,
                monitor_xid,
                monitor_xid,
            ))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let pending = pending::InFlight::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (echo_tx, mut echo_rx) = mpsc::channel::<Vec<u8>>(MAX_QUEUED_ECHOES);
        let reader = tokio::spawn(io::read_loop(
            reader,
            pending.clone(),
            alive.clone(),
            self.watchers.clone(),
            echo_tx,
        ));
        let connection = Arc::new(Connection {
            version,
            writer: tokio::sync::Mutex::new(writer),
            pending,
            alive,
            reader,
        });
        // Echo replies go out through the shared writer.
        let weak = Arc::downgrade(&connection);
        tokio::spawn(async move {
            while let Some(reply) = echo_rx.recv().await {
                let Some(c) = weak.upgrade() else { return };
                let _ = c.writer.lock().await.write_all(&reply).await;
            }
        });
        tokio::spawn(io::keepalive(
            Arc::downgrade(&connection),
            self.next_xid.clone(),
            self.watchers.clone(),
        ));
        *slot = Some(connection.clone());
        tracing::info!(
            socket = %self.name(),
            version = %wire::version_name(version),
            "OpenFlow session open"
        );
        Ok(connection)
    }

    /// Drops the connection (a request timed out): the next request opens
    /// a fresh one.
    async fn reset(&self) {
        if let Some(c) = self.connection.lock().await.take() {
            c.alive.store(false, Ordering::Release);
        }
        notify(&self.watchers);
    }

    async fn send(
        &self,
        connection: &Connection,
        messages: &[Vec<u8>],
    ) -> Result<(), SessionError> {
        let mut writer = connection.writer.lock().await;
        for message in messages {
            if writer.write_all(message).await.is_err() {
                connection.alive.store(false, Ordering::Release);
                return Err(SessionError::Broken(self.name()));
            }
        }
        Ok(())
    }

    /// Runs `work` under the request deadline; a miss resets the session.
    async fn deadline<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, SessionError>>,
    ) -> Result<T, SessionError> {
        match tokio::time::timeout(REQUEST_DEADLINE, work).await {
            Ok(result) => result,
            Err(_) => {
                self.reset().await;
                Err(SessionError::Timeout(self.name()))
            }
        }
    }

    /// Every flow whose cookie matches `cookie` under `mask` (0: all).
    pub async fn flows(&self, cookie: u64, mask: u64) -> Result<Vec<FlowStats>, SessionError> {
        self.deadline(async {
            let connection = self.connection().await?;
            let xid = self.xid();
            let mut parts = pending::many(&connection.pending, xid);
            let request = wire::flow_stats_request(xid, cookie, mask);
            self.send(
                &connection,
                &[wire::with_version(request, connection.version)],
            )
            .await?;
            let mut flows = Vec::new();
            let mut received = 0usize;
            loop {
                let reply = parts
                    .replies
                    .recv()
                    .await
                    .ok_or_else(|| SessionError::Broken(self.name()))?;
                received += reply.len();
                if received > MAX_FLOW_STATS_BYTES {
                    connection.alive.store(false, Ordering::Release);
                    return Err(SessionError::TooLarge);
                }
                if reply.get(1) == Some(&wire::OFPT_ERROR) {
                    let (kind, code) = wire::error_type_code(&reply).unwrap_or_default();
                    return Err(SessionError::Refused {
                        what: "flow stats request".into(),
                        message: None,
                        kind,
                        code,
                    });
                }
                let (kind, flags, body) =
                    wire::multipart_reply(&reply).ok_or(SessionError::Malformed("multipart"))?;
                if kind != wire::OFPMP_FLOW {
                    return Err(SessionError::Malformed("not flow stats"));
                }
                flows.extend(
                    wire::parse_flow_stats(body).ok_or(SessionError::Malformed("flow stats"))?,
                );
                if flags & wire::OFPMPF_REPLY_MORE == 0 {
                    return Ok(flows);
                }
            }
        })
        .await
    }
}

fn notify(watchers: &Mutex<Vec<mpsc::UnboundedSender<()>>>) {
    lock(watchers).retain(|w| w.send(()).is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;
    use tokio::{io::AsyncReadExt, net::UnixListener};

    #[test]
    fn targets_name_their_endpoint() {
        assert_eq!(
            Endpoint::from_target("unix:/var/run/openvswitch/breth0.mgmt"),
            Some(Endpoint::Unix("/var/run/openvswitch/breth0.mgmt".into()))
        );
        assert_eq!(
            Endpoint::from_target("tcp:127.0.0.1:6653"),
            Some(Endpoint::Tcp("127.0.0.1:6653".into()))
        );
        assert_eq!(
            Endpoint::from_target("tcp:[fd00::1]:6653").map(|e| e.to_string()),
            Some("tcp:[fd00::1]:6653".into())
        );
        // ssl: is not ours to speak (the config refuses it); a port is required.
        assert_eq!(Endpoint::from_target("ssl:127.0.0.1:6653"), None);
        assert_eq!(Endpoint::from_target("tcp:127.0.0.1"), None);
    }

    /// A switch that answers the hello and one flow-stats request, then
    /// nothing (wedged): the echo keepalive notices and the watchers hear.
    #[tokio::test(start_paused = true)]
    async fn a_switch_that_stops_answering_echoes_loses_the_connection() {
        let (_dir, path, listener) = switch_socket();
        tokio::spawn(async move {
            let mut stream = accepted(listener).await;
            let mut buffer = vec![0u8; 4096];
            // Hello, the monitor request and the stats request may come
            // in one read or several: answer the stats request once seen.
            let mut seen = Vec::new();
            loop {
                let n = stream.read(&mut buffer).await.expect("read");
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buffer[..n]);
                if let Some(xid) = stats_request_xid(&seen) {
                    let mut reply = vec![wire::VERSION, wire::OFPT_MULTIPART_REPLY, 0, 16];
                    reply.extend_from_slice(&xid.to_be_bytes());
                    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
                    stream.write_all(&reply).await.expect("reply");
                    break;
                }
            }
            // Wedged: read and never answer, keeping the socket open.
            while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
        });
        let session = Session::new(path);
        let mut changes = session.watch();
        assert_eq!(session.flows(0, 0).await.expect("stats"), Vec::new());
        while changes.try_recv().is_ok() {}
        tokio::time::timeout(KEEPALIVE + REQUEST_DEADLINE * 2, changes.recv())
            .await
            .expect("the lost connection was never reported")
            .expect("watch channel");
    }

    /// A switch that answers a flow-stats request with REPLY_MORE parts
    /// without end: the read stops past its bound, with an error.
    #[tokio::test]
    async fn an_endless_flow_stats_reply_is_cut_off() {
        let (_dir, path, listener) = switch_socket();
        tokio::spawn(async move {
            let mut stream = accepted(listener).await;
            let mut buffer = vec![0u8; 4096];
            let mut seen = Vec::new();
            let xid = loop {
                let n = stream.read(&mut buffer).await.expect("read");
                seen.extend_from_slice(&buffer[..n]);
                if let Some(xid) = stats_request_xid(&seen) {
                    break xid;
                }
            };
            // Parts of 1,100 minimal flow entries each (56 bytes: an
            // empty match, no instructions), each saying more follows.
            let mut entry = vec![0u8; 56];
            entry[..2].copy_from_slice(&56u16.to_be_bytes());
            entry[48..52].copy_from_slice(&[0, 1, 0, 4]);
            let body: Vec<u8> = (0..1100).flat_map(|_| entry.clone()).collect();
            let length = u16::try_from(16 + body.len()).expect("fits");
            let mut part = vec![wire::VERSION, wire::OFPT_MULTIPART_REPLY];
            part.extend_from_slice(&length.to_be_bytes());
            part.extend_from_slice(&xid.to_be_bytes());
            part.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
            part.extend_from_slice(&body);
            while stream.write_all(&part).await.is_ok() {}
        });
        let session = Session::new(path);
        let error = session.flows(0, 0).await.expect_err("cut off");
        assert!(matches!(error, SessionError::TooLarge), "{error}");
    }

    /// A switch that sends echo requests without ever reading our replies
    /// loses the connection instead of making us queue replies forever.
    #[tokio::test]
    async fn an_echo_flood_that_reads_nothing_drops_the_connection() {
        let (_dir, path, listener) = switch_socket();
        tokio::spawn(async move {
            let mut stream = accepted(listener).await;
            let mut flood = Vec::new();
            for xid in 0..200_000u32 {
                flood.extend_from_slice(&wire::echo_request(xid));
            }
            let _ = stream.write_all(&flood).await;
            // Keep the socket open, reading nothing.
            std::future::pending::<()>().await;
        });
        let session = Session::new(path);
        let mut changes = session.watch();
        session.version().await.expect("connected");
        tokio::time::timeout(std::time::Duration::from_secs(20), changes.recv())
            .await
            .expect("the flood never dropped the connection")
            .expect("watch channel");
    }

    /// A request the switch refuses (and one it answers) leaves nothing
    /// in flight on the connection that lives on.
    #[tokio::test]
    async fn a_refused_request_leaves_nothing_in_flight() {
        let (_dir, path, listener) = switch_socket();
        tokio::spawn(async move {
            let mut stream = accepted(listener).await;
            let mut buffer = vec![0u8; 4096];
            let mut seen = Vec::new();
            let mut answered = 0;
            loop {
                let n = stream.read(&mut buffer).await.expect("read");
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buffer[..n]);
                if let Some(xid) = stats_request_xid(&seen) {
                    seen.clear();
                    // The first is refused (type 1, code 2), the next answered.
                    let mut reply = if answered == 0 {
                        vec![wire::VERSION, wire::OFPT_ERROR, 0, 12]
                    } else {
                        vec![wire::VERSION, wire::OFPT_MULTIPART_REPLY, 0, 16]
                    };
                    reply.extend_from_slice(&xid.to_be_bytes());
                    reply.extend_from_slice(if answered == 0 {
                        &[0, 1, 0, 2][..]
                    } else {
                        &[0, 1, 0, 0, 0, 0, 0, 0][..]
                    });
                    stream.write_all(&reply).await.expect("reply");
                    answered += 1;
                }
            }
        });
        let session = Session::new(path);
        let error = session.flows(0, 0).await.expect_err("refused");
        assert!(matches!(error, SessionError::Refused { .. }), "{error}");
        assert_eq!(session.in_flight().await, 0);
        assert_eq!(session.flows(0, 0).await.expect("answered"), Vec::new());
        assert_eq!(session.in_flight().await, 0);
    }

    /// A management socket a fake switch listens on.
    fn switch_socket() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("br.mgmt");
        let listener = UnixListener::bind(&path).expect("bind");
        (dir, path, listener)
    }

    /// The fake switch's side of a new connection, its hello sent.
    async fn accepted(listener: UnixListener) -> tokio::net::UnixStream {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(&wire::hello(0)).await.expect("hello");
        stream
    }

    fn stats_request_xid(mut bytes: &[u8]) -> Option<u32> {
        while let Some(h) = Header::parse(bytes) {
            if h.length < wire::HEADER_LEN || h.length > bytes.len() {
                return None;
            }
            if h.kind == wire::OFPT_MULTIPART_REQUEST
                && bytes.get(8..10) == Some(&wire::OFPMP_FLOW.to_be_bytes()[..])
            {
                return Some(h.xid);
            }
            bytes = &bytes[h.length..];
        }
        None
    }
}
