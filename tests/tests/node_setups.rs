//! Nodes set up differently from the testbed, the way an operator's first
//! hour goes wrong: each mistake must give ONE line that says what is
//! wrong and how to fix it (never a backtrace, never the same line every
//! few seconds), and what is not a mistake (a runtime directory that does
//! not exist yet, a bridge limited to OpenFlow 1.3) must just work.
//!
//! Both agents run as the real binaries, each set-up in a network
//! namespace of its own: dpu-agent next to a real Open vSwitch, host-agent
//! next to a dpu-agent process.

use noverlay_tests::{
    e2e::Binaries,
    harness::{self, Certs, DpuOptions, HostOptions},
    netns::{self, NetNs},
    ovs::{self, Switch},
    pki::{Pki, Validity},
};
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a running agent is watched for its line, and then for repeats
/// of it (its retries run every 50-500 ms on the host, 1 s on the DPU).
const FIND_WITHIN: Duration = Duration::from_secs(10);
const WATCH_REPEATS: Duration = Duration::from_secs(5);

/// What a set-up makes the agent do.
enum Outcome {
    /// Exits non-zero at once with exactly one line on stderr holding
    /// every one of these.
    Exits(&'static [&'static str]),
    /// Keeps running and logs one line holding every one of these, once
    /// while the problem lasts.
    Says(&'static [&'static str]),
    /// Works: the check passes.
    Works(fn(&Node) -> anyhow::Result<()>),
}

struct Setup {
    name: &'static str,
    agent: Agent,
    /// Changes the node or the agent's config text.
    prepare: fn(&mut Node) -> anyhow::Result<()>,
    outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    Dpu,
    Host,
}

/// Starts the host's dpu-agent (again).
type StartPeer = Box<dyn Fn() -> anyhow::Result<Child> + Send + Sync>;

/// One node: a namespace, certificates, the agent's config text, and for
/// the DPU agent an Open vSwitch with the gateway bridge; for the host
/// agent a gateway interface, mp0 and a dpu-agent to talk to.
struct Node {
    /// The host's namespace (the DPU agent runs in its switch's).
    host_ns: Option<NetNs>,
    switch: Option<Switch>,
    certs: Certs,
    config: String,
    dir: PathBuf,
    /// The host's dpu-agent and how it was started.
    peer: Option<(Child, StartPeer)>,
}

impl Node {
    fn dpu(certs: Certs) -> anyhow::Result<Self> {
        let switch = Switch::start("setup")?;
        let options = DpuOptions {
            bridge: switch.ovs.agent_bridge_section(),
            ..DpuOptions::default()
        };
        let config = harness::dpu_config_toml(&options, &certs.dpu);
        Ok(Node {
            host_ns: None,
            dir: certs.dir.path().to_path_buf(),
            config,
            switch: Some(switch),
            certs,
            peer: None,
        })
    }

    fn ns(&self) -> &str {
        match (&self.host_ns, &self.switch) {
            (Some(ns), _) => &ns.name,
            (None, Some(switch)) => &switch.ns.name,
            (None, None) => "",
        }
    }

    /// Restarts the host's dpu-agent (after its files changed).
    fn restart_peer(&mut self) -> anyhow::Result<()> {
        if let Some((mut child, start)) = self.peer.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.peer = Some((start()?, start));
        }
        Ok(())
    }

    fn host(bins: &Binaries, certs: Certs) -> anyhow::Result<Self> {
        let ns = NetNs::new("setuph")?;
        ns.sh("set -e
            ip link add eth0 type veth peer name rep0
            ip link add ovn-k8s-mp0 type veth peer name mp0peer
            for l in eth0 rep0 ovn-k8s-mp0 mp0peer; do ip link set $l up; done
            ip addr add 198.18.0.10/24 dev eth0
            ip addr add 198.19.1.2/24 dev ovn-k8s-mp0")?;
        // The DPU agent this host talks to: plan only, on loopback.
        let dpu_options = DpuOptions {
            listen: "127.0.0.1:50051".parse()?,
            ..DpuOptions::default()
        };
        let dpu_config = certs.dir.path().join("dpu-agent.toml");
        std::fs::write(
            &dpu_config,
            harness::dpu_config_toml(&dpu_options, &certs.dpu),
        )?;
        let (ns_name, binary, log) = (
            ns.name.clone(),
            bins.dpu_agent.clone(),
            certs.dir.path().join("dpu.log"),
        );
        let start = move || spawn_in(&ns_name, &binary, &dpu_config, &log);
        let peer = start()?;
        let options = HostOptions::new("127.0.0.1:50051".parse()?);
        let config = harness::host_config_toml(&options, &certs.host);
        Ok(Node {
            dir: certs.dir.path().to_path_buf(),
            host_ns: Some(ns),
            switch: None,
            certs,
            config,
            peer: Some((peer, Box::new(start))),
        })
    }

    /// Replaces `from` (which must be there) in the config text.
    fn edit(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.config.contains(from),
            "{from:?} not in\n{}",
            self.config
        );
        self.config = self.config.replacen(from, to, 1);
        Ok(())
    }

    fn config_value(&self, key: &str) -> String {
        self.config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((mut peer, _)) = self.peer.take() {
            let _ = peer.kill();
            let _ = peer.wait();
        }
    }
}

fn spawn_in(ns: &str, binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(binary)
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn setups() -> Vec<Setup> {
    use Agent::*;
    use Outcome::*;
    vec![
        Setup {
            name: "OVSDB socket missing",
            agent: Dpu,
            prepare: |n| {
                let db = n.config_value("ovsdb_socket");
                n.edit(&db, "/run/nowhere/db.sock")
            },
            outcome: Says(&["/run/nowhere/db.sock", "ovsdb_socket"]),
        },
        Setup {
            name: "bridge name wrong",
            agent: Dpu,
            prepare: |n| n.edit("name = \"breth0\"", "name = \"breth9\""),
            outcome: Says(&["breth9", "ovs-vsctl list-br"]),
        },
        Setup {
            name: "host representor name wrong",
            agent: Dpu,
            prepare: |n| {
                n.edit(
                    "host_representor = \"pf0hpf\"",
                    "host_representor = \"pf9hpf\"",
                )
            },
            outcome: Says(&["pf9hpf", "breth0", "host_representor"]),
        },
        Setup {
            name: "uplink left out on a bridge that names none",
            agent: Dpu,
            prepare: |n| {
                if let Some(sw) = &n.switch {
                    sw.ovs.vsctl(&[
                        "remove",
                        "bridge",
                        "breth0",
                        "external_ids",
                        "bridge-uplink",
                    ])?;
                }
                n.edit("uplink = \"p0\"\n", "")
            },
            outcome: Says(&[
                "the uplink of bridge \"breth0\" cannot be told from OVSDB",
                "set [bridge] uplink",
            ]),
        },
        Setup {
            name: "underlay IP left to an OVN northbound database not running",
            agent: Dpu,
            prepare: |n| {
                n.edit("underlay_ip = \"198.18.0.10\"\n", "")?;
                n.config.push_str(
                    "\n[ovn]\nnb_socket = \"/run/nowhere/ovnnb_db.sock\"\ngateway_router = \"GR_node1\"\n",
                );
                Ok(())
            },
            outcome: Says(&[
                "waiting for OVN's northbound database",
                "/run/nowhere/ovnnb_db.sock",
                "nb_socket",
            ]),
        },
        Setup {
            name: "OpenFlow socket missing",
            agent: Dpu,
            prepare: |n| {
                let target = n.config_value("openflow");
                n.edit(&target, "unix:/run/nowhere/breth0.mgmt")
            },
            outcome: Says(&["/run/nowhere/breth0.mgmt", "openflow"]),
        },
        Setup {
            name: "bridge allows only OpenFlow 1.0",
            agent: Dpu,
            prepare: |n| {
                if let Some(sw) = &n.switch {
                    sw.ovs
                        .vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow10"])?;
                }
                Ok(())
            },
            outcome: Says(&[
                "breth0 allows OpenFlow10 only",
                "ovs-vsctl set bridge breth0 protocols=",
            ]),
        },
        Setup {
            name: "bridge allows only OpenFlow 1.3",
            agent: Dpu,
            prepare: |n| {
                if let Some(sw) = &n.switch {
                    sw.ovs
                        .vsctl(&["set", "bridge", "breth0", "protocols=OpenFlow13"])?;
                }
                Ok(())
            },
            outcome: Works(|n| {
                let sw = n
                    .switch
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no switch"))?;
                noverlay_test_support::eventually_blocking(
                    "flows on a 1.3-only bridge",
                    FIND_WITHIN,
                    || {
                        sw.ovs
                            .ofctl("dump-flows", "breth0", &["cookie=0x6e6f7672/-1"])
                            // The golden IPv4 set: 8 path flows for one CIDR, 9 for
                            // ICMP errors, fragments and the first hop, 6 base.
                            .is_ok_and(|d| d.lines().filter(|l| l.starts_with(' ')).count() == 23)
                    },
                )
                .map(drop)
                .map_err(anyhow::Error::msg)
            }),
        },
        Setup {
            name: "DPU key unreadable",
            agent: Dpu,
            prepare: |n| Ok(std::fs::remove_file(&n.certs.dpu.key)?),
            outcome: Exits(&["dpu-agent.key", "tls"]),
        },
        Setup {
            name: "DPU certificate and key do not match",
            agent: Dpu,
            prepare: |n| {
                let other = n
                    .certs
                    .pki
                    .issue("other", "other.example", Validity::Current)?;
                Ok(std::fs::copy(&other.key, &n.certs.dpu.key).map(drop)?)
            },
            outcome: Exits(&["key", "certificate"]),
        },
        Setup {
            name: "gateway interface missing",
            agent: Host,
            prepare: |n| {
                n.edit(
                    "gateway_interface = \"eth0\"",
                    "gateway_interface = \"eth9\"",
                )
            },
            outcome: Says(&["eth9", "gateway_interface"]),
        },
        Setup {
            name: "mp0 interface missing",
            agent: Host,
            prepare: |n| {
                if let Some(ns) = &n.host_ns {
                    ns.sh("ip link del ovn-k8s-mp0")?;
                }
                Ok(())
            },
            outcome: Says(&["ovn-k8s-mp0", "mp0_interface"]),
        },
        Setup {
            name: "DPU unreachable",
            agent: Host,
            prepare: |n| n.edit("127.0.0.1:50051", "127.0.0.1:50999"),
            outcome: Says(&["127.0.0.1:50999", "dpu.address"]),
        },
        Setup {
            name: "DPU hostname does not resolve",
            agent: Host,
            prepare: |n| n.edit("127.0.0.1:50051", "no-such-dpu.invalid:50051"),
            outcome: Says(&["no-such-dpu.invalid", "dpu.address"]),
        },
        Setup {
            name: "CA that did not sign the DPU",
            agent: Host,
            prepare: |n| {
                // The DPU's certificate now comes from a CA the host does
                // not trust (the DPU trusts it, so it starts).
                let other = Pki::new(&n.dir, "otherca")?;
                let dpu = other.issue("other-dpu", harness::DPU_SAN, Validity::Current)?;
                std::fs::copy(&dpu.cert, &n.certs.dpu.cert)?;
                std::fs::copy(&dpu.key, &n.certs.dpu.key)?;
                std::fs::copy(other.ca_path(), n.dir.join("ca-of-dpu.crt"))?;
                let dpu_config = n.dir.join("dpu-agent.toml");
                let text = std::fs::read_to_string(&dpu_config)?;
                let ca = n.certs.dpu.ca.display().to_string();
                let moved = n.dir.join("ca-of-dpu.crt").display().to_string();
                std::fs::write(
                    &dpu_config,
                    text.replace(&format!("ca = \"{ca}\""), &format!("ca = \"{moved}\"")),
                )?;
                n.restart_peer()
            },
            outcome: Says(&["certificate", "tls.ca"]),
        },
        Setup {
            name: "host key unreadable",
            agent: Host,
            prepare: |n| Ok(std::fs::remove_file(&n.certs.host.key)?),
            outcome: Exits(&["host-agent.key", "tls"]),
        },
        Setup {
            name: "runtime directory missing",
            agent: Host,
            prepare: |n| {
                let socket = n.config_value("status_socket");
                let moved = n.dir.join("run/noverlay/host-agent.sock");
                n.edit(&socket, &moved.display().to_string())
            },
            outcome: Works(|n| {
                let socket = n.dir.join("run/noverlay/host-agent.sock");
                noverlay_test_support::eventually_blocking(
                    "the status socket",
                    FIND_WITHIN,
                    || socket.exists(),
                )
                .map_err(anyhow::Error::msg)?;
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(n.dir.join("run/noverlay"))?.permissions(),
                );
                anyhow::ensure!(mode & 0o777 == 0o700, "runtime directory mode {mode:o}");
                Ok(())
            }),
        },
        Setup {
            name: "runtime directory not writable",
            agent: Host,
            prepare: |n| {
                let socket = n.config_value("status_socket");
                n.edit(&socket, "/proc/noverlay/host-agent.sock")
            },
            outcome: Exits(&["/proc/noverlay", "status_socket"]),
        },
    ]
}

/// The agent's stderr so far.
fn log_of(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .collect()
}

/// Runs one set-up; Err says what the operator would have seen instead.
fn check(bins: &Binaries, setup: &Setup) -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let mut node = match setup.agent {
        Agent::Dpu => Node::dpu(certs)?,
        Agent::Host => Node::host(bins, certs)?,
    };
    (setup.prepare)(&mut node)?;
    let config = node.dir.join("agent.toml");
    std::fs::write(&config, &node.config)?;
    let log = node.dir.join("agent.log");
    let binary = match setup.agent {
        Agent::Dpu => &bins.dpu_agent,
        Agent::Host => &bins.host_agent,
    };
    let mut agent = spawn_in(node.ns(), binary, &config, &log)?;
    let result = watch(&mut agent, &node, &log, &setup.outcome);
    let _ = agent.kill();
    let _ = agent.wait();
    let text = log_of(&log);
    anyhow::ensure!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "a panic or backtrace:\n{text}"
    );
    // The start of what it printed is enough to see why.
    let start: Vec<&str> = text.lines().take(8).collect();
    result.map_err(|e| anyhow::anyhow!("{e}\n--- the agent printed first:\n{}", start.join("\n")))
}

fn watch(agent: &mut Child, node: &Node, log: &Path, outcome: &Outcome) -> anyhow::Result<()> {
    let started = Instant::now();
    match outcome {
        Outcome::Exits(words) => {
            let status = loop {
                if let Some(status) = agent.try_wait()? {
                    break status;
                }
                anyhow::ensure!(started.elapsed() < FIND_WITHIN, "still running");
                std::thread::sleep(Duration::from_millis(20));
            };
            anyhow::ensure!(!status.success(), "exited {status}");
            let text = log_of(log);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            anyhow::ensure!(lines.len() == 1, "{} lines, not one", lines.len());
            anyhow::ensure!(
                !lines_with(&text, words).is_empty(),
                "the line does not name {words:?}"
            );
            Ok(())
        }
        Outcome::Says(words) => {
            noverlay_test_support::eventually_blocking("the line", FIND_WITHIN, || {
                !lines_with(&log_of(log), words).is_empty()
            })
            .map_err(|_| anyhow::anyhow!("no line naming {words:?}"))?;
            std::thread::sleep(WATCH_REPEATS);
            anyhow::ensure!(agent.try_wait()?.is_none(), "the agent exited");
            let text = log_of(log);
            let found = lines_with(&text, words).len();
            anyhow::ensure!(
                found == 1,
                "said {found} times in {WATCH_REPEATS:?}, not once"
            );
            Ok(())
        }
        Outcome::Works(check) => {
            check(node)?;
            anyhow::ensure!(agent.try_wait()?.is_none(), "the agent exited");
            Ok(())
        }
    }
}

#[test]
#[ignore = "privileged: needs root, network namespaces and Open vSwitch; run as root with --include-ignored (CI does)"]
fn every_mis_set_up_node_gets_one_line_naming_the_fix() -> anyhow::Result<()> {
    netns::require_privileges()?;
    ovs::require()?;
    let bins = Binaries::built()?;
    let setups = setups();
    let results: Vec<(&str, anyhow::Result<()>)> = std::thread::scope(|scope| {
        let running: Vec<_> = setups
            .iter()
            .map(|setup| (setup.name, scope.spawn(|| check(&bins, setup))))
            .collect();
        running
            .into_iter()
            .map(|(name, thread)| {
                let result = thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the check panicked")));
                (name, result)
            })
            .collect()
    });
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(()) => println!("ok      {name}"),
            Err(e) => {
                println!("FAILED  {name}: {e}\n");
                failed.push(*name);
            }
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} set-ups failed: {failed:?}",
        failed.len(),
        results.len()
    );
    Ok(())
}
