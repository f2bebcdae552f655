//! The example configs in deploy/ are what operators copy: with the
//! certificates in place (here generated, at the paths the examples name),
//! they must load, TLS checks included.

use noverlay_proto::tls::TlsFiles;
use noverlay_tests::harness::Certs;
use std::path::{Path, PathBuf};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// The example with /etc/noverlay/<agent>.{crt,key} and ca.crt pointing at
/// `tls`, written to `dir`.
fn installed(file: &str, agent: &str, tls: &TlsFiles, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(deploy(file))?
        .replace(
            &format!("/etc/noverlay/{agent}.crt"),
            &tls.cert.display().to_string(),
        )
        .replace(
            &format!("/etc/noverlay/{agent}.key"),
            &tls.key.display().to_string(),
        )
        .replace("/etc/noverlay/ca.crt", &tls.ca.display().to_string());
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[test]
fn example_dpu_config_is_valid() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let path = installed("dpu-agent.toml", "dpu-agent", &certs.dpu, certs.dir.path())?;
    dpu_agent::config::DpuConfig::load(&path, &dpu_agent::ovn::Northbound)?;
    Ok(())
}

#[test]
fn example_host_config_is_valid() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let path = installed(
        "host-agent.toml",
        "host-agent",
        &certs.host,
        certs.dir.path(),
    )?;
    host_agent::config::HostConfig::load(&path)?;
    Ok(())
}
