//! The demo: both agents against each other on loopback, with certificates
//! made on the spot. Prints the config files, the negotiated contract, the
//! host plan (routes, neighbour, nftables) and the DPU's planned flows, then
//! changes the cluster CIDRs at runtime and shows the host following.
//!
//! The host side runs with the dry-run dataplane: nothing on this machine is
//! changed, so no root is needed.

use host_agent::{
    client,
    dataplane::dry_run::DryRunEvent,
    plan::{self, HostSettings},
};
use noverlay_proto::{
    pb,
    tls::{self, PeerIdentity},
};
use noverlay_tests::harness::{
    self, Certs, DPU_SAN, DpuOptions, HostOptions, RunningDpu, RunningHost,
};

fn section(title: &str) {
    println!("\n==== {title} ====");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    noverlay_proto::logging::init(noverlay_proto::logging::LogFormat::Human);
    let certs = Certs::new()?;
    let dir = certs.dir.path();
    section(&format!(
        "certificates (CA, dpu-agent, host-agent) in {}",
        dir.display()
    ));

    let options = DpuOptions {
        ipv6_cidrs: vec!["fd00:10:244::/48".into()],
        ..DpuOptions::default()
    };
    let dpu_config = harness::dpu_config(dir, &options, &certs.dpu)?;
    let dpu = RunningDpu::start(&dpu_config).await?;
    section("dpu-agent.toml");
    print!(
        "{}",
        harness::dpu_config_toml(
            &DpuOptions {
                listen: dpu.addr,
                ..options.clone()
            },
            &certs.dpu
        )
    );

    let host_options = HostOptions {
        ipv6: true,
        ..HostOptions::new(dpu.addr)
    };
    section("host-agent.toml");
    print!("{}", harness::host_config_toml(&host_options, &certs.host));
    let mut host = RunningHost::start(dir, &host_options, &certs.host, Vec::new())?;
    let status = host
        .wait_for("the contract to be applied", |s| s.applied.is_some())
        .await?;
    let contract = status
        .applied
        .ok_or_else(|| anyhow::anyhow!("no contract"))?;

    section("negotiated contract (as the DPU serves it)");
    println!("{:#?}", contract.to_pb());

    let host_config = host_agent::config::HostConfig::load(&dir.join("host-agent.toml"))?;
    let settings = HostSettings::from_config(&host_config);
    section("host plan: address, neighbour, routes, nftables, mp0 cleanup");
    print!("{}", plan::plan(&contract, &settings).render());

    // Read the DPU's status over mTLS, exactly as grpcurl would.
    let mut grpc = client::connect(
        &dpu.addr.to_string(),
        &PeerIdentity::parse(DPU_SAN)?,
        tls::client_config(&certs.host)?,
    )
    .await?;
    let dpu_status = grpc.get_status(pb::GetStatusRequest {}).await?.into_inner();
    section("dpu-agent desired flows on breth0 (GetStatus)");
    for flow in &dpu_status.desired_flows {
        println!("{flow}");
    }
    section("dpu-agent's view of the host (GetStatus)");
    println!("peer identity: {}", dpu_status.peer_identity);
    if let Some(report) = &dpu_status.last_host_report {
        println!(
            "host reported revision {} applied={}",
            report.revision, report.applied
        );
    }

    section("operator adds 198.19.0.0/16 on the DPU and reloads");
    let mut changed = options.clone();
    changed.ipv4_cidrs.push("198.19.0.0/16".into());
    let revision = dpu
        .handle
        .reload(&harness::dpu_config(dir, &changed, &certs.dpu)?)?;
    let status = host
        .wait_for("the new revision", |s| {
            s.applied.as_ref().map(|c| c.revision) == Some(revision)
        })
        .await?;
    println!("host now at revision {revision}; its routes:");
    if let Some(DryRunEvent::Applied(plan)) = host.log.events().last() {
        for route in plan.render_routes() {
            println!("  {route}");
        }
    }
    drop(status);

    host.stop().await?;
    dpu.stop().await?;
    section("done: both agents stopped; nothing on this machine was changed");
    Ok(())
}
