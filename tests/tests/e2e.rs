//! End to end on a real datapath: host -> DPU OVS -> OVN's gateway router ->
//! underlay and back, with both agents as real processes (built by the test
//! if needed). Each fault is a test of its own on a fresh testbed: it
//! breaks one thing, then checks that traffic works again and prints how
//! long recovery took. Privileged: ignored unless run as root with
//! `--include-ignored`.

use noverlay_tests::{
    e2e::{
        BRIDGE_MAC, CLUSTER_CIDR, CLUSTER_CIDR6, Capture, DUMMY_NEXT_HOP, LATE_CIDR, LATE_POD,
        LIMIT_SUPERNET, MASQUERADE_SUBNET, NODE_IP, NODE_IP6, REMOTE_NODE_IP, REMOTE_POD,
        REMOTE_POD6, Testbed, cidrs_at_the_limit,
    },
    netns, ovn, ovnkube, ovs,
};
use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

const RECOVERY: Duration = Duration::from_secs(20);

/// One testbed at a time: each runs two OVS daemons and pings with short
/// timeouts; on a small machine they would slow each other down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A testbed with both agents running and the path up.
fn path_up() -> anyhow::Result<(MutexGuard<'static, ()>, Testbed)> {
    netns::require_privileges()?;
    ovs::require()?;
    ovn::require()?;
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut bed = Testbed::build_for_test()?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    let first = bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    println!(
        "OVN up (gateway router bound, patch port made) in {:?}; path up {first:?} after starting both agents",
        bed.ovn_ready
    );
    assert_traffic(&bed, REMOTE_POD)?;
    Ok((guard, bed))
}

/// What a user checks: ping and a TCP exchange reach the remote pod, and the
/// pod sees the node underlay IP as the source.
fn assert_traffic(bed: &Testbed, pod: &str) -> anyhow::Result<()> {
    let node_ip = Testbed::node_ip_for(pod);
    anyhow::ensure!(bed.ping(pod), "ping {pod} failed\n{}", bed.agent_logs());
    // Bound to the node IP, the host's nft SNAT must do the first SNAT.
    let bound = bed
        .host
        .sh_unchecked(&format!("ping -I {node_ip} -c 1 -W 1 {pod}"))?;
    anyhow::ensure!(
        bound.status.success(),
        "ping {pod} from {node_ip} failed: {}{}",
        String::from_utf8_lossy(&bound.stdout),
        String::from_utf8_lossy(&bound.stderr)
    );
    let seen = bed.tcp_exchange(pod)?;
    anyhow::ensure!(
        seen == node_ip,
        "the remote pod saw source {seen:?}, expected the node underlay IP {node_ip}"
    );
    Ok(())
}

/// Runs `fault`, waits until traffic passes again and prints the time.
fn recovers_from(
    bed: &mut Testbed,
    fault: &str,
    inject: impl FnOnce(&mut Testbed) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    inject(bed)?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)
        .map_err(|e| anyhow::anyhow!("after {fault}: {e}"))?;
    println!("recovery after {fault}: {:?}", started.elapsed());
    assert_traffic(bed, REMOTE_POD).map_err(|e| anyhow::anyhow!("after {fault}: {e}"))
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn traffic_takes_the_path_with_both_snats() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    // What the operator sees on each side.
    let before = bed.path_flow_packets()?;
    assert_traffic(&bed, REMOTE_POD)?;
    // The userspace datapath folds its counters into the flows every ~0.5 s.
    noverlay_test_support::eventually_blocking(
        "the path flows' counters to move",
        Duration::from_secs(5),
        || bed.path_flow_packets().is_ok_and(|n| n > before),
    )
    .map_err(anyhow::Error::msg)?;
    // mp0's routes stay as they are (mp0_routes = "keep", the default):
    // ours, the CIDR's two halves, are more specific and win.
    let mp0 = bed.host.sh("ip route show dev ovn-k8s-mp0")?;
    assert!(
        mp0.contains(CLUSTER_CIDR) && mp0.contains("198.18.130.0/24"),
        "mp0's routes were touched: {mp0}"
    );
    let chosen = bed.host.sh(&format!("ip route get {REMOTE_POD}"))?;
    assert!(chosen.contains("via 169.254.0.4 dev eth0"), "{chosen}");
    let snat = bed.host.sh("nft list table inet noverlay")?;
    let ipv4_rule = snat.lines().find(|l| l.contains("snat ip to"));
    assert!(
        ipv4_rule.is_some_and(|rule| !rule.contains("counter packets 0 ")),
        "the host's IPv4 SNAT rule counted nothing:\n{snat}"
    );
    let route = bed.host.sh("ip route show proto 240")?;
    assert!(
        route.contains("198.18.128.0/18 via 169.254.0.4 dev eth0 mtu 1400")
            && route.contains("198.18.192.0/18 via 169.254.0.4 dev eth0 mtu 1400"),
        "{route}"
    );
    // What `host-agent status` shows an operator on the host.
    let human = bed.host_status(false)?;
    for expected in [
        "DPU 198.19.254.2:50051: following",
        "contract: revision 1,",
        "masquerade 169.254.0.0/17 (host 169.254.0.2, next hop 169.254.0.4), underlay 198.18.0.10, cluster CIDRs: 198.18.128.0/17",
        "198.18.128.0/18 via 169.254.0.4 dev eth0 proto 240",
        "snat ip to 169.254.0.2",
        "last error: none",
    ] {
        assert!(human.contains(expected), "no {expected:?} in\n{human}");
    }
    let json = bed.host_status(true)?;
    let report: host_agent::local_status::StatusReport = serde_json::from_str(&json)?;
    assert_eq!(report.phase, "following");
    assert_eq!(
        report.contract.map(|c| c.families[0].cluster_cidrs.clone()),
        Some(vec![CLUSTER_CIDR.to_string()])
    );
    // On the DPU the uplink guard went on before the first flow did.
    let logs = bed.agent_logs();
    let guard = logs.find("uplink guard written");
    let flows = logs.find("flows installed");
    assert!(
        matches!((guard, flows), (Some(g), Some(f)) if g < f),
        "the uplink guard was not written before the first flows:\n{logs}"
    );
    Ok(())
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn dpu_agent_kill_and_restart_is_hitless() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    bed.kill_dpu_agent();
    assert_traffic(&bed, REMOTE_POD)
        .map_err(|e| anyhow::anyhow!("while dpu-agent is down: {e}"))?;
    recovers_from(
        &mut bed,
        "dpu-agent kill -9 + restart",
        Testbed::start_dpu_agent,
    )?;
    // The restarted agent hears what the host holds, with nothing changed:
    // its status and the applied-revision metric (what the shipped alert
    // NoverlayContractNotApplied reads) agree with the contract.
    let started = Instant::now();
    loop {
        let status = bed.dpu_status()?;
        let contract = status.contract.map(|c| c.revision).unwrap_or_default();
        let report = status.last_host_report.unwrap_or_default();
        let metric: Option<f64> = bed
            .dpu_metrics()?
            .lines()
            .find_map(|l| l.strip_prefix("noverlay_dpu_host_applied_revision "))
            .and_then(|value| value.trim().parse().ok());
        if report.applied && report.revision == contract && metric == Some(contract as f64) {
            println!(
                "the restarted dpu-agent had the host's report of revision {contract} after {:?}",
                started.elapsed()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < RECOVERY,
            "no host report on the restarted dpu-agent: contract {contract}, report {report:?}, noverlay_dpu_host_applied_revision {metric:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn host_agent_kill_and_restart_is_hitless() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    bed.kill_host_agent();
    assert_traffic(&bed, REMOTE_POD)
        .map_err(|e| anyhow::anyhow!("while host-agent is down: {e}"))?;
    recovers_from(
        &mut bed,
        "host-agent kill -9 + restart",
        Testbed::start_host_agent,
    )
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_flushed_ruleset_is_repaired() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    recovers_from(&mut bed, "nft flush ruleset", |bed| {
        bed.host.sh("nft flush ruleset").map(drop)
    })
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_deleted_route_is_repaired() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    recovers_from(&mut bed, "our routes deleted", |bed| {
        bed.host.sh("ip route flush proto 240").map(drop)
    })
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_gateway_link_flap_is_repaired() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    recovers_from(&mut bed, "gateway link down/up", |bed| {
        bed.host
            .sh("ip link set eth0 down; ip link set eth0 up")
            .map(drop)
    })
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_vswitchd_crash_is_recovered() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    recovers_from(&mut bed, "ovs-vswitchd kill -9 + restart", |bed| {
        bed.crash_and_restart_vswitchd()
    })
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_cidr_added_and_removed_at_runtime_follows() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    anyhow::ensure!(
        !bed.ping(LATE_POD),
        "{LATE_POD} reachable before its CIDR was added"
    );
    bed.write_dpu_config(&[CLUSTER_CIDR, LATE_CIDR])?;
    let started = Instant::now();
    bed.reload_dpu_agent()?;
    bed.wait_for_ping(LATE_POD, RECOVERY)?;
    println!("CIDR added (SIGHUP) -> traffic: {:?}", started.elapsed());
    assert_traffic(&bed, LATE_POD)?;
    assert_traffic(&bed, REMOTE_POD)?;

    // ...and removed: no route through the DPU any more.
    bed.write_dpu_config(&[CLUSTER_CIDR])?;
    let started = Instant::now();
    bed.reload_dpu_agent()?;
    noverlay_test_support::eventually_blocking(
        &format!("the route for {LATE_CIDR} to be removed"),
        RECOVERY,
        || {
            // Ours to it are gone, whatever their prefix (whole or halves).
            bed.host
                .sh("ip route show proto 240")
                .is_ok_and(|r| !r.contains("198.19.128."))
        },
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "CIDR removed (SIGHUP) -> route gone: {:?}",
        started.elapsed()
    );
    anyhow::ensure!(
        !bed.ping(LATE_POD),
        "{LATE_POD} still reachable through the path"
    );
    assert_traffic(&bed, REMOTE_POD)
}

/// Next to ovnkube-node, deployed the upstream way: ovnkube-node runs on
/// the DPU (dpu mode, its file named by `--config-file`, as OpenShift
/// does) and on the host (dpu-host mode, flags only, as the helm chart
/// does); nothing names a masquerade subnet, so OVN routes ovnkube's real
/// default (169.254.169.0/29, fd69::/125). dpu-agent's config holds only
/// listen, the authorised host, TLS, the bridge's name and where OVN's
/// northbound database is; host-agent's no masquerade subnet. The cluster
/// CIDRs and MTU come from the file the DPU's ovnkube reads, the masquerade
/// subnets are ovnkube's defaults on both sides (found by reading the
/// running ovnkube processes), the underlay IPs from the gateway router's
/// port in OVN NB, the ports from OVSDB (the patch port ovn-controller
/// made, the uplink the bridge names, the host representor); GetStatus and
/// `host-agent status` name each fact's source, traffic flows both
/// families, the uplink guard goes on the found uplink before the first
/// flow, and a subnet ovnkube's file gains is followed without a signal.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn the_clusters_facts_come_from_the_running_ovnkube() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    ovn::require()?;
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut bed = Testbed::build_for_test()?;
    bed.route_ovnkube_default_masquerade()?;
    bed.write_ovnkube_conf(&[CLUSTER_CIDR])?;
    let file = bed.ovnkube_conf_path().display().to_string();
    // The DPU's ovnkube-node, OpenShift's shape: its file named by flag.
    let dpu_ovnkube = bed.start_dpu_ovnkube(&[])?;
    let _host_ovnkube = bed.start_host_ovnkube()?;
    bed.write_dpu_config_next_to_ovnkube()?;
    bed.write_host_config_next_to_ovnkube()?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    assert_traffic(&bed, REMOTE_POD)?;
    bed.wait_for_ping(REMOTE_POD6, RECOVERY)?;
    let [(subnet, _), (subnet6, _)] = noverlay_tests::e2e::OVNKUBE_MASQUERADE;
    let facts = bed.dpu_status()?.config_facts;
    for expected in [
        format!("ipv4.cluster_cidrs = {CLUSTER_CIDR} (from {file} (ovnkube's --config-file))"),
        format!("ipv6.cluster_cidrs = {CLUSTER_CIDR6} (from {file} (ovnkube's --config-file))"),
        format!("ipv4.masquerade_subnet = {subnet} (OVN-Kubernetes' default (ovnkube sets none))"),
        format!("ipv6.masquerade_subnet = {subnet6} (OVN-Kubernetes' default (ovnkube sets none))"),
        format!("mtu = 1400 (from {file} (ovnkube's --config-file))"),
        format!(
            "ipv4.underlay_ip = {NODE_IP} (from OVN NB, port rtoe-{})",
            ovn::GATEWAY_ROUTER
        ),
        format!(
            "ipv6.underlay_ip = {NODE_IP6} (from OVN NB, port rtoe-{})",
            ovn::GATEWAY_ROUTER
        ),
        format!("bridge.patch_port = {} (from OVSDB)", ovn::PATCH_PORT),
        "bridge.uplink = p0 (from OVSDB)".to_string(),
        "bridge.host_representor = pf0hpf (from OVSDB)".to_string(),
    ] {
        assert!(facts.contains(&expected), "no {expected:?} in {facts:#?}");
    }
    println!("dpu-agent's facts (ovnkube pid {}):", dpu_ovnkube.pid());
    for fact in &facts {
        println!("  {fact}");
    }
    // The host's masquerade address is ovnkube's default host IP.
    let addresses = bed.host.sh("ip -br addr show dev eth0")?;
    assert!(
        addresses.contains("169.254.169.2/29") && addresses.contains("fd69::2/125"),
        "{addresses}"
    );
    let status = bed.dpu_status()?;
    let guard = status.uplink_guard.unwrap_or_default();
    assert_eq!((guard.state.as_str(), guard.device.as_str()), ("on", "p0"));
    let logs = bed.agent_logs();
    let (written, flows) = (
        logs.find("uplink guard written"),
        logs.find("flows installed"),
    );
    assert!(
        matches!((written, flows), (Some(g), Some(f)) if g < f),
        "the uplink guard was not written before the first flows:\n{logs}"
    );
    // The host shows its own source, and the DPU's as sent with the contract.
    let host = bed.host_status(false)?;
    for line in [
        format!(
            "  host fact: ipv4.masquerade_subnet = {subnet} (OVN-Kubernetes' default (ovnkube sets none))\n"
        ),
        format!(
            "  DPU fact: ipv4.cluster_cidrs = {CLUSTER_CIDR} (from {file} (ovnkube's --config-file))\n"
        ),
    ] {
        assert!(host.contains(&line), "no {line:?} in {host}");
    }

    // ovnkube's file gains a subnet: followed, no SIGHUP.
    anyhow::ensure!(!bed.ping(LATE_POD), "{LATE_POD} reachable too early");
    let started = Instant::now();
    bed.write_ovnkube_conf(&[CLUSTER_CIDR, LATE_CIDR])?;
    bed.wait_for_ping(LATE_POD, RECOVERY)?;
    println!(
        "a subnet added to ovnkube's file -> traffic to it: {:?}",
        started.elapsed()
    );
    assert_traffic(&bed, LATE_POD)?;

    // ovnkube-node restarts with a flag that overrides its file: the new
    // process is followed, no signal; the fact names it.
    drop(dpu_ovnkube);
    // While it is gone (two looks of the follower), its facts stay: the
    // file alone (named in [ovnkube] config) is not taken in its place.
    std::thread::sleep(Duration::from_secs(5));
    // A SIGHUP meanwhile is refused, saying why.
    bed.reload_dpu_agent()?;
    noverlay_test_support::eventually_blocking("the SIGHUP refused", RECOVERY, || {
        bed.agent_logs()
            .contains("is gone: its facts stay in force")
    })
    .map_err(anyhow::Error::msg)?;
    let kept = format!("mtu = 1400 (from {file} (ovnkube's --config-file))");
    let facts = bed.dpu_status()?.config_facts;
    assert!(facts.contains(&kept), "no {kept:?} in {facts:#?}");
    assert_traffic(&bed, REMOTE_POD)?;
    let restarted = bed.start_dpu_ovnkube(&["--mtu=1300"])?;
    let expected = format!(
        "mtu = 1300 (from ovnkube's command line (pid {}, --mtu))",
        restarted.pid()
    );
    noverlay_test_support::eventually_blocking(
        "the restarted ovnkube's --mtu applied",
        RECOVERY,
        || {
            bed.dpu_status()
                .is_ok_and(|s| s.config_facts.contains(&expected))
        },
    )
    .map_err(anyhow::Error::msg)?;
    assert_traffic(&bed, REMOTE_POD)?;
    Ok(())
}

/// A gateway bridge hardened to OpenFlow 1.3 (`protocols=OpenFlow13`):
/// the agent installs over 1.3, the path carries traffic, and an ovnkube
/// rewrite (itself `-O OpenFlow13 --bundle replace-flows`) is restored.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn an_openflow_13_only_bridge_carries_the_path() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    ovn::require()?;
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut bed = Testbed::build_for_test()?;
    bed.ovs
        .vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow13"])?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    assert_traffic(&bed, REMOTE_POD)?;
    bed.wait_for_ping(REMOTE_POD6, RECOVERY)?;
    let logs = bed.agent_logs();
    assert!(
        logs.contains("OpenFlow session open") && logs.contains("version=OpenFlow13"),
        "{logs}"
    );
    let repairs = bed.dpu_status()?.flow_repairs;
    bed.ovs
        .ovnkube_replace_flows(noverlay_tests::e2e::NODE_IP)?;
    noverlay_test_support::eventually_blocking("the restore over 1.3", RECOVERY, || {
        bed.dpu_status().is_ok_and(|s| s.flow_repairs > repairs)
    })
    .map_err(anyhow::Error::msg)?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    assert_traffic(&bed, REMOTE_POD)
}

/// Someone replaces one of the host's routes through mp0 (same prefix and
/// metric): the host agent takes it back; pings at ~200/s meanwhile are
/// counted, and the remote pod is answered through the DPU afterwards.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_host_route_replaced_through_mp0_is_taken_back() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    // The half of the cluster CIDR the remote pod is in.
    let overwrite = "ip route replace 198.18.192.0/18 via 198.18.130.1 dev ovn-k8s-mp0";
    let lost = bed.pings_lost_during(REMOTE_POD, 400, "0.005", || {
        std::thread::sleep(Duration::from_millis(500));
        bed.host.sh(overwrite)?;
        Ok(())
    })?;
    let route = bed.host.sh("ip route show 198.18.192.0/18")?;
    println!(
        "one of our routes replaced through mp0 while pinging at ~200/s: {lost} of 400 lost; now {route:?}"
    );
    assert!(
        route.contains("via 169.254.0.4 dev eth0 proto 240"),
        "not taken back: {route}"
    );
    assert!(lost <= 20, "{lost} of 400 pings lost");
    let status = bed.host_status(false)?;
    assert!(
        status.contains("1 taken back from other writers"),
        "{status}"
    );
    assert_traffic(&bed, REMOTE_POD)
}

/// A counter of the test's own on the uplink's egress, ahead of the guard
/// (a lower priority runs first): every masquerade-sourced packet OVS sends
/// towards the underlay. (OpenFlow counters cannot tell: when OVS
/// revalidates a datapath flow it credits the packets since its last
/// push to the rules of the new translation, so ovnkube's catch-all flow
/// is credited with path traffic after each wipe.)
fn count_masquerade_egress(bed: &Testbed) -> anyhow::Result<()> {
    bed.dpu.sh(r#"nft -f - <<'EOF'
table netdev test_observer {
    chain before_guard {
        type filter hook egress device "p0" priority -200; policy accept;
        ip saddr 169.254.0.0/17 counter
        ip daddr 169.254.0.0/17 counter
    }
}
EOF"#)?;
    Ok(())
}

/// Packets counted by a table's rules that match `field` ("saddr" or
/// "daddr"), summed (`nft list` counters).
fn nft_packets(bed: &Testbed, table: &str, field: &str) -> anyhow::Result<u64> {
    let listing = bed.dpu.sh(&format!("nft list table netdev {table}"))?;
    Ok(listing
        .lines()
        .filter(|l| l.contains(&format!(" {field} ")))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "packets")?;
            words.get(at + 1)?.parse::<u64>().ok()
        })
        .sum())
}

/// Next to ovnkube-node's real flow set, rewritten the way it does it
/// (`--bundle replace-flows`, which deletes our flows) while the host sends
/// ~1000 pings/s to a remote pod: not one masquerade-sourced packet is
/// captured on the underlay, the guard's counter equals the masquerade-
/// sourced packets that reached the uplink (counted ahead of it), and the
/// path works after each wipe. Loss per wipe is printed (the restore time of the
/// flows sets it; see the bench).
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch, OVN and tcpdump; run as root with --include-ignored (CI does)"]
fn ovnkube_rewrites_never_leak_masquerade_sources_onto_the_underlay() -> anyhow::Result<()> {
    const WIPES: u32 = 20;
    const PINGS: u32 = 7000;
    let (_guard, bed) = path_up()?;
    bed.ovs.ovnkube_replace_flows(NODE_IP)?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    assert_traffic(&bed, REMOTE_POD)?;
    count_masquerade_egress(&bed)?;
    let drops_before = (
        nft_packets(&bed, "noverlay_guard", "saddr")?,
        nft_packets(&bed, "noverlay_guard", "daddr")?,
    );

    // Everything ICMP that reaches the underlay, by source.
    let capture = Capture::start(&bed, "icmp")?;
    let mut wiping = Duration::ZERO;
    let lost = bed.pings_lost_during(REMOTE_POD, PINGS, "0.001", || {
        let started = Instant::now();
        for _ in 0..WIPES {
            std::thread::sleep(Duration::from_millis(300));
            bed.ovs.ovnkube_replace_flows(NODE_IP)?;
        }
        wiping = started.elapsed();
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let decoded = capture.stop()?;

    let from = |source: &str| {
        decoded
            .lines()
            .filter(|l| l.contains(&format!(" IP {source} > ")))
            .count()
    };
    let (masquerade, node) = (from("169.254.0.2"), from(NODE_IP));
    let to_masquerade = decoded
        .lines()
        .filter(|l| l.contains(" > 169.254.0.2: "))
        .count();
    let leak = nft_packets(&bed, "test_observer", "saddr")?;
    let drops = nft_packets(&bed, "noverlay_guard", "saddr")? - drops_before.0;
    let leak_to = nft_packets(&bed, "test_observer", "daddr")?;
    let drops_to = nft_packets(&bed, "noverlay_guard", "daddr")? - drops_before.1;
    println!(
        "{WIPES} ovnkube rewrites in {wiping:?} at ~1000 pings/s: {lost} of {PINGS} lost \
         ({:.1} per wipe); on the underlay: {masquerade} masquerade-sourced and \
         {to_masquerade} masquerade-destined packets, {node} from the node IP; {leak} \
         masquerade-sourced and {leak_to} masquerade-destined packets reached the uplink, \
         the guard dropped {drops} and {drops_to}",
        f64::from(lost) / f64::from(WIPES)
    );
    assert_eq!(masquerade, 0, "masquerade sources reached the underlay");
    assert_eq!(
        to_masquerade, 0,
        "masquerade destinations reached the underlay"
    );
    assert_eq!(
        drops_to, leak_to,
        "the guard's counter differs from the masquerade-destined packets that reached the uplink"
    );
    assert!(
        node > 0,
        "the capture saw no path traffic at all: {decoded}"
    );
    assert_eq!(
        drops, leak,
        "the guard's counter differs from the masquerade-sourced packets that reached the uplink"
    );
    assert!(
        leak > 0,
        "no wipe was ever hit by traffic: the test did not test the guard"
    );
    assert_traffic(&bed, REMOTE_POD)
}

/// `dpu-agent cleanup` (the binary, as an operator runs it before an
/// uninstall) leaves nothing of ours on the DPU: no flow with our cookie,
/// no uplink guard; the rest of the bridge stays.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn dpu_cleanup_leaves_nothing_of_ours() -> anyhow::Result<()> {
    let (_guard, mut bed) = path_up()?;
    let tables = bed.dpu.sh("nft list tables")?;
    assert!(tables.contains("table netdev noverlay_guard"), "{tables}");
    bed.kill_dpu_agent();
    let others = bed.ovs.flows_not_of("breth0", 0x6e6f7672)?;
    let printed = bed.dpu_cleanup()?;
    println!("{printed}");
    let ours = bed
        .ovs
        .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?;
    assert!(
        !ours.lines().any(|l| l.contains("cookie=")),
        "flows of ours left: {ours}"
    );
    assert_eq!(bed.ovs.flows_not_of("breth0", 0x6e6f7672)?, others);
    let tables = bed.dpu.sh("nft list tables")?;
    assert!(!tables.contains("noverlay_guard"), "{tables}");
    Ok(())
}

/// dpu-agent checks OVN's half of the contract in the real northbound
/// database: it agrees as ovnkube's shape has it; the masquerade route
/// deleted in NB really blackholes replies, and status names it; a wrong
/// MAC on the router's external port is named with both MACs.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn ovns_half_of_the_contract_is_checked_in_the_northbound_database() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    let (took, _) = bed.ovn_source_until("agreement", RECOVERY, |state, _| state == "ok")?;
    println!("ovn source ok {took:?} after the path was up");

    bed.ovn
        .nbctl(&["lr-route-del", ovn::GATEWAY_ROUTER, MASQUERADE_SUBNET])?;
    let (took, error) =
        bed.ovn_source_until("the route deleted", RECOVERY, |state, _| state == "failed")?;
    println!("masquerade route deleted in NB: named in status after {took:?}: {error}");
    anyhow::ensure!(
        error.contains(MASQUERADE_SUBNET) && error.contains("no route"),
        "{error}"
    );
    // Not a false alarm: the replies to the host are dropped now.
    std::thread::sleep(Duration::from_millis(500));
    anyhow::ensure!(!bed.ping(REMOTE_POD), "the pod answered without the route");

    bed.ovn.nbctl(&[
        "lr-route-add",
        ovn::GATEWAY_ROUTER,
        MASQUERADE_SUBNET,
        DUMMY_NEXT_HOP,
        ovn::EXTERNAL_PORT,
    ])?;
    let (took, _) = bed.ovn_source_until("the route back", RECOVERY, |state, _| state == "ok")?;
    println!("route added back: status ok after {took:?}");
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;

    let wrong_mac = "02:00:c6:12:00:0b";
    bed.ovn.nbctl(&[
        "set",
        "Logical_Router_Port",
        ovn::EXTERNAL_PORT,
        &format!("mac=\"{wrong_mac}\""),
    ])?;
    let (_, error) =
        bed.ovn_source_until("the MAC changed", RECOVERY, |state, _| state == "failed")?;
    anyhow::ensure!(
        error.contains(wrong_mac) && error.contains(BRIDGE_MAC),
        "{error}"
    );
    println!("wrong router MAC named: {error}");
    bed.ovn.nbctl(&[
        "set",
        "Logical_Router_Port",
        ovn::EXTERNAL_PORT,
        &format!("mac=\"{BRIDGE_MAC}\""),
    ])?;
    bed.ovn_source_until("the MAC restored", RECOVERY, |state, _| state == "ok")?;
    assert_traffic(&bed, REMOTE_POD)
}

/// Restarts of OVN's daemons next to our agents, with ~100 pings/s from the
/// host to the remote pod meanwhile: packets lost printed, the path checked
/// after each.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn ovn_daemon_restarts_keep_the_path() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    for daemon in ["northd", "controller"] {
        let repairs_before = bed.dpu_status()?.flow_repairs;
        let lost = bed.pings_lost_during(REMOTE_POD, 300, "0.01", || {
            std::thread::sleep(Duration::from_millis(500));
            bed.ovn.kill(daemon)?;
            std::thread::sleep(Duration::from_millis(500));
            match daemon {
                "northd" => bed.ovn.start_northd(),
                _ => bed.ovn.start_controller(&bed.ovs),
            }
        })?;
        bed.ovn.wait_for_patch(&bed.ovs)?;
        let repairs = bed.dpu_status()?.flow_repairs - repairs_before;
        println!(
            "ovn-{daemon} kill -9 + restart 0.5 s later: {lost} of 300 pings lost (100/s); our flows repaired {repairs} times"
        );
        bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
        assert_traffic(&bed, REMOTE_POD)?;
    }
    Ok(())
}

/// Both families in one contract, end to end through OVN's gateway router:
/// ping and TCP to a remote pod over IPv6 as over IPv4, the pod seeing the
/// node's IPv6 address; on the underlay, only node addresses.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch, OVN and tcpdump; run as root with --include-ignored (CI does)"]
fn dual_stack_through_real_ovn() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    let capture = Capture::start(&bed, "ip6")?;
    let took = bed.wait_for_ping(REMOTE_POD6, RECOVERY)?;
    println!("IPv6 path up {took:?} after the IPv4 one");
    assert_traffic(&bed, REMOTE_POD6)?;
    assert_traffic(&bed, REMOTE_POD)?;
    std::thread::sleep(Duration::from_millis(300));
    let decoded = capture.stop()?;
    let lines: Vec<&str> = decoded.lines().collect();
    let from_node = lines
        .iter()
        .filter(|l| l.contains(&format!("IP6 {NODE_IP6}")))
        .count();
    let masquerade = lines.iter().filter(|l| l.contains("IP6 fd69:")).count();
    println!(
        "on the underlay (IPv6): {from_node} packets from {NODE_IP6}, {masquerade} from the masquerade subnet"
    );
    anyhow::ensure!(from_node > 0, "no IPv6 packet from the node IP: {lines:#?}");
    anyhow::ensure!(
        masquerade == 0,
        "masquerade sources on the wire: {lines:#?}"
    );
    Ok(())
}

/// The host agent's repairs and reconciles, from `host-agent status --json`.
fn host_counters(bed: &Testbed) -> anyhow::Result<(u64, u64)> {
    let report: host_agent::local_status::StatusReport =
        serde_json::from_str(&bed.host_status(true)?)?;
    Ok((report.repairs, report.reconciles))
}

/// Live beside ovnkube-node on both sides, as it behaves in a cluster (its
/// timers compressed): on the DPU it rewrites the whole gateway bridge with
/// `--bundle replace-flows` every second; on the host its route manager owns
/// both cluster CIDRs' routes through mp0 (re-synced every 20 ms) and its
/// masquerade reconciler owns the masquerade address, the dummy next hop's
/// neighbour and a service route. For 5 s at ~1000 pings/s to a remote pod:
/// packets lost, packets that took mp0, and how often each side had to put
/// something back (ovnkube's emulators: 0 means we never touched their
/// objects; ours: repairs are our writes after drift).
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn live_beside_ovnkube_node_on_both_sides() -> anyhow::Result<()> {
    const PINGS: u32 = 5000;
    let (_guard, bed) = path_up()?;
    bed.host.sh("set -e
        nft add table netdev mp0seen
        nft add chain netdev mp0seen in '{ type filter hook ingress device mp0-peer priority 0; }'
        nft add rule netdev mp0seen in ip daddr 198.18.128.0/17 counter
        nft add rule netdev mp0seen in ip6 daddr fd00:10:244::/48 counter")?;
    let routes = [
        format!("{CLUSTER_CIDR} dev ovn-k8s-mp0"),
        format!("{CLUSTER_CIDR6} dev ovn-k8s-mp0"),
    ];
    let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
    let route_manager =
        ovnkube::RouteManager::start(&bed.host, &routes, Duration::from_millis(20))?;
    let reconciler = ovnkube::MasqueradeReconciler::start(
        &bed.host,
        ovnkube::MasqueradeSetup {
            address: "169.254.0.2/17".into(),
            device: "eth0".into(),
            neighbour: (DUMMY_NEXT_HOP.into(), "0a:58:a9:fe:00:04".into()),
            service_route: format!("10.96.0.0/16 via {DUMMY_NEXT_HOP} dev eth0 mtu 1400"),
        },
        Duration::from_millis(200),
    )?;
    let rewriter = ovnkube::FlowRewriter::start(
        bed.ovs.openflow("breth0"),
        bed.ovs.ovnkube_flows_file(NODE_IP)?,
        Duration::from_secs(1),
    );
    // Let the first rewrite and its restore settle, then count.
    std::thread::sleep(Duration::from_millis(1500));
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    let (repairs_before, reconciles_before) = host_counters(&bed)?;
    let flow_repairs_before = bed.dpu_status()?.flow_repairs;
    let lost = bed.pings_lost_during(REMOTE_POD, PINGS, "0.001", || Ok(()))?;
    let (repairs, reconciles) = host_counters(&bed)?;
    let flow_repairs = bed.dpu_status()?.flow_repairs - flow_repairs_before;
    let rewrites = rewriter.stop();
    let route_restores = route_manager.stop();
    let masquerade_restores = reconciler.stop();
    // Packets to remote pods (either family) that left through mp0.
    let through_mp0: u64 = {
        let listing = bed.host.sh("nft list table netdev mp0seen")?;
        let words: Vec<&str> = listing.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    };
    println!(
        "beside ovnkube-node for {PINGS} pings at ~1000/s: {lost} lost, {through_mp0} packets took mp0; \
         DPU: {rewrites} bridge rewrites in all, our flows restored {flow_repairs} times meanwhile; \
         host: its route manager restored its routes {route_restores} times, its masquerade \
         reconciler {masquerade_restores} times; host-agent repairs {}, reconciles {}",
        repairs - repairs_before,
        reconciles - reconciles_before
    );
    anyhow::ensure!(through_mp0 == 0, "packets took mp0");
    anyhow::ensure!(route_restores == 0, "we touched ovnkube's routes");
    anyhow::ensure!(
        masquerade_restores == 0,
        "we touched ovnkube's masquerade address, neighbour or service route"
    );
    anyhow::ensure!(repairs == repairs_before, "ovnkube's writes made us write");
    anyhow::ensure!(
        flow_repairs > 0,
        "no rewrite hit our flows: the emulator did nothing"
    );
    assert_traffic(&bed, REMOTE_POD)?;
    assert_traffic(&bed, REMOTE_POD6)
}

/// A burst of ovnkube rewrites (ten `--bundle replace-flows` back to back,
/// as a flurry of service changes makes) while the host pings a remote pod
/// at ~1000/s: packets lost printed, the path checked after it.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn an_ovnkube_rewrite_burst_is_survived() -> anyhow::Result<()> {
    const BURST: u32 = 10;
    let (_guard, bed) = path_up()?;
    let flows = bed.ovs.ovnkube_flows_file(NODE_IP)?;
    let target = bed.ovs.openflow("breth0");
    ovnkube::replace_flows(&target, &flows)?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    let repairs_before = bed.dpu_status()?.flow_repairs;
    let mut burst_took = Duration::ZERO;
    let lost = bed.pings_lost_during(REMOTE_POD, 3000, "0.001", || {
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        for _ in 0..BURST {
            ovnkube::replace_flows(&target, &flows)?;
        }
        burst_took = started.elapsed();
        Ok(())
    })?;
    let repairs = bed.dpu_status()?.flow_repairs - repairs_before;
    println!(
        "a burst of {BURST} ovnkube rewrites in {burst_took:?} at ~1000 pings/s: {lost} of 3000 lost; our flows restored {repairs} times"
    );
    anyhow::ensure!(repairs > 0, "the burst never hit our flows");
    assert_traffic(&bed, REMOTE_POD)
}

/// At the contract's limit, 1024 cluster CIDRs (1022 /27s of 198.19.0.0/17,
/// the testbed's /17 and its IPv6 /48), with both agents and real OVN:
/// traffic reaches pods sampled across the range (16 /27s, first and last
/// included, and both of the testbed's pods), the bridge holds one flow per
/// CIDR, the host two routes per CIDR; after an ovnkube rewrite of the
/// bridge every sampled pod is reachable again.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn the_path_at_1024_cidrs_and_a_wipe_healed() -> anyhow::Result<()> {
    let (_guard, bed) = path_up()?;
    let cidrs = cidrs_at_the_limit();
    // 16 of the /27s, spread from the first to the last; a pod at .1 of each.
    let small = &cidrs[1..];
    let sampled: Vec<String> = (0..16)
        .map(|k| &small[k * (small.len() - 1) / 15])
        .map(|cidr| {
            let net: ipnet::Ipv4Net = cidr.parse()?;
            Ok(std::net::Ipv4Addr::from(u32::from(net.network()) + 1).to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    for pod in &sampled {
        bed.underlay.sh(&format!("ip addr add {pod}/32 dev lo"))?;
    }
    bed.ovn
        .nbctl(&["lr-route-add", "GR_node1", LIMIT_SUPERNET, REMOTE_NODE_IP])?;
    bed.write_dpu_config(&cidrs.iter().map(String::as_str).collect::<Vec<_>>())?;
    let started = Instant::now();
    bed.reload_dpu_agent()?;
    let pods: Vec<&str> = sampled
        .iter()
        .map(String::as_str)
        .chain([REMOTE_POD, REMOTE_POD6])
        .collect();
    for pod in &pods {
        bed.wait_for_ping(pod, RECOVERY)?;
    }
    println!(
        "1024 CIDRs (SIGHUP) -> all {} sampled pods answer: {:?}",
        pods.len(),
        started.elapsed()
    );

    let cidr_flows = |bed: &Testbed| -> anyhow::Result<usize> {
        let dump = bed
            .ovs
            .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1,table=100"])?;
        Ok(dump.lines().filter(|l| l.contains("reg12=")).count())
    };
    let flows = cidr_flows(&bed)?;
    anyhow::ensure!(
        flows == noverlay_proto::contract::MAX_CLUSTER_CIDRS,
        "{flows} CIDR flows on the bridge"
    );
    let routes = bed
        .host
        .sh("ip route show proto 240; ip -6 route show proto 240")?;
    anyhow::ensure!(
        routes.lines().count() == 2 * noverlay_proto::contract::MAX_CLUSTER_CIDRS,
        "{} host routes of ours, expected two per CIDR",
        routes.lines().count()
    );
    for pod in [sampled[0].as_str(), &sampled[15], REMOTE_POD6] {
        assert_traffic(&bed, pod)?;
    }

    // ovnkube rewrites the bridge: every flow of ours is gone until the
    // agent restores them all.
    let ovnkube_flows = bed.ovs.ovnkube_flows_file(NODE_IP)?;
    let started = Instant::now();
    ovnkube::replace_flows(&bed.ovs.openflow("breth0"), &ovnkube_flows)?;
    for pod in &pods {
        bed.wait_for_ping(pod, RECOVERY)?;
    }
    println!(
        "ovnkube rewrite -> all sampled pods answer again: {:?}",
        started.elapsed()
    );
    let flows = cidr_flows(&bed)?;
    anyhow::ensure!(
        flows == noverlay_proto::contract::MAX_CLUSTER_CIDRS,
        "{flows} CIDR flows on the bridge after the rewrite"
    );
    assert_traffic(&bed, &sampled[7])
}
