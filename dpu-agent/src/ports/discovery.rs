//! Port discovery: follows OVSDB and publishes the bridge's port map to the
//! agent's state, where the flow programmer picks it up.

use super::{DiscoveryError, PortNames, SwitchDb};
use crate::state::{AgentHandle, Source};
use noverlay_ovsdb::{Monitor, RECONNECT_DELAY};
use noverlay_runtime::logging::Repeats;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Follows OVSDB and publishes the port map. Keeps the last good map (and
/// so the installed flows) when a port vanishes, and says why in status.
pub async fn run_port_discovery(
    handle: AgentHandle,
    socket: PathBuf,
    names: PortNames,
    shutdown: CancellationToken,
) {
    // The same failure every half second is logged once a minute.
    let mut failing = Repeats::default();
    loop {
        let session = follow(&handle, &socket, &names, &mut failing);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(e) = session => {
                let e = match e {
                    DiscoveryError::Ovsdb(noverlay_ovsdb::Error::Connect(reason)) => format!(
                        "cannot connect to OVSDB at {reason} (config [bridge] ovsdb_socket); is ovsdb-server running, and is this its socket?"
                    ),
                    other => other.to_string(),
                };
                if let Some(suppressed) = failing.due(&e) {
                    tracing::warn!(error = %e, suppressed, "OVSDB monitor lost; retrying");
                }
                handle.set_source(Source::Ovsdb, Err(e));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

/// One monitor session: publishes the port map after every change, until
/// the connection fails.
async fn follow(
    handle: &AgentHandle,
    socket: &std::path::Path,
    names: &PortNames,
    failing: &mut Repeats,
) -> Result<(), DiscoveryError> {
    let mut monitor = Monitor::start(socket, &super::monitor_request()).await?;
    loop {
        let replica = SwitchDb(monitor.replica());
        // The uplink as soon as it is known: the guard goes on before the flows.
        if let Ok(uplink) = replica.uplink(names) {
            handle.set_uplink(uplink);
        }
        let found = replica
            .resolve(names)
            .and_then(|found| Ok((replica.ports_of(&names.bridge, &found)?, found)));
        match found {
            Ok((map, found)) => {
                for (key, named, value) in [
                    ("bridge.patch_port", &names.patch, found.patch),
                    ("bridge.uplink", &names.uplink, found.uplink),
                    (
                        "bridge.host_representor",
                        &names.host_representor,
                        found.host_representor,
                    ),
                ] {
                    if named.is_none() {
                        handle.set_found_in_ovsdb(key, value);
                    }
                }
                if handle.ports() != Some(map) {
                    tracing::info!(?map, "port map from OVSDB");
                    handle.set_ports(Some(map));
                }
                handle.set_source(Source::Ovsdb, Ok(()));
            }
            Err(e) => {
                let e = e.to_string();
                if let Some(suppressed) = failing.due(&e) {
                    tracing::warn!(error = %e, suppressed, "port map incomplete; keeping the last good one");
                }
                handle.set_source(Source::Ovsdb, Err(e));
            }
        }
        monitor.changed().await?;
    }
}
