//! The example configs in deploy/ are what operators copy: they must load.

use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn example_dpu_config_is_valid() {
    let config = dpu_agent::config::DpuConfig::load(&deploy("dpu-agent.toml"));
    assert!(config.is_ok(), "{:?}", config.err().map(|e| e.to_string()));
}

#[test]
fn example_host_config_is_valid() {
    let config = host_agent::config::HostConfig::load(&deploy("host-agent.toml"));
    assert!(config.is_ok(), "{:?}", config.err().map(|e| e.to_string()));
}
