//! Agents started in-process from config files written the way an operator
//! writes them, over real mTLS on loopback.

use crate::pki::{Pki, Validity};
use dpu_agent::{
    config::{DpuConfig, ValidConfig},
    server::DpuAgent,
    state::AgentHandle,
};
use host_agent::{
    agent::{HostAgent, HostStatus},
    config::HostConfig,
    dataplane::{
        DataplaneError,
        dry_run::{DryRun, DryRunLog},
    },
    plan::HostAddress,
};
use noverlay_proto::tls::TlsFiles;
use std::{net::SocketAddr, path::Path, time::Duration};
use tempfile::TempDir;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub const DPU_SAN: &str = "dpu-agent.node1.test";
pub const HOST_SAN: &str = "host-agent.node1.test";

/// The proposal of a host configured like [`HostOptions::new`]: IPv4 with
/// the default masquerade subnet, gateway interface eth0.
pub fn proposal() -> noverlay_proto::pb::NegotiateRequest {
    use noverlay_proto::{PROTOCOL_VERSION, contract::Mode, pb};
    pb::NegotiateRequest {
        protocol_version: PROTOCOL_VERSION,
        mode: Some(Mode::IN_SCOPE.to_pb()),
        families: vec![pb::FamilyProposal {
            family: pb::AddressFamily::Ipv4 as i32,
            masquerade_subnet: "169.254.0.0/17".into(),
        }],
        gateway_interface: "eth0".into(),
        host_name: "node1".into(),
    }
}

/// A CA and the two agents' certificates in a temporary directory.
pub struct Certs {
    pub dir: TempDir,
    pub pki: Pki,
    pub dpu: TlsFiles,
    pub host: TlsFiles,
}

impl Certs {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new(dir.path(), "ca")?;
        let dpu = pki.issue("dpu-agent", DPU_SAN, Validity::Current)?;
        let host = pki.issue("host-agent", HOST_SAN, Validity::Current)?;
        Ok(Certs {
            dir,
            pki,
            dpu,
            host,
        })
    }
}

/// The parts of a dpu-agent config the tests vary.
#[derive(Debug, Clone)]
pub struct DpuOptions {
    pub listen: SocketAddr,
    pub authorised_host: String,
    pub ipv4_cidrs: Vec<String>,
    pub ipv4_masquerade: String,
    /// IPv6 cluster CIDRs; the family is configured only when non-empty.
    pub ipv6_cidrs: Vec<String>,
    pub mtu: u32,
    /// The [bridge] section; by default a plan-only bridge with static ports.
    pub bridge: String,
    /// The uplink guard (nftables in the agent's network namespace). Off
    /// by default here: an agent run inside the test process is in the
    /// machine's own namespace, where no test may write nftables; the
    /// guard is on where the agent runs in a namespace of the test's.
    pub uplink_guard: bool,
    /// An `[ovn]` section (the check of OVN's gateway router), or empty.
    pub ovn: String,
}

/// A bridge section for agents that only plan (no Open vSwitch here).
pub const PLAN_ONLY_BRIDGE: &str = r#"
[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "patch-breth0-to-br-int"
uplink = "p0"
program = false

[bridge.static_ports]
host_representor = 1
patch_port = 2
uplink = 3
bridge_mac = "02:00:c6:12:00:0a"
"#;

impl Default for DpuOptions {
    fn default() -> Self {
        DpuOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            authorised_host: HOST_SAN.into(),
            ipv4_cidrs: vec!["198.18.128.0/17".into()],
            ipv4_masquerade: "169.254.0.0/17".into(),
            ipv6_cidrs: Vec::new(),
            mtu: 1400,
            bridge: PLAN_ONLY_BRIDGE.into(),
            uplink_guard: false,
            ovn: String::new(),
        }
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default dpu-agent config as written next to ovnkube-node: no MTU,
/// cluster CIDRs or masquerade subnets (ovnkube's to give), and this
/// `[ovnkube] config` path (empty: no file).
pub fn dpu_config_left_to_ovnkube(tls: &TlsFiles, ovnkube_config: &str) -> String {
    dpu_config_toml(&DpuOptions::default(), tls)
        .lines()
        .filter(|l| {
            !l.starts_with("mtu =")
                && !l.starts_with("cluster_cidrs =")
                && !l.starts_with("masquerade_subnet =")
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!("\n[ovnkube]\nconfig = {ovnkube_config:?}\n")
}

/// A dpu-agent config file, as an operator would write it.
pub fn dpu_config_toml(options: &DpuOptions, tls: &TlsFiles) -> String {
    let mut text = format!(
        r#"listen = "{listen}"
authorised_host = "{host}"
mtu = {mtu}

[tls]
cert = "{cert}"
key = "{key}"
ca = "{ca}"

[ipv4]
masquerade_subnet = "{masq}"
cluster_cidrs = [{cidrs}]
underlay_ip = "198.18.0.10"
"#,
        listen = options.listen,
        host = options.authorised_host,
        mtu = options.mtu,
        cert = tls.cert.display(),
        key = tls.key.display(),
        ca = tls.ca.display(),
        masq = options.ipv4_masquerade,
        cidrs = quoted_list(&options.ipv4_cidrs),
    );
    if !options.ipv6_cidrs.is_empty() {
        text.push_str(&format!(
            r#"
[ipv6]
masquerade_subnet = "fd69::/112"
cluster_cidrs = [{}]
underlay_ip = "2001:db8::10"
"#,
            quoted_list(&options.ipv6_cidrs)
        ));
    }
    text.push_str(&options.bridge);
    text.push_str(&format!(
        "\n[uplink_guard]\nenabled = {}\n",
        options.uplink_guard
    ));
    text.push_str(&options.ovn);
    text
}

/// Writes and loads a dpu-agent config through the operator's path.
pub fn dpu_config(dir: &Path, options: &DpuOptions, tls: &TlsFiles) -> anyhow::Result<ValidConfig> {
    let path = dir.join("dpu-agent.toml");
    std::fs::write(&path, dpu_config_toml(options, tls))?;
    Ok(DpuConfig::load(&path, &dpu_agent::ovn::Northbound)?)
}

/// A dpu-agent config whose TLS identity is not checked at load: for a DPU
/// whose certificate went bad while it runs (expired, re-issued by another
/// CA), which the host must refuse.
pub fn dpu_config_unchecked(options: &DpuOptions, tls: &TlsFiles) -> anyhow::Result<ValidConfig> {
    Ok(DpuConfig::parse(&dpu_config_toml(options, tls))?.validate()?)
}

/// The parts of a host-agent config the tests vary.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub dpu_address: SocketAddr,
    pub dpu_identity: String,
    pub ipv4_masquerade: String,
    pub ipv6: bool,
    pub gateway_interface: String,
    /// A `[mode]` section; the default (absent) is the mode in scope.
    pub mode: Option<String>,
    /// The periodic reconcile's interval, when not the agent's own.
    pub periodic_reconcile: Option<Duration>,
}

impl HostOptions {
    pub fn new(dpu_address: SocketAddr) -> Self {
        HostOptions {
            dpu_address,
            dpu_identity: DPU_SAN.into(),
            ipv4_masquerade: "169.254.0.0/17".into(),
            ipv6: false,
            gateway_interface: "eth0".into(),
            mode: None,
            periodic_reconcile: None,
        }
    }
}

pub fn host_config_toml(options: &HostOptions, tls: &TlsFiles) -> String {
    // The status socket next to the certificates: never the machine's /run.
    let socket = tls
        .cert
        .parent()
        .unwrap_or(std::path::Path::new("/tmp"))
        .join("host-agent.sock");
    let mut text = format!(
        r#"host_name = "node1"
gateway_interface = "{gw}"
status_socket = "{socket}"

[dpu]
address = "{addr}"
identity = "{identity}"

[tls]
cert = "{cert}"
key = "{key}"
ca = "{ca}"

[ipv4]
masquerade_subnet = "{masq}"

[reconnect]
initial_ms = 50
max_ms = 500
"#,
        gw = options.gateway_interface,
        socket = socket.display(),
        addr = options.dpu_address,
        identity = options.dpu_identity,
        cert = tls.cert.display(),
        key = tls.key.display(),
        ca = tls.ca.display(),
        masq = options.ipv4_masquerade,
    );
    if options.ipv6 {
        text.push_str("\n[ipv6]\nmasquerade_subnet = \"fd69::/112\"\n");
    }
    if let Some(mode) = &options.mode {
        text.push_str(&format!("\n[mode]\n{mode}\n"));
    }
    text
}

/// A dpu-agent serving in this process.
pub struct RunningDpu {
    pub addr: SocketAddr,
    pub handle: AgentHandle,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), dpu_agent::server::ServeError>>,
}

impl RunningDpu {
    pub async fn start(config: &ValidConfig) -> anyhow::Result<Self> {
        let agent = DpuAgent::bind(config).await?;
        let addr = agent.local_addr()?;
        let handle = agent.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.serve(shutdown.clone()));
        Ok(RunningDpu {
            addr,
            handle,
            shutdown,
            task,
        })
    }

    /// Graceful stop; open watch streams end.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

/// A host-agent running in this process against a dry-run dataplane.
pub struct RunningHost {
    pub status: watch::Receiver<HostStatus>,
    pub log: DryRunLog,
    pub tls: host_agent::agent::TlsReloader,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DataplaneError>>,
}

impl RunningHost {
    pub fn start(
        dir: &Path,
        options: &HostOptions,
        tls: &TlsFiles,
        host_addresses: Vec<HostAddress>,
    ) -> anyhow::Result<Self> {
        let path = dir.join("host-agent.toml");
        std::fs::write(&path, host_config_toml(options, tls))?;
        let config = HostConfig::load(&path)?;
        let (dataplane, log) = DryRun::new(host_addresses);
        let mut agent = HostAgent::new(config, dataplane)?;
        if let Some(every) = options.periodic_reconcile {
            agent = agent.with_periodic_reconcile(every);
        }
        let status = agent.status();
        let tls = agent.tls_reloader();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(shutdown.clone()));
        Ok(RunningHost {
            status,
            log,
            tls,
            shutdown,
            task,
        })
    }

    /// Waits until the status satisfies `ready`, or fails naming the last status.
    pub async fn wait_for(
        &mut self,
        what: &str,
        ready: impl Fn(&HostStatus) -> bool,
    ) -> anyhow::Result<HostStatus> {
        let waited =
            tokio::time::timeout(Duration::from_secs(15), self.status.wait_for(|s| ready(s)))
                .await
                .map(|r| r.map(|status| status.clone()));
        match waited {
            Ok(Ok(status)) => Ok(status),
            _ => anyhow::bail!(
                "timed out waiting for {what}; last status: {:?}",
                *self.status.borrow()
            ),
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

/// Installs the ring provider and a test log subscriber once per process.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// The series (name and labels) that appear more than once in a metrics
/// exposition: Prometheus keeps one sample of each and drops the rest.
pub fn repeated_series(exposition: &str) -> Vec<String> {
    let mut series: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _value)| series))
        .collect();
    series.sort_unstable();
    let mut repeated: Vec<String> = series
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].to_string())
        .collect();
    repeated.dedup();
    repeated
}

/// Both agents in-process (the DPU configured by `options`), the host's
/// first contract applied.
pub async fn agents_applied(
    options: &DpuOptions,
) -> anyhow::Result<(Certs, RunningDpu, RunningHost)> {
    init();
    let certs = Certs::new()?;
    let config = dpu_config(certs.dir.path(), options, &certs.dpu)?;
    let dpu = RunningDpu::start(&config).await?;
    let mut host = RunningHost::start(
        certs.dir.path(),
        &HostOptions::new(dpu.addr),
        &certs.host,
        Vec::new(),
    )?;
    host.wait_for("the first contract applied", |s| s.applied.is_some())
        .await?;
    Ok((certs, dpu, host))
}
