//! [`NativeSwitch`]: the agent's [`FlowSwitch`] over an OpenFlow session
//! (the `noverlay-openflow` crate) on the bridge's unix management socket
//! or a TCP listener. Installs are one bundle over the open session, with
//! the probes that keep another controller's twin from being replaced
//! ([`crate::twins`]); reads are a flow-stats request whose entries stay
//! binary (compared as bytes; decoded into dump text only for people);
//! changes come from a flow monitor on the same connection.

use super::{FlowSwitch, ReadFlow, SwitchError};
use crate::{flows::Flow, twins::TwinChecks};
use noverlay_openflow::{
    session,
    spec::{self, FlowSpec, SpecError},
    wire,
};
use noverlay_runtime::lock;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The bundle id of our installs (one at a time per connection).
const BUNDLE: u32 = 1;

/// The switch over a native OpenFlow session.
#[derive(Clone)]
pub struct NativeSwitch {
    session: session::Session,
    /// The bridge's name, for errors an operator fixes on the bridge.
    bridge: String,
    /// The flow set last encoded. A restore sends the same flows again, and
    /// parsing 3,000 flows' text costs more than sending them.
    encoded: Arc<Mutex<Option<Encoded>>>,
}

struct Encoded {
    flows: Vec<Flow>,
    cookie: u64,
    specs: Arc<Vec<FlowSpec>>,
}

impl NativeSwitch {
    /// On `endpoint` (a unix socket or a TCP listener of ovs-vswitchd) of
    /// the bridge named `bridge`.
    pub fn on(endpoint: session::Endpoint, bridge: &str) -> Self {
        NativeSwitch {
            session: session::Session::on(endpoint),
            bridge: bridge.to_string(),
            encoded: Arc::default(),
        }
    }

    /// The OpenFlow version of the session, connecting if needed.
    pub async fn version(&self) -> Result<u8, SwitchError> {
        self.session
            .version()
            .await
            .map_err(|e| self.session_error("connect", e))
    }

    /// A session error as the agent reports it; a bridge that allows none
    /// of our versions is named with the fix.
    fn session_error(&self, operation: &'static str, error: session::SessionError) -> SwitchError {
        let reason = match &error {
            session::SessionError::NoCommonVersion { offered, .. } => format!(
                "bridge {bridge} allows {allowed} only (its `protocols` column); dpu-agent speaks {ours}: run `ovs-vsctl set bridge {bridge} protocols={allowed},{ours}` (or clear the column for Open vSwitch's defaults)",
                bridge = self.bridge,
                allowed = session::names(offered),
                ours = session::names(&wire::VERSIONS),
            ),
            session::SessionError::Connect { .. } => format!(
                "{error} (config [bridge] openflow: ovs-vswitchd makes {bridge}.mgmt in its run directory, e.g. unix:/var/run/openvswitch/{bridge}.mgmt)",
                bridge = self.bridge,
            ),
            _ => error.to_string(),
        };
        SwitchError::Failed { operation, reason }
    }

    /// `flows` as flow specs, from the last encoding when it is the same set.
    fn specs(&self, flows: &[Flow], cookie: u64) -> Result<Arc<Vec<FlowSpec>>, SwitchError> {
        let mut encoded = lock(&self.encoded);
        if let Some(last) = encoded
            .as_ref()
            .filter(|e| e.cookie == cookie && e.flows == flows)
        {
            return Ok(last.specs.clone());
        }
        let specs = Arc::new(flow_specs(flows, cookie).map_err(|e| SwitchError::Failed {
            operation: "encode bundle",
            reason: e.to_string(),
        })?);
        *encoded = Some(Encoded {
            flows: flows.to_vec(),
            cookie,
            specs: specs.clone(),
        });
        Ok(specs)
    }
}

/// Our flows as specs, each named in the error if it does not parse.
fn flow_specs(flows: &[Flow], cookie: u64) -> Result<Vec<FlowSpec>, SpecError> {
    flows
        .iter()
        .map(|flow| {
            FlowSpec::parse(
                cookie,
                flow.table,
                flow.priority,
                &flow.matches,
                &flow.actions,
            )
        })
        .collect()
}

impl FlowSwitch for NativeSwitch {
    async fn replace(
        &self,
        flows: &[Flow],
        cookie: u64,
        checks: &TwinChecks,
    ) -> Result<(), SwitchError> {
        let specs = self.specs(flows, cookie)?;
        let install = install_messages(&specs, flows, cookie, checks, || self.session.xid());
        self.session
            .commit_bundle(BUNDLE, install.messages)
            .await
            .map_err(|e| match e {
                session::SessionError::Refused {
                    message: Some(xid),
                    kind: wire::OFPET_FLOW_MOD_FAILED,
                    code: wire::OFPFMFC_OVERLAP,
                    ..
                } => match install
                    .probes
                    .iter()
                    .find(|(probe, _)| *probe == xid)
                    .and_then(|(_, probe)| crate::twins::Contested::of(*probe, flows))
                {
                    Some(found) => SwitchError::Contested { found, cookie },
                    None => self.session_error("OpenFlow bundle", e),
                },
                e => self.session_error("OpenFlow bundle", e),
            })
    }

    async fn dump(&self) -> Result<Vec<ReadFlow>, SwitchError> {
        let flows = self
            .session
            .flows(0, 0)
            .await
            .map_err(|e| self.session_error("OpenFlow flow stats", e))?;
        Ok(flows.into_iter().map(ReadFlow).collect())
    }

    fn watch(&self) -> mpsc::UnboundedReceiver<()> {
        self.session.watch()
    }
}

/// The flow mods of one install, each with its xid, and the xid of each
/// probe with what it guards.
struct InstallMessages {
    messages: Vec<(u32, Vec<u8>)>,
    probes: Vec<(u32, crate::twins::Probe)>,
}

/// Delete every flow of our cookie, add the probes `checks` plans against
/// a twin written since the bridge was read (see [`crate::twins`]), add
/// `specs` (the encoded `flows`), delete the probes.
fn install_messages(
    specs: &[FlowSpec],
    flows: &[Flow],
    cookie: u64,
    checks: &TwinChecks,
    mut next_xid: impl FnMut() -> u32,
) -> InstallMessages {
    use crate::twins::{self, Probe};
    let planned = checks.plan(flows);
    let mut messages = Vec::with_capacity(specs.len() + planned.len() + 2);
    let mut probes = Vec::with_capacity(planned.len());
    let xid = next_xid();
    messages.push((xid, wire::delete_cookie(xid, cookie)));
    for (index, probe) in planned.into_iter().enumerate() {
        let metadata = spec::Field::Metadata {
            value: twins::probe_metadata(index),
            mask: u64::MAX,
        };
        let mut spec = match probe {
            Probe::Place { table, priority } => FlowSpec {
                cookie,
                table,
                priority,
                fields: Vec::new(),
                instructions: Vec::new(),
            },
            Probe::Flow(i) => match specs.get(i) {
                Some(spec) => spec.clone(),
                None => continue,
            },
        };
        spec.cookie = twins::probe_cookie(cookie);
        spec.instructions.clear();
        spec.fields.push(metadata);
        let xid = next_xid();
        messages.push((xid, wire::flow_add(xid, &spec, wire::OFPFF_CHECK_OVERLAP)));
        probes.push((xid, probe));
    }
    for spec in specs {
        let xid = next_xid();
        messages.push((xid, wire::flow_add(xid, spec, 0)));
    }
    if !probes.is_empty() {
        let tag = spec::Field::Metadata {
            value: twins::PROBE_TAG,
            mask: twins::PROBE_MASK,
        };
        let xid = next_xid();
        messages.push((
            xid,
            wire::delete_matching(xid, twins::probe_cookie(cookie), &[tag]),
        ));
    }
    InstallMessages { messages, probes }
}

/// The messages of one atomic install as the agent sends them (on a
/// bridge read as holding no other flows): open a bundle, [`install_messages`] in it, commit.
/// `next_xid` numbers them.
pub fn install_bundle(
    flows: &[Flow],
    cookie: u64,
    bundle: u32,
    mut next_xid: impl FnMut() -> u32,
) -> Result<Vec<Vec<u8>>, SpecError> {
    use wire::*;
    let specs = flow_specs(flows, cookie)?;
    let control = |xid, kind| bundle_control(VERSION, xid, bundle, kind, OFPBF_ATOMIC_ORDERED);
    let mut messages = vec![control(next_xid(), OFPBCT_OPEN_REQUEST)];
    let install = install_messages(&specs, flows, cookie, &TwinChecks::default(), &mut next_xid);
    for (xid, inner) in install.messages {
        messages.push(bundle_add(
            VERSION,
            xid,
            bundle,
            OFPBF_ATOMIC_ORDERED,
            &inner,
        ));
    }
    messages.push(control(next_xid(), OFPBCT_COMMIT_REQUEST));
    Ok(messages)
}
