//! The test node before and inside the boot: the tree's copy with the
//! packages, certificates and drop-ins, the topology made inside, and the
//! configs an operator would write.

use super::{CLUSTER_CIDR, CLUSTER_CIDR6, UNITS, WATCHDOG_SEC};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Copies the kept tree (reflinks where the file system has them).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cannot run cp: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("copying {} failed ({status})", from.display()))
    }
}

/// Before the boot: the packages to install, certificates, and the drop-ins
/// that make this tree a test node.
pub fn prepare(root: &Path, debs: &[PathBuf]) -> Result<(), String> {
    let write = |path: &str, text: &str| -> Result<(), String> {
        let path = root.join(path.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    for deb in debs {
        let name = deb.file_name().ok_or("a package path without a name")?;
        let target = root.join("root").join(name);
        std::fs::copy(deb, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    // Debian's unit loads the openvswitch kernel module first; the
    // userspace datapath needs none (and a container may load none).
    write(
        "/etc/systemd/system/ovs-vswitchd.service.d/userspace.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/ovs-vswitchd unix:/run/openvswitch/db.sock \
         --pidfile=/run/openvswitch/ovs-vswitchd.pid --detach --no-chdir \
         --log-file=/var/log/openvswitch/ovs-vswitchd.log -vconsole:off\n\
         PIDFile=/run/openvswitch/ovs-vswitchd.pid\n",
    )?;
    for unit in UNITS {
        // The shipped units answer a filtered system call with EPERM; here
        // one kills the agent (SIGSYS), so that even a refusal the agent
        // would handle quietly shows. A 3 s watchdog proves it is fed.
        write(
            &format!("/etc/systemd/system/{unit}.service.d/ci.conf"),
            &format!("[Service]\nWatchdogSec={WATCHDOG_SEC}s\nSystemCallErrorNumber=\n"),
        )?;
    }
    pki(&root.join("root/pki"))
}

/// A CA and one certificate per agent (openssl, ECDSA P-256).
fn pki(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=noverlay-ci-CA -keyout ca.key -out ca.crt 2>/dev/null
for agent in dpu-agent host-agent; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=$agent.node1.example -keyout $agent.key -out $agent.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s.node1.example\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' \
        $agent > $agent.ext
    openssl x509 -req -in $agent.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile $agent.ext -out $agent.crt 2>/dev/null
done
chmod 600 *.key"#;
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "making the test certificates failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The node inside: OVS bridges as ovn-controller and ovnkube-node leave
/// them (breth0 with the host representor, the uplink and the patch port to
/// br-int), the host's gateway interface and ovn-k8s-mp0 (veths: kernels
/// without the dummy driver have them too).
pub const TOPOLOGY: &str = r#"set -e
ip link add hostgw type veth peer name pf0hpf
ip link add p0 type veth peer name p0-wire
ip link add ovn-k8s-mp0 type veth peer name mp0-peer
ip addr add 198.18.0.10/24 dev hostgw
ip addr add 2001:db8::10/64 dev hostgw nodad
for l in hostgw pf0hpf p0 p0-wire ovn-k8s-mp0 mp0-peer; do ip link set $l up; done
ovs-vsctl --timeout=10 add-br br-int -- set bridge br-int datapath_type=netdev fail-mode=secure
ovs-vsctl --timeout=10 add-br breth0 -- set bridge breth0 datapath_type=netdev \
    -- add-port breth0 pf0hpf -- add-port breth0 p0 \
    -- add-port breth0 patch-breth0_node1-to-br-int \
    -- set interface patch-breth0_node1-to-br-int type=patch options:peer=patch-br-int-to-breth0_node1 \
    -- add-port br-int patch-br-int-to-breth0_node1 \
    -- set interface patch-br-int-to-breth0_node1 type=patch options:peer=patch-breth0_node1-to-br-int
install -m 0600 /root/pki/*.key /etc/noverlay/
install -m 0644 /root/pki/*.crt /etc/noverlay/
"#;

pub fn dpu_config() -> String {
    format!(
        r#"listen = "127.0.0.1:50051"
authorised_host = "host-agent.node1.example"
mtu = 1400
metrics_listen = "127.0.0.1:9101"

[tls]
cert = "/etc/noverlay/dpu-agent.crt"
key = "/etc/noverlay/dpu-agent.key"
ca = "/etc/noverlay/ca.crt"

[ovnkube]
config = ""

[ipv4]
masquerade_subnet = "169.254.0.0/17"
cluster_cidrs = ["{CLUSTER_CIDR}"]
underlay_ip = "198.18.0.10"

[ipv6]
masquerade_subnet = "fd69::/112"
cluster_cidrs = ["{CLUSTER_CIDR6}"]
underlay_ip = "2001:db8::10"

[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "patch-breth0_node1-to-br-int"
uplink = "p0"
"#
    )
}

pub const HOST_CONFIG: &str = r#"host_name = "node1"
gateway_interface = "hostgw"
mp0_interface = "ovn-k8s-mp0"

[dpu]
address = "127.0.0.1:50051"
identity = "dpu-agent.node1.example"

[tls]
cert = "/etc/noverlay/host-agent.crt"
key = "/etc/noverlay/host-agent.key"
ca = "/etc/noverlay/ca.crt"

[ipv4]
masquerade_subnet = "169.254.0.0/17"

[ipv6]
masquerade_subnet = "fd69::/112"
"#;
