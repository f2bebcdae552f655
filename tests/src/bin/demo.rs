//! The demo. As root (with Open vSwitch installed and the agents built), it
//! builds the end-to-end testbed (network namespaces, OVS userspace
//! datapath, real OVN, nftables), runs both agents as real processes, shows the
//! negotiated contract, the host routes and nft rule, the DPU flows with
//! their counters and traffic going through (a traceroute and a transfer
//! across a narrower hop among it), then tears everything down. Where FRR
//! is installed, a second testbed shows BGP: the remote nodes' pod subnets
//! learned on the DPU and imported into OVN, the host's few routes, traffic
//! to pods on two nodes, with both agents configured next to ovnkube.
//!
//! Without root it runs both agents in-process on loopback with the dry-run
//! host dataplane instead: same negotiation and plans, nothing changed on
//! the machine.

use host_agent::{
    client,
    local_status::StatusReport,
    plan::{self, HostSettings},
};
use noverlay_proto::{
    pb,
    tls::{self, PeerIdentity},
};
use noverlay_tests::{
    bgp::{self, BgpTestbed},
    e2e::{self, Testbed},
    harness::{self, Certs, DPU_SAN, DpuOptions, HostOptions, RunningDpu, RunningHost},
    netns::NetNs,
    ovs, routed,
};
use std::time::Duration;

fn section(title: &str) {
    println!("\n==== {title} ====");
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && ovs::available_or_skip("the real-datapath demo") && ovn_available() {
        let bins = e2e::Binaries::locate();
        match bins {
            Ok(_) => return real_datapath_demo(),
            Err(e) => println!("{e}\nfalling back to the loopback demo"),
        }
    } else if !root {
        println!("not root: running the loopback demo (run as root for the real datapath)");
    }
    tokio::runtime::Runtime::new()?.block_on(loopback_demo())
}

fn ovn_available() -> bool {
    match noverlay_tests::ovn::require() {
        Ok(()) => true,
        Err(e) => {
            println!("SKIPPED the real-datapath demo: {e}");
            false
        }
    }
}

fn show(title: &str, ns: &NetNs, command: &str) -> anyhow::Result<()> {
    section(&format!("{title}   $ {command}"));
    print!("{}", ns.sh(command)?);
    Ok(())
}

fn real_datapath_demo() -> anyhow::Result<()> {
    section("building the testbed: host, DPU (Open vSwitch, userspace datapath, OVN), underlay");
    println!("{}", e2e_diagram());
    let mut bed = Testbed::build()?;
    section(&format!(
        "configs and certificates in {}",
        bed.dir().display()
    ));
    print!("{}", std::fs::read_to_string(bed.dpu_config_path())?);
    print!("\n{}", std::fs::read_to_string(bed.host_config_path())?);
    section(&format!(
        "OVN's part (up in {:.1?}): the gateway router on breth0's MAC and the node IP   $ ovn-nbctl show; lr-route-list GR_node1",
        bed.ovn_ready
    ));
    print!("{}", bed.ovn.nbctl(&["show"])?);
    print!(
        "{}",
        bed.ovn
            .nbctl(&["lr-route-list", noverlay_tests::ovn::GATEWAY_ROUTER])?
    );
    print!("{}", bed.ovn.nbctl(&["static-mac-binding-list"])?);
    println!(
        "patch port made by ovn-controller on breth0: {} (ofport {})",
        noverlay_tests::ovn::PATCH_PORT,
        bed.ovs.patch_ofport()?
    );
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    let took = bed.wait_for_ping(e2e::REMOTE_POD, Duration::from_secs(20))?;
    section(&format!(
        "both agents running; the path was up {took:.1?} after start"
    ));

    // Ask the DPU agent over mTLS from the host, as an operator would.
    let status = bed.dpu_status()?;
    section("the negotiated contract as the host applied it   $ host-agent status");
    print!("{}", bed.host_status(false)?);
    section("the DPU's view (GetStatus from the host, over mTLS)");
    println!("peer identity: {}", status.peer_identity);
    if let Some(guard) = &status.uplink_guard {
        println!(
            "uplink guard: state {}, device {}, subnets {}",
            guard.state,
            guard.device,
            guard.subnets.join(", ")
        );
    }

    show("host routes", &bed.host, "ip route show")?;
    show("host neighbour", &bed.host, "ip neigh show dev eth0")?;
    show("host nftables", &bed.host, "nft list table inet noverlay")?;
    show(
        "DPU uplink guard (drops masquerade sources leaving the uplink)",
        &bed.dpu,
        "nft list table netdev noverlay_guard",
    )?;

    section("traffic from the host to the remote pod");
    print!(
        "{}",
        bed.host
            .sh(&format!("ping -c 3 -i 0.2 {}", e2e::REMOTE_POD))?
    );
    // A socket bound to the node IP goes through the host's nft SNAT.
    print!(
        "{}",
        bed.host.sh(&format!(
            "ping -I {} -c 2 -i 0.2 {}",
            e2e::NODE_IP,
            e2e::REMOTE_POD
        ))?
    );
    let seen = bed.tcp_exchange(e2e::REMOTE_POD)?;
    println!(
        "TCP to {}:{}: the remote pod saw the connection come from {seen} (the node underlay IP)",
        e2e::REMOTE_POD,
        e2e::TCP_PORT
    );
    section("the same over IPv6 (both families in one contract)");
    bed.wait_for_ping(e2e::REMOTE_POD6, Duration::from_secs(20))?;
    print!(
        "{}",
        bed.host
            .sh(&format!("ping -c 2 -i 0.2 {}", e2e::REMOTE_POD6))?
    );
    let seen = bed.tcp_exchange(e2e::REMOTE_POD6)?;
    println!(
        "TCP to [{}]:{}: the remote pod saw the connection come from {seen} (the node's IPv6 underlay address)",
        e2e::REMOTE_POD6,
        e2e::TCP_PORT
    );
    path_mtu_and_traceroute(&bed)?;
    std::thread::sleep(Duration::from_secs(1));
    section(
        "DPU flows on breth0 with counters   $ ovs-ofctl dump-flows breth0 cookie=0x6e6f7672/-1",
    );
    print!(
        "{}",
        bed.ovs
            .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?
    );
    show(
        "the host's SNAT rule counted the traffic",
        &bed.host,
        "nft list table inet noverlay | grep snat",
    )?;

    section("tearing down: agents stopped, OVN and OVS stopped, namespaces deleted");
    drop(bed);
    bgp_demo()
}

/// The routing decision stays on the DPU: FRR learns the remote nodes'
/// pod subnets on the DPU, the route import stand-in puts them in OVN, the
/// host holds its few routes. Both agents configured as an operator does
/// next to ovnkube (facts from ovnkube's file and OVN's northbound).
fn bgp_demo() -> anyhow::Result<()> {
    section("BGP: the routing decision stays on the DPU");
    if let Err(e) = noverlay_tests::frr::require() {
        println!("SKIPPED the BGP demo: {e}");
        return Ok(());
    }
    let mut bgp = BgpTestbed::build()?;
    let bed = &mut bgp.bed;
    bed.route_ovnkube_default_masquerade()?;
    bed.write_ovnkube_conf(&[e2e::CLUSTER_CIDR])?;
    let _dpu_ovnkube = bed.start_dpu_ovnkube(&[])?;
    let _host_ovnkube = bed.start_host_ovnkube()?;
    bed.write_dpu_config_next_to_ovnkube()?;
    bed.write_host_config_next_to_ovnkube()?;
    section(
        "ovn_k8s.conf, dpu-agent.toml and host-agent.toml as an operator writes them next to ovnkube",
    );
    print!("{}", std::fs::read_to_string(bed.ovnkube_conf_path())?);
    print!("\n{}", std::fs::read_to_string(bed.dpu_config_path())?);
    print!("\n{}", std::fs::read_to_string(bed.host_config_path())?);
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    let started = std::time::Instant::now();
    bgp.start_bgp()?;
    section(&format!(
        "BGP sessions up in {:.1?}: route reflector on the underlay, node2 and node3 advertising their pod subnets",
        started.elapsed()
    ));
    for node in bgp::NODES {
        for pod in node.pods {
            bgp.until_answered(pod, &node, Duration::from_secs(30))?;
        }
    }
    show(
        "learned on the DPU (proto bgp)",
        &bgp.bed.dpu,
        "ip route show proto bgp; ip -6 route show proto bgp",
    )?;
    section(
        "imported into OVN's gateway router (route import)   $ ovn-nbctl lr-route-list GR_node1",
    );
    print!(
        "{}",
        bgp.bed
            .ovn
            .nbctl(&["lr-route-list", noverlay_tests::ovn::GATEWAY_ROUTER])?
    );
    if let Some(routes) = bgp.bed.dpu_status()?.ovn_routes {
        println!(
            "dpu-agent GetStatus ovn_routes: {} routes take cluster traffic, {} from route import, unrouted CIDRs {:?}",
            routes.cluster_routes, routes.imported, routes.unrouted_cidrs
        );
    }
    show(
        "the host: the contract's routes only, no BGP route",
        &bgp.bed.host,
        "ip route show; ip -6 route show | grep -v fe80",
    )?;
    section("traffic from the host to pods on both remote nodes");
    for node in bgp::NODES {
        for pod in node.pods {
            println!("TCP to {pod}: {}", bgp.bed.tcp_exchange(pod)?);
        }
    }
    section("tearing down the BGP testbed");
    drop(bgp);
    Ok(())
}

/// Two routers behind the underlay with a 1300-byte link between them: the
/// network's own answers (ICMP errors) reach the host through both SNATs.
fn path_mtu_and_traceroute(bed: &Testbed) -> anyhow::Result<()> {
    section(
        "two routers behind the underlay, a 1300-byte link between them, a far pod behind (its MSS says 1460)",
    );
    let routed = routed::RoutedUnderlay::attach(bed, 1300)?;
    bed.wait_for_ping(routed::FAR_POD, Duration::from_secs(20))?;
    show(
        "traceroute from the host: hop 1 is OVN's gateway router (as OVN's masquerade IP), then the routers and the pod",
        &bed.host,
        &format!("traceroute -n -q 1 -w 1 -m 4 {}", routed::FAR_POD),
    )?;
    section("a 1 MB upload from the host to the far pod (TCP, MTU 1400 on the host's route)");
    let (counted, took) =
        routed::tcp_upload(bed, routed::FAR_POD, 1 << 20, Duration::from_secs(30))?;
    println!("the far pod counted {counted} bytes in {took:?}");
    show(
        "the router's \"fragmentation needed\" reached the host: its route cache learned the narrow hop",
        &bed.host,
        &format!("ip route get {}", routed::FAR_POD),
    )?;
    section(
        "UDP datagrams of 4000 and 9000 bytes to the far pod and back (fragments through both SNATs)",
    );
    for size in [4000, 9000] {
        let echo = routed::udp_echo_from_host(bed, routed::FAR_POD, size, 5)?;
        println!(
            "{size} bytes: {}",
            match echo {
                Some(attempt) => format!("echoed back (try {attempt})"),
                None => "no echo in 5 tries".to_string(),
            }
        );
    }
    drop(routed);
    Ok(())
}

fn e2e_diagram() -> &'static str {
    "  host ns: eth0 198.18.0.10 ── DPU ns: breth0 (pf0hpf | patch ↔ br-int: OVN gateway router GR_node1 | p0) ── underlay ns: remote node 198.18.0.20, pod 198.18.200.1"
}

async fn loopback_demo() -> anyhow::Result<()> {
    noverlay_runtime::logging::init(noverlay_runtime::logging::LogFormat::Human);
    let certs = Certs::new()?;
    let dir = certs.dir.path();
    section(&format!(
        "certificates (CA, dpu-agent, host-agent) in {}",
        dir.display()
    ));

    let options = DpuOptions {
        ipv6_cidrs: vec!["fd00:10:244::/48".into()],
        ..DpuOptions::default()
    };
    let dpu_config = harness::dpu_config(dir, &options, &certs.dpu)?;
    let dpu = RunningDpu::start(&dpu_config).await?;
    section("dpu-agent.toml");
    print!(
        "{}",
        harness::dpu_config_toml(
            &DpuOptions {
                listen: dpu.addr,
                ..options.clone()
            },
            &certs.dpu
        )
    );

    let host_options = HostOptions {
        ipv6: true,
        ..HostOptions::new(dpu.addr)
    };
    section("host-agent.toml");
    print!("{}", harness::host_config_toml(&host_options, &certs.host));
    let mut host = RunningHost::start(dir, &host_options, &certs.host, Vec::new())?;
    let status = host
        .wait_for("the contract to be applied", |s| s.applied.is_some())
        .await?;
    section("the negotiated contract as the host holds it (what `host-agent status` shows)");
    print!(
        "{}",
        StatusReport::new(
            &status,
            &dpu.addr.to_string(),
            "(in-process, loopback demo)"
        )
        .render()
    );
    let contract = status
        .applied
        .ok_or_else(|| anyhow::anyhow!("no contract"))?;

    let host_config = host_agent::config::HostConfig::load(&dir.join("host-agent.toml"))?;
    let settings = HostSettings::from_config(&host_config);
    section("host plan: address, neighbour, routes, nftables, mp0 routes");
    print!("{}", plan::plan(&contract, &settings).render());

    // Read the DPU's status over mTLS, exactly as grpcurl would.
    let mut grpc = client::connect(
        &dpu.addr.to_string(),
        &PeerIdentity::parse(DPU_SAN)?,
        tls::client_config(&certs.host)?,
    )
    .await?;
    let dpu_status = grpc.get_status(pb::GetStatusRequest {}).await?.into_inner();
    section("dpu-agent desired flows on breth0 (GetStatus)");
    for flow in &dpu_status.desired_flows {
        println!("{flow}");
    }
    section("dpu-agent's view of the host (GetStatus)");
    println!("peer identity: {}", dpu_status.peer_identity);
    if let Some(report) = &dpu_status.last_host_report {
        println!(
            "host reported revision {} applied={}",
            report.revision, report.applied
        );
    }

    section("operator adds 198.19.0.0/16 on the DPU and reloads");
    let mut changed = options.clone();
    changed.ipv4_cidrs.push("198.19.0.0/16".into());
    let revision = dpu
        .handle
        .reload(&harness::dpu_config(dir, &changed, &certs.dpu)?)?;
    let status = host
        .wait_for("the new revision", |s| {
            s.applied.as_ref().map(|c| c.revision) == Some(revision)
        })
        .await?;
    println!("host now at revision {revision}; its routes:");
    if let Some(plan) = host.log.last_applied() {
        for route in plan.render_routes() {
            println!("  {route}");
        }
    }
    drop(status);

    host.stop().await?;
    dpu.stop().await?;
    section("done: both agents stopped; nothing on this machine was changed");
    Ok(())
}
