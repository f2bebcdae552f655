//! host-agent against the real kernel, inside network namespaces these tests
//! create and delete: routes, neighbour, address, nftables SNAT, mp0
//! cleanup, repair after drift, teardown. Needs root; skips otherwise.

use host_agent::{
    agent::{HostAgent, HostStatus},
    config::{HostConfig, Mp0Routes},
    dataplane::{Dataplane, kernel::Kernel},
    plan::{self, HostPlan, HostSettings},
};
use ipnet::IpNet;
use noverlay_proto::contract::{Contract, FamilyContract, Masquerade, Mode};
use noverlay_tests::{
    harness::{self, Certs, HOST_SAN, HostOptions},
    mock_dpu::MockDpu,
    netns::{self, NetNs},
    ovnkube::RouteManager,
};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A host namespace (eth0 towards the DPU, a stand-in ovn-k8s-mp0 with its
/// node subnet and broad cluster routes, a foreign route and nft table) and
/// a DPU namespace that counts what arrives on the other end of eth0.
struct Topology {
    host: NetNs,
    dpu: NetNs,
}

fn topology() -> anyhow::Result<Topology> {
    let host = NetNs::new("host")?;
    let dpu = NetNs::new("dpu")?;
    host.sh(&format!(
        "set -e
        ip link add eth0 type veth peer name p0 netns {dpu}
        ip addr add 198.18.0.10/24 dev eth0
        ip -6 addr add 2001:db8:1::10/64 dev eth0 nodad
        ip link set eth0 up
        ip link add ovn-k8s-mp0 type veth peer name mp0-peer
        ip link set ovn-k8s-mp0 up
        ip link set mp0-peer up
        ip addr add 198.18.130.2/24 dev ovn-k8s-mp0
        ip route add 198.18.128.0/17 dev ovn-k8s-mp0
        ip route add 198.16.0.0/14 dev ovn-k8s-mp0 metric 50
        ip -6 route add fd00:10::/32 dev ovn-k8s-mp0
        ip route add 203.0.113.0/24 via 198.18.0.1 dev eth0 proto static
        nft add table inet foreign
        nft add chain inet foreign keep '{{ type filter hook output priority 0; }}'",
        dpu = dpu.name
    ))?;
    dpu.sh("set -e
        ip link set p0 up
        nft add table netdev seen
        nft add chain netdev seen p0 '{ type filter hook ingress device p0 priority 0; }'
        nft add rule netdev seen p0 ip saddr 169.254.0.2 ip daddr 198.18.200.1 counter
        nft add rule netdev seen p0 ip saddr 198.18.0.10 ip daddr 198.18.200.1 counter
        nft add rule netdev seen p0 ip saddr 198.18.0.10 ip daddr 203.0.113.1 counter
        nft add rule netdev seen p0 ip6 saddr fd69::2 ip6 daddr fd00:10:244::1 counter")?;
    Ok(Topology { host, dpu })
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test literal")
}

fn contract() -> Contract {
    let families = vec![
        FamilyContract {
            masquerade: Masquerade::from_subnet(net("169.254.0.0/17")).expect("masq"),
            cluster_cidrs: vec![net("198.18.128.0/17")],
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        },
        FamilyContract {
            masquerade: Masquerade::from_subnet(net("fd69::/112")).expect("masq"),
            cluster_cidrs: vec![net("fd00:10:244::/48")],
            underlay_ip: "2001:db8:1::10".parse().expect("ip"),
        },
    ];
    Contract::new(1, Mode::IN_SCOPE, families, 1400, "eth0".into()).expect("contract")
}

/// Where nothing manages mp0's routes: ours replace the broad ones.
fn settings() -> HostSettings {
    HostSettings {
        gateway_interface: "eth0".into(),
        mp0_interface: "ovn-k8s-mp0".into(),
        mp0_routes: Mp0Routes::Remove,
        route_protocol: 240,
        nft_table: "noverlay".into(),
    }
}

fn masquerades() -> Vec<Masquerade> {
    contract().families.iter().map(|f| f.masquerade).collect()
}

fn host_plan() -> HostPlan {
    plan::plan(&contract(), &settings())
}

/// Packets counted by the DPU-side rule containing `needle`.
fn seen(dpu: &NetNs, needle: &str) -> anyhow::Result<u64> {
    let listing = dpu.sh("nft list chain netdev seen p0")?;
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .ok_or_else(|| anyhow::anyhow!("no rule with {needle:?} in {listing}"))?;
    let packets = line
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no counter in {line:?}"))?;
    Ok(packets)
}

#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn apply_programs_the_host_and_traffic_leaves_with_the_masquerade_source() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let plan = host_plan();
    let (first, second) = topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        let first = kernel.apply(&plan).await?;
        let second = kernel.apply(&plan).await?;
        Ok((first, second))
    })?;
    assert!(
        first.changes >= 6,
        "first apply made {} changes",
        first.changes
    );
    assert_eq!(second.changes, 0, "a second apply must change nothing");
    assert!(
        first
            .routes
            .contains(&"198.18.128.0/17 via 169.254.0.4 dev eth0 proto 240 mtu 1400".to_string()),
        "{:?}",
        first.routes
    );

    let host = &topo.host;
    let route = host.sh("ip route show 198.18.128.0/17")?;
    assert!(
        route.contains("198.18.128.0/17 via 169.254.0.4 dev eth0 proto 240")
            && route.contains("mtu 1400")
            && !route.contains("src"),
        "{route}"
    );
    let route6 = host.sh("ip -6 route show fd00:10:244::/48")?;
    assert!(
        route6.contains("via fd69::4 dev eth0 proto 240") && route6.contains("mtu 1400"),
        "{route6}"
    );
    let neighbour = host.sh("ip neigh show dev eth0")?;
    assert!(
        neighbour.contains("169.254.0.4 lladdr 0a:58:a9:fe:00:04 PERMANENT"),
        "{neighbour}"
    );
    assert!(
        neighbour.contains("fd69::4 lladdr 0a:58:00:00:00:04 PERMANENT"),
        "{neighbour}"
    );
    let addresses = host.sh("ip addr show dev eth0")?;
    assert!(
        addresses.contains("169.254.0.2/17") && addresses.contains("fd69::2/112"),
        "{addresses}"
    );

    let table = host.sh("nft list table inet noverlay")?;
    for line in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "oifname != \"eth0\" return",
        "elements = { 198.18.128.0/17 }",
        "elements = { fd00:10:244::/48 }",
        "ip daddr @cluster_cidrs_v4 ip saddr != 169.254.0.2 counter packets 0 bytes 0 snat ip to 169.254.0.2",
        "ip6 daddr @cluster_cidrs_v6 ip6 saddr != fd69::2 counter packets 0 bytes 0 snat ip6 to fd69::2",
    ] {
        assert!(table.contains(line), "missing {line:?} in\n{table}");
    }

    // mp0: broad cluster routes gone, the node subnet route kept.
    let mp0 = host.sh("ip route show dev ovn-k8s-mp0; ip -6 route show dev ovn-k8s-mp0")?;
    assert!(
        mp0.contains("198.18.130.0/24"),
        "node subnet route removed: {mp0}"
    );
    assert!(
        !mp0.contains("198.18.128.0/17") && !mp0.contains("198.16.0.0/14"),
        "{mp0}"
    );
    assert!(!mp0.contains("fd00:10::/32"), "{mp0}");
    // Foreign state untouched.
    assert!(
        host.sh("ip route show 203.0.113.0/24")?
            .contains("proto static")
    );
    assert!(host.sh("nft list tables")?.contains("table inet foreign"));

    // Traffic to a remote pod leaves eth0 with the masquerade IP as source.
    // The kernel already picks it for unbound sockets (it is the address on
    // the next hop's subnet); a socket bound to the node IP needs the nft
    // SNAT, so that is what is sent here.
    let _ = host.sh_unchecked("ping -I 198.18.0.10 -c 2 -i 0.2 -W 1 198.18.200.1")?;
    let _ = host.sh_unchecked("ping -6 -I 2001:db8:1::10 -c 2 -i 0.2 -W 1 fd00:10:244::1")?;
    assert!(
        seen(&topo.dpu, "ip saddr 169.254.0.2")? >= 2,
        "no SNATed IPv4 packets on the DPU side"
    );
    assert_eq!(
        seen(&topo.dpu, "ip saddr 198.18.0.10")?,
        0,
        "un-SNATed packets leaked"
    );
    assert!(
        seen(&topo.dpu, "ip6 saddr fd69::2")? >= 2,
        "no SNATed IPv6 packets on the DPU side"
    );
    // Traffic to anything outside the cluster CIDRs keeps its source (the
    // static route's next hop gets a neighbour so that packets leave).
    host.sh("ip neigh replace 198.18.0.1 lladdr 02:00:00:00:00:01 dev eth0")?;
    let _ = host.sh_unchecked("ping -I 198.18.0.10 -c 2 -i 0.2 -W 1 203.0.113.1")?;
    assert!(
        seen(&topo.dpu, "ip saddr 198.18.0.10 ip daddr 203.0.113.1")? >= 2,
        "traffic outside the cluster CIDRs was SNATed or lost"
    );

    // What the host reports is read back from the kernel: the chain with
    // its hook and the rules with the kernel's own counters.
    let plan = host_plan();
    let report = topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        kernel.apply(&plan).await?;
        // In the host namespace (this thread's): through our SNAT rule.
        std::process::Command::new("ping")
            .args([
                "-I",
                "198.18.0.10",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "198.18.200.1",
            ])
            .output()?;
        Ok(kernel.nft_table(&plan.nft.table).await?)
    })?;
    // nft's own listing and ours, decoded from the kernel's rules, agree (a
    // nat chain sees the first packet of each connection: the ping counts 1
    // on the IPv4 rule).
    let listed = topo.host.sh("nft list table inet noverlay")?;
    let squash = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squash(&report), squash(&listed));
    assert!(
        report.contains("counter packets 1 bytes 84 snat ip to 169.254.0.2"),
        "the reported counter is not the kernel's:\n{report}"
    );
    Ok(())
}

#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn teardown_removes_exactly_what_is_ours() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let plan = host_plan();
    topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        kernel.apply(&plan).await?;
        kernel.teardown(&settings()).await?;
        // Twice: teardown of nothing is fine.
        kernel.teardown(&settings()).await?;
        Ok(())
    })?;
    let host = &topo.host;
    let routes = host.sh("ip route show; ip -6 route show")?;
    assert!(!routes.contains("proto 240"), "{routes}");
    assert!(!host.sh("ip neigh show dev eth0")?.contains("PERMANENT"));
    let addresses = host.sh("ip addr show dev eth0")?;
    assert!(
        !addresses.contains("169.254.0.2") && !addresses.contains("fd69::2"),
        "{addresses}"
    );
    let tables = host.sh("nft list tables")?;
    assert!(
        !tables.contains("noverlay") && tables.contains("table inet foreign"),
        "{tables}"
    );
    assert!(
        host.sh("ip route show 203.0.113.0/24")?
            .contains("proto static")
    );
    assert!(host.sh("ip addr show dev eth0")?.contains("198.18.0.10/24"));
    assert!(
        host.sh("ip route show dev ovn-k8s-mp0")?
            .contains("198.18.130.0/24")
    );
    Ok(())
}

#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn restart_adopts_existing_state_without_touching_routes() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let plan = host_plan();
    let adopted = topo.host.run(move || async move {
        let mut first = Kernel::open(masquerades())?;
        first.apply(&plan).await?;
        drop(first);
        // A new agent process would start from scratch like this.
        let mut second = Kernel::open(masquerades())?;
        Ok(second.apply(&plan).await?)
    })?;
    // Only the nft table is replaced (atomically) on adoption: it cannot be
    // read back through nftnl, so it is rewritten rather than trusted.
    assert_eq!(
        adopted.changes, 1,
        "routes, neighbour or address were re-created"
    );
    Ok(())
}

/// The real host-agent (kernel dataplane) against a mock DPU serving
/// [`contract`], started in the current (host) namespace.
struct AgentOnKernel {
    dpu: MockDpu,
    status: tokio::sync::watch::Receiver<HostStatus>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), host_agent::dataplane::DataplaneError>>,
    _certs: Certs,
}

impl AgentOnKernel {
    async fn start() -> anyhow::Result<Self> {
        let certs = Certs::new()?;
        let dpu = MockDpu::start(&certs.dpu, HOST_SAN, Ok(contract().to_pb())).await?;
        let options = HostOptions {
            ipv6: true,
            ..HostOptions::new(dpu.addr)
        };
        let path = certs.dir.path().join("host-agent.toml");
        std::fs::write(&path, harness::host_config_toml(&options, &certs.host))?;
        let config = HostConfig::load(&path)?;
        let agent = HostAgent::new(config.clone(), Kernel::open(config.masquerades.clone())?)?;
        let status = agent.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(shutdown.clone()));
        Ok(AgentOnKernel {
            dpu,
            status,
            shutdown,
            task,
            _certs: certs,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Runs the real host-agent (kernel dataplane) against a mock DPU inside the
/// host namespace, breaks things from outside and measures the repair.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn agent_repairs_route_deletion_ruleset_flush_and_link_flap() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let host_ns = topo.host.name.clone();
    let timings = topo.host.run(move || async move {
        let mut agent = AgentOnKernel::start().await?;
        let report = agent.dpu.next_report().await?;
        anyhow::ensure!(report.applied, "initial apply failed: {}", report.error);

        let mut timings = Vec::new();
        for (fault, script) in [
            ("route deleted", "ip route del 198.18.128.0/18"),
            ("ruleset flushed", "nft flush ruleset"),
            ("link down/up", "ip link set eth0 down; ip link set eth0 up"),
            ("neighbour deleted", "ip neigh del 169.254.0.4 dev eth0"),
            (
                "a CIDR deleted from our SNAT set",
                "nft delete element inet noverlay cluster_cidrs_v4 '{ 198.18.128.0/17 }'",
            ),
            // Routes that drop, written over ours by another writer.
            (
                "a blackhole route on our key",
                "ip route replace blackhole 198.18.128.0/18",
            ),
            (
                "an unreachable route on our key",
                "ip route replace unreachable 198.18.192.0/18",
            ),
            (
                "a prohibit route on our IPv6 key",
                "ip -6 route replace prohibit fd00:10:244::/49",
            ),
            // A lookup passes a throw route by ("no route"): the put that
            // fails on it is retried at once, and the retry lists.
            (
                "a throw route on our key",
                "ip route replace throw 198.18.128.0/18",
            ),
        ] {
            let before = agent.status.borrow().repairs;
            let started = Instant::now();
            let output = std::process::Command::new("ip")
                .args(["netns", "exec", &host_ns, "sh", "-c", script])
                .output()?;
            anyhow::ensure!(output.status.success(), "{script}: {output:?}");
            wait_repairs(&mut agent.status, before, fault).await?;
            timings.push((fault, started.elapsed()));
        }
        agent.stop().await?;
        Ok(timings)
    })?;
    for (fault, took) in &timings {
        println!("repair after {fault}: {took:?}");
    }
    // Everything is back (the CIDRs' halves: mp0's routes are kept).
    let host = &topo.host;
    let ours = host.sh("ip route show proto 240; ip -6 route show proto 240")?;
    for half in [
        "198.18.128.0/18 via 169.254.0.4 dev eth0",
        "198.18.192.0/18 via 169.254.0.4 dev eth0",
        "fd00:10:244::/49 via fd69::4 dev eth0",
        "fd00:10:244:8000::/49 via fd69::4 dev eth0",
    ] {
        assert!(ours.contains(half), "no {half:?} in {ours}");
    }
    assert!(
        host.sh("ip neigh show dev eth0")?
            .contains("169.254.0.4 lladdr 0a:58:a9:fe:00:04 PERMANENT")
    );
    let table = host.sh("nft list table inet noverlay")?;
    assert!(
        table.contains("snat ip to 169.254.0.2")
            && table.contains("elements = { 198.18.128.0/17 }"),
        "{table}"
    );
    // Stopping the agent left the state in place (hitless restart).
    let _ = host.sh_unchecked("ping -c 1 -W 1 198.18.200.1")?;
    assert!(seen(&topo.dpu, "ip saddr 169.254.0.2")? >= 1);
    Ok(())
}

async fn wait_repairs(
    status: &mut tokio::sync::watch::Receiver<HostStatus>,
    before: u64,
    fault: &str,
) -> anyhow::Result<()> {
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.repairs > before && s.last_error.is_none()),
    )
    .await
    .map(|r| r.map(|_| ()));
    match waited {
        Ok(Ok(())) => Ok(()),
        _ => anyhow::bail!("no repair after {fault}; status {:?}", *status.borrow()),
    }
}

/// The documented limit, 1024 cluster CIDRs, applies in one go: every route
/// and every SNAT rule is in place, and a second apply changes nothing.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn the_cidr_limit_applies_whole() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let cidrs: Vec<IpNet> = (0..noverlay_proto::contract::MAX_CLUSTER_CIDRS)
        .map(|i| net(&format!("100.{}.{}.0/24", 64 + i / 256, i % 256)))
        .collect();
    let contract = Contract::new(
        1,
        Mode::IN_SCOPE,
        vec![FamilyContract {
            masquerade: Masquerade::from_subnet(net("169.254.0.0/17")).expect("masq"),
            cluster_cidrs: cidrs,
            underlay_ip: "198.18.0.10".parse().expect("ip"),
        }],
        1400,
        "eth0".into(),
    )?;
    let plan = plan::plan(&contract, &settings());
    let (first, second) = topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        let first = kernel.apply(&plan).await?;
        let second = kernel.apply(&plan).await?;
        Ok((first, second))
    })?;
    assert_eq!(first.routes.len(), 1024);
    assert_eq!(second.changes, 0, "a second apply must change nothing");
    let routes = topo.host.sh("ip route show proto 240")?;
    assert_eq!(routes.lines().count(), 1024);
    // One rule; the set holds every CIDR (nft prints them comma-separated).
    let table = topo.host.sh("nft list table inet noverlay")?;
    assert_eq!(table.matches("snat ip to 169.254.0.2").count(), 1);
    let listed_cidrs = table.matches("/24").count();
    assert_eq!(listed_cidrs, 1024, "{table}");
    Ok(())
}

/// A contract that cannot be applied whole leaves the last good state:
/// revision 2 drops 198.18.128.0/17 and adds 203.0.113.0/24, one of whose
/// halves (what the agent routes) a static route of someone else's already
/// has. The apply fails, is reported, and revision 1's routes and SNAT
/// rules are back.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn a_failed_apply_leaves_the_last_good_state() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    topo.host
        .sh("ip route add 203.0.113.0/25 via 198.18.0.1 dev eth0 proto static")?;
    let report = topo.host.run(move || async move {
        let mut agent = AgentOnKernel::start().await?;
        let first = agent.dpu.next_report().await?;
        anyhow::ensure!(first.applied, "revision 1 failed: {}", first.error);
        let mut second = contract();
        second.revision = 2;
        second.families[0].cluster_cidrs = vec![net("203.0.113.0/24")];
        agent.dpu.contracts.send(second.to_pb())?;
        let report = agent.dpu.next_report().await?;
        agent.stop().await?;
        Ok(report)
    })?;
    assert!(!report.applied, "revision 2 cannot apply whole: {report:?}");
    assert!(report.error.contains("203.0.113.0/25"), "{}", report.error);
    let host = &topo.host;
    let ours = host.sh("ip route show proto 240")?;
    assert!(
        ours.contains("198.18.128.0/18 via 169.254.0.4 dev eth0")
            && ours.contains("198.18.192.0/18 via 169.254.0.4 dev eth0")
            && !ours.contains("203.0.113."),
        "revision 1's routes were not put back: {ours}"
    );
    let foreign = host.sh("ip route show 203.0.113.0/25; ip route show 203.0.113.0/24")?;
    assert_eq!(foreign.matches("proto static").count(), 2, "{foreign}");
    let table = host.sh("nft list table inet noverlay")?;
    assert!(
        table.contains("elements = { 198.18.128.0/17 }") && !table.contains("203.0.113.0/24"),
        "revision 1's SNAT rules were not put back:\n{table}"
    );
    Ok(())
}

/// An nft table with our name that someone else made is neither replaced
/// nor deleted, and with no SNAT table of ours no route of ours goes in.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn a_table_of_our_name_that_is_not_ours_is_left_alone() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    topo.host.sh("nft add table inet noverlay; \
         nft add chain inet noverlay input '{ type filter hook input priority 0; }'; \
         nft add rule inet noverlay input tcp dport 22 accept")?;
    let before = topo.host.sh("nft list table inet noverlay")?;
    let plan = host_plan();
    let (applied, torn_down) = topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        let applied = kernel
            .apply(&plan)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        let torn_down = kernel
            .teardown(&settings())
            .await
            .map_err(|e| e.to_string());
        Ok((applied, torn_down))
    })?;
    let error = applied.expect_err("replacing someone else's table");
    assert!(
        error.contains("replace nft table inet noverlay") && error.contains("not ours"),
        "{error}"
    );
    let error = torn_down.expect_err("deleting someone else's table");
    assert!(
        error.contains("delete nft table inet noverlay") && error.contains("not ours"),
        "{error}"
    );
    assert_eq!(topo.host.sh("nft list table inet noverlay")?, before);
    assert_eq!(topo.host.sh("ip route show proto 240")?, "");
    Ok(())
}

/// A DPU that accepts a report and never answers does not hold up local
/// repair: a route deleted meanwhile comes back at once, not after the
/// report's deadline.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn repair_never_waits_on_a_stalled_dpu() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let host_ns = topo.host.name.clone();
    let repaired_in = topo.host.run(move || async move {
        let mut agent = AgentOnKernel::start().await?;
        anyhow::ensure!(agent.dpu.next_report().await?.applied, "revision 1 failed");
        agent
            .dpu
            .stall_reports
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut second = contract();
        second.revision = 2;
        second.families[0].cluster_cidrs.push(net("198.19.0.0/24"));
        agent.dpu.contracts.send(second.to_pb())?;
        // The host applied revision 2 and is now waiting on its report.
        anyhow::ensure!(agent.dpu.next_report().await?.applied, "revision 2 failed");
        let before = agent.status.borrow().repairs;
        let started = Instant::now();
        let output = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host_ns,
                "ip",
                "route",
                "del",
                // One of ours (the CIDR's halves), not mp0's whole route.
                "198.18.128.0/18",
            ])
            .output()?;
        anyhow::ensure!(output.status.success(), "{output:?}");
        wait_repairs(
            &mut agent.status,
            before,
            "route deleted during a stalled report",
        )
        .await?;
        let took = started.elapsed();
        agent.stop().await?;
        Ok(took)
    })?;
    println!("repair during a stalled report: {repaired_in:?}");
    assert!(
        repaired_in < host_agent::agent::RPC_DEADLINE / 2,
        "repair waited {repaired_in:?} on the stalled DPU"
    );
    Ok(())
}

/// ovnkube's route on the host, owned by the route manager emulator.
const OVNKUBE_ROUTE: &str = "198.18.128.0/17 dev ovn-k8s-mp0";

/// ovnkube-node's route manager (see `noverlay_tests::ovnkube`), with a
/// periodic sync much faster than ovnkube's 2 minutes: churn.
fn route_manager(host: &NetNs) -> anyhow::Result<RouteManager> {
    RouteManager::start(host, &[OVNKUBE_ROUTE], Duration::from_millis(20))
}

/// Next to ovnkube-node's route manager (`mp0_routes = "keep"`, the
/// default): its route through mp0 stays exactly as it is, ours win by
/// being more specific, the node subnet still goes to mp0, its churn wakes
/// no reconcile of ours, and no packet to a remote pod takes mp0 while it
/// runs (~1000 packets/s).
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn next_to_ovnkubes_route_manager_its_routes_stay_and_ours_win() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let host = &topo.host;
    // What leaves through mp0, counted on its peer.
    host.sh("set -e
        nft add table netdev mp0seen
        nft add chain netdev mp0seen in '{ type filter hook ingress device mp0-peer priority 0; }'
        nft add rule netdev mp0seen in ip daddr 198.18.200.1 counter")?;
    let manager = route_manager(host)?;
    let keeping = HostSettings {
        mp0_routes: Mp0Routes::Keep,
        ..settings()
    };
    let plan = plan::plan(&contract(), &keeping);
    let (first, second, woken) = host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        let first = kernel.apply(&plan).await?;
        // The new link's IPv6 addresses settle (DAD) with events of their
        // own; then a second of ovnkube's churn: not one wake-up for us.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        kernel.absorb_drift();
        let woken = tokio::time::timeout(Duration::from_secs(1), kernel.drift())
            .await
            .is_ok();
        let second = kernel.apply(&plan).await?;
        Ok((first, second, woken))
    })?;
    assert!(!woken, "ovnkube's route churn woke a reconcile");
    assert_eq!(second.changes, 0, "a second apply changed something");
    assert_eq!(
        first
            .routes
            .iter()
            .filter(|r| r.starts_with("198.18.128.0/18 ") || r.starts_with("198.18.192.0/18 "))
            .count(),
        2,
        "{:?}",
        first.routes
    );
    // Their route as they made it; ours decide.
    let theirs = host.sh("ip route show 198.18.128.0/17")?;
    assert!(
        theirs.contains(OVNKUBE_ROUTE) && !theirs.contains("proto 240"),
        "{theirs}"
    );
    let remote = host.sh("ip route get 198.18.200.1")?;
    assert!(remote.contains("via 169.254.0.4 dev eth0"), "{remote}");
    let local = host.sh("ip route get 198.18.130.5")?;
    assert!(local.contains("dev ovn-k8s-mp0"), "{local}");

    // ~1000 packets/s to a remote pod while the route manager churns.
    let started = Instant::now();
    host.run(|| async {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..1000 {
            socket.send_to(b"to a remote pod", "198.18.200.1:9")?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })?;
    let took = started.elapsed();
    let restores = manager.stop();
    let through_mp0 = count_through_mp0(host)?;
    let reached = seen(&topo.dpu, "169.254.0.2")?;
    println!(
        "1000 packets in {took:?} next to ovnkube's churning route manager: {reached} reached the DPU, \
         {through_mp0} took mp0; the route manager had to restore its route {restores} times"
    );
    assert_eq!(through_mp0, 0, "packets to a remote pod took mp0");
    assert_eq!(reached, 1000, "not every packet reached the DPU");
    assert_eq!(restores, 0, "we touched ovnkube's route");

    // The contrast, which the emulator must see: removing mp0's routes
    // (`mp0_routes = "remove"`) takes its key, and it fights back.
    let manager = route_manager(host)?;
    let removing = plan::plan(&contract(), &settings());
    host.run(move || async move {
        Kernel::open(masquerades())?.apply(&removing).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    })?;
    let fought = manager.stop();
    println!("with mp0_routes = \"remove\" the route manager restored its route {fought} times");
    assert!(
        fought > 0,
        "the route manager emulator saw nothing to restore"
    );
    Ok(())
}

/// Upgrading from whole-CIDR routes to halves (or back) never leaves the
/// CIDR without a route of ours: the new routes go in before the old one
/// goes, and ovnkube's route is left alone either way.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn switching_between_whole_routes_and_halves_keeps_the_cidr_routed() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let remove = plan::plan(&contract(), &settings());
    let keep = plan::plan(
        &contract(),
        &HostSettings {
            mp0_routes: Mp0Routes::Keep,
            ..settings()
        },
    );
    let ours = |host: &NetNs| host.sh("ip route show proto 240");
    topo.host.run({
        let remove = remove.clone();
        move || async move {
            Kernel::open(masquerades())?.apply(&remove).await?;
            Ok(())
        }
    })?;
    assert!(ours(&topo.host)?.contains("198.18.128.0/17 via 169.254.0.4"));
    // From whole to halves, watched from another process: the whole route
    // goes only once both halves are there.
    let mut monitor = std::process::Command::new("ip")
        .args(["-n", &topo.host.name, "monitor", "route"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200));
    topo.host.run(move || async move {
        Kernel::open(masquerades())?.apply(&keep).await?;
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let _ = monitor.kill();
    let output = monitor.wait_with_output()?;
    let events = String::from_utf8_lossy(&output.stdout);
    let position = |needle: &str| {
        events
            .find(needle)
            .ok_or_else(|| anyhow::anyhow!("no {needle:?} in\n{events}"))
    };
    let deleted = position("Deleted 198.18.128.0/17 via 169.254.0.4")?;
    assert!(
        position("198.18.128.0/18 via 169.254.0.4")? < deleted,
        "{events}"
    );
    assert!(
        position("198.18.192.0/18 via 169.254.0.4")? < deleted,
        "{events}"
    );
    let now = ours(&topo.host)?;
    assert!(
        now.contains("198.18.128.0/18") && !now.contains("198.18.128.0/17"),
        "{now}"
    );
    // And back.
    topo.host.run(move || async move {
        Kernel::open(masquerades())?.apply(&remove).await?;
        Ok(())
    })?;
    let now = ours(&topo.host)?;
    assert!(
        now.contains("198.18.128.0/17") && !now.contains("198.18.128.0/18"),
        "{now}"
    );
    Ok(())
}

/// The masquerade address and the dummy next hop's neighbour, when
/// ovnkube-node made them first (with a service route through that next
/// hop), are shared: used as they are, never marked ours, and left by
/// cleanup, so its service route keeps its on-link next hop.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn a_masquerade_address_and_neighbour_made_by_ovnkube_are_shared_and_left() -> anyhow::Result<()> {
    netns::require_privileges()?;
    let topo = topology()?;
    let host = &topo.host;
    host.sh("set -e
        ip addr add 169.254.0.2/17 dev eth0
        ip neigh replace 169.254.0.4 lladdr 0a:58:a9:fe:00:04 dev eth0 nud permanent
        ip route add 198.51.100.0/24 via 169.254.0.4 dev eth0")?;
    let theirs = |host: &NetNs| -> anyhow::Result<(String, String)> {
        Ok((
            host.sh("ip -4 addr show dev eth0 | grep 169.254.0.2")?,
            host.sh("ip neigh show 169.254.0.4 dev eth0")?,
        ))
    };
    let before = theirs(host)?;
    let keeping = HostSettings {
        mp0_routes: Mp0Routes::Keep,
        ..settings()
    };
    let plan = plan::plan(&contract(), &keeping);
    let kept_settings = keeping.clone();
    host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        kernel.apply(&plan).await?;
        // The IPv6 ones are ours: made by us, marked, removed by cleanup.
        kernel.teardown(&kept_settings).await?;
        Ok(())
    })?;
    assert_eq!(
        theirs(host)?,
        before,
        "ovnkube's address or neighbour changed"
    );
    let service = host.sh("ip route show 198.51.100.0/24")?;
    assert!(service.contains("via 169.254.0.4 dev eth0"), "{service}");
    let ours_left =
        host.sh("ip -6 addr show dev eth0; ip -6 neigh show dev eth0; ip route show proto 240")?;
    assert!(
        !ours_left.contains("fd69::2")
            && !ours_left.contains("fd69::4")
            && !ours_left.contains("proto 240"),
        "{ours_left}"
    );
    Ok(())
}

/// The status once `ready` holds; an error with the last status if it does
/// not within `timeout`.
async fn wait_status(
    status: &mut tokio::sync::watch::Receiver<HostStatus>,
    what: &str,
    timeout: Duration,
    ready: impl FnMut(&HostStatus) -> bool,
) -> anyhow::Result<HostStatus> {
    let reached = tokio::time::timeout(timeout, status.wait_for(ready))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|s| s.clone());
    reached.ok_or_else(|| {
        anyhow::anyhow!(
            "no {what} within {timeout:?}; status {:?}",
            *status.borrow()
        )
    })
}

/// Packets to a remote pod that left through mp0, counted on its peer.
fn count_through_mp0(host: &NetNs) -> anyhow::Result<u64> {
    let listing = host.sh("nft list table netdev mp0seen")?;
    listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no counter in {listing}"))
}

/// Another writer replaces one of our routes (same prefix and metric,
/// through mp0, as `ip route replace` does): the agent takes it back at
/// once, packets to a remote pod sent meanwhile are counted on both ends.
/// A writer that keeps replacing it gets the key for a while: the agent
/// holds off, status names the conflict and lists the kernel's route as
/// not ours, and once the writer stops the agent takes the key back.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn a_route_of_ours_taken_by_another_writer_is_taken_back() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let host = &topo.host;
    host.sh("set -e
        nft add table netdev mp0seen
        nft add chain netdev mp0seen in '{ type filter hook ingress device mp0-peer priority 0; }'
        nft add rule netdev mp0seen in ip daddr 198.18.200.1 counter")?;
    const OVERWRITE: &str = "ip route replace 198.18.192.0/18 via 198.18.130.1 dev ovn-k8s-mp0";
    let host_ns = host.name.clone();
    let (took, conflict, listed, healed) = host.run(move || async move {
        let mut agent = AgentOnKernel::start().await?;
        let report = agent.dpu.next_report().await?;
        anyhow::ensure!(report.applied, "initial apply failed: {}", report.error);

        // One overwrite while ~1000 packets/s go to a remote pod.
        // (A thread started here is in the host's namespace too.)
        let sender = std::thread::spawn(|| -> std::io::Result<()> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..1000 {
                socket.send_to(b"to a remote pod", "198.18.200.1:9")?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &host_ns, "sh", "-c", OVERWRITE])
            .output()?;
        anyhow::ensure!(output.status.success(), "{OVERWRITE}: {output:?}");
        wait_status(
            &mut agent.status,
            "the take-back",
            Duration::from_secs(5),
            |s| s.route_takebacks >= 1,
        )
        .await?;
        let took = started.elapsed();
        let _ = sender.join();

        // A writer that keeps replacing it, every 10 ms for 3 s.
        let fighter = std::thread::spawn({
            let ns = host_ns.clone();
            move || {
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "exec", &ns, "sh", "-c", OVERWRITE])
                        .output();
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        let conflict = wait_status(
            &mut agent.status,
            "a conflict",
            Duration::from_secs(5),
            |s| !s.route_conflicts.is_empty(),
        )
        .await?;
        let _ = fighter.join();
        // The writer stopped with its route in place: ours comes back once
        // the hold-off ends.
        wait_status(
            &mut agent.status,
            "ours back after the fight",
            Duration::from_secs(20),
            |s| s.route_conflicts.is_empty() && s.routes.iter().all(|r| !r.contains("[not ours")),
        )
        .await?;
        let healed = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host_ns,
                "ip",
                "route",
                "show",
                "198.18.192.0/18",
            ])
            .output()?;
        agent.stop().await?;
        Ok((
            took,
            conflict.route_conflicts,
            conflict.routes,
            String::from_utf8_lossy(&healed.stdout).into_owned(),
        ))
    })?;
    let through_mp0 = count_through_mp0(host)?;
    let reached = seen(&topo.dpu, "169.254.0.2")?;
    println!(
        "route overwritten by another writer: taken back {took:?} later (reported in status); \
         of the packets sent meanwhile {reached} reached the DPU, {through_mp0} took mp0"
    );
    println!("during the fight, status said: {conflict:?}");
    assert!(
        conflict[0].starts_with("198.18.192.0/18: another writer keeps replacing our route")
            && conflict[0].contains("dev ovn-k8s-mp0"),
        "{conflict:?}"
    );
    assert!(
        listed.iter().any(
            |r| r.starts_with("198.18.192.0/18 via 198.18.130.1 dev ovn-k8s-mp0")
                && r.contains("[not ours: planned 198.18.192.0/18 via 169.254.0.4 dev eth0")
        ),
        "status does not show the kernel's route: {listed:?}"
    );
    assert!(
        healed.contains("via 169.254.0.4 dev eth0 proto 240"),
        "{healed}"
    );
    assert!(reached > 0, "no packet reached the DPU");
    Ok(())
}

/// A burst of route events larger than the event socket holds: the kernel
/// drops events, among them the deletion of a route of ours, and says so
/// (an overrun); the overrun alone wakes a reconcile that lists every route
/// and puts ours back.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn route_events_lost_in_an_overrun_are_answered_by_a_listing() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let plan = host_plan();
    let host_ns = topo.host.name.clone();
    let batch = tempfile::NamedTempFile::new()?;
    let flood: String = (0..2000)
        .map(|i| format!("route add 10.200.{}.{}/32 dev eth0\n", i / 256, i % 256))
        .collect();
    std::fs::write(batch.path(), flood)?;
    let batch_path = batch.path().to_path_buf();
    let (woke, repaired) = topo.host.run(move || async move {
        // The smallest receive buffer the kernel allows: a few dozen events.
        let mut kernel = Kernel::open_with_event_buffer(masquerades(), 0)?;
        kernel.apply(&plan).await?;
        // The events of our own writes are read and weighed; then nothing
        // is pending.
        tokio::time::sleep(Duration::from_millis(200)).await;
        kernel.absorb_drift();
        // This thread runs the event watcher: while it waits on these
        // commands nothing reads the socket, so the flood overruns it and
        // the deletion of our route after it is dropped by the kernel.
        netns::run_in(&host_ns, &["ip", "-batch", &batch_path.to_string_lossy()])?;
        netns::run_in(&host_ns, &["ip", "route", "del", "198.18.128.0/17"])?;
        let woke = tokio::time::timeout(Duration::from_secs(2), kernel.drift())
            .await
            .is_ok();
        let repaired = kernel.apply(&plan).await?;
        Ok((woke, repaired))
    })?;
    println!(
        "after 2,000 route events and one lost deletion: woke {woke}, {} changes, {} overruns",
        repaired.changes, repaired.route_event_overruns
    );
    assert!(woke, "the overrun woke no reconcile");
    assert!(
        repaired.route_event_overruns >= 1,
        "no overrun counted: {repaired:?}"
    );
    let ours = topo.host.sh("ip route show 198.18.128.0/17")?;
    assert!(
        ours.contains("via 169.254.0.4 dev eth0 proto 240"),
        "our route is not back: {ours}"
    );
    Ok(())
}

/// The periodic reconcile's audit finds what no event told (the events are
/// dropped here by hand, as a lost one would be): a deleted route of ours
/// and a CIDR taken out of our SNAT set are put back; and an audit of a
/// host in place rewrites nothing (the SNAT rule keeps its handle).
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn the_periodic_audit_finds_what_no_event_told() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let plan = host_plan();
    let host_ns = topo.host.name.clone();
    let (unaudited, audited, again) = topo.host.run(move || async move {
        let mut kernel = Kernel::open(masquerades())?;
        kernel.apply(&plan).await?;
        // In place: what the second apply listed is known from now on.
        kernel.apply(&plan).await?;
        let script = "ip route del 198.18.128.0/17; \
             nft delete element inet noverlay cluster_cidrs_v6 '{ fd00:10:244::/48 }'";
        netns::run_in(&host_ns, &["sh", "-c", script])?;
        tokio::time::timeout(Duration::from_secs(2), kernel.drift()).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Lost: what the events said is dropped.
        kernel.absorb_drift();
        let _ = kernel.wakeups().take_touched();
        let _ = kernel.wakeups().take_nft_changed();
        let unaudited = kernel.apply(&plan).await?;
        kernel.audit_next();
        let audited = kernel.apply(&plan).await?;
        kernel.audit_next();
        let before = rule_handles_in_ns(&host_ns)?;
        let again = kernel.apply(&plan).await?;
        let after = rule_handles_in_ns(&host_ns)?;
        anyhow::ensure!(
            before == after,
            "an audit of a table in place rewrote it:\n{before}\n{after}"
        );
        Ok((unaudited, audited, again))
    })?;
    assert_eq!(
        unaudited.changes, 0,
        "without the events an apply that trusts what it knows should see nothing"
    );
    assert!(audited.changes >= 2, "the audit repaired {audited:?}");
    assert_eq!(
        again.changes, 0,
        "an audit of a host in place changed {again:?}"
    );
    let host = &topo.host;
    assert!(
        host.sh("ip route show 198.18.128.0/17")?
            .contains("via 169.254.0.4 dev eth0 proto 240")
    );
    let table = host.sh("nft list set inet noverlay cluster_cidrs_v6")?;
    assert!(table.contains("fd00:10:244::/48"), "{table}");
    Ok(())
}

/// Our SNAT rules with their handles, as `nft -a` lists them in `ns`.
fn rule_handles_in_ns(ns: &str) -> anyhow::Result<String> {
    let listing = netns::run_in(
        ns,
        &[
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "noverlay",
            plan::NFT_CHAIN,
        ],
    )?;
    Ok(listing
        .lines()
        .filter(|l| l.contains("snat"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Several routes at one destination, which a lookup cannot see whole: a
/// route at a better metric at our IPv6 half (traffic takes it; ours stays
/// and the status says which wins), and two IPv4 aliases prepended in front
/// of ours at our key (taken back by deleting them: ours is behind them).
/// Neither makes an apply fail.
#[test]
#[ignore = "privileged: needs root, network namespaces and nftables; run as root with --include-ignored (CI does)"]
fn several_routes_at_one_destination_are_seen_whole() -> anyhow::Result<()> {
    netns::require_privileges()?;
    harness::init();
    let topo = topology()?;
    let host_ns = topo.host.name.clone();
    let (errors, shadowed) = topo.host.run(move || async move {
        let mut agent = AgentOnKernel::start().await?;
        let report = agent.dpu.next_report().await?;
        anyhow::ensure!(report.applied, "initial apply failed: {}", report.error);
        // Every error any reconcile reports from now on.
        let mut watching = agent.status.clone();
        let errors = tokio::spawn(async move {
            let mut seen = Vec::new();
            while watching.changed().await.is_ok() {
                if let Some(e) = watching.borrow_and_update().last_error.clone() {
                    seen.push(e);
                }
            }
            seen
        });
        let sh = |script: &str| netns::run_in(&host_ns, &["sh", "-c", script]).map(drop);
        sh("ip -6 route add fd00:10:244::/49 dev eth0 metric 100 proto static")?;
        let shadowed = wait_status(
            &mut agent.status,
            "a report of the better route",
            Duration::from_secs(5),
            |s| s.routes.iter().any(|r| r.contains("[shadows ours")),
        )
        .await?;
        let before = agent.status.borrow().route_takebacks;
        // Two aliases in front of ours.
        sh(
            "ip route prepend 198.18.128.0/18 via 198.18.130.1 dev ovn-k8s-mp0; \
            ip route prepend 198.18.128.0/18 via 198.18.130.3 dev ovn-k8s-mp0",
        )?;
        wait_status(
            &mut agent.status,
            "the take-back",
            Duration::from_secs(5),
            |s| s.route_takebacks > before && s.routes.iter().all(|r| !r.contains("[not ours")),
        )
        .await?;
        // A second too, for a failing retry to show.
        tokio::time::sleep(Duration::from_secs(1)).await;
        agent.stop().await?;
        Ok((errors.await?, shadowed.routes))
    })?;
    println!("status with a better route at our IPv6 half: {shadowed:?}");
    assert!(errors.is_empty(), "reconciles failed: {errors:?}");
    assert!(
        shadowed.iter().any(|r| r.starts_with("fd00:10:244::/49 dev eth0 proto 4 metric 100")
            && r.contains("[shadows ours: a better metric at our destination; planned fd00:10:244::/49 via fd69::4")),
        "{shadowed:?}"
    );
    // Ours stays at its own metric next to the better one.
    let v6 = topo.host.sh("ip -6 route show fd00:10:244::/49")?;
    assert!(
        v6.contains("via fd69::4 dev eth0 proto 240 metric 1024"),
        "{v6}"
    );
    // The alias in front is gone; ours is the one route at the key.
    let v4 = topo.host.sh("ip route show 198.18.128.0/18")?;
    assert_eq!(v4.lines().count(), 1, "{v4}");
    assert!(v4.contains("via 169.254.0.4 dev eth0 proto 240"), "{v4}");
    Ok(())
}
