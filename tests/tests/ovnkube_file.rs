//! The real dpu-agent (no datapath) following ovnkube's file as it changes
//! under it: a change is taken once the file is still, never mid-write, and
//! at once rather than at the next poll.

use noverlay_tests::{e2e::Binaries, harness};
use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn ovnkube_conf(subnets: &[&str]) -> String {
    let subnets: Vec<String> = subnets.iter().map(|s| format!("{s}/24")).collect();
    format!(
        "[default]\nmtu=1400\ncluster-subnets=\"{}\"\n\n[gateway]\nmode=shared\n",
        subnets.join(",")
    )
}

/// A writer that takes 3 s over ovnkube's file (a slow disk, a tool that
/// writes line by line), longer than the agent's 2 s poll: the agent reloads
/// once, with the whole file, and not with any of the halves it could have
/// caught; the reload follows the last write within a moment.
#[test]
fn a_file_caught_mid_write_is_never_applied() -> anyhow::Result<()> {
    harness::init();
    let bins = Binaries::built()?;
    let certs = harness::Certs::new()?;
    let dir = certs.dir.path();
    let conf = dir.join("ovn_k8s.conf");
    std::fs::write(&conf, ovnkube_conf(&["198.18.128.0/17"]))?;
    let config = harness::dpu_config_left_to_ovnkube(&certs.dpu, &conf.to_string_lossy())
        + "process = false\n";
    let config_path = dir.join("dpu-agent.toml");
    std::fs::write(&config_path, config)?;
    let log_path = dir.join("dpu-agent.log");
    let mut agent = Command::new(&bins.dpu_agent)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let result = (|| -> anyhow::Result<Duration> {
        noverlay_test_support::eventually_blocking(
            "dpu-agent serving",
            Duration::from_secs(10),
            || log().contains("dpu-agent serving"),
        )
        .map_err(anyhow::Error::msg)?;
        // 100 chunks, 30 ms apart, into the file in place.
        let whole = ovnkube_conf(&["198.18.128.0/17", "198.19.0.0/16"]);
        let bytes = whole.as_bytes();
        let mut file = std::fs::File::create(&conf)?;
        for chunk in bytes.chunks(bytes.len().div_ceil(100)) {
            file.write_all(chunk)?;
            file.flush()?;
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(file);
        let written = Instant::now();
        noverlay_test_support::eventually_blocking("the reload", Duration::from_secs(10), || {
            log().contains("config reloaded")
        })
        .map_err(anyhow::Error::msg)?;
        let took = written.elapsed();
        // Two polls more: nothing else happens.
        std::thread::sleep(Duration::from_secs(5));
        Ok(took)
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let log = log();
    let took = result.map_err(|e| anyhow::anyhow!("{e}\n--- dpu-agent log ---\n{log}"))?;
    println!("the last write to ovnkube's file -> reloaded: {took:?}");
    let reloads = log.matches("config reloaded").count();
    let attempts = log
        .matches("ovnkube's configuration changed; reloading")
        .count();
    assert_eq!(
        (attempts, reloads),
        (1, 1),
        "a reload for each state the file was caught in:\n{log}"
    );
    assert!(!log.contains("config reload failed"), "{log}");
    Ok(())
}
