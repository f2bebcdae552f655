//! Any bytes as an rtnetlink event (links, addresses, neighbours, routes):
//! the host agent's filter of what matters to it, and the route, address,
//! link and neighbour decoders it calls, must never panic.
#![no_main]

use host_agent::{config::Mp0Routes, dataplane::kernel::events::Interest};
use libfuzzer_sys::fuzz_target;
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
        return;
    };
    let NetlinkPayload::InnerMessage(inner) = message.payload else {
        return;
    };
    for mp0_routes in [Mp0Routes::Keep, Mp0Routes::Remove] {
        let interest = Interest {
            own_ports: vec![4242, 4243],
            gateway_name: "pf0vf0".into(),
            gateway_index: Some(7),
            mp0_name: "ovn-k8s-mp0".into(),
            mp0_index: Some(8),
            mp0_routes,
            route_protocol: 240,
            prefixes: vec!["198.18.128.0/17".parse().expect("net")],
            route_dsts: vec![
                "198.18.128.0/18".parse().expect("net"),
                "198.18.192.0/18".parse().expect("net"),
            ],
            neighbours: vec![([169, 254, 0, 4].into(), [2, 0, 0, 0, 0, 4])],
            addresses: vec!["169.254.0.2/17".parse().expect("net")],
        };
        let _ = interest.matters(&inner);
    }
});
