//! systemd service integration without a dependency: readiness and watchdog
//! notifications (sd_notify protocol: one datagram per state to the socket
//! named by `$NOTIFY_SOCKET`, `@` meaning the abstract namespace).

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

/// Sends `state` (e.g. "READY=1") to systemd. Ok(false) when not running
/// under systemd (no `$NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket`.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let address = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// How often to send "WATCHDOG=1": half of `$WATCHDOG_USEC`, when the
/// watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Tells systemd the service is ready and, if the watchdog is on, keeps
/// pinging it from the async runtime: a stuck runtime stops the pings and
/// systemd restarts the service.
pub fn ready_with_watchdog() {
    match notify("READY=1") {
        Ok(true) => tracing::info!("systemd notified: ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "systemd notification failed"),
    }
    if let Some(interval) = watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = notify("WATCHDOG=1") {
                    tracing::warn!(error = %e, "systemd watchdog ping failed");
                }
            }
        });
    }
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    let _ = notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.to_str().expect("utf-8"), "READY=1").expect("send");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
