//! What an operator sees of the binaries themselves.

use noverlay_tests::e2e::Binaries;
use std::process::Command;

/// `--version` names the version, the git commit and the protocol version
/// (what two agents must share to talk).
#[test]
fn version_names_the_commit_and_the_protocol() -> anyhow::Result<()> {
    let bins = Binaries::built()?;
    for (name, binary) in [
        ("dpu-agent", &bins.dpu_agent),
        ("host-agent", &bins.host_agent),
    ] {
        let output = Command::new(binary).arg("--version").output()?;
        anyhow::ensure!(output.status.success(), "{name} --version: {output:?}");
        let text = String::from_utf8(output.stdout)?;
        let expected_start = format!("{name} {} (commit ", env!("CARGO_PKG_VERSION"));
        let expected_end = format!(", protocol {})", noverlay_proto::PROTOCOL_VERSION);
        let text = text.trim();
        assert!(
            text.starts_with(&expected_start) && text.ends_with(&expected_end),
            "{name}: {text:?}"
        );
        let commit = &text[expected_start.len()..text.len() - expected_end.len()];
        assert!(!commit.is_empty(), "{name}: no commit in {text:?}");
    }
    Ok(())
}
