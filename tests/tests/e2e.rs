//! End to end on a real datapath: host -> DPU OVS -> OVN stand-in ->
//! underlay and back, with both agents as real processes, then faults, each
//! followed by the same traffic check and a measured recovery time.
//! Needs root, OVS and the built binaries (`cargo build --workspace`).

use noverlay_tests::{
    e2e::{self, CLUSTER_CIDR, LATE_CIDR, LATE_POD, NODE_IP, REMOTE_POD, Testbed},
    netns::privileged_or_skip,
    ovs,
};
use std::time::{Duration, Instant};

const RECOVERY: Duration = Duration::from_secs(20);

/// What a user checks: ping and a TCP exchange reach the remote pod, and the
/// pod sees the node underlay IP as the source.
fn assert_traffic(bed: &Testbed, pod: &str) -> anyhow::Result<()> {
    anyhow::ensure!(bed.ping(pod), "ping {pod} failed\n{}", bed.agent_logs());
    // Bound to the node IP, the host's nft SNAT must do the first SNAT.
    let bound = bed
        .host
        .sh_unchecked(&format!("ping -I {NODE_IP} -c 1 -W 1 {pod}"))?;
    anyhow::ensure!(
        bound.status.success(),
        "ping {pod} from {NODE_IP} failed: {}{}",
        String::from_utf8_lossy(&bound.stdout),
        String::from_utf8_lossy(&bound.stderr)
    );
    let seen = bed.tcp_exchange(pod)?;
    anyhow::ensure!(
        seen == NODE_IP,
        "the remote pod saw source {seen:?}, expected the node underlay IP {NODE_IP}"
    );
    Ok(())
}

#[test]
fn traffic_flows_end_to_end_and_survives_every_fault() -> anyhow::Result<()> {
    if !privileged_or_skip("e2e") || !ovs::available_or_skip("e2e") {
        return Ok(());
    }
    let mut bed = Testbed::build()?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    let first = bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    println!("path up {first:?} after starting both agents");
    assert_traffic(&bed, REMOTE_POD)?;

    // What the operator sees on each side.
    let before = bed.path_flow_packets()?;
    assert_traffic(&bed, REMOTE_POD)?;
    // The userspace datapath folds its counters into the flows every ~0.5 s.
    let started = Instant::now();
    while bed.path_flow_packets()? <= before {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "the path flows' counters did not move"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mp0 = bed.host.sh("ip route show dev ovn-k8s-mp0")?;
    assert!(
        !mp0.contains(CLUSTER_CIDR),
        "cluster route via mp0 still there: {mp0}"
    );
    assert!(
        mp0.contains("198.18.130.0/24"),
        "node subnet route removed: {mp0}"
    );
    let snat = bed.host.sh("nft list table inet noverlay")?;
    assert!(
        !snat.contains("counter packets 0 "),
        "the host SNAT rule counted nothing:\n{snat}"
    );
    let route = bed.host.sh(&format!("ip route show {CLUSTER_CIDR}"))?;
    assert!(
        route.contains("via 169.254.0.4 dev eth0 proto 240"),
        "{route}"
    );

    let mut recoveries = Vec::new();

    // Agent restarts are hitless: the path keeps working while each is down.
    bed.kill_dpu_agent();
    assert_traffic(&bed, REMOTE_POD)?;
    bed.start_dpu_agent()?;
    recoveries.push((
        "dpu-agent kill -9 + restart",
        bed.wait_for_ping(REMOTE_POD, RECOVERY)?,
    ));
    assert_traffic(&bed, REMOTE_POD)?;

    bed.kill_host_agent();
    assert_traffic(&bed, REMOTE_POD)?;
    bed.start_host_agent()?;
    recoveries.push((
        "host-agent kill -9 + restart",
        bed.wait_for_ping(REMOTE_POD, RECOVERY)?,
    ));
    assert_traffic(&bed, REMOTE_POD)?;

    let host_faults: [(&str, &str); 3] = [
        ("nft flush ruleset", "nft flush ruleset"),
        ("route deleted", &format!("ip route del {CLUSTER_CIDR}")),
        (
            "gateway link down/up",
            "ip link set eth0 down; ip link set eth0 up",
        ),
    ];
    for (fault, script) in host_faults {
        let started = Instant::now();
        bed.host.sh(script)?;
        bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
        recoveries.push((fault, started.elapsed()));
        assert_traffic(&bed, REMOTE_POD)?;
    }

    let started = Instant::now();
    bed.crash_and_restart_vswitchd()?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    recoveries.push(("ovs-vswitchd kill -9 + restart", started.elapsed()));
    assert_traffic(&bed, REMOTE_POD)?;

    // A CIDR added on the DPU at runtime: traffic to it uses the path.
    assert!(
        !bed.ping(LATE_POD),
        "{LATE_POD} reachable before its CIDR was added"
    );
    bed.write_dpu_config(&[CLUSTER_CIDR, LATE_CIDR])?;
    let started = Instant::now();
    bed.reload_dpu_agent()?;
    bed.wait_for_ping(LATE_POD, RECOVERY)?;
    recoveries.push(("CIDR added (SIGHUP)", started.elapsed()));
    assert_traffic(&bed, LATE_POD)?;
    assert_traffic(&bed, REMOTE_POD)?;

    // ...and removed: no route through the DPU any more.
    bed.write_dpu_config(&[CLUSTER_CIDR])?;
    bed.reload_dpu_agent()?;
    let started = Instant::now();
    while bed
        .host
        .sh(&format!("ip route show {LATE_CIDR}"))?
        .contains("proto 240")
    {
        anyhow::ensure!(
            started.elapsed() < RECOVERY,
            "route for {LATE_CIDR} not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    recoveries.push(("CIDR removed (SIGHUP)", started.elapsed()));
    assert!(
        !bed.ping(LATE_POD),
        "{LATE_POD} still reachable through the path"
    );
    assert_traffic(&bed, REMOTE_POD)?;

    println!("\nrecovery times (traffic check passing again):");
    for (fault, took) in &recoveries {
        println!("  {fault:<32} {took:?}");
    }
    drop(bed);
    let _ = e2e::BRIDGE_MAC;
    Ok(())
}
