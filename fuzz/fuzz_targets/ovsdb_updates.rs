//! Any bytes from ovsdb-server: framing, the monitor session (replies,
//! updates, echoes), replica updates, the port map (named and derived) and
//! the check of OVN's gateway router (the northbound database) must never
//! panic.
#![no_main]

use dpu_agent::{
    ovn::{self, Expected, ExpectedFamily, OvnConfig},
    ports::{PortNames, SwitchDb},
};
use noverlay_ovsdb::{JsonFramer, Replica, session::MonitorSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = JsonFramer::default();
    let Ok(mut session) = MonitorSession::new(&ovn::monitor_request()) else {
        return;
    };
    let mut replica = Replica::default();
    let names = PortNames {
        bridge: "breth0".into(),
        host_representor: Some("pf0hpf".into()),
        patch: Some("patch-breth0".into()),
        uplink: Some("p0".into()),
    };
    // Nothing named: every port is derived from the replica.
    let derived = PortNames {
        bridge: "breth0".into(),
        host_representor: None,
        patch: None,
        uplink: None,
    };
    let ovn_config = OvnConfig {
        nb_socket: "/var/run/ovn/ovnnb_db.sock".into(),
        gateway_router: "GR_node1".into(),
        external_port: None,
    };
    let expected = Expected {
        bridge_mac: Some([2, 0, 0xc6, 0x12, 0, 0x0a]),
        families: vec![ExpectedFamily {
            underlay_ip: [198, 18, 0, 10].into(),
            masquerade_subnet: "169.254.0.0/17".parse().expect("valid"),
            dummy_next_hop: [169, 254, 0, 4].into(),
        }],
        mtu: 1400,
        // Both families: the route count walks hostile prefixes of either.
        cluster_cidrs: vec![
            "198.18.128.0/17".parse().expect("valid"),
            "fd00:10:244::/48".parse().expect("valid"),
        ],
    };
    // Split the input in two to exercise partial frames.
    let (first, second) = data.split_at(data.len() / 2);
    for chunk in [first, second] {
        if session.receive(chunk).is_ok() {
            let _ = SwitchDb(&session.replica).port_map(&derived);
            let _ = ovn::check(&session.replica, &ovn_config, &expected);
        }
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
            let _ = SwitchDb(&replica).port_map(&names);
            let _ = SwitchDb(&replica).port_map(&derived);
            let _ = ovn::check(&replica, &ovn_config, &expected);
        }
    }
});
