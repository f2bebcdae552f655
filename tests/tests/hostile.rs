//! Hostile strangers against the real dpu-agent binary, run with the
//! systemd default file descriptor limit (1024): a flood of TCP connections
//! that never finish a handshake must not lock the authorised host out or
//! fill the log.

use noverlay_tests::{
    e2e::Binaries,
    harness::{self, Certs, DPU_SAN, DpuOptions},
};
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

const FLOOD: usize = 1500;

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

#[test]
#[ignore = "opens 1,500 connections: needs prlimit and a hard RLIMIT_NOFILE of at least 2048; run with --include-ignored (CI does)"]
fn a_handshake_flood_leaves_the_authorised_host_served() -> anyhow::Result<()> {
    let limit = raise_own_fd_limit()?;
    anyhow::ensure!(
        limit >= 2048,
        "the hard descriptor limit is {limit}; the flood needs 2048"
    );
    harness::init();
    let bins = Binaries::built()?;
    let certs = Certs::new()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let options = DpuOptions {
        listen: addr,
        ..DpuOptions::default()
    };
    harness::dpu_config(certs.dir.path(), &options, &certs.dpu)?;
    let log_path = certs.dir.path().join("dpu-agent.log");
    let mut agent = Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg("--")
        .arg(&bins.dpu_agent)
        .args(["run", "--config"])
        .arg(certs.dir.path().join("dpu-agent.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let result = (|| -> anyhow::Result<()> {
        noverlay_test_support::eventually_blocking(
            "dpu-agent listening",
            Duration::from_secs(10),
            || TcpStream::connect(addr).is_ok(),
        )
        .map_err(anyhow::Error::msg)?;
        // The flood: connections that never send a byte, all kept open.
        let mut flood = Vec::new();
        let started = std::time::Instant::now();
        for _ in 0..FLOOD {
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                flood.push(stream);
            }
        }
        anyhow::ensure!(
            flood.len() > 1024,
            "only {} flood connections opened",
            flood.len()
        );
        // The authorised host still gets answers while the flood is held.
        let runtime = tokio::runtime::Runtime::new()?;
        let status = runtime.block_on(async {
            let mut client = tokio::time::timeout(
                Duration::from_secs(10),
                host_agent::client::connect(
                    &addr.to_string(),
                    &noverlay_proto::tls::PeerIdentity::parse(DPU_SAN)?,
                    noverlay_proto::tls::client_config(&certs.host)?,
                ),
            )
            .await??;
            let status = tokio::time::timeout(
                Duration::from_secs(10),
                client.get_status(noverlay_proto::pb::GetStatusRequest {}),
            )
            .await??;
            anyhow::Ok(status.into_inner())
        })?;
        anyhow::ensure!(status.contract.is_some(), "no contract in {status:?}");
        println!(
            "authorised GetStatus answered {:?} after the flood started",
            started.elapsed()
        );
        drop(flood);
        anyhow::ensure!(
            agent.try_wait()?.is_none(),
            "dpu-agent died under the flood"
        );
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let log = std::fs::read_to_string(&log_path)?;
    result.map_err(|e| anyhow::anyhow!("{e}\n--- dpu-agent log ---\n{log}"))?;
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
