//! Hostile strangers against the real dpu-agent binary, run with the
//! systemd default file descriptor limit (1024): a flood of TCP connections
//! that never finish a handshake must not lock the authorised host out or
//! fill the log.

use noverlay_tests::{
    e2e::Binaries,
    harness::{self, Certs, DPU_SAN, DpuOptions},
};
use noverlay_tls_gate::handshakes::{MAX_PARTIAL, MAX_PENDING, MAX_SILENT};
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

const FLOOD: usize = 1500;
/// Threads opening the held flood's connections.
const FLOODERS: usize = 4;

/// Raises this process's own descriptor limit to its hard limit, so that
/// the test itself can hold the flood.
fn raise_own_fd_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0,
            "getrlimit"
        );
        limit.rlim_cur = limit.rlim_max;
        anyhow::ensure!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0,
            "setrlimit"
        );
    }
    Ok(limit.rlim_cur)
}

/// dpu-agent started under `prlimit --nofile=<fd_limit>` on a loopback
/// port, listening.
struct LimitedAgent {
    addr: SocketAddr,
    certs: Certs,
    pid: u32,
}

/// Runs `body` against a dpu-agent held to `fd_limit` descriptors, then
/// stops it; returns what `body` returned and the agent's log (in the
/// error too, when `body` or the agent failed).
fn with_limited_agent<T>(
    fd_limit: u64,
    body: impl FnOnce(&LimitedAgent) -> anyhow::Result<T>,
) -> anyhow::Result<(T, String)> {
    with_agent(fd_limit, String::new(), body)
}

/// As [`with_limited_agent`], the config with `ovn` as its `[ovn]` section.
fn with_agent<T>(
    fd_limit: u64,
    ovn: String,
    body: impl FnOnce(&LimitedAgent) -> anyhow::Result<T>,
) -> anyhow::Result<(T, String)> {
    // One flood at a time: two at once on a small machine measure the
    // machine, not the agent.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    harness::init();
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let options = DpuOptions {
        listen: addr,
        ovn,
        ..DpuOptions::default()
    };
    harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?;
    let log_path = certs.dir.path().join("dpu-agent.log");
    let mut process = Command::new("prlimit")
        .arg(format!("--nofile={fd_limit}:{fd_limit}"))
        .arg("--")
        .arg(&bins.dpu_agent)
        .args(["run", "--config"])
        .arg(certs.dir.path().join("dpu-agent.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let agent = LimitedAgent {
        addr,
        certs,
        pid: process.id(),
    };
    let result = noverlay_test_support::eventually_blocking(
        "dpu-agent listening",
        Duration::from_secs(10),
        || TcpStream::connect(addr).is_ok(),
    )
    .map_err(anyhow::Error::msg)
    .and_then(|_| body(&agent))
    .and_then(|value| {
        anyhow::ensure!(
            process.try_wait()?.is_none(),
            "dpu-agent died under the flood"
        );
        Ok(value)
    });
    let _ = process.kill();
    let _ = process.wait();
    let log = std::fs::read_to_string(&log_path)?;
    let value = result.map_err(|e| anyhow::anyhow!("{e}\n--- dpu-agent log ---\n{log}"))?;
    Ok((value, log))
}

/// Connections the kernel dropped because a listener's accept queue was
/// full (TcpExtListenOverflows in this network namespace).
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// A fresh mTLS connection as the authorised host and one GetStatus call,
/// all within `deadline`.
async fn authorised_status(
    agent: &LimitedAgent,
    deadline: Duration,
) -> anyhow::Result<noverlay_proto::pb::AgentStatus> {
    tokio::time::timeout(deadline, async {
        let mut client = host_agent::client::connect(
            &agent.addr.to_string(),
            &noverlay_proto::tls::PeerIdentity::parse(DPU_SAN)?,
            noverlay_proto::tls::client_config(&agent.certs.host)?,
        )
        .await?;
        let status = client
            .get_status(noverlay_proto::pb::GetStatusRequest {})
            .await?;
        anyhow::Ok(status.into_inner())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {deadline:?}"))?
}

#[test]
#[ignore = "opens 1,500 connections: needs prlimit and a hard RLIMIT_NOFILE of at least 2048; run with --include-ignored (CI does)"]
fn a_handshake_flood_leaves_the_authorised_host_served() -> anyhow::Result<()> {
    let limit = raise_own_fd_limit()?;
    anyhow::ensure!(
        limit >= 2048,
        "the hard descriptor limit is {limit}; the flood needs 2048"
    );
    let ((), log) = with_limited_agent(1024, |agent| {
        // The flood: connections that never send a byte, all kept open.
        let mut flood = Vec::new();
        let started = std::time::Instant::now();
        for _ in 0..FLOOD {
            if let Ok(stream) = TcpStream::connect_timeout(&agent.addr, Duration::from_secs(1)) {
                flood.push(stream);
            }
        }
        anyhow::ensure!(
            flood.len() > 1024,
            "only {} flood connections opened",
            flood.len()
        );
        // The authorised host still gets answers while the flood is held.
        let status = tokio::runtime::Runtime::new()?
            .block_on(authorised_status(agent, Duration::from_secs(20)))?;
        anyhow::ensure!(status.contract.is_some(), "no contract in {status:?}");
        println!(
            "authorised GetStatus answered {:?} after the flood started",
            started.elapsed()
        );
        drop(flood);
        Ok(())
    })?;
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("refused connection"))
        .count();
    assert!(
        refusal_lines <= 40,
        "{refusal_lines} refusal lines for one flood: the log is not bounded"
    );
    Ok(())
}

/// What one held flood did to the authorised host and to the agent.
struct FloodOutcome {
    calls: usize,
    failed: Vec<String>,
    /// Calls that timed out while the kernel dropped connections because
    /// the agent's accept queue was full (the flood, on the same small
    /// machine, took the CPU the agent needed to accept): the SYN is
    /// retransmitted after 1 s. Not the agent's choice; reported apart.
    kernel_drops: Vec<String>,
    /// The most descriptors the agent held while the flood lasted.
    max_fds: usize,
    log: String,
}

/// What each flood connection sends before it idles.
#[derive(Clone, Copy)]
enum Flood {
    /// Nothing: a silent connection.
    Idle,
    /// The first byte of a TLS record: a ClientHello that never ends.
    PartialHello,
}

/// dpu-agent under `prlimit --nofile=<fd_limit>`: 1,500 TCP connections
/// from the host's own address (loopback: another process on the host),
/// each sending what `flood` says, held for `hold`, the oldest replaced by
/// a new one as fast as the kernel takes them, while the authorised host
/// makes a fresh mTLS connection and a GetStatus call (1 s deadline, as an
/// impatient client) every 200 ms from the flood's first connection on.
fn held_flood(fd_limit: u64, hold: Duration, flood: Flood) -> anyhow::Result<FloodOutcome> {
    let ((calls, failed, kernel_drops, max_fds), log) = with_limited_agent(fd_limit, |agent| {
        let addr = agent.addr;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // FLOOD connections held by FLOODERS threads, each replacing its
        // oldest by a new one as fast as the kernel takes them: the agent
        // is refusing connections the whole time the host is calling.
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    let mut opened = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(mut stream) =
                            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        {
                            if let Flood::PartialHello = flood {
                                // A handshake record's type byte, and no more.
                                let _ = std::io::Write::write_all(&mut stream, &[0x16]);
                            }
                            opened += 1;
                            held.push_back(stream);
                            if held.len() > FLOOD / FLOODERS {
                                held.pop_front();
                            }
                        }
                    }
                    opened
                })
            })
            .collect();
        let fds = || std::fs::read_dir(format!("/proc/{}/fd", agent.pid)).map_or(0, |d| d.count());
        let runtime = tokio::runtime::Runtime::new()?;
        let started = std::time::Instant::now();
        let (mut calls, mut failed, mut kernel_drops, mut max_fds) = (0, Vec::new(), Vec::new(), 0);
        while started.elapsed() < hold {
            calls += 1;
            let at = started.elapsed();
            let overflows = listen_overflows();
            let call = runtime.block_on(authorised_status(agent, Duration::from_secs(1)));
            if let Err(e) = call {
                let timed_out = e.to_string().starts_with("no answer within");
                if timed_out && listen_overflows() > overflows {
                    kernel_drops.push(format!("call at {at:?}: {e}"));
                } else {
                    failed.push(format!("call at {at:?}: {e}"));
                }
            }
            max_fds = max_fds.max(fds());
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut opened = 0;
        for flooder in flooders {
            opened += flooder
                .join()
                .map_err(|_| anyhow::anyhow!("flood thread"))?;
        }
        anyhow::ensure!(opened > 1024, "only {opened} flood connections opened");
        println!("nofile {fd_limit}: {opened} flood connections opened in {hold:?}");
        Ok((calls, failed, kernel_drops, max_fds))
    })?;
    Ok(FloodOutcome {
        calls,
        failed,
        kernel_drops,
        max_fds,
        log,
    })
}

/// A held flood of idle connections at the systemd default descriptor
/// limit (1024) and at the unit's (4096), held 12 s each: every authorised
/// call made during it is answered within its 1 s deadline, the agent's
/// descriptors stay bounded well below the limit, and the log says how
/// fast connections were refused instead of a line per connection.
#[test]
#[ignore = "opens 1,500 connections at two descriptor limits: needs prlimit and a hard RLIMIT_NOFILE of at least 2048; run with --include-ignored (CI does)"]
fn a_held_flood_never_fails_an_authorised_call() -> anyhow::Result<()> {
    let limit = raise_own_fd_limit()?;
    anyhow::ensure!(
        limit >= 2048,
        "the hard descriptor limit is {limit}; the flood needs 2048"
    );
    for fd_limit in [1024, 4096] {
        let outcome = held_flood(fd_limit, Duration::from_secs(12), Flood::Idle)?;
        println!(
            "nofile {fd_limit}: {} authorised calls during the flood, {} failed, {} timed out while the kernel's accept queue overflowed {:?}; the agent held at most {} descriptors",
            outcome.calls,
            outcome.failed.len(),
            outcome.kernel_drops.len(),
            outcome.kernel_drops,
            outcome.max_fds
        );
        assert!(
            outcome.failed.is_empty(),
            "nofile {fd_limit}: {} of {} authorised calls failed: {:#?}\n--- log ---\n{}",
            outcome.failed.len(),
            outcome.calls,
            outcome.failed,
            outcome.log
        );
        // The three stages' bounds (704), the agent's own descriptors, and
        // sockets closed whose tasks have not run yet (a loaded machine
        // runs them late): below the systemd default limit even at 4096.
        let bound = 960;
        assert!(
            MAX_SILENT + MAX_PARTIAL + MAX_PENDING < bound && outcome.max_fds < bound,
            "nofile {fd_limit}: {} descriptors (bound {bound})",
            outcome.max_fds
        );
        let refusal_lines = outcome
            .log
            .lines()
            .filter(|l| l.contains("refused connection"))
            .count();
        assert!(refusal_lines <= 40, "{refusal_lines} refusal lines");
        // The flood as a rate: one summary per 10 s window that had any.
        let rate_lines: Vec<&str> = outcome
            .log
            .lines()
            .filter(|l| l.contains("unauthenticated connections refused in the last window"))
            .collect();
        assert!(
            (1..=2).contains(&rate_lines.len()),
            "nofile {fd_limit}: expected the flood summed up as a rate, got {rate_lines:#?}"
        );
        assert!(
            rate_lines[0].contains("per_second") && rate_lines[0].contains("evicted"),
            "{}",
            rate_lines[0]
        );
    }
    Ok(())
}

/// Another process on the host (same address as host-agent) floods with
/// connections that send the start of a ClientHello and never finish it:
/// they only ever close each other, never the authorised host's handshake
/// (it gets past its ClientHello at once, a stage they never reach).
#[test]
#[ignore = "opens 1,500 connections: needs prlimit and a hard RLIMIT_NOFILE of at least 4096; run with --include-ignored (CI does)"]
fn a_local_flood_of_unfinished_hellos_never_fails_an_authorised_call() -> anyhow::Result<()> {
    let limit = raise_own_fd_limit()?;
    anyhow::ensure!(
        limit >= 4096,
        "the hard descriptor limit is {limit}; the flood needs 4096"
    );
    let outcome = held_flood(4096, Duration::from_secs(8), Flood::PartialHello)?;
    println!(
        "unfinished hellos: {} authorised calls during the flood, {} failed, {} timed out while the kernel's accept queue overflowed; the agent held at most {} descriptors",
        outcome.calls,
        outcome.failed.len(),
        outcome.kernel_drops.len(),
        outcome.max_fds
    );
    assert!(
        outcome.failed.is_empty(),
        "{} of {} authorised calls failed: {:#?}",
        outcome.failed.len(),
        outcome.calls,
        outcome.failed,
    );
    assert!(outcome.max_fds < 960, "{} descriptors", outcome.max_fds);
    Ok(())
}

/// OVN's northbound database accepts and never answers: each load of the
/// config waits its 2 s deadline for it. SIGHUPs in a row (reloads queue
/// up behind each other) never hold the agent's answers: every GetStatus
/// made meanwhile is answered within 500 ms.
#[test]
#[ignore = "runs the agent binary under prlimit; run with --include-ignored (CI does)"]
fn reloads_waiting_on_a_silent_northbound_database_never_hold_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("ovnnb_db.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket)?;
    // Accepts and keeps every connection, silent.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let ovn = format!("\n[ovn]\nnb_socket = {socket:?}\ngateway_router = \"GR_node1\"\n");
    let (late, _) = with_agent(1024, ovn, |agent| {
        let runtime = tokio::runtime::Runtime::new()?;
        for _ in 0..4 {
            let signalled = Command::new("kill")
                .args(["-HUP", &agent.pid.to_string()])
                .status()?;
            anyhow::ensure!(signalled.success(), "kill -HUP");
        }
        let mut late = Vec::new();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            let at = started.elapsed();
            if let Err(e) = runtime.block_on(authorised_status(agent, Duration::from_millis(500))) {
                late.push(format!("call at {at:?}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(late)
    })?;
    assert!(late.is_empty(), "calls not answered in time: {late:#?}");
    Ok(())
}
