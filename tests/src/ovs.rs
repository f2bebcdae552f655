//! A private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath)
//! started inside a network namespace for one test, and stopped on Drop.

use crate::netns::NetNs;
use std::{path::PathBuf, process::Command};
use tempfile::TempDir;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Why Open vSwitch cannot be started here, if it cannot.
fn missing() -> Option<String> {
    let tool = ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_err());
    match tool {
        Some(tool) => Some(format!(
            "`{tool}` is not installed (.ci/run installs openvswitch-switch)"
        )),
        None => (!std::path::Path::new(SCHEMA).exists()).then(|| format!("{SCHEMA} is missing")),
    }
}

/// For the OVS tests (ignored by default): an error naming what is missing.
pub fn require() -> anyhow::Result<()> {
    match missing() {
        None => Ok(()),
        Some(why) => anyhow::bail!("this test needs Open vSwitch: {why}"),
    }
}

/// For the bench and the demo: false (after printing why) when OVS cannot
/// be started here.
pub fn available_or_skip(what: &str) -> bool {
    match missing() {
        None => true,
        Some(why) => {
            println!("SKIPPED {what}: {why}");
            false
        }
    }
}

/// The packet counter of a flow as `ovs-ofctl dump-flows` prints it.
pub fn n_packets(dump_line: &str) -> Option<u64> {
    dump_line
        .split(", ")
        .find_map(|p| p.strip_prefix("n_packets="))
        .and_then(|n| n.parse().ok())
}

pub struct Ovs {
    pub dir: TempDir,
    netns: String,
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd inside `ns`.
    pub fn start(ns: &NetNs) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ovs").tempdir_in("/tmp")?;
        let ovs = Ovs {
            dir,
            netns: ns.name.clone(),
        };
        let d = ovs.path();
        crate::netns::run(&["ovsdb-tool", "create", &format!("{d}/conf.db"), SCHEMA])?;
        ovs.in_ns(&[
            "ovsdb-server",
            &format!("{d}/conf.db"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb.pid"),
            &format!("--unixctl={d}/ovsdb.ctl"),
            &format!("--log-file={d}/ovsdb.log"),
            "--detach",
        ])?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.start_vswitchd()?;
        Ok(ovs)
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn db_socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    /// The OpenFlow target of a bridge of this instance.
    pub fn openflow(&self, bridge: &str) -> String {
        format!("unix:{}/{bridge}.mgmt", self.path())
    }

    pub fn start_vswitchd(&self) -> anyhow::Result<()> {
        let d = self.path();
        self.in_ns(&[
            "env",
            &format!("OVS_RUNDIR={d}"),
            "ovs-vswitchd",
            &format!("unix:{d}/db.sock"),
            // Open vSwitch's own names: the pidfile, and the control
            // socket ovs-vswitchd.<pid>.ctl next to it (the agent finds it
            // from the OVSDB socket's directory, as on a node).
            &format!("--pidfile={d}/ovs-vswitchd.pid"),
            &format!("--log-file={d}/vswitchd.log"),
            "--detach",
        ])?;
        Ok(())
    }

    /// kill -9 of ovs-vswitchd: flows are lost, the database stays.
    pub fn kill_vswitchd(&self) -> anyhow::Result<()> {
        kill_daemon(&self.dir.path().join("ovs-vswitchd.pid"))
    }

    /// The DPU's shared gateway bridge as the tests build it: `breth0`
    /// (userspace datapath, MAC 02:00:c6:12:00:0a) with the host
    /// representor `pf0hpf` (ofport 1), the patch port `patch-breth0` (2)
    /// to `patch-<peer>` on bridge `peer` (1), and the uplink `p0` (3). The
    /// interfaces pf0hpf and p0 must exist.
    pub fn gateway_bridge(&self, peer: &str) -> anyhow::Result<()> {
        self.bridge_without_patch()?;
        self.vsctl_line(&format!(
            "add-br {peer} -- set bridge {peer} datapath_type=netdev fail_mode=secure \
             -- add-port breth0 patch-breth0 -- set Interface patch-breth0 type=patch \
                options:peer=patch-{peer} ofport_request=2 \
             -- add-port {peer} patch-{peer} -- set Interface patch-{peer} type=patch \
                options:peer=patch-breth0 ofport_request=1"
        ))?;
        Ok(())
    }

    /// `breth0` with the host representor (ofport 1) and the uplink (3),
    /// for a patch port someone else makes (ovn-controller). The bridge
    /// names its uplink in `external_ids:bridge-uplink`, as ovnkube-node
    /// writes it on a bridge it makes.
    pub fn bridge_without_patch(&self) -> anyhow::Result<()> {
        self.vsctl_line(
            "add-br breth0 -- set bridge breth0 datapath_type=netdev \
             other_config:hwaddr=02:00:c6:12:00:0a external_ids:bridge-uplink=p0 \
             -- add-port breth0 pf0hpf -- set Interface pf0hpf ofport_request=1 \
             -- add-port breth0 p0 -- set Interface p0 ofport_request=3",
        )?;
        Ok(())
    }

    /// ovs-vsctl with a command line split at whitespace.
    fn vsctl_line(&self, line: &str) -> anyhow::Result<String> {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.vsctl(&args)
    }

    /// The dpu-agent `[bridge]` section for the bridge [`Ovs::gateway_bridge`]
    /// builds, pointing at this instance's sockets.
    pub fn agent_bridge_section(&self) -> String {
        self.agent_bridge_section_with("patch-breth0")
    }

    /// As [`Ovs::agent_bridge_section`], with another patch port's name.
    pub fn agent_bridge_section_with(&self, patch_port: &str) -> String {
        format!(
            r#"
[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "{patch_port}"
uplink = "p0"
ovsdb_socket = "{}"
openflow = "{}"
verify_interval_ms = 1000
"#,
            self.db_socket().display(),
            self.openflow("breth0")
        )
    }

    /// The dpu-agent `[bridge]` section naming the bridge only: its ports
    /// are found in OVSDB.
    pub fn agent_bridge_section_by_name(&self) -> String {
        format!(
            r#"
[bridge]
name = "breth0"
ovsdb_socket = "{}"
openflow = "{}"
verify_interval_ms = 1000
"#,
            self.db_socket().display(),
            self.openflow("breth0")
        )
    }

    /// Writes OVN-Kubernetes' default breth0 flow set (tests/fixtures) onto
    /// the bridge [`Ovs::gateway_bridge`] builds, the way ovnkube-node does:
    /// one `--bundle replace-flows` that deletes every other flow.
    pub fn ovnkube_replace_flows(&self, node_ip: &str) -> anyhow::Result<()> {
        let file = self.ovnkube_flows_file(node_ip)?;
        crate::ovnkube::replace_flows(&self.openflow("breth0"), &file)
    }

    /// OVN-Kubernetes' breth0 flow set for this bridge (its port numbers,
    /// MAC and `node_ip`), written to a file of this instance.
    pub fn ovnkube_flows_file(&self, node_ip: &str) -> anyhow::Result<PathBuf> {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ovnk-breth0.flows");
        let patch = self.patch_ofport()?;
        let flows = std::fs::read_to_string(&fixture)?
            .replace("{HOST_REP}", "1")
            .replace("{PATCH}", &patch)
            .replace("{UPLINK}", "3")
            .replace("{MAC}", "02:00:c6:12:00:0a")
            .replace("{NODE_IP}", node_ip);
        let file = self.dir.path().join("ovnkube.flows");
        std::fs::write(&file, flows)?;
        Ok(file)
    }

    /// The OpenFlow port number of breth0's patch port (ours or OVN's).
    pub fn patch_ofport(&self) -> anyhow::Result<String> {
        for port in self.vsctl(&["list-ports", "breth0"])?.lines() {
            let kind = self.vsctl(&["get", "Interface", port.trim(), "type"])?;
            if kind.trim() == "patch" {
                return Ok(self
                    .vsctl(&["get", "Interface", port.trim(), "ofport"])?
                    .trim()
                    .to_string());
            }
        }
        anyhow::bail!("breth0 has no patch port")
    }

    /// The flows of `bridge` whose cookie is not `cookie`, as dump-flows
    /// prints them without statistics, sorted.
    pub fn flows_not_of(&self, bridge: &str, cookie: u64) -> anyhow::Result<Vec<String>> {
        let ours = format!("cookie={cookie:#x},");
        let ours_spaced = format!("cookie={cookie:#x} ");
        let dump = self.ofctl("dump-flows", bridge, &["--no-stats"])?;
        Ok(sorted_flows(&dump)
            .into_iter()
            .filter(|l| !l.starts_with(&ours) && !l.starts_with(&ours_spaced))
            .collect())
    }

    /// The flows of `bridge` with `cookie`, without statistics, sorted:
    /// what changes only when their writer rewrites them.
    pub fn flows_of(&self, bridge: &str, cookie: u64) -> anyhow::Result<Vec<String>> {
        let dump = self.ofctl(
            "dump-flows",
            bridge,
            &["--no-stats", &format!("cookie={cookie:#x}/-1")],
        )?;
        Ok(sorted_flows(&dump))
    }

    /// ovs-appctl to this instance's ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let pid = std::fs::read_to_string(self.dir.path().join("ovs-vswitchd.pid"))?;
        let ctl = self
            .dir
            .path()
            .join(format!("ovs-vswitchd.{}.ctl", pid.trim()))
            .display()
            .to_string();
        let mut all = vec!["ovs-appctl", "-t", ctl.as_str()];
        all.extend_from_slice(args);
        crate::netns::run(&all)
    }

    pub fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}/db.sock", self.path());
        let mut all = vec!["ovs-vsctl", db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        self.in_ns(&all)
    }

    /// ovs-ofctl -O OpenFlow13,OpenFlow14 <command> <bridge target> <args...> (1.4 where the bridge allows it)
    pub fn ofctl(&self, command: &str, bridge: &str, args: &[&str]) -> anyhow::Result<String> {
        let target = self.openflow(bridge);
        let mut all = vec![
            "ovs-ofctl",
            "-O",
            "OpenFlow13,OpenFlow14",
            command,
            target.as_str(),
        ];
        all.extend_from_slice(args);
        crate::netns::run(&all)
    }

    fn in_ns(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::netns::run_in(&self.netns, args)
    }
}

/// A DPU namespace with OVS in it: breth0 (pf0hpf, patch-breth0, p0, whose
/// far ends are veths left in the namespace) patched to `br-int`. OVS stops
/// before the namespace goes.
pub struct Switch {
    pub ovs: Ovs,
    pub ns: NetNs,
}

impl Switch {
    pub fn start(role: &str) -> anyhow::Result<Self> {
        let ns = NetNs::new(role)?;
        ns.sh("set -e
            ip link add pf0hpf type veth peer name hostside
            ip link add p0 type veth peer name p0peer
            for l in pf0hpf hostside p0 p0peer; do ip link set $l up; done")?;
        let ovs = Ovs::start(&ns)?;
        ovs.gateway_bridge("br-int")?;
        Ok(Switch { ovs, ns })
    }
}

/// The flow lines of a `dump-flows` output, trimmed and sorted.
pub fn sorted_flows(dump: &str) -> Vec<String> {
    let mut flows: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect();
    flows.sort();
    flows
}

/// kill -9 of the daemon whose pid is in `pidfile`, then waits for it to be
/// gone so that a restart can take the pidfile. A zombie is gone too:
/// reaping is up to whoever adopted the daemon (on some machines a slow
/// PID 1).
pub fn kill_daemon(pidfile: &std::path::Path) -> anyhow::Result<()> {
    let pid = std::fs::read_to_string(pidfile)?;
    crate::netns::run(&["kill", "-9", pid.trim()])?;
    let stat = format!("/proc/{}/stat", pid.trim());
    noverlay_test_support::eventually_blocking(
        &format!("{} to exit", pidfile.display()),
        std::time::Duration::from_secs(5),
        || {
            std::fs::read_to_string(&stat).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next())
                    == Some("Z")
            })
        },
    )
    .map_err(anyhow::Error::msg)?;
    let _ = std::fs::remove_file(pidfile);
    Ok(())
}

impl Drop for Ovs {
    fn drop(&mut self) {
        let d = self.path();
        let vswitchd_ctl = std::fs::read_to_string(format!("{d}/ovs-vswitchd.pid"))
            .map(|pid| format!("ovs-vswitchd.{}.ctl", pid.trim()))
            .unwrap_or_default();
        for (ctl, pidfile) in [
            (vswitchd_ctl.as_str(), "ovs-vswitchd.pid"),
            ("ovsdb.ctl", "ovsdb.pid"),
        ] {
            let stopped = Command::new("ovs-appctl")
                .args(["-t", &format!("{d}/{ctl}"), "exit"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !stopped && let Ok(pid) = std::fs::read_to_string(format!("{d}/{pidfile}")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).output();
            }
        }
    }
}
