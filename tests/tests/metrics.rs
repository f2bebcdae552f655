//! Prometheus metrics of both agents, scraped over HTTP like Prometheus does.

use noverlay_tests::harness::{self, Certs, DpuOptions, HostOptions, RunningDpu, RunningHost};
use std::sync::Arc;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// One scrape; the request is written in two pieces with a pause between
/// them, as a slow client or a split TCP segment delivers it.
async fn scrape(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (first, second) = request.split_at(7);
    stream.write_all(first.as_bytes()).await?;
    stream.flush().await?;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    stream.write_all(second.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut response),
    )
    .await??;
    Ok(response)
}

fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn both_agents_expose_their_state() -> anyhow::Result<()> {
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let mut host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(dpu.addr),
        &certs.host,
        Vec::new(),
    )?;
    host.wait_for("applied", |s| s.applied.is_some()).await?;

    let shutdown = CancellationToken::new();
    let dpu_listener = TcpListener::bind("127.0.0.1:0").await?;
    let dpu_addr = dpu_listener.local_addr()?;
    tokio::spawn(noverlay_runtime::metrics::serve(
        dpu_listener,
        Arc::new(dpu_agent::metrics::registry(dpu.handle.clone())),
        shutdown.clone(),
    ));
    let host_listener = TcpListener::bind("127.0.0.1:0").await?;
    let host_addr = host_listener.local_addr()?;
    tokio::spawn(noverlay_runtime::metrics::serve(
        host_listener,
        Arc::new(host_agent::metrics::registry(host.status.clone())),
        shutdown.clone(),
    ));

    // An unauthorised client shows up as an auth failure.
    let stranger = certs.pki.issue(
        "stranger",
        "someone.else.test",
        noverlay_tests::pki::Validity::Current,
    )?;
    if let Ok(mut client) = host_agent::client::connect(
        &dpu.addr.to_string(),
        &noverlay_proto::tls::PeerIdentity::parse(harness::DPU_SAN)?,
        noverlay_proto::tls::client_config(&stranger)?,
    )
    .await
    {
        let refused = client
            .get_status(noverlay_proto::pb::GetStatusRequest {})
            .await;
        assert!(refused.is_err(), "an unauthorised client got an answer");
    }
    noverlay_test_support::eventually(
        "the refused handshake counted",
        std::time::Duration::from_secs(2),
        || dpu.handle.refused_connections() == 1,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let text = scrape(dpu_addr, "/metrics").await?;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        value(&text, "noverlay_dpu_contract_revision"),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "noverlay_dpu_negotiations_total") >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "noverlay_dpu_auth_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "noverlay_dpu_host_applied_revision"),
        Some(1.0),
        "{text}"
    );

    let text = scrape(host_addr, "/metrics").await?;
    assert_eq!(
        value(
            &text,
            "noverlay_host_negotiation_state{state=\"following\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "noverlay_host_contract_revision"),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "noverlay_host_apply_seconds_count") >= Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE noverlay_host_apply_seconds histogram"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    assert!(scrape(host_addr, "/").await?.starts_with("HTTP/1.1 404"));
    shutdown.cancel();
    host.stop().await?;
    dpu.stop().await
}
