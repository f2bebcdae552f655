//! Open vSwitch's fragment reassembly, as the operator needs to see it.
//!
//! In the userspace datapath, conntrack reassembles fragments before it
//! tracks them and drops any fragment but the last that is smaller than its
//! minimum (1200 bytes for IPv4, 1280 for IPv6, by default): a router that
//! cuts a remote pod's fragments again leaves tails that small, and the
//! datagram is lost on the DPU (docs/design.md, "ICMP errors, path MTU and
//! fragments"). The kernel datapath has no such minimum. The counters are
//! the switch's (every bridge, OVN's included), read from ovs-vswitchd's
//! control socket (`ovs-appctl dpctl/ipf-get-status`).

pub use crate::state::{FamilyFragments, FragmentStatus};
use noverlay_ovsdb::unixctl;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// The text of `dpctl/ipf-get-status`: `name: value` lines (indented, after
/// a title); lines we do not know are skipped, a missing counter of ours is
/// an error naming it.
pub fn parse_status(text: &str) -> Result<FragmentStatus, String> {
    let value = |name: &str| -> Result<u64, String> {
        text.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .ok_or_else(|| format!("no {name:?} in ovs-vswitchd's fragment status"))?
            .1
            .trim()
            .parse()
            .map_err(|_| format!("{name:?} in ovs-vswitchd's fragment status is not a count"))
    };
    let family = |v: &str| -> Result<FamilyFragments, String> {
        Ok(FamilyFragments {
            enabled: value(&format!("{v} enabled"))? != 0,
            min_size: value(&format!("min {v} frag size"))?,
            accepted: value(&format!("{v} frags accepted"))?,
            completed: value(&format!("{v} frags completed"))?,
            expired: value(&format!("{v} frags expired"))?,
            too_small: value(&format!("{v} frags too small"))?,
        })
    };
    Ok(FragmentStatus {
        ipv4: family("v4")?,
        ipv6: family("v6")?,
    })
}

/// Where ovs-vswitchd's control socket is: configured, else as Open vSwitch
/// names it, `ovs-vswitchd.<pid>.ctl` in its run directory (that of the
/// OVSDB socket), the pid from `ovs-vswitchd.pid` there.
pub fn control_socket(configured: Option<&Path>, ovsdb_socket: &Path) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    let run_dir = ovsdb_socket.parent().unwrap_or(Path::new("/"));
    let pidfile = run_dir.join("ovs-vswitchd.pid");
    let text = noverlay_runtime::files::read_bounded(&pidfile, 64)
        .map_err(|e| format!("{}: {e} (set [bridge] vswitchd_control)", pidfile.display()))?;
    let pid: u32 = text.trim().parse().map_err(|_| {
        format!(
            "{}: {:?} is not a pid (set [bridge] vswitchd_control)",
            pidfile.display(),
            text.trim()
        )
    })?;
    Ok(run_dir.join(format!("ovs-vswitchd.{pid}.ctl")))
}

/// How often the counters are read: they explain losses after the fact,
/// so a few seconds late is fine.
const POLL: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(1);

/// Reads the fragment status every few seconds into the state hub until
/// shutdown; a failure is recorded (and shown by metrics as absent), never
/// fatal: the path does not depend on it.
pub async fn run_fragment_watch(
    handle: crate::state::AgentHandle,
    configured: Option<PathBuf>,
    ovsdb_socket: PathBuf,
    shutdown: CancellationToken,
) {
    let mut last_error = String::new();
    loop {
        let read = async {
            // A file read: off the runtime's workers.
            let (configured, ovsdb) = (configured.clone(), ovsdb_socket.clone());
            let socket =
                tokio::task::spawn_blocking(move || control_socket(configured.as_deref(), &ovsdb))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|found| found)?;
            let text = unixctl::call(&socket, "dpctl/ipf-get-status", DEADLINE)
                .await
                .map_err(|e| match e {
                    // ovs-vswitchd without it (a kernel datapath has no such
                    // module; several datapaths need one named): nothing is
                    // wrong with the node.
                    noverlay_ovsdb::Error::Refused(why) => Unread::NotHere(why),
                    other => Unread::Failed(other.to_string()),
                })?;
            parse_status(&text).map_err(Unread::Failed)
        };
        match read.await {
            Ok(status) => {
                handle.set_fragments(Some(status));
                last_error.clear();
            }
            Err(unread) => {
                handle.set_fragments(None);
                let text = unread.to_string();
                if text != last_error {
                    match unread {
                        Unread::NotHere(_) => tracing::info!(
                            reason = %text,
                            "no fragment counters from Open vSwitch here; the fragment metrics stay absent"
                        ),
                        Unread::Failed(_) => tracing::warn!(
                            error = %text,
                            "cannot read Open vSwitch's fragment counters"
                        ),
                    }
                    last_error = text;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Why the counters were not read.
enum Unread {
    /// ovs-vswitchd has no such counters (answered with an error).
    NotHere(String),
    /// It could not be asked, or its answer made no sense.
    Failed(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::NotHere(why) | Unread::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for Unread {
    fn from(why: String) -> Self {
        Unread::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Open vSwitch 3.1 prints it.
    const STATUS: &str = "        Fragmentation Module Status
        ---------------------------
        v4 enabled: 1
        v6 enabled: 1
        max num frags (v4/v6): 1000
        num frag: 63
        min v4 frag size: 1200
        v4 frags accepted: 244
        v4 frags completed: 128
        v4 frags expired: 45
        v4 frags too small: 168
        v4 frags overlapped: 0
        v4 frags purged: 9
        min v6 frag size: 1280
        v6 frags accepted: 44
        v6 frags completed: 43
        v6 frags expired: 0
        v6 frags too small: 0
        v6 frags overlapped: 0
        v6 frags purged: 0
";

    #[test]
    fn the_counters_are_read_as_ovs_prints_them() {
        let status = parse_status(STATUS).expect("parses");
        assert_eq!(
            status.ipv4,
            FamilyFragments {
                enabled: true,
                min_size: 1200,
                accepted: 244,
                completed: 128,
                expired: 45,
                too_small: 168,
            }
        );
        assert_eq!(status.ipv6.min_size, 1280);
        assert_eq!(status.ipv6.too_small, 0);
    }

    #[test]
    fn a_missing_or_garbled_counter_is_named() {
        let missing = STATUS.replace("v6 frags too small: 0\n", "");
        assert_eq!(
            parse_status(&missing),
            Err("no \"v6 frags too small\" in ovs-vswitchd's fragment status".into())
        );
        let garbled = STATUS.replace("min v4 frag size: 1200", "min v4 frag size: lots");
        assert!(parse_status(&garbled).is_err_and(|e| e.contains("min v4 frag size")));
        assert!(parse_status("").is_err());
    }

    #[test]
    fn the_socket_is_found_from_the_pidfile_or_taken_as_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("db.sock");
        let configured = dir.path().join("vswitchd.ctl");
        assert_eq!(control_socket(Some(&configured), &db), Ok(configured));
        let error = control_socket(None, &db).expect_err("no pidfile");
        assert!(error.contains("ovs-vswitchd.pid") && error.contains("vswitchd_control"));
        std::fs::write(dir.path().join("ovs-vswitchd.pid"), "4242\n").expect("write");
        assert_eq!(
            control_socket(None, &db),
            Ok(dir.path().join("ovs-vswitchd.4242.ctl"))
        );
        std::fs::write(dir.path().join("ovs-vswitchd.pid"), "x").expect("write");
        assert!(control_socket(None, &db).is_err_and(|e| e.contains("not a pid")));
    }
}
