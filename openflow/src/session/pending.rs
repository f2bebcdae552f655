//! Requests in flight on a connection, by xid: where the reader routes
//! replies. A registration removes its entry when dropped, so a request
//! that fails, times out or is cancelled leaves nothing behind on a
//! connection that lives on.

use crate::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::{mpsc, oneshot};

/// What a request waits for: one reply, or a multipart series.
pub(super) enum Pending {
    One(oneshot::Sender<Vec<u8>>),
    Many(mpsc::UnboundedSender<Vec<u8>>),
}

/// The requests in flight on one connection.
pub(super) type InFlight = Arc<Mutex<HashMap<u32, Pending>>>;

/// One request's place in [`InFlight`], and where its replies arrive.
pub(super) struct Registration<R> {
    xid: u32,
    in_flight: InFlight,
    pub(super) replies: R,
}

impl<R> Drop for Registration<R> {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.xid);
    }
}

/// Waits for the one reply to `xid`.
pub(super) fn one(in_flight: &InFlight, xid: u32) -> Registration<oneshot::Receiver<Vec<u8>>> {
    let (tx, rx) = oneshot::channel();
    lock(in_flight).insert(xid, Pending::One(tx));
    Registration {
        xid,
        in_flight: in_flight.clone(),
        replies: rx,
    }
}

/// Receives every part of the multipart reply to `xid`.
pub(super) fn many(
    in_flight: &InFlight,
    xid: u32,
) -> Registration<mpsc::UnboundedReceiver<Vec<u8>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    lock(in_flight).insert(xid, Pending::Many(tx));
    Registration {
        xid,
        in_flight: in_flight.clone(),
        replies: rx,
    }
}
