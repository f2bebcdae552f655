//! Following ovnkube's facts in a running dpu-agent: its process (gone,
//! new pid, new flags) and its file (written, replaced, created after we
//! started) are looked at, and a change is reloaded as SIGHUP would.

use crate::state::AgentHandle;
use noverlay_ovnkube_facts::process::{Inputs, Lookup};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

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
pub async fn follow_ovnkube(
    lookup: Lookup,
    config: PathBuf,
    handle: AgentHandle,
    shutdown: CancellationToken,
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
            crate::reload::reload(
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
