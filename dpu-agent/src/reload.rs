//! Loading and reloading the config of a running dpu-agent: the first load
//! waits for OVN's northbound database when facts are left to it; a reload
//! (SIGHUP, or ovnkube's facts changing) replaces the running config whole
//! or keeps it, never half.

use crate::{
    config::{ConfigError, DpuConfig, ValidConfig},
    state::{AgentHandle, ReloadError, Source},
};
use noverlay_ovnkube_facts::process::{DEADLINE, Inputs, Lookup};
use noverlay_runtime::Daemon;
use std::{path::Path, sync::Mutex, time::Duration};

/// How often a config whose underlay IP is left to OVN's northbound
/// database is retried while that database cannot be read.
const NORTHBOUND_RETRY: Duration = Duration::from_secs(1);

/// The ovnkube-node whose command line gave the running config's facts.
/// Its lock also keeps reloads one at a time (SIGHUP and the ovnkube
/// follower both reload).
static RUNNING_OVNKUBE: Mutex<Option<u32>> = Mutex::new(None);

/// Why a load or a reload left the running state as it was.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "ovnkube-node (pid {0}) is gone: its facts stay in force until it runs again (reload then, or set [ovnkube] process = false)"
    )]
    OvnkubeGone(u32),
    #[error("ovnkube's configuration changed while it was read; read again once it is still")]
    Unsettled,
    #[error(transparent)]
    Refused(#[from] ReloadError),
    #[error("the config load stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Loads the config; while only OVN's northbound database is missing (it
/// may start after us), says so once a minute and retries. None: stopped
/// while waiting. Records the ovnkube-node it read.
pub async fn load_once_northbound_answers(
    path: &Path,
    daemon: &mut Daemon,
) -> Result<Option<ValidConfig>, LoadError> {
    let mut waiting = noverlay_runtime::logging::Repeats::default();
    loop {
        let owned = path.to_path_buf();
        let loaded =
            tokio::task::spawn_blocking(move || DpuConfig::load(&owned, &crate::ovn::Northbound))
                .await?;
        match loaded {
            Err(ConfigError::Northbound(e)) => {
                if let Some(suppressed) = waiting.due(&e) {
                    tracing::warn!(error = %e, suppressed, "waiting for OVN's northbound database for the facts left to it");
                }
                noverlay_runtime::systemd::status(
                    "waiting for OVN's northbound database for the facts left to it",
                );
            }
            loaded => {
                let config = loaded?;
                *RUNNING_OVNKUBE.lock().unwrap_or_else(|p| p.into_inner()) = config.ovnkube_process;
                return Ok(Some(config));
            }
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
pub fn reload(path: &Path, handle: &AgentHandle, settled: Option<(&Lookup, &Inputs)>) -> bool {
    let mut running = RUNNING_OVNKUBE.lock().unwrap_or_else(|p| p.into_inner());
    let loaded = load_for_reload(path, *running, settled).inspect_err(|e| {
        handle.set_source(Source::Reload, Err(e.to_string()));
    });
    match loaded.and_then(|config| {
        let revision = handle.reload(&config)?;
        *running = config.ovnkube_process;
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

fn load_for_reload(
    path: &Path,
    running: Option<u32>,
    settled: Option<(&Lookup, &Inputs)>,
) -> Result<ValidConfig, LoadError> {
    let config = DpuConfig::load(path, &crate::ovn::Northbound)?;
    // ovnkube-node restarting: the file alone would put defaults where only
    // its flags spoke.
    if let (Some(pid), None, true) = (
        running,
        config.ovnkube_process,
        config.raw.ovnkube_lookup().process,
    ) {
        return Err(LoadError::OvnkubeGone(pid));
    }
    if let Some((lookup, settled)) = settled
        && lookup.inputs(DEADLINE).ok().as_ref() != Some(settled)
    {
        return Err(LoadError::Unsettled);
    }
    Ok(config)
}
