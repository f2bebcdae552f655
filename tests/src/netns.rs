//! Network namespaces for the datapath tests: created with unique names,
//! always deleted (Drop), and a way to run async code inside one.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why privileged work (network namespaces, nftables) cannot run here, if
/// it cannot.
fn missing_privileges() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces (CI runs as root)".into());
    }
    ["ip", "nft"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("-V").output().is_err())
        .map(|tool| format!("`{tool}` is not installed (.ci/run installs it)"))
}

/// For the privileged tests (ignored by default, run as root with
/// `--include-ignored`): an error naming what is missing, so that a run
/// that cannot do the work fails loudly instead of passing.
pub fn require_privileges() -> anyhow::Result<()> {
    match missing_privileges() {
        None => Ok(()),
        Some(why) => anyhow::bail!("this privileged test cannot run here: {why}"),
    }
}

/// For the bench and the demo: false (after printing why) when privileged
/// work cannot run here.
pub fn privileged_or_skip(what: &str) -> bool {
    match missing_privileges() {
        None => true,
        Some(why) => {
            println!("SKIPPED {what}: {why}");
            false
        }
    }
}

/// A unique short suffix: process id and a counter.
pub fn unique_suffix() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace that exists as long as this value does.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(role: &str) -> anyhow::Result<Self> {
        let name = format!("nov-{role}-{}", unique_suffix());
        run(&["ip", "netns", "add", &name])?;
        let ns = NetNs { name };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// Runs a shell command inside the namespace; fails with its output.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()?;
        check(script, output)
    }

    /// Runs a shell command inside the namespace and returns its output
    /// whether or not it succeeded.
    pub fn sh_unchecked(&self, script: &str) -> anyhow::Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()?)
    }

    /// Runs `future` on a thread that lives inside this namespace, with its
    /// own single-threaded runtime: every socket it opens (rtnetlink,
    /// nftables) belongs to the namespace.
    pub fn run<F, Fut, T>(&self, make: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
        T: Send + 'static,
    {
        self.spawn(make)
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// As [`NetNs::run`], in the background: joins with the thread.
    pub fn spawn<F, Fut, T>(&self, make: F) -> std::thread::JoinHandle<anyhow::Result<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || -> anyhow::Result<T> {
            let file = std::fs::File::open(&path)?;
            // SAFETY: a valid namespace fd; affects only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            anyhow::ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(make())
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// `ip -o monitor route` in `ns`, its output piped: every route event of
/// the namespace from the return on, one line each.
pub fn route_monitor(ns: &NetNs) -> std::io::Result<std::process::Child> {
    let monitor = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ip", "-o", "monitor", "route"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // It subscribes once started, before it reads: give it that moment.
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(monitor)
}

/// Runs a command inside the named namespace; fails with its output.
pub fn run_in(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["ip", "netns", "exec", netns];
    all.extend_from_slice(args);
    run(&all)
}

/// Runs a command outside any namespace; fails with its output.
pub fn run(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(args[0]).args(&args[1..]).output()?;
    check(&args.join(" "), output)
}

fn check(what: &str, output: Output) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "`{what}` failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}
