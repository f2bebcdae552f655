//! What both agents share at run time, apart from the contract itself:
//!
//! - [`dir_watch`]: hearing at once that a directory's files changed (inotify).
//! - [`files`]: small files other programs write, read without letting them hold us.
//! - [`logging`]: human or JSON log lines on stderr.
//! - [`metrics`]: the opt-in Prometheus endpoint (prometheus-client over hyper).
//! - [`systemd`]: readiness, stopping and a watchdog fed by the agent's own loops.
//! - [`signals`]: SIGTERM/SIGINT stop the agent, SIGHUP asks it to reload.
//!
//! [`start`] and [`Daemon::run_until_stopped`] are the start-up and the main
//! loop that both `main.rs` files would otherwise each repeat.

pub mod dir_watch;
pub mod files;
pub mod logging;
pub mod man;
pub mod metrics;
pub mod signals;
pub mod systemd;

use std::{
    net::SocketAddr,
    sync::{Mutex, MutexGuard},
};

/// Locks `mutex` even if a holder panicked: the agents keep plain data
/// behind their locks (statuses, timestamps), still usable after a panic
/// elsewhere, and serving on beats stopping.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who a connection comes from, for per-source bounds: an IPv4 address
/// (an IPv4-mapped IPv6 one counts as it), or an IPv6 /64, which one host
/// may hold whole and pick a fresh address from for every connection.
pub fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// The git commit the agents were built from ("unknown" outside a git
/// checkout; "-modified" when the checkout had changes).
pub const GIT_COMMIT: &str = env!("NOVERLAY_GIT_COMMIT");

/// Seconds since the Unix epoch (0 if the clock is before it), for the
/// `*_unix` times both agents report.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What `--version` prints after the program name: the package version, the
/// git commit and the agent-to-agent protocol version.
pub fn version(package: &str, protocol: u32) -> String {
    format!("{package} (commit {GIT_COMMIT}, protocol {protocol})")
}
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("metrics_listen {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the {0} signal handler: {1}")]
    Signal(&'static str, std::io::Error),
}

/// Process-wide set-up every agent command needs first: the log subscriber
/// and the rustls crypto provider (explicit providers are used everywhere;
/// this only guards against a dependency asking for the process default).
pub fn start(format: logging::LogFormat) {
    logging::init(format);
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// For the one-shot commands (check-config, status, cleanup, generate-man):
/// a closed standard output (`| head`) ends the process quietly, as it does
/// a C tool, where `println!` would panic. The daemon keeps Rust's default
/// (SIGPIPE ignored): a peer closing a socket must not kill it.
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: sets the default disposition of one signal; no handler of
    // ours runs, nothing else is touched.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A running agent's process-level plumbing: its shutdown token and its
/// watchdog, from which each working loop takes a heartbeat.
pub struct Daemon {
    pub shutdown: CancellationToken,
    pub watchdog: systemd::Watchdog,
    signals: signals::Signals,
}

impl Daemon {
    /// Installs the signal handlers (before anything is started, so that an
    /// early SIGTERM is not lost) and reads the watchdog settings.
    pub fn new() -> Result<Self, RuntimeError> {
        Ok(Daemon {
            shutdown: CancellationToken::new(),
            watchdog: systemd::Watchdog::from_env(),
            signals: signals::Signals::install()?,
        })
    }

    /// Serves `registry` on `addr` (when metrics are on) until shutdown.
    pub async fn serve_metrics(
        &self,
        addr: Option<SocketAddr>,
        registry: prometheus_client::registry::Registry,
    ) -> Result<(), RuntimeError> {
        let Some(addr) = addr else { return Ok(()) };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::MetricsBind { addr, source })?;
        tokio::spawn(metrics::serve(
            listener,
            std::sync::Arc::new(registry),
            self.shutdown.clone(),
        ));
        tracing::info!(%addr, "metrics at /metrics");
        Ok(())
    }

    /// Sleeps `pause` unless SIGTERM or SIGINT comes first (then true): for
    /// waiting on a dependency before serving. A SIGHUP only ends the pause.
    pub async fn pause_unless_stopped(&mut self, pause: std::time::Duration) -> bool {
        tokio::select! {
            signal = self.signals.next() => signal == signals::Signal::Stop,
            _ = tokio::time::sleep(pause) => false,
        }
    }

    /// Tells systemd the agent is ready, runs the watchdog and calls
    /// `reload` on every SIGHUP until SIGTERM or SIGINT; then says STOPPING
    /// and cancels the shutdown token.
    pub async fn run_until_stopped(mut self, mut reload: impl FnMut()) {
        systemd::ready();
        let watchdog = tokio::spawn(self.watchdog.clone().run(self.shutdown.clone()));
        while let signals::Signal::Reload = self.signals.next().await {
            reload();
        }
        tracing::info!("shutting down");
        systemd::stopping();
        self.shutdown.cancel();
        let _ = watchdog.await;
    }
}

/// An error and its causes on one line, joined by ": ", skipping a cause
/// whose text its parent already carries (many errors print their source).
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    // Whatever a cause carried, the operator gets a single line.
    line.replace('\n', " ")
}

#[cfg(test)]
mod one_line_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting the agent")]
    struct Start(#[source] Read);

    #[test]
    fn causes_are_joined_once_on_one_line() {
        let error = Start(Read {
            path: "/etc/x.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not\nfound"),
        });
        assert_eq!(
            super::one_line(&error),
            "starting the agent: cannot read config /etc/x.toml: not found"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::source_key;
    use std::net::IpAddr;

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let key = |text: &str| source_key(text.parse::<IpAddr>().expect("ip")).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
