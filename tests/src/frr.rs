//! Real FRR (zebra + bgpd from Debian's `frr`) in a test's network
//! namespace: one instance per namespace, with its config, pid files, vty
//! sockets and logs in a temporary directory of its own, so that several
//! run side by side and none touches /etc/frr or /run/frr. The daemons run
//! as the package's `frr` user (root is not in its vty group); everything
//! stops on Drop.

use crate::netns::{self, NetNs};
use noverlay_test_support::eventually_blocking;
use std::{path::Path, process::Command, time::Duration};
use tempfile::TempDir;

/// The autonomous system of every speaker (iBGP, as in upstream's CI).
pub const AS: u32 = 64512;
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";
/// The daemons, in the order they stop.
const DAEMONS: [&str; 2] = ["bgpd", "zebra"];

/// Why FRR cannot be started here, if it cannot.
fn missing() -> Option<String> {
    [ZEBRA, BGPD, "/usr/bin/vtysh"]
        .into_iter()
        .find(|tool| !Path::new(tool).exists())
        .map(|tool| format!("{tool} is missing (.ci/run installs the `frr` package)"))
}

/// For the BGP tests: an error naming what is missing.
pub fn require() -> anyhow::Result<()> {
    match missing() {
        None => Ok(()),
        Some(why) => anyhow::bail!("this test needs FRR: {why}"),
    }
}

/// One FRR instance: zebra (which installs what bgpd selects into the
/// namespace's kernel, protocol bgp) and bgpd.
pub struct Frr {
    dir: TempDir,
    netns: String,
    pub name: String,
}

impl Frr {
    /// Starts zebra and bgpd in `ns` with this bgpd configuration, then waits
    /// until bgpd answers on its vty.
    pub fn start(ns: &NetNs, name: &str, bgpd_conf: &str) -> anyhow::Result<Self> {
        require()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("frr-{name}"))
            .tempdir_in("/tmp")?;
        let frr = Frr {
            dir,
            netns: ns.name.clone(),
            name: name.to_string(),
        };
        std::fs::write(frr.file("zebra.conf"), format!("hostname {name}\n"))?;
        std::fs::write(frr.file("bgpd.conf"), bgpd_conf)?;
        netns::run(&["chown", "-R", "frr:frr", &frr.path()])?;
        for (daemon, binary) in [("zebra", ZEBRA), ("bgpd", BGPD)] {
            let d = frr.path();
            netns::run_in(
                &frr.netns,
                &[
                    binary,
                    "--daemon",
                    "-f",
                    &format!("{d}/{daemon}.conf"),
                    "-i",
                    &format!("{d}/{daemon}.pid"),
                    "-z",
                    &format!("{d}/zserv.api"),
                    "--vty_socket",
                    &d,
                    // No vty on TCP: vtysh reaches it through the socket.
                    "-P",
                    "0",
                    "--log",
                    &format!("file:{d}/{daemon}.log"),
                ],
            )?;
        }
        eventually_blocking(
            &format!("bgpd of {name} to answer on its vty"),
            Duration::from_secs(10),
            || frr.vtysh(&["show bgp summary"]).is_ok(),
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", frr.logs()))?;
        Ok(frr)
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// vtysh with these commands, one `-c` each.
    pub fn vtysh(&self, commands: &[&str]) -> anyhow::Result<String> {
        let d = self.path();
        let mut args = vec!["vtysh", "--vty_socket", d.as_str()];
        for command in commands {
            args.extend(["-c", command]);
        }
        netns::run_in(&self.netns, &args)
    }

    /// Applies configuration lines as one vtysh input file (fast for
    /// thousands of lines).
    pub fn configure(&self, lines: &str) -> anyhow::Result<()> {
        let file = self.file("change.conf");
        std::fs::write(&file, lines)?;
        netns::run(&["chown", "frr:frr", &file.display().to_string()])?;
        let d = self.path();
        let output = netns::run_in(
            &self.netns,
            &[
                "vtysh",
                "--vty_socket",
                &d,
                "-f",
                &file.display().to_string(),
            ],
        )?;
        // vtysh -f reports a rejected line on stdout and still exits 0.
        anyhow::ensure!(
            !output.contains("% "),
            "{} rejected configuration: {output}",
            self.name
        );
        Ok(())
    }

    /// Advertises (`true`) or withdraws these prefixes (both families) from
    /// this speaker.
    pub fn announce(&self, prefixes: &[&str], advertise: bool) -> anyhow::Result<()> {
        let mut lines = format!("router bgp {AS}\n");
        for family in ["ipv4", "ipv6"] {
            lines.push_str(&format!(" address-family {family} unicast\n"));
            for prefix in prefixes
                .iter()
                .filter(|p| p.contains(':') == (family == "ipv6"))
            {
                let no = if advertise { "" } else { "no " };
                lines.push_str(&format!("  {no}network {prefix}\n"));
            }
            lines.push_str(" exit-address-family\n");
        }
        self.configure(&lines)
    }

    /// The number of established BGP sessions.
    pub fn established(&self) -> anyhow::Result<usize> {
        let summary = self.vtysh(&["show bgp summary json"])?;
        let json: serde_json::Value = serde_json::from_str(&summary)?;
        let mut peers = std::collections::BTreeSet::new();
        for family in ["ipv4Unicast", "ipv6Unicast"] {
            if let Some(map) = json[family]["peers"].as_object() {
                for (peer, state) in map {
                    if state["state"] == "Established" {
                        peers.insert(peer.clone());
                    }
                }
            }
        }
        Ok(peers.len())
    }

    /// Both daemons' logs, for a failure's message.
    pub fn logs(&self) -> String {
        DAEMONS
            .iter()
            .map(|daemon| {
                let text = std::fs::read_to_string(self.file(&format!("{daemon}.log")))
                    .unwrap_or_default();
                format!("--- {} {daemon}.log ---\n{text}", self.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in DAEMONS {
            if let Ok(pid) = std::fs::read_to_string(self.file(&format!("{daemon}.pid"))) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).output();
            }
        }
    }
}
