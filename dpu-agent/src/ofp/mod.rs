//! OpenFlow 1.4 without ovs-ofctl: our flows as structures ([`spec`]) and
//! as messages on the wire ([`wire`]), for a long-lived session on the
//! bridge's management socket.
//!
//! [`NativeSwitch`] is the agent's [`FlowSwitch`] on a unix management
//! socket: installs are one bundle over the open [`session`], reads are a
//! flow-stats request decoded into dump text ([`decode`]), and changes
//! come from a flow monitor on the same connection.

pub mod decode;
pub mod reply;
pub mod session;
pub mod spec;
pub mod wire;

use crate::{
    flows::Flow,
    openflow::{FlowSwitch, SwitchError},
};
use spec::{FlowSpec, SpecError};
use tokio::sync::mpsc;

/// The bundle id of our installs (one at a time per connection).
const BUNDLE: u32 = 1;

/// The switch over a native OpenFlow session.
#[derive(Clone)]
pub struct NativeSwitch {
    session: session::Session,
}

impl NativeSwitch {
    /// On the unix socket at `path` (e.g. /var/run/openvswitch/breth0.mgmt).
    pub fn new(path: std::path::PathBuf) -> Self {
        NativeSwitch {
            session: session::Session::new(path),
        }
    }

    /// The messages of a bundle in ovs-ofctl's bundle syntax (`delete
    /// cookie=C/-1` and `add <flow>` lines), each wrapped for the bundle
    /// with an xid of the session's.
    fn bundle_adds(&self, bundle: &str) -> Result<Vec<(u32, Vec<u8>)>, SwitchError> {
        let mut adds = Vec::new();
        for line in bundle.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let xid = self.session.xid();
            let inner = if let Some(cookie) = line
                .strip_prefix("delete cookie=")
                .and_then(|c| c.strip_suffix("/-1"))
            {
                let cookie = u64::from_str_radix(cookie.trim_start_matches("0x"), 16)
                    .map_err(|_| rejected(line, "not a cookie"))?;
                wire::delete_cookie(xid, cookie)
            } else if let Some(flow) = line.strip_prefix("add ") {
                wire::flow_add(xid, &parse_flow_line(flow)?)
            } else {
                return Err(rejected(line, "not an add or a cookie delete"));
            };
            adds.push((
                xid,
                wire::bundle_add(xid, BUNDLE, wire::OFPBF_ATOMIC_ORDERED, &inner),
            ));
        }
        Ok(adds)
    }
}

fn rejected(line: &str, reason: &str) -> SwitchError {
    SwitchError::Failed {
        operation: "encode bundle",
        stderr: format!("{line:?}: {reason}"),
    }
}

fn session_error(operation: &'static str, error: session::SessionError) -> SwitchError {
    SwitchError::Failed {
        operation,
        stderr: error.to_string(),
    }
}

/// `cookie=C,table=T,priority=P,<matches>,actions=<actions>` as
/// [`Flow::render`] writes it.
fn parse_flow_line(line: &str) -> Result<FlowSpec, SwitchError> {
    let (head, actions) = line
        .split_once(",actions=")
        .ok_or_else(|| rejected(line, "no actions"))?;
    let (mut cookie, mut table, mut priority) = (0u64, 0u8, 32768u16);
    let mut matches = Vec::new();
    for token in head.split(',') {
        if let Some(c) = token.strip_prefix("cookie=") {
            cookie = u64::from_str_radix(c.trim_start_matches("0x"), 16)
                .map_err(|_| rejected(line, "bad cookie"))?;
        } else if let Some(t) = token.strip_prefix("table=") {
            table = t.parse().map_err(|_| rejected(line, "bad table"))?;
        } else if let Some(p) = token.strip_prefix("priority=") {
            priority = p.parse().map_err(|_| rejected(line, "bad priority"))?;
        } else {
            matches.push(token);
        }
    }
    FlowSpec::parse(cookie, table, priority, &matches.join(","), actions)
        .map_err(|e| rejected(line, &e.to_string()))
}

impl FlowSwitch for NativeSwitch {
    async fn replace(&self, bundle: &str) -> Result<(), SwitchError> {
        let adds = self.bundle_adds(bundle)?;
        self.session
            .commit_bundle(BUNDLE, adds)
            .await
            .map_err(|e| session_error("bundle", e))
    }

    async fn dump(&self) -> Result<Vec<String>, SwitchError> {
        let flows = self
            .session
            .flows(0, 0)
            .await
            .map_err(|e| session_error("flow stats", e))?;
        Ok(flows.iter().map(decode::dump_line).collect())
    }

    fn watch(&self) -> mpsc::UnboundedReceiver<()> {
        self.session.watch()
    }
}

/// The messages of one atomic install: open a bundle, delete every flow of
/// our cookie, add `flows`, commit. `next_xid` numbers them.
pub fn install_bundle(
    flows: &[Flow],
    cookie: u64,
    bundle: u32,
    mut next_xid: impl FnMut() -> u32,
) -> Result<Vec<Vec<u8>>, SpecError> {
    use wire::*;
    let mut messages = vec![bundle_control(
        next_xid(),
        bundle,
        OFPBCT_OPEN_REQUEST,
        OFPBF_ATOMIC_ORDERED,
    )];
    let mut add = |inner: &dyn Fn(u32) -> Vec<u8>| {
        let xid = next_xid();
        messages.push(bundle_add(xid, bundle, OFPBF_ATOMIC_ORDERED, &inner(xid)));
    };
    add(&|xid| delete_cookie(xid, cookie));
    for flow in flows {
        let spec = FlowSpec::parse(
            cookie,
            flow.table,
            flow.priority,
            &flow.matches,
            &flow.actions,
        )?;
        add(&|xid| flow_add(xid, &spec));
    }
    messages.push(bundle_control(
        next_xid(),
        bundle,
        OFPBCT_COMMIT_REQUEST,
        OFPBF_ATOMIC_ORDERED,
    ));
    Ok(messages)
}
