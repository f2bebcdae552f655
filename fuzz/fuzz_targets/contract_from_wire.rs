//! Any bytes a DPU could send as a contract: decoding and validation must
//! never panic, and whatever validates must plan without panicking.
#![no_main]

use host_agent::{
    config::Mp0Routes,
    plan::{self, HostSettings},
};
use libfuzzer_sys::fuzz_target;
use noverlay_proto::{contract::Contract, pb};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = pb::Contract::decode(data) else {
        return;
    };
    if let Ok(contract) = Contract::try_from(&wire) {
        for mp0_routes in [Mp0Routes::Keep, Mp0Routes::Remove] {
            let settings = HostSettings {
                gateway_interface: contract.gateway_interface.clone(),
                mp0_interface: "ovn-k8s-mp0".into(),
                mp0_routes,
                route_protocol: 240,
                nft_table: "noverlay".into(),
            };
            let host_plan = plan::plan(&contract, &settings);
            let _ = host_plan.render();
            // Every route stays inside a cluster CIDR of the contract.
            assert!(host_plan
                .routes
                .iter()
                .all(|r| contract.cluster_cidrs().any(|c| c.contains(&r.dst))));
        }
        assert_eq!(Contract::try_from(&contract.to_pb()).as_ref(), Ok(&contract));
    }
});
