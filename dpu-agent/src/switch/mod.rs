//! The switch edge: install a cookie-scoped flow set atomically, read the
//! bridge's flows back, and hear about flow changes. One trait,
//! [`FlowSwitch`], implemented over an OpenFlow session by
//! [`native::NativeSwitch`], so that the programmer loop can also be tested
//! with a double. (The OpenFlow codec and session themselves are the
//! `noverlay-openflow` crate.)
//!
//! Reads come back as [`ReadFlow`]s: flow-stats entries kept binary and
//! compared as bytes, so the agent's hot path (find a wipe, read back a
//! restore) never turns a flow into text; text is made only when someone
//! looks (status, metrics, another controller's flows for
//! [`crate::coexist`]).

pub mod native;

pub use native::NativeSwitch;

use crate::coexist::ForeignFlow;
use crate::flows::{Flow, MatchKey};
use crate::twins::{self, TwinChecks};
use noverlay_openflow::{decode, reply::FlowStats};
use std::future::Future;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// `operation` names the OpenFlow exchange ("OpenFlow bundle").
    #[error("{operation} failed: {reason}")]
    Failed {
        operation: &'static str,
        reason: String,
    },
    /// A probe of the install was refused: another controller wrote a flow
    /// overlapping ours (its twin, usually) after the bridge was read.
    /// Nothing was installed.
    #[error(
        "another controller wrote a flow overlapping ours at their table and priority after we read the bridge; nothing installed, the bridge is read again ({})",
        found.describe(*cookie)
    )]
    Contested {
        found: twins::Contested,
        cookie: u64,
    },
}

/// One flow of the bridge as the switch encoded it in a flow-stats reply,
/// counters included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFlow(pub FlowStats);

/// What a read flow is, without its counters: equal for the same flow read
/// twice, ordered so that flow sets can be compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowIdentity<'a> {
    cookie: u64,
    table: u8,
    priority: u16,
    match_fields: &'a [u8],
    instructions: &'a [u8],
}

impl ReadFlow {
    pub fn cookie(&self) -> u64 {
        self.0.cookie
    }

    pub fn table_and_priority(&self) -> (u8, u16) {
        (self.0.table, self.0.priority)
    }

    pub fn identity(&self) -> FlowIdentity<'_> {
        FlowIdentity {
            cookie: self.0.cookie,
            table: self.0.table,
            priority: self.0.priority,
            match_fields: &self.0.match_fields,
            instructions: &self.0.instructions,
        }
    }

    /// The flow as `ovs-ofctl dump-flows` prints it (ours exactly; other
    /// controllers' fields and actions generically where we do not use them).
    pub fn text(&self) -> String {
        decode::dump_line(&self.0)
    }

    /// The flow as another controller's, for the coexistence rules; None
    /// where its text does not parse.
    pub fn as_foreign(&self) -> Option<ForeignFlow> {
        ForeignFlow::parse(&self.text())
    }

    /// Its match key and packet counter (for per-flow metrics).
    pub fn match_and_packets(&self) -> (MatchKey, u64) {
        (
            MatchKey::new(
                self.0.table,
                self.0.priority,
                &decode::match_text(&self.0.match_fields),
            ),
            self.0.packets,
        )
    }
}

/// What the programmer needs from the switch.
pub trait FlowSwitch: Send + Sync + 'static {
    /// Replaces every flow of `cookie` with `flows` in one OpenFlow bundle
    /// (a cookie-scoped delete, then the adds): all of it or none of it.
    /// The flows `checks` probes are never added over a twin written since
    /// the bridge was read ([`SwitchError::Contested`], see [`crate::twins`]).
    fn replace(
        &self,
        flows: &[Flow],
        cookie: u64,
        checks: &TwinChecks,
    ) -> impl Future<Output = Result<(), SwitchError>> + Send;

    /// Every flow of the bridge, whatever its cookie, counters included.
    fn dump(&self) -> impl Future<Output = Result<Vec<ReadFlow>, SwitchError>> + Send;

    /// A channel that receives `()` whenever the bridge's flows may have
    /// changed (or the switch connection was lost).
    fn watch(&self) -> mpsc::UnboundedReceiver<()>;
}
