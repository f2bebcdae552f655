//! The uplink guard against the real kernel, in namespaces of the test's:
//! a host namespace with masquerade addresses, a DPU namespace that
//! forwards the host's traffic out of its uplink `p0` (as OVS would after
//! a neighbour's rewrite, un-NATed), and an underlay namespace behind the
//! uplink that counts what arrives by source (an nftables ingress counter
//! of its own). The guard runs in the DPU namespace as the agent runs it.
//! Needs root; ignored unless run with `--include-ignored`.
//!
//! (The end-to-end test with ovnkube's rewrites is in e2e.rs.)

use dpu_agent::{
    config::ValidConfig,
    state::{AgentHandle, GuardState, Source},
};
use noverlay_runtime::systemd::Watchdog;
use noverlay_test_support::eventually_blocking;
use noverlay_tests::{
    harness::{self, Certs, DpuOptions, RunningDpu},
    netns::{self, NetNs},
};
use noverlay_uplink_guard::run::run_uplink_guard;
use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const PINGS: u64 = 20;

/// The host, the DPU with its uplink, and the underlay behind it.
struct Uplink {
    host: NetNs,
    dpu: NetNs,
    underlay: NetNs,
}

fn uplink() -> anyhow::Result<Uplink> {
    let host = NetNs::new("gh")?;
    let dpu = NetNs::new("gd")?;
    let underlay = NetNs::new("gu")?;
    host.sh(&format!(
        "set -e
        ip link add eth0 type veth peer name pf0hpf netns {dpu}
        ip link set eth0 up
        ip addr add 169.254.0.2/17 dev eth0
        ip addr add fd69::2/112 dev eth0 nodad
        ip route add default via 169.254.0.1
        ip -6 route add default via fd69::1",
        dpu = dpu.name
    ))?;
    underlay.sh("set -e
        ip link add eth0 type veth peer name p0
        ip link set eth0 up
        ip addr add 198.18.0.20/24 dev eth0
        ip addr add 2001:db8::20/64 dev eth0 nodad")?;
    underlay.sh(&format!("ip link set p0 netns {}", dpu.name))?;
    dpu.sh("set -e
        ip link set p0 up
        ip link set pf0hpf up
        ip addr add 198.18.0.10/24 dev p0
        ip addr add 2001:db8::10/64 dev p0 nodad
        ip addr add 169.254.0.1/17 dev pf0hpf
        ip addr add fd69::1/112 dev pf0hpf nodad
        sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")?;
    // Neighbours by hand: nothing but the pings crosses the link.
    let mac = |ns: &NetNs, dev: &str| -> anyhow::Result<String> {
        Ok(ns
            .sh(&format!("cat /sys/class/net/{dev}/address"))?
            .trim()
            .to_string())
    };
    let (p0_mac, eth0_mac) = (mac(&dpu, "p0")?, mac(&underlay, "eth0")?);
    dpu.sh(&format!(
        "ip neigh replace 198.18.0.20 lladdr {eth0_mac} dev p0 nud permanent
         ip -6 neigh replace 2001:db8::20 lladdr {eth0_mac} dev p0 nud permanent"
    ))?;
    underlay.sh(&format!(
        "ip neigh replace 198.18.0.10 lladdr {p0_mac} dev eth0 nud permanent
         ip -6 neigh replace 2001:db8::10 lladdr {p0_mac} dev eth0 nud permanent"
    ))?;
    // The underlay's own count of what arrives, by source.
    underlay.sh(r#"nft -f - <<'EOF'
table netdev seen {
    chain arriving {
        type filter hook ingress device "eth0" priority filter; policy accept;
        ip saddr 169.254.0.0/17 counter
        ip6 saddr fd69::/112 counter
        ip saddr 198.18.0.10 counter
        ip6 saddr 2001:db8::10 counter
        ip daddr 169.254.0.0/17 counter
        ip6 daddr fd69::/112 counter
    }
}
EOF"#)?;
    Ok(Uplink {
        host,
        dpu,
        underlay,
    })
}

impl Uplink {
    /// Packets the underlay received, in the order of its counting rules:
    /// from masquerade v4, v6, node v4, v6; to masquerade v4, v6.
    fn arrived(&self) -> anyhow::Result<Vec<u64>> {
        let listing = self.underlay.sh("nft list table netdev seen")?;
        Ok(listing
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "packets")?;
                words.get(at + 1)?.parse().ok()
            })
            .collect())
    }

    /// `PINGS` echo requests from the host (masquerade sources) to the
    /// underlay, forwarded by the DPU out of its uplink, at 100/s.
    fn leak(&self, destination: &str) -> anyhow::Result<()> {
        self.host
            .sh_unchecked(&format!("ping -q -c {PINGS} -i 0.01 -W 0.2 {destination}"))?;
        Ok(())
    }

    /// `PINGS` echo requests from the DPU's node address: true if answered.
    fn ping_from_node(&self, destination: &str) -> anyhow::Result<bool> {
        let output = self
            .dpu
            .sh_unchecked(&format!("ping -q -c {PINGS} -i 0.01 -W 0.5 {destination}"))?;
        Ok(output.status.success())
    }

    /// `PINGS` echo requests from the DPU's node address to a masquerade
    /// address routed out of the uplink (a reply to the host that NORMAL
    /// floods, as far as the uplink can tell).
    fn send_to_masquerade(&self) -> anyhow::Result<()> {
        self.dpu
            .sh("ip route replace 169.254.100.1/32 via 198.18.0.20 dev p0
             ip -6 route replace fd69::100/128 via 2001:db8::20 dev p0")?;
        for destination in ["169.254.100.1", "fd69::100"] {
            self.dpu
                .sh_unchecked(&format!("ping -q -c {PINGS} -i 0.01 -W 0.2 {destination}"))?;
        }
        Ok(())
    }

    fn guard_listing(&self) -> anyhow::Result<String> {
        self.dpu.sh("nft list table netdev noverlay_guard")
    }
}

/// The guard loop running in the DPU namespace, as the agent runs it.
struct RunningGuard {
    handle: AgentHandle,
    shutdown: CancellationToken,
    thread: JoinHandle<anyhow::Result<()>>,
    _certs: Certs,
}

fn dual_stack(uplink_guard: bool) -> DpuOptions {
    DpuOptions {
        ipv6_cidrs: vec!["fd00:10:244::/48".into()],
        uplink_guard,
        ..DpuOptions::default()
    }
}

/// The guard on the config's uplink, `p0`.
fn start_guard(ns: &NetNs, options: &DpuOptions) -> anyhow::Result<RunningGuard> {
    harness::init();
    let certs = Certs::new()?;
    let config: ValidConfig = harness::dpu_config(certs.dir.path(), options, &certs.dpu)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let thread = ns.spawn(move || async move {
        let dpu = RunningDpu::start(&config).await?;
        let _ = handle_tx.send(dpu.handle.clone());
        let (settled, _) = tokio::sync::oneshot::channel();
        run_uplink_guard(
            dpu.handle.clone(),
            Duration::from_millis(100),
            Watchdog::with_timeout(None).heartbeat("uplink guard"),
            settled,
            stop,
        )
        .await;
        dpu.stop().await
    });
    let handle = handle_rx
        .recv_timeout(WAIT)
        .map_err(|_| anyhow::anyhow!("the agent did not start in the namespace"))?;
    Ok(RunningGuard {
        handle,
        shutdown,
        thread,
        _certs: certs,
    })
}

impl RunningGuard {
    fn wait_on(&self) -> anyhow::Result<()> {
        eventually_blocking("the uplink guard on", WAIT, || {
            self.handle.guard().state == GuardState::On
        })
        .map_err(|e| anyhow::anyhow!("{e}: {:?}", self.handle.source(Source::Guard)))?;
        Ok(())
    }

    fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("guard thread panicked"))?
    }
}

fn privileged() -> anyhow::Result<()> {
    netns::require_privileges()
}

#[test]
#[ignore = "privileged: needs root and network namespaces; run as root with --include-ignored (CI does)"]
fn masquerade_sources_and_destinations_never_leave_the_uplink_and_nothing_else_is_touched()
-> anyhow::Result<()> {
    privileged()?;
    let link = uplink()?;
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    guard.wait_on()?;

    // Host traffic that lost its SNAT: both families, stopped at the uplink.
    link.leak("198.18.0.20")?;
    link.leak("2001:db8::20")?;
    // Masquerade destinations (replies to the host) neither, counted apart.
    link.send_to_masquerade()?;
    // Path traffic (SNATed to the node IP) passes and is answered.
    anyhow::ensure!(
        link.ping_from_node("198.18.0.20")?,
        "node-sourced pings got no answer through the guard"
    );
    anyhow::ensure!(
        link.ping_from_node("2001:db8::20")?,
        "node-sourced IPv6 pings got no answer through the guard"
    );
    assert_eq!(
        link.arrived()?,
        vec![0, 0, PINGS, PINGS, 0, 0],
        "what the underlay received (from masquerade v4, v6, node v4, v6; to masquerade v4, v6)"
    );
    // The guard's own counters are exactly what it stopped, each direction.
    eventually_blocking("the guard's counters in its status", WAIT, || {
        let g = guard.handle.guard();
        // ping retries a send the egress hook refused (ENOBUFS): its own
        // packets to a masquerade address count once or twice each.
        g.dropped_packets == 2 * PINGS && g.to_masquerade_packets >= 2 * PINGS
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}", guard.handle.guard()))?;
    let record = guard.handle.guard();
    assert_eq!(record.dropped_packets_total, 2 * PINGS);
    let to_masquerade = record.to_masquerade_packets;
    assert_eq!(record.to_masquerade_packets_total, to_masquerade);
    assert_eq!(record.device, "p0");
    assert_eq!(record.subnets, ["169.254.0.0/17", "fd69::/112"]);
    assert!(
        record
            .ruleset
            .contains("ip saddr 169.254.0.0/17 counter packets 20 ")
            && record
                .ruleset
                .contains("ip6 saddr fd69::/112 counter packets 20 ")
            && record
                .ruleset
                .contains("ip daddr 169.254.0.0/17 counter packets ")
            && record
                .ruleset
                .contains("ip6 daddr fd69::/112 counter packets "),
        "{}",
        record.ruleset
    );
    // What nft itself shows of it.
    let listing = link.guard_listing()?;
    assert!(
        listing.contains("type filter hook egress device \"p0\" priority filter; policy accept;")
            && listing.contains("comment \"owned by noverlay dpu-agent\""),
        "{listing}"
    );
    assert_eq!(record.repairs, 0);
    // ...and what Prometheus scrapes.
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(
        &mut metrics,
        &dpu_agent::metrics::registry(guard.handle.clone()),
    )?;
    for line in [
        "noverlay_dpu_uplink_guard_on 1.0",
        &format!(
            "noverlay_dpu_uplink_guard_dropped_packets_total {}",
            2 * PINGS
        ),
        &format!("noverlay_dpu_uplink_guard_dropped_to_masquerade_packets_total {to_masquerade}"),
        "noverlay_dpu_uplink_guard_repairs_total 0",
        "noverlay_dpu_error{source=\"guard\"} 0.0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    guard.stop()
}

#[test]
#[ignore = "privileged: needs root and network namespaces; run as root with --include-ignored (CI does)"]
fn a_deleted_flushed_or_altered_guard_is_restored() -> anyhow::Result<()> {
    privileged()?;
    let link = uplink()?;
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    guard.wait_on()?;
    let planned = noverlay_uplink_guard::GuardPlan {
        uplink: "p0".into(),
        subnets: vec!["169.254.0.0/17".parse()?, "fd69::/112".parse()?],
    };
    let faults = [
        "nft delete table netdev noverlay_guard",
        "nft flush chain netdev noverlay_guard uplink_egress",
        "nft insert rule netdev noverlay_guard uplink_egress accept",
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        let started = Instant::now();
        link.dpu.sh(fault)?;
        eventually_blocking(&format!("the guard restored after `{fault}`"), WAIT, || {
            guard.handle.guard().repairs == n as u64 + 1
        })
        .map_err(|e| anyhow::anyhow!("{e}: {:?}", guard.handle.source(Source::Guard)))?;
        println!("guard restored {:?} after `{fault}`", started.elapsed());
        let restored = link.guard_listing()?;
        assert_eq!(
            without_handles(&restored),
            without_handles(&planned.render()),
            "after `{fault}`"
        );
    }
    // Restored means working.
    link.leak("198.18.0.20")?;
    assert_eq!(link.arrived()?[0], 0);
    guard.stop()
}

/// nft's listing and our rendering differ only in indentation.
fn without_handles(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
#[ignore = "privileged: needs root and network namespaces; run as root with --include-ignored (CI does)"]
fn a_restart_keeps_the_guard_and_a_new_config_rewrites_it() -> anyhow::Result<()> {
    privileged()?;
    let link = uplink()?;
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    guard.wait_on()?;
    link.leak("198.18.0.20")?;
    eventually_blocking("the drops counted", WAIT, || {
        guard.handle.guard().dropped_packets == PINGS
    })
    .map_err(anyhow::Error::msg)?;
    guard.stop()?;
    // Stopped: the guard stays in place (restarts are hitless).
    link.leak("198.18.0.20")?;
    assert_eq!(link.arrived()?[0], 0, "leaked while the agent was down");

    // Restarted with the same config: adopted as is, not rewritten (the
    // counter keeps everything it counted, including while we were down).
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    guard.wait_on()?;
    assert_eq!(guard.handle.guard().dropped_packets, 2 * PINGS);
    assert_eq!(guard.handle.guard().repairs, 0);
    guard.stop()?;

    // Restarted with another masquerade subnet (and IPv4 only): rewritten.
    let options = DpuOptions {
        ipv4_masquerade: "169.254.128.0/17".into(),
        ..dual_stack(true)
    };
    let options = DpuOptions {
        ipv6_cidrs: Vec::new(),
        ..options
    };
    let guard = start_guard(&link.dpu, &options)?;
    guard.wait_on()?;
    let listing = link.guard_listing()?;
    assert!(
        listing.contains("ip saddr 169.254.128.0/17 counter packets 0 bytes 0 drop")
            && !listing.contains("169.254.0.0/17")
            && !listing.contains("fd69::"),
        "{listing}"
    );
    guard.stop()
}

#[test]
#[ignore = "privileged: needs root and network namespaces; run as root with --include-ignored (CI does)"]
fn a_same_named_table_of_someone_else_is_never_touched() -> anyhow::Result<()> {
    privileged()?;
    let link = uplink()?;
    link.dpu.sh(r#"nft -f - <<'EOF'
table netdev noverlay_guard {
    chain theirs {
        type filter hook ingress device "p0" priority filter; policy accept;
        meta mark 0x00000042 accept
    }
}
EOF"#)?;
    let theirs = link.guard_listing()?;
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    eventually_blocking("the guard to report the foreign table", WAIT, || {
        guard.handle.guard().state == GuardState::Failed
    })
    .map_err(anyhow::Error::msg)?;
    let error = guard
        .handle
        .source(Source::Guard)
        .error()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("netdev noverlay_guard") && error.contains("not ours"),
        "{error}"
    );
    guard.stop()?;
    // Cleanup refuses it too.
    let refused = link
        .dpu
        .run(|| async { Ok(noverlay_uplink_guard::run::remove().await) })?
        .expect_err("a foreign table is not removed");
    assert!(refused.contains("not ours"), "{refused}");
    assert_eq!(link.guard_listing()?, theirs, "their table was changed");
    Ok(())
}

#[test]
#[ignore = "privileged: needs root and network namespaces; run as root with --include-ignored (CI does)"]
fn cleanup_removes_the_guard_and_a_disabled_guard_is_never_written() -> anyhow::Result<()> {
    privileged()?;
    let link = uplink()?;
    let guard = start_guard(&link.dpu, &dual_stack(true))?;
    guard.wait_on()?;
    guard.stop()?;
    link.dpu.run(|| async {
        noverlay_uplink_guard::run::remove()
            .await
            .map_err(anyhow::Error::msg)
    })?;
    let tables = link.dpu.sh("nft list tables")?;
    assert!(!tables.contains("noverlay_guard"), "{tables}");
    // Removing what is absent is fine.
    link.dpu.run(|| async {
        noverlay_uplink_guard::run::remove()
            .await
            .map_err(anyhow::Error::msg)
    })?;

    // Disabled in the config: the agent's datapath starts without it.
    harness::init();
    let certs = Certs::new()?;
    let options = DpuOptions {
        bridge: harness::PLAN_ONLY_BRIDGE.replace(
            "program = false",
            "program = true\nopenflow = \"unix:/nonexistent/breth0.mgmt\"",
        ),
        ..dual_stack(false)
    };
    let config = harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?;
    let state = link.dpu.run(move || async move {
        let dpu = RunningDpu::start(&config).await?;
        let shutdown = CancellationToken::new();
        let tasks = dpu_agent::start_datapath(
            dpu.handle.clone(),
            &config,
            &Watchdog::with_timeout(None),
            shutdown.clone(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = dpu.handle.guard().state;
        shutdown.cancel();
        for task in tasks {
            task.await?;
        }
        dpu.stop().await?;
        Ok(state)
    })?;
    assert_eq!(state, GuardState::Off);
    let tables = link.dpu.sh("nft list tables")?;
    assert!(!tables.contains("noverlay_guard"), "{tables}");
    Ok(())
}

/// The guard loop's decisions against a table double (no root needed): what
/// it does when the kernel refuses the egress chain, fails otherwise, or
/// loses the table.
mod decisions {
    use super::*;
    use noverlay_nft::{NftError, TableDump, Transaction, describe};
    use noverlay_uplink_guard::run::{GuardTable, keep_converged};
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;

    /// The table as the double holds it: the last transaction's messages,
    /// parsed back as the kernel would list them; and how many commits.
    #[derive(Default)]
    struct Table {
        written: Option<Vec<u8>>,
        refuse_with: Option<i32>,
        commits: usize,
    }

    #[derive(Clone, Default)]
    struct FakeTable(Arc<Mutex<Table>>);

    impl FakeTable {
        fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
            f(&mut self.0.lock().expect("table"))
        }
    }

    impl GuardTable for FakeTable {
        async fn read(&self) -> Result<Option<TableDump>, NftError> {
            Ok(self.with(|t| {
                t.written.as_ref().map(|bytes| TableDump {
                    comment: Some(noverlay_uplink_guard::GUARD_MARK.into()),
                    items: describe::parse(bytes),
                })
            }))
        }

        async fn commit(&self, transaction: Transaction) -> Result<(), NftError> {
            self.with(|t| {
                t.commits += 1;
                if let Some(errno) = t.refuse_with {
                    return Err(NftError::Refused(std::io::Error::from_raw_os_error(errno)));
                }
                t.written = Some(transaction.bytes);
                Ok(())
            })
        }
    }

    struct Loop {
        dpu: RunningDpu,
        table: FakeTable,
        wake: Arc<Notify>,
        settled: tokio::sync::oneshot::Receiver<()>,
        shutdown: CancellationToken,
        _certs: Certs,
    }

    async fn start(table: FakeTable) -> anyhow::Result<Loop> {
        harness::init();
        let certs = Certs::new()?;
        let config = harness::dpu_config(certs.dir.path(), &dual_stack(true), &certs.dpu)?;
        let dpu = RunningDpu::start(&config).await?;
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let (settled_tx, settled) = tokio::sync::oneshot::channel();
        tokio::spawn(keep_converged(
            dpu.handle.clone(),
            table.clone(),
            wake.clone(),
            Duration::from_secs(3600),
            Watchdog::with_timeout(None).heartbeat("uplink guard"),
            settled_tx,
            shutdown.clone(),
        ));
        Ok(Loop {
            dpu,
            table,
            wake,
            settled,
            shutdown,
            _certs: certs,
        })
    }

    impl Loop {
        async fn settle(&mut self) -> anyhow::Result<()> {
            tokio::time::timeout(WAIT, &mut self.settled).await??;
            Ok(())
        }

        /// Someone else's nftables change, and time for the loop to look.
        async fn poke(&self) {
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        async fn stop(self) -> anyhow::Result<()> {
            self.shutdown.cancel();
            self.dpu.stop().await
        }
    }

    #[tokio::test]
    async fn a_kernel_without_the_egress_hook_is_named_and_not_retried() -> anyhow::Result<()> {
        let table = FakeTable::default();
        table.with(|t| t.refuse_with = Some(libc::EOPNOTSUPP));
        let mut running = start(table).await?;
        running.settle().await?;
        let handle = running.dpu.handle.clone();
        assert_eq!(handle.guard().state, GuardState::Unsupported);
        let error = handle
            .source(Source::Guard)
            .error()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains("Linux >= 5.16") && error.contains("CONFIG_NETFILTER_EGRESS"),
            "{error}"
        );
        assert!(
            handle.last_error().contains("guard: "),
            "{}",
            handle.last_error()
        );
        running.poke().await;
        running.poke().await;
        assert_eq!(running.table.with(|t| t.commits), 1, "retried");
        running.stop().await
    }

    #[tokio::test]
    async fn another_failure_is_reported_and_retried_until_it_clears() -> anyhow::Result<()> {
        let table = FakeTable::default();
        table.with(|t| t.refuse_with = Some(libc::ENODEV));
        let mut running = start(table).await?;
        running.settle().await?;
        let handle = running.dpu.handle.clone();
        assert_eq!(handle.guard().state, GuardState::Failed);
        let error = handle
            .source(Source::Guard)
            .error()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains("netdev noverlay_guard") && error.contains("\"p0\""),
            "{error}"
        );
        running.table.with(|t| t.refuse_with = None);
        running.poke().await;
        assert_eq!(handle.guard().state, GuardState::On);
        assert!(handle.source(Source::Guard).error().is_none());
        assert_eq!(handle.guard().repairs, 0, "a first write is not a repair");
        running.stop().await
    }

    #[tokio::test]
    async fn a_lost_table_is_restored_and_counted_an_intact_one_never_rewritten()
    -> anyhow::Result<()> {
        let mut running = start(FakeTable::default()).await?;
        running.settle().await?;
        let handle = running.dpu.handle.clone();
        assert_eq!(handle.guard().state, GuardState::On);
        running.poke().await;
        assert_eq!(
            running.table.with(|t| t.commits),
            1,
            "rewrote an intact guard"
        );
        running.table.with(|t| t.written = None);
        running.poke().await;
        assert_eq!(running.table.with(|t| t.commits), 2);
        assert_eq!(handle.guard().repairs, 1);
        assert!(handle.guard().last_repair_unix > 0);
        running.stop().await
    }
}
