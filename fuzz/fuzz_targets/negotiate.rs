//! Any proposal a host could send: negotiation must answer, never panic, and
//! an accepted proposal must produce a contract that round-trips.
#![no_main]

use noverlay_proto::negotiation::negotiate;
use libfuzzer_sys::fuzz_target;
use noverlay_proto::{
    contract::{Contract, FamilyContract, Masquerade, Mode, Offer},
    pb,
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(proposal) = pb::NegotiateRequest::decode(data) else {
        return;
    };
    let (Ok(subnet), Ok(cidr), Ok(underlay)) = (
        "169.254.0.0/17".parse(),
        "198.18.128.0/17".parse(),
        "198.18.0.10".parse(),
    ) else {
        return;
    };
    let Ok(masquerade) = Masquerade::from_subnet(subnet) else {
        return;
    };
    let family = FamilyContract {
        masquerade,
        cluster_cidrs: vec![cidr],
        underlay_ip: underlay,
    };
    let Ok(offer) = Offer::new(1, Mode::IN_SCOPE, vec![family], 1400) else {
        return;
    };
    if let Ok(contract) = negotiate(&proposal, &offer) {
        assert_eq!(Contract::try_from(&contract.to_pb()).as_ref(), Ok(&contract));
    }
});
