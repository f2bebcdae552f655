//! The dpu-agent binary: CLI, signals, and the agent's lifetime.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dpu_agent::{config::DpuConfig, flows, server::DpuAgent, state::Source};
use noverlay_ovnkube_facts::process::{Inputs, Lookup};
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
    let Some(config) = load_once_northbound_answers(&path, &mut daemon).await? else {
        return Ok(());
    };
    *RUNNING_OVNKUBE.lock().unwrap_or_else(|p| p.into_inner()) = config.ovnkube_process;
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
        tokio::spawn(follow_ovnkube(
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
            tokio::task::spawn_blocking(move || reload(&path, &handle, None));
        })
        .await;
    serving.await.context("server task")??;
    for task in datapath {
        // The flows stay on the bridge: restarts are hitless.
        task.await.context("datapath task")?;
    }
    Ok(())
}

/// How often a config whose underlay IP is left to OVN's northbound
/// database is retried while that database cannot be read.
const NORTHBOUND_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Loads the config; while only OVN's northbound database is missing (it
/// may start after us), says so once a minute and retries. None: stopped
/// while waiting.
async fn load_once_northbound_answers(
    path: &std::path::Path,
    daemon: &mut Daemon,
) -> anyhow::Result<Option<dpu_agent::config::ValidConfig>> {
    let mut waiting = noverlay_runtime::logging::Repeats::default();
    loop {
        let owned = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || {
            DpuConfig::load(&owned, &dpu_agent::ovn::Northbound)
        })
        .await
        .context("loading the config")?;
        match loaded {
            Err(dpu_agent::config::ConfigError::Northbound(e)) => {
                if let Some(suppressed) = waiting.due(&e) {
                    tracing::warn!(error = %e, suppressed, "waiting for OVN's northbound database for the facts left to it");
                }
                noverlay_runtime::systemd::status(
                    "waiting for OVN's northbound database for the facts left to it",
                );
            }
            loaded => return Ok(Some(loaded?)),
        }
        if daemon.pause_unless_stopped(NORTHBOUND_RETRY).await {
            return Ok(None);
        }
    }
}

/// Reloads the config (and ovnkube's facts); a failed reload keeps the
/// running state. Whether it was applied. With `settled`, the ovnkube
/// inputs found still: a reload whose read saw them change meanwhile (a
/// writer came back) is not applied.
fn reload(
    path: &std::path::Path,
    handle: &dpu_agent::state::AgentHandle,
    settled: Option<(&Lookup, &Inputs)>,
) -> bool {
    // One at a time (SIGHUP and the ovnkube follower both reload); holds
    // the ovnkube-node whose command line the running config read.
    let mut running = RUNNING_OVNKUBE.lock().unwrap_or_else(|p| p.into_inner());
    let loaded = DpuConfig::load(path, &dpu_agent::ovn::Northbound)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            // ovnkube-node restarting: the file alone would put defaults
            // where only its flags spoke.
            if let (Some(pid), None, true) =
                (*running, c.ovnkube_process, c.raw.ovnkube_lookup().process)
            {
                anyhow::bail!(
                    "ovnkube-node (pid {pid}) is gone: its facts stay in force until it runs again (reload then, or set [ovnkube] process = false)"
                );
            }
            if let Some((lookup, settled)) = settled
                && lookup.inputs(noverlay_ovnkube_facts::process::DEADLINE).ok().as_ref()
                    != Some(settled)
            {
                anyhow::bail!(
                    "ovnkube's configuration changed while it was read; read again once it is still"
                );
            }
            Ok(c)
        })
        .inspect_err(|e| {
            handle.set_source(Source::Reload, Err(e.to_string()));
        });
    match loaded.and_then(|c| {
        let revision = handle.reload(&c)?;
        *running = c.ovnkube_process;
        Ok(revision)
    }) {
        Ok(revision) => {
            tracing::info!(revision, "config reloaded");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload failed; keeping the running config");
            false
        }
    }
}

/// The ovnkube-node whose command line gave the running config's facts.
static RUNNING_OVNKUBE: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);

/// How often ovnkube's process and file are looked at for changes (its
/// file's directory is watched as well: a change there is seen at once).
const OVNKUBE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A changed file is read again after this, and taken only when both reads
/// agree (same time, size and content): a writer caught mid-file is not
/// applied unless it pauses longer than this.
const OVNKUBE_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
/// Reads of a changing file before giving up until the next poll or event.
const OVNKUBE_SETTLE_READS: u32 = 20;

/// Reloads whenever what ovnkube's facts are read from changes (the
/// ovnkube-node process: gone, new pid, new flags; its file: written,
/// replaced, created after we started), as SIGHUP does: the cluster's facts
/// follow ovnkube's without a restart. The file's directory is watched
/// (inotify) and everything is polled every 2 s besides (a process has no
/// such event). A change is taken once it is still ([`OVNKUBE_SETTLE`]).
/// ovnkube-node gone (restarting) changes nothing until one runs again. A
/// reload that fails is tried again while the change stands (after 2 s,
/// doubling to a minute). The lookups and the reload run off the
/// runtime's workers.
async fn follow_ovnkube(
    lookup: Lookup,
    config: PathBuf,
    handle: dpu_agent::state::AgentHandle,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let read = |lookup: &Lookup| {
        let lookup = lookup.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                lookup
                    .inputs(noverlay_ovnkube_facts::process::DEADLINE)
                    .ok()
            })
            .await
            .ok()
            .flatten()
        }
    };
    let mut watch = match noverlay_runtime::dir_watch::DirWatch::new() {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch ovnkube's file (inotify); looking every 2 s");
            None
        }
    };
    let mut applied = read(&lookup).await;
    // What the last read found (the directory watched is its file's).
    let mut latest = applied.clone();
    let mut said_gone = false;
    // After a failed reload of the same inputs: not before then.
    let mut failed: Option<(Option<Inputs>, tokio::time::Instant, u32)> = None;
    loop {
        if let Some(watch) = &mut watch {
            follow_directory(watch, latest.as_ref());
        }
        let changed = async {
            match &mut watch {
                Some(watch) => watch.changed().await,
                None => std::future::pending().await,
            }
        };
        let heard = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(OVNKUBE_POLL) => Ok(()),
            heard = changed => heard,
        };
        if let Err(e) = heard {
            tracing::warn!(error = %e, "watching ovnkube's file failed; looking every 2 s");
            watch = None;
        }
        let mut now = read(&lookup).await;
        latest = now.clone();
        if now == applied {
            failed = None;
            continue;
        }
        // Taken only once two reads a moment apart agree; a file that will
        // not keep still is looked at again at the next poll or event.
        let mut still = false;
        for _ in 0..OVNKUBE_SETTLE_READS {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(OVNKUBE_SETTLE) => {}
            }
            let again = read(&lookup).await;
            latest = again.clone();
            if again == now {
                still = true;
                break;
            }
            now = again;
        }
        if !still {
            tracing::warn!(
                "ovnkube's configuration keeps changing (2 s of reads 100 ms apart never agreed); taken once it is still"
            );
            continue;
        }
        if now == applied {
            continue;
        }
        // ovnkube-node restarting: its facts stay until the next one runs
        // (the file alone would give defaults where only its flags spoke).
        let gone = |inputs: &Option<Inputs>| inputs.as_ref().is_some_and(|i| i.process.is_none());
        let had_process = applied.as_ref().is_some_and(|i| i.process.is_some());
        if had_process && gone(&now) {
            if !said_gone {
                tracing::info!("ovnkube-node is gone; its facts stay in force until it runs again");
                said_gone = true;
            }
            continue;
        }
        said_gone = false;
        let tries = match &failed {
            Some((inputs, at, tries)) if *inputs == now => {
                if tokio::time::Instant::now() < *at {
                    continue;
                }
                *tries
            }
            _ => 0,
        };
        tracing::info!(
            pid = now.as_ref().and_then(|i| i.process.as_ref()).map(|(pid, _)| *pid),
            file = ?now.as_ref().and_then(|i| i.file.as_ref()).map(|(file, _)| file),
            "ovnkube's configuration changed; reloading"
        );
        let (path, reload_handle, reload_lookup, settled) =
            (config.clone(), handle.clone(), lookup.clone(), now.clone());
        let reloaded = tokio::task::spawn_blocking(move || {
            reload(
                &path,
                &reload_handle,
                settled.as_ref().map(|s| (&reload_lookup, s)),
            )
        })
        .await
        .unwrap_or(false);
        if reloaded {
            applied = now;
            failed = None;
        } else {
            let wait = (OVNKUBE_POLL * 2u32.saturating_pow(tries.min(5)))
                .min(std::time::Duration::from_secs(60));
            failed = Some((now, tokio::time::Instant::now() + wait, tries + 1));
        }
    }
}

/// Watches the directory of ovnkube's file as `inputs` reach it (a file
/// that is not there yet: its directory, if that is), for the file and a
/// ConfigMap's `..data` swap. A directory that cannot be watched is left to
/// the poll.
fn follow_directory(watch: &mut noverlay_runtime::dir_watch::DirWatch, inputs: Option<&Inputs>) {
    let seen_at = inputs.and_then(|i| i.seen_at.as_deref());
    let dir = seen_at.and_then(std::path::Path::parent);
    if watch.watching() == dir {
        return;
    }
    let names: Vec<&std::ffi::OsStr> = seen_at
        .and_then(std::path::Path::file_name)
        .into_iter()
        .chain([std::ffi::OsStr::new("..data")])
        .collect();
    if let Err(e) = watch.watch(dir, &names) {
        tracing::debug!(dir = ?dir, error = %e, "cannot watch ovnkube's file's directory; looking every 2 s");
    }
}
