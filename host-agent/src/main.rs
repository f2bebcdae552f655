//! The host-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use host_agent::{
    agent::HostAgent,
    config::{HostConfig, ValidHostConfig},
    dataplane::{Dataplane, dry_run::DryRun, kernel::Kernel},
    plan::HostSettings,
};
use noverlay_runtime::{Daemon, logging::LogFormat};
use std::path::PathBuf;

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
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    GenerateMan {
        /// The directory the pages go into (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate the config and print the proposal it makes to the DPU.
    CheckConfig {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running agent's status: the contract, what is applied, the
    /// last error and repairs (read from its owner-only local socket).
    Status {
        /// The agent's status socket (its config's `status_socket`).
        #[arg(long, default_value = host_agent::local_status::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// An operator's mistake is one line on stderr (the error and its causes,
/// joined by ": "), never a backtrace; the exit code says it failed.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match cli().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("host-agent: {}", noverlay_runtime::one_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn cli() -> anyhow::Result<()> {
    let version =
        noverlay_runtime::version(env!("CARGO_PKG_VERSION"), noverlay_proto::PROTOCOL_VERSION);
    let matches = Cli::command().version(version.clone()).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    noverlay_runtime::start(cli.log_format);
    if !matches!(cli.command, Command::Run { .. }) {
        noverlay_runtime::end_quietly_on_closed_stdout();
    }
    match cli.command {
        Command::Run { config, dry_run } => {
            let daemon = Daemon::new()?;
            // Off the runtime's workers: the load may look for ovnkube-node
            // (up to 2 s).
            let config = tokio::task::spawn_blocking(move || HostConfig::load(&config))
                .await
                .context("loading the config")??;
            if dry_run {
                let (dataplane, _) = DryRun::new(Vec::new());
                run(daemon, config, dataplane).await
            } else {
                let dataplane = Kernel::open(config.masquerades.clone())?;
                run(daemon, config, dataplane).await
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
        Command::GenerateMan { out } => {
            let command = Cli::command().version(version);
            for page in noverlay_runtime::man::write_man_pages(command, &out)? {
                println!("{}", page.display());
            }
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = HostConfig::load(&config)?;
            println!(
                "valid; proposal to the DPU: {}, gateway interface {}, host {}",
                config.raw.mode, config.raw.gateway_interface, config.raw.host_name
            );
            for masquerade in &config.masquerades {
                println!(
                    "  {}: masquerade {} (host {}, next hop {})",
                    masquerade.family(),
                    masquerade.subnet,
                    masquerade.host_ip,
                    masquerade.dummy_next_hop
                );
            }
            for fact in &config.facts {
                println!("{fact}");
            }
            Ok(())
        }
        Command::Status { socket, json } => show_status(&socket, json).await,
    }
}

async fn show_status(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let report = host_agent::local_status::read(socket).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

async fn run(
    daemon: Daemon,
    config: ValidHostConfig,
    dataplane: impl Dataplane + 'static,
) -> anyhow::Result<()> {
    let running = std::sync::Arc::new(std::sync::Mutex::new(
        host_agent::reload::RunningConfig::new(&config),
    ));
    let metrics_listen = config.raw.metrics_listen;
    let status_socket = config.raw.status_socket.clone();
    let dpu_address = config.raw.dpu.address.clone();
    // Bound before anything runs: a second agent on this host stops here.
    let status_listener = host_agent::local_status::bind(&status_socket).await?;
    let agent = HostAgent::new(config, dataplane)?
        .with_heartbeat(daemon.watchdog.heartbeat("host reconcile loop"));
    let reloader = agent.tls_reloader();
    daemon
        .serve_metrics(
            metrics_listen,
            host_agent::metrics::registry(agent.status()),
        )
        .await?;
    tokio::spawn(host_agent::local_status::serve(
        status_listener,
        status_socket,
        agent.status(),
        dpu_address,
        noverlay_runtime::version(env!("CARGO_PKG_VERSION"), noverlay_proto::PROTOCOL_VERSION),
        daemon.shutdown.clone(),
    ));
    let agent_task = tokio::spawn(agent.run(daemon.shutdown.clone()));
    daemon
        .run_until_stopped(|| {
            // Off the signal loop: the load may look for ovnkube-node (up to 2 s).
            let (running, reloader) = (running.clone(), reloader.clone());
            tokio::task::spawn_blocking(move || {
                // One reload at a time.
                let running = running.lock().unwrap_or_else(|p| p.into_inner());
                match running.reload(&reloader) {
                    Ok(()) => {
                        tracing::info!("TLS credentials reloaded; used from the next connection")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; keeping the credentials in use")
                    }
                }
            });
        })
        .await;
    tracing::info!("host state stays in place");
    agent_task.await.context("agent task")??;
    Ok(())
}
