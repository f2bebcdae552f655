//! The host-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{Parser, Subcommand};
use host_agent::{agent::HostAgent, config::HostConfig, dataplane::dry_run::DryRun};
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
        Command::Run { config, dry_run } => run(config, dry_run).await,
        Command::CheckConfig { config } => {
            let config = HostConfig::load(&config)?;
            println!("valid; proposal to the DPU: {:#?}", config.proposal());
            Ok(())
        }
    }
}

async fn run(path: PathBuf, dry_run: bool) -> anyhow::Result<()> {
    let config = HostConfig::load(&path)?;
    anyhow::ensure!(
        dry_run,
        "programming the kernel is not built yet; run with --dry-run"
    );
    let (dataplane, _) = DryRun::new(Vec::new());
    let agent = HostAgent::new(config, dataplane)?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(agent.run(shutdown.clone()));
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    tracing::info!("shutting down; host state stays in place");
    shutdown.cancel();
    running.await.context("agent task")??;
    Ok(())
}
