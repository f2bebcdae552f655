//! Any contract a DPU could send, checked by the host as it is before it
//! is applied (limits, the DPU's own address, the revision, the proposal,
//! the host's addresses): every check returns, never panics, and its
//! error names something (never an empty message).
#![no_main]

use host_agent::{
    config::{HostConfig, ValidHostConfig},
    plan::{self, HostAddress},
};
use libfuzzer_sys::fuzz_target;
use noverlay_proto::{contract::Contract, pb};
use prost::Message;
use std::sync::OnceLock;

fn config() -> &'static ValidHostConfig {
    static CONFIG: OnceLock<ValidHostConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        HostConfig::parse(include_str!("../../deploy/host-agent.toml"))
            .and_then(HostConfig::validate)
            .expect("the example host config validates")
    })
}

fuzz_target!(|data: &[u8]| {
    // The contract, then (optionally) the one before it.
    let (first, second) = data.split_at(data.len() / 2);
    let decode = |bytes: &[u8]| {
        pb::Contract::decode(bytes)
            .ok()
            .and_then(|wire| Contract::try_from(&wire).ok())
    };
    let Some(contract) = decode(data).or_else(|| decode(first)) else {
        return;
    };
    let last = decode(second);
    let addresses = [
        HostAddress {
            dev: "eth0".into(),
            addr: "198.18.0.20/24".parse().expect("net"),
        },
        HostAddress {
            dev: "ovn-k8s-mp0".into(),
            addr: "198.18.130.2/24".parse().expect("net"),
        },
        HostAddress {
            dev: "eth1".into(),
            addr: "fd00:10:244::5/64".parse().expect("net"),
        },
    ];
    let dpu_ips = ["198.18.0.2".parse().expect("ip"), "fd00::2".parse().expect("ip")];
    let results = [
        plan::check_limits(&contract, config(), &dpu_ips),
        plan::check_revision(&contract, last.as_ref()),
        plan::check_matches_proposal(&contract, config()),
        plan::check_against_host(&contract, &addresses, "ovn-k8s-mp0"),
    ];
    for error in results.into_iter().filter_map(Result::err) {
        assert!(!error.to_string().trim().is_empty(), "{error:?}");
    }
});
