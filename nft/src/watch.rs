//! Hearing about nftables changes made by anyone else.

use super::{
    NftError,
    netlink::{NFT_MSG_NEWGEN, NetlinkMessages, nft_type},
    set_receive_timeout,
};
use nftnl::nftnl_sys::libc;
use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};
use std::time::Duration;

/// nfnetlink multicast group of nftables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;

/// Who hears of changes made by others.
pub trait ChangeListener: Send + 'static {
    /// Someone else committed a transaction (or events were lost).
    fn foreign_change(&self);
    /// Nobody listens any more: the watcher ends.
    fn is_closed(&self) -> bool;
    /// The watcher lost its event socket (`Some(why)`: nothing is heard
    /// until it is back) or got it back (`None`, after a
    /// [`ChangeListener::foreign_change`] for what it missed).
    fn watching(&self, _lost: Option<&str>) {}
}

/// First and longest pause before reopening a failed event socket.
const REOPEN_FIRST: Duration = Duration::from_millis(100);
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// Watches nftables for transactions by anyone else and tells `listener`
/// of each (or of lost events), on a thread of its own, until the listener
/// is closed. Our own transactions are recognised by the netlink port that
/// NEWGEN names as their origin (`own_port`) and ignored. A failed event
/// socket is reopened (100 ms, doubling to 10 s), and the listener told.
pub fn watch_foreign_changes(own_port: u32, listener: impl ChangeListener) -> Result<(), NftError> {
    let socket = EventSocket::open()?;
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || follow(socket, EventSocket::open, own_port, &listener))
        .map_err(NftError::Socket)?;
    Ok(())
}

/// Where events come from: the nftables multicast socket, or a double in
/// the tests of the restart rule.
pub trait EventSource {
    /// One datagram of netlink messages; a timeout is `WouldBlock`/`TimedOut`.
    fn recv(&mut self, buffer: &mut [u8]) -> std::io::Result<usize>;
}

struct EventSocket(Socket);

impl EventSocket {
    fn open() -> Result<Self, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        socket.bind_auto().map_err(NftError::Socket)?;
        crate::kernel_only(&mut socket).map_err(NftError::Socket)?;
        socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(NftError::Socket)?;
        socket
            .set_rx_buf_sz(4 * 1024 * 1024)
            .map_err(NftError::Socket)?;
        // Wake up now and then to notice that nobody listens any more.
        set_receive_timeout(&socket, Duration::from_secs(1)).map_err(NftError::Socket)?;
        Ok(EventSocket(socket))
    }
}

impl EventSource for EventSocket {
    fn recv(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(&mut &mut buffer[..], 0)
    }
}

/// The watcher's loop: hears `source` until the listener closes; on a
/// failure tells the listener, reopens with `reopen` (backing off), and
/// once back, reports a change (whatever happened meanwhile was missed).
pub fn follow<S: EventSource>(
    mut source: S,
    mut reopen: impl FnMut() -> Result<S, NftError>,
    own_port: u32,
    listener: &impl ChangeListener,
) {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let lost = match hear(&mut source, &mut buffer, own_port, listener) {
            None => return,
            Some(lost) => lost,
        };
        tracing::warn!(error = %lost, "nftables event socket failed; reopening it");
        listener.watching(Some(&lost));
        let mut pause = REOPEN_FIRST;
        source = loop {
            if pause_unless_closed(pause, listener) {
                return;
            }
            match reopen() {
                Ok(source) => break source,
                Err(e) => {
                    listener.watching(Some(&format!("{lost}; reopening: {e}")));
                    pause = (pause * 2).min(REOPEN_MAX);
                }
            }
        };
        tracing::info!("nftables event socket reopened");
        listener.foreign_change();
        listener.watching(None);
    }
}

/// Whether a read of events holds a commit (a new generation) that
/// another socket than ours made.
pub fn is_foreign_commit(events: &[u8], own_port: u32) -> bool {
    NetlinkMessages::new(events).any(|m| m.kind == nft_type(NFT_MSG_NEWGEN) && m.port != own_port)
}

/// Hears events until the listener closes (None) or the source fails
/// (the reason).
fn hear(
    source: &mut impl EventSource,
    buffer: &mut [u8],
    own_port: u32,
    listener: &impl ChangeListener,
) -> Option<String> {
    loop {
        if listener.is_closed() {
            return None;
        }
        match source.recv(buffer) {
            Ok(n) => {
                if is_foreign_commit(&buffer[..n], own_port) {
                    listener.foreign_change();
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // Events were lost: assume the worst.
                listener.foreign_change();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// Sleeps `pause` in short steps; true when the listener closed meanwhile.
fn pause_unless_closed(pause: Duration, listener: &impl ChangeListener) -> bool {
    let step = Duration::from_millis(50);
    let mut left = pause;
    while !left.is_zero() {
        if listener.is_closed() {
            return true;
        }
        let now = left.min(step);
        std::thread::sleep(now);
        left -= now;
    }
    listener.is_closed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        collections::VecDeque,
        io::{Error, ErrorKind},
        sync::{Arc, Mutex},
    };

    /// What the listener heard, in order.
    #[derive(Clone, Default)]
    struct Heard(Arc<Mutex<Vec<String>>>, Arc<Mutex<bool>>);

    impl ChangeListener for Heard {
        fn foreign_change(&self) {
            self.0.lock().expect("lock").push("change".into());
        }
        fn is_closed(&self) -> bool {
            *self.1.lock().expect("lock")
        }
        fn watching(&self, lost: Option<&str>) {
            let event = match lost {
                Some(why) => format!("lost: {why}"),
                None => "back".into(),
            };
            self.0.lock().expect("lock").push(event);
        }
    }

    /// Answers with the scripted results, then closes the listener.
    struct Script(VecDeque<std::io::Result<usize>>, Heard);

    impl EventSource for Script {
        fn recv(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            self.0.pop_front().unwrap_or_else(|| {
                *self.1.1.lock().expect("lock") = true;
                Err(Error::from(ErrorKind::WouldBlock))
            })
        }
    }

    #[test]
    fn a_failed_event_socket_is_reopened_and_what_it_missed_is_a_change() {
        let heard = Heard::default();
        let first = Script(
            VecDeque::from([
                Err(Error::from(ErrorKind::Interrupted)),
                Err(Error::other("boom")),
            ]),
            heard.clone(),
        );
        let mut reopens = 0;
        let again = heard.clone();
        follow(
            first,
            || {
                reopens += 1;
                if reopens == 1 {
                    Err(NftError::Socket(Error::other("no socket yet")))
                } else {
                    Ok(Script(
                        VecDeque::from([Err(Error::from_raw_os_error(libc::ENOBUFS))]),
                        again.clone(),
                    ))
                }
            },
            0,
            &heard,
        );
        assert_eq!(reopens, 2);
        assert_eq!(
            *heard.0.lock().expect("lock"),
            [
                "lost: boom",
                "lost: boom; reopening: nftables netlink socket: no socket yet",
                "change",
                "back",
                "change",
            ]
        );
    }
}
