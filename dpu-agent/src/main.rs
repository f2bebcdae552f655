//! The dpu-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dpu_agent::{config::DpuConfig, flows, server::DpuAgent};
use noverlay_proto::logging::{self, LogFormat};
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "DPU side of DPU host no-overlay routing")]
struct Cli {
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the contract and program the gateway bridge.
    Run {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config and print the offer and the planned flows.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // Explicit providers are used everywhere; this only guards against a
    // dependency asking rustls for the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run { config } => run(config).await,
        Command::CheckConfig { config } => check_config(config),
    }
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = DpuConfig::load(&path)?;
    println!("{}: valid", path.display());
    println!("offer: {:#?}", config.offer);
    match config.static_ports {
        Some(ports) => {
            let settings = config.flow_settings();
            let plan = flows::plan_flows(&config.offer, &ports, &settings);
            for line in flows::render_flows(&plan, settings.cookie) {
                println!("{line}");
            }
        }
        None => println!("flows: port numbers come from OVSDB at run time"),
    }
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = DpuConfig::load(&path)?;
    let agent = DpuAgent::bind(&config).await?;
    let handle = agent.handle();
    tracing::info!(
        listen = %agent.local_addr().context("listener address")?,
        revision = config.offer.revision,
        authorised_host = %config.authorised_host,
        "dpu-agent serving"
    );
    let shutdown = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let datapath = dpu_agent::start_datapath(handle.clone(), &config, shutdown.clone());
    if let Some(addr) = config.raw.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics_listen {addr}"))?;
        let metrics_handle = handle.clone();
        tokio::spawn(noverlay_proto::metrics::serve(
            listener,
            std::sync::Arc::new(move || dpu_agent::metrics::render(&metrics_handle)),
            shutdown.clone(),
        ));
        tracing::info!(%addr, "metrics at /metrics");
    }
    let serving = tokio::spawn(agent.serve(shutdown.clone()));
    noverlay_proto::systemd::ready_with_watchdog();
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                // A failed reload keeps the running state.
                match DpuConfig::load(&path).map_err(anyhow::Error::from)
                    .and_then(|c| handle.reload(&c).map_err(anyhow::Error::from))
                {
                    Ok(revision) => tracing::info!(revision, "config reloaded"),
                    Err(e) => tracing::error!(error = %e, "config reload failed; keeping the running config"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    noverlay_proto::systemd::stopping();
    shutdown.cancel();
    serving.await.context("server task")??;
    for task in datapath {
        // The flows stay on the bridge: restarts are hitless.
        task.await.context("datapath task")?;
    }
    Ok(())
}
