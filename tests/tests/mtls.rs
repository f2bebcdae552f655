//! Mutual TLS, both ways: the DPU authorises only the host identity in its
//! config, the host only the DPU identity in its config. Every failure is
//! refused at the handshake, before any gRPC handler runs.

use host_agent::client;
use noverlay_proto::tls::{self, PeerIdentity, TlsFiles};
use noverlay_tests::{
    harness::{self, Certs, DPU_SAN, DpuOptions, HOST_SAN, RunningDpu, proposal},
    pki::{Pki, Validity},
};
use rustls::{ClientConfig, RootCertStore, pki_types::pem::PemObject};
use std::sync::Arc;

/// Connects with `config` and tries one RPC; returns the error text if the
/// DPU (or the client itself) refused.
async fn try_negotiate(dpu: &RunningDpu, config: Arc<ClientConfig>) -> Option<String> {
    let identity = PeerIdentity::parse(DPU_SAN).ok()?;
    match client::connect(&dpu.addr.to_string(), &identity, config).await {
        Err(e) => Some(e.to_string()),
        Ok(mut c) => c.negotiate(proposal()).await.err().map(|s| {
            std::error::Error::source(&s)
                .map(client::error_chain)
                .unwrap_or_else(|| s.message().to_string())
        }),
    }
}

async fn start_dpu(certs: &Certs) -> anyhow::Result<RunningDpu> {
    harness::init();
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    RunningDpu::start(&config).await
}

#[tokio::test]
async fn dpu_refuses_every_unauthorised_host() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dpu = start_dpu(&certs).await?;
    let dir = certs.dir.path();

    let rogue_ca = Pki::new(dir, "rogue-ca")?;
    let mut wrong_ca = rogue_ca.issue("wrong-ca", HOST_SAN, Validity::Current)?;
    // The client still trusts the real CA, so only its own cert is wrong.
    wrong_ca.ca = certs.pki.ca_path();
    let wrong_san = certs
        .pki
        .issue("wrong-san", "host-agent.node2.test", Validity::Current)?;
    let expired = certs.pki.issue("expired", HOST_SAN, Validity::Expired)?;
    // host-agent.node1.test matches *.node1.test as a web browser would see
    // it; as an identity it names a set of hosts, so it is refused.
    let wildcard = certs
        .pki
        .issue("wildcard-host", "*.node1.test", Validity::Current)?;

    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(certs.pki.ca_path())? {
        roots.add(cert?)?;
    }
    let mut no_cert = ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    no_cert.alpn_protocols = vec![b"h2".to_vec()];

    let cases: Vec<(&str, Arc<ClientConfig>)> = vec![
        (
            "client cert from another CA",
            tls::client_config(&wrong_ca)?,
        ),
        (
            "client cert for another host",
            tls::client_config(&wrong_san)?,
        ),
        ("expired client cert", tls::client_config(&expired)?),
        ("no client cert", Arc::new(no_cert)),
        (
            "client cert with a wildcard SAN",
            tls::client_config(&wildcard)?,
        ),
    ];
    for (refused, (case, config)) in cases.into_iter().enumerate() {
        let error = try_negotiate(&dpu, config).await;
        assert!(
            error.is_some(),
            "{case}: the DPU answered an unauthorised host"
        );
        // The handshake task counts (and logs) the refusal just after the
        // alert goes out; give it a moment.
        let counted = wait_until(|| dpu.handle.refused_connections() > refused as u64).await;
        assert!(
            counted,
            "{case}: refusal not recorded (error was {error:?})"
        );
    }
    // The authorised host still gets in, and nothing above was recorded as a peer.
    assert_eq!(
        try_negotiate(&dpu, tls::client_config(&certs.host)?).await,
        None
    );
    dpu.stop().await
}

#[tokio::test]
async fn host_refuses_every_unauthorised_dpu() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let dir = certs.dir.path();
    let rogue_ca = Pki::new(dir, "rogue-ca")?;
    let cases: Vec<(&str, TlsFiles, &str)> = vec![
        (
            "DPU cert for another name",
            certs
                .pki
                .issue("dpu-wrong-san", "dpu-agent.node2.test", Validity::Current)?,
            "not valid for name",
        ),
        (
            "DPU cert from another CA",
            rogue_ca.issue("dpu-wrong-ca", DPU_SAN, Validity::Current)?,
            "unknownissuer",
        ),
        (
            "expired DPU cert",
            certs.pki.issue("dpu-expired", DPU_SAN, Validity::Expired)?,
            "expired",
        ),
        (
            "DPU cert with a wildcard SAN",
            certs
                .pki
                .issue("dpu-wildcard", "*.node1.test", Validity::Current)?,
            "wildcards do not match",
        ),
    ];
    for (case, mut dpu_tls, reason) in cases {
        // The DPU trusts the real CA so that only its own cert is wrong.
        dpu_tls.ca = certs.pki.ca_path();
        let config = harness::dpu_config_unchecked(&DpuOptions::default(), &dpu_tls)?;
        let dpu = RunningDpu::start(&config).await?;
        let error = try_negotiate(&dpu, tls::client_config(&certs.host)?).await;
        let error = error.unwrap_or_else(|| panic!("{case}: host accepted the DPU"));
        assert!(
            error
                .to_lowercase()
                .replace(' ', "")
                .contains(&reason.replace(' ', "")),
            "{case}: expected {reason:?} in {error}"
        );
        dpu.stop().await?;
    }
    Ok(())
}

async fn wait_until(condition: impl Fn() -> bool) -> bool {
    noverlay_test_support::eventually(
        "the condition",
        std::time::Duration::from_secs(2),
        condition,
    )
    .await
    .is_ok()
}

/// Certificates rotate without a restart, on both sides; a rotation to
/// unusable files is refused and the credentials in use stay.
#[tokio::test]
async fn certificates_rotate_without_restart() -> anyhow::Result<()> {
    use host_agent::agent::Phase;
    use noverlay_tests::harness::{HostOptions, RunningHost};
    harness::init();
    let certs = Certs::new()?;
    let dir = certs.dir.path();
    let options = DpuOptions::default();
    let dpu = RunningDpu::start(&harness::dpu_config(dir, &options, &certs.dpu)?).await?;
    let addr = dpu.addr;
    let mut host = RunningHost::start(dir, &HostOptions::new(addr), &certs.host, Vec::new())?;
    host.wait_for("first apply", |s| s.applied.is_some())
        .await?;

    // The DPU rotates to a fresh key and certificate: new connections work.
    let rotated = certs.pki.issue("dpu-rotated", DPU_SAN, Validity::Current)?;
    dpu.handle
        .reload(&harness::dpu_config(dir, &options, &rotated)?)?;
    assert_eq!(
        try_negotiate(&dpu, tls::client_config(&certs.host)?).await,
        None
    );

    // A rotation to a missing key is refused; the old credentials keep working.
    let mut broken = rotated.clone();
    broken.key = dir.join("does-not-exist.key");
    assert!(host.tls.reload(&broken).is_err());
    let with_new_cidr = DpuOptions {
        ipv4_cidrs: vec!["198.18.128.0/17".into(), "198.19.0.0/16".into()],
        ..options.clone()
    };
    // Loading the config (what SIGHUP does first) already names the key...
    let err = harness::dpu_config(dir, &with_new_cidr, &broken).expect_err("missing key");
    assert!(err.to_string().contains("does-not-exist.key"), "{err}");
    // ...and the agent refuses such a config whole even if handed one.
    let err = dpu
        .handle
        .reload(&harness::dpu_config_unchecked(&with_new_cidr, &broken)?)
        .expect_err("missing key");
    assert!(err.to_string().contains("does-not-exist.key"), "{err}");
    assert_eq!(
        dpu.handle.offer().revision,
        1,
        "a failed reload changed the offer"
    );
    assert_eq!(
        try_negotiate(&dpu, tls::client_config(&certs.host)?).await,
        None
    );

    // The host rotates to a certificate the DPU does not authorise: after the
    // next reconnect it is refused, which shows the new one is in use...
    let other = certs
        .pki
        .issue("host-other", "host-agent.node2.test", Validity::Current)?;
    host.tls.reload(&other)?;
    dpu.stop().await?;
    let dpu = RunningDpu::start(&harness::dpu_config(
        dir,
        &DpuOptions {
            listen: addr,
            ..options.clone()
        },
        &rotated,
    )?)
    .await?;
    host.wait_for("refused by the DPU", |s| {
        matches!(s.phase, Phase::Unreachable(_))
    })
    .await?;
    assert!(wait_until(|| dpu.handle.refused_connections() > 0).await);
    // ...and rotating back to a good one brings it back without a restart.
    let good = certs.pki.issue("host-new", HOST_SAN, Validity::Current)?;
    host.tls.reload(&good)?;
    host.wait_for("following again", |s| s.phase == Phase::Following)
        .await?;
    host.stop().await?;
    dpu.stop().await
}
