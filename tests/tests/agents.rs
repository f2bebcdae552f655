//! The real host-agent against the real dpu-agent, in process, over mTLS on
//! loopback: negotiation, CIDR changes, DPU restarts and refusals.

use host_agent::{agent::Phase, dataplane::dry_run::DryRunEvent};
use noverlay_tests::harness::{self, Certs, DpuOptions, HostOptions, RunningDpu, RunningHost};

#[tokio::test]
async fn host_follows_cidr_changes_and_dpu_sees_the_reports() -> anyhow::Result<()> {
    let options = DpuOptions::default();
    let (certs, dpu, mut host) = harness::agents_applied(&options).await?;
    assert_eq!(
        host.status.borrow().applied.as_ref().map(|c| c.revision),
        Some(1)
    );

    let changed = DpuOptions {
        ipv4_cidrs: vec!["198.18.128.0/17".into(), "198.19.0.0/16".into()],
        ..options
    };
    dpu.handle.reload(&harness::dpu_config(
        certs.dir.path(),
        &changed,
        &certs.dpu,
    )?)?;
    let status = host
        .wait_for("revision 2 applied", |s| {
            s.applied.as_ref().map(|c| c.revision) == Some(2)
        })
        .await?;
    let cidrs: Vec<String> = status
        .applied
        .iter()
        .flat_map(|c| c.cluster_cidrs())
        .map(ToString::to_string)
        .collect();
    assert_eq!(cidrs, vec!["198.18.128.0/17", "198.19.0.0/16"]);
    let Some(plan) = host.log.last_applied() else {
        anyhow::bail!("nothing applied")
    };
    // Two halves per CIDR next to mp0's routes (the default), both CIDRs
    // in the IPv4 SNAT set.
    assert_eq!(plan.routes.len(), 4);
    assert_eq!(plan.nft.families.len(), 1);
    assert_eq!(plan.nft.families[0].cidrs.len(), 2);

    // The DPU learns what the host applied.
    noverlay_test_support::eventually(
        "the host's report of revision 2",
        std::time::Duration::from_secs(2),
        || dpu.handle.last_host_report().map(|r| r.revision) == Some(2),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let report = dpu
        .handle
        .last_host_report()
        .ok_or_else(|| anyhow::anyhow!("no report"))?;
    assert_eq!(report.revision, 2);
    assert!(report.applied);
    assert_eq!(report.routes.len(), 4);
    host.stop().await?;
    dpu.stop().await
}

#[tokio::test]
async fn host_keeps_state_while_the_dpu_restarts_and_reconnects() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let addr = dpu.addr;
    let mut host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(addr),
        &certs.host,
        Vec::new(),
    )?;
    host.wait_for("applied", |s| s.applied.is_some()).await?;

    dpu.stop().await?;
    let status = host
        .wait_for("unreachable", |s| matches!(s.phase, Phase::Unreachable(_)))
        .await?;
    assert_eq!(
        status.applied.map(|c| c.revision),
        Some(1),
        "the last good contract stays while the DPU is away"
    );
    let events_while_away = host.log.events();
    assert!(
        !events_while_away.contains(&DryRunEvent::TornDown),
        "nothing torn down"
    );

    // The DPU comes back on the same address.
    let restarted_options = DpuOptions {
        listen: addr,
        ..DpuOptions::default()
    };
    let config = harness::dpu_config(certs.dir.path(), &restarted_options, &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let status = host
        .wait_for("following again", |s| s.phase == Phase::Following)
        .await?;
    assert!(status.disconnects >= 1);
    // Same contract after the restart: nothing re-applied (hitless).
    let applies = host
        .log
        .events()
        .iter()
        .filter(|e| matches!(e, DryRunEvent::Applied(_)))
        .count();
    assert_eq!(applies, 1);
    host.stop().await?;
    dpu.stop().await
}

#[tokio::test]
async fn mismatched_host_is_refused_with_both_values_and_applies_nothing() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let options = HostOptions {
        ipv4_masquerade: "169.254.0.0/16".into(),
        ipv6: true,
        ..HostOptions::new(dpu.addr)
    };
    let mut host = RunningHost::start(certs.dir.path(), &options, &certs.host, Vec::new())?;
    let status = host
        .wait_for("refused", |s| matches!(s.phase, Phase::Refused(_)))
        .await?;
    let Phase::Refused(reason) = status.phase else {
        anyhow::bail!("not refused")
    };
    assert!(
        reason.contains("masquerade subnet for ipv4: host 169.254.0.0/16, dpu 169.254.0.0/17"),
        "{reason}"
    );
    assert!(
        reason.contains("address families: host ipv4+ipv6, dpu ipv4"),
        "{reason}"
    );
    assert!(host.log.changes().is_empty());
    host.stop().await?;
    dpu.stop().await
}
