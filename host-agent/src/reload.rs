//! SIGHUP in a running host-agent: the TLS files are read again (certificate
//! rotation, used from the next connection); a reload that changes anything
//! else is refused whole, with what changed named.

use crate::{
    agent::TlsReloader,
    config::{ConfigError, HostConfig, ValidHostConfig},
};
use noverlay_proto::contract::Masquerade;
use std::path::PathBuf;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{0} changed: only the TLS files reload at runtime; restart host-agent to apply the rest (nothing of this config was applied)"
    )]
    NeedsRestart(String),
    #[error(transparent)]
    Tls(#[from] noverlay_proto::tls::TlsError),
}

/// What a reload is compared with: the config the agent runs.
pub struct RunningConfig {
    path: PathBuf,
    raw: HostConfig,
    masquerades: Vec<Masquerade>,
}

impl RunningConfig {
    pub fn new(config: &ValidHostConfig) -> Self {
        RunningConfig {
            path: config.path.clone(),
            raw: config.raw.clone(),
            masquerades: config.masquerades.clone(),
        }
    }

    /// Certificate rotation: a failed reload keeps what works, and a reload
    /// that changes anything else (a masquerade subnet ovnkube-node now
    /// resolves otherwise included) is refused whole.
    pub fn reload(&self, reloader: &TlsReloader) -> Result<(), ReloadError> {
        let next = HostConfig::load(&self.path)?;
        let mut changed = self.raw.changes_needing_restart(&next.raw);
        // Set by hand, a change is named as ipv4/ipv6; left to ovnkube-node,
        // only the resolved subnets can tell.
        if next.masquerades != self.masquerades && changed.is_empty() {
            changed.push("the masquerade subnets (as ovnkube-node resolves them)");
        }
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(changed.join(", ")));
        }
        reloader.reload(&next.raw.tls)?;
        Ok(())
    }
}
