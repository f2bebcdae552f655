//! The flow programmer's logic against a recording switch double: what it
//! writes, when it restores, how it reports failures. (The same loop runs
//! against real Open vSwitch in dpu_datapath.rs.)

use dpu_agent::{
    flows::{Flow, MatchKey},
    programmer::run_flow_programmer,
    state::AgentHandle,
    switch::{FlowSwitch, ReadFlow, SwitchError},
    twins::{Contested, Probe},
};
use noverlay_openflow::{
    dump::{dumped_cookie, table_and_priority},
    reply::FlowStats,
    spec::FlowSpec,
};
use noverlay_runtime::systemd::{Heartbeat, Watchdog};
use noverlay_tests::harness::{self, Certs, DpuOptions, RunningDpu};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A switch that keeps the flows it was given and reports them as Open
/// vSwitch would (flow-stats entries encoded by the agent's own encoder),
/// and can be told to fail. Its bundles and flows are also kept as
/// ovs-ofctl text, for the assertions.
#[derive(Clone, Default)]
struct RecordingSwitch {
    state: Arc<Mutex<SwitchState>>,
    events: Arc<Mutex<Option<mpsc::UnboundedSender<()>>>>,
}

#[derive(Default)]
struct SwitchState {
    /// On the bridge under our cookie, as `ovs-ofctl add-flow` lines.
    flows: Vec<String>,
    bundles: Vec<String>,
    refuse: Option<String>,
    /// Installs never return (a wedged ovs-vswitchd without deadlines).
    hang: bool,
    /// Another controller's flows, as dump-flows prints them.
    foreign: Vec<String>,
    /// The next read after an install fails (the switch went away
    /// between the commit and the read-back).
    fail_read_back: bool,
    /// An install happened since the last read.
    installed: bool,
    /// Another controller's flow (a dump line) that appears while the next
    /// install that probes its twin is in flight: that install is refused.
    late_twin: Option<String>,
    /// A planned flow's match that someone else's flow (in `foreign`, at
    /// the same place) overlaps without being its twin: every install
    /// probing it is refused.
    overlapped: Option<dpu_agent::flows::MatchKey>,
}

impl RecordingSwitch {
    fn with<T>(&self, f: impl FnOnce(&mut SwitchState) -> T) -> T {
        f(&mut self.state.lock().expect("switch state"))
    }

    /// What the flow monitor would report after someone else's change.
    fn notify(&self) {
        if let Some(tx) = self.events.lock().expect("events").as_ref() {
            let _ = tx.send(());
        }
    }
}

impl FlowSwitch for RecordingSwitch {
    async fn replace(
        &self,
        flows: &[Flow],
        cookie: u64,
        checks: &dpu_agent::twins::TwinChecks,
    ) -> Result<(), SwitchError> {
        let bundle = dpu_agent::flows::render_bundle(flows, cookie);
        let probes = checks.plan(flows);
        let contested = self.with(|s| {
            // The probe (if any) that a flow at `key`'s place refuses.
            let refused = |key: &dpu_agent::flows::MatchKey| {
                probes.iter().find_map(|probe| match *probe {
                    Probe::Place { table, priority }
                        if (table, priority) == (key.table, key.priority) =>
                    {
                        Some(Contested::Place { table, priority })
                    }
                    Probe::Flow(i) if flows[i].match_key() == *key => {
                        Some(Contested::Flow(flows[i].clone()))
                    }
                    _ => None,
                })
            };
            if let Some(line) = s.late_twin.clone() {
                let key = MatchKey::dumped(&line).0;
                if let Some(found) = refused(&key) {
                    s.foreign.push(line);
                    s.late_twin = None;
                    return Some(found);
                }
            }
            refused(&s.overlapped.clone()?)
        });
        if let Some(found) = contested {
            return Err(SwitchError::Contested { found, cookie });
        }
        if self.with(|s| s.hang) {
            std::future::pending::<()>().await;
        }
        self.with(|s| {
            if let Some(reason) = s.refuse.clone() {
                return Err(SwitchError::Failed {
                    operation: "OpenFlow bundle",
                    reason,
                });
            }
            s.bundles.push(bundle.to_string());
            s.installed = true;
            s.flows = bundle
                .lines()
                .filter_map(|l| l.strip_prefix("add "))
                .map(str::to_string)
                .collect();
            Ok(())
        })
    }

    async fn dump(&self) -> Result<Vec<ReadFlow>, SwitchError> {
        if self.with(|s| std::mem::take(&mut s.installed) && std::mem::take(&mut s.fail_read_back))
        {
            return Err(SwitchError::Failed {
                operation: "OpenFlow flow stats",
                reason: "connection reset".into(),
            });
        }
        Ok(self.with(|s| {
            let ours = s.flows.iter().map(|line| reported_add_line(line));
            let theirs = s.foreign.iter().map(|line| reported_dump_line(line));
            ours.chain(theirs).collect()
        }))
    }

    fn watch(&self) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().expect("events") = Some(tx);
        rx
    }
}

/// A flow as the switch reports it once added.
fn reported(cookie: u64, table: u8, priority: u16, matches: &str, actions: &str) -> ReadFlow {
    let spec = FlowSpec::parse(cookie, table, priority, matches, actions)
        .unwrap_or_else(|e| panic!("the double cannot encode {matches} {actions}: {e}"));
    ReadFlow(FlowStats::of(&spec, 0, 0).expect("an encoded flow mod parses"))
}

/// A flow given as an `ovs-ofctl add-flow` line:
/// `cookie=C,table=T,priority=P[,match...],actions=A`.
fn reported_add_line(line: &str) -> ReadFlow {
    let (head, actions) = line.split_once(",actions=").expect("an add line");
    let mut parts = head.splitn(4, ',');
    let mut value = |key: &str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(key))
            .unwrap_or_else(|| panic!("{line}: no {key}"))
            .to_string()
    };
    let cookie = value("cookie=");
    let table = value("table=").parse().expect("a table");
    let priority = value("priority=").parse().expect("a priority");
    let matches = parts.next().unwrap_or("");
    let cookie = u64::from_str_radix(cookie.trim_start_matches("0x"), 16).expect("a cookie");
    reported(cookie, table, priority, matches, actions)
}

/// Another controller's flow, given as `ovs-ofctl dump-flows` prints it.
fn reported_dump_line(line: &str) -> ReadFlow {
    let (head, actions) = line.split_once(" actions=").expect("a dump line");
    let cookie = dumped_cookie(line).expect("a cookie");
    let (table, priority) = table_and_priority(head);
    // The match follows `priority=N,` in the last comma-and-space part.
    let last = head.rsplit(", ").next().unwrap_or(head);
    let matches = last.split_once(',').map_or("", |(_, m)| m);
    reported(cookie, table, priority, matches, actions)
}

async fn agent() -> anyhow::Result<(RunningDpu, AgentHandle, Certs)> {
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let handle = dpu.handle.clone();
    Ok((dpu, handle, certs))
}

async fn eventually(what: &str, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    noverlay_test_support::eventually(what, Duration::from_secs(5), ready)
        .await
        .map(drop)
        .map_err(anyhow::Error::msg)
}

/// Runs the programmer on `switch` until the returned token is cancelled.
fn spawn_programmer(
    handle: &AgentHandle,
    switch: &RecordingSwitch,
    verify_interval: Duration,
    heartbeat: Heartbeat,
) -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(run_flow_programmer(
        handle.clone(),
        switch.clone(),
        verify_interval,
        heartbeat,
        shutdown.clone(),
    ));
    shutdown
}

fn unwatched() -> Heartbeat {
    Watchdog::with_timeout(None).heartbeat("flow programmer")
}

#[tokio::test]
async fn installs_one_cookie_scoped_bundle_and_restores_after_drift() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_secs(3600), unwatched());
    let planned = handle.desired_flows().map(|f| f.len()).unwrap_or_default();
    eventually("install", || handle.installed_flows().len() == planned).await?;
    let first = switch.with(|s| s.bundles.clone());
    assert_eq!(first.len(), 1);
    assert!(
        first[0].starts_with("delete cookie=0x6e6f7672/-1\n"),
        "{}",
        first[0]
    );

    // Wiped (e.g. ovs-vswitchd restarted): restored and counted.
    switch.with(|s| s.flows.clear());
    switch.notify();
    eventually("restore after a wipe", || handle.flow_repairs() == 1).await?;
    assert_eq!(switch.with(|s| s.flows.len()), planned);

    // Someone adds a flow under our cookie: our set is put back exactly.
    switch.with(|s| {
        s.flows
            .push("cookie=0x6e6f7672,table=0,priority=999,actions=drop".into())
    });
    switch.notify();
    eventually("restore after a foreign flow", || {
        handle.flow_repairs() == 2
    })
    .await?;
    assert!(switch.with(|s| s.flows.iter().all(|f| !f.contains("priority=999"))));

    // A change the flows already match is not a repair.
    switch.notify();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.flow_repairs(), 2);
    assert_eq!(switch.with(|s| s.bundles.len()), 3);
    shutdown.cancel();
    dpu.stop().await
}

/// A restore counts once its bundle is committed: a read-back that fails
/// after it makes the install go again, not the repair count.
#[tokio::test]
async fn a_restore_whose_read_back_fails_counts_once() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_millis(100), unwatched());
    let planned = handle.desired_flows().map(|f| f.len()).unwrap_or_default();
    eventually("install", || handle.installed_flows().len() == planned).await?;
    switch.with(|s| {
        s.flows.clear();
        s.fail_read_back = true;
    });
    switch.notify();
    eventually("the restore counted", || handle.flow_repairs() == 1).await?;
    eventually("the install retried after the failed read-back", || {
        switch.with(|s| s.bundles.len()) == 3 && handle.last_error().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handle.flow_repairs(), 1, "one wipe, one repair");
    assert_eq!(switch.with(|s| s.flows.len()), planned);
    shutdown.cancel();
    dpu.stop().await
}

#[tokio::test]
async fn a_refused_bundle_is_reported_and_retried() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    switch.with(|s| s.refuse = Some("ovs-ofctl: breth0: failed to connect to socket".into()));
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_millis(100), unwatched());
    eventually("the error in status", || {
        handle.last_error().contains("failed to connect")
    })
    .await?;
    assert!(handle.installed_flows().is_empty());
    // The switch comes back: the next round installs and clears the error.
    switch.with(|s| s.refuse = None);
    let planned = handle.desired_flows().map(|f| f.len()).unwrap_or_default();
    eventually("install after the switch came back", || {
        handle.installed_flows().len() == planned && handle.last_error().is_empty()
    })
    .await?;
    shutdown.cancel();
    dpu.stop().await
}

#[tokio::test]
async fn a_wedged_programmer_stops_feeding_the_watchdog() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    switch.with(|s| s.hang = true);
    let watchdog = Watchdog::with_timeout(Some(Duration::from_millis(400)));
    let shutdown = spawn_programmer(
        &handle,
        &switch,
        Duration::from_secs(3600),
        watchdog.heartbeat("flow programmer"),
    );
    // Stuck in its first install: the loop no longer comes round to beat.
    eventually("the programmer reported stuck", || {
        watchdog.stale_loops() == ["flow programmer"]
    })
    .await?;
    shutdown.cancel();
    dpu.stop().await
}

#[tokio::test]
async fn a_healthy_idle_programmer_keeps_feeding_the_watchdog() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let watchdog = Watchdog::with_timeout(Some(Duration::from_millis(400)));
    let shutdown = spawn_programmer(
        &handle,
        &switch,
        Duration::from_secs(3600),
        watchdog.heartbeat("flow programmer"),
    );
    let planned = handle.desired_flows().map(|f| f.len()).unwrap_or_default();
    eventually("install", || handle.installed_flows().len() == planned).await?;
    // Idle (no events, verify an hour away) for several timeouts.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            watchdog.stale_loops().is_empty(),
            "idle loop reported stuck"
        );
    }
    shutdown.cancel();
    dpu.stop().await
}

#[tokio::test]
async fn another_controllers_twin_is_never_overwritten_and_a_conflict_is_named()
-> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    // Their table-2 flow does what ours would (provided); their table-1
    // catch-all drops instead of NORMAL (a conflict).
    switch.with(|s| {
        s.foreign = vec![
            "cookie=0xdeff105, duration=1s, table=2, n_packets=0, n_bytes=0, priority=100 actions=set_field:02:00:c6:12:00:0a->eth_dst,output:2".into(),
            "cookie=0xdeff105, duration=1s, table=1, n_packets=0, n_bytes=0, priority=0 actions=drop".into(),
        ]
    });
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_secs(3600), unwatched());
    eventually("the conflict in status", || {
        handle.last_error().contains("cookie 0xdeff105's")
    })
    .await?;
    let bundle = switch.with(|s| s.bundles.last().cloned().unwrap_or_default());
    assert!(
        !bundle.contains("table=2,"),
        "a twin was overwritten:\n{bundle}"
    );
    assert!(
        !bundle.contains("table=1,priority=0,"),
        "a twin was overwritten:\n{bundle}"
    );
    assert!(bundle.contains("table=3,"), "{bundle}");
    let record = handle.flow_record();
    assert_eq!(record.provided.len(), 1, "{:?}", record.provided);
    assert_eq!(record.conflicts.len(), 1, "{:?}", record.conflicts);
    assert!(
        record.conflicts[0].contains("actions=drop")
            && record.conflicts[0].contains("actions=NORMAL"),
        "{:?}",
        record.conflicts
    );

    // They go away (ovnkube stopped): the gap is filled, the conflict clears.
    switch.with(|s| s.foreign.clear());
    switch.notify();
    eventually("the base flows installed once nobody provides them", || {
        switch.with(|s| s.flows.iter().any(|f| f.contains("table=2,")))
            && handle.last_error().is_empty()
    })
    .await?;
    assert!(handle.flow_record().provided.is_empty());
    shutdown.cancel();
    dpu.stop().await
}

/// Another controller's flows in what the design keeps ours (our CIDR
/// table, reg11-reg15) appear at run time: each is named in the flow record
/// (status, metrics) and ours stay as they are; gone, the report clears.
#[tokio::test]
async fn foreign_flows_in_our_tables_or_registers_are_reported() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_secs(3600), unwatched());
    let planned = handle.desired_flows().unwrap_or_default();
    eventually("installed", || {
        handle.installed_flows().len() == planned.len()
    })
    .await?;
    switch.with(|s| {
        s.foreign = vec![
            "cookie=0x5, duration=1s, table=100, n_packets=0, n_bytes=0, priority=300,ip actions=drop".into(),
            "cookie=0x5, duration=1s, table=0, n_packets=0, n_bytes=0, priority=700,ip actions=set_field:0x2->reg11,NORMAL".into(),
            "cookie=0x5, duration=1s, table=0, n_packets=0, n_bytes=0, priority=700,ipv6 actions=NORMAL".into(),
        ]
    });
    switch.notify();
    eventually("the foreign flows reported", || {
        handle.flow_record().trespassing.len() == 2
    })
    .await?;
    let record = handle.flow_record();
    assert!(
        record.trespassing.iter().any(|f| f.contains("table=100"))
            && record.trespassing.iter().any(|f| f.contains("->reg11")),
        "{:#?}",
        record.trespassing
    );
    assert_eq!(handle.installed_flows().len(), planned.len());
    switch.with(|s| s.foreign.clear());
    switch.notify();
    eventually("the report cleared", || {
        handle.flow_record().trespassing.is_empty()
    })
    .await?;
    shutdown.cancel();
    dpu.stop().await
}

/// A twin another controller writes while our install is in flight: the
/// install is refused (nothing replaced), counted, and the next one, after
/// a fresh read, is placed around the twin (a conflict: other actions),
/// and without the other flow of the twinned flow's lookup/path pair:
/// both or neither, reported.
#[tokio::test]
async fn an_install_refused_for_a_late_twin_is_placed_around_it() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let planned = handle.desired_flows().unwrap_or_default();
    let path = planned
        .iter()
        .find(|f| f.priority == dpu_agent::flows::PATH_PRIORITY)
        .ok_or_else(|| anyhow::anyhow!("no path flow"))?;
    let twin = format!(
        "cookie=0x7777, duration=1s, table=0, n_packets=0, n_bytes=0, priority={},{} actions=drop",
        path.priority, path.matches
    );
    switch.with(|s| s.late_twin = Some(twin));
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_secs(3600), unwatched());
    eventually("install placed around the twin", || {
        handle.installed_flows().len() == planned.len() - 2
    })
    .await?;
    let record = handle.flow_record();
    assert_eq!(record.contested_installs, 1);
    assert_eq!(record.conflicts.len(), 1, "{:#?}", record.conflicts);
    let partner = path.role.partner().expect("a path flow has a partner");
    assert!(
        record.withheld.len() == 1
            && planned
                .iter()
                .any(|f| f.role == partner && record.withheld[0].ends_with(&f.actions)),
        "{:#?}",
        record.withheld
    );
    assert!(
        record.conflicts[0].contains("cookie 0x7777"),
        "{:#?}",
        record.conflicts
    );
    let bundles = switch.with(|s| s.bundles.clone());
    assert_eq!(bundles.len(), 1, "only the placed install was committed");
    let twin_place = format!(",{},actions=", path.matches);
    assert!(!bundles[0].contains(&twin_place), "{}", bundles[0]);
    shutdown.cancel();
    dpu.stop().await
}

/// A probe refused with no twin on the fresh read (a neighbour whose
/// overlap with ours the agent's reading of its fields missed): ours goes
/// on unprobed (adding it replaces nothing), and later restores do not
/// contest it again. One refused install, not a loop.
#[tokio::test]
async fn a_probe_refused_without_a_twin_costs_one_install_not_a_loop() -> anyhow::Result<()> {
    let (dpu, handle, _certs) = agent().await?;
    let switch = RecordingSwitch::default();
    let planned = handle.desired_flows().unwrap_or_default();
    let path = planned
        .iter()
        .find(|f| f.priority == dpu_agent::flows::PATH_PRIORITY)
        .ok_or_else(|| anyhow::anyhow!("no path flow"))?;
    switch.with(|s| {
        s.foreign.push(format!(
            "cookie=0x5, duration=1s, table=0, n_packets=0, n_bytes=0, priority={},ip,in_port=7 actions=drop",
            path.priority
        ));
        s.overlapped = Some(path.match_key());
    });
    let shutdown = spawn_programmer(&handle, &switch, Duration::from_secs(3600), unwatched());
    eventually("install", || {
        handle.installed_flows().len() == planned.len()
    })
    .await?;
    assert_eq!(handle.flow_record().contested_installs, 1);
    switch.with(|s| s.flows.clear());
    switch.notify();
    eventually("restore after a wipe", || handle.flow_repairs() == 1).await?;
    assert_eq!(handle.installed_flows().len(), planned.len());
    assert_eq!(handle.flow_record().contested_installs, 1);
    shutdown.cancel();
    dpu.stop().await
}
