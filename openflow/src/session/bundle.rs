//! Bundles on the session: an install is all of it or none of it, and a
//! refusal names the message the switch refused.

use super::{Session, SessionError, pending};
use crate::wire;
use tokio::sync::oneshot;

impl Session {
    /// Sends a bundle (open, the `inner` messages, each with its xid, in
    /// the connection's version, commit) and waits for its commit: all of
    /// it or none of it. The adds are checked before the commit (a barrier
    /// after them): a refused add discards the whole bundle.
    pub async fn commit_bundle(
        &self,
        bundle: u32,
        inner: Vec<(u32, Vec<u8>)>,
    ) -> Result<(), SessionError> {
        self.deadline(async {
            let connection = self.connection().await?;
            let version = connection.version;
            let control = |xid, kind| {
                wire::bundle_control(version, xid, bundle, kind, wire::OFPBF_ATOMIC_ORDERED)
            };
            let open_xid = self.xid();
            let barrier_xid = self.xid();
            let mut replies = Vec::with_capacity(inner.len() + 1);
            let mut messages = vec![control(open_xid, wire::OFPBCT_OPEN_REQUEST)];
            replies.push((open_xid, pending::one(&connection.pending, open_xid)));
            for (xid, message) in inner {
                replies.push((xid, pending::one(&connection.pending, xid)));
                messages.push(wire::bundle_add(
                    version,
                    xid,
                    bundle,
                    wire::OFPBF_ATOMIC_ORDERED,
                    &message,
                ));
            }
            let barrier = pending::one(&connection.pending, barrier_xid);
            messages.push(wire::with_version(
                wire::barrier_request(barrier_xid),
                version,
            ));
            self.send(&connection, &messages).await?;
            let mut barrier = barrier;
            (&mut barrier.replies)
                .await
                .map_err(|_| SessionError::Broken(self.name()))?;
            // Replies (and errors) come in order: all are in by the barrier's.
            let refused = first_refusal(&mut replies, open_xid);
            if let Some(error) = refused {
                let discard = control(self.xid(), wire::OFPBCT_DISCARD_REQUEST);
                self.send(&connection, &[discard]).await?;
                return Err(error);
            }
            let commit_xid = self.xid();
            let mut committed = pending::one(&connection.pending, commit_xid);
            self.send(
                &connection,
                &[control(commit_xid, wire::OFPBCT_COMMIT_REQUEST)],
            )
            .await?;
            let reply = (&mut committed.replies)
                .await
                .map_err(|_| SessionError::Broken(self.name()))?;
            if reply.get(1) == Some(&wire::OFPT_ERROR) {
                // OVS checks some adds (an overlap) only at the commit; the
                // message that failed is named in an error before it.
                if let Some(error) = first_refusal(&mut replies, open_xid) {
                    return Err(error);
                }
                let (kind, code) = wire::error_type_code(&reply).unwrap_or_default();
                return Err(SessionError::Refused {
                    what: "bundle commit".into(),
                    message: None,
                    kind,
                    code,
                });
            }
            Ok(())
        })
        .await
    }
}

/// The first error among a bundle's replies received so far, naming the
/// refused message (its xid) unless it was the bundle open.
fn first_refusal(
    replies: &mut [(u32, pending::Registration<oneshot::Receiver<Vec<u8>>>)],
    open_xid: u32,
) -> Option<SessionError> {
    replies.iter_mut().find_map(|(xid, reply)| {
        let message = reply.replies.try_recv().ok()?;
        (message.get(1) == Some(&wire::OFPT_ERROR)).then(|| {
            let (kind, code) = wire::error_type_code(&message).unwrap_or_default();
            let opened = *xid == open_xid;
            SessionError::Refused {
                what: if opened {
                    "bundle open".into()
                } else {
                    format!("bundle message {xid}")
                },
                message: (!opened).then_some(*xid),
                kind,
                code,
            }
        })
    })
}
