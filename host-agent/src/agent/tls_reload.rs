//! Rotated TLS credentials (SIGHUP) for the next connection to the DPU.

use crate::status::HostStatus;
use noverlay_proto::tls::{self, TlsError};
use rustls::ClientConfig;
use std::sync::Arc;
use tokio::sync::watch;

/// Swaps the host's TLS credentials at runtime.
#[derive(Clone)]
pub struct TlsReloader {
    pub(super) configs: watch::Sender<Arc<ClientConfig>>,
    /// Where the new certificate's expiry is shown.
    pub(super) status: watch::Sender<HostStatus>,
}

impl TlsReloader {
    /// Loads the files; on any error the credentials in use stay.
    pub fn reload(&self, files: &tls::TlsFiles) -> Result<(), TlsError> {
        let config = tls::client_config(files)?;
        let expiry_unix = tls::certificate_expiry_unix(&files.cert)?;
        self.configs.send_replace(config);
        self.status
            .send_modify(|s| s.certificate_expiry_unix = expiry_unix);
        Ok(())
    }
}
