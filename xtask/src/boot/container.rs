//! A Debian tree booted under its own systemd with systemd-nspawn, and the
//! commands run inside it (nsenter into the container's namespaces: nspawn
//! needs no machined or host systemd for that, which CI machines lack).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Container {
    nspawn: Child,
    /// The container's PID 1 (its systemd), as the host sees it.
    leader: u32,
}

/// How long a boot may take to reach a settled system.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long any command inside may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl Container {
    /// Boots `root` with a private network (its own network namespace: the
    /// topology inside never touches the machine's) and waits until its
    /// systemd says the boot is over. The console goes to `console`.
    pub fn boot(root: &Path, console: &Path) -> Result<Self, String> {
        let log =
            std::fs::File::create(console).map_err(|e| format!("{}: {e}", console.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", console.display()))?;
        // --register=no --keep-unit: no machined and no host systemd to ask
        // for a scope (CI machines run neither).
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            .args([
                "--boot",
                "--private-network",
                "--register=no",
                "--keep-unit",
                "--machine=noverlay-ci",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run systemd-nspawn: {e}"))?;
        let mut container = Container { nspawn, leader: 0 };
        let started = Instant::now();
        while container.leader == 0 {
            if let Ok(Some(status)) = container.nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn exited ({status}) before the container started; see {}",
                    console.display()
                ));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                return Err(format!("no container init after {BOOT_TIMEOUT:?}"));
            }
            container.leader = child_of(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // `--wait` blocks until the boot job queue is empty.
        loop {
            let (_, state) = container.try_sh("systemctl is-system-running --wait");
            let state = state.trim();
            if state == "running" {
                return Ok(container);
            }
            if state == "degraded" {
                let failed = container.sh("systemctl --failed --no-legend --plain")?;
                return Err(format!("the container booted degraded:\n{failed}"));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                return Err(format!(
                    "the container's systemd is still {state:?} after {BOOT_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a shell script inside; its stdout, or an error with both streams.
    pub fn sh(&self, script: &str) -> Result<String, String> {
        match self.try_sh(script) {
            (true, out) => Ok(out),
            (false, out) => Err(format!("inside the container, `{script}` failed:\n{out}")),
        }
    }

    /// Runs a shell script inside: whether it succeeded, and its output
    /// (stdout, then stderr when it failed).
    pub fn try_sh(&self, script: &str) -> (bool, String) {
        let child = Command::new("timeout")
            .arg(COMMAND_TIMEOUT.as_secs().to_string())
            .args(["nsenter", "--target", &self.leader.to_string(), "--all"])
            .args(["--", "sh", "-c", script])
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .output();
        match child {
            Ok(out) if out.status.success() => {
                (true, String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => (
                false,
                format!(
                    "{}{}({})",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    out.status
                ),
            ),
            Err(e) => (false, format!("cannot run nsenter: {e}")),
        }
    }

    /// One property of a unit, as `systemctl show` has it.
    pub fn property(&self, unit: &str, name: &str) -> Result<String, String> {
        Ok(self
            .sh(&format!("systemctl show --property={name} --value {unit}"))?
            .trim()
            .to_string())
    }

    /// A monotonic timestamp property of a unit, in microseconds.
    pub fn micros(&self, unit: &str, name: &str) -> Result<u64, String> {
        let value = self.property(unit, name)?;
        value
            .parse()
            .map_err(|_| format!("{unit}: {name} is {value:?}, not microseconds"))
    }

    /// Polls `check` inside until it succeeds; the time it took.
    pub fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let (ok, out) = self.try_sh(script);
            if ok {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "{what}: not after {limit:?}; last check said:\n{out}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    /// SIGTERM makes nspawn ask the container's systemd to power off; a
    /// container that does not go in 20 s is killed (its PID namespace
    /// takes every process inside with it).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.nspawn.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The one child process of `pid`, if it has one yet.
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// A Debian 12 tree with systemd and what the agents run beside, made once
/// by debootstrap and kept under `cache` (remade when the package list
/// changes); the path of the kept tree.
pub fn debian_tree(cache: &Path, packages: &[&str]) -> Result<PathBuf, String> {
    let tree = cache.join("bookworm");
    let stamp = cache.join("bookworm.packages");
    let wanted = packages.join(",");
    if tree.is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(tree);
    }
    let part = cache.join("bookworm.part");
    for old in [&tree, &part] {
        let _ = std::fs::remove_dir_all(old);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    println!(
        "xtask: debootstrap a Debian 12 tree into {} (once per machine)",
        tree.display()
    );
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={wanted}"),
            "bookworm",
        ])
        .arg(&part)
        .arg("http://deb.debian.org/debian")
        .output()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "debootstrap failed ({}):\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 20)
        ));
    }
    std::fs::rename(&part, &tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    println!("xtask: debootstrap took {:.0?}", started.elapsed());
    Ok(tree)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
