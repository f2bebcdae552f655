//! A small OVSDB client (RFC 7047: JSON-RPC over a unix socket) for what an
//! agent beside Open vSwitch or OVN needs: one `monitor` of chosen columns,
//! kept as a local [`Replica`] that follows the server's updates.
//!
//! The protocol is sans-IO: [`framer`] cuts bytes into JSON messages,
//! [`replica`] applies table updates, [`session`] is the monitor's state
//! (request out, initial reply and updates in, echoes answered, our own echo
//! probe) with bytes in and bytes out. [`Monitor`] is the thin tokio session
//! on a unix socket that drives it, with deadlines.
//!
//! [`unixctl`] makes one call to a daemon's control socket (what ovs-appctl
//! does), in the same framing.
//!
//! Why our own: the Rust OVSDB crates are thin or unmaintained, and all we
//! need is a monitor of a few columns.

pub mod framer;
mod monitor;
pub mod replica;
pub mod session;
pub mod unixctl;

pub use framer::JsonFramer;
pub use monitor::Monitor;
pub use replica::{Replica, Row};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The socket cannot be opened (the caller knows which setting names it).
    #[error("OVSDB: connect: {0}")]
    Connect(String),
    #[error("OVSDB: {0}")]
    Protocol(String),
    /// A daemon's control socket (unixctl) answered wrongly or not at all.
    #[error("control socket: {0}")]
    Control(String),
    /// The daemon answered the command with an error of its own (one it
    /// does not have, say).
    #[error("control socket: {0}")]
    Refused(String),
}

/// ovsdb-server answers a monitor request in milliseconds; one silent for
/// this long is broken.
pub const START_DEADLINE: Duration = Duration::from_secs(5);

/// How long a client waits before connecting again to a lost server.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(500);
