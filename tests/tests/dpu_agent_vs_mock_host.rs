//! The real dpu-agent server against a scripted host client, over real mTLS.

use host_agent::client::{self, DpuClient};
use noverlay_proto::{
    PROTOCOL_VERSION,
    contract::{Mode, Transport},
    pb,
    tls::{self, PeerIdentity, TlsFiles},
};
use noverlay_tests::harness::{self, Certs, DPU_SAN, DpuOptions, HOST_SAN, RunningDpu, proposal};
use std::time::Duration;
use tonic::Code;

async fn client_for(dpu: &RunningDpu, tls_files: &TlsFiles) -> anyhow::Result<DpuClient> {
    let identity = PeerIdentity::parse(DPU_SAN)?;
    Ok(client::connect(
        &dpu.addr.to_string(),
        &identity,
        tls::client_config(tls_files)?,
    )
    .await?)
}

async fn start(certs: &Certs, options: &DpuOptions) -> anyhow::Result<RunningDpu> {
    harness::init();
    let config = harness::dpu_config(certs.dir.path(), options, &certs.dpu)?;
    RunningDpu::start(&config).await
}

#[tokio::test]
async fn negotiation_returns_the_contract_and_status_shows_the_peer() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start(&certs, &DpuOptions::default()).await?;
    let mut client = client_for(&dpu, &certs.host).await?;

    let contract = client
        .negotiate(proposal())
        .await?
        .into_inner()
        .contract
        .ok_or_else(|| anyhow::anyhow!("no contract"))?;
    assert_eq!(contract.revision, 1);
    assert_eq!(contract.mtu, 1400);
    assert_eq!(contract.gateway_interface, "eth0");
    let v4 = &contract.families[0];
    assert_eq!(v4.cluster_cidrs, vec!["198.18.128.0/17".to_string()]);
    assert_eq!(v4.host_masquerade_ip, "169.254.0.2");
    assert_eq!(v4.dummy_next_hop, "169.254.0.4");
    assert_eq!(v4.underlay_ip, "198.18.0.10");

    let ack = client
        .report_applied(pb::HostReport {
            revision: 1,
            applied: true,
            routes: vec!["198.18.128.0/17 via 169.254.0.4 dev eth0 proto 240 mtu 1400".into()],
            host_name: "node1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(ack.current_revision, 1);

    let status = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(status.peer_identity, HOST_SAN);
    assert!(status.last_negotiated_unix > 0);
    assert_eq!(
        status.contract.map(|c| c.gateway_interface).as_deref(),
        Some("eth0")
    );
    let report = status
        .last_host_report
        .ok_or_else(|| anyhow::anyhow!("no report"))?;
    assert!(report.applied);
    // The cluster CIDR 198.18.128.0/17 as our CIDR table holds it, and the
    // SNAT to the underlay IP.
    for wanted in [
        "table=100,priority=100,ip,reg12=0xc6128000/0xffff8000,",
        "nat(src=198.18.0.10)",
    ] {
        assert!(
            status.desired_flows.iter().any(|f| f.contains(wanted)),
            "{wanted}: {:#?}",
            status.desired_flows
        );
    }
    dpu.stop().await
}

#[tokio::test]
async fn every_mismatch_is_refused_naming_both_values() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start(&certs, &DpuOptions::default()).await?;
    let mut client = client_for(&dpu, &certs.host).await?;

    let mut version = proposal();
    version.protocol_version = PROTOCOL_VERSION + 1;
    let mut mode = proposal();
    mode.mode = Some(
        Mode {
            transport: Transport::Geneve,
            ..Mode::IN_SCOPE
        }
        .to_pb(),
    );
    let mut masquerade = proposal();
    masquerade.families[0].masquerade_subnet = "169.254.0.0/16".into();
    let mut families = proposal();
    families.families.push(pb::FamilyProposal {
        family: pb::AddressFamily::Ipv6 as i32,
        masquerade_subnet: "fd69::/112".into(),
    });
    let cases = [
        (
            version,
            format!(
                "protocol version: host {}, dpu {PROTOCOL_VERSION}",
                PROTOCOL_VERSION + 1
            ),
        ),
        (
            mode,
            "transport geneve), dpu (node dpu-host, gateway shared, transport no-overlay)".into(),
        ),
        (
            masquerade,
            "masquerade subnet for ipv4: host 169.254.0.0/16, dpu 169.254.0.0/17".into(),
        ),
        (
            families,
            "address families: host ipv4+ipv6, dpu ipv4".into(),
        ),
    ];
    for (request, expected) in cases {
        let status = client
            .negotiate(request.clone())
            .await
            .expect_err(&expected);
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(&expected), "{}", status.message());
        // A refused proposal cannot watch either.
        let status = client
            .watch_contract(request)
            .await
            .expect_err("watch refused");
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(
        status.peer_identity, "",
        "no successful negotiation recorded"
    );
    dpu.stop().await
}

#[tokio::test]
async fn watch_delivers_current_contract_then_a_cidr_change() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let options = DpuOptions::default();
    let dpu = start(&certs, &options).await?;
    let mut client = client_for(&dpu, &certs.host).await?;
    let mut watch = client.watch_contract(proposal()).await?.into_inner();

    let first = next_contract(&mut watch).await?;
    assert_eq!(first.revision, 1);

    // The operator adds a CIDR and reloads (SIGHUP in the binary).
    let changed = DpuOptions {
        ipv4_cidrs: vec!["198.18.128.0/17".into(), "198.19.0.0/16".into()],
        ..options.clone()
    };
    let config = harness::dpu_config(certs.dir.path(), &changed, &certs.dpu)?;
    assert_eq!(dpu.handle.reload(&config)?, 2);
    let second = next_contract(&mut watch).await?;
    assert_eq!(second.revision, 2);
    assert_eq!(
        second.families[0].cluster_cidrs,
        vec!["198.18.128.0/17".to_string(), "198.19.0.0/16".to_string()]
    );

    // Reloading the same config is not a new revision.
    assert_eq!(dpu.handle.reload(&config)?, 2);
    // Changing what the host negotiated needs a restart, and is refused.
    let renegotiate = DpuOptions {
        ipv4_masquerade: "169.254.0.0/16".into(),
        ..changed
    };
    let config = harness::dpu_config(certs.dir.path(), &renegotiate, &certs.dpu)?;
    let err = dpu.handle.reload(&config).expect_err("masquerade change");
    assert!(err.to_string().contains("restart"), "{err}");
    assert_eq!(
        dpu.handle.offer().revision,
        2,
        "a refused reload keeps the offer"
    );
    dpu.stop().await
}

async fn next_contract(
    watch: &mut tonic::Streaming<pb::ContractUpdate>,
) -> anyhow::Result<pb::Contract> {
    tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await??
        .and_then(|u| u.contract)
        .ok_or_else(|| anyhow::anyhow!("watch ended"))
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start(&certs, &DpuOptions::default()).await?;
    let mut client = client_for(&dpu, &certs.host).await?;

    let mut bad_interface = proposal();
    bad_interface.gateway_interface = "eth0 ; reboot".into();
    let status = client.negotiate(bad_interface).await.expect_err("bad name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("eth0 ; reboot"),
        "{}",
        status.message()
    );

    let mut huge = proposal();
    huge.host_name = "x".repeat(noverlay_proto::MAX_MESSAGE_BYTES + 1);
    // Lift our own client's limit so the server's is what is tested.
    let mut unlimited = client.clone().max_encoding_message_size(usize::MAX);
    let status = unlimited.negotiate(huge).await.expect_err("oversized");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    // The server is still healthy afterwards.
    assert!(client.negotiate(proposal()).await.is_ok());
    dpu.stop().await
}

/// Even the authorised host is bounded: a report just under the message
/// limit, with control characters in its host name, is kept cut to size and
/// GetStatus keeps answering.
#[tokio::test]
async fn the_authorised_hosts_reports_are_bounded() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start(&certs, &DpuOptions::default()).await?;
    let mut client = client_for(&dpu, &certs.host).await?;
    let report = pb::HostReport {
        revision: 1,
        applied: false,
        error: "e".repeat(120 * 1024),
        routes: vec!["r".repeat(100); 1000],
        nft_ruleset: String::new(),
        host_name: format!("node1\nERROR forged\u{1b}[31m{}", "h".repeat(1000)),
        refused: false,
    };
    for _ in 0..5 {
        client.report_applied(report.clone()).await?;
    }
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    let kept = status.last_host_report.expect("report kept");
    assert!(
        kept.error.len() <= 4096,
        "{} bytes of error kept",
        kept.error.len()
    );
    assert!(kept.host_name.len() <= 253);
    assert_eq!(kept.routes.len(), 1000);
    dpu.stop().await
}

/// A contract the host refuses gets no flows for the CIDRs it refused: the
/// cluster CIDRs of the revision it last applied stay (those it still
/// routes), the new one gets none; once the host applies the revision, the
/// new CIDR's flow goes in. An agent that does not know what the host holds
/// (it restarted) withdraws nothing: the host may route any of it to us.
#[tokio::test]
async fn a_contract_the_host_refuses_gets_no_flows_for_its_new_cidrs() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let options = DpuOptions::default();
    let dpu = start(&certs, &options).await?;
    let mut client = client_for(&dpu, &certs.host).await?;
    let cidr_flows = || -> Vec<String> {
        dpu.handle
            .desired_flows()
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.cidr.map(|c| c.to_string()))
            .collect()
    };
    let report = |revision: u64, applied: bool| pb::HostReport {
        revision,
        applied,
        refused: !applied,
        error: if applied {
            String::new()
        } else {
            "cluster CIDR 198.19.0.0/16 overlaps the host's own address 198.19.0.7/24 on eth1"
                .into()
        },
        ..pb::HostReport::default()
    };
    // Refused, nothing known of what the host holds: nothing withdrawn.
    client.report_applied(report(1, false)).await?;
    assert_eq!(cidr_flows(), ["198.18.128.0/17"]);
    client.report_applied(report(1, true)).await?;
    assert_eq!(cidr_flows(), ["198.18.128.0/17"]);
    // A new CIDR, refused: only the one the host routes keeps its flow.
    let grown = DpuOptions {
        ipv4_cidrs: vec!["198.18.128.0/17".into(), "198.19.0.0/16".into()],
        ..options.clone()
    };
    let config = harness::dpu_config(certs.dir.path(), &grown, &certs.dpu)?;
    let revision = dpu.handle.reload(&config)?;
    assert_eq!(cidr_flows().len(), 2, "before the host said anything");
    client.report_applied(report(revision, false)).await?;
    assert_eq!(cidr_flows(), ["198.18.128.0/17"]);
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    assert!(
        status.sources.iter().any(|s| s
            .error
            .contains(&format!("host refuses revision {revision}"))),
        "{:?}",
        status.sources
    );
    // Applied after all: its flows go in.
    client.report_applied(report(revision, true)).await?;
    assert_eq!(cidr_flows(), ["198.18.128.0/17", "198.19.0.0/16"]);
    // Two revisions served before the host answers the first: its late
    // "applied" still says what it holds when it refuses the second.
    let reload = |cidrs: &[&str]| -> anyhow::Result<u64> {
        let changed = DpuOptions {
            ipv4_cidrs: cidrs.iter().map(ToString::to_string).collect(),
            ..options.clone()
        };
        let config = harness::dpu_config(certs.dir.path(), &changed, &certs.dpu)?;
        Ok(dpu.handle.reload(&config)?)
    };
    let first = reload(&["198.18.128.0/17", "198.19.0.0/17"])?;
    let second = reload(&["198.18.128.0/17", "198.19.0.0/17", "198.19.128.0/17"])?;
    client.report_applied(report(first, true)).await?;
    client.report_applied(report(second, false)).await?;
    assert_eq!(cidr_flows(), ["198.18.128.0/17", "198.19.0.0/17"]);
    dpu.stop().await
}

/// A reload that changes what a running agent cannot take (its listen
/// address, its bridge) is refused naming the field, and nothing of it is
/// applied, not even the CIDR change that came with it.
#[tokio::test]
async fn a_reload_that_needs_a_restart_is_refused_whole() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let options = DpuOptions::default();
    let dpu = start(&certs, &options).await?;
    let before = dpu.handle.offer();
    let changed = DpuOptions {
        listen: "127.0.0.1:1".parse()?,
        ipv4_cidrs: vec!["198.19.0.0/16".into()],
        bridge: options.bridge.replace("uplink = \"p0\"", "uplink = \"p1\""),
        ..options.clone()
    };
    let config = harness::dpu_config(certs.dir.path(), &changed, &certs.dpu)?;
    let error = dpu.handle.reload(&config).expect_err("refused").to_string();
    assert!(
        error.contains("listen") && error.contains("bridge") && error.contains("restart"),
        "{error}"
    );
    assert_eq!(
        dpu.handle.offer(),
        before,
        "part of the refused reload was applied"
    );
    let reload = dpu.handle.source(dpu_agent::state::Source::Reload);
    assert!(
        reload.error().is_some_and(|e| e.contains("listen")),
        "{reload:?}"
    );
    dpu.stop().await
}

#[tokio::test]
async fn graceful_stop_ends_open_watches() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start(&certs, &DpuOptions::default()).await?;
    let mut client = client_for(&dpu, &certs.host).await?;
    let mut watch = client.watch_contract(proposal()).await?.into_inner();
    next_contract(&mut watch).await?;
    dpu.stop().await?;
    let end = tokio::time::timeout(Duration::from_secs(10), watch.message()).await?;
    assert!(!matches!(end, Ok(Some(_))), "watch must end, got {end:?}");
    Ok(())
}
