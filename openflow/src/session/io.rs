//! The session's background tasks: the reader that routes what the switch
//! sends, and the echo keepalive.

use super::{
    Connection, KEEPALIVE, MAX_MESSAGE, REQUEST_DEADLINE, notify,
    pending::{self, InFlight, Pending},
};
use crate::lock;
use crate::wire::{self, Header};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

/// Echo requests while the connection lives; a switch that stops answering
/// (wedged, or gone without closing) loses the connection, and the
/// watchers hear of it.
pub(super) async fn keepalive(
    connection: std::sync::Weak<Connection>,
    next_xid: Arc<AtomicU32>,
    watchers: Arc<Mutex<Vec<mpsc::UnboundedSender<()>>>>,
) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(live) = connection.upgrade() else {
            return;
        };
        if !live.alive.load(Ordering::Acquire) {
            return;
        }
        let xid = next_xid.fetch_add(1, Ordering::Relaxed);
        let mut reply = pending::one(&live.pending, xid);
        let sent = live
            .writer
            .lock()
            .await
            .write_all(&wire::with_version(wire::echo_request(xid), live.version))
            .await
            .is_ok();
        drop(live);
        let answered = sent
            && tokio::time::timeout(REQUEST_DEADLINE, &mut reply.replies)
                .await
                .is_ok_and(|r| r.is_ok());
        if !answered {
            if let Some(live) = connection.upgrade() {
                live.alive.store(false, Ordering::Release);
                lock(&live.pending).clear();
            }
            tracing::warn!("the switch stopped answering echo requests; reconnecting");
            notify(&watchers);
            return;
        }
    }
}

/// Reads messages until the connection ends: replies to their requests,
/// echo requests answered, monitor updates to the watchers. A switch that
/// floods echo requests faster than it reads the replies ends it too.
pub(super) async fn read_loop(
    reader: super::Reader,
    pending: InFlight,
    alive: Arc<std::sync::atomic::AtomicBool>,
    watchers: Arc<Mutex<Vec<mpsc::UnboundedSender<()>>>>,
    echo: mpsc::Sender<Vec<u8>>,
) {
    // Buffered: a header and a body are two reads, not two system calls.
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let mut header = [0u8; wire::HEADER_LEN];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break;
        }
        let Some(h) = Header::parse(&header)
            .filter(|h| h.length >= wire::HEADER_LEN && h.length <= MAX_MESSAGE)
        else {
            tracing::warn!("malformed OpenFlow header from the switch; reconnecting");
            break;
        };
        let mut message = header.to_vec();
        message.resize(h.length, 0);
        if reader
            .read_exact(&mut message[wire::HEADER_LEN..])
            .await
            .is_err()
        {
            break;
        }
        if !route(&message, h, &pending, &watchers, &echo) {
            break;
        }
    }
    alive.store(false, Ordering::Release);
    // Requests in flight fail at once (their senders are dropped).
    lock(&pending).clear();
    notify(&watchers);
}

fn route(
    message: &[u8],
    header: Header,
    pending: &Mutex<HashMap<u32, Pending>>,
    watchers: &Mutex<Vec<mpsc::UnboundedSender<()>>>,
    echo: &mpsc::Sender<Vec<u8>>,
) -> bool {
    match header.kind {
        wire::OFPT_HELLO => {}
        wire::OFPT_ECHO_REQUEST => {
            let reply = wire::echo_reply(header.xid, &message[wire::HEADER_LEN..]);
            if echo
                .try_send(wire::with_version(reply, header.version))
                .is_err()
            {
                // It asks faster than it reads our replies: no queue grows.
                tracing::warn!(
                    "the switch floods echo requests without reading the replies; reconnecting"
                );
                return false;
            }
        }
        _ if wire::is_flow_monitor_event(message) => notify(watchers),
        _ => {
            let mut pending = lock(pending);
            match pending.get(&header.xid) {
                Some(Pending::Many(tx)) => {
                    let _ = tx.send(message.to_vec());
                }
                Some(Pending::One(_)) => {
                    if let Some(Pending::One(tx)) = pending.remove(&header.xid) {
                        let _ = tx.send(message.to_vec());
                    }
                }
                None => {
                    if header.kind == wire::OFPT_ERROR {
                        tracing::warn!(
                            xid = header.xid,
                            error = ?wire::error_type_code(message),
                            "OpenFlow error for no request in flight"
                        );
                    }
                }
            }
        }
    }
    true
}
