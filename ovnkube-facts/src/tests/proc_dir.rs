//! The lookup against a directory shaped like /proc.

use super::*;
use crate::process::Lookup;
use std::{os::unix::fs::symlink, time::Duration};

/// A directory shaped like /proc: our namespace, and one process per
/// (pid, argv, network namespace, root).
struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("self/ns")).expect("self");
        symlink("net:[4026531840]", dir.path().join("self/ns/net")).expect("ns");
        FakeProc { dir }
    }

    /// A process; its root is a directory of its own holding `files`.
    fn process(&self, pid: u32, argv: &str, netns: &str, files: &[(&str, &str)]) {
        let dir = self.dir.path().join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).expect("pid dir");
        let mut cmdline: Vec<u8> = Vec::new();
        for arg in argv.split_whitespace() {
            cmdline.extend(arg.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
        symlink(netns, dir.join("ns/net")).expect("ns");
        let root = self.dir.path().join(format!("rootfs-{pid}"));
        for (path, text) in files {
            let at = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().expect("parent")).expect("dirs");
            std::fs::write(at, text).expect("file");
        }
        std::fs::create_dir_all(&root).expect("root");
        symlink(&root, dir.join("root")).expect("root link");
    }

    fn lookup(&self, file: Option<&Path>) -> Lookup {
        Lookup {
            proc_dir: self.dir.path().to_path_buf(),
            process: true,
            file: file.map(|path| FileRef {
                path: path.to_path_buf(),
                named_by: FileNamedBy::AgentConfig,
            }),
        }
    }
}

const OURS: &str = "net:[4026531840]";
const DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn the_running_ovnkube_node_of_our_namespace_is_read_with_the_file_it_names() {
    let proc = FakeProc::new();
    proc.process(1, "/usr/sbin/ovs-vswitchd --pidfile", OURS, &[]);
    // Another node's ovnkube (another network namespace): not ours,
    // odd command line and all.
    proc.process(
        2,
        "/usr/bin/ovnkube --init-node node2 --mtu=9000 --mtu",
        "net:[4026532999]",
        &[],
    );
    proc.process(
        4242,
        "/usr/bin/ovnkube --init-node node1 --config-file=/run/ovnkube-config/ovnkube.conf --gateway-v4-masquerade-subnet=169.254.0.0/17",
        OURS,
        &[(
            "/run/ovnkube-config/ovnkube.conf",
            "[default]\nmtu=8900\ncluster-subnets=10.128.0.0/14/23\n",
        )],
    );
    let facts = proc
        .lookup(Some(Path::new("/nowhere/ovn_k8s.conf")))
        .facts(DEADLINE)
        .expect("read")
        .expect("found");
    assert_eq!(facts.process, Some(4242));
    assert_eq!(facts.mtu.value, 8900);
    assert_eq!(
        facts.mtu.origin.to_string(),
        "from /run/ovnkube-config/ovnkube.conf (ovnkube's --config-file)"
    );
    assert_eq!(
        facts.v4_masquerade.origin.to_string(),
        "from ovnkube's command line (pid 4242, --gateway-v4-masquerade-subnet)"
    );
    let inputs = proc.lookup(None).inputs(DEADLINE).expect("inputs");
    assert_eq!(inputs.process.map(|(pid, _)| pid), Some(4242));
    assert!(inputs.file.is_some_and(|(_, stamp)| stamp.is_some()));
}

#[test]
fn without_a_process_the_configured_file_is_read_and_without_either_nothing() {
    let proc = FakeProc::new();
    let file = proc.dir.path().join("ovn_k8s.conf");
    std::fs::write(&file, "[default]\nmtu=1300\n").expect("file");
    let facts = proc
        .lookup(Some(&file))
        .facts(DEADLINE)
        .expect("read")
        .expect("the file");
    assert_eq!(facts.process, None);
    assert_eq!(
        facts.mtu.origin.to_string(),
        format!("from {}", file.display())
    );
    assert_eq!(proc.lookup(None).facts(DEADLINE).expect("read"), None);
    // [ovnkube] process = false: a running ovnkube is not looked for.
    proc.process(9, "ovnkube --init-node n --mtu=9000", OURS, &[]);
    let mut off = proc.lookup(Some(&file));
    off.process = false;
    let facts = off.facts(DEADLINE).expect("read").expect("the file");
    assert_eq!(facts.mtu.value, 1300);
}

#[test]
fn helm_shape_with_no_file_in_the_container_takes_the_flags_and_defaults() {
    let proc = FakeProc::new();
    proc.process(
        77,
        "/usr/bin/ovnkube --init-node node1 --cluster-subnets 10.244.0.0/16/24 --mtu=1400 --ovnkube-node-mode=dpu",
        OURS,
        &[],
    );
    let facts = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect("read")
        .expect("found");
    assert_eq!(facts.file, None);
    assert_eq!(facts.cluster_subnets.value, vec![net("10.244.0.0/16")]);
    assert_eq!(facts.v4_masquerade.value, net("169.254.169.0/29"));
    assert_eq!(facts.node_mode.value, "dpu");
}

#[test]
fn a_proc_that_hides_ovnkube_from_us_is_said_not_searched() {
    let proc = FakeProc::new();
    proc.process(9, "ovnkube --init-node n --mtu=9000", OURS, &[]);
    let dir = proc.dir.path().display().to_string();
    // No CAP_SYS_PTRACE (bit 19) among our effective capabilities.
    std::fs::write(
        proc.dir.path().join("self/status"),
        "Name:\tdpu-agent\nCapEff:\t0000000000001000\n",
    )
    .expect("status");
    let mountinfo =
        |options: &str| format!("22 1 0:21 / {dir} rw,nosuid,nodev - proc proc rw{options}\n");
    std::fs::write(
        proc.dir.path().join("self/mountinfo"),
        mountinfo(",hidepid=invisible"),
    )
    .expect("mountinfo");
    let error = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect_err("blind")
        .to_string();
    assert!(
        error.contains("hidepid=invisible") && error.contains("CAP_SYS_PTRACE"),
        "{error}"
    );
    // Without hidepid, or with the capability, it looks.
    std::fs::write(proc.dir.path().join("self/mountinfo"), mountinfo("")).expect("mountinfo");
    assert!(proc.lookup(None).facts(DEADLINE).expect("looks").is_some());
    std::fs::write(
        proc.dir.path().join("self/mountinfo"),
        mountinfo(",hidepid=invisible"),
    )
    .expect("mountinfo");
    std::fs::write(
        proc.dir.path().join("self/status"),
        "CapEff:\t0000000000081000\n",
    )
    .expect("status");
    assert!(proc.lookup(None).facts(DEADLINE).expect("looks").is_some());
}

#[test]
fn a_command_line_past_the_bound_is_refused_not_cut() {
    let proc = FakeProc::new();
    let long = format!(
        "ovnkube --init-node n --mtu=1400 {}",
        "--nodeport ".repeat(30_000)
    );
    proc.process(3, &long, OURS, &[]);
    let error = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect_err("too long")
        .to_string();
    assert!(
        error.contains("pid 3") && error.contains("longer than the 262144 bytes read"),
        "{error}"
    );
}

#[test]
fn what_cannot_be_read_is_an_error_naming_the_process_or_file() {
    let proc = FakeProc::new();
    proc.process(
        5,
        "ovnkube --init-node n --config-file=/run/ovnkube-config/ovnkube.conf",
        OURS,
        &[],
    );
    let error = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect_err("missing file")
        .to_string();
    assert!(
        error.contains("/run/ovnkube-config/ovnkube.conf") && error.contains("No such file"),
        "{error}"
    );
    proc.process(6, "ovnkube --init-node m", OURS, &[]);
    let error = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect_err("two")
        .to_string();
    assert!(
        error.contains("2 ovnkube-node processes") && error.contains("pids 5, 6"),
        "{error}"
    );
    let proc = FakeProc::new();
    proc.process(8, "ovnkube --init-node n --mtu", OURS, &[]);
    let error = proc
        .lookup(None)
        .facts(DEADLINE)
        .expect_err("odd")
        .to_string();
    assert!(
        error.contains("pid 8") && error.contains("--mtu has no value"),
        "{error}"
    );
}
