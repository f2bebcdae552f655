//! The OpenFlow edge: install a cookie-scoped flow set atomically, read the
//! bridge's flows back, and hear about flow changes. One trait with two
//! real backends (ovs-ofctl here, the native session in [`crate::ofp`]), so
//! the programmer loop can also be tested with a double.
//!
//! Reads come back as [`ReadFlow`]s in the backend's own form: the native
//! session keeps flow-stats entries binary and compares them as bytes, so
//! the agent's hot path (find a wipe, read back a restore) never turns a
//! flow into text; text is made only when someone looks (status, metrics,
//! another controller's flows for [`crate::coexist`]).

use crate::flows::{Flow, MatchKey};
use crate::ofp::{decode, reply::FlowStats};
use crate::twins::{self, TwinChecks};
use std::{future::Future, process::Stdio, time::Duration};
use tokio::{io::AsyncBufReadExt, io::AsyncWriteExt, process::Command, sync::mpsc};

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("cannot run ovs-ofctl: {0}")]
    Spawn(std::io::Error),
    /// `operation` names the tool where one ran ("ovs-ofctl dump-flows").
    #[error("{operation} failed: {reason}")]
    Failed {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation} did not finish within {OVS_CALL_TIMEOUT:?} (ovs-vswitchd stuck?)")]
    Timeout { operation: &'static str },
    /// A probe of the install was refused: another controller wrote a flow
    /// overlapping ours (its twin, usually) after the bridge was read.
    /// Nothing was installed.
    #[error(
        "another controller wrote a flow overlapping ours at their table and priority after we read the bridge; nothing installed, the bridge is read again ({})",
        found.describe(*cookie)
    )]
    Contested {
        found: twins::Contested,
        cookie: u64,
    },
}

/// Deadline of one ovs-ofctl call; the process is killed after it.
pub const OVS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `call` with the deadline; the process dies with the future.
async fn with_deadline<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, SwitchError>>,
) -> Result<T, SwitchError> {
    tokio::time::timeout(OVS_CALL_TIMEOUT, call)
        .await
        .map_err(|_| SwitchError::Timeout { operation })?
}

/// One flow of the bridge as a backend read it, counters included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFlow {
    /// A line of `ovs-ofctl dump-flows`, trimmed.
    Dumped(String),
    /// An entry of a flow-stats reply, as the switch encoded it.
    Native(FlowStats),
}

/// What a read flow is, without its counters: equal for the same flow read
/// twice by the same backend, ordered so that flow sets can be compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowIdentity<'a> {
    Dumped(String),
    Native {
        cookie: u64,
        table: u8,
        priority: u16,
        match_fields: &'a [u8],
        instructions: &'a [u8],
    },
}

impl ReadFlow {
    /// None for a dump line without a readable cookie.
    pub fn cookie(&self) -> Option<u64> {
        match self {
            ReadFlow::Dumped(line) => dumped_cookie(line),
            ReadFlow::Native(stats) => Some(stats.cookie),
        }
    }

    pub fn table_and_priority(&self) -> (u8, u16) {
        match self {
            ReadFlow::Dumped(line) => table_and_priority(line),
            ReadFlow::Native(stats) => (stats.table, stats.priority),
        }
    }

    pub fn identity(&self) -> FlowIdentity<'_> {
        match self {
            ReadFlow::Dumped(line) => FlowIdentity::Dumped(without_counters(line)),
            ReadFlow::Native(stats) => FlowIdentity::Native {
                cookie: stats.cookie,
                table: stats.table,
                priority: stats.priority,
                match_fields: &stats.match_fields,
                instructions: &stats.instructions,
            },
        }
    }

    /// The flow as `ovs-ofctl dump-flows` prints it (ours exactly; other
    /// controllers' fields and actions generically where we do not use them).
    pub fn text(&self) -> String {
        match self {
            ReadFlow::Dumped(line) => line.clone(),
            ReadFlow::Native(stats) => decode::dump_line(stats),
        }
    }

    /// Its match key and packet counter (for per-flow metrics).
    pub fn match_and_packets(&self) -> (MatchKey, u64) {
        match self {
            ReadFlow::Dumped(line) => dumped_match_and_packets(line),
            ReadFlow::Native(stats) => (
                MatchKey::new(
                    stats.table,
                    stats.priority,
                    &decode::match_text(&stats.match_fields),
                ),
                stats.packets,
            ),
        }
    }
}

/// What the programmer needs from the switch.
pub trait FlowSwitch: Send + Sync + 'static {
    /// Replaces every flow of `cookie` with `flows` in one OpenFlow bundle
    /// (a cookie-scoped delete, then the adds): all of it or none of it.
    /// The flows `checks` probes are never added over a twin written since
    /// the bridge was read ([`SwitchError::Contested`], see [`crate::twins`]).
    fn replace(
        &self,
        flows: &[Flow],
        cookie: u64,
        checks: &TwinChecks,
    ) -> impl Future<Output = Result<(), SwitchError>> + Send;

    /// Every flow of the bridge, whatever its cookie, counters included.
    fn dump(&self) -> impl Future<Output = Result<Vec<ReadFlow>, SwitchError>> + Send;

    /// A channel that receives `()` whenever the bridge's flows may have
    /// changed (or the switch connection was lost).
    fn watch(&self) -> mpsc::UnboundedReceiver<()>;
}

/// ovs-ofctl against one bridge's OpenFlow management socket.
#[derive(Debug, Clone)]
pub struct OvsOfctl {
    /// e.g. "unix:/var/run/openvswitch/breth0.mgmt".
    pub target: String,
}

/// The versions ovs-ofctl may negotiate, as the native session does.
const OPENFLOW_VERSION: &str = "OpenFlow13,OpenFlow14";

impl FlowSwitch for OvsOfctl {
    async fn replace(
        &self,
        flows: &[Flow],
        cookie: u64,
        checks: &TwinChecks,
    ) -> Result<(), SwitchError> {
        let probes = checks.plan(flows);
        let (probe_adds, delete_probes) = twins::probe_lines(flows, cookie, &probes);
        let plain = crate::flows::render_bundle(flows, cookie);
        // Our delete first, then the probes, our adds, the probes' delete.
        let (delete_ours, adds) = plain.split_once('\n').unwrap_or((&plain, ""));
        let bundle = format!("{delete_ours}\n{probe_adds}{adds}{delete_probes}");
        let refused =
            with_deadline("ovs-ofctl add-flows --bundle", self.replace_now(&bundle)).await;
        match refused {
            Err(SwitchError::Failed { reason, .. })
                if let Some(index) = twins::contested_in_ofctl_error(&reason)
                    && let Some(found) = probes
                        .get(index)
                        .and_then(|p| twins::Contested::of(*p, flows)) =>
            {
                Err(SwitchError::Contested { found, cookie })
            }
            other => other,
        }
    }

    async fn dump(&self) -> Result<Vec<ReadFlow>, SwitchError> {
        let lines = with_deadline("ovs-ofctl dump-flows", self.dump_now()).await?;
        Ok(lines.into_iter().map(ReadFlow::Dumped).collect())
    }

    fn watch(&self) -> mpsc::UnboundedReceiver<()> {
        self.watch_now()
    }
}

impl OvsOfctl {
    async fn replace_now(&self, bundle: &str) -> Result<(), SwitchError> {
        let mut child = Command::new("ovs-ofctl")
            .args([
                "-O",
                OPENFLOW_VERSION,
                "--bundle",
                "add-flows",
                &self.target,
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(SwitchError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(bundle.as_bytes())
                .await
                .map_err(SwitchError::Spawn)?;
        }
        let output = child.wait_with_output().await.map_err(SwitchError::Spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(SwitchError::Failed {
                operation: "ovs-ofctl add-flows --bundle",
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    async fn dump_now(&self) -> Result<Vec<String>, SwitchError> {
        let output = Command::new("ovs-ofctl")
            .args(["-O", OPENFLOW_VERSION, "dump-flows", &self.target])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(SwitchError::Spawn)?;
        if !output.status.success() {
            return Err(SwitchError::Failed {
                operation: "ovs-ofctl dump-flows",
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        // The first line is the reply header; flows are indented.
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with(' '))
            .map(|l| l.trim().to_string())
            .collect())
    }

    fn watch_now(&self) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        let target = self.target.clone();
        tokio::spawn(async move {
            // `ovs-ofctl monitor` prints a line per flow change; it exits
            // when the connection drops (ovs-vswitchd restarted): both are
            // reasons to verify. Then start it again.
            while !tx.is_closed() {
                // monitor opens a control socket in OVS_RUNDIR, which need
                // not exist where the agent runs: give it a private one. It
                // prints the asynchronous flow updates on stderr.
                let child = Command::new("ovs-ofctl")
                    .env("OVS_RUNDIR", std::env::temp_dir())
                    .args(["-O", OPENFLOW_VERSION, "monitor", &target, "watch:!initial"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn();
                if let Ok(mut child) = child
                    && let Some(stderr) = child.stderr.take()
                {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    loop {
                        tokio::select! {
                            line = lines.next_line() => match line {
                                Ok(Some(_)) => {
                                    if tx.send(()).is_err() {
                                        return;
                                    }
                                }
                                _ => break,
                            },
                            _ = tx.closed() => return,
                        }
                    }
                    let _ = child.kill().await;
                }
                if tx.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        rx
    }
}

/// The cookie of a dumped flow (OVS prints `cookie=0x...` first).
pub fn dumped_cookie(flow: &str) -> Option<u64> {
    let value = flow
        .split([',', ' '])
        .find_map(|part| part.strip_prefix("cookie="))?;
    u64::from_str_radix(value.trim_start_matches("0x"), 16).ok()
}

/// A dumped flow without its counters and ages, for comparing flow sets.
pub fn without_counters(flow: &str) -> String {
    flow.split(", ")
        .filter(|part| {
            ![
                "duration=",
                "n_packets=",
                "n_bytes=",
                "idle_age=",
                "hard_age=",
            ]
            .iter()
            .any(|k| part.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dumped flow's match key and packet counter.
pub fn dumped_match_and_packets(flow: &str) -> (MatchKey, u64) {
    let head = flow.split(" actions=").next().unwrap_or(flow);
    let (table, priority) = table_and_priority(head);
    let mut packets = 0;
    let mut matches = "";
    for part in head.split(", ") {
        if let Some(n) = part.strip_prefix("n_packets=") {
            packets = n.parse().unwrap_or(0);
        } else if !DUMP_HEADER_FIELDS.iter().any(|k| part.starts_with(k)) {
            matches = part;
        }
    }
    let fields: Vec<&str> = matches
        .split(',')
        .filter(|f| !f.starts_with("priority="))
        .collect();
    (MatchKey::new(table, priority, &fields.join(",")), packets)
}

/// The comma-and-space separated fields before a dumped flow's match.
const DUMP_HEADER_FIELDS: [&str; 9] = [
    "cookie=",
    "duration=",
    "table=",
    "n_packets=",
    "n_bytes=",
    "idle_age=",
    "hard_age=",
    "idle_timeout=",
    "hard_timeout=",
];

/// The (table, priority) of a dumped flow; OVS omits table 0 and the
/// default priority.
pub fn table_and_priority(flow: &str) -> (u8, u16) {
    fn field<T: std::str::FromStr>(flow: &str, key: &str) -> Option<T> {
        flow.split([',', ' '])
            .find_map(|part| part.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    }
    (
        field(flow, "table=").unwrap_or(0),
        field(flow, "priority=").unwrap_or(32768),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_priority_are_read_with_ovs_defaults() {
        assert_eq!(
            table_and_priority(
                "cookie=0x1, duration=1s, table=3, n_packets=0, n_bytes=0, priority=100 actions=NORMAL"
            ),
            (3, 100)
        );
        assert_eq!(
            table_and_priority("cookie=0x1, priority=510,ip,in_port=1 actions=goto_table:2"),
            (0, 510)
        );
        assert_eq!(table_and_priority("cookie=0x1, actions=drop"), (0, 32768));
    }

    #[test]
    fn a_dumped_flow_has_the_match_key_of_its_plan() {
        let dumped = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=42, n_bytes=4116, idle_age=0, priority=100,ct_state=+est+trk,ct_mark=0x1,ip actions=output:2";
        let planned = MatchKey::new(1, 100, "ip,ct_state=+trk+est,ct_mark=0x1");
        assert_eq!(dumped_match_and_packets(dumped), (planned, 42));
        let catch_all = "cookie=0x6e6f7672, duration=3.1s, table=1, n_packets=7, n_bytes=0, priority=0 actions=NORMAL";
        assert_eq!(
            dumped_match_and_packets(catch_all),
            (MatchKey::new(1, 0, ""), 7)
        );
    }

    #[test]
    fn counters_and_ages_are_stripped() {
        let dumped = "cookie=0x6e6f7672, duration=12.5s, table=0, n_packets=4, n_bytes=392, idle_age=3, priority=510,ip,in_port=1 actions=goto_table:2";
        assert_eq!(
            without_counters(dumped),
            "cookie=0x6e6f7672, table=0, priority=510,ip,in_port=1 actions=goto_table:2"
        );
    }
}
