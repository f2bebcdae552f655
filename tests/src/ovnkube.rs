//! ovnkube-node's behaviour next to our agents, emulated as a DPU host and a
//! DPU see it (not its code): on the host a route manager that owns routes
//! through ovn-k8s-mp0 and a masquerade reconciler that owns the masquerade
//! address, the dummy next hop's neighbour and a service route; on the DPU
//! a rewrite of the whole gateway bridge with `--bundle replace-flows` on a
//! timer. Each counts the times it found its objects changed by someone
//! else and had to put them back: zero means we never touched them.

use crate::netns::NetNs;
use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// A background emulator: a thread (or two) until `stop`.
struct Worker {
    stop: Arc<AtomicBool>,
    restores: Arc<AtomicU64>,
    monitor: Option<Child>,
    threads: Vec<JoinHandle<()>>,
}

impl Worker {
    /// A watcher of events (`monitor`, `watcher`) plus a thread that runs
    /// `sync` every `every` until stopped.
    fn watching(
        stop: Arc<AtomicBool>,
        restores: Arc<AtomicU64>,
        (monitor, watcher): (Child, JoinHandle<()>),
        every: Duration,
        sync: impl Fn() + Send + 'static,
    ) -> Self {
        let stopping = stop.clone();
        let syncer = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                sync();
                std::thread::sleep(every);
            }
        });
        Worker {
            stop,
            restores,
            monitor: Some(monitor),
            threads: vec![watcher, syncer],
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut monitor) = self.monitor.take() {
            let _ = monitor.kill();
            let _ = monitor.wait();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.restores.load(Ordering::Relaxed)
    }
}

/// `ip -n <ns> monitor <objects>`, subscribed before it returns: calls
/// `react` with each line until the monitor is killed.
fn monitor(
    ns: &NetNs,
    objects: &[&str],
    mut react: impl FnMut(&str) + Send + 'static,
) -> anyhow::Result<(Child, JoinHandle<()>)> {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "monitor"])
        .args(objects)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no monitor output"))?;
    let thread = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            react(&line);
        }
    });
    // `ip monitor` subscribes after it starts: give it the time to, before
    // anyone may touch what it watches.
    std::thread::sleep(Duration::from_millis(500));
    Ok((child, thread))
}

fn ip(ns: &str, args: &[&str]) {
    let _ = Command::new("ip").args(["-n", ns]).args(args).output();
}

/// ovnkube's route manager: owns each route (e.g. "198.18.128.0/17 dev
/// ovn-k8s-mp0") by its destination, puts it back whenever an event shows
/// that key changed or gone, and re-syncs every `sync` (churn: each sync is
/// a netlink write, as its periodic sync is).
pub struct RouteManager(Worker);

impl RouteManager {
    pub fn start(host: &NetNs, routes: &[&str], sync: Duration) -> anyhow::Result<Self> {
        let routes: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let restores = Arc::new(AtomicU64::new(0));
        let name = host.name.clone();
        let put_back = {
            let name = name.clone();
            move |route: &str| {
                let words: Vec<&str> = route.split(' ').collect();
                let mut args = vec!["route", "replace"];
                args.extend(words);
                ip(&name, &args);
            }
        };
        let watching = {
            let routes = routes.clone();
            let restores = restores.clone();
            let put_back = put_back.clone();
            monitor(host, &["route"], move |line| {
                let line = line.trim_start_matches("Deleted ");
                for route in &routes {
                    let destination = route.split(' ').next().unwrap_or_default();
                    let its_key = line.starts_with(&format!("{destination} "));
                    // Anything about its destination that is not its own
                    // route as it wants it: put it back.
                    if its_key && !line.starts_with(route.as_str()) {
                        restores.fetch_add(1, Ordering::Relaxed);
                        put_back(route);
                    }
                }
            })?
        };
        Ok(RouteManager(Worker::watching(
            stop,
            restores,
            watching,
            sync,
            move || {
                for route in &routes {
                    put_back(route);
                }
            },
        )))
    }

    /// Stops it; returns how many times it had to restore a route.
    pub fn stop(self) -> u64 {
        self.0.stop()
    }
}

/// What ovnkube's masquerade reconciler keeps on the host's gateway
/// interface.
#[derive(Debug, Clone)]
pub struct MasqueradeSetup {
    /// e.g. "169.254.0.2/17".
    pub address: String,
    pub device: String,
    /// The dummy next hop and its MAC.
    pub neighbour: (String, String),
    /// e.g. "10.96.0.0/16 via 169.254.0.4 dev eth0 mtu 1400".
    pub service_route: String,
}

/// ovnkube's masquerade reconciler: makes its address, neighbour and
/// service route if they are missing and puts back whatever an event shows
/// deleted or changed.
pub struct MasqueradeReconciler(Worker);

impl MasqueradeReconciler {
    pub fn start(host: &NetNs, setup: MasqueradeSetup, sync: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let restores = Arc::new(AtomicU64::new(0));
        let name = host.name.clone();
        let ensure = {
            let setup = setup.clone();
            move || {
                ip(
                    &name,
                    &["addr", "replace", &setup.address, "dev", &setup.device],
                );
                ip(
                    &name,
                    &[
                        "neigh",
                        "replace",
                        &setup.neighbour.0,
                        "lladdr",
                        &setup.neighbour.1,
                        "dev",
                        &setup.device,
                        "nud",
                        "permanent",
                    ],
                );
                let mut route = vec!["route", "replace"];
                route.extend(setup.service_route.split(' '));
                ip(&name, &route);
            }
        };
        let address = setup
            .address
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let watching = {
            let restores = restores.clone();
            let ensure = ensure.clone();
            let (neighbour, mac) = setup.neighbour.clone();
            let service = setup
                .service_route
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            monitor(host, &["address", "neigh", "route"], move |line| {
                let deleted = line.starts_with("Deleted ");
                let line = line.trim_start_matches("Deleted ");
                let about_address = line.contains(&format!("inet {address}/"));
                let about_neighbour = line.starts_with(&format!("{neighbour} "));
                let about_service = line.starts_with(&format!("{service} "));
                let changed_neighbour = about_neighbour && !line.contains(&mac);
                if (deleted && (about_address || about_neighbour || about_service))
                    || changed_neighbour
                {
                    restores.fetch_add(1, Ordering::Relaxed);
                    ensure();
                }
            })?
        };
        Ok(MasqueradeReconciler(Worker::watching(
            stop, restores, watching, sync, ensure,
        )))
    }

    /// Stops it; returns how many times it had to restore something.
    pub fn stop(self) -> u64 {
        self.0.stop()
    }
}

/// One rewrite of the bridge as ovnkube-node makes it: `ovs-ofctl -O
/// OpenFlow13 --bundle replace-flows <target> <flows>`, which deletes every
/// flow not in the file, whatever its cookie.
pub fn replace_flows(target: &str, flows: &std::path::Path) -> anyhow::Result<()> {
    let flows = flows.display().to_string();
    crate::netns::run(&[
        "ovs-ofctl",
        "-O",
        "OpenFlow13",
        "--bundle",
        "replace-flows",
        target,
        &flows,
    ])?;
    Ok(())
}

/// ovnkube-node's rewrite of the gateway bridge ([`replace_flows`]) every
/// `every` (15 s in a cluster, and on every service change).
pub struct FlowRewriter(Worker);

impl FlowRewriter {
    pub fn start(target: String, flows: std::path::PathBuf, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rewrites = Arc::new(AtomicU64::new(0));
        let (stopping, counted) = (stop.clone(), rewrites.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                if replace_flows(&target, &flows).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
        });
        FlowRewriter(Worker {
            stop,
            restores: rewrites,
            monitor: None,
            threads: vec![thread],
        })
    }

    /// Stops it; returns how many rewrites it made.
    pub fn stop(self) -> u64 {
        self.0.stop()
    }
}

/// A stand-in ovnkube-node process (tests/src/bin/ovnkube.rs, not
/// OVN-Kubernetes) in a namespace, with the command line of a deployment
/// shape; gone when dropped.
pub struct OvnkubeProcess {
    child: Child,
}

impl OvnkubeProcess {
    /// Starts `binary` (the stand-in) in `ns` with these arguments.
    pub fn start(ns: &NetNs, binary: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let process = OvnkubeProcess { child };
        // `ip netns exec` execs the stand-in: until then /proc shows `ip`.
        let cmdline = format!("/proc/{}/cmdline", process.pid());
        noverlay_test_support::eventually_blocking(
            "the stand-in ovnkube to start",
            Duration::from_secs(5),
            || {
                std::fs::read(&cmdline).is_ok_and(|bytes| {
                    bytes
                        .split(|b| *b == 0)
                        .next()
                        .is_some_and(|argv0| argv0.ends_with(b"/ovnkube"))
                })
            },
        )
        .map_err(anyhow::Error::msg)?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OvnkubeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
