//! Benchmarks that print numbers (not timed tests). Needs root, Open vSwitch
//! and the agent binaries; build first:
//!
//!     cargo build --release --workspace && sudo ./target/release/bench
//!
//! Prints, for the host agent: contract received -> host state applied for
//! 1, 16, 256 and 1024 CIDRs, repair time of a deleted route, the cost of
//! unrelated kernel churn; for the DPU agent:
//! contract change -> flows installed for the same sizes, restore time
//! after 100 wipes (median and p99), and the same install by one ovs-ofctl
//! process; for both agents as processes: idle CPU and RSS, with one CIDR
//! and at the limit of 1024 (with the flow and route counts).

use dpu_agent::state::AgentHandle;
use host_agent::{agent::HostAgent, config::HostConfig, dataplane::kernel::Kernel};
use noverlay_proto::contract::{Contract, FamilyContract, Masquerade, Mode};
use noverlay_runtime::systemd::Watchdog;
use noverlay_tests::{
    e2e::{REMOTE_POD, Testbed, cidrs_at_the_limit},
    harness::{self, Certs, DpuOptions, HOST_SAN, HostOptions, RunningDpu},
    mock_dpu::MockDpu,
    netns::{NetNs, privileged_or_skip},
    ovs::{self, Switch},
};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SIZES: [usize; 4] = [1, 16, 256, 1024];
const ROUNDS: usize = 5;
/// Wipes of the DPU's flows for the restore latency.
const WIPES: usize = 100;

fn cidrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("198.18.{}.0/24", 128 + i % 128))
        .take(n.min(128))
        .chain((128..n).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)))
        .collect()
}

fn contract(revision: u64, n: usize) -> anyhow::Result<Contract> {
    let family = FamilyContract {
        masquerade: Masquerade::from_subnet("169.254.0.0/17".parse()?)?,
        cluster_cidrs: cidrs(n)
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()?,
        underlay_ip: "198.18.0.10".parse()?,
    };
    Ok(Contract::new(
        revision,
        Mode::IN_SCOPE,
        vec![family],
        1400,
        "eth0".into(),
    )?)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median and 99th percentile.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

fn main() -> anyhow::Result<()> {
    if !privileged_or_skip("bench") || !ovs::available_or_skip("bench") {
        return Ok(());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `bench [host|dpu|idle]...` runs only the named parts; all by default.
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if let Some(unknown) = parts
        .iter()
        .find(|p| !["host", "dpu", "idle"].contains(&p.as_str()))
    {
        anyhow::bail!("unknown part {unknown:?}: expected host, dpu or idle");
    }
    println!("noverlay benchmarks (median of {ROUNDS} rounds)\n");
    if wanted("host") {
        host_apply()?;
    }
    if wanted("dpu") {
        dpu_flows()?;
    }
    if wanted("idle") {
        idle_cost()?;
    }
    Ok(())
}

/// host-agent with the kernel dataplane against a mock DPU, in a namespace.
fn host_apply() -> anyhow::Result<()> {
    let ns = NetNs::new("bh")?;
    ns.sh("set -e
        ip link add eth0 type veth peer name p0
        ip addr add 198.18.0.10/24 dev eth0
        ip link set eth0 up; ip link set p0 up")?;
    let name = ns.name.clone();
    ns.run(move || async move {
        let certs = Certs::new()?;
        let mut dpu = MockDpu::start(&certs.dpu, HOST_SAN, Ok(contract(1, 1)?.to_pb())).await?;
        let path = certs.dir.path().join("host-agent.toml");
        std::fs::write(
            &path,
            harness::host_config_toml(&HostOptions::new(dpu.addr), &certs.host),
        )?;
        let config = HostConfig::load(&path)?;
        let agent = HostAgent::new(config.clone(), Kernel::open(config.masquerades.clone())?)?;
        let mut status = agent.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(shutdown.clone()));
        dpu.next_report().await?;
        println!("host-agent: contract received -> host state applied and reported");
        let mut revision = 1;
        for n in SIZES {
            let mut samples = Vec::new();
            for _ in 0..ROUNDS {
                // Alternate with a 1-CIDR contract so each round is a real change.
                for size in [1, n] {
                    revision += 1;
                    let started = Instant::now();
                    dpu.contracts.send(contract(revision, size)?.to_pb())?;
                    let report = dpu.next_report().await?;
                    anyhow::ensure!(report.applied, "{}", report.error);
                    if size == n {
                        samples.push(started.elapsed());
                    }
                }
            }
            println!("  {n:>4} CIDRs: {:?}", median(samples));
        }
        let mut samples = Vec::new();
        for _ in 0..ROUNDS {
            let before = status.borrow().repairs;
            let output = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "ip",
                    "route",
                    "del",
                    // Ours: the first CIDR's first half.
                    "198.18.128.0/25",
                ])
                .output()?;
            anyhow::ensure!(output.status.success(), "{output:?}");
            let started = Instant::now();
            tokio::time::timeout(
                Duration::from_secs(5),
                status.wait_for(|s| s.repairs > before),
            )
            .await??;
            samples.push(started.elapsed());
        }
        println!(
            "  repair after a route deletion (event to route restored): {:?}",
            median(samples)
        );
        unrelated_churn(&name, &status).await?;
        shutdown.cancel();
        task.await??;
        Ok(())
    })
}

/// CPU time of this process (the agent runs in it) in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs `ip -batch` with `lines` in the namespace.
fn ip_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes())?;
    }
    anyhow::ensure!(child.wait()?.success(), "ip -batch failed");
    Ok(())
}

/// What churn the agent does not own costs it: 5,000 unrelated routes,
/// then 10,000 neighbour updates on an unrelated interface.
async fn unrelated_churn(
    ns: &str,
    status: &tokio::sync::watch::Receiver<host_agent::agent::HostStatus>,
) -> anyhow::Result<()> {
    ip_batch(
        ns,
        &[
            "link add churn0 type veth peer name churn1".into(),
            "link set churn0 up".into(),
            "link set churn1 up".into(),
        ],
    )?;
    // Let the namespace settle first (IPv6 DAD on the gateway interface ends
    // with an address event that does concern us).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciles = status.borrow().reconciles;
    let routes: Vec<String> = (0..5_000)
        .map(|i| format!("route add 100.64.{}.{}/32 dev churn0", i / 250, i % 250 + 1))
        .collect();
    let cpu = cpu_seconds();
    ip_batch(ns, &routes)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let routes_cpu = cpu_seconds() - cpu;
    let neighbours: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "neigh replace 100.64.0.{} lladdr 02:00:00:00:{:02x}:{:02x} dev churn0 nud permanent",
                i % 250 + 1,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let cpu = cpu_seconds();
    let started = Instant::now();
    ip_batch(ns, &neighbours)?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let neighbours_cpu = cpu_seconds() - cpu;
    println!("  unrelated churn (agent CPU time, event filter):");
    println!("    5,000 routes added on another interface: {routes_cpu:.3} CPU-s");
    println!(
        "    10,000 neighbour updates on another interface in {took:?}: {neighbours_cpu:.3} CPU-s"
    );
    println!(
        "    reconciles they caused: {}\n",
        status.borrow().reconciles - reconciles
    );
    Ok(())
}

/// dpu-agent against OVS in a namespace.
fn dpu_flows() -> anyhow::Result<()> {
    let sw = Switch::start("bd")?;
    let ovs = &sw.ovs;
    let bridge = ovs.agent_bridge_section();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let certs = Certs::new()?;
        let options = DpuOptions {
            bridge,
            ..DpuOptions::default()
        };
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
        wait(&handle, Duration::from_secs(10)).await?;
        println!("dpu-agent: contract change (reload) -> flows installed and read back");
        for n in SIZES {
            let mut samples = Vec::new();
            for _ in 0..ROUNDS {
                // Alternate with another size so that each reload changes the flows.
                for size in [if n == 1 { 2 } else { 1 }, n] {
                    let options = DpuOptions {
                        ipv4_cidrs: cidrs(size),
                        ..options.clone()
                    };
                    let config = harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?;
                    let started = Instant::now();
                    handle.reload(&config)?;
                    wait(&handle, Duration::from_secs(20)).await?;
                    if size == n {
                        samples.push(started.elapsed());
                    }
                }
            }
            println!("  {n:>4} CIDRs: {:?}", median(samples));
        }
        // Wipes as ovnkube's replace-flows does them to us (our cookie's
        // flows deleted in one committed bundle), sent from a connection of
        // the bench's own; timed from the commit's reply to the agent's
        // restore bundle committed (its flows back on the bridge).
        let socket = ovs.openflow("breth0");
        let wiper = noverlay_openflow::session::Session::new(socket.trim_start_matches("unix:").into());
        for size in [16, 1024] {
        let options = DpuOptions {
            ipv4_cidrs: cidrs(size),
            ..options.clone()
        };
        handle.reload(&harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?)?;
        wait(&handle, Duration::from_secs(20)).await?;
        let mut samples = Vec::new();
        let mut updates = handle.watch_flows();
        for _ in 0..WIPES {
            let before = handle.flow_repairs();
            let xid = wiper.xid();
            let wipe = noverlay_openflow::wire::delete_cookie(xid, 0x6e6f_7672);
            wiper.commit_bundle(1, vec![(xid, wipe)]).await?;
            let wiped = Instant::now();
            // Woken by the agent's own notification, not polled: the
            // sample is the moment the restore bundle was committed.
            while handle.flow_repairs() == before {
                tokio::time::timeout(Duration::from_secs(10), updates.changed())
                    .await
                    .map_err(|_| anyhow::anyhow!("no restore within 10 s"))??;
            }
            samples.push(wiped.elapsed());
            // Let the agent finish its read-back before the next wipe.
            wait(&handle, Duration::from_secs(10)).await?;
        }
        let (middle, p99) = percentiles(samples);
        println!(
            "  restore after a wipe, {size} CIDRs ({} flows), {WIPES} wipes: median {middle:?}, p99 {p99:?}",
            handle.installed_flow_count()
        );
        }
        // The same install, side by side: the agent's native bundle (from a
        // reload to flows read back, above) against one ovs-ofctl process.
        let plan = handle.desired_flows().unwrap_or_default();
        let bundle = dpu_agent::flows::render_bundle(&plan, 0x6e6f_7672);
        let file = ovs.dir.path().join("bench-bundle.txt");
        std::fs::write(&file, bundle)?;
        let mut samples = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let output = std::process::Command::new("ovs-ofctl")
                .args(["-O", "OpenFlow14", "--bundle", "add-flows", &socket])
                .arg(&file)
                .output()?;
            anyhow::ensure!(output.status.success(), "{output:?}");
            samples.push(started.elapsed());
        }
        println!(
            "  the same {} flows by one `ovs-ofctl --bundle add-flows` process (no read-back): {:?}\n",
            plan.len(),
            median(samples)
        );
        shutdown.cancel();
        dpu.stop().await
    })
}

/// Waits until the agent has read back exactly its planned flows, woken by
/// its notifications (no polling, so a sample is not rounded to the timer).
async fn wait(handle: &AgentHandle, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut updates = handle.watch_flows();
    loop {
        updates.borrow_and_update();
        let planned = handle.desired_flows().map(|f| f.len());
        if planned.is_some()
            && planned == Some(handle.installed_flow_count())
            && handle.last_error().is_empty()
        {
            return Ok(());
        }
        // An error clears without a flow update (e.g. a reload): recheck
        // at least every few milliseconds.
        let woken = tokio::time::timeout(Duration::from_millis(5), updates.changed()).await;
        if let Ok(Err(_)) = woken {
            anyhow::bail!("the agent stopped");
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "flows not installed: {}",
            handle.last_error()
        );
    }
}

/// Both agents as processes on the end-to-end testbed, idle for 10 s: with
/// the testbed's contract, then at the limit of 1024 cluster CIDRs (flows on
/// the bridge and routes on the host counted, as the kernel and the switch
/// hold them).
fn idle_cost() -> anyhow::Result<()> {
    let mut bed = Testbed::build()?;
    bed.start_dpu_agent()?;
    bed.start_host_agent()?;
    bed.wait_for_ping(REMOTE_POD, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let pids = [
        ("dpu-agent", pid_of("dpu-agent run")?),
        ("host-agent", pid_of("host-agent run")?),
    ];
    idle_window(&pids, "path up, nothing changing")?;

    let cidrs = cidrs_at_the_limit();
    bed.write_dpu_config(&cidrs.iter().map(String::as_str).collect::<Vec<_>>())?;
    bed.reload_dpu_agent()?;
    let routes = || {
        bed.host
            .sh("ip route show proto 240; ip -6 route show proto 240")
            .map(|r| r.lines().count())
            .unwrap_or(0)
    };
    let want = 2 * noverlay_proto::contract::MAX_CLUSTER_CIDRS;
    noverlay_test_support::eventually_blocking(
        "2,048 host routes",
        Duration::from_secs(20),
        || routes() == want,
    )
    .map_err(anyhow::Error::msg)?;
    let flows = bed
        .ovs
        .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])?
        .lines()
        .filter(|l| l.starts_with(' '))
        .count();
    std::thread::sleep(Duration::from_secs(1));
    idle_window(
        &pids,
        &format!(
            "1024 cluster CIDRs: {flows} flows of ours on the bridge, {} routes of ours on the host",
            routes()
        ),
    )
}

fn idle_window(pids: &[(&str, u32)], what: &str) -> anyhow::Result<()> {
    let ticks = |pid: u32| -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        Ok(fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0))
    };
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, p)| ticks(*p))
        .collect::<Result<_, _>>()?;
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!("idle cost over {window:?} ({what}):");
    for ((name, pid), before) in pids.iter().zip(before) {
        let cpu = (ticks(*pid)? - before) as f64 / hz / window.as_secs_f64() * 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap_or("VmRSS: ?")
            .replace("VmRSS:", "")
            .trim()
            .to_string();
        println!("  {name:<10} CPU {cpu:.2}%  RSS {rss}");
    }
    Ok(())
}

fn pid_of(pattern: &str) -> anyhow::Result<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-n", "-f", pattern])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("no process matching {pattern:?}"))
}
