//! Both packages under a real systemd: a Debian 12 tree booted with
//! systemd-nspawn, the .debs installed by dpkg inside it, a small node
//! (Open vSwitch on the userspace datapath, the gateway and mp0 interfaces),
//! both units started as an operator would, then checked: notify readiness,
//! a fed watchdog, no sandbox refusal while the path is installed, repaired
//! and reloaded, restart after SIGKILL with the path intact, clean stop,
//! `host-agent status`, the units' exposure.

mod container;
mod setup;

use container::{Container, tail};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What the tree has beside the agents' own dependencies.
const TREE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openvswitch-switch",
    "nftables",
    "iproute2",
    "procps",
];

const UNITS: [&str; 2] = ["dpu-agent", "host-agent"];

/// The units' RestartSec, and what a restart after a kill may take on top.
const RESTART_SEC: Duration = Duration::from_secs(2);
const RESTART_SLACK: Duration = Duration::from_millis(1500);
const STOP_LIMIT: Duration = Duration::from_secs(2);
/// The watchdog the check gives both units, and how long it watches them.
const WATCHDOG_SEC: u64 = 3;
const WATCHED: Duration = Duration::from_secs(20);
/// The goal for `systemd-analyze security`: the units score 2.2, 1.9 with
/// CAP_NET_ADMIN alone and 0.3 for CAP_SYS_PTRACE, which finding
/// ovnkube-node in /proc needs.
const EXPOSURE_LIMIT: f64 = 2.3;

const COOKIE: &str = "0x6e6f7672";
const CLUSTER_CIDR: &str = "198.18.128.0/17";
const CLUSTER_CIDR6: &str = "fd00:10:244::/48";

pub fn check(debs: &[PathBuf], workspace: &Path) -> Result<(), String> {
    let cache = workspace
        .canonicalize()
        .map_err(|e| format!("{}: {e}", workspace.display()))?
        .join("target/boot");
    let base = container::debian_tree(&cache, TREE_PACKAGES)?;
    let root = cache.join("run");
    let _ = std::fs::remove_dir_all(&root);
    setup::copy_tree(&base, &root)?;
    setup::prepare(&root, debs)?;
    let console = cache.join("console.log");
    let started = Instant::now();
    let node = Container::boot(&root, &console)?;
    println!(
        "xtask: boot: Debian 12 booted under systemd {} in {:.1?} (console: {})",
        node.sh("systemctl --version | head -1 | cut -d' ' -f2")?
            .trim(),
        started.elapsed(),
        console.display()
    );
    let result = checks(&node, &root);
    if result.is_err() {
        let (_, journal) = node.try_sh("journalctl -b --no-pager -o short-monotonic -n 80");
        eprintln!("xtask: boot: the container's journal, last 80 lines:\n{journal}");
    }
    drop(node);
    result?;
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "xtask: boot: both units checked under a real systemd in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// The path as the kernel and the switch hold it: our host routes, the SNAT
/// table, our flows. Succeeds only when all three are there.
fn path_installed() -> String {
    format!(
        "ip -4 route show proto 240 | grep -q 'dev hostgw' \
         && ip -6 route show proto 240 | grep -q 'dev hostgw' \
         && nft list table inet noverlay | grep -q snat \
         && test \"$(ovs-ofctl dump-flows breth0 cookie={COOKIE}/-1 | grep -c cookie=)\" -gt 0"
    )
}

fn checks(node: &Container, root: &Path) -> Result<(), String> {
    let installed = node.sh("dpkg -i /root/*.deb 2>&1")?;
    println!("xtask: boot: dpkg -i inside:\n{}", tail(&installed, 4));
    for unit in UNITS {
        let state = node.property(unit, "UnitFileState")?;
        if state != "disabled" {
            return Err(format!(
                "{unit}.service is {state} after install, not disabled"
            ));
        }
    }
    node.sh(setup::TOPOLOGY)?;
    // What an operator edits after installing: the shipped configs.
    for (name, text) in [
        ("dpu-agent.toml", setup::dpu_config()),
        ("host-agent.toml", setup::HOST_CONFIG.into()),
    ] {
        let path = root.join("etc/noverlay").join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    for unit in UNITS {
        start(node, unit)?;
    }
    let took = node.wait_for(
        "the path installed",
        &path_installed(),
        Duration::from_secs(20),
    )?;
    println!("xtask: boot: path installed (routes, nft SNAT, flows) {took:.1?} after both started");
    let status = node.sh("host-agent status")?;
    println!(
        "xtask: boot: `host-agent status` inside:\n{}",
        indent(&status)
    );

    watchdog(node)?;
    repair_and_reload(node)?;
    refusals(node)?;
    for unit in UNITS {
        killed(node, unit)?;
    }
    for unit in UNITS {
        stop(node, unit)?;
    }
    node.sh(&path_installed())
        .map_err(|e| format!("stopping the agents removed the path: {e}"))?;
    println!("xtask: boot: both stopped; routes, nft and flows stay (restarts are hitless)");
    exposure(node)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts a unit (systemctl waits for READY=1 of a Type=notify unit) and
/// prints the time from exec to ready as systemd measured it.
fn start(node: &Container, unit: &str) -> Result<(), String> {
    node.sh(&format!("systemctl start {unit}"))?;
    let active = node.property(unit, "ActiveState")?;
    let sub = node.property(unit, "SubState")?;
    let kind = node.property(unit, "Type")?;
    if (active.as_str(), sub.as_str(), kind.as_str()) != ("active", "running", "notify") {
        return Err(format!("{unit}: {active} ({sub}), type {kind}"));
    }
    let exec = node.micros(unit, "ExecMainStartTimestampMonotonic")?;
    let ready = node.micros(unit, "ActiveEnterTimestampMonotonic")?;
    println!(
        "xtask: boot: {unit} active (running) through Type=notify, ready {:.1} ms after exec",
        ready.saturating_sub(exec) as f64 / 1000.0
    );
    Ok(())
}

fn main_pid(node: &Container, unit: &str) -> Result<String, String> {
    node.property(unit, "MainPID")
}

/// Neither unit is killed by its 3 s watchdog in 20 s.
fn watchdog(node: &Container) -> Result<(), String> {
    let before: Vec<String> = UNITS
        .iter()
        .map(|u| main_pid(node, u))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(WATCHED);
    for (unit, pid) in UNITS.iter().zip(&before) {
        let watchdog = node.property(unit, "WatchdogUSec")?;
        let now = main_pid(node, unit)?;
        let restarts = node.property(unit, "NRestarts")?;
        if &now != pid || restarts != "0" || watchdog != format!("{WATCHDOG_SEC}s") {
            return Err(format!(
                "{unit}: watchdog {watchdog}, pid {pid} -> {now}, restarts {restarts}"
            ));
        }
    }
    println!(
        "xtask: boot: WatchdogSec={WATCHDOG_SEC}s: neither unit killed in {WATCHED:?} (same pids, 0 restarts)"
    );
    for unit in UNITS {
        bounds(node, unit)?;
    }
    Ok(())
}

/// The unit's MemoryMax and TasksMax against what the process uses. Read
/// from /proc: a container on a cgroup v1 host gets no memory or pids
/// accounting from its systemd ("[not set]"), so the limits are checked for
/// headroom rather than seen to bite.
fn bounds(node: &Container, unit: &str) -> Result<(), String> {
    let pid = main_pid(node, unit)?;
    let status = node.sh(&format!("cat /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{unit}: no {name} in /proc/{pid}/status"))
    };
    let rss = field("VmRSS:")? * 1024;
    let threads = field("Threads:")?;
    let memory_max: u64 = node
        .property(unit, "MemoryMax")?
        .parse()
        .map_err(|_| format!("{unit}: MemoryMax is not a byte count"))?;
    let tasks_max: u64 = node
        .property(unit, "TasksMax")?
        .parse()
        .map_err(|_| format!("{unit}: TasksMax is not a count"))?;
    println!(
        "xtask: boot: {unit}: RSS {:.1} MiB of MemoryMax {} MiB, {threads} threads of TasksMax {tasks_max}",
        rss as f64 / 1048576.0,
        memory_max / 1048576
    );
    if rss * 4 > memory_max || threads * 2 > tasks_max {
        return Err(format!(
            "{unit} uses more than a quarter of MemoryMax or half of TasksMax at rest"
        ));
    }
    Ok(())
}

/// Someone deletes a route of ours and wipes the bridge's flows; both come
/// back. Then both units are reloaded and stay up.
fn repair_and_reload(node: &Container) -> Result<(), String> {
    let route = node.sh("ip -4 route show proto 240 dev hostgw | head -1")?;
    let route = route.trim();
    node.sh(&format!("ip route del {route}"))?;
    let took = node.wait_for(
        "the deleted route back",
        &format!(
            "ip -4 route show proto 240 | grep -q '^{}'",
            route.split(' ').next().unwrap_or(route)
        ),
        Duration::from_secs(10),
    )?;
    println!("xtask: boot: route `{route}` deleted; back in {took:.1?}");
    node.sh("ovs-ofctl del-flows breth0")?;
    let took = node.wait_for("the flows back", &path_installed(), Duration::from_secs(10))?;
    println!("xtask: boot: breth0's flows wiped; ours back in {took:.1?}");
    for unit in UNITS {
        let pid = main_pid(node, unit)?;
        node.sh(&format!("systemctl reload {unit}"))?;
        std::thread::sleep(Duration::from_millis(500));
        let now = main_pid(node, unit)?;
        let active = node.property(unit, "ActiveState")?;
        if now != pid || active != "active" {
            return Err(format!("{unit} after reload: {active}, pid {pid} -> {now}"));
        }
    }
    node.sh(&path_installed())?;
    println!("xtask: boot: both reloaded (SIGHUP): same pids, path installed");
    Ok(())
}

/// Nothing in the agents' journal says the sandbox refused them.
fn refusals(node: &Container) -> Result<(), String> {
    let journal = node.sh("journalctl -b --no-pager -o cat -u dpu-agent -u host-agent")?;
    let refused: Vec<&str> = journal
        .lines()
        .filter(|l| {
            [
                "SIGSYS",
                "status=31",
                "Operation not permitted",
                "Permission denied",
                "os error 1)",
                "os error 13)",
            ]
            .iter()
            .any(|needle| l.contains(needle))
        })
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "the sandbox refused something:\n{}",
            refused.join("\n")
        ));
    }
    for unit in UNITS {
        let restarts = node.property(unit, "NRestarts")?;
        if restarts != "0" {
            return Err(format!("{unit} restarted {restarts} times on its own"));
        }
    }
    println!(
        "xtask: boot: no SIGSYS, EPERM or EACCES in {} journal lines of install, repair and reload",
        journal.lines().count()
    );
    Ok(())
}

/// SIGKILL: the path stays while the agent is down; systemd restarts it
/// after RestartSec; the path is still installed after.
fn killed(node: &Container, unit: &str) -> Result<(), String> {
    let pid = main_pid(node, unit)?;
    let killed_at = Instant::now();
    node.sh(&format!("systemctl kill --signal=SIGKILL {unit}"))?;
    node.sh(&path_installed())
        .map_err(|e| format!("the path went with {unit}'s process: {e}"))?;
    let limit = RESTART_SEC + RESTART_SLACK;
    loop {
        let now = main_pid(node, unit)?;
        if now != pid && now != "0" && node.property(unit, "ActiveState")? == "active" {
            break;
        }
        if killed_at.elapsed() > limit {
            return Err(format!(
                "{unit} not active again {limit:?} after SIGKILL (RestartSec {RESTART_SEC:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = killed_at.elapsed();
    let took = node.wait_for(
        "the path after the restart",
        &path_installed(),
        Duration::from_secs(10),
    )?;
    println!(
        "xtask: boot: {unit} SIGKILLed: path kept while down, active again in {back:.1?} (RestartSec {RESTART_SEC:?}), path checked {took:.1?} after"
    );
    Ok(())
}

fn stop(node: &Container, unit: &str) -> Result<(), String> {
    let started = Instant::now();
    node.sh(&format!("systemctl stop {unit}"))?;
    let took = started.elapsed();
    let result = node.property(unit, "Result")?;
    if took > STOP_LIMIT || result != "success" {
        return Err(format!("{unit}: stop took {took:.1?}, result {result}"));
    }
    println!("xtask: boot: {unit} stopped in {took:.1?}, result {result}");
    Ok(())
}

/// `systemd-analyze security` of both units, against the goal.
fn exposure(node: &Container) -> Result<(), String> {
    for unit in UNITS {
        let report = node.sh(&format!(
            "systemd-analyze security --no-pager {unit}.service"
        ))?;
        let line = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .ok_or_else(|| format!("systemd-analyze security {unit}: no overall level"))?;
        let level: f64 = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("systemd-analyze security {unit}: {line}"))?;
        println!("xtask: boot: {}", line.trim_start_matches(['→', ' ']));
        if level >= EXPOSURE_LIMIT {
            return Err(format!(
                "{unit}: exposure {level} is not below {EXPOSURE_LIMIT}"
            ));
        }
    }
    Ok(())
}
