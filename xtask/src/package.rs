//! The Debian packages of both agents (cargo-deb), and the check CI runs on
//! them: install, look at what was installed, purge, look that nothing is
//! left.

use crate::{cargo, is_root, run, workspace_root};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

const AGENTS: [&str; 2] = ["dpu-agent", "host-agent"];
const CARGO_DEB: &str = "3.6.0";

/// Builds both packages; returns their paths.
pub fn build() -> Result<Vec<PathBuf>, String> {
    cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "dpu-agent",
        "-p",
        "host-agent",
    ])?;
    // Man pages from the CLI itself, compressed as Debian ships them, where
    // the package metadata expects them.
    let _ = std::fs::remove_dir_all(workspace_root().join("target/release/man"));
    for agent in AGENTS {
        run(
            &format!("target/release/{agent}"),
            &["generate-man", "--out", "target/release/man"],
        )?;
    }
    run("sh", &["-c", "gzip -9nf target/release/man/*.8"])?;
    let has_cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        cargo(&[
            "install",
            "-q",
            "cargo-deb",
            "--version",
            CARGO_DEB,
            "--locked",
        ])?;
    }
    let mut debs = Vec::new();
    for agent in AGENTS {
        let output = Command::new("cargo")
            .args(["deb", "--no-build", "--locked", "-p", agent])
            .current_dir(workspace_root())
            .output()
            .map_err(|e| format!("cannot run cargo deb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo deb -p {agent} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // cargo-deb prints the package's path last.
        let path = String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with(".deb"))
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("cargo deb -p {agent} named no package"))?;
        println!("xtask: built {}", path.display());
        debs.push(path);
    }
    Ok(debs)
}

/// Installs the packages, checks them, purges them and checks that nothing
/// of theirs is left. Refuses to touch a machine where they are installed
/// already (it would purge an operator's install).
pub fn check(debs: &[PathBuf]) -> Result<(), String> {
    if !is_root() {
        return Err("package-check installs packages: run it as root (CI does)".into());
    }
    let packages: Vec<String> = AGENTS.iter().map(|a| format!("noverlay-{a}")).collect();
    if let Some(installed) = packages.iter().find(|p| is_installed(p)) {
        return Err(format!("{installed} is installed already; not touching it"));
    }
    let etc_existed = Path::new("/etc/noverlay").exists();
    let mut install = vec!["-i"];
    install.extend(debs.iter().filter_map(|d| d.to_str()));
    run("dpkg", &install)?;
    let result = inspect(&packages).and_then(|files| {
        upgrade_with_a_running_agent(debs)?;
        enable_units()?;
        Ok(files)
    });
    // Purged even when a check failed: the machine is left as it was.
    let mut purge = vec!["--purge"];
    purge.extend(packages.iter().map(String::as_str));
    let purged = run("dpkg", &purge);
    let files = result?;
    purged?;
    for package in &packages {
        if is_installed(package) {
            return Err(format!("{package} is still installed after the purge"));
        }
    }
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    if !left.is_empty() {
        return Err(format!("left behind after the purge: {left:?}"));
    }
    let links: Vec<PathBuf> = AGENTS.iter().map(|a| wants_link(a)).collect();
    if let Some(link) = links.iter().find(|l| l.symlink_metadata().is_ok()) {
        return Err(format!(
            "{} left behind after the purge (the maintainer scripts did not clean up the unit's links)",
            link.display()
        ));
    }
    if !etc_existed && Path::new("/etc/noverlay").exists() {
        return Err("/etc/noverlay left behind after the purge".into());
    }
    println!(
        "xtask: packages installed, checked, purged; none of their {} files is left",
        files.len()
    );
    Ok(())
}

/// What the installed packages must have; returns the files they installed.
fn inspect(packages: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for (agent, package) in AGENTS.iter().zip(packages) {
        let listed = output("dpkg", &["-L", package])?;
        let owned: Vec<PathBuf> = listed
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect();
        let has = |suffix: &str| owned.iter().any(|p| p.to_string_lossy().ends_with(suffix));
        for expected in [
            format!("/usr/bin/{agent}"),
            format!("/{agent}.service"),
            format!("/man8/{agent}.8.gz"),
            format!("/man8/{agent}-run.8.gz"),
            format!("/etc/noverlay/{agent}.toml"),
            format!("/usr/share/doc/{package}/README.md"),
            format!("/usr/share/doc/{package}/docs/design.md"),
            format!("/usr/share/doc/{package}/docs/alerts.md"),
            format!("/usr/share/doc/{package}/docs/operator-guide.md"),
            format!("/usr/share/doc/{package}/docs/configuration.md"),
            format!("/usr/share/doc/{package}/examples/prometheus/noverlay-alerts.yml"),
            format!("/usr/share/doc/{package}/examples/grafana/noverlay.json"),
        ] {
            if !has(&expected) {
                return Err(format!("{package} installed no {expected}: {owned:?}"));
            }
        }
        let conffiles = output("dpkg-query", &["-W", "-f=${Conffiles}", package])?;
        if !conffiles.contains(&format!("/etc/noverlay/{agent}.toml")) {
            return Err(format!(
                "{package}: its config is not a conffile: {conffiles}"
            ));
        }
        let version = output(&format!("/usr/bin/{agent}"), &["--version"])?;
        if !(version.contains("(commit ") && version.contains("protocol ")) {
            return Err(format!("{agent} --version: {version}"));
        }
        let unit = owned
            .iter()
            .find(|p| p.to_string_lossy().ends_with(&format!("/{agent}.service")))
            .ok_or_else(|| format!("{package}: no unit"))?;
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit)
            .output()
            .map_err(|e| format!("systemd-analyze: {e}"))?;
        let stderr = String::from_utf8_lossy(&verify.stderr);
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&format!("{agent}.service")))
            .collect();
        if !verify.status.success() || !ours.is_empty() {
            return Err(format!(
                "systemd-analyze verify {}: {stderr}",
                unit.display()
            ));
        }
        // Installing neither enables nor starts it: its config needs editing.
        if wants_link(agent).symlink_metadata().is_ok() {
            return Err(format!("installing enabled {agent}.service"));
        }
        if Command::new("pgrep")
            .args(["-x", agent])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Err(format!("installing started {agent}"));
        }
        println!("xtask: {package}: {} files, {version}", owned.len());
        files.extend(owned);
    }
    Ok(files)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The link `systemctl enable` makes for an agent's unit.
fn wants_link(agent: &str) -> PathBuf {
    Path::new("/etc/systemd/system/multi-user.target.wants").join(format!("{agent}.service"))
}

/// An operator enables both units (systemctl works on the files without a
/// running systemd); the purge must then remove the links.
fn enable_units() -> Result<(), String> {
    for agent in AGENTS {
        run("systemctl", &["enable", &format!("{agent}.service")])?;
        if wants_link(agent).symlink_metadata().is_err() {
            return Err(format!("systemctl enable {agent}.service made no link"));
        }
    }
    println!("xtask: both units enabled (the purge must remove their links)");
    Ok(())
}

/// Installs the packages again over themselves (dpkg's upgrade path) while
/// a host-agent process runs the installed binary: the postinst must say
/// that this process still runs the replaced binary. The process is
/// `host-agent status` waiting on a socket that never answers.
fn upgrade_with_a_running_agent(debs: &[PathBuf]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("noverlay-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let socket = dir.join("status.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut running = Command::new("/usr/bin/host-agent")
        .arg("status")
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start host-agent status: {e}"))?;
    let mut install = vec!["-i".to_string()];
    install.extend(debs.iter().map(|d| d.display().to_string()));
    let upgraded = Command::new("dpkg").args(&install).output();
    let _ = running.kill();
    let _ = running.wait();
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
    let upgraded = upgraded.map_err(|e| format!("cannot run dpkg: {e}"))?;
    let said = String::from_utf8_lossy(&upgraded.stdout).to_string();
    if !upgraded.status.success() {
        return Err(format!(
            "the upgrade failed: {said}{}",
            String::from_utf8_lossy(&upgraded.stderr)
        ));
    }
    let expected = format!(
        "host-agent (pid {}) still runs the replaced binary",
        running.id()
    );
    if !said.contains(&expected) {
        return Err(format!("the upgrade did not say {expected:?}:\n{said}"));
    }
    println!("xtask: upgraded over a running host-agent; the package said: {expected}");
    Ok(())
}
