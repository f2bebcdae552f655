//! OpenFlow 1.4 without ovs-ofctl: our flows as structures ([`spec`]) and
//! as messages on the wire ([`wire`]), for a long-lived session on the
//! bridge's management socket.
//!
//! Status: the codec and its checks against Open vSwitch (the encoded
//! messages decoded by `ovs-ofctl ofp-print`; a bundle committed and read
//! back over a real connection in the tests). The agent still programs the
//! bridge through ovs-ofctl ([`crate::openflow`]); the session that uses
//! this codec is the next step.

pub mod decode;
pub mod spec;
pub mod wire;

use crate::flows::Flow;
use spec::{FlowSpec, SpecError};

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
