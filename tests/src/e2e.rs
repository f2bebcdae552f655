//! The end-to-end testbed, shared by the e2e tests and the demo: a DPU host,
//! a DPU running Open vSwitch with the shared gateway bridge and real OVN
//! behind its patch port, and an underlay with a remote node and pod. Both
//! agents run as real processes from the built binaries, configured by
//! files like an operator writes.
//!
//! ```text
//!  ns host                 ns dpu (ovsdb-server + ovs-vswitchd, netdev; OVN)        ns underlay
//!  eth0 198.18.0.10/24 ─── pf0hpf ─┐                                 ┌─ p0 ─── eth0 198.18.0.20/24
//!  (MAC = bridge MAC)              breth0 ── patch ── br-int (OVN)   │        lo 198.18.200.1 (pod)
//!  mgmt 198.19.254.1/30 ── mgmt 198.19.254.2/30 (gRPC, mTLS)                   lo 198.19.128.1 (pod)
//!  ovn-k8s-mp0 (node subnet + ovnkube's broad cluster route, kept)
//! ```
//!
//! OVN (NB, SB, ovn-northd, ovn-controller on this OVS) runs the gateway
//! router GR_node1 in OVN-Kubernetes' shared-gateway shape ([`crate::ovn`]):
//! its external port has the bridge MAC and the node IP, the cluster CIDRs
//! are routed via the remote node (as BGP would learn them), the
//! masquerade subnet back via the dummy next hop with its static MAC
//! binding. ovn-controller makes the patch port; dpu-agent finds it by name
//! as it would in a cluster.

use crate::{
    harness::{self, Certs, DpuOptions, HostOptions},
    netns::{self, NetNs},
    ovn::{self, GatewayRouter, Ovn},
    ovs::Ovs,
};
use noverlay_test_support::eventually_blocking;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub const BRIDGE_MAC: &str = "02:00:c6:12:00:0a";
pub const NODE_IP: &str = "198.18.0.10";
pub const REMOTE_NODE_IP: &str = "198.18.0.20";
pub const REMOTE_POD: &str = "198.18.200.1";
/// A pod in a CIDR that is only added at runtime.
pub const LATE_POD: &str = "198.19.128.1";
pub const CLUSTER_CIDR: &str = "198.18.128.0/17";
pub const LATE_CIDR: &str = "198.19.128.0/24";
pub const TCP_PORT: u16 = 7777;
/// The masquerade subnet of the agents' default contract and its dummy
/// next hop (subnet offset 4).
pub const MASQUERADE_SUBNET: &str = "169.254.0.0/17";
pub const DUMMY_NEXT_HOP: &str = "169.254.0.4";
/// The IPv6 half of the dual-stack contract (the harness's IPv6 family:
/// masquerade subnet fd69::/112, underlay IP 2001:db8::10).
pub const NODE_IP6: &str = "2001:db8::10";
pub const REMOTE_NODE_IP6: &str = "2001:db8::20";
pub const CLUSTER_CIDR6: &str = "fd00:10:244::/48";
pub const REMOTE_POD6: &str = "fd00:10:244:1::1";
pub const MASQUERADE_SUBNET6: &str = "fd69::/112";
pub const DUMMY_NEXT_HOP6: &str = "fd69::4";
/// OVN-Kubernetes' own defaults (ovnkube sets none), and their dummy next
/// hops, as [`Testbed::route_ovnkube_default_masquerade`] routes them.
pub const OVNKUBE_MASQUERADE: [(&str, &str); 2] = [
    ("169.254.169.0/29", "169.254.169.4"),
    ("fd69::/125", "fd69::4"),
];
const DPU_MGMT_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 254, 2);
const GRPC_PORT: u16 = 50051;
/// The dpu-agent's metrics endpoint, on loopback in the DPU's namespace.
const DPU_METRICS: &str = "127.0.0.1:9108";

/// The IPv4 cluster CIDRs that, with [`CLUSTER_CIDR6`], make the contract's
/// limit of 1024: [`CLUSTER_CIDR`] and the first 1022 /27s of
/// 198.19.0.0/17 ([`LIMIT_SUPERNET`]).
pub fn cidrs_at_the_limit() -> Vec<String> {
    let small = noverlay_proto::contract::MAX_CLUSTER_CIDRS - 2;
    std::iter::once(CLUSTER_CIDR.to_string())
        .chain((0..small).map(|i| format!("198.19.{}.{}/27", i / 8, i % 8 * 32)))
        .collect()
}

/// Holds every /27 of [`cidrs_at_the_limit`]; the gateway router needs a
/// route for it before those pods answer.
pub const LIMIT_SUPERNET: &str = "198.19.0.0/17";

/// The agent binaries built by `cargo build --workspace`.
pub struct Binaries {
    pub dpu_agent: PathBuf,
    pub host_agent: PathBuf,
    /// The stand-in ovnkube-node process (tests/src/bin/ovnkube.rs).
    pub ovnkube: PathBuf,
}

impl Binaries {
    /// For tests: builds the agent binaries first (once per test process,
    /// with the cargo running the tests; a no-op when they are current), so
    /// that a plain `cargo test` on a fresh clone tests the real binaries.
    pub fn built() -> anyhow::Result<Self> {
        static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
        BUILT
            .get_or_init(build_agents)
            .clone()
            .map_err(anyhow::Error::msg)?;
        Self::locate()
    }

    /// Finds the binaries next to the running executable (target/<profile>/
    /// for a binary, target/<profile>/deps/ for a test).
    pub fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut dirs = Vec::new();
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(parent) = dir.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
        for dir in dirs {
            let bins = Binaries {
                dpu_agent: dir.join("dpu-agent"),
                host_agent: dir.join("host-agent"),
                ovnkube: dir.join("ovnkube"),
            };
            if bins.dpu_agent.is_file() && bins.host_agent.is_file() {
                return Ok(bins);
            }
        }
        anyhow::bail!(
            "dpu-agent and host-agent binaries not found next to {}; run `cargo build --workspace` first",
            exe.display()
        )
    }
}

/// `cargo build --workspace --bins` in the profile of the running test (the
/// same package selection as the README's build, so nothing is rebuilt
/// with other features).
fn build_agents() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let release = exe.components().any(|c| c.as_os_str() == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--workspace", "--bins", "--locked"])
        .current_dir(workspace);
    if release {
        build.arg("--release");
    }
    let output = build
        .output()
        .map_err(|e| format!("cannot run cargo to build the agents: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the agent binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The whole testbed; everything is removed on Drop.
pub struct Testbed {
    pub host: NetNs,
    pub dpu: NetNs,
    pub underlay: NetNs,
    /// Dropped before `ovs`: ovn-controller goes first.
    pub ovn: Ovn,
    pub ovs: Ovs,
    pub certs: Certs,
    bins: Binaries,
    /// How long OVN took to start and bind the gateway router.
    pub ovn_ready: Duration,
    dpu_agent: Option<Child>,
    host_agent: Option<Child>,
    tcp_stop: Arc<AtomicBool>,
}

impl Testbed {
    /// For tests: builds the agent binaries if needed, then the testbed.
    pub fn build_for_test() -> anyhow::Result<Self> {
        Self::build_with(Binaries::built()?)
    }

    /// Builds the namespaces, links, OVS bridges and OVN around already
    /// built binaries. The agents are not started.
    pub fn build() -> anyhow::Result<Self> {
        Self::build_with(Binaries::locate()?)
    }

    fn build_with(bins: Binaries) -> anyhow::Result<Self> {
        let host = NetNs::new("h")?;
        let dpu = NetNs::new("d")?;
        let underlay = NetNs::new("u")?;
        host.sh(&format!(
            "set -e
            ip link add eth0 type veth peer name pf0hpf netns {dpu}
            ip link set eth0 address {BRIDGE_MAC}
            ip addr add {NODE_IP}/24 dev eth0
            ip link add mgmt type veth peer name mgmt netns {dpu}
            ip addr add 198.19.254.1/30 dev mgmt
            ip -6 addr add {NODE_IP6}/64 dev eth0 nodad
            ip link add ovn-k8s-mp0 type veth peer name mp0-peer
            ip addr add 198.18.130.2/24 dev ovn-k8s-mp0
            ip -6 addr add fd00:10:244:2::2/64 dev ovn-k8s-mp0 nodad
            for l in eth0 mgmt ovn-k8s-mp0 mp0-peer; do ip link set $l up; done
            ip route add {CLUSTER_CIDR} dev ovn-k8s-mp0
            ip -6 route add {CLUSTER_CIDR6} dev ovn-k8s-mp0
            ethtool -K eth0 tx off >/dev/null",
            dpu = dpu.name
        ))?;
        dpu.sh(&format!(
            "set -e
            ip link add p0 type veth peer name eth0 netns {underlay}
            ip addr add {DPU_MGMT_IP}/30 dev mgmt
            for l in pf0hpf p0 mgmt; do ip link set $l up; ethtool -K $l tx off >/dev/null; done",
            underlay = underlay.name
        ))?;
        underlay.sh(&format!(
            "set -e
            ip addr add {REMOTE_NODE_IP}/24 dev eth0
            ip -6 addr add {REMOTE_NODE_IP6}/64 dev eth0 nodad
            ip link set eth0 up
            ip link set lo up
            ethtool -K eth0 tx off >/dev/null
            ip addr add {REMOTE_POD}/32 dev lo
            ip addr add {LATE_POD}/32 dev lo
            ip -6 addr add {REMOTE_POD6}/128 dev lo nodad
            ip neigh replace {NODE_IP} lladdr {BRIDGE_MAC} dev eth0 nud permanent
            ip -6 neigh replace {NODE_IP6} lladdr {BRIDGE_MAC} dev eth0 nud permanent"
        ))?;
        let remote_mac = underlay
            .sh("cat /sys/class/net/eth0/address")?
            .trim()
            .to_string();

        let ovs = Ovs::start(&dpu)?;
        ovs.bridge_without_patch()?;
        let started = std::time::Instant::now();
        let ovn = Ovn::start(&dpu, &ovs)?;
        let dummy_mac = |subnet: &str| -> anyhow::Result<String> {
            let masquerade = noverlay_proto::contract::Masquerade::from_subnet(subnet.parse()?)?;
            Ok(noverlay_proto::contract::format_mac(
                &masquerade.dummy_next_hop_mac(),
            ))
        };
        ovn.gateway_router(
            &ovs,
            &GatewayRouter {
                mac: BRIDGE_MAC,
                networks: &[&format!("{NODE_IP}/24"), &format!("{NODE_IP6}/64")],
                routes: &[
                    (CLUSTER_CIDR, REMOTE_NODE_IP),
                    (LATE_CIDR, REMOTE_NODE_IP),
                    (CLUSTER_CIDR6, REMOTE_NODE_IP6),
                ],
                masquerade: &[
                    (MASQUERADE_SUBNET, DUMMY_NEXT_HOP),
                    (MASQUERADE_SUBNET6, DUMMY_NEXT_HOP6),
                ],
                mac_bindings: &[
                    (DUMMY_NEXT_HOP, &dummy_mac(MASQUERADE_SUBNET)?),
                    (DUMMY_NEXT_HOP6, &dummy_mac(MASQUERADE_SUBNET6)?),
                    (REMOTE_NODE_IP, &remote_mac),
                    (REMOTE_NODE_IP6, &remote_mac),
                ],
            },
        )?;
        let ovn_ready = started.elapsed();
        let certs = Certs::new()?;
        let testbed = Testbed {
            host,
            dpu,
            underlay,
            ovn,
            ovs,
            certs,
            bins,
            ovn_ready,
            dpu_agent: None,
            host_agent: None,
            tcp_stop: Arc::new(AtomicBool::new(false)),
        };
        testbed.write_dpu_config(&[CLUSTER_CIDR])?;
        testbed.write_host_config()?;
        testbed.start_tcp_server()?;
        Ok(testbed)
    }

    /// kill -9 of ovs-vswitchd and a restart: every flow is lost; OVN's
    /// come back from ovn-controller, ours must come back from the
    /// dpu-agent.
    pub fn crash_and_restart_vswitchd(&self) -> anyhow::Result<()> {
        self.ovs.kill_vswitchd()?;
        self.ovs.start_vswitchd()?;
        self.ovn.wait_for_patch(&self.ovs)
    }

    pub fn dir(&self) -> &Path {
        self.certs.dir.path()
    }

    pub fn dpu_config_path(&self) -> PathBuf {
        self.dir().join("dpu-agent.toml")
    }

    pub fn host_config_path(&self) -> PathBuf {
        self.dir().join("host-agent.toml")
    }

    /// Where the dpu-agent listens, on the host-DPU management link.
    pub fn dpu_address() -> SocketAddr {
        SocketAddr::from((DPU_MGMT_IP, GRPC_PORT))
    }

    /// Writes the DPU config with these IPv4 cluster CIDRs (and the IPv6
    /// family with [`CLUSTER_CIDR6`]).
    pub fn write_dpu_config(&self, cidrs: &[&str]) -> anyhow::Result<()> {
        let options = DpuOptions {
            listen: Self::dpu_address(),
            ipv4_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ipv6_cidrs: vec![CLUSTER_CIDR6.into()],
            bridge: self.ovs.agent_bridge_section_with(ovn::PATCH_PORT),
            // The agent runs in the DPU's namespace: its uplink is p0.
            uplink_guard: true,
            ovn: format!(
                "\n[ovn]\nnb_socket = {:?}\ngateway_router = {:?}\n",
                self.ovn.nb_socket(),
                ovn::GATEWAY_ROUTER
            ),
            ..DpuOptions::default()
        };
        std::fs::write(
            self.dpu_config_path(),
            format!(
                "metrics_listen = \"{DPU_METRICS}\"\n{}",
                harness::dpu_config_toml(&options, &self.certs.dpu)
            ),
        )?;
        Ok(())
    }

    /// The dpu-agent's metrics, as Prometheus scrapes them (inside the
    /// DPU's namespace).
    pub fn dpu_metrics(&self) -> anyhow::Result<String> {
        self.dpu.run(|| async {
            let mut stream = TcpStream::connect_timeout(
                &DPU_METRICS.parse::<SocketAddr>()?,
                Duration::from_secs(2),
            )?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: dpu\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
    }

    /// Moves OVN's masquerade routes from the agents' default contract
    /// ([`MASQUERADE_SUBNET`], [`MASQUERADE_SUBNET6`]) to OVN-Kubernetes'
    /// own defaults ([`OVNKUBE_MASQUERADE`]), as ovnkube-node sets up a
    /// gateway router when nothing names a masquerade subnet.
    pub fn route_ovnkube_default_masquerade(&self) -> anyhow::Result<()> {
        let external = format!("rtoe-{}", ovn::GATEWAY_ROUTER);
        for old in [MASQUERADE_SUBNET, MASQUERADE_SUBNET6] {
            self.ovn
                .nbctl(&["lr-route-del", ovn::GATEWAY_ROUTER, old])?;
        }
        for (subnet, via) in OVNKUBE_MASQUERADE {
            let masquerade = noverlay_proto::contract::Masquerade::from_subnet(subnet.parse()?)?;
            let mac = noverlay_proto::contract::format_mac(&masquerade.dummy_next_hop_mac());
            self.ovn
                .nbctl(&["lr-route-add", ovn::GATEWAY_ROUTER, subnet, via, &external])?;
            // The IPv6 dummy next hop (fd69::4) is the same address: its
            // binding is there already.
            let bound =
                self.ovn
                    .nbctl(&["--bare", "--columns=ip", "list", "Static_MAC_Binding"])?;
            if !bound.lines().any(|ip| ip.trim() == via) {
                self.ovn
                    .nbctl(&["static-mac-binding-add", &external, via, &mac])?;
            }
        }
        Ok(())
    }

    /// A host config as written next to ovnkube-node in dpu-host mode: no
    /// masquerade subnet, ovnkube's is taken.
    pub fn write_host_config_next_to_ovnkube(&self) -> anyhow::Result<()> {
        self.write_host_config()?;
        let text = std::fs::read_to_string(self.host_config_path())?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("masquerade_subnet"))
            .collect();
        std::fs::write(self.host_config_path(), kept.join("\n") + "\n")?;
        Ok(())
    }

    /// Starts a stand-in ovnkube-node (see [`crate::ovnkube::OvnkubeProcess`])
    /// in `ns` with these arguments.
    pub fn start_ovnkube(
        &self,
        ns: &NetNs,
        args: &[&str],
    ) -> anyhow::Result<crate::ovnkube::OvnkubeProcess> {
        crate::ovnkube::OvnkubeProcess::start(ns, &self.bins.ovnkube, args)
    }

    /// The DPU's stand-in ovnkube-node, OpenShift's shape: dpu mode, its
    /// file ([`Testbed::ovnkube_conf_path`]) named by flag, then `extra`.
    pub fn start_dpu_ovnkube(
        &self,
        extra: &[&str],
    ) -> anyhow::Result<crate::ovnkube::OvnkubeProcess> {
        let config_file = format!("--config-file={}", self.ovnkube_conf_path().display());
        let args = [
            "--init-node",
            "node1",
            "--ovnkube-node-mode=dpu",
            "--gateway-mode=shared",
            config_file.as_str(),
        ];
        self.start_ovnkube(&self.dpu, &[&args[..], extra].concat())
    }

    /// The host's stand-in ovnkube-node: dpu-host mode, flags only.
    pub fn start_host_ovnkube(&self) -> anyhow::Result<crate::ovnkube::OvnkubeProcess> {
        self.start_ovnkube(
            &self.host,
            &[
                "--init-node=node1",
                "--ovnkube-node-mode",
                "dpu-host",
                "--gateway-mode=shared",
                "--mtu=1400",
                "--ovnkube-node-mgmt-port-netdev=ovn-k8s-mp0",
            ],
        )
    }

    /// ovnkube-node's own config file (INI) in the testbed's directory.
    pub fn ovnkube_conf_path(&self) -> PathBuf {
        self.dir().join("ovn_k8s.conf")
    }

    /// Writes ovnkube's file as ovnkube-node reads it: these IPv4 cluster
    /// subnets and [`CLUSTER_CIDR6`] (each with a host prefix), the MTU;
    /// no masquerade subnets (OVN-Kubernetes' defaults apply).
    pub fn write_ovnkube_conf(&self, cidrs: &[&str]) -> anyhow::Result<()> {
        let subnets: Vec<String> = cidrs
            .iter()
            .map(|c| format!("{c}/24"))
            .chain([format!("{CLUSTER_CIDR6}/64")])
            .collect();
        // Written whole and renamed into place, as a config manager does.
        let staged = self.dir().join("ovn_k8s.conf.new");
        std::fs::write(
            &staged,
            format!(
                "[default]\nmtu=1400\ncluster-subnets=\"{}\"\nencap-port=6081\n\n[kubernetes]\nservice-cidrs=198.20.0.0/16\n\n[gateway]\nmode=shared\nnodeport=true\n",
                subnets.join(",")
            ),
        )?;
        std::fs::rename(staged, self.ovnkube_conf_path())?;
        Ok(())
    }

    /// A dpu-agent config as written next to ovnkube-node: the listener,
    /// the host it admits, TLS, the underlay IPs and the bridge's name and
    /// ports but its patch port; the cluster CIDRs, masquerade subnets and
    /// MTU come from ovnkube's file, the patch port from OVSDB.
    pub fn write_dpu_config_next_to_ovnkube(&self) -> anyhow::Result<()> {
        let tls = &self.certs.dpu;
        let text = format!(
            r#"listen = "{listen}"
authorised_host = "{host}"
metrics_listen = "{DPU_METRICS}"

[tls]
cert = "{cert}"
key = "{key}"
ca = "{ca}"

[ovnkube]
config = "{ovnkube}"

[ovn]
nb_socket = {nb:?}
gateway_router = {router:?}
{bridge}"#,
            listen = Self::dpu_address(),
            host = harness::HOST_SAN,
            cert = tls.cert.display(),
            key = tls.key.display(),
            ca = tls.ca.display(),
            ovnkube = self.ovnkube_conf_path().display(),
            // No underlay IP: the gateway router's port has it.
            nb = self.ovn.nb_socket(),
            router = ovn::GATEWAY_ROUTER,
            // No port names: the patch port ovn-controller made, the uplink
            // the bridge names and the host representor are found in OVSDB.
            bridge = self.ovs.agent_bridge_section_by_name(),
        );
        std::fs::write(self.dpu_config_path(), text)?;
        Ok(())
    }

    fn write_host_config(&self) -> anyhow::Result<()> {
        let options = HostOptions {
            ipv6: true,
            ..HostOptions::new(Self::dpu_address())
        };
        std::fs::write(
            self.host_config_path(),
            harness::host_config_toml(&options, &self.certs.host),
        )?;
        Ok(())
    }

    fn spawn_agent(
        &self,
        ns: &NetNs,
        binary: &Path,
        config: &Path,
        log: &str,
    ) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(log))?;
        Ok(Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    pub fn start_dpu_agent(&mut self) -> anyhow::Result<()> {
        let child = self.spawn_agent(
            &self.dpu,
            &self.bins.dpu_agent,
            &self.dpu_config_path(),
            "dpu-agent.log",
        )?;
        self.dpu_agent = Some(child);
        Ok(())
    }

    pub fn start_host_agent(&mut self) -> anyhow::Result<()> {
        let child = self.spawn_agent(
            &self.host,
            &self.bins.host_agent,
            &self.host_config_path(),
            "host-agent.log",
        )?;
        self.host_agent = Some(child);
        Ok(())
    }

    /// `dpu-agent cleanup` in the DPU's namespace, as an operator runs it
    /// before uninstalling; returns what it printed.
    pub fn dpu_cleanup(&self) -> anyhow::Result<String> {
        let binary = self.bins.dpu_agent.display().to_string();
        let config = self.dpu_config_path().display().to_string();
        netns::run(&[
            "ip",
            "netns",
            "exec",
            &self.dpu.name,
            &binary,
            "cleanup",
            "--config",
            &config,
        ])
    }

    /// `host-agent status [--json]`, as an operator on the host runs it.
    pub fn host_status(&self, json: bool) -> anyhow::Result<String> {
        let socket = self
            .certs
            .host
            .cert
            .parent()
            .unwrap_or(self.dir())
            .join("host-agent.sock");
        let binary = self.bins.host_agent.display().to_string();
        let socket = socket.display().to_string();
        let mut args = vec![binary.as_str(), "status", "--socket", socket.as_str()];
        if json {
            args.push("--json");
        }
        netns::run(&args)
    }

    /// The agents' process ids, while both run (None once either exited).
    pub fn agent_pids(&mut self) -> Option<(u32, u32)> {
        let running = |child: &mut Option<Child>| {
            let child = child.as_mut()?;
            matches!(child.try_wait(), Ok(None)).then(|| child.id())
        };
        Some((
            running(&mut self.dpu_agent)?,
            running(&mut self.host_agent)?,
        ))
    }

    /// kill -9: the agent gets no chance to clean up (nor should it need one).
    pub fn kill_dpu_agent(&mut self) {
        kill(self.dpu_agent.take());
    }

    pub fn kill_host_agent(&mut self) {
        kill(self.host_agent.take());
    }

    /// SIGHUP: the dpu-agent rereads its config.
    pub fn reload_dpu_agent(&self) -> anyhow::Result<()> {
        let pid = self
            .dpu_agent
            .as_ref()
            .map(|c| c.id())
            .ok_or_else(|| anyhow::anyhow!("dpu-agent not running"))?;
        netns::run(&["kill", "-HUP", &pid.to_string()])?;
        Ok(())
    }

    pub fn agent_logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
        format!(
            "--- dpu-agent.log ---\n{}\n--- host-agent.log ---\n{}",
            read("dpu-agent.log"),
            read("host-agent.log")
        )
    }

    /// GetStatus of the dpu-agent, asked from the host over mTLS as an
    /// operator would.
    pub fn dpu_status(&self) -> anyhow::Result<noverlay_proto::pb::AgentStatus> {
        use noverlay_proto::{
            pb,
            tls::{self, PeerIdentity},
        };
        let tls_files = self.certs.host.clone();
        self.host.run(move || async move {
            let mut client = host_agent::client::connect(
                &Testbed::dpu_address().to_string(),
                &PeerIdentity::parse(harness::DPU_SAN)?,
                tls::client_config(&tls_files)?,
            )
            .await?;
            Ok(client
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner())
        })
    }

    /// The dpu-agent's "ovn" source: (state, error).
    pub fn dpu_ovn_source(&self) -> anyhow::Result<(String, String)> {
        let status = self.dpu_status()?;
        status
            .sources
            .into_iter()
            .find(|s| s.source == "ovn")
            .map(|s| (s.state, s.error))
            .ok_or_else(|| anyhow::anyhow!("no \"ovn\" source in GetStatus"))
    }

    /// Polls the dpu-agent's "ovn" source until `wanted(state, error)`
    /// holds, for at most `timeout`; returns how long it took and the error
    /// text.
    pub fn ovn_source_until(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> anyhow::Result<(Duration, String)> {
        let started = std::time::Instant::now();
        loop {
            let (state, error) = self.dpu_ovn_source()?;
            if wanted(&state, &error) {
                return Ok((started.elapsed(), error));
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{what}: the ovn source stayed {state} {error:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pings `dst` from the host `count` times every `interval` seconds
    /// while `during` runs; returns how many got no reply.
    pub fn pings_lost_during(
        &self,
        dst: &str,
        count: u32,
        interval: &str,
        during: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<u32> {
        let flood = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host.name,
                "ping",
                "-q",
                "-i",
                interval,
            ])
            .args(["-W", "1", "-c", &count.to_string(), dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        during()?;
        let output = flood.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let received = text
            .split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| anyhow::anyhow!("no ping summary in {text:?}"))?;
        Ok(count.saturating_sub(received))
    }

    /// The host's node IP of `dst`'s family.
    pub fn node_ip_for(dst: &str) -> &'static str {
        if dst.contains(':') { NODE_IP6 } else { NODE_IP }
    }

    /// One ping from the host to `dst`.
    pub fn ping(&self, dst: &str) -> bool {
        self.host
            .sh_unchecked(&format!("ping -c 1 -W 1 {dst}"))
            .is_ok_and(|o| o.status.success())
    }

    /// Polls until a ping from an unbound socket and one bound to the node
    /// IP (which needs the host's nft SNAT) both get replies; returns how
    /// long it took.
    pub fn wait_for_ping(&self, dst: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let ok = |source: &str| {
            self.host
                .sh_unchecked(&format!("ping {source} -c 1 -W 0.2 {dst}"))
                .is_ok_and(|o| o.status.success())
        };
        let node_ip = Self::node_ip_for(dst);
        eventually_blocking(&format!("a ping reply from {dst}"), timeout, || {
            ok("") && ok(&format!("-I {node_ip}"))
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.agent_logs()))
    }

    /// A TCP exchange from the host to `dst`: returns the source address the
    /// remote pod saw (it echoes it back).
    pub fn tcp_exchange(&self, dst: &str) -> anyhow::Result<String> {
        self.tcp_exchange_within(dst, Duration::from_secs(2))
    }

    /// As [`Testbed::tcp_exchange`], giving up after `timeout` (connect and
    /// reply each).
    pub fn tcp_exchange_within(&self, dst: &str, timeout: Duration) -> anyhow::Result<String> {
        let target = SocketAddr::new(dst.parse()?, TCP_PORT);
        self.host.run(move || async move {
            let mut stream = TcpStream::connect_timeout(&target, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.write_all(b"hello from the host\n")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        })
    }

    /// A TCP server on every remote pod address that answers with the
    /// peer address it sees.
    fn start_tcp_server(&self) -> anyhow::Result<()> {
        serve_peer_address(&self.underlay, None, self.tcp_stop.clone())
    }

    /// Our flows on breth0 without their counters, sorted: what changes
    /// only when the agent rewrites them.
    pub fn our_flows(&self) -> anyhow::Result<Vec<String>> {
        self.ovs
            .flows_of("breth0", dpu_agent::config::DEFAULT_COOKIE)
    }

    /// Packets counted by our path flows on breth0 (priority 510, after a
    /// lookup found a cluster address).
    pub fn path_flow_packets(&self) -> anyhow::Result<u64> {
        let dump = self
            .ovs
            .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?;
        Ok(dump
            .lines()
            .filter(|l| l.contains("priority=510") && l.contains("reg11=0x2"))
            .filter_map(crate::ovs::n_packets)
            .sum())
    }
}

/// A TCP server on every address of `ns` (both families) that answers
/// each connection with the peer address it sees, after `name` and a space
/// when given (which remote node answered), until `stop`.
pub fn serve_peer_address(
    ns: &NetNs,
    name: Option<&'static str>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{}", ns.name);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let serve = || -> anyhow::Result<()> {
            let file = std::fs::File::open(&path)?;
            // SAFETY: valid fd; affects only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            anyhow::ensure!(rc == 0, "setns failed");
            // Both families (IPv4 peers arrive as mapped addresses).
            let listener = TcpListener::bind(("::", TCP_PORT))?;
            listener.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut line = [0u8; 64];
                        let _ = stream.read(&mut line);
                        let seen = peer.ip().to_canonical().to_string();
                        let reply = match name {
                            Some(name) => format!("{name} {seen}"),
                            None => seen,
                        };
                        let _ = stream.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            Ok(())
        };
        if let Err(e) = serve() {
            eprintln!("tcp server: {e}");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("TCP server in {} did not start", ns.name))
}

/// tcpdump on one interface of a namespace, until [`Capture::stop`] (or
/// Drop, which stops it on a test's early return).
pub struct Capture {
    tcpdump: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// On the underlay's side of the uplink.
    pub fn start(bed: &Testbed, filter: &str) -> anyhow::Result<Self> {
        Self::on(&bed.underlay, "eth0", bed.dir(), filter)
    }

    /// On `interface` of `ns`, the capture file in `dir`.
    pub fn on(ns: &NetNs, interface: &str, dir: &Path, filter: &str) -> anyhow::Result<Self> {
        let file = dir.join(format!(
            "{interface}-{}.pcap",
            filter.replace([' ', '/', ':'], "_")
        ));
        let tcpdump = Command::new("ip")
            .args(["netns", "exec", &ns.name, "tcpdump", "-i", interface])
            // Immediate mode: a short capture must not sit in the ring buffer.
            .args(["-n", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Capture {
            tcpdump: Some(tcpdump),
            file,
        })
    }

    /// Stops the capture; what it saw, as `tcpdump -n -r` prints it.
    pub fn stop(mut self) -> anyhow::Result<String> {
        if let Some(mut tcpdump) = self.tcpdump.take() {
            // SIGINT: tcpdump flushes what it holds before it exits.
            netns::run(&["kill", "-INT", &tcpdump.id().to_string()])?;
            tcpdump.wait()?;
        }
        netns::run(&["tcpdump", "-n", "-r", &self.file.display().to_string()])
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        kill(self.tcpdump.take());
    }
}

fn kill(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.tcp_stop.store(true, Ordering::Relaxed);
        kill(self.host_agent.take());
        kill(self.dpu_agent.take());
    }
}
