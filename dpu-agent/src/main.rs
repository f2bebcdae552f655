//! The dpu-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dpu_agent::{config::DpuConfig, flows, reload, server::DpuAgent};
use noverlay_runtime::{Daemon, logging::LogFormat};
use std::path::PathBuf;

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
    /// Remove what the agent put in place: the flows with our cookie (one
    /// bundle) and the uplink guard's nftables table. Flows and tables of
    /// others stay as they are.
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
    /// Validate the config and print the offer and the planned flows.
    CheckConfig {
        /// Path of the TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// An operator's mistake is one line on stderr (the error and its causes,
/// joined by ": "), never a backtrace; the exit code says it failed.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match cli().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dpu-agent: {}", noverlay_runtime::one_line(error.as_ref()));
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
        Command::Run { config } => run(config).await,
        Command::Cleanup { config } => {
            let config = DpuConfig::load(&config, &dpu_agent::ovn::Northbound)?;
            if let Err(errors) = dpu_agent::cleanup(&config).await {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::bail!("cleanup incomplete: {}", all.join("; "));
            }
            println!(
                "removed every flow with cookie {:#x} from bridge {} and the uplink guard (nft table {})",
                config.raw.bridge.cookie,
                config.raw.bridge.name,
                noverlay_uplink_guard::table_id()
            );
            Ok(())
        }
        Command::GenerateMan { out } => {
            let command = Cli::command().version(version);
            for page in noverlay_runtime::man::write_man_pages(command, &out)? {
                println!("{}", page.display());
            }
            Ok(())
        }
        Command::CheckConfig { config } => check_config(config),
    }
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = DpuConfig::load(&path, &dpu_agent::ovn::Northbound)?;
    println!("{}: valid", path.display());
    for fact in &config.facts {
        println!("{fact}");
    }
    if config.static_ports.is_none() {
        let bridge = &config.raw.bridge;
        for (unset, line) in [
            (
                bridge.patch_port.is_none(),
                "bridge.patch_port = the bridge's one patch port to the integration bridge",
            ),
            (
                bridge.uplink.is_none(),
                "bridge.uplink = the bridge's one interface of type system, else its external_ids:bridge-uplink, else <nic> of br<nic>",
            ),
            (
                bridge.host_representor.is_none(),
                "bridge.host_representor = the bridge's one port that is not its own, a patch port or the uplink",
            ),
        ] {
            if unset {
                println!("{line} (from OVSDB at run time)");
            }
        }
    }
    print!("{}", config.offer);
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
    if config.raw.uplink_guard.enabled {
        match &config.raw.bridge.uplink {
            Some(uplink) => {
                let plan = noverlay_uplink_guard::GuardPlan::new(&config.offer, uplink);
                print!("uplink guard:\n{}", plan.render());
            }
            None => println!("uplink guard: on the uplink found in OVSDB at run time"),
        }
    } else {
        println!("uplink guard: off");
    }
    match &config.raw.ovn {
        Some(ovn) => {
            println!(
                "ovn check: gateway router {:?}, port {:?}, in the northbound database at {}",
                ovn.gateway_router,
                ovn.external_port(),
                ovn.nb_socket.display()
            );
            for family in &config.offer.families {
                println!(
                    "  the port has the bridge's MAC and {}; {} routed via {} with a static MAC binding",
                    family.underlay_ip, family.masquerade.subnet, family.masquerade.dummy_next_hop
                );
            }
        }
        None => println!("ovn check: off (no [ovn] section)"),
    }
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let mut daemon = Daemon::new()?;
    let Some(config) = reload::load_once_northbound_answers(&path, &mut daemon).await? else {
        return Ok(());
    };
    let agent = DpuAgent::bind(&config)
        .await?
        .with_heartbeat(daemon.watchdog.heartbeat("grpc server"));
    let handle = agent.handle();
    tracing::info!(
        listen = %agent.local_addr().context("listener address")?,
        revision = config.offer.revision,
        authorised_host = %config.authorised_host,
        "dpu-agent serving"
    );
    let shutdown = daemon.shutdown.clone();
    let datapath =
        dpu_agent::start_datapath(handle.clone(), &config, &daemon.watchdog, shutdown.clone());
    daemon
        .serve_metrics(
            config.raw.metrics_listen,
            dpu_agent::metrics::registry(handle.clone()),
        )
        .await?;
    let lookup = config.raw.ovnkube_lookup();
    if lookup.process || lookup.file.is_some() {
        tokio::spawn(dpu_agent::ovnkube_follow::follow_ovnkube(
            lookup,
            path.clone(),
            handle.clone(),
            shutdown.clone(),
        ));
    }
    let serving = tokio::spawn(agent.serve(shutdown));
    daemon
        .run_until_stopped(|| {
            // Off the signal loop: the load may look for ovnkube-node and
            // read OVN's northbound database (2 s each at most).
            let (path, handle) = (path.clone(), handle.clone());
            tokio::task::spawn_blocking(move || reload::reload(&path, &handle, None));
        })
        .await;
    serving.await.context("server task")??;
    for task in datapath {
        // The flows stay on the bridge: restarts are hitless.
        task.await.context("datapath task")?;
    }
    Ok(())
}
