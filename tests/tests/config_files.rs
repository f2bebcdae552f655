//! What check-config, start and reload load: the TLS files are checked the
//! way the peer will check them, and files that are not PEM files (a
//! directory, /dev/zero, a FIFO) are refused without being read. Every
//! error names the file.

use dpu_agent::config::DpuConfig;
use host_agent::config::HostConfig;
use noverlay_proto::tls::TlsFiles;
use noverlay_tests::{
    harness::{self, Certs, DpuOptions, HOST_SAN, HostOptions},
    pki::Validity,
};
use std::{ffi::CString, os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

/// Writes a host and a DPU config with `tls` as both identities into `dir`
/// and loads them; returns both errors.
fn load_both(dir: &std::path::Path, tls: &TlsFiles) -> (String, String) {
    let host_path = dir.join("host-agent.toml");
    let options = HostOptions::new("127.0.0.1:50051".parse().expect("addr"));
    std::fs::write(&host_path, harness::host_config_toml(&options, tls)).expect("write");
    let host = HostConfig::load(&host_path)
        .map(drop)
        .map_err(|e| e.to_string());
    let dpu_path = dir.join("dpu-agent.toml");
    std::fs::write(
        &dpu_path,
        harness::dpu_config_toml(&DpuOptions::default(), tls),
    )
    .expect("write");
    let dpu = DpuConfig::load(&dpu_path, &dpu_agent::ovn::Northbound)
        .map(drop)
        .map_err(|e| e.to_string());
    (
        host.err().unwrap_or_default(),
        dpu.err().unwrap_or_default(),
    )
}

#[test]
fn broken_tls_files_are_refused_at_load_naming_the_file() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dir = certs.dir.path().to_path_buf();
    let good = certs.host.clone();
    let with_key = |key: PathBuf| TlsFiles {
        key,
        ..good.clone()
    };
    let world_readable = dir.join("world-readable.key");
    std::fs::copy(&good.key, &world_readable)?;
    std::fs::set_permissions(&world_readable, std::fs::Permissions::from_mode(0o644))?;
    let fifo = dir.join("fifo.pem");
    let fifo_c = CString::new(fifo.to_string_lossy().as_bytes())?;
    // SAFETY: a valid path string.
    anyhow::ensure!(
        unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) } == 0,
        "mkfifo"
    );
    let other = certs.pki.issue("other", HOST_SAN, Validity::Current)?;
    let expired = certs
        .pki
        .issue("expired-own", HOST_SAN, Validity::Expired)?;
    let cases: Vec<(&str, TlsFiles, String)> = vec![
        (
            "missing key",
            with_key(dir.join("missing.key")),
            "missing.key".into(),
        ),
        (
            "key is a directory",
            with_key(dir.clone()),
            "not a regular file".into(),
        ),
        (
            "key is /dev/zero",
            with_key("/dev/zero".into()),
            "not a regular file".into(),
        ),
        (
            "world-readable key",
            with_key(world_readable.clone()),
            "readable by every user".into(),
        ),
        (
            "certificate is a FIFO",
            TlsFiles {
                cert: fifo.clone(),
                ..good.clone()
            },
            "not a regular file".into(),
        ),
        (
            "key of another certificate",
            with_key(other.key.clone()),
            "do not form a usable identity".into(),
        ),
        ("expired own certificate", expired.clone(), "expired".into()),
    ];
    for (case, tls, expected) in cases {
        // A FIFO must not hang the load: bounded by a thread and a timeout.
        let (tx, rx) = std::sync::mpsc::channel();
        let config_dir = tempfile::tempdir()?;
        let config_path = config_dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load_both(&config_path, &tls));
        });
        let (host, dpu) = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow::anyhow!("{case}: loading the config hung"))?;
        for (side, error) in [("host-agent", &host), ("dpu-agent", &dpu)] {
            assert!(
                error.contains(&expected) && error.contains("tls"),
                "{case}, {side}: expected {expected:?} in {error:?}"
            );
        }
    }
    Ok(())
}

/// Loads in a thread of its own; None when it has not returned after 5 s
/// (a FIFO read without care blocks until someone writes to it).
fn within_5s<T: Send + 'static>(load: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load());
    });
    rx.recv_timeout(Duration::from_secs(5)).ok()
}

/// ovnkube's file and both agents' own configs are outside input: a FIFO,
/// a device or a file past the bound named instead is refused at once,
/// naming the file, and never read (on the commit before, the FIFO held
/// the load forever and /dev/zero would have filled memory).
#[test]
fn config_files_that_are_not_regular_files_are_refused_without_waiting() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let dir = certs.dir.path().to_path_buf();
    let fifo = dir.join("ovn_k8s.conf");
    let path = CString::new(fifo.display().to_string())?;
    // SAFETY: a valid NUL-terminated path.
    anyhow::ensure!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) } == 0, "mkfifo");
    let big = dir.join("big.conf");
    std::fs::write(&big, vec![b'#'; 1024 * 1024 + 1])?;
    for ovnkube in [fifo.clone(), PathBuf::from("/dev/zero"), big.clone()] {
        let dpu_path = dir.join("dpu-agent.toml");
        let text = harness::dpu_config_toml(&DpuOptions::default(), &certs.dpu)
            + &format!(
                "\n[ovnkube]\nconfig = {:?}\n",
                ovnkube.display().to_string()
            );
        std::fs::write(&dpu_path, text)?;
        let error =
            within_5s(move || DpuConfig::load(&dpu_path, &dpu_agent::ovn::Northbound).map(drop))
                .ok_or_else(|| {
                    anyhow::anyhow!("loading with ovnkube's file {} hung", ovnkube.display())
                })?
                .expect_err("refused")
                .to_string();
        println!("{error}");
        assert!(
            error.contains(&ovnkube.display().to_string())
                && (error.contains("not a regular file") || error.contains("bytes, more than")),
            "{error}"
        );
    }
    for own in [fifo, PathBuf::from("/dev/zero")] {
        let shown = own.display().to_string();
        let (host, dpu) = {
            let (a, b) = (own.clone(), own.clone());
            (
                within_5s(move || HostConfig::load(&a).map(drop).map_err(|e| e.to_string())),
                within_5s(move || {
                    DpuConfig::load(&b, &dpu_agent::ovn::Northbound)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }),
            )
        };
        for (agent, outcome) in [("host-agent", host), ("dpu-agent", dpu)] {
            let error = outcome
                .ok_or_else(|| anyhow::anyhow!("{agent} loading {shown} as its config hung"))?
                .expect_err("refused");
            assert!(
                error.contains(&shown) && error.contains("not a regular file"),
                "{agent}: {error}"
            );
        }
    }
    Ok(())
}
