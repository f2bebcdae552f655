//! dpu-agent against a real Open vSwitch (userspace datapath) started by the
//! test inside a network namespace: port discovery from OVSDB, atomic flow
//! install, CIDR swaps, foreign flows untouched, restore after a wipe and
//! after an ovs-vswitchd restart, ofport changes. Needs root and OVS.

use dpu_agent::{flows, state::AgentHandle};
use noverlay_runtime::systemd::Watchdog;
use noverlay_tests::{
    harness::{self, Certs, DpuOptions, RunningDpu},
    netns,
    ovs::{self, Ovs, Switch},
};
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

const COOKIE: &str = "0x6e6f7672";

fn dpu_switch() -> anyhow::Result<Switch> {
    Switch::start("ovs")
}

/// Our flows as OVS shows them, without counters, sorted.
fn our_flows(ovs: &Ovs) -> anyhow::Result<Vec<String>> {
    ovs.flows_of("breth0", dpu_agent::config::DEFAULT_COOKIE)
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    noverlay_test_support::eventually(what, timeout, ready)
        .await
        .map_err(anyhow::Error::msg)
}

struct Agent {
    dpu: RunningDpu,
    handle: AgentHandle,
    shutdown: CancellationToken,
    certs: Certs,
    options: DpuOptions,
}

async fn start_agent(ovs: &Ovs) -> anyhow::Result<Agent> {
    start_agent_with(ovs, "").await
}

/// An agent whose `[bridge]` section ends with `bridge_lines`.
async fn start_agent_with(ovs: &Ovs, bridge_lines: &str) -> anyhow::Result<Agent> {
    start_agent_from(DpuOptions {
        bridge: format!("{}{bridge_lines}\n", ovs.agent_bridge_section()),
        ..DpuOptions::default()
    })
    .await
}

/// An agent configured by `options` (its bridge section included), with
/// its datapath tasks running.
async fn start_agent_from(options: DpuOptions) -> anyhow::Result<Agent> {
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let handle = dpu.handle.clone();
    let shutdown = CancellationToken::new();
    dpu_agent::start_datapath(
        handle.clone(),
        &config,
        &Watchdog::with_timeout(None),
        shutdown.clone(),
    );
    Ok(Agent {
        dpu,
        handle,
        shutdown,
        certs,
        options,
    })
}

/// Waits for port discovery and then for the planned flows on the bridge;
/// returns how many flows the plan has.
async fn wait_installed(ovs: &Ovs, handle: &AgentHandle) -> anyhow::Result<usize> {
    wait_until("ports discovered", Duration::from_secs(10), || {
        handle.ports().is_some()
    })
    .await?;
    let expected = handle.desired_flows().map(|f| f.len()).unwrap_or_default();
    // Both OVS and the agent must agree that the flows are in: the agent
    // learns OVS's rendering after installing, and faults injected before
    // that would be a different test.
    wait_until("flows installed", Duration::from_secs(10), || {
        our_flows(ovs).is_ok_and(|f| f.len() == expected)
            && handle.installed_flows().len() == expected
            && handle.last_error().is_empty()
    })
    .await?;
    Ok(expected)
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn discovered_ports_and_installed_flows_match_the_plan() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    sw.ovs.ofctl(
        "add-flow",
        "breth0",
        &["cookie=0x1234,priority=5,actions=drop"],
    )?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    wait_installed(&sw.ovs, &handle).await?;
    let ports = handle.ports().ok_or_else(|| anyhow::anyhow!("no ports"))?;
    assert_eq!(
        (ports.host_representor, ports.patch, ports.uplink),
        (1, 2, 3)
    );
    assert_eq!(
        noverlay_proto::contract::format_mac(&ports.bridge_mac),
        "02:00:c6:12:00:0a"
    );

    wait_installed(&sw.ovs, &handle).await?;
    // OVS's own rendering of the plan, kept as a golden file.
    let installed = our_flows(&sw.ovs)?.join("\n") + "\n";
    noverlay_test_support::assert_golden(&golden_dir(), "ovs_flows_ipv4.txt", &installed);
    // Every planned match is there.
    for flow in handle.desired_flows().unwrap_or_default() {
        if let Some(port) = flow.matches.split(',').find(|m| m.starts_with("in_port=")) {
            assert!(installed.contains(port), "{port} missing");
        }
    }
    let all = sw.ovs.ofctl("dump-flows", "breth0", &["--no-stats"])?;
    assert!(
        all.contains("cookie=0x1234"),
        "foreign flow removed:\n{all}"
    );
    assert_eq!(handle.last_error(), "");
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

/// A `[bridge]` section with the bridge's name only: the patch port, the
/// uplink (the bridge's `external_ids:bridge-uplink`) and the host
/// representor are found in OVSDB, status says so, and the flows are the
/// same as with every port named. A bridge whose uplink cannot be told
/// gets the one line that says which key to set, and no flow.
#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn ports_left_out_of_the_config_are_found_on_the_bridge() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let agent = start_agent_from(DpuOptions {
        bridge: sw.ovs.agent_bridge_section_by_name(),
        ..DpuOptions::default()
    })
    .await?;
    let handle = agent.handle.clone();
    wait_installed(&sw.ovs, &handle).await?;
    let ports = handle.ports().ok_or_else(|| anyhow::anyhow!("no ports"))?;
    assert_eq!(
        (ports.host_representor, ports.patch, ports.uplink),
        (1, 2, 3)
    );
    let facts: Vec<String> = handle.facts().iter().map(ToString::to_string).collect();
    for fact in [
        "bridge.patch_port = patch-breth0 (from OVSDB)",
        "bridge.uplink = p0 (from OVSDB)",
        "bridge.host_representor = pf0hpf (from OVSDB)",
    ] {
        assert!(facts.iter().any(|f| f == fact), "{fact} not in {facts:?}");
    }
    let installed = our_flows(&sw.ovs)?.join("\n") + "\n";
    noverlay_test_support::assert_golden(&golden_dir(), "ovs_flows_ipv4.txt", &installed);
    agent.shutdown.cancel();
    agent.dpu.stop().await?;

    // The uplink no longer named, on a bridge not called br<nic>.
    let bare = dpu_switch()?;
    bare.ovs.vsctl(&[
        "remove",
        "bridge",
        "breth0",
        "external_ids",
        "bridge-uplink",
    ])?;
    let agent = start_agent_from(DpuOptions {
        bridge: bare.ovs.agent_bridge_section_by_name(),
        ..DpuOptions::default()
    })
    .await?;
    let handle = agent.handle.clone();
    wait_until(
        "the uplink error in status",
        Duration::from_secs(10),
        || {
            handle
                .last_error()
                .contains("the uplink of bridge \"breth0\" cannot be told from OVSDB")
        },
    )
    .await?;
    assert!(
        handle.last_error().contains("set [bridge] uplink"),
        "{}",
        handle.last_error()
    );
    assert_eq!(handle.ports(), None);
    assert!(our_flows(&bare.ovs)?.is_empty());
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn cidr_change_swaps_the_flow_set_atomically() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    sw.ovs.ofctl(
        "add-flow",
        "breth0",
        &["cookie=0x1234,priority=5,actions=drop"],
    )?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    let one = wait_installed(&sw.ovs, &handle).await?;

    // Watch the flow count from another thread while swapping sets: it
    // must only ever be the old or the new size, never anything between.
    // One flow per CIDR: two more CIDRs, two more flows.
    let three = one + 2;
    let stop = Arc::new(AtomicBool::new(false));
    let target = sw.ovs.openflow("breth0");
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(out) = std::process::Command::new("ovs-ofctl")
                    .args([
                        "-O",
                        "OpenFlow14",
                        "dump-flows",
                        &target,
                        "--no-stats",
                        &format!("cookie={COOKIE}/-1"),
                    ])
                    .output()
                    && out.status.success()
                {
                    let n = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| l.starts_with(' '))
                        .count();
                    seen.insert(n);
                }
            }
            seen
        })
    };
    for round in 0..10 {
        let cidrs = if round % 2 == 0 {
            vec![
                "198.18.128.0/17".into(),
                "198.19.0.0/24".into(),
                "198.19.1.0/24".into(),
            ]
        } else {
            vec!["198.18.128.0/17".into()]
        };
        let want = if round % 2 == 0 { three } else { one };
        let options = DpuOptions {
            ipv4_cidrs: cidrs,
            ..agent.options.clone()
        };
        handle.reload(&harness::dpu_config(
            agent.certs.dir.path(),
            &options,
            &agent.certs.dpu,
        )?)?;
        wait_until("swap", Duration::from_secs(10), || {
            our_flows(&sw.ovs).is_ok_and(|f| f.len() == want)
        })
        .await?;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    assert!(
        seen.iter().all(|n| *n == one || *n == three),
        "a half-installed flow set was visible: counts seen {seen:?} (expected only {one} or {three})"
    );
    let all = sw.ovs.ofctl("dump-flows", "breth0", &["--no-stats"])?;
    assert!(all.contains("cookie=0x1234"), "foreign flow removed");
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn flows_are_restored_after_a_wipe_and_a_vswitchd_restart() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    wait_installed(&sw.ovs, &handle).await?;
    let golden = our_flows(&sw.ovs)?;

    let faults: [(&str, &dyn Fn() -> anyhow::Result<()>); 3] = [
        ("del-flows", &|| {
            sw.ovs.ofctl("del-flows", "breth0", &[]).map(drop)
        }),
        ("a foreign flow under our cookie", &|| {
            sw.ovs
                .ofctl(
                    "add-flow",
                    "breth0",
                    &[&format!("cookie={COOKIE},priority=999,actions=drop")],
                )
                .map(drop)
        }),
        ("ovs-vswitchd kill -9 and restart", &|| {
            sw.ovs.kill_vswitchd()?;
            sw.ovs.start_vswitchd()
        }),
    ];
    for (fault, inject) in faults {
        let before = handle.flow_repairs();
        let started = Instant::now();
        inject()?;
        wait_until(
            &format!("restore after {fault}"),
            Duration::from_secs(20),
            || our_flows(&sw.ovs).is_ok_and(|f| f == golden) && handle.flow_repairs() > before,
        )
        .await?;
        println!("flows restored {:?} after {fault}", started.elapsed());
    }
    // Each restore is in status and metrics: when, and how long it took.
    assert!(handle.flow_record().last_repair_unix > 0);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(
        &mut metrics,
        &dpu_agent::metrics::registry(handle.clone()),
    )?;
    let restores = metrics
        .lines()
        .find_map(|l| l.strip_prefix("noverlay_dpu_flow_restore_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no restore histogram in\n{metrics}"))?;
    assert!(restores >= 2, "{restores} restores observed\n{metrics}");
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn an_ofport_change_rerenders_the_flows() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    wait_installed(&sw.ovs, &handle).await?;
    sw.ovs.vsctl(&[
        "del-port",
        "breth0",
        "p0",
        "--",
        "add-port",
        "breth0",
        "p0",
        "--",
        "set",
        "Interface",
        "p0",
        "ofport_request=7",
    ])?;
    wait_until("new ofport discovered", Duration::from_secs(10), || {
        handle.ports().is_some_and(|p| p.uplink == 7)
    })
    .await?;
    wait_until("flows re-rendered", Duration::from_secs(10), || {
        our_flows(&sw.ovs).is_ok_and(|f| {
            f.iter().any(|l| l.contains("output:7")) && !f.iter().any(|l| l.contains("output:3"))
        })
    })
    .await?;
    let plan = flows::render_flows(
        &handle.desired_flows().unwrap_or_default(),
        handle.flow_settings().cookie,
    );
    assert!(plan.iter().any(|l| l.ends_with("output:7")));
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

/// Next to OVN-Kubernetes' own flow set, whatever the agent does (install,
/// restore after ovnkube's rewrite, reconfiguration, cleanup), every flow of
/// another cookie stays byte for byte as it was.
#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn ovnkubes_flows_are_never_seized() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let cookie = u64::from_str_radix(COOKIE.trim_start_matches("0x"), 16)?;
    sw.ovs.ovnkube_replace_flows("198.18.0.10")?;
    let theirs = sw.ovs.flows_not_of("breth0", cookie)?;
    assert!(
        theirs.len() > 25,
        "ovnkube's flow set not loaded: {theirs:#?}"
    );
    let untouched = |step: &str| -> anyhow::Result<()> {
        let now = sw.ovs.flows_not_of("breth0", cookie)?;
        anyhow::ensure!(
            now == theirs,
            "{step} changed other controllers' flows:\nbefore {theirs:#?}\nafter {now:#?}"
        );
        Ok(())
    };
    // Only our path flows go on (for one CIDR: the lookup and the path flow
    // of each direction at priority 510, the CIDR and the miss in table
    // 100, the three ICMP error types and fragments from the underlay at
    // 510, the first hop's two at 511 and the three flows of table 101):
    // ovnkube provides the whole base pipeline ("auto", the default), so
    // none of ours is added over theirs.
    const PATH_FLOWS: usize = 8 + 4 + 3 + 2;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    let path_only = |ours: &[String]| {
        ours.len() == PATH_FLOWS
            && ours.iter().all(|f| {
                f.contains("priority=510")
                    || f.contains("priority=511")
                    || f.contains("table=100")
                    || f.contains("table=101")
            })
    };
    wait_until("the path flows installed", Duration::from_secs(10), || {
        our_flows(&sw.ovs).is_ok_and(|f| path_only(&f)) && handle.last_error().is_empty()
    })
    .await?;
    untouched("install")?;
    let record = handle.flow_record();
    assert_eq!(record.provided.len(), 6, "{:#?}", record.provided);
    assert!(record.conflicts.is_empty(), "{:#?}", record.conflicts);

    // ovnkube's periodic rewrite deletes ours; they come back, theirs stay.
    let before = handle.flow_repairs();
    sw.ovs.ovnkube_replace_flows("198.18.0.10")?;
    wait_until(
        "restore after ovnkube's rewrite",
        Duration::from_secs(10),
        || our_flows(&sw.ovs).is_ok_and(|f| path_only(&f)) && handle.flow_repairs() > before,
    )
    .await?;
    untouched("restore after a rewrite")?;
    agent.shutdown.cancel();
    agent.dpu.stop().await?;

    // Reconfigured (restarted) with the base pipeline forced on, then off.
    for (setting, expected) in [("true", PATH_FLOWS + 1), ("false", PATH_FLOWS)] {
        let agent = start_agent_with(&sw.ovs, &format!("base_pipeline = {setting}")).await?;
        let handle = agent.handle.clone();
        wait_until(
            &format!("install with base_pipeline = {setting}"),
            Duration::from_secs(10),
            || {
                our_flows(&sw.ovs).is_ok_and(|f| f.len() == expected)
                    && handle.last_error().is_empty()
            },
        )
        .await?;
        untouched(&format!("base_pipeline = {setting}"))?;
        agent.shutdown.cancel();
        agent.dpu.stop().await?;
    }

    // Cleanup removes ours and nothing else (run in the DPU's namespace,
    // where it also looks for the uplink guard).
    let config = harness::dpu_config(
        tempfile::tempdir()?.path(),
        &DpuOptions {
            bridge: sw.ovs.agent_bridge_section(),
            ..DpuOptions::default()
        },
        &Certs::new()?.dpu,
    )?;
    sw.ns.run(move || async move {
        dpu_agent::cleanup(&config)
            .await
            .map_err(|errors| anyhow::anyhow!("cleanup: {errors:?}"))
    })?;
    assert!(our_flows(&sw.ovs)?.is_empty());
    untouched("cleanup")
}

/// At the documented limit (1024 cluster CIDRs) the flows go on in one
/// bundle and GetStatus still answers, over mTLS as an operator asks it.
#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn the_cidr_limit_installs_and_status_answers() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let agent = start_agent_from(DpuOptions {
        bridge: sw.ovs.agent_bridge_section(),
        ipv4_cidrs: (0..noverlay_proto::contract::MAX_CLUSTER_CIDRS)
            .map(|i| format!("100.{}.{}.0/24", 64 + i / 256, i % 256))
            .collect(),
        ..DpuOptions::default()
    })
    .await?;
    let handle = agent.handle.clone();
    // One flow per CIDR; the lookup and the path flow of three directions
    // and the miss; ICMP errors, fragments and the first hop (nine); the
    // base pipeline (six flows, standalone).
    let expected = 1024 + 6 + 1 + 9 + 6;
    wait_until("1,046 flows installed", Duration::from_secs(60), || {
        handle.installed_flows().len() == expected && handle.last_error().is_empty()
    })
    .await?;
    assert_eq!(our_flows(&sw.ovs)?.len(), expected);

    let client = host_agent::client::connect(
        &agent.dpu.addr.to_string(),
        &noverlay_proto::tls::PeerIdentity::parse(harness::DPU_SAN)?,
        noverlay_proto::tls::client_config(&agent.certs.host)?,
    )
    .await?;
    let status = client
        .max_decoding_message_size(noverlay_proto::MAX_RESPONSE_BYTES)
        .get_status(noverlay_proto::pb::GetStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(status.installed_flows.len(), expected);
    assert_eq!(status.desired_flows.len(), expected);
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

/// On a bridge whose `protocols` column allows no version we speak, the
/// agent says which bridge, what it allows and the fix; once the operator
/// allows OpenFlow 1.3 only (a common hardening setting), the agent
/// installs exactly the golden flow set over 1.3 and restores it after a
/// wipe (the 1.3 flow monitor wakes it).
#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn a_bridge_limited_to_openflow_13_gets_its_flows() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    sw.ovs
        .vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow10"])?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    wait_until(
        "the version error in status",
        Duration::from_secs(10),
        || {
            handle
                .last_error()
                .contains("bridge breth0 allows OpenFlow10 only")
        },
    )
    .await?;
    let error = handle.last_error();
    assert!(
        error.contains("ovs-vsctl set bridge breth0 protocols=OpenFlow10,OpenFlow13,OpenFlow14"),
        "{error}"
    );
    assert!(!error.contains("ovs-ofctl"), "{error}");

    sw.ovs
        .vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow13"])?;
    wait_installed(&sw.ovs, &handle).await?;
    let installed = our_flows(&sw.ovs)?;
    let golden = std::fs::read_to_string(golden_dir().join("ovs_flows_ipv4.txt"))?;
    assert_eq!(installed.join("\n") + "\n", golden);

    let before = handle.flow_repairs();
    let started = Instant::now();
    sw.ovs
        .ofctl("del-flows", "breth0", &[&format!("cookie={COOKIE}/-1")])?;
    wait_until("restore over OpenFlow 1.3", Duration::from_secs(10), || {
        our_flows(&sw.ovs).is_ok_and(|f| f == installed) && handle.flow_repairs() > before
    })
    .await?;
    println!(
        "restored {:?} after a wipe on a 1.3-only bridge",
        started.elapsed()
    );
    agent.shutdown.cancel();
    agent.dpu.stop().await
}

/// A neighbour with a broad flow at our path flows' table and priority
/// (it overlaps each of them without being a twin), there before the
/// agent starts: our flows go on beside it at the first install (no probe
/// the neighbour would refuse, no refused install), and a wipe of ours is
/// restored the same way. Its flow stays exactly as it was.
#[tokio::test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
async fn a_neighbour_overlapping_our_flows_costs_no_refused_install() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let sw = dpu_switch()?;
    let cookie = u64::from_str_radix(COOKIE.trim_start_matches("0x"), 16)?;
    sw.ovs.ofctl(
        "add-flow",
        "breth0",
        &["cookie=0x5,table=0,priority=510,ip,actions=drop"],
    )?;
    let theirs = sw.ovs.flows_not_of("breth0", cookie)?;
    let agent = start_agent(&sw.ovs).await?;
    let handle = agent.handle.clone();
    let expected = wait_installed(&sw.ovs, &handle).await?;
    assert_eq!(handle.flow_record().contested_installs, 0);
    sw.ovs
        .ofctl("del-flows", "breth0", &[&format!("cookie={COOKIE}/-1")])?;
    wait_until(
        "restore beside the neighbour",
        Duration::from_secs(10),
        || our_flows(&sw.ovs).is_ok_and(|f| f.len() == expected) && handle.flow_repairs() == 1,
    )
    .await?;
    assert_eq!(handle.flow_record().contested_installs, 0);
    assert_eq!(sw.ovs.flows_not_of("breth0", cookie)?, theirs);
    agent.shutdown.cancel();
    agent.dpu.stop().await
}
