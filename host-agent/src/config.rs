//! The host-agent TOML config and its validation.
//!
//! Parsing is strict (unknown fields are errors) and every error names the
//! field and the value.

use ipnet::IpNet;
use noverlay_proto::{
    PROTOCOL_VERSION,
    contract::{self, Family, Masquerade, Mode},
    pb,
    tls::{PeerIdentity, TlsFiles},
};
use serde::Deserialize;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Route protocol number marking our routes (`proto 240` in `ip route`).
/// Outside the numbers iproute2 names, so nothing else uses it by accident.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 240;
/// Name of our nftables table (family inet).
pub const DEFAULT_NFT_TABLE: &str = "noverlay";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Node name, for the DPU's logs and status.
    pub host_name: String,
    /// Serve Prometheus metrics at http://<this>/metrics (off when absent).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The owner-only unix socket `host-agent status` reads.
    #[serde(default = "default_status_socket")]
    pub status_socket: PathBuf,
    /// The interface facing the DPU's host representor, e.g. "eth0".
    pub gateway_interface: String,
    /// OVN-Kubernetes' management port (its node-subnet route always stays).
    #[serde(default = "default_mp0")]
    pub mp0_interface: String,
    /// What to do about cluster-CIDR routes through mp0 (see [`Mp0Routes`]).
    #[serde(default)]
    pub mp0_routes: Mp0Routes,
    pub dpu: DpuEndpoint,
    pub tls: TlsFiles,
    /// Defaults to the one mode in scope. Any other mode makes the agent
    /// tear down what it owns and exit.
    #[serde(default = "in_scope_mode")]
    pub mode: Mode,
    pub ipv4: Option<HostFamily>,
    pub ipv6: Option<HostFamily>,
    #[serde(default)]
    pub ownership: Ownership,
    #[serde(default)]
    pub reconnect: Reconnect,
    #[serde(default)]
    pub ovnkube: HostOvnkube,
}

/// The `[ovnkube]` section: where a masquerade subnet left out of this file
/// comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOvnkube {
    /// Read the running ovnkube-node's (dpu-host mode) command line and
    /// file for a family's masquerade subnet left out here; on by default.
    #[serde(default = "default_true")]
    pub process: bool,
}

impl Default for HostOvnkube {
    fn default() -> Self {
        HostOvnkube { process: true }
    }
}

fn default_true() -> bool {
    true
}

/// Cluster-CIDR routes through mp0: OVN-Kubernetes' route manager owns them
/// where ovnkube-node runs, and restores them whenever they change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mp0Routes {
    /// Leave them alone; ours win by being more specific (each cluster CIDR
    /// is routed as its two halves). Right next to ovnkube-node, harmless
    /// without it.
    #[default]
    Keep,
    /// Route each cluster CIDR as is and delete broad routes through mp0:
    /// for hosts where nothing manages mp0's routes.
    Remove,
}

fn default_status_socket() -> PathBuf {
    PathBuf::from(crate::local_status::DEFAULT_SOCKET)
}

fn default_mp0() -> String {
    "ovn-k8s-mp0".into()
}

fn in_scope_mode() -> Mode {
    Mode::IN_SCOPE
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpuEndpoint {
    /// host:port of the dpu-agent, e.g. "192.0.2.1:50051".
    pub address: String,
    /// The SAN the DPU's certificate must carry.
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFamily {
    /// Must equal the DPU's, e.g. "169.254.169.0/29" or "fd69::/125". Left
    /// out: as the ovnkube-node running on this host resolves it (its
    /// command line, its file, its default).
    pub masquerade_subnet: Option<IpNet>,
    /// The broadest cluster CIDR the host takes from the DPU, as a prefix
    /// length (default 8 for IPv4, 32 for IPv6): a DPU must not route large
    /// parts of the address space through itself.
    pub shortest_cluster_prefix: Option<u8>,
}

/// Default shortest cluster-CIDR prefix per family.
pub const DEFAULT_SHORTEST_PREFIX_V4: u8 = 8;
pub const DEFAULT_SHORTEST_PREFIX_V6: u8 = 32;

/// Marks on everything the agent installs, so reconcile and cleanup touch
/// nothing else.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    #[serde(default = "default_route_protocol")]
    pub route_protocol: u8,
    #[serde(default = "default_nft_table")]
    pub nft_table: String,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            route_protocol: DEFAULT_ROUTE_PROTOCOL,
            nft_table: DEFAULT_NFT_TABLE.into(),
        }
    }
}

/// Route protocol numbers the kernel and routing daemons use (iproute2's
/// rt_protos and rt_protos.d): ours must be none of them.
const TAKEN_ROUTE_PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
];

fn default_route_protocol() -> u8 {
    DEFAULT_ROUTE_PROTOCOL
}

fn default_nft_table() -> String {
    DEFAULT_NFT_TABLE.into()
}

/// Reconnect backoff towards the DPU.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

fn default_initial_ms() -> u64 {
    200
}

fn default_max_ms() -> u64 {
    30_000
}

/// A validated host config.
#[derive(Debug, Clone)]
pub struct ValidHostConfig {
    pub raw: HostConfig,
    /// The file it was loaded from, for reloads (empty when parsed from text).
    pub path: PathBuf,
    pub dpu_identity: PeerIdentity,
    /// The configured families, IPv4 first.
    pub masquerades: Vec<Masquerade>,
    /// The shortest cluster-CIDR prefix accepted, per configured family.
    pub shortest_prefixes: Vec<(Family, u8)>,
    /// Each masquerade subnet and where it came from, as status shows it.
    pub facts: Vec<String>,
}

impl ValidHostConfig {
    /// What the host proposes when negotiating.
    pub fn proposal(&self) -> pb::NegotiateRequest {
        pb::NegotiateRequest {
            protocol_version: PROTOCOL_VERSION,
            mode: Some(self.raw.mode.to_pb()),
            families: self
                .masquerades
                .iter()
                .map(|m| pb::FamilyProposal {
                    family: m.family().to_pb() as i32,
                    masquerade_subnet: m.subnet.to_string(),
                })
                .collect(),
            gateway_interface: self.raw.gateway_interface.clone(),
            host_name: self.raw.host_name.clone(),
        }
    }

    pub fn backoff_bounds(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.raw.reconnect.initial_ms),
            Duration::from_millis(self.raw.reconnect.max_ms),
        )
    }
}

impl HostConfig {
    /// The fields that differ from `next` other than the TLS files: a
    /// running agent takes new credentials (from its next connection) but
    /// nothing else without a restart, so a reload that changes anything
    /// else is refused whole.
    pub fn changes_needing_restart(&self, next: &HostConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let mut differ = |name, changed: bool| {
            if changed {
                fields.push(name);
            }
        };
        differ("host_name", self.host_name != next.host_name);
        differ("metrics_listen", self.metrics_listen != next.metrics_listen);
        differ("status_socket", self.status_socket != next.status_socket);
        differ(
            "gateway_interface",
            self.gateway_interface != next.gateway_interface,
        );
        differ("mp0_interface", self.mp0_interface != next.mp0_interface);
        differ("mp0_routes", self.mp0_routes != next.mp0_routes);
        differ("dpu", self.dpu != next.dpu);
        differ("mode", self.mode != next.mode);
        differ("ipv4", self.ipv4 != next.ipv4);
        differ("ipv6", self.ipv6 != next.ipv6);
        differ("ownership", self.ownership != next.ownership);
        differ("reconnect", self.reconnect != next.reconnect);
        differ("ovnkube", self.ovnkube != next.ovnkube);
        fields
    }

    pub fn load(path: &Path) -> Result<ValidHostConfig, ConfigError> {
        // A regular file of at most 1 MiB: a FIFO or a device named by
        // mistake is refused without waiting on it.
        let text = noverlay_runtime::files::read_bounded(path, 1024 * 1024).map_err(|source| {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let in_file = |e| ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let raw = Self::parse(&text).map_err(in_file)?;
        let ovnkube = if raw.ovnkube.process && raw.leaves_masquerade_out() {
            noverlay_ovnkube_facts::process::Lookup {
                proc_dir: PathBuf::from("/proc"),
                process: true,
                file: None,
            }
            .facts(noverlay_ovnkube_facts::process::DEADLINE)
            .map_err(|e| in_file(ConfigError::Ovnkube(e)))?
        } else {
            None
        };
        let mut config = raw.validate_with(ovnkube.as_ref()).map_err(in_file)?;
        config.path = path.to_path_buf();
        // The identity is checked as the DPU will see it, before connecting.
        noverlay_proto::tls::check_identity(&config.raw.tls, noverlay_proto::tls::Role::Client)
            .map_err(|e| ConfigError::InFile {
                path: path.to_path_buf(),
                source: Box::new(ConfigError::Invalid {
                    field: "tls".into(),
                    reason: e.to_string(),
                }),
            })?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Whether a configured family leaves its masquerade subnet out.
    pub fn leaves_masquerade_out(&self) -> bool {
        [&self.ipv4, &self.ipv6]
            .iter()
            .any(|f| f.as_ref().is_some_and(|f| f.masquerade_subnet.is_none()))
    }

    /// Checks every field; every fact must be in this file.
    pub fn validate(self) -> Result<ValidHostConfig, ConfigError> {
        self.validate_with(None)
    }

    /// As [`HostConfig::validate`], a masquerade subnet left out taken
    /// from ovnkube-node's configuration (dpu-host mode).
    pub fn validate_with(
        self,
        ovnkube: Option<&noverlay_ovnkube_facts::OvnkubeFacts>,
    ) -> Result<ValidHostConfig, ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            field: field.into(),
            reason,
        };
        if self.host_name.is_empty() || self.host_name.len() > 253 {
            return Err(invalid(
                "host_name",
                format!("{:?} must be 1-253 characters", self.host_name),
            ));
        }
        for (field, name) in [
            ("gateway_interface", &self.gateway_interface),
            ("mp0_interface", &self.mp0_interface),
        ] {
            contract::validate_interface_name("interface", name)
                .map_err(|e| invalid(field, e.to_string()))?;
        }
        // sun_path holds 107 bytes and a NUL.
        let socket = &self.status_socket;
        if !socket.is_absolute() || socket.as_os_str().len() > 107 {
            return Err(invalid(
                "status_socket",
                format!(
                    "{} must be an absolute path of at most 107 bytes",
                    socket.display()
                ),
            ));
        }
        if self.gateway_interface == self.mp0_interface {
            return Err(invalid(
                "mp0_interface",
                format!("{:?} is also the gateway interface", self.mp0_interface),
            ));
        }
        if !self.dpu.address.contains(':') || self.dpu.address.ends_with(':') {
            return Err(invalid(
                "dpu.address",
                format!("{:?} is not host:port", self.dpu.address),
            ));
        }
        let dpu_identity = PeerIdentity::parse(&self.dpu.identity).map_err(|_| {
            invalid(
                "dpu.identity",
                format!(
                    "{:?} is neither a DNS name nor an IP address",
                    self.dpu.identity
                ),
            )
        })?;
        let mut masquerades = Vec::new();
        let mut shortest_prefixes = Vec::new();
        let mut facts = Vec::new();
        for (name, family, expected, default_shortest, bits) in [
            (
                "ipv4",
                &self.ipv4,
                Family::Ipv4,
                DEFAULT_SHORTEST_PREFIX_V4,
                32,
            ),
            (
                "ipv6",
                &self.ipv6,
                Family::Ipv6,
                DEFAULT_SHORTEST_PREFIX_V6,
                128,
            ),
        ] {
            let Some(family) = family else { continue };
            let shortest = family.shortest_cluster_prefix.unwrap_or(default_shortest);
            if !(1..=bits).contains(&shortest) {
                return Err(invalid(
                    &format!("{name}.shortest_cluster_prefix"),
                    format!("{shortest} must be between 1 and {bits}"),
                ));
            }
            shortest_prefixes.push((expected, shortest));
            let field = format!("{name}.masquerade_subnet");
            let (subnet, source) = match (family.masquerade_subnet, ovnkube) {
                (Some(subnet), _) => (subnet, "from host-agent.toml".to_string()),
                (None, Some(ovnkube)) => {
                    ovnkube.check_modes("dpu-host").map_err(|reason| {
                        invalid(
                            "ovnkube",
                            format!(
                                "{reason}: set masquerade_subnet here, or [ovnkube] process = false"
                            ),
                        )
                    })?;
                    let theirs = ovnkube.masquerade(expected == Family::Ipv6);
                    (theirs.value, theirs.origin.to_string())
                }
                (None, None) => {
                    return Err(invalid(
                        &field,
                        "missing: set it here, or run host-agent next to ovnkube-node (dpu-host mode), whose configuration gives it ([ovnkube] process)".into(),
                    ));
                }
            };
            let masquerade =
                Masquerade::from_subnet(subnet).map_err(|e| invalid(&field, e.to_string()))?;
            if masquerade.family() != expected {
                return Err(invalid(&field, format!("{subnet} is not an {name} prefix")));
            }
            facts.push(format!("{field} = {subnet} ({source})"));
            masquerades.push(masquerade);
        }
        if masquerades.is_empty() {
            return Err(invalid(
                "ipv4/ipv6",
                "configure at least one address family".into(),
            ));
        }
        let table = &self.ownership.nft_table;
        if table.is_empty()
            || table.len() > 64
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "ownership.nft_table",
                format!("{table:?} must be 1-64 letters, digits, '_' or '-'"),
            ));
        }
        let protocol = self.ownership.route_protocol;
        if let Some((_, owner)) = TAKEN_ROUTE_PROTOCOLS.iter().find(|(n, _)| *n == protocol) {
            return Err(invalid(
                "ownership.route_protocol",
                format!(
                    "{protocol} is the kernel's or a routing daemon's ({owner}): reconcile and cleanup would take its routes for ours; use a number of our own such as {DEFAULT_ROUTE_PROTOCOL}"
                ),
            ));
        }
        let reconnect = &self.reconnect;
        if reconnect.initial_ms == 0 || reconnect.initial_ms > reconnect.max_ms {
            return Err(invalid(
                "reconnect",
                format!(
                    "initial_ms {} must be > 0 and <= max_ms {}",
                    reconnect.initial_ms, reconnect.max_ms
                ),
            ));
        }
        Ok(ValidHostConfig {
            raw: self,
            path: PathBuf::new(),
            dpu_identity,
            masquerades,
            shortest_prefixes,
            facts,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    #[error("{0}")]
    Parse(String),
    #[error("field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Ovnkube(noverlay_ovnkube_facts::OvnkubeError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
host_name = "node1"
gateway_interface = "eth0"

[dpu]
address = "127.0.0.1:50051"
identity = "dpu-agent.node1"

[tls]
cert = "/etc/noverlay/host-agent.crt"
key = "/etc/noverlay/host-agent.key"
ca = "/etc/noverlay/ca.crt"

[ipv4]
masquerade_subnet = "169.254.0.0/17"
"#;

    fn with(replace: &str, by: &str) -> Result<ValidHostConfig, ConfigError> {
        assert!(EXAMPLE.contains(replace), "{replace}");
        HostConfig::parse(&EXAMPLE.replace(replace, by))?.validate()
    }

    #[test]
    fn a_masquerade_subnet_left_out_is_ovnkubes_on_a_dpu_host() {
        let ovnkube = |line: &str| {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            noverlay_ovnkube_facts::OvnkubeFacts::from_command_line(&argv, 4242)
                .expect("parses")
                .expect("a node")
        };
        let left_out = EXAMPLE.replace("masquerade_subnet = \"169.254.0.0/17\"\n", "") + "[ipv6]\n";
        let raw = HostConfig::parse(&left_out).expect("parses");
        assert!(raw.leaves_masquerade_out());
        let config = raw
            .clone()
            .validate_with(Some(&ovnkube(
                "/usr/bin/ovnkube --init-node node1 --ovnkube-node-mode=dpu-host --gateway-v4-masquerade-subnet=169.254.0.0/17",
            )))
            .expect("valid");
        assert_eq!(
            config.facts,
            [
                "ipv4.masquerade_subnet = 169.254.0.0/17 (from ovnkube's command line (pid 4242, --gateway-v4-masquerade-subnet))",
                "ipv6.masquerade_subnet = fd69::/125 (OVN-Kubernetes' default (ovnkube sets none))",
            ]
        );
        let error = raw
            .clone()
            .validate_with(Some(&ovnkube("ovnkube --init-node node1")))
            .expect_err("full mode")
            .to_string();
        assert!(
            error.contains("mode \"full\"") && error.contains("not \"dpu-host\""),
            "{error}"
        );
        let error = raw.validate().expect_err("nobody says").to_string();
        assert!(
            error.contains("ipv4.masquerade_subnet") && error.contains("missing"),
            "{error}"
        );
        // Set here: this file's, said so.
        assert_eq!(
            with("", "").expect("valid").facts,
            ["ipv4.masquerade_subnet = 169.254.0.0/17 (from host-agent.toml)"]
        );
    }

    #[test]
    fn example_is_valid_with_defaults() {
        let config = with("", "").expect("valid");
        assert_eq!(config.raw.mp0_interface, "ovn-k8s-mp0");
        assert_eq!(config.raw.ownership.route_protocol, DEFAULT_ROUTE_PROTOCOL);
        let proposal = config.proposal();
        assert_eq!(proposal.families.len(), 1);
        assert_eq!(proposal.families[0].masquerade_subnet, "169.254.0.0/17");
    }

    #[test]
    fn errors_name_field_and_value() {
        for (from, to, field, value) in [
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"this-name-is-too-long\"",
                "gateway_interface",
                "this-name-is-too-long",
            ),
            (
                "address = \"127.0.0.1:50051\"",
                "address = \"127.0.0.1\"",
                "dpu.address",
                "127.0.0.1",
            ),
            (
                "identity = \"dpu-agent.node1\"",
                "identity = \"a b\"",
                "dpu.identity",
                "a b",
            ),
            (
                "masquerade_subnet = \"169.254.0.0/17\"",
                "masquerade_subnet = \"fd69::/112\"",
                "ipv4.masquerade_subnet",
                "fd69::/112",
            ),
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"eth0\"\n[ownership]\nroute_protocol = 2",
                "ownership.route_protocol",
                "2",
            ),
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"eth0\"\n[ownership]\nroute_protocol = 16",
                "ownership.route_protocol",
                "16 is the kernel's or a routing daemon's (dhcp)",
            ),
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"eth0\"\n[ownership]\nroute_protocol = 186",
                "ownership.route_protocol",
                "(bgp)",
            ),
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"eth0\"\n[ownership]\nnft_table = \"x;y\"",
                "ownership.nft_table",
                "x;y",
            ),
            (
                "gateway_interface = \"eth0\"",
                "gateway_interface = \"eth0\"\n[reconnect]\ninitial_ms = 5000\nmax_ms = 100",
                "reconnect",
                "5000",
            ),
        ] {
            let err = with(from, to).expect_err(to).to_string();
            assert!(err.contains(field) && err.contains(value), "{to}: {err}");
        }
    }

    #[test]
    fn a_reload_names_every_field_it_cannot_take() {
        let running = with("", "").expect("valid").raw;
        let rotated = with("host-agent.crt", "host-agent-2.crt")
            .expect("valid")
            .raw;
        assert!(running.changes_needing_restart(&rotated).is_empty());
        let moved = with(
            "gateway_interface = \"eth0\"",
            "gateway_interface = \"eth1\"\n[ownership]\nroute_protocol = 241",
        )
        .expect("valid")
        .raw;
        assert_eq!(
            running.changes_needing_restart(&moved),
            ["gateway_interface", "ownership"]
        );
    }

    #[test]
    fn no_family_and_unknown_field_are_refused() {
        let err = with("[ipv4]\nmasquerade_subnet = \"169.254.0.0/17\"", "").expect_err("none");
        assert!(
            err.to_string().contains("at least one address family"),
            "{err}"
        );
        let err = with("host_name", "hostname").expect_err("typo");
        assert!(err.to_string().contains("hostname"), "{err}");
    }
}
