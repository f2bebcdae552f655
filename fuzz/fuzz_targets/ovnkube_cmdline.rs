//! Any bytes as an ovnkube command line (NUL-separated, as
//! /proc/<pid>/cmdline holds it): read into an invocation or refused with a
//! reason, never a panic; what it sets resolves and merges into a dpu-agent
//! config without a panic either.
#![no_main]

use dpu_agent::config::DpuConfig;
use libfuzzer_sys::fuzz_target;
use noverlay_ovnkube_facts::OvnkubeFacts;

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
    // Always ovnkube, so that the flags are what is read.
    let mut argv = vec!["/usr/bin/ovnkube".to_string()];
    argv.extend(
        data.split(|b| *b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned()),
    );
    if let Ok(Some(facts)) = OvnkubeFacts::from_command_line(&argv, 1) {
        if let Ok(config) = DpuConfig::parse(MINIMAL) {
            let _ = config.validate_with(Some(&facts));
        }
    }
});
