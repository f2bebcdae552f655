//! Prometheus metrics of both agents, scraped over HTTP like Prometheus does.

use noverlay_tests::harness::{self, DpuOptions, RunningDpu, RunningHost};
use std::sync::Arc;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// What Prometheus asks for.
const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Both agents' metrics, each on a free loopback port, until `shutdown`:
/// (the dpu-agent's, the host-agent's).
async fn serve_both(
    dpu: &RunningDpu,
    host: &RunningHost,
    shutdown: &CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    Ok((
        serve(dpu_agent::metrics::registry(dpu.handle.clone()), shutdown).await?,
        serve(host_agent::metrics::registry(host.status.clone()), shutdown).await?,
    ))
}

/// Serves `registry` on a free loopback port until `shutdown`.
async fn serve(
    registry: prometheus_client::registry::Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(noverlay_runtime::metrics::serve(
        listener,
        Arc::new(registry),
        shutdown.clone(),
    ));
    Ok(addr)
}

/// One scrape as Prometheus makes it (OpenMetrics).
async fn scrape(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    scrape_accepting(addr, path, OPENMETRICS).await
}

/// One scrape; the request is written in two pieces with a pause between
/// them, as a slow client or a split TCP segment delivers it.
async fn scrape_accepting(
    addr: std::net::SocketAddr,
    path: &str,
    accept: &str,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
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
    let (certs, dpu, host) = harness::agents_applied(&DpuOptions::default()).await?;

    let shutdown = CancellationToken::new();
    let (dpu_addr, host_addr) = serve_both(&dpu, &host, &shutdown).await?;

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
    assert_eq!(harness::repeated_series(&text), Vec::<String>::new());
    let dpu_text = text.clone();
    // The test PKI issues certificates valid for 90 days from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let in_90_days = |sample: &str, text: &str| {
        let expiry = value(text, sample).unwrap_or_default();
        assert!(
            (expiry - now - 90.0 * 86400.0).abs() < 86400.0,
            "{sample} is {expiry}, not about 90 days from {now}"
        );
    };
    in_90_days("noverlay_dpu_certificate_expiry_unix", &text);
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
    assert_eq!(harness::repeated_series(&text), Vec::<String>::new());
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
    in_90_days("noverlay_host_certificate_expiry_unix", &text);
    // As curl asks: Prometheus' text format, without OpenMetrics' # EOF.
    let plain = scrape_accepting(host_addr, "/metrics", "*/*").await?;
    assert!(
        plain.contains("text/plain; version=0.0.4") && !plain.contains("# EOF"),
        "{plain}"
    );
    shipped_rules_and_dashboard_use_exported_names(&[&dpu_text, &text]);

    assert!(scrape(host_addr, "/").await?.starts_with("HTTP/1.1 404"));
    shutdown.cancel();
    host.stop().await?;
    dpu.stop().await
}

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body)
}

/// promtool: fetched into target/tools by `cargo xtask setup`, or on PATH.
fn promtool() -> Option<std::path::PathBuf> {
    let fetched = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/promtool");
    if fetched.exists() {
        return Some(fetched);
    }
    std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then(|| "promtool".into())
}

/// Every metric name the shipped alert rules and Grafana dashboard use.
fn names_used(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("noverlay_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The alert rules and the dashboard in deploy/ use only metric names the
/// agents really export (as scraped above).
fn shipped_rules_and_dashboard_use_exported_names(scraped: &[&str]) {
    let deploy = deploy_dir();
    // The names of the samples, and those a family without samples yet
    // (a labelled one) will have, from its TYPE line.
    let mut exported = std::collections::BTreeSet::new();
    for line in scraped.iter().flat_map(|text| body(text).lines()) {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').unwrap_or((family, ""));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            exported.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            exported.extend(line.split(['{', ' ']).next().map(str::to_string));
        }
    }
    for file in ["prometheus/noverlay-alerts.yml", "grafana/noverlay.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap_or_default();
        let used = names_used(&text);
        assert!(used.len() >= 10, "{file} uses only {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the agents do not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `promtool check metrics` finds nothing wrong with either agent's
/// endpoint (scraped as curl asks, Prometheus' text format), and the
/// shipped alert rules pass their unit tests. Needs promtool, which
/// `cargo xtask setup` fetches into target/tools: ignored without it by
/// plain `cargo test`, run by `cargo xtask test` and CI, where a missing
/// promtool fails it.
#[tokio::test]
#[ignore = "needs promtool: `cargo xtask setup` fetches it into target/tools (`cargo xtask test` and CI run this)"]
async fn promtool_accepts_both_endpoints_and_the_alert_rules() -> anyhow::Result<()> {
    let promtool = promtool().ok_or_else(|| {
        anyhow::anyhow!(
            "promtool missing: run `cargo xtask setup` (it fetches promtool into target/tools)"
        )
    })?;
    let (_certs, dpu, host) = harness::agents_applied(&DpuOptions::default()).await?;
    let shutdown = CancellationToken::new();
    let (dpu_addr, host_addr) = serve_both(&dpu, &host, &shutdown).await?;
    for addr in [dpu_addr, host_addr] {
        let text = scrape_accepting(addr, "/metrics", "*/*").await?;
        let mut check = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(
            check
                .stdin
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("stdin"))?,
            body(&text).as_bytes(),
        )?;
        let out = check.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool check metrics: {said}"
        );
    }
    let tested = std::process::Command::new(&promtool)
        .args(["test", "rules", "noverlay-alerts.test.yml"])
        .current_dir(deploy_dir().join("prometheus"))
        .output()?;
    assert!(
        tested.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    shutdown.cancel();
    host.stop().await?;
    dpu.stop().await
}
