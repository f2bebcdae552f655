//! The network's own signals on the real datapath: ICMP errors from the
//! underlay reach the host's sockets (path MTU discovery, traceroute), and
//! fragmented datagrams cross both SNATs, with the base pipeline and next to
//! OVN-Kubernetes' flow set. The testbed gains two routers with a link
//! narrower than the contract's MTU (1400) between them
//! ([`noverlay_tests::routed`]). Privileged: ignored unless run as root
//! with `--include-ignored`.

use noverlay_tests::{
    e2e::{BRIDGE_MAC, NODE_IP, REMOTE_POD, Testbed},
    netns,
    ovn::{self, EXTERNAL_PORT},
    ovnkube, ovs,
    routed::{
        FAR_POD, FAR_POD6, HOP2, HOP2_6, HOP3, HOP3_6, RoutedUnderlay, tcp_upload,
        udp_echo_from_host,
    },
};
use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

const RECOVERY: Duration = Duration::from_secs(20);
/// The link between the two routers: narrower than the contract's 1400,
/// wide enough for IPv6 (1280) and for OVS conntrack's smallest fragment
/// (1200 bytes for IPv4 by default; see docs/design.md).
const NARROW_MTU: u32 = 1300;
const MEGABYTE: usize = 1 << 20;
/// Hop 1 as the host sees it: OVN's gateway router answers from the node
/// IP, which the host owns (and would drop as a martian); our flow hands
/// the answer over from OVN's masquerade IP instead.
const OVN_MASQUERADE_IP: &str = "169.254.0.1";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Bed {
    bed: Testbed,
    routed: RoutedUnderlay,
    _guard: MutexGuard<'static, ()>,
}

/// The testbed with both agents running, the narrow hop behind the
/// underlay, and (`next_to_ovnkube`) OVN-Kubernetes' flow set written over
/// the bridge as ovnkube-node writes it, ours restored beside it.
fn routed_path_up(next_to_ovnkube: bool) -> anyhow::Result<Bed> {
    netns::require_privileges()?;
    ovs::require()?;
    ovn::require()?;
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut bed = Testbed::build_for_test()?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    bed.wait_for_ping(REMOTE_POD, RECOVERY)?;
    let routed = RoutedUnderlay::attach(&bed, NARROW_MTU)?;
    if next_to_ovnkube {
        let flows = bed.ovs.ovnkube_flows_file(NODE_IP)?;
        ovnkube::replace_flows(&bed.ovs.openflow("breth0"), &flows)?;
    }
    for pod in [FAR_POD, FAR_POD6] {
        bed.wait_for_ping(pod, RECOVERY)?;
    }
    if next_to_ovnkube {
        let theirs = bed.ovs.flows_not_of("breth0", 0x6e6f7672)?;
        anyhow::ensure!(
            theirs.iter().any(|f| f.contains("nw_frag=yes")),
            "ovnkube's reassembly flow is not on the bridge: {theirs:#?}"
        );
    }
    Ok(Bed {
        bed,
        routed,
        _guard: guard,
    })
}

/// A 1 MB upload to the far pod completes, and the host's route cache has
/// learned the narrow hop's MTU from the router's ICMP error.
fn assert_path_mtu_discovery(bed: &Testbed, pod: &str) -> anyhow::Result<()> {
    let (counted, took) = tcp_upload(bed, pod, MEGABYTE, Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("1 MB upload to {pod}: {e}\n{}", bed.agent_logs()))?;
    anyhow::ensure!(counted == MEGABYTE, "the far pod counted {counted} bytes");
    let cached = bed.host.sh(&format!("ip route get {pod}"))?;
    println!("1 MB to {pod} in {took:?}; ip route get: {}", cached.trim());
    anyhow::ensure!(
        cached.contains(&format!("mtu {NARROW_MTU}")),
        "the host did not learn the path MTU {NARROW_MTU}: {cached}"
    );
    Ok(())
}

/// Each hop of a traceroute from the host (UDP probes; traceroute reads the
/// errors through IP_RECVERR), by its address: hop 1 is OVN's gateway
/// router, the rest are the routers and the pod.
fn traceroute(bed: &Testbed, pod: &str) -> anyhow::Result<Vec<String>> {
    let out = bed
        .host
        .sh(&format!("traceroute -n -q 1 -w 1 -m 4 {pod}"))?;
    println!("traceroute {pod}:\n{out}");
    Ok(out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect())
}

/// Hops 2-4 (the routers and the pod) answer; hop 1, OVN's gateway router,
/// where `hop1` names its address (IPv4: OVN 23.03 answers TTL 1; IPv6:
/// only for sources in its port's network, which the masquerade IP is not,
/// so it stays silent).
fn assert_traceroute(
    bed: &Testbed,
    pod: &str,
    hop1: Option<&str>,
    hop2: &str,
    hop3: &str,
) -> anyhow::Result<()> {
    let hops = traceroute(bed, pod)?;
    let at = |i: usize| hops.get(i).map(String::as_str);
    anyhow::ensure!(
        hop1.is_none_or(|hop1| at(0) == Some(hop1))
            && at(1) == Some(hop2)
            && at(2) == Some(hop3)
            && at(3) == Some(pod),
        "traceroute to {pod}: hops {hops:?}, expected {hop1:?}, {hop2}, {hop3}, {pod} at 1-4"
    );
    Ok(())
}

/// UDP datagrams of 4000 and 9000 bytes to the far pod and their echo back
/// (fragments each way, through both SNATs and the narrow hop).
fn assert_large_datagrams(bed: &Testbed, pod: &str) -> anyhow::Result<()> {
    for size in [4000, 9000] {
        let got = udp_echo_from_host(bed, pod, size, 5)?;
        println!("UDP {size} bytes to {pod} and back: echo on try {got:?}");
        anyhow::ensure!(
            got.is_some(),
            "no echo of {size} bytes from {pod} in 5 tries\n{}",
            bed.ovs
                .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Both families: path MTU discovery, traceroute (every hop but IPv6's
/// first), large UDP datagrams each way.
fn assert_the_networks_signals_arrive(bed: &Testbed) -> anyhow::Result<()> {
    for (pod, hop1, hop2, hop3) in [
        (FAR_POD, Some(OVN_MASQUERADE_IP), HOP2, HOP3),
        (FAR_POD6, None, HOP2_6, HOP3_6),
    ] {
        assert_path_mtu_discovery(bed, pod)?;
        assert_traceroute(bed, pod, hop1, hop2, hop3)?;
        assert_large_datagrams(bed, pod)?;
    }
    Ok(())
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn path_mtu_discovery_traceroute_and_fragments_through_both_snats() -> anyhow::Result<()> {
    let up = routed_path_up(false)?;
    let bed = &up.bed;
    // Every flow of ours, both families, is a series of its own.
    let metrics = bed.dpu_metrics()?;
    anyhow::ensure!(
        metrics.contains("noverlay_dpu_flow_packets_total{"),
        "no flow counters: {metrics}"
    );
    let repeated = noverlay_tests::harness::repeated_series(&metrics);
    anyhow::ensure!(repeated.is_empty(), "repeated series: {repeated:#?}");
    assert_the_networks_signals_arrive(bed)
}

#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn the_same_next_to_ovnkubes_flow_set() -> anyhow::Result<()> {
    let up = routed_path_up(true)?;
    let bed = &up.bed;
    assert_the_networks_signals_arrive(bed)
}

/// Packets counted by our flows in `table` whose dump line contains
/// `needle`.
fn our_packets(bed: &Testbed, table: &str, needle: &str) -> anyhow::Result<u64> {
    let dump = bed
        .ovs
        .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?;
    Ok(dump
        .lines()
        .filter(|l| l.contains(&format!("table={table},")) && l.contains(needle))
        .filter_map(ovs::n_packets)
        .sum())
}

/// Polls `read` until it reaches `at_least`: a flow's counter moves only
/// when Open vSwitch revalidates its megaflows (about once a second).
fn counter_reaches(
    what: &str,
    at_least: u64,
    read: impl Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + RECOVERY;
    loop {
        let now = read()?;
        if now >= at_least {
            return Ok(now);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{what}: {now}, expected at least {at_least}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An ICMP error crafted on the underlay about a connection that never
/// existed is not handed to the host by our flows: conntrack relates it to
/// nothing of ours, and it goes back to table 0 as it came.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn an_icmp_error_about_no_connection_of_ours_is_not_handed_to_the_host() -> anyhow::Result<()> {
    let up = routed_path_up(false)?;
    let bed = &up.bed;
    // A real one first, so the counters are known to move.
    assert_traceroute(bed, FAR_POD, Some(OVN_MASQUERADE_IP), HOP2, HOP3)?;
    let to_host = || our_packets(bed, "101", "ct_state=+rel+trk");
    let missed = || our_packets(bed, "101", "priority=0");
    // Hops 2 and 3 and the pod's port unreachable: three errors of ours,
    // all counted (revalidated) before the crafted ones are sent.
    let to_host_before = counter_reaches("the traceroute's errors handed to the host", 3, to_host)?;
    std::thread::sleep(Duration::from_millis(1500));
    anyhow::ensure!(
        to_host()? == to_host_before,
        "the traceroute's errors were still being counted"
    );
    let missed_before = missed()?;
    // What our flow hands over leaves from the dummy next hop's MAC; what
    // the other flows deliver (NORMAL, to the node IP the host owns) keeps
    // the router's.
    let capture = bed.host.spawn(|| async {
        let out = std::process::Command::new("timeout")
            .args([
                "5",
                "tcpdump",
                "-n",
                "-l",
                "-e",
                "-i",
                "eth0",
                &format!("icmp and src host {HOP2} and ether src 0a:58:a9:fe:00:04"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    });
    std::thread::sleep(Duration::from_millis(1000));
    // Fragmentation needed, from router 1 to the node IP, quoting a UDP
    // packet the node never sent.
    bed.underlay.sh(&format!(
        "/usr/bin/python3 -c '
from scapy.all import Ether, IP, ICMP, UDP, sendp
inner = IP(src=\"{NODE_IP}\", dst=\"{FAR_POD}\") / UDP(sport=40000, dport=9)
error = Ether(dst=\"{BRIDGE_MAC}\") / IP(src=\"{HOP2}\", dst=\"{NODE_IP}\") / ICMP(type=3, code=4, nexthopmtu=1200) / inner
sendp(error, iface=\"eth0\", count=3, verbose=False)
'"
    ))?;
    let missed_after = counter_reaches(
        "crafted errors sent back to table 0",
        missed_before + 3,
        missed,
    )?;
    let to_host_after = to_host()?;
    let seen = capture
        .join()
        .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
    println!(
        "crafted errors: handed to the host {} (before {to_host_before}), sent back to table 0 {}; host capture from our flow: {seen:?}",
        to_host_after - to_host_before,
        missed_after - missed_before
    );
    anyhow::ensure!(to_host_after == to_host_before, "our flows took it");
    anyhow::ensure!(
        !seen.contains(HOP2),
        "the host got the crafted error from our flow: {seen}"
    );
    Ok(())
}

/// OVN's own `gateway_mtu` below the contract's MTU is a path MTU black
/// hole no flow can mend (the router's "fragmentation needed" comes from
/// the node IP, which the host owns and drops): dpu-agent names it in its
/// OVN check, and it is no false alarm.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn a_gateway_mtu_below_the_contracts_is_named() -> anyhow::Result<()> {
    let up = routed_path_up(false)?;
    let bed = &up.bed;
    let ovn_source = |what: &str, wanted: &str| {
        bed.ovn_source_until(what, RECOVERY, |state, _| state == wanted)
            .map(|(_, error)| error)
    };
    ovn_source("agreement first", "ok")?;
    bed.ovn.nbctl(&[
        "set",
        "Logical_Router_Port",
        EXTERNAL_PORT,
        "options:gateway_mtu=1300",
    ])?;
    let error = ovn_source("gateway_mtu set", "failed")?;
    println!("named: {error}");
    anyhow::ensure!(
        error.contains("gateway_mtu=1300") && error.contains("MTU 1400"),
        "{error}"
    );
    let stuck = tcp_upload(bed, FAR_POD, MEGABYTE, Duration::from_secs(3));
    println!(
        "1 MB upload with gateway_mtu 1300: {:?}",
        stuck.as_ref().map_err(ToString::to_string)
    );
    let timed_out = stuck.as_ref().is_err_and(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        })
    });
    anyhow::ensure!(
        timed_out,
        "the upload did not hang (the check would be a false alarm): {:?}",
        stuck.map_err(|e| e.to_string())
    );
    bed.ovn.nbctl(&[
        "remove",
        "Logical_Router_Port",
        EXTERNAL_PORT,
        "options",
        "gateway_mtu",
    ])?;
    ovn_source("gateway_mtu removed", "ok")?;
    assert_path_mtu_discovery(bed, FAR_POD)
}

/// The measured limit of the userspace datapath: when a router on the way
/// cuts the remote side's fragments again (they carry no DF, so it may),
/// the tails are smaller than Open vSwitch's conntrack takes (1200 bytes
/// for IPv4 by default) and the datagram is lost on the DPU. Not promised
/// away: shown, counted and exported by dpu-agent.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn fragments_cut_again_on_the_way_are_lost_on_the_dpu_and_counted() -> anyhow::Result<()> {
    let up = routed_path_up(false)?;
    let bed = &up.bed;
    let too_small = || -> anyhow::Result<u64> {
        let metrics = bed.dpu_metrics()?;
        metrics
            .lines()
            .find(|l| l.starts_with("noverlay_dpu_fragments_too_small_total{family=\"ipv4\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no IPv4 too-small counter in the metrics:\n{metrics}"))
    };
    // Within the limit: the far node fragments to the narrow MTU itself.
    assert_large_datagrams(bed, FAR_POD)?;
    // The agent reads the switch's counter every 5 s: a reading at least
    // that recent, with nothing cut since.
    std::thread::sleep(Duration::from_secs(6));
    let before = too_small()?;
    up.routed.forget_narrow_mtu()?;
    let lost = udp_echo_from_host(bed, FAR_POD, 4000, 3)?;
    anyhow::ensure!(
        lost.is_none(),
        "a reply cut again on the way arrived ({lost:?}): the limit is gone, update docs/design.md"
    );
    let after = counter_reaches(
        "the dropped fragments counted (noverlay_dpu_fragments_too_small_total)",
        before + 1,
        too_small,
    )?;
    println!(
        "4000-byte replies cut again by router 2: lost; noverlay_dpu_fragments_too_small_total{{family=\"ipv4\"}} {before} -> {after}"
    );
    Ok(())
}

/// An ICMP error about a host -> service connection still takes
/// ovnkube-node's path: the gateway router load-balances a service VIP (of
/// the fixture's service CIDR) to the far pod and SNATs it to the node IP
/// as ovnkube's routers do (`lb_force_snat_ip=router_ip`), the host routes
/// the service CIDR via the dummy next hop, ovnkube's flow set is on the
/// bridge. A TCP traceroute to the VIP gets its routers' errors back through
/// ovnkube's zone-64001 flow; ours sort them and hand them back untouched.
#[test]
#[ignore = "privileged: needs root, network namespaces, Open vSwitch and OVN; run as root with --include-ignored (CI does)"]
fn an_icmp_error_about_a_service_connection_takes_ovnkubes_path() -> anyhow::Result<()> {
    const VIP: &str = "198.20.0.10";
    let up = routed_path_up(true)?;
    let bed = &up.bed;
    bed.ovn.nbctl(&[
        "lb-add",
        "svc",
        &format!("{VIP}:80"),
        &format!("{FAR_POD}:{}", noverlay_tests::routed::SINK_PORT),
        "tcp",
    ])?;
    bed.ovn.nbctl(&["lr-lb-add", ovn::GATEWAY_ROUTER, "svc"])?;
    bed.ovn.nbctl(&[
        "set",
        "Logical_Router",
        ovn::GATEWAY_ROUTER,
        "options:lb_force_snat_ip=router_ip",
    ])?;
    bed.host
        .sh("ip route add 198.20.0.0/16 via 169.254.0.4 dev eth0 mtu 1400")?;
    let theirs = || -> anyhow::Result<u64> {
        let dump = bed
            .ovs
            .ofctl("dump-flows", "breth0", &["cookie=0xdeff105/-1"])?;
        Ok(dump
            .lines()
            .filter(|l| l.contains("nw_src=198.20.0.0/16") && l.contains("zone=64001"))
            .filter_map(ovs::n_packets)
            .sum())
    };
    let to_host = || our_packets(bed, "101", "ct_state=+rel+trk");
    let missed = || our_packets(bed, "101", "priority=0");
    // The service answers first (OVN's load balancer is up).
    noverlay_test_support::eventually_blocking("the service answering", RECOVERY, || {
        bed.host
            .sh_unchecked(&format!("traceroute -n -q 1 -w 1 -m 4 -T -p 80 {VIP}"))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" 4  {VIP}")))
    })
    .map_err(anyhow::Error::msg)?;
    // Counters settled (revalidated) before the run that is counted.
    std::thread::sleep(Duration::from_millis(1500));
    let before = (to_host()?, missed()?, theirs()?);
    let out = bed
        .host
        .sh(&format!("traceroute -n -q 1 -w 1 -m 3 -T -p 80 {VIP}"))?;
    let missed_after = counter_reaches("errors through our related table", before.1 + 2, missed)?;
    let theirs_after = counter_reaches(
        "errors through ovnkube's zone-64001 flow",
        before.2 + 2,
        theirs,
    )?;
    let after = (to_host()?, missed_after, theirs_after);
    println!(
        "TCP traceroute to the service:\n{out}counters (ours to the host, sent back to table 0, ovnkube's zone-64001 return flow): {before:?} -> {after:?}"
    );
    let hops: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    anyhow::ensure!(
        hops.get(1).is_some_and(|h| *h != "*") && hops.get(2).is_some_and(|h| *h != "*"),
        "the routers' errors about the service connection did not reach the host: {hops:?}"
    );
    anyhow::ensure!(after.0 == before.0, "our flows handed them to the host");
    Ok(())
}
