//! Any bytes from ovsdb-server: framing, replica updates and the port map
//! must never panic.
#![no_main]

use dpu_agent::ovsdb::{JsonFramer, PortNames, Replica};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = JsonFramer::default();
    let mut replica = Replica::default();
    let names = PortNames {
        bridge: "breth0".into(),
        host_representor: "pf0hpf".into(),
        patch: "patch-breth0".into(),
        uplink: "p0".into(),
    };
    // Split the input in two to exercise partial frames.
    let (first, second) = data.split_at(data.len() / 2);
    for chunk in [first, second] {
        let Ok(values) = framer.push(chunk) else {
            return;
        };
        for value in values {
            let updates = value
                .get("params")
                .and_then(|p| p.get(1))
                .cloned()
                .unwrap_or(value);
            let _ = replica.apply(&updates);
            let _ = replica.port_map(&names);
        }
    }
});
