//! The host-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{Parser, Subcommand};
use host_agent::{
    agent::HostAgent,
    config::{HostConfig, ValidHostConfig},
    dataplane::{Dataplane, dry_run::DryRun, kernel::Kernel},
    plan::HostSettings,
};
use noverlay_proto::logging::{self, LogFormat};
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Host side of DPU host no-overlay routing")]
struct Cli {
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Negotiate with the DPU and keep the host datapath converged.
    Run {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Log the planned host state instead of programming the kernel.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove everything the agent owns: routes with its protocol number, the
    /// dummy next hop's neighbour, the masquerade address, its nft table.
    Cleanup {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config and print the proposal it makes to the DPU.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run { config, dry_run } => {
            let config = HostConfig::load(&config)?;
            if dry_run {
                let (dataplane, _) = DryRun::new(Vec::new());
                run(config, dataplane).await
            } else {
                let dataplane = Kernel::open(config.masquerades.clone())?;
                run(config, dataplane).await
            }
        }
        Command::Cleanup { config } => {
            let config = HostConfig::load(&config)?;
            let mut dataplane = Kernel::open(config.masquerades.clone())?;
            dataplane
                .teardown(&HostSettings::from_config(&config))
                .await?;
            println!("removed everything host-agent owns");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = HostConfig::load(&config)?;
            println!("valid; proposal to the DPU: {:#?}", config.proposal());
            Ok(())
        }
    }
}

async fn run(config: ValidHostConfig, dataplane: impl Dataplane + 'static) -> anyhow::Result<()> {
    let config_path = config.path.clone();
    let agent = HostAgent::new(config, dataplane)?;
    let reloader = agent.tls_reloader();
    let metrics_listen = agent.metrics_listen();
    let status = agent.status();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(agent.run(shutdown.clone()));
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics_listen {addr}"))?;
        tokio::spawn(noverlay_proto::metrics::serve(
            listener,
            std::sync::Arc::new(move || host_agent::metrics::render(&status.borrow())),
            shutdown.clone(),
        ));
        tracing::info!(%addr, "metrics at /metrics");
    }
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    noverlay_proto::systemd::ready_with_watchdog();
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                // Certificate rotation: a failed reload keeps what works.
                let reloaded = HostConfig::load(&config_path)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| reloader.reload(&c.raw.tls).map_err(anyhow::Error::from));
                match reloaded {
                    Ok(()) => tracing::info!("TLS credentials reloaded; used from the next connection"),
                    Err(e) => tracing::error!(error = %e, "reload failed; keeping the credentials in use"),
                }
            }
        }
    }
    tracing::info!("shutting down; host state stays in place");
    noverlay_proto::systemd::stopping();
    shutdown.cancel();
    running.await.context("agent task")??;
    Ok(())
}
