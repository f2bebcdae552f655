//! The BGP testbed: the end-to-end testbed ([`crate::e2e`]) with the
//! cluster's routes learned by BGP instead of written into the gateway
//! router by hand, as in a no-overlay cluster whose fabric speaks BGP.
//!
//! ```text
//!  ns host ── DPU (breth0, OVN's GR_node1) ── p0 ─┐ ns underlay: switch `sw`
//!                                                  ├─ sw 198.18.0.20  FRR route reflector (AS 64512)
//!  ns dpu: oob0 198.18.0.11  FRR (learns into  ───┤
//!          the DPU's main table, proto bgp)       ├─ ns node2 198.18.0.21  FRR, pods 198.18.201.0/24
//!          route import stand-in ──► OVN NB        └─ ns node3 198.18.0.22  FRR, pods 198.18.202.0/24
//! ```
//!
//! The remote nodes advertise their pod subnets (both families) to the route
//! reflector, which reflects every path (add-path) to the DPU's speaker; it
//! installs them, ECMP included, into the DPU's kernel. The route import
//! stand-in ([`crate::route_import`], ovnkube-controller's job) turns them
//! into the gateway router's static routes. The host never speaks BGP: its
//! routes are the contract's.
//!
//! The DPU's own speaker reaches the gateway network through a port of its
//! own (`oob0`, the DPU's address 198.18.0.11) rather than breth0's LOCAL
//! port: the bridge's flows here are ours and OVN's, and a DPU's control
//! plane on a separate port is a deployment of its own. The gateway router
//! knows the remote nodes' MACs by static bindings, as the base testbed
//! knows the remote node's (breth0 carries the bridge MAC for both the host
//! and OVN, so learned replies would be ambiguous).

use crate::{
    e2e::{self, BRIDGE_MAC, CLUSTER_CIDR, CLUSTER_CIDR6, LATE_CIDR, NODE_IP, NODE_IP6, Testbed},
    frr::{AS, Frr},
    netns::NetNs,
    ovn,
    route_import::{self, RouteImport, Target},
};
use std::{
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The route reflector, on the underlay's switch (the base testbed's
/// remote node address).
pub const REFLECTOR_IP: &str = e2e::REMOTE_NODE_IP;
pub const REFLECTOR_IP6: &str = e2e::REMOTE_NODE_IP6;
/// The DPU's own address on the gateway network (its BGP session's).
pub const DPU_OWN_IP: &str = "198.18.0.11";
pub const DPU_OWN_IP6: &str = "2001:db8::11";

/// A remote node: a BGP speaker with pods behind it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteNode {
    pub name: &'static str,
    pub ip: &'static str,
    pub ip6: &'static str,
    pub mac: &'static str,
    /// Its pod subnets (IPv4, IPv6), inside the cluster CIDRs.
    pub subnets: [&'static str; 2],
    /// A pod in each.
    pub pods: [&'static str; 2],
}

pub const NODE2: RemoteNode = RemoteNode {
    name: "node2",
    ip: "198.18.0.21",
    ip6: "2001:db8::21",
    mac: "02:00:c6:12:00:15",
    subnets: ["198.18.201.0/24", "fd00:10:244:21::/64"],
    pods: ["198.18.201.1", "fd00:10:244:21::1"],
};

pub const NODE3: RemoteNode = RemoteNode {
    name: "node3",
    ip: "198.18.0.22",
    ip6: "2001:db8::22",
    mac: "02:00:c6:12:00:16",
    subnets: ["198.18.202.0/24", "fd00:10:244:22::/64"],
    pods: ["198.18.202.1", "fd00:10:244:22::1"],
};

pub const NODES: [RemoteNode; 2] = [NODE2, NODE3];

/// A subnet both remote nodes serve (an anycast pod on each): ECMP.
pub const SHARED_SUBNETS: [&str; 2] = ["198.18.203.0/24", "fd00:10:244:23::/64"];
pub const SHARED_PODS: [&str; 2] = ["198.18.203.1", "fd00:10:244:23::1"];

pub struct BgpTestbed {
    /// Dropped first: the route import, then the speakers, then the nodes'
    /// namespaces, then the base testbed.
    import: Option<RouteImport>,
    speakers: Vec<Frr>,
    nodes: Vec<NetNs>,
    tcp_stop: Arc<AtomicBool>,
    pub bed: Testbed,
}

impl BgpTestbed {
    /// For tests: builds the agent binaries if needed, then the testbed.
    pub fn build_for_test() -> anyhow::Result<Self> {
        crate::frr::require()?;
        Self::around(Testbed::build_for_test()?)
    }

    /// Around already built binaries (the demo).
    pub fn build() -> anyhow::Result<Self> {
        crate::frr::require()?;
        Self::around(Testbed::build()?)
    }

    /// The underlay becomes a switch with the reflector on it, the remote
    /// nodes and the DPU's own port join it, and the gateway router loses
    /// its hand-written cluster routes: from here on, BGP decides.
    fn around(bed: Testbed) -> anyhow::Result<Self> {
        let remote_mac = bed.underlay.sh("cat /sys/class/net/eth0/address")?;
        bed.underlay.sh(&format!(
            "set -e
            ip link add sw type bridge
            ip link set sw address {mac}
            ip link set eth0 master sw
            ip addr del {REFLECTOR_IP}/24 dev eth0
            ip -6 addr del {REFLECTOR_IP6}/64 dev eth0
            ip link set sw up
            ip addr add {REFLECTOR_IP}/24 dev sw
            ip -6 addr add {REFLECTOR_IP6}/64 dev sw nodad
            ip link add dpu0 type veth peer name oob0 netns {dpu}
            ip link set dpu0 master sw up",
            mac = remote_mac.trim(),
            dpu = bed.dpu.name,
        ))?;
        bed.dpu.sh(&format!(
            "set -e
            ip addr add {DPU_OWN_IP}/24 dev oob0
            ip -6 addr add {DPU_OWN_IP6}/64 dev oob0 nodad
            ip link set oob0 up"
        ))?;
        // From here on, Drop undoes a setup that fails part-way.
        let mut testbed = BgpTestbed {
            import: None,
            speakers: Vec::new(),
            nodes: Vec::new(),
            tcp_stop: Arc::new(AtomicBool::new(false)),
            bed,
        };
        for node in NODES {
            let ns = NetNs::new(node.name)?;
            testbed.bed.underlay.sh(&format!(
                "set -e
                ip link add {name} type veth peer name eth0 netns {ns}
                ip link set {name} master sw up",
                name = node.name,
                ns = ns.name
            ))?;
            testbed.nodes.push(ns);
            let ns = testbed
                .nodes
                .last()
                .ok_or_else(|| anyhow::anyhow!("no node"))?;
            ns.sh(&format!(
                "set -e
                ip link set eth0 address {mac}
                ip addr add {ip}/24 dev eth0
                ip -6 addr add {ip6}/64 dev eth0 nodad
                ip link set eth0 up
                ethtool -K eth0 tx off >/dev/null
                ip neigh replace {NODE_IP} lladdr {BRIDGE_MAC} dev eth0 nud permanent
                ip -6 neigh replace {NODE_IP6} lladdr {BRIDGE_MAC} dev eth0 nud permanent",
                mac = node.mac,
                ip = node.ip,
                ip6 = node.ip6,
            ))?;
            for pod in node.pods.iter().chain(&SHARED_PODS) {
                add_pod(ns, pod)?;
            }
            e2e::serve_peer_address(ns, Some(node.name), testbed.tcp_stop.clone())?;
        }
        let ovn = &testbed.bed.ovn;
        for prefix in [CLUSTER_CIDR, LATE_CIDR, CLUSTER_CIDR6] {
            ovn.nbctl(&["lr-route-del", ovn::GATEWAY_ROUTER, prefix])?;
        }
        for node in NODES {
            for ip in [node.ip, node.ip6] {
                ovn.nbctl(&["static-mac-binding-add", ovn::EXTERNAL_PORT, ip, node.mac])?;
            }
        }
        Ok(testbed)
    }

    /// Starts the route reflector, the remote nodes' speakers (each
    /// advertising its own pod subnets), the DPU's speaker and the route
    /// import; waits until every session is up.
    pub fn start_bgp(&mut self) -> anyhow::Result<()> {
        let reflector = Frr::start(&self.bed.underlay, "reflector", &reflector_conf())?;
        self.speakers.push(reflector);
        for (node, ns) in NODES.iter().zip(&self.nodes) {
            let speaker = Frr::start(ns, node.name, &node_conf(node))?;
            self.speakers.push(speaker);
        }
        let dpu = Frr::start(&self.bed.dpu, "dpu", &dpu_conf())?;
        self.speakers.push(dpu);
        self.import = Some(RouteImport::start(
            &self.bed.dpu,
            Target {
                nb_socket: self.bed.ovn.nb_socket(),
                router: ovn::GATEWAY_ROUTER.into(),
                output_port: ovn::EXTERNAL_PORT.into(),
                cluster_cidrs: vec![CLUSTER_CIDR.parse()?, CLUSTER_CIDR6.parse()?],
            },
        )?);
        // Two sessions (one per family) for each node and the DPU.
        let wanted = 2 * (NODES.len() + 1);
        noverlay_test_support::eventually_blocking(
            "every BGP session up",
            Duration::from_secs(30),
            || self.reflector().established().is_ok_and(|n| n == wanted),
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.frr_logs()))?;
        Ok(())
    }

    fn reflector(&self) -> &Frr {
        &self.speakers[0]
    }

    /// The speaker of a remote node.
    pub fn speaker(&self, node: &RemoteNode) -> anyhow::Result<&Frr> {
        self.speakers
            .iter()
            .find(|s| s.name == node.name)
            .ok_or_else(|| anyhow::anyhow!("{} has no speaker (start_bgp first)", node.name))
    }

    /// The remote node's namespace.
    pub fn node_ns(&self, node: &RemoteNode) -> anyhow::Result<&NetNs> {
        NODES
            .iter()
            .position(|n| n.name == node.name)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| anyhow::anyhow!("no remote node {}", node.name))
    }

    /// Moves a pod address from one node to another (the pods moved).
    pub fn move_pod(&self, pod: &str, from: &RemoteNode, to: &RemoteNode) -> anyhow::Result<()> {
        self.node_ns(from)?
            .sh(&format!("ip addr del {} dev lo", host_prefix(pod)))?;
        add_pod(self.node_ns(to)?, pod)
    }

    /// Waits until every ovn-controller has applied the northbound database
    /// as it is now (`ovn-nbctl --wait=hv sync`): the flows follow the rows.
    pub fn wait_for_ovn(&self) -> anyhow::Result<()> {
        self.bed.ovn.nbctl(&["--wait=hv", "sync"])?;
        Ok(())
    }

    /// The DPU datapath's cached flows (`ovs-appctl dpctl/dump-flows`).
    pub fn datapath_flows(&self) -> anyhow::Result<String> {
        self.bed.ovs.appctl(&["dpctl/dump-flows"])
    }

    /// The gateway router's rows that route import owns.
    pub fn imported(&self) -> anyhow::Result<route_import::Routes> {
        Ok(route_import::imported_rows(&self.bed.ovn.nb_socket())?
            .into_iter()
            .map(|(_, route)| route)
            .collect())
    }

    /// The DPU kernel's BGP routes, one entry per next hop.
    pub fn dpu_bgp_routes(&self) -> anyhow::Result<route_import::Routes> {
        route_import::kernel_bgp_routes(&self.bed.dpu.name)
    }

    /// Which remote node answered a TCP exchange to `pod`, and the source
    /// it saw; None when nothing answered within 300 ms.
    pub fn answered_by(&self, pod: &str) -> Option<(String, String)> {
        let reply = self
            .bed
            .tcp_exchange_within(pod, Duration::from_millis(300))
            .ok()?;
        let (node, seen) = reply.split_once(' ')?;
        Some((node.to_string(), seen.to_string()))
    }

    /// Waits until `node` answers for `pod` and sees the node underlay IP;
    /// how long that took.
    pub fn until_answered(
        &self,
        pod: &str,
        node: &RemoteNode,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let node_ip = Testbed::node_ip_for(pod);
        let wanted = Some((node.name.to_string(), node_ip.to_string()));
        noverlay_test_support::eventually_blocking(
            &format!("{} to answer for {pod} (source {node_ip})", node.name),
            timeout,
            || self.answered_by(pod) == wanted,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nimport: {:?}\n{}",
                self.import_error(),
                self.bed.agent_logs()
            )
        })
    }

    /// The last failure of the route import, if its last sync failed.
    pub fn import_error(&self) -> Option<String> {
        self.import.as_ref().and_then(|import| {
            import
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    pub fn frr_logs(&self) -> String {
        self.speakers
            .iter()
            .map(Frr::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for BgpTestbed {
    fn drop(&mut self) {
        self.tcp_stop.store(true, Ordering::Relaxed);
    }
}

/// A pod's address as a host prefix (/32 or /128).
fn host_prefix(pod: &str) -> String {
    let bits = if pod.contains(':') { 128 } else { 32 };
    format!("{pod}/{bits}")
}

fn add_pod(ns: &NetNs, pod: &str) -> anyhow::Result<()> {
    let nodad = if pod.contains(':') { " nodad" } else { "" };
    ns.sh(&format!("ip addr add {} dev lo{nodad}", host_prefix(pod)))?;
    Ok(())
}

/// Fast timers: a test waits seconds, not minutes, for a session.
const TIMERS: &str = " timers bgp 3 9\n";

/// The route reflector: every node of the gateway network is a client
/// (one session per family), and every path is reflected (add-path), so
/// that a prefix two nodes advertise reaches the DPU as two paths.
fn reflector_conf() -> String {
    let mut conf = format!(
        "router bgp {AS}\n bgp router-id {REFLECTOR_IP}\n no bgp default ipv4-unicast\n{TIMERS}"
    );
    for (group, range) in [("v4", "198.18.0.0/24"), ("v6", "2001:db8::/64")] {
        conf.push_str(&format!(
            " neighbor {group} peer-group\n neighbor {group} remote-as {AS}\n neighbor {group} timers connect 1\n bgp listen range {range} peer-group {group}\n"
        ));
    }
    for (family, group) in [("ipv4", "v4"), ("ipv6", "v6")] {
        conf.push_str(&format!(
            " address-family {family} unicast\n  neighbor {group} activate\n  neighbor {group} route-reflector-client\n  neighbor {group} addpath-tx-all-paths\n exit-address-family\n"
        ));
    }
    conf
}

/// A session per family to the reflector.
fn client_sessions(router_id: &str, per_family: [&str; 2]) -> String {
    let mut conf = format!(
        "router bgp {AS}\n bgp router-id {router_id}\n no bgp default ipv4-unicast\n no bgp network import-check\n{TIMERS}"
    );
    for peer in [REFLECTOR_IP, REFLECTOR_IP6] {
        conf.push_str(&format!(
            " neighbor {peer} remote-as {AS}\n neighbor {peer} timers connect 1\n"
        ));
    }
    for ((family, peer), extra) in [("ipv4", REFLECTOR_IP), ("ipv6", REFLECTOR_IP6)]
        .into_iter()
        .zip(per_family)
    {
        conf.push_str(&format!(
            " address-family {family} unicast\n  neighbor {peer} activate\n{extra} exit-address-family\n"
        ));
    }
    conf
}

/// A remote node advertises its own pod subnets; the next hop is itself.
fn node_conf(node: &RemoteNode) -> String {
    client_sessions(
        node.ip,
        [
            &format!("  network {}\n", node.subnets[0]),
            &format!("  network {}\n", node.subnets[1]),
        ],
    )
}

/// The DPU learns: up to 4 equal paths installed (ECMP), the IPv6 next hop
/// the global address (the route import takes gateways as they are).
fn dpu_conf() -> String {
    let learn = "  maximum-paths ibgp 4\n";
    format!(
        "route-map prefer-global permit 10\n set ipv6 next-hop prefer-global\nexit\n{}",
        client_sessions(
            DPU_OWN_IP,
            [
                learn,
                &format!("{learn}  neighbor {REFLECTOR_IP6} route-map prefer-global in\n"),
            ],
        )
    )
}

/// Every route the host holds, in every table, both families, as `ip`
/// prints them, sorted.
pub fn host_routes(bed: &Testbed) -> anyhow::Result<Vec<String>> {
    let mut routes: Vec<String> = ["-4", "-6"]
        .into_iter()
        .map(|family| bed.host.sh(&format!("ip {family} route show table all")))
        .collect::<anyhow::Result<Vec<_>>>()?
        .iter()
        .flat_map(|listing| listing.lines().map(|l| l.trim_end().to_string()))
        .filter(|l| !l.is_empty())
        .collect();
    routes.sort();
    Ok(routes)
}

/// `ip monitor route` on the host: every route event from now until
/// [`RouteEvents::stop`].
pub struct RouteEvents {
    monitor: Option<Child>,
}

impl RouteEvents {
    pub fn start(ns: &NetNs) -> anyhow::Result<Self> {
        let monitor = crate::netns::route_monitor(ns)?;
        Ok(RouteEvents {
            monitor: Some(monitor),
        })
    }

    /// The events seen, one line each.
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let Some(mut monitor) = self.monitor.take() else {
            return Ok(Vec::new());
        };
        let _ = monitor.kill();
        let output = monitor.wait_with_output()?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for RouteEvents {
    fn drop(&mut self) {
        if let Some(mut monitor) = self.monitor.take() {
            let _ = monitor.kill();
            let _ = monitor.wait();
        }
    }
}

/// CPU time (user + system) and resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The fields after the command's ")": state is the 3rd, utime the
        // 14th and stime the 15th of the whole line.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            Ok(fields
                .get(i)
                .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
                .parse()?)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        let cpu = Duration::from_millis((ticks(11)? + ticks(12)?) * 1000 / hz.max(1));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
        Ok(Usage { cpu, rss_kib })
    }
}
