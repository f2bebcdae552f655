//! Real OVN next to a test's Open vSwitch: the northbound and southbound
//! databases, ovn-northd, and ovn-controller bound to that OVS (in the DPU's
//! namespace), configured in OVN-Kubernetes' shared-gateway shape: a gateway
//! router `GR_node1` whose external port has the bridge's MAC and the node
//! IP, on a switch `ext_node1` with a localnet port mapped to breth0, so
//! that ovn-controller makes the patch port between breth0 and br-int as it
//! does in a cluster. Everything stops on Drop.

use crate::{netns::NetNs, ovs::Ovs};
use noverlay_test_support::eventually_blocking;
use std::{process::Command, time::Duration};
use tempfile::TempDir;

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
pub const NODE: &str = "node1";
pub const GATEWAY_ROUTER: &str = "GR_node1";
pub const EXTERNAL_PORT: &str = "rtoe-GR_node1";
/// The patch port ovn-controller creates on breth0 for the localnet port.
pub const PATCH_PORT: &str = "patch-breth0_node1-to-br-int";

/// Why OVN cannot be started here, if it cannot.
fn missing() -> Option<String> {
    let tool = ["ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_err());
    match tool {
        Some(tool) => Some(format!(
            "`{tool}` is not installed (.ci/run installs ovn-central and ovn-host)"
        )),
        None => [NB_SCHEMA, SB_SCHEMA]
            .into_iter()
            .find(|schema| !std::path::Path::new(schema).exists())
            .map(|schema| format!("{schema} is missing")),
    }
}

/// For the OVN tests: an error naming what is missing.
pub fn require() -> anyhow::Result<()> {
    match missing() {
        None => Ok(()),
        Some(why) => anyhow::bail!("this test needs OVN: {why}"),
    }
}

/// The gateway router's addresses, routes and static MAC bindings.
pub struct GatewayRouter<'a> {
    /// The external port's MAC (breth0's).
    pub mac: &'a str,
    /// The node IPs with their prefix lengths, e.g. "198.18.0.10/24".
    pub networks: &'a [&'a str],
    /// (prefix, next hop): the cluster CIDRs via the remote node, as a
    /// BGP-learned route would be.
    pub routes: &'a [(&'a str, &'a str)],
    /// (masquerade subnet, dummy next hop): routed back via the external
    /// port.
    pub masquerade: &'a [(&'a str, &'a str)],
    /// (IP, MAC) bound on the external port (no ARP or ND for them).
    pub mac_bindings: &'a [(&'a str, &'a str)],
}

pub struct Ovn {
    pub dir: TempDir,
    netns: String,
}

impl Ovn {
    /// Starts OVN central and ovn-controller for `ovs` (whose bridge breth0
    /// must exist) and creates br-int.
    pub fn start(ns: &NetNs, ovs: &Ovs) -> anyhow::Result<Self> {
        require()?;
        let dir = tempfile::Builder::new().prefix("ovn").tempdir_in("/tmp")?;
        let ovn = Ovn {
            dir,
            netns: ns.name.clone(),
        };
        let d = ovn.path();
        for (db, schema) in [("nb", NB_SCHEMA), ("sb", SB_SCHEMA)] {
            crate::netns::run(&["ovsdb-tool", "create", &format!("{d}/{db}.db"), schema])?;
            ovn.in_ns(&[
                "ovsdb-server",
                &format!("{d}/{db}.db"),
                &format!("--remote=punix:{d}/{db}.sock"),
                &format!("--pidfile={d}/{db}.pid"),
                &format!("--unixctl={d}/{db}.ctl"),
                &format!("--log-file={d}/{db}.log"),
                "--detach",
            ])?;
        }
        ovn.nbctl(&["--no-wait", "init"])?;
        ovn.sbctl(&["init"])?;
        ovn.start_northd()?;
        ovs.vsctl(&[
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
        ])?;
        ovs.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:system-id={NODE}"),
            &format!("external_ids:ovn-remote=unix:{d}/sb.sock"),
            "external_ids:ovn-encap-type=geneve",
            "external_ids:ovn-encap-ip=127.0.0.1",
            "external_ids:ovn-bridge=br-int",
            "external_ids:ovn-bridge-datapath-type=netdev",
            "external_ids:ovn-bridge-mappings=physnet:breth0",
        ])?;
        ovn.start_controller(ovs)?;
        Ok(ovn)
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The northbound database's socket (what dpu-agent's `[ovn]` names).
    pub fn nb_socket(&self) -> std::path::PathBuf {
        self.dir.path().join("nb.sock")
    }

    pub fn start_northd(&self) -> anyhow::Result<()> {
        let d = self.path();
        self.in_ns(&[
            "ovn-northd",
            &format!("--ovnnb-db=unix:{d}/nb.sock"),
            &format!("--ovnsb-db=unix:{d}/sb.sock"),
            &format!("--pidfile={d}/northd.pid"),
            &format!("--unixctl={d}/northd.ctl"),
            &format!("--log-file={d}/northd.log"),
            "--detach",
        ])?;
        Ok(())
    }

    /// ovn-controller for `ovs`: it finds br-int's management socket in
    /// OVS_RUNDIR and puts its own control socket in OVN_RUNDIR.
    pub fn start_controller(&self, ovs: &Ovs) -> anyhow::Result<()> {
        let d = self.path();
        self.in_ns(&[
            "env",
            &format!("OVS_RUNDIR={}", ovs.path()),
            &format!("OVN_RUNDIR={d}"),
            "ovn-controller",
            &format!("unix:{}", ovs.db_socket().display()),
            &format!("--pidfile={d}/controller.pid"),
            &format!("--log-file={d}/controller.log"),
            "--detach",
        ])?;
        Ok(())
    }

    /// kill -9 of `name` ("controller", "northd", "nb", "sb").
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        crate::ovs::kill_daemon(&self.dir.path().join(format!("{name}.pid")))
    }

    /// The gateway router, its external switch and routes, then waits for
    /// ovn-controller to bind the router and make the patch port.
    pub fn gateway_router(&self, ovs: &Ovs, gr: &GatewayRouter) -> anyhow::Result<()> {
        let port = format!(
            "lrp-add {GATEWAY_ROUTER} {EXTERNAL_PORT} {} {}",
            gr.mac,
            gr.networks.join(" ")
        );
        let script = format!(
            "lr-add {GATEWAY_ROUTER} -- set logical_router {GATEWAY_ROUTER} options:chassis={NODE}
             {port}
             ls-add ext_{NODE}
             lsp-add ext_{NODE} etor-{GATEWAY_ROUTER} -- lsp-set-type etor-{GATEWAY_ROUTER} router -- lsp-set-addresses etor-{GATEWAY_ROUTER} router -- lsp-set-options etor-{GATEWAY_ROUTER} router-port={EXTERNAL_PORT}
             lsp-add ext_{NODE} breth0_{NODE} -- lsp-set-type breth0_{NODE} localnet -- lsp-set-addresses breth0_{NODE} unknown -- lsp-set-options breth0_{NODE} network_name=physnet"
        );
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            self.nbctl(&words)?;
        }
        for (prefix, via) in gr.routes {
            self.nbctl(&["lr-route-add", GATEWAY_ROUTER, prefix, via])?;
        }
        for (subnet, via) in gr.masquerade {
            self.nbctl(&["lr-route-add", GATEWAY_ROUTER, subnet, via, EXTERNAL_PORT])?;
        }
        for (ip, mac) in gr.mac_bindings {
            self.nbctl(&["static-mac-binding-add", EXTERNAL_PORT, ip, mac])?;
        }
        self.wait_for_patch(ovs)
    }

    /// Waits until ovn-controller has made the patch port on breth0 and
    /// programmed br-int (the router bound to this chassis).
    pub fn wait_for_patch(&self, ovs: &Ovs) -> anyhow::Result<()> {
        eventually_blocking(
            "ovn-controller to create the patch port on breth0",
            Duration::from_secs(20),
            || {
                ovs.vsctl(&["get", "Interface", PATCH_PORT, "ofport"])
                    .is_ok_and(|port| port.trim().parse::<i32>().is_ok_and(|n| n > 0))
            },
        )
        .map_err(anyhow::Error::msg)?;
        eventually_blocking(
            "the gateway router bound to this chassis",
            Duration::from_secs(20),
            || {
                self.sbctl(&["--bare", "--columns=chassis", "find", "Port_Binding"])
                    .is_ok_and(|out| !out.trim().is_empty())
            },
        )
        .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    pub fn nbctl(&self, args: &[&str]) -> anyhow::Result<String> {
        nbctl_at(&self.nb_socket(), args)
    }

    pub fn sbctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}/sb.sock", self.path());
        let mut all = vec!["ovn-sbctl", db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        crate::netns::run(&all)
    }

    fn in_ns(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::netns::run_in(&self.netns, args)
    }
}

/// ovn-nbctl against the northbound database at `socket`.
pub fn nbctl_at(socket: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let db = format!("--db=unix:{}", socket.display());
    let mut all = vec!["ovn-nbctl", db.as_str(), "--timeout=10"];
    all.extend_from_slice(args);
    crate::netns::run(&all)
}

impl Drop for Ovn {
    fn drop(&mut self) {
        let d = self.path();
        for name in ["controller", "northd", "sb", "nb"] {
            if let Ok(pid) = std::fs::read_to_string(format!("{d}/{name}.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).output();
            }
        }
    }
}
