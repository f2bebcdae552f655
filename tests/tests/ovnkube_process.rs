//! The running ovnkube-node read by the real dpu-agent binary with the
//! capabilities the shipped unit gives it, under a /proc mounted as the
//! unit's ProtectProc=invisible mounts it (and without CAP_SYS_PTRACE:
//! said, never skipped in silence). A stand-in
//! ovnkube-node (tests/src/bin/ovnkube.rs) runs as root with every
//! capability, as ovnkube-node's privileged container does, in a network
//! namespace of the test's; the agent runs there under `setpriv`.

use noverlay_tests::{
    e2e::Binaries,
    harness::{self, Certs},
    netns::{self, NetNs},
    ovnkube::OvnkubeProcess,
};
use std::{path::Path, process::Command};

/// The unit's capability bounding set, as setpriv writes it ("net_admin").
fn unit_capabilities(unit: &str) -> anyhow::Result<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .ok_or_else(|| anyhow::anyhow!("{} sets no CapabilityBoundingSet", path.display()))?;
    Ok(line
        .split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect())
}

#[test]
#[ignore = "privileged: needs root, network namespaces, unshare and setpriv; run as root with --include-ignored (CI does)"]
fn the_units_capabilities_let_dpu_agent_read_ovnkube_node() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let ns = NetNs::new("k")?;
    let ovnkube = OvnkubeProcess::start(
        &ns,
        &bins.ovnkube,
        &[
            "--init-node",
            "node1",
            "--ovnkube-node-mode=dpu",
            "--gateway-mode=shared",
            "--cluster-subnets=198.18.128.0/17/24",
            "--mtu=1300",
        ],
    )?;
    // Nothing of the cluster in the config: all of it is ovnkube's.
    let config = harness::dpu_config_left_to_ovnkube(&certs.dpu, "");
    let path = certs.dir.path().join("dpu-agent.toml");
    std::fs::write(&path, config)?;
    // check-config with these capabilities, and /proc as the unit's
    // ProtectProc=invisible mounts it (hidepid) or as it is.
    let check_config = |capabilities: &[String],
                        hidepid: bool|
     -> anyhow::Result<std::process::Output> {
        let bounding = std::iter::once("-all".to_string())
            .chain(capabilities.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mount = if hidepid {
            "mount -t proc -o hidepid=invisible proc /proc && "
        } else {
            ""
        };
        let script = format!(
            "{mount}exec setpriv --inh-caps=-all --bounding-set={bounding} -- {} check-config --config {}",
            bins.dpu_agent.display(),
            path.display()
        );
        Ok(Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(script)
            .output()?)
    };
    let pid = ovnkube.pid();
    // `ip netns exec` execs the stand-in: its pid is the child's.
    let unit = unit_capabilities("dpu-agent.service")?;
    println!("dpu-agent.service capabilities: {unit:?}");
    // The unit's capabilities, with /proc as the unit mounts it and as is.
    for hidepid in [true, false] {
        let output = check_config(&unit, hidepid)?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "check-config with the unit's capabilities (hidepid {hidepid}): {output:?}"
        );
        for expected in [
            format!(
                "ipv4.cluster_cidrs = 198.18.128.0/17 (from ovnkube's command line (pid {pid}, --cluster-subnets))"
            ),
            format!("mtu = 1300 (from ovnkube's command line (pid {pid}, --mtu))"),
            "ipv4.masquerade_subnet = 169.254.169.0/29 (OVN-Kubernetes' default (ovnkube sets none))"
                .to_string(),
        ] {
            assert!(text.contains(&expected), "no {expected:?} in\n{text}");
        }
    }
    let without: Vec<String> = unit
        .iter()
        .filter(|c| *c != "sys_ptrace")
        .cloned()
        .collect();
    // Without CAP_SYS_PTRACE under the unit's hidepid, ovnkube-node is
    // hidden: said so, never a silent fallback.
    let output = check_config(&without, true)?;
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        error.lines().count() == 1
            && error.contains("hidepid=invisible")
            && error.contains("CAP_SYS_PTRACE"),
        "{error}"
    );
    // Without hidepid the kernel refuses ovnkube's namespace: one line
    // naming the pid and the capability.
    let output = check_config(&without, false)?;
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        error.lines().count() == 1
            && error.contains(&format!("pid {pid} is ovnkube-node"))
            && error.contains("CAP_SYS_PTRACE"),
        "{error}"
    );
    Ok(())
}
