//! `host-agent status`: the running agent's status over a local unix
//! socket, for operators on the host without grpcurl.
//!
//! The protocol is as small as it gets: a client connects, the agent writes
//! one JSON document ([`StatusReport`]) and closes. The agent reads nothing
//! from the socket, so a client cannot feed it anything. The socket is
//! owner-only (0600; the agent runs as root, so root only) and lives in a
//! directory systemd makes for it (`RuntimeDirectory`, 0700).

use crate::status::{DpuOvnRoutes, HostStatus, Phase};
use noverlay_proto::contract::Contract;
use serde::{Deserialize, Serialize};
use std::{
    fmt::Write as _,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// Where the agent serves its status unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/noverlay/host-agent.sock";
/// How long one client may take to read the status.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// How long `host-agent status` waits for the agent.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// The largest status a client accepts (1024 routes and their nft rules fit
/// many times over).
const MAX_STATUS_BYTES: u64 = 8 * 1024 * 1024;

/// The agent's status as `host-agent status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// "connecting", "following", "refused", "unreachable" or "out_of_scope".
    pub phase: String,
    /// Why, for "refused" and "unreachable".
    pub phase_detail: Option<String>,
    /// The dpu-agent's address.
    pub dpu: String,
    /// The contract in place; None before the first one.
    pub contract: Option<ContractReport>,
    /// Unix time (seconds) the contract was applied; 0 if never.
    pub applied_unix: i64,
    /// Where the DPU took each fact of the contract from, as it said.
    #[serde(default)]
    pub dpu_facts: Vec<String>,
    /// Where this host's config took its masquerade subnets from.
    #[serde(default)]
    pub host_facts: Vec<String>,
    /// OVN's routes for the cluster CIDRs on the DPU, as it last said
    /// (None: it says nothing, e.g. no [ovn] section there).
    #[serde(default)]
    pub dpu_ovn_routes: Option<DpuOvnRoutes>,
    /// Our routes as the kernel lists them (`ip route` syntax); a planned
    /// route the kernel has otherwise is listed as it has it, marked
    /// `[not ours: planned ...]` or `[missing: planned ...]`.
    pub routes: Vec<String>,
    /// Planned routes another writer keeps replacing, left to it for now.
    #[serde(default)]
    pub route_conflicts: Vec<String>,
    /// Routes of ours taken back from other writers.
    #[serde(default)]
    pub route_takebacks: u64,
    /// Why the nftables event watcher hears nothing (empty: it hears); our
    /// table is rewritten on every reconcile meanwhile.
    #[serde(default)]
    pub nft_watch_lost: String,
    #[serde(default)]
    pub nft_watch_restarts: u64,
    /// Times the kernel dropped route events for us; each time everything
    /// was read again.
    #[serde(default)]
    pub route_event_overruns: u64,
    /// Our nft table as the kernel has it.
    pub nft_ruleset: String,
    /// The last contract or apply error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Drift found and fixed, reconciles run, sessions with the DPU ended.
    pub repairs: u64,
    pub reconciles: u64,
    pub disconnects: u64,
    /// The agent's version line (version, commit, protocol).
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractReport {
    pub revision: u64,
    pub mode: String,
    pub mtu: u32,
    pub gateway_interface: String,
    pub families: Vec<FamilyReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyReport {
    pub masquerade_subnet: String,
    pub host_ip: String,
    pub dummy_next_hop: String,
    pub underlay_ip: String,
    pub cluster_cidrs: Vec<String>,
}

impl StatusReport {
    pub fn new(status: &HostStatus, dpu: &str, version: &str) -> Self {
        let (phase, phase_detail) = match &status.phase {
            Phase::Connecting => ("connecting", None),
            Phase::Following => ("following", None),
            Phase::Refused(why) => ("refused", Some(why.clone())),
            Phase::Unreachable(why) => ("unreachable", Some(why.clone())),
            Phase::OutOfScope => ("out_of_scope", None),
        };
        StatusReport {
            phase: phase.into(),
            phase_detail,
            dpu: dpu.into(),
            contract: status.applied.as_ref().map(ContractReport::new),
            applied_unix: status.applied_unix,
            dpu_facts: status.dpu_facts.clone(),
            host_facts: status.host_facts.clone(),
            dpu_ovn_routes: status.dpu_ovn_routes.clone(),
            routes: status.routes.clone(),
            route_conflicts: status.route_conflicts.clone(),
            route_takebacks: status.route_takebacks,
            nft_watch_lost: status.nft_watch_lost.clone(),
            nft_watch_restarts: status.nft_watch_restarts,
            route_event_overruns: status.route_event_overruns,
            nft_ruleset: status.nft_ruleset.clone(),
            last_error: status.last_error.clone(),
            repairs: status.repairs,
            reconciles: status.reconciles,
            disconnects: status.disconnects,
            version: version.into(),
        }
    }

    /// For people: a few lines, the same facts as the JSON.
    pub fn render(&self) -> String {
        let mut out = format!("host-agent {}\n", self.version);
        let _ = write!(out, "DPU {}: {}", self.dpu, self.phase);
        // What the DPU said may hold anything: no escape sequence of its
        // reaches the operator's terminal.
        if let Some(detail) = &self.phase_detail {
            let _ = write!(out, " ({})", escaped(detail));
        }
        out.push('\n');
        match &self.contract {
            None => out.push_str("contract: none applied yet\n"),
            Some(c) => {
                let _ = writeln!(
                    out,
                    "contract: revision {}, mode {}, mtu {}, gateway interface {} (applied at unix time {})",
                    c.revision, c.mode, c.mtu, c.gateway_interface, self.applied_unix
                );
                for f in &c.families {
                    let _ = writeln!(
                        out,
                        "  masquerade {} (host {}, next hop {}), underlay {}, cluster CIDRs: {}",
                        f.masquerade_subnet,
                        f.host_ip,
                        f.dummy_next_hop,
                        f.underlay_ip,
                        f.cluster_cidrs.join(", ")
                    );
                }
            }
        }
        for fact in &self.host_facts {
            let _ = writeln!(out, "  host fact: {}", escaped(fact));
        }
        for fact in &self.dpu_facts {
            let _ = writeln!(out, "  DPU fact: {}", escaped(fact));
        }
        if let Some(ovn) = &self.dpu_ovn_routes {
            let unrouted = match ovn.unrouted_cidrs.as_slice() {
                [] => "none".to_string(),
                some => format!("{} (OVN drops their traffic)", some.join(", ")),
            };
            let _ = writeln!(
                out,
                "OVN on the DPU: {} routes take cluster traffic, {} of them from route import (BGP); cluster CIDRs without a route: {unrouted}",
                ovn.cluster_routes, ovn.imported
            );
        }
        let _ = writeln!(
            out,
            "routes ({}, {} taken back from other writers):",
            self.routes.len(),
            self.route_takebacks
        );
        for route in &self.routes {
            let _ = writeln!(out, "  {route}");
        }
        for conflict in &self.route_conflicts {
            let _ = writeln!(out, "route conflict: {conflict}");
        }
        if !self.nft_watch_lost.is_empty() {
            let _ = writeln!(
                out,
                "nftables watcher deaf ({}): our table is rewritten on every reconcile until it is back",
                escaped(&self.nft_watch_lost)
            );
        }
        if !self.nft_ruleset.is_empty() {
            out.push_str("nftables:\n");
            for line in self.nft_ruleset.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        let _ = writeln!(
            out,
            "last error: {}",
            self.last_error.as_deref().map_or("none".into(), escaped)
        );
        let _ = writeln!(
            out,
            "repairs {}, reconciles {}, DPU sessions ended {}, route event overruns {}",
            self.repairs, self.reconciles, self.disconnects, self.route_event_overruns
        );
        out
    }
}

/// Text that came from the DPU, its control characters escaped (whole).
fn escaped(text: &str) -> String {
    // As many characters as it has bytes: nothing is cut.
    noverlay_proto::text::printable(text, text.len())
}

impl ContractReport {
    fn new(contract: &Contract) -> Self {
        ContractReport {
            revision: contract.revision,
            mode: contract.mode.to_string(),
            mtu: contract.mtu,
            gateway_interface: contract.gateway_interface.clone(),
            families: contract
                .families
                .iter()
                .map(|f| FamilyReport {
                    masquerade_subnet: f.masquerade.subnet.to_string(),
                    host_ip: f.masquerade.host_ip.to_string(),
                    dummy_next_hop: f.masquerade.dummy_next_hop.to_string(),
                    underlay_ip: f.underlay_ip.to_string(),
                    cluster_cidrs: f.cluster_cidrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalStatusError {
    #[error("status socket {path} (config key status_socket): {reason}")]
    Socket { path: PathBuf, reason: String },
    #[error(
        "no host-agent answers at {path}: {source} (is it running? is this the socket its config names?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the status from {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// Binds the status socket: owner-only, replacing a stale socket left by an
/// agent that died, refusing to take over one that a running agent serves
/// or a path that is not a socket.
pub async fn bind(path: &Path) -> Result<UnixListener, LocalStatusError> {
    let error = |reason: String| LocalStatusError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    // systemd makes the directory (RuntimeDirectory); an agent started by
    // hand makes it itself, owner-only like systemd's.
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                error(format!(
                    "cannot create its directory {}: {e}; create it (mode 0700) or point status_socket at a writable directory",
                    dir.display()
                ))
            })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(error(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(error(
                "another host-agent is serving its status here".into(),
            ));
        }
        std::fs::remove_file(path).map_err(|e| error(format!("removing the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        error(format!(
            "bind: {e}; make its directory writable for the agent or point status_socket elsewhere"
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| error(format!("making it owner-only: {e}")))?;
    Ok(listener)
}

/// Answers every connection with the current status until `shutdown`, then
/// removes the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    status: watch::Receiver<HostStatus>,
    dpu: String,
    version: String,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "status socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let report = StatusReport::new(&status.borrow(), &dpu, &version);
        let Ok(mut json) = serde_json::to_vec(&report) else {
            continue;
        };
        json.push(b'\n');
        // A client that does not read cannot hold the agent up.
        let written = tokio::time::timeout(WRITE_DEADLINE, async {
            stream.write_all(&json).await?;
            stream.shutdown().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!("a status client went away or did not read in time");
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// What `host-agent status` does: reads the running agent's status.
pub async fn read(path: &Path) -> Result<StatusReport, LocalStatusError> {
    let read_error = |reason: String| LocalStatusError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| LocalStatusError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let mut text = Vec::new();
    tokio::time::timeout(
        READ_DEADLINE,
        stream.take(MAX_STATUS_BYTES + 1).read_to_end(&mut text),
    )
    .await
    .map_err(|_| read_error(format!("no answer within {READ_DEADLINE:?}")))?
    .map_err(|e| read_error(e.to_string()))?;
    if text.len() as u64 > MAX_STATUS_BYTES {
        return Err(read_error(format!("more than {MAX_STATUS_BYTES} bytes")));
    }
    serde_json::from_slice(&text).map_err(|e| read_error(format!("not a status: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_human_rendering_says_what_the_json_says() {
        let report = StatusReport {
            phase: "unreachable".into(),
            phase_detail: Some("connection refused".into()),
            dpu: "192.0.2.1:50051".into(),
            contract: Some(ContractReport {
                revision: 3,
                mode: "dpu-host/shared/no-overlay".into(),
                mtu: 1400,
                gateway_interface: "eth0".into(),
                families: vec![FamilyReport {
                    masquerade_subnet: "169.254.0.0/17".into(),
                    host_ip: "169.254.0.2".into(),
                    dummy_next_hop: "169.254.0.4".into(),
                    underlay_ip: "198.18.0.10".into(),
                    cluster_cidrs: vec!["198.18.128.0/17".into()],
                }],
            }),
            applied_unix: 1_700_000_000,
            dpu_facts: vec!["mtu = 1400 (from /etc/openvswitch/ovn_k8s.conf)".into()],
            host_facts: vec![
                "ipv4.masquerade_subnet = 169.254.0.0/17 (from ovnkube's command line (pid 42, --gateway-v4-masquerade-subnet))".into(),
            ],
            dpu_ovn_routes: None,
            routes: vec![
                "198.18.128.0/18 via 169.254.0.4 dev eth0 proto 240 mtu 1400".into(),
                "198.18.192.0/18 via 198.19.1.1 dev ovn-k8s-mp0 proto 3 [not ours: planned 198.18.192.0/18 via 169.254.0.4 dev eth0 mtu 1400 proto 240]".into(),
            ],
            route_conflicts: vec!["198.18.192.0/18: another writer keeps replacing our route (198.18.192.0/18 via 198.19.1.1 dev ovn-k8s-mp0 proto 3); taken back 3 times, holding off for 1s".into()],
            route_takebacks: 3,
            nft_watch_lost: String::new(),
            nft_watch_restarts: 0,
            route_event_overruns: 0,
            nft_ruleset: "table inet noverlay {\n}\n".into(),
            last_error: None,
            repairs: 2,
            reconciles: 7,
            disconnects: 1,
            version: "0.1.0 (commit abc, protocol 1)".into(),
        };
        assert_eq!(
            report.render(),
            "host-agent 0.1.0 (commit abc, protocol 1)\n\
             DPU 192.0.2.1:50051: unreachable (connection refused)\n\
             contract: revision 3, mode dpu-host/shared/no-overlay, mtu 1400, gateway interface eth0 (applied at unix time 1700000000)\n  \
             masquerade 169.254.0.0/17 (host 169.254.0.2, next hop 169.254.0.4), underlay 198.18.0.10, cluster CIDRs: 198.18.128.0/17\n  \
             host fact: ipv4.masquerade_subnet = 169.254.0.0/17 (from ovnkube's command line (pid 42, --gateway-v4-masquerade-subnet))\n  \
             DPU fact: mtu = 1400 (from /etc/openvswitch/ovn_k8s.conf)\n\
             routes (2, 3 taken back from other writers):\n  198.18.128.0/18 via 169.254.0.4 dev eth0 proto 240 mtu 1400\n  \
             198.18.192.0/18 via 198.19.1.1 dev ovn-k8s-mp0 proto 3 [not ours: planned 198.18.192.0/18 via 169.254.0.4 dev eth0 mtu 1400 proto 240]\n\
             route conflict: 198.18.192.0/18: another writer keeps replacing our route (198.18.192.0/18 via 198.19.1.1 dev ovn-k8s-mp0 proto 3); taken back 3 times, holding off for 1s\n\
             nftables:\n  table inet noverlay {\n  }\n\
             last error: none\n\
             repairs 2, reconciles 7, DPU sessions ended 1, route event overruns 0\n"
        );
        // A deaf nftables watcher is one line, above the table.
        let deaf = StatusReport {
            nft_watch_lost: "Connection reset by peer".into(),
            ..report.clone()
        };
        assert!(deaf.render().contains(
            "route conflict: 198.18.192.0/18: another writer keeps replacing our route (198.18.192.0/18 via 198.19.1.1 dev ovn-k8s-mp0 proto 3); taken back 3 times, holding off for 1s\n\
             nftables watcher deaf (Connection reset by peer): our table is rewritten on every reconcile until it is back\n\
             nftables:"
        ));
        // OVN's routes on the DPU, as it said, one line after its facts.
        let with_ovn = StatusReport {
            dpu_ovn_routes: Some(DpuOvnRoutes::from_pb(&noverlay_proto::pb::OvnRoutes {
                cluster_routes: 4,
                imported: 3,
                unrouted_cidrs: vec!["fd00:10:244::/48".into(), "\u{1b}[2J".into()],
            })),
            ..report.clone()
        };
        assert!(with_ovn.render().contains(
            "  DPU fact: mtu = 1400 (from /etc/openvswitch/ovn_k8s.conf)\n\
             OVN on the DPU: 4 routes take cluster traffic, 3 of them from route import (BGP); cluster CIDRs without a route: fd00:10:244::/48 (OVN drops their traffic)\n\
             routes (2,"
        ), "{}", with_ovn.render());
        // Whatever the DPU put in its words reaches the terminal escaped.
        let hostile = StatusReport {
            phase_detail: Some("refused\u{1b}[2J\u{1b}]0;owned\u{7}".into()),
            last_error: Some("x\ny".into()),
            dpu_facts: vec!["\u{1b}[31mred".into()],
            ..report.clone()
        };
        let shown = hostile.render();
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown:?}"
        );
        assert!(shown.contains("(refused\\u{1b}[2J"), "{shown}");
        assert!(shown.contains("last error: x\\ny\n"), "{shown}");
        let json = serde_json::to_string(&report).expect("json");
        let back: StatusReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
    }

    #[tokio::test]
    async fn the_socket_is_owner_only_and_never_taken_from_a_running_agent() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("host-agent.sock");
        let (tx, rx) = watch::channel(HostStatus::default());
        let listener = bind(&path).await.expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            path.clone(),
            rx,
            "192.0.2.1:50051".into(),
            "test".into(),
            shutdown.clone(),
        ));
        tx.send_modify(|s| s.repairs = 4);
        let report = read(&path).await.expect("status");
        assert_eq!((report.phase.as_str(), report.repairs), ("connecting", 4));
        // A second agent does not take the socket over.
        let error = bind(&path).await.expect_err("taken over").to_string();
        assert!(error.contains("another host-agent"), "{error}");
        shutdown.cancel();
        server.await.expect("server");
        assert!(!path.exists(), "socket left behind");
        // A stale socket (its agent died) is replaced; a regular file is not.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        bind(&path).await.expect("stale socket replaced");
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "x").expect("file");
        let error = bind(&file).await.expect_err("file replaced").to_string();
        assert!(error.contains("not a socket"), "{error}");
        let error = read(&dir.path().join("absent.sock"))
            .await
            .expect_err("nothing there")
            .to_string();
        assert!(error.contains("no host-agent answers"), "{error}");
    }
}
