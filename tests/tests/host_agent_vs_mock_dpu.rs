//! The real host-agent against a scripted DPU, over real mTLS. The host
//! applies through the dry-run dataplane, which records each plan it was
//! given, so these tests see exactly what would reach the kernel.

use host_agent::{agent::Phase, dataplane::dry_run::DryRunEvent, plan::HostAddress};
use noverlay_proto::{
    contract::{Contract, FamilyContract, Masquerade, Mode},
    pb,
};
use noverlay_tests::{
    harness::{self, Certs, HOST_SAN, HostOptions, RunningHost},
    mock_dpu::MockDpu,
};
use std::time::Duration;
use tonic::Status;

fn good_contract(revision: u64) -> pb::Contract {
    let family = FamilyContract {
        masquerade: Masquerade::from_subnet("169.254.0.0/17".parse().expect("net")).expect("masq"),
        cluster_cidrs: vec!["198.18.128.0/17".parse().expect("cidr")],
        underlay_ip: "198.18.0.10".parse().expect("ip"),
    };
    Contract::new(revision, Mode::IN_SCOPE, vec![family], 1400, "eth0".into())
        .expect("valid")
        .to_pb()
}

fn applied_revisions(host: &RunningHost) -> Vec<u64> {
    host.log
        .events()
        .iter()
        .filter_map(|e| match e {
            DryRunEvent::Applied(plan) => Some(plan.revision),
            DryRunEvent::AuditAsked | DryRunEvent::TornDown => None,
        })
        .collect()
}

async fn start(
    certs: &Certs,
    negotiate: Result<pb::Contract, Status>,
    host_addresses: Vec<HostAddress>,
) -> anyhow::Result<(MockDpu, RunningHost)> {
    harness::init();
    let dpu = MockDpu::start(&certs.dpu, HOST_SAN, negotiate).await?;
    let host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(dpu.addr),
        &certs.host,
        host_addresses,
    )?;
    Ok((dpu, host))
}

#[tokio::test]
async fn applies_the_negotiated_contract_and_reports_it() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let (mut dpu, mut host) = start(&certs, Ok(good_contract(1)), Vec::new()).await?;
    let report = dpu.next_report().await?;
    assert!(report.applied, "{report:?}");
    assert_eq!(report.revision, 1);
    // The CIDR's two halves: more specific than a route through mp0, which
    // stays (mp0_routes = "keep", the default).
    assert_eq!(
        report.routes,
        vec![
            "198.18.128.0/18 via 169.254.0.4 dev eth0 proto 240 mtu 1400".to_string(),
            "198.18.192.0/18 via 169.254.0.4 dev eth0 proto 240 mtu 1400".to_string()
        ]
    );
    assert!(
        report
            .nft_ruleset
            .contains("ip daddr @cluster_cidrs_v4 ip saddr != 169.254.0.2 counter packets 0 bytes 0 snat ip to 169.254.0.2")
    );
    assert!(
        report
            .nft_ruleset
            .contains("elements = { 198.18.128.0/17 }")
    );
    // The watch repeats the current contract first: no second apply.
    dpu.contracts.send(good_contract(1))?;
    let status = host
        .wait_for("following", |s| s.phase == Phase::Following)
        .await?;
    assert_eq!(status.applied.map(|c| c.revision), Some(1));
    // A new revision is applied.
    dpu.contracts.send(good_contract(2))?;
    assert_eq!(dpu.next_report().await?.revision, 2);
    assert_eq!(applied_revisions(&host), vec![1, 2]);
    host.stop().await
}

/// A restarted DPU agent (same address, same contract) hears from the host
/// at once: the host reports what it holds on every new session, even with
/// nothing to apply (on the commit before, it sent nothing and the DPU
/// showed no host report until the next contract change).
#[tokio::test]
async fn a_restarted_dpu_gets_the_hosts_report_again() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let (mut dpu, host) = start(&certs, Ok(good_contract(1)), Vec::new()).await?;
    assert_eq!(dpu.next_report().await?.revision, 1);
    let addr = dpu.addr;
    drop(dpu);
    let mut restarted = MockDpu::start_at(&certs.dpu, HOST_SAN, Ok(good_contract(1)), addr).await?;
    let report = restarted.next_report().await?;
    assert!(report.applied, "{report:?}");
    assert_eq!(report.revision, 1);
    assert_eq!(report.routes.len(), 2, "{report:?}");
    assert!(
        report.nft_ruleset.contains("snat ip to 169.254.0.2"),
        "{report:?}"
    );
    // Nothing was applied again.
    assert_eq!(applied_revisions(&host), vec![1]);
    host.stop().await
}

#[tokio::test]
async fn rogue_contracts_are_rejected_and_the_last_good_state_kept() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let (mut dpu, mut host) = start(&certs, Ok(good_contract(1)), Vec::new()).await?;
    assert!(dpu.next_report().await?.applied);

    let mut default_route = good_contract(2);
    default_route.families[0].cluster_cidrs = vec!["0.0.0.0/0".into()];
    let mut other_masquerade = good_contract(3);
    other_masquerade.families[0].masquerade_subnet = "169.254.0.0/16".into();
    let mut loopback = good_contract(4);
    loopback.families[0].cluster_cidrs = vec!["127.0.0.0/8".into()];
    let mut other_interface = good_contract(5);
    other_interface.gateway_interface = "eth9".into();
    let mut thousands = good_contract(6);
    thousands.families[0].cluster_cidrs = (0..3000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let with_cidrs = |revision, cidrs: &[&str]| {
        let mut contract = good_contract(revision);
        contract.families[0].cluster_cidrs = cidrs.iter().map(|c| c.to_string()).collect();
        contract
    };
    // Most of the unicast space in a few prefixes.
    let broad = with_cidrs(7, &["1.0.0.0/8", "32.0.0.0/3", "64.0.0.0/3"]);
    let reserved = with_cidrs(8, &["240.0.0.0/4"]);
    let broadcast = with_cidrs(9, &["255.255.255.255/32"]);
    let inside_masquerade = with_cidrs(10, &["169.254.1.0/24"]);
    let cases = [
        (default_route, "0.0.0.0/0"),
        (other_masquerade, "169.254.0.0/16"),
        (loopback, "127.0.0.0/8"),
        (other_interface, "eth9"),
        (thousands, "3000"),
        (broad, "32.0.0.0/3 is broader than /8"),
        (reserved, "240.0.0.0/4"),
        (broadcast, "255.255.255.255/32"),
        (inside_masquerade, "169.254.1.0/24"),
    ];
    for (rogue, named) in cases {
        let revision = rogue.revision;
        dpu.contracts.send(rogue)?;
        let report = dpu.next_report().await?;
        assert_eq!(report.revision, revision);
        assert!(!report.applied, "rogue revision {revision} applied");
        assert!(
            report.error.contains(named),
            "{named} not in {}",
            report.error
        );
    }
    let status = host
        .wait_for("rejections recorded", |s| s.last_error.is_some())
        .await?;
    assert_eq!(
        status.applied.map(|c| c.revision),
        Some(1),
        "last good state kept"
    );
    assert_eq!(
        applied_revisions(&host),
        vec![1],
        "nothing rogue reached the dataplane"
    );
    host.stop().await
}

/// A DPU that accepts the connection and never answers Negotiate is given
/// up on after the deadline, and retried: the host does not hang.
#[tokio::test]
async fn a_dpu_that_stalls_negotiation_is_given_up_on_and_retried() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let dpu = MockDpu::start(&certs.dpu, HOST_SAN, Ok(good_contract(1))).await?;
    dpu.stall_negotiate
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(dpu.addr),
        &certs.host,
        Vec::new(),
    )?;
    let status = host
        .wait_for(
            "the stalled negotiation given up on",
            |s| matches!(&s.phase, Phase::Unreachable(why) if why.contains("Negotiate")),
        )
        .await?;
    assert!(
        matches!(&status.phase, Phase::Unreachable(why) if why.contains("no answer from the DPU within 10s")),
        "{:?}",
        status.phase
    );
    host.stop().await
}

/// Within a session, revisions go forward and never change their content.
#[tokio::test]
async fn revisions_going_backwards_or_reused_are_refused() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let (mut dpu, host) = start(&certs, Ok(good_contract(5)), Vec::new()).await?;
    assert!(dpu.next_report().await?.applied);
    dpu.contracts.send(good_contract(4))?;
    let report = dpu.next_report().await?;
    assert!(!report.applied);
    assert!(
        report.error.contains("revision 4 is older than revision 5"),
        "{}",
        report.error
    );
    let mut reused = good_contract(5);
    reused.families[0].cluster_cidrs = vec!["198.19.0.0/16".into()];
    dpu.contracts.send(reused)?;
    let report = dpu.next_report().await?;
    assert!(!report.applied);
    assert!(
        report
            .error
            .contains("revision 5 came again with other content"),
        "{}",
        report.error
    );
    assert_eq!(applied_revisions(&host), vec![5]);
    host.stop().await
}

#[tokio::test]
async fn contract_overlapping_host_addresses_is_rejected() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let host_addresses = vec![
        // The node subnet on mp0 sits inside the cluster CIDR by design.
        HostAddress {
            dev: "ovn-k8s-mp0".into(),
            addr: "198.18.130.2/24".parse()?,
        },
        // A real host address inside the cluster CIDR is not acceptable.
        HostAddress {
            dev: "eth1".into(),
            addr: "198.18.200.7/24".parse()?,
        },
    ];
    let (mut dpu, host) = start(&certs, Ok(good_contract(1)), host_addresses).await?;
    let report = dpu.next_report().await?;
    assert!(!report.applied);
    assert!(
        report.refused,
        "a refusal is not told apart from a failed apply"
    );
    assert!(
        report.error.contains("198.18.200.7/24") && report.error.contains("eth1"),
        "{}",
        report.error
    );
    assert!(applied_revisions(&host).is_empty());
    host.stop().await
}

#[tokio::test]
async fn refusal_by_the_dpu_applies_nothing_and_is_retried() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let refusal = Status::failed_precondition(
        "host and dpu disagree on masquerade subnet for ipv4: host 169.254.0.0/17, dpu 169.254.0.0/16",
    );
    let (_dpu, mut host) = start(&certs, Err(refusal), Vec::new()).await?;
    let status = host
        .wait_for("refused twice", |s| {
            matches!(s.phase, Phase::Refused(_)) && s.disconnects >= 2
        })
        .await?;
    let Phase::Refused(reason) = status.phase else {
        anyhow::bail!("not refused")
    };
    assert!(
        reason.contains("host 169.254.0.0/17, dpu 169.254.0.0/16"),
        "{reason}"
    );
    assert!(applied_revisions(&host).is_empty());
    host.stop().await
}

#[tokio::test]
async fn host_does_not_talk_to_a_dpu_with_the_wrong_identity() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let impostor = certs.pki.issue(
        "impostor",
        "dpu-agent.node2.test",
        noverlay_tests::pki::Validity::Current,
    )?;
    let dpu = MockDpu::start(&impostor, HOST_SAN, Ok(good_contract(1))).await?;
    let mut host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(dpu.addr),
        &certs.host,
        Vec::new(),
    )?;
    let status = host
        .wait_for("unreachable", |s| matches!(s.phase, Phase::Unreachable(_)))
        .await?;
    let Phase::Unreachable(reason) = status.phase else {
        anyhow::bail!("not unreachable")
    };
    assert!(reason.contains("not valid for name"), "{reason}");
    assert!(applied_revisions(&host).is_empty());
    host.stop().await
}

#[tokio::test]
async fn a_dpu_speaking_another_protocol_version_is_refused_naming_both() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let mut newer = good_contract(1);
    newer.protocol_version = noverlay_proto::PROTOCOL_VERSION + 1;
    let (mut dpu, host) = start(&certs, Ok(newer), Vec::new()).await?;
    let report = dpu.next_report().await?;
    assert!(!report.applied);
    let both = format!(
        "ours is {}, the peer's is {}",
        noverlay_proto::PROTOCOL_VERSION,
        noverlay_proto::PROTOCOL_VERSION + 1
    );
    assert!(report.error.contains(&both), "{}", report.error);
    assert!(applied_revisions(&host).is_empty());
    host.stop().await
}

#[tokio::test]
async fn leaving_scope_tears_down_what_the_agent_owns() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let dpu = MockDpu::start(&certs.dpu, HOST_SAN, Ok(good_contract(1))).await?;
    let options = HostOptions {
        mode: Some(
            "node_mode = \"dpu-host\"\ngateway_mode = \"local\"\ntransport = \"no-overlay\"".into(),
        ),
        ..HostOptions::new(dpu.addr)
    };
    let mut host = RunningHost::start(certs.dir.path(), &options, &certs.host, Vec::new())?;
    host.wait_for("out of scope", |s| s.phase == Phase::OutOfScope)
        .await?;
    assert_eq!(host.log.changes(), vec![DryRunEvent::TornDown]);
    host.stop().await
}

/// The periodic reconcile is an audit: it asks the dataplane to read
/// everything before it applies (events may have been missed).
#[tokio::test]
async fn the_periodic_reconcile_reads_everything() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let dpu = MockDpu::start(&certs.dpu, HOST_SAN, Ok(good_contract(1))).await?;
    let options = HostOptions {
        periodic_reconcile: Some(Duration::from_millis(100)),
        ..HostOptions::new(dpu.addr)
    };
    let host = RunningHost::start(certs.dir.path(), &options, &certs.host, Vec::new())?;
    let audited_apply = |events: &[DryRunEvent]| {
        events
            .windows(2)
            .skip_while(|w| !matches!(w[0], DryRunEvent::Applied(_)))
            .any(|w| w[0] == DryRunEvent::AuditAsked && matches!(w[1], DryRunEvent::Applied(_)))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !audited_apply(&host.log.events()) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no audited apply after the contract's: {:?}",
            host.log.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.stop().await?;
    Ok(())
}
