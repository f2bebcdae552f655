//! Any text as ovnkube's INI file: reading it returns facts or an error
//! naming a line, never a panic; whatever it gives merges into a dpu-agent
//! config (agreeing, filling in or refused) without a panic either.
#![no_main]

use dpu_agent::config::DpuConfig;
use noverlay_ovnkube_facts::{FileNamedBy, FileRef, OvnkubeFacts};
use libfuzzer_sys::fuzz_target;

const MINIMAL: &str = r#"
listen = "127.0.0.1:50051"
authorised_host = "host-agent.node1"
[tls]
cert = "/c"
key = "/k"
ca = "/a"
[ipv4]
underlay_ip = "198.18.0.10"
[ipv6]
underlay_ip = "2001:db8::10"
[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "patch"
uplink = "p0"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = FileRef {
        path: "ovn_k8s.conf".into(),
        named_by: FileNamedBy::AgentConfig,
    };
    if let Ok(facts) = OvnkubeFacts::from_file(file, text)
        && let Ok(config) = DpuConfig::parse(MINIMAL)
    {
        let _ = config.validate_with(Some(&facts));
    }
});
