//! THE STAND-IN FOR OVN-KUBERNETES' ROUTE IMPORT (ovnkube-controller's,
//! which runs on the DPU in DPU deployments), as the flow-set fixture
//! stands in for ovnkube-node's flows. Written from what upstream's route
//! import does, not from its code:
//!
//! - it lists the kernel routes of protocol bgp in the main table of the
//!   namespace it runs in (the default network's), ignoring routes without
//!   a gateway or a destination (a default route has none);
//! - in no-overlay mode it keeps the remote nodes' pod subnets: here, the
//!   routes inside the cluster CIDRs;
//! - it keeps one `Logical_Router_Static_Route` per route and next hop on
//!   the gateway router (`ip_prefix`, `nexthop`, `output_port` the router's
//!   external port, `external_ids:k8s.ovn.org/owner-controller=RouteImport`;
//!   one row per ECMP next hop), and deletes the rows whose kernel route is
//!   gone in the same transaction;
//! - it follows route events (here `ip monitor route`), taking them 500 ms
//!   after the first of a burst, with no periodic resync; a failed pass is
//!   tried again (upstream requeues it).

use crate::netns::{self, NetNs};
use ipnet::IpNet;
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// The mark upstream's route import puts on its rows (the dpu-agent counts
/// them by it).
const OWNER: (&str, &str) = dpu_agent::ovn::ROUTE_IMPORT_OWNER;
/// Route events are taken this long after the first of a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// A failed pass is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);

/// (prefix, next hop) pairs: kernel routes (one per next hop) or the
/// gateway router's rows.
pub type Routes = BTreeSet<(IpNet, String)>;

/// Where the rows go.
#[derive(Clone)]
pub struct Target {
    pub nb_socket: PathBuf,
    pub router: String,
    pub output_port: String,
    /// Only routes inside these are imported.
    pub cluster_cidrs: Vec<IpNet>,
}

pub struct RouteImport {
    stop: Arc<AtomicBool>,
    monitor: Child,
    worker: Option<JoinHandle<()>>,
    /// The last sync's failure, if it failed.
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl RouteImport {
    /// Syncs once, then follows the namespace's route events.
    pub fn start(ns: &NetNs, target: Target) -> anyhow::Result<Self> {
        // Subscribed before the first sync: a route learned in between is
        // heard, not missed for good.
        let mut monitor = netns::route_monitor(ns)?;
        let stdout = monitor
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("ip monitor has no stdout"))?;
        let (events, heard) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.is_err() || events.send(()).is_err() {
                    return;
                }
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let netns = ns.name.clone();
        let worker = {
            let (stop, last_error) = (stop.clone(), last_error.clone());
            std::thread::spawn(move || {
                // True when the pass failed (and must be tried again).
                let record = |result: anyhow::Result<()>| {
                    let error = result.err().map(|e| e.to_string());
                    let failed = error.is_some();
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
                    failed
                };
                let mut failed = record(sync(&netns, &target));
                while !stop.load(Ordering::Relaxed) {
                    let wait = if failed {
                        RETRY
                    } else {
                        Duration::from_millis(100)
                    };
                    match heard.recv_timeout(wait) {
                        Ok(()) => {
                            std::thread::sleep(DEBOUNCE);
                            while heard.try_recv().is_ok() {}
                            failed = record(sync(&netns, &target));
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) if failed => {
                            failed = record(sync(&netns, &target));
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(
                                "ip monitor route exited: route events are no longer followed"
                                    .into(),
                            );
                            return;
                        }
                    }
                }
            })
        };
        Ok(RouteImport {
            stop,
            monitor,
            worker: Some(worker),
            last_error,
        })
    }
}

impl Drop for RouteImport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// One pass: the kernel's routes against the router's imported rows, the
/// difference written in one transaction.
fn sync(netns: &str, target: &Target) -> anyhow::Result<()> {
    let wanted: Routes = kernel_bgp_routes(netns)?
        .into_iter()
        .filter(|(prefix, _)| target.cluster_cidrs.iter().any(|c| c.contains(prefix)))
        .collect();
    let rows = imported_rows(&target.nb_socket)?;
    let mut args: Vec<String> = Vec::new();
    for (uuid, route) in &rows {
        if !wanted.contains(route) {
            args.extend(
                [
                    "--",
                    "remove",
                    "Logical_Router",
                    &target.router,
                    "static_routes",
                    uuid,
                ]
                .map(String::from),
            );
        }
    }
    let have: Routes = rows.into_iter().map(|(_, route)| route).collect();
    for (n, (prefix, via)) in wanted.difference(&have).enumerate() {
        args.extend([
            "--".into(),
            format!("--id=@r{n}"),
            "create".into(),
            "Logical_Router_Static_Route".into(),
            format!("ip_prefix=\"{prefix}\""),
            format!("nexthop=\"{via}\""),
            format!("output_port=\"{}\"", target.output_port),
            owner_column(),
            "--".into(),
            "add".into(),
            "Logical_Router".into(),
            target.router.clone(),
            "static_routes".into(),
            format!("@r{n}"),
        ]);
    }
    if args.is_empty() {
        return Ok(());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::ovn::nbctl_at(&target.nb_socket, &args)?;
    Ok(())
}

/// The main table's routes of protocol bgp with a destination and a
/// gateway, one entry per next hop.
pub fn kernel_bgp_routes(netns: &str) -> anyhow::Result<Routes> {
    let mut routes = Routes::new();
    for family in ["-4", "-6"] {
        let listing = netns::run_in(
            netns,
            &[
                "ip", "-j", family, "route", "show", "table", "main", "proto", "bgp",
            ],
        )?;
        let json: serde_json::Value = serde_json::from_str(&listing)?;
        for route in json.as_array().into_iter().flatten() {
            let Some(prefix) = route["dst"].as_str().and_then(parse_destination) else {
                continue;
            };
            let gateways = route["nexthops"]
                .as_array()
                .map(|hops| hops.iter().filter_map(|h| h["gateway"].as_str()).collect())
                .unwrap_or_else(|| route["gateway"].as_str().into_iter().collect::<Vec<_>>());
            for via in gateways {
                routes.insert((prefix, via.to_string()));
            }
        }
    }
    Ok(routes)
}

/// `ip`'s destination: a prefix, a bare address (a host route) or
/// "default" (no destination in netlink: skipped).
fn parse_destination(dst: &str) -> Option<IpNet> {
    if let Ok(net) = dst.parse::<IpNet>() {
        return Some(net);
    }
    dst.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

/// `external_ids:"<key>"=<owner>`, as ovn-nbctl takes it.
fn owner_column() -> String {
    let (key, owner) = OWNER;
    format!("external_ids:\"{key}\"={owner}")
}

/// The rows route import owns: (uuid, (prefix, next hop)).
pub fn imported_rows(nb_socket: &Path) -> anyhow::Result<Vec<(String, (IpNet, String))>> {
    let owner = owner_column();
    let listing = crate::ovn::nbctl_at(
        nb_socket,
        &[
            "--format=csv",
            "--data=bare",
            "--no-headings",
            "--columns=_uuid,ip_prefix,nexthop",
            "find",
            "Logical_Router_Static_Route",
            &owner,
        ],
    )?;
    listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            match fields.as_slice() {
                [uuid, prefix, via] => Ok((
                    uuid.to_string(),
                    (prefix.parse::<IpNet>()?.trunc(), via.to_string()),
                )),
                _ => anyhow::bail!("unexpected row {line:?}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_are_prefixes_and_default_routes_have_no_destination() {
        assert_eq!(
            parse_destination("198.18.160.7"),
            Some("198.18.160.7/32".parse().expect("net"))
        );
        assert_eq!(
            parse_destination("fd00:10:244:21::/64"),
            Some("fd00:10:244:21::/64".parse().expect("net"))
        );
        assert_eq!(parse_destination("default"), None);
    }
}
