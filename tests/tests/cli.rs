//! What an operator sees of the binaries themselves.

use noverlay_tests::{
    e2e::Binaries,
    harness::{self, Certs, DpuOptions},
};
use std::process::Command;

/// What `dpu-agent check-config` prints for a config file written from
/// `options`.
fn check_config(bins: &Binaries, certs: &Certs, options: &DpuOptions) -> anyhow::Result<String> {
    let path = certs.dir.path().join("dpu-agent.toml");
    std::fs::write(&path, harness::dpu_config_toml(options, &certs.dpu))?;
    let output = Command::new(&bins.dpu_agent)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()?;
    anyhow::ensure!(output.status.success(), "check-config: {output:?}");
    Ok(String::from_utf8(output.stdout)?)
}

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

/// `dpu-agent check-config` shows the uplink guard the config asks for, as
/// `nft list table` will show it, or that it is off.
#[test]
fn check_config_shows_the_uplink_guard() -> anyhow::Result<()> {
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    for (enabled, expected) in [
        (
            true,
            "\t\ttype filter hook egress device \"p0\" priority filter; policy accept;\n\t\tip saddr 169.254.0.0/17 counter packets 0 bytes 0 drop\n\t\tip daddr 169.254.0.0/17 counter packets 0 bytes 0 drop\n",
        ),
        (false, "uplink guard: off\n"),
    ] {
        let options = DpuOptions {
            uplink_guard: enabled,
            ..DpuOptions::default()
        };
        let text = check_config(&bins, &certs, &options)?;
        assert!(text.contains(expected), "enabled = {enabled}:\n{text}");
    }
    Ok(())
}

/// `dpu-agent check-config` says what the `[ovn]` section makes it check,
/// or that the check is off.
#[test]
fn check_config_shows_the_ovn_check() -> anyhow::Result<()> {
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let section =
        "\n[ovn]\nnb_socket = \"/var/run/ovn/ovnnb_db.sock\"\ngateway_router = \"GR_node1\"\n";
    for (ovn, expected) in [
        (
            section,
            "ovn check: gateway router \"GR_node1\", port \"rtoe-GR_node1\", in the northbound database at /var/run/ovn/ovnnb_db.sock\n  the port has the bridge's MAC and 198.18.0.10; 169.254.0.0/17 routed via 169.254.0.4 with a static MAC binding\n",
        ),
        ("", "ovn check: off (no [ovn] section)\n"),
    ] {
        let options = DpuOptions {
            ovn: ovn.into(),
            ..DpuOptions::default()
        };
        let text = check_config(&bins, &certs, &options)?;
        assert!(text.contains(expected), "{ovn:?}:\n{text}");
    }
    Ok(())
}

/// `dpu-agent check-config` next to ovnkube-node: the facts left out of
/// dpu-agent.toml come from ovnkube's file, each shown with its source; a
/// fact the two files disagree on is refused naming both values.
#[test]
fn check_config_shows_where_each_fact_comes_from() -> anyhow::Result<()> {
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let ovnkube = certs.dir.path().join("ovn_k8s.conf");
    std::fs::write(
        &ovnkube,
        "[default]\nmtu=1400\ncluster-subnets=\"198.18.128.0/17/24\"\n[gateway]\nmode=shared\n",
    )?;
    let minimal = harness::dpu_config_left_to_ovnkube(&certs.dpu, &ovnkube.display().to_string());
    let path = certs.dir.path().join("dpu-agent.toml");
    std::fs::write(&path, &minimal)?;
    let output = Command::new(&bins.dpu_agent)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()?;
    anyhow::ensure!(output.status.success(), "check-config: {output:?}");
    let text = String::from_utf8(output.stdout)?;
    let file = ovnkube.display();
    for expected in [
        format!("ipv4.cluster_cidrs = 198.18.128.0/17 (from {file})\n"),
        // ovnkube's real default, not /17.
        "ipv4.masquerade_subnet = 169.254.169.0/29 (OVN-Kubernetes' default (ovnkube sets none))\n"
            .to_string(),
        "ipv4.underlay_ip = 198.18.0.10 (from dpu-agent.toml)\n".to_string(),
        format!("mtu = 1400 (from {file})\n"),
    ] {
        assert!(text.contains(&expected), "no {expected:?} in\n{text}");
    }
    // The two files disagree: one line naming both values.
    std::fs::write(&path, minimal.replacen("[tls]", "mtu = 1500\n\n[tls]", 1))?;
    let output = Command::new(&bins.dpu_agent)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()?;
    let error = String::from_utf8(output.stderr)?;
    assert!(!output.status.success());
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("`mtu")
            && error.contains("1500 here")
            && error.contains(&format!("1400 from {file}")),
        "{error}"
    );
    Ok(())
}

/// `| head` closes a command's output early: each one-shot command ends
/// quietly (killed by SIGPIPE as a C tool is, or done), never with a panic
/// message on stderr.
#[test]
fn a_closed_output_ends_a_command_quietly() -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let config = certs.dir.path().join("dpu-agent.toml");
    std::fs::write(
        &config,
        harness::dpu_config_toml(&DpuOptions::default(), &certs.dpu),
    )?;
    let man = certs.dir.path().join("man");
    let config = config.display().to_string();
    let man = man.display().to_string();
    for (binary, args) in [
        (
            &bins.dpu_agent,
            vec!["check-config", "--config", config.as_str()],
        ),
        (&bins.dpu_agent, vec!["generate-man", "--out", man.as_str()]),
        (
            &bins.host_agent,
            vec!["generate-man", "--out", man.as_str()],
        ),
    ] {
        // The reading end is gone before the command writes a byte.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let output = Command::new(binary)
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let quiet = output.status.success() || output.status.signal() == Some(libc::SIGPIPE);
        assert!(
            quiet && stderr.is_empty(),
            "{} {args:?} with its output closed: {} {stderr}",
            binary.display(),
            output.status
        );
    }
    Ok(())
}

/// check-config prints what an operator reads: the DPU's offer and the
/// host's proposal as text, never Rust's debug form.
#[test]
fn check_config_renders_the_offer_and_the_proposal_as_text() -> anyhow::Result<()> {
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let dpu = check_config(&bins, &certs, &DpuOptions::default())?;
    let host_path = certs.dir.path().join("host-agent.toml");
    std::fs::write(
        &host_path,
        harness::host_config_toml(
            &harness::HostOptions::new("127.0.0.1:50051".parse()?),
            &certs.host,
        ),
    )?;
    let output = Command::new(&bins.host_agent)
        .args(["check-config", "--config"])
        .arg(&host_path)
        .output()?;
    anyhow::ensure!(output.status.success(), "host check-config: {output:?}");
    let host = String::from_utf8(output.stdout)?;
    for (text, expected) in [
        (
            &dpu,
            "offer: revision 1, node dpu-host, gateway shared, transport no-overlay, mtu 1400\n  ipv4: masquerade 169.254.0.0/17 (host 169.254.0.2, next hop 169.254.0.4 at 0a:58:a9:fe:00:04), underlay ",
        ),
        (
            &host,
            "valid; proposal to the DPU: node dpu-host, gateway shared, transport no-overlay, gateway interface eth0, host node1\n  ipv4: masquerade 169.254.0.0/17 (host 169.254.0.2, next hop 169.254.0.4)",
        ),
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
        assert!(!text.contains(" {\n") && !text.contains("Some("), "{text}");
    }
    Ok(())
}
