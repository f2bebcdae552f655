//! The dpu-agent TOML config and its validation.
//!
//! Parsing is strict (unknown fields are errors, so a typo never silently
//! falls back to a default) and every error names the field and the value.

mod bridge;
mod facts;
mod family;
mod northbound;

pub use bridge::{BridgeConfig, StaticPorts};
pub use facts::{Fact, FactSource};
pub use family::FamilyConfig;
pub use northbound::{GatewayPort, GatewayPortSource, OvnConfig};
use noverlay_ovnkube_facts::{self as ovnkube, OvnkubeFacts};
use noverlay_proto::{
    contract::{ContractError, Mode, Offer},
    tls::{PeerIdentity, TlsFiles},
};
use noverlay_runtime::files::read_bounded;
use serde::Deserialize;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Our OpenFlow cookie ("novr"): distinct from OVN-Kubernetes' 0xdeff105.
pub const DEFAULT_COOKIE: u64 = 0x6e6f_7672;

/// The config file as written by the operator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpuConfig {
    /// Address the gRPC server listens on, e.g. "0.0.0.0:50051".
    pub listen: SocketAddr,
    /// The only host identity (certificate SAN) allowed to connect.
    pub authorised_host: String,
    /// Serve Prometheus metrics at http://<this>/metrics (off when absent).
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    /// Defaults to the one mode in scope; any other mode is refused.
    #[serde(default = "in_scope_mode")]
    pub mode: Mode,
    /// MTU of the host's cluster-CIDR routes; from ovnkube's file when
    /// absent here.
    pub mtu: Option<u32>,
    pub ipv4: Option<FamilyConfig>,
    pub ipv6: Option<FamilyConfig>,
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub uplink_guard: UplinkGuardConfig,
    /// Check OVN's half of the contract in the local northbound database.
    pub ovn: Option<OvnConfig>,
    /// Where ovnkube-node's facts are: its running process (its command
    /// line and the file it reads), else a file. By default the process,
    /// else ovnkube's default file if it exists.
    pub ovnkube: Option<OvnkubeSection>,
}

/// The `[ovnkube]` section of dpu-agent.toml.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvnkubeSection {
    /// ovnkube's INI file, read when no ovnkube-node process runs in this
    /// network namespace; an empty string reads none.
    pub config: Option<PathBuf>,
    /// Look for the running ovnkube-node (its command line, and its file
    /// through its root); on by default.
    #[serde(default = "default_true")]
    pub process: bool,
}

/// The uplink guard (an nftables netdev egress chain on the uplink that
/// drops packets to or from a masquerade subnet). On by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkGuardConfig {
    /// Turn it off only where something else already keeps masquerade
    /// sources off the underlay (e.g. all traffic is offloaded to NIC
    /// hardware, which bypasses the guard anyway), or where another tool
    /// owns the uplink's netdev hooks.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for UplinkGuardConfig {
    fn default() -> Self {
        UplinkGuardConfig { enabled: true }
    }
}

fn in_scope_mode() -> Mode {
    Mode::IN_SCOPE
}

fn default_true() -> bool {
    true
}

/// A config file is a few KiB; anything past this is not one.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A config that passed validation, with its derived offer.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub raw: DpuConfig,
    pub authorised_host: PeerIdentity,
    /// Revision 1; the running agent renumbers on reload.
    pub offer: Offer,
    pub static_ports: Option<crate::flows::PortMap>,
    /// Each fact of the offer and where it came from.
    pub facts: Vec<Fact>,
    /// The ovnkube-node process whose command line gave facts, if one did.
    pub ovnkube_process: Option<u32>,
}

impl ValidConfig {
    /// How the flows of this config are rendered.
    pub fn flow_settings(&self) -> crate::flows::FlowSettings {
        crate::flows::FlowSettings {
            cookie: self.raw.bridge.cookie,
            base_pipeline: self.raw.bridge.base_pipeline,
            ct_zone: crate::flows::DEFAULT_CT_ZONE,
        }
    }
}

impl DpuConfig {
    /// The fields that differ from `next` and that a running agent cannot
    /// take without a restart: the listen addresses, the bridge (static
    /// port numbers excepted), the uplink guard and the OVN check. Families, masquerade subnets and mode are
    /// checked against the negotiated offer by the reload itself.
    pub fn changes_needing_restart(&self, next: &DpuConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.listen != next.listen {
            fields.push("listen");
        }
        if self.metrics_listen != next.metrics_listen {
            fields.push("metrics_listen");
        }
        let without_ports = |bridge: &BridgeConfig| BridgeConfig {
            static_ports: None,
            ..bridge.clone()
        };
        if without_ports(&self.bridge) != without_ports(&next.bridge) {
            fields.push("bridge");
        }
        if self.uplink_guard != next.uplink_guard {
            fields.push("uplink_guard");
        }
        if self.ovn != next.ovn {
            fields.push("ovn");
        }
        if self.ovnkube != next.ovnkube {
            fields.push("ovnkube");
        }
        fields
    }

    /// Where this config says ovnkube's facts are: the running ovnkube-node
    /// (unless `[ovnkube] process = false`), else the `[ovnkube] config`
    /// file (none if empty), else ovnkube's default file if it is there.
    pub fn ovnkube_lookup(&self) -> ovnkube::process::Lookup {
        let section = self.ovnkube.clone().unwrap_or(OvnkubeSection {
            config: None,
            process: true,
        });
        let file = match section.config {
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(ovnkube::FileRef {
                path,
                named_by: ovnkube::FileNamedBy::AgentConfig,
            }),
            None => {
                let default = PathBuf::from(ovnkube::DEFAULT_PATH);
                default.exists().then_some(ovnkube::FileRef {
                    path: default,
                    named_by: ovnkube::FileNamedBy::OvnkubeDefault,
                })
            }
        };
        ovnkube::process::Lookup {
            proc_dir: PathBuf::from("/proc"),
            process: section.process,
            file,
        }
    }

    /// Reads (a regular file of at most 1 MiB), parses and validates a
    /// config file; an underlay IP it leaves
    /// out is asked of `northbound` (only then, and only with `[ovn]`).
    pub fn load(
        path: &Path,
        northbound: &dyn GatewayPortSource,
    ) -> Result<ValidConfig, ConfigError> {
        let text = read_bounded(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = Self::parse(&text).map_err(|e| e.in_file(path))?;
        let ovnkube = raw
            .ovnkube_lookup()
            .facts(ovnkube::process::DEADLINE)
            .map_err(ConfigError::Ovnkube)?;
        // Read whenever [ovn] is there (to check ovnkube's facts against
        // OVN's); it must answer only when a fact is left to it.
        let gateway_port = match &raw.ovn {
            Some(ovn) => match northbound.gateway_port(ovn) {
                Ok(port) => Some(port),
                Err(e) if raw.needs_northbound(ovnkube.as_ref()) => {
                    return Err(ConfigError::Northbound(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OVN's northbound database not read: ovnkube's facts are not checked against it");
                    None
                }
            },
            None => None,
        };
        let config = raw
            .validate_from(ovnkube.as_ref(), gateway_port.as_ref())
            .map_err(|e| e.in_file(path))?;
        // The identity is checked as the host will see it, before serving.
        noverlay_proto::tls::check_identity(&config.raw.tls, noverlay_proto::tls::Role::Server)
            .map_err(|e| {
                ConfigError::Invalid {
                    field: "tls".into(),
                    reason: e.to_string(),
                }
                .in_file(path)
            })?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Checks every field; the error names the first bad one. Every fact
    /// must be in this file (no ovnkube file).
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        self.validate_with(None)
    }

    /// As [`DpuConfig::validate`], with the facts of ovnkube's file filling
    /// in what this file leaves out (and checked against what it sets).
    pub fn validate_with(self, ovnkube: Option<&OvnkubeFacts>) -> Result<ValidConfig, ConfigError> {
        self.validate_from(ovnkube, None)
    }

    /// As [`DpuConfig::validate_with`], with the gateway router's port as
    /// read from OVN's northbound database giving the underlay IPs this
    /// file leaves out.
    pub fn validate_from(
        self,
        ovnkube: Option<&OvnkubeFacts>,
        gateway_port: Option<&GatewayPort>,
    ) -> Result<ValidConfig, ConfigError> {
        let authorised_host =
            PeerIdentity::parse(&self.authorised_host).map_err(|_| ConfigError::Invalid {
                field: "authorised_host".into(),
                reason: format!(
                    "{:?} is neither a DNS name nor an IP address",
                    self.authorised_host
                ),
            })?;
        if !self.mode.is_in_scope() {
            return Err(ConfigError::Invalid {
                field: "mode".into(),
                reason: ContractError::OutOfScope(self.mode).to_string(),
            });
        }
        if let Some(ovnkube) = ovnkube {
            ovnkube
                .check_modes("dpu")
                .map_err(|reason| ConfigError::Invalid {
                    field: "ovnkube".into(),
                    reason: format!(
                        "{reason} (or set [ovnkube] process = false and name a file in [ovnkube] config)"
                    ),
                })?;
        }
        let mut facts = Vec::new();
        let families = self.families(ovnkube, gateway_port, &mut facts)?;
        let mtu = facts::merge(
            "mtu",
            self.mtu,
            facts::theirs(ovnkube, |o| &o.mtu),
            &mut facts,
        )?
        .ok_or_else(|| facts::missing("mtu", ovnkube))?;
        let offer = Offer::new(1, self.mode, families, mtu).map_err(|e| {
            let field = match &e {
                ContractError::BadMtu { .. } => "mtu",
                ContractError::Missing("families") => "ipv4/ipv6",
                _ => "ipv4/ipv6.cluster_cidrs",
            };
            ConfigError::Invalid {
                field: field.into(),
                reason: e.to_string(),
            }
        })?;
        if let Some(ovn) = &self.ovn {
            ovn.validate()
                .map_err(|(field, reason)| ConfigError::Invalid {
                    field: field.into(),
                    reason,
                })?;
        }
        let static_ports = self.bridge.validate()?;
        if static_ports.is_some() && self.uplink_guard.enabled && self.bridge.uplink.is_none() {
            return Err(ConfigError::Invalid {
                field: "bridge.uplink".into(),
                reason: "the uplink guard needs the uplink's device name, and with static_ports nothing looks it up in OVSDB: set [bridge] uplink".into(),
            });
        }
        Ok(ValidConfig {
            raw: self,
            authorised_host,
            offer,
            static_ports,
            facts,
            ovnkube_process: ovnkube.and_then(|o| o.process),
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
    #[error("config {}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Ovnkube(ovnkube::OvnkubeError),
    /// The underlay IP is left to OVN's northbound database, which cannot
    /// be read (yet): worth waiting for at start.
    #[error(
        "a fact left to OVN's northbound database (an underlay IP, or a masquerade subnet nobody else names) cannot be read there: {0} (set [ipv4]/[ipv6] underlay_ip and masquerade_subnet, or see [ovn])"
    )]
    Northbound(String),
}

impl ConfigError {
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(file.to_path_buf()),
                message,
            },
            ConfigError::Invalid { field, reason } => ConfigError::Invalid {
                field: format!("{field} (in {})", file.display()),
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::BasePipeline;

    pub(crate) const EXAMPLE: &str = r#"
listen = "127.0.0.1:50051"
authorised_host = "host-agent.node1"
mtu = 1400

[tls]
cert = "/etc/noverlay/dpu-agent.crt"
key = "/etc/noverlay/dpu-agent.key"
ca = "/etc/noverlay/ca.crt"

[ipv4]
masquerade_subnet = "169.254.0.0/17"
cluster_cidrs = ["198.18.128.0/17"]
underlay_ip = "198.18.0.10"

[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "patch-breth0_node1-to-br-int"
uplink = "p0"

[bridge.static_ports]
host_representor = 1
patch_port = 2
uplink = 3
bridge_mac = "02:00:c6:12:00:0a"
"#;

    fn with(replace: &str, by: &str) -> Result<ValidConfig, ConfigError> {
        assert!(EXAMPLE.contains(replace), "{replace}");
        DpuConfig::parse(&EXAMPLE.replace(replace, by))?.validate()
    }

    #[test]
    fn example_config_is_valid_and_uses_in_scope_defaults() {
        let config = with("", "").expect("valid");
        assert_eq!(config.offer.revision, 1);
        assert_eq!(config.raw.mode, Mode::IN_SCOPE);
        assert_eq!(config.raw.bridge.cookie, DEFAULT_COOKIE);
        assert_eq!(config.raw.bridge.base_pipeline, BasePipeline::Auto);
        assert!(
            config.raw.uplink_guard.enabled,
            "the guard is on by default"
        );
        let off = format!("{EXAMPLE}\n[uplink_guard]\nenabled = false\n");
        let off = DpuConfig::parse(&off).expect("parses");
        assert!(!off.uplink_guard.enabled);
        for (text, mode) in [
            ("true", BasePipeline::On),
            ("false", BasePipeline::Off),
            ("\"auto\"", BasePipeline::Auto),
        ] {
            let config = with(
                "uplink = \"p0\"\n",
                &format!("uplink = \"p0\"\nbase_pipeline = {text}\n"),
            )
            .expect("valid");
            assert_eq!(config.raw.bridge.base_pipeline, mode);
        }
        let error = with(
            "uplink = \"p0\"\n",
            "uplink = \"p0\"\nbase_pipeline = \"sometimes\"\n",
        )
        .expect_err("refused")
        .to_string();
        assert!(
            error.contains("base_pipeline") && error.contains("sometimes"),
            "{error}"
        );
    }

    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let running = with("", "").expect("valid").raw;
        let same = with("mtu = 1400", "mtu = 1300").expect("valid").raw;
        assert!(running.changes_needing_restart(&same).is_empty());
        let moved = with(
            "listen = \"127.0.0.1:50051\"",
            "listen = \"127.0.0.1:50052\"",
        )
        .expect("valid")
        .raw;
        assert_eq!(running.changes_needing_restart(&moved), ["listen"]);
        let other_bridge = with("uplink = \"p0\"", "uplink = \"p1\"")
            .expect("valid")
            .raw;
        assert_eq!(running.changes_needing_restart(&other_bridge), ["bridge"]);
        let guard_off = DpuConfig::parse(&format!("{EXAMPLE}\n[uplink_guard]\nenabled = false\n"))
            .expect("parses");
        assert_eq!(
            running.changes_needing_restart(&guard_off),
            ["uplink_guard"]
        );
        let other_ports = with("uplink = 3", "uplink = 4").expect("valid").raw;
        assert!(running.changes_needing_restart(&other_ports).is_empty());
        let checked = DpuConfig::parse(&format!("{EXAMPLE}{OVN}")).expect("parses");
        assert_eq!(running.changes_needing_restart(&checked), ["ovn"]);
    }

    const OVN: &str =
        "\n[ovn]\nnb_socket = \"/var/run/ovn/ovnnb_db.sock\"\ngateway_router = \"GR_node1\"\n";

    #[test]
    fn plain_tcp_to_the_switch_stays_on_loopback_unless_allowed() {
        for target in [
            "tcp:127.0.0.1:6653",
            "tcp:[::1]:6653",
            "unix:/run/ovs/breth0.mgmt",
        ] {
            let line = format!("uplink = \"p0\"\nopenflow = \"{target}\"\n");
            with("uplink = \"p0\"\n", &line).unwrap_or_else(|e| panic!("{target}: {e}"));
        }
        let allowed =
            "uplink = \"p0\"\nopenflow = \"tcp:192.0.2.1:6653\"\nallow_remote_tcp = true\n";
        with("uplink = \"p0\"\n", allowed).expect("opted in");
    }

    #[test]
    fn the_ovn_section_is_optional_and_checked() {
        assert_eq!(with("", "").expect("valid").raw.ovn, None);
        let ovn = DpuConfig::parse(&format!("{EXAMPLE}{OVN}"))
            .and_then(DpuConfig::validate)
            .expect("valid")
            .raw
            .ovn
            .expect("an [ovn] section");
        assert_eq!(ovn.external_port(), "rtoe-GR_node1");
        for (bad, field, value) in [
            (
                "nb_socket = \"ovnnb_db.sock\"",
                "ovn.nb_socket",
                "ovnnb_db.sock",
            ),
            ("gateway_router = \"\"", "ovn.gateway_router", "\"\""),
            ("external_port = \"a\\nb\"", "ovn.external_port", "a\\nb"),
        ] {
            let key = bad.split(' ').next().unwrap_or_default();
            let text = format!("{EXAMPLE}{OVN}")
                .lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n");
            let error = DpuConfig::parse(&format!("{text}\n{bad}\n"))
                .and_then(DpuConfig::validate)
                .expect_err(bad)
                .to_string();
            assert!(error.contains(field) && error.contains(value), "{error}");
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases = [
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\nopenflow = \"tcp:breth0.example\"\n",
                "bridge.openflow",
                "tcp:breth0.example",
            ),
            ("mtu = 1400", "mtu = 70000", "mtu", "70000"),
            (
                "cluster_cidrs = [\"198.18.128.0/17\"]",
                "cluster_cidrs = [\"0.0.0.0/0\"]",
                "cluster_cidrs",
                "0.0.0.0/0",
            ),
            (
                "underlay_ip = \"198.18.0.10\"",
                "underlay_ip = \"fd00::1\"",
                "ipv4.underlay_ip",
                "ipv4",
            ),
            (
                "authorised_host = \"host-agent.node1\"",
                "authorised_host = \"not a name\"",
                "authorised_host",
                "not a name",
            ),
            (
                "uplink = \"p0\"",
                "uplink = \"p0; drop\"",
                "bridge.uplink",
                "p0; drop",
            ),
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\ncookie = 0\n",
                "bridge.cookie",
                "0x0 is reserved",
            ),
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\ncookie = 0xdeff105\n",
                "bridge.cookie",
                "0xdeff105 is OVN-Kubernetes'",
            ),
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\ncookie = 0xe745ecf105\n",
                "bridge.cookie",
                "0xe745ecf105 is OVN-Kubernetes'",
            ),
            (
                "bridge_mac = \"02:00:c6:12:00:0a\"",
                "bridge_mac = \"02:00\"",
                "bridge_mac",
                "02:00",
            ),
            ("uplink = 3", "uplink = 0", "static_ports.uplink", "0"),
            // Plain TCP off the machine: anyone there could pose as the switch.
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\nopenflow = \"tcp:192.0.2.1:6653\"\n",
                "bridge.openflow",
                "use the bridge's unix: management socket",
            ),
            // OVS's TLS is for remote controllers; the agent runs beside it.
            (
                "uplink = \"p0\"\n",
                "uplink = \"p0\"\nopenflow = \"ssl:192.0.2.1:6653\"\n",
                "bridge.openflow",
                "ssl: targets are not supported",
            ),
            // Nothing would look the uplink up for the guard.
            (
                "uplink = \"p0\"\n",
                "",
                "bridge.uplink",
                "with static_ports nothing looks it up",
            ),
            (
                "masquerade_subnet = \"169.254.0.0/17\"",
                "masquerade_subnet = \"169.254.0.0/30\"",
                "ipv4.masquerade_subnet",
                "169.254.0.0/30",
            ),
        ];
        for (from, to, field, value) in cases {
            let err = with(from, to).expect_err(to).to_string();
            assert!(err.contains(field) && err.contains(value), "{to}: {err}");
        }
    }

    #[test]
    fn out_of_scope_mode_is_refused() {
        let err = with(
            "mtu = 1400",
            "mtu = 1400\nmode = { node_mode = \"dpu-host\", gateway_mode = \"local\", transport = \"no-overlay\" }",
        )
        .expect_err("local gateway");
        assert!(err.to_string().contains("gateway local"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_syntax_are_parse_errors() {
        let err = with("mtu = 1400", "mtu = 1400\nmtuu = 1").expect_err("typo");
        assert!(err.to_string().contains("mtuu"), "{err}");
        let err = with("listen = \"127.0.0.1:50051\"", "listen = \"nowhere\"").expect_err("listen");
        assert!(
            err.to_string().contains("listen") || err.to_string().contains("nowhere"),
            "{err}"
        );
    }

    /// What an operator next to ovnkube-node writes: no cluster CIDRs,
    /// masquerade subnet or MTU here.
    const MINIMAL: &str = r#"
listen = "127.0.0.1:50051"
authorised_host = "host-agent.node1"

[tls]
cert = "/etc/noverlay/dpu-agent.crt"
key = "/etc/noverlay/dpu-agent.key"
ca = "/etc/noverlay/ca.crt"

[ipv4]
underlay_ip = "198.18.0.10"

[bridge]
name = "breth0"
host_representor = "pf0hpf"
patch_port = "patch-breth0_node1-to-br-int"
uplink = "p0"
"#;

    fn ovnkube(text: &str) -> OvnkubeFacts {
        OvnkubeFacts::from_file(
            ovnkube::FileRef {
                path: "/etc/openvswitch/ovn_k8s.conf".into(),
                named_by: ovnkube::FileNamedBy::OvnkubeDefault,
            },
            text,
        )
        .expect("parses")
    }

    #[test]
    fn facts_left_out_here_come_from_ovnkubes_file_with_their_source() {
        let facts = ovnkube("[default]\nmtu=1400\ncluster-subnets=198.18.128.0/17/24\n");
        let config = DpuConfig::parse(MINIMAL)
            .and_then(|c| c.validate_with(Some(&facts)))
            .expect("valid");
        let family = &config.offer.families[0];
        assert_eq!(
            family.cluster_cidrs,
            vec!["198.18.128.0/17".parse::<ipnet::IpNet>().expect("net")]
        );
        // ovnkube's real default (not /17: that is the example for
        // clusters with user-defined networks).
        assert_eq!(family.masquerade.subnet.to_string(), "169.254.169.0/29");
        assert_eq!(config.offer.mtu, 1400);
        let shown: Vec<String> = config.facts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "ipv4.masquerade_subnet = 169.254.169.0/29 (OVN-Kubernetes' default (ovnkube sets none))",
                "ipv4.cluster_cidrs = 198.18.128.0/17 (from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file))",
                "ipv4.underlay_ip = 198.18.0.10 (from dpu-agent.toml)",
                "mtu = 1400 (from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file))",
            ]
        );
        // Set in both places and agreeing: both are named.
        let both = DpuConfig::parse(&MINIMAL.replace(
            "underlay_ip",
            "cluster_cidrs = [\"198.18.128.0/17\"]\nunderlay_ip",
        ))
        .and_then(|c| c.validate_with(Some(&facts)))
        .expect("valid");
        assert!(both.facts.iter().any(|f| f.to_string()
            == "ipv4.cluster_cidrs = 198.18.128.0/17 (from dpu-agent.toml, and from /etc/openvswitch/ovn_k8s.conf (ovnkube's default file))"));
    }

    #[test]
    fn facts_set_in_both_places_must_agree_and_missing_ones_say_where_to_set_them() {
        let facts = ovnkube(
            "[default]\nmtu=1400\ncluster-subnets=198.18.128.0/17\n[gateway]\nv4-masquerade-subnet=169.254.169.0/29\n",
        );
        for (replace, by, field, values) in [
            (
                "authorised_host = \"host-agent.node1\"",
                "authorised_host = \"host-agent.node1\"\nmtu = 1500",
                "mtu",
                ["1500 here", "1400 from /etc/openvswitch/ovn_k8s.conf"],
            ),
            (
                "underlay_ip",
                "cluster_cidrs = [\"198.18.0.0/17\"]\nunderlay_ip",
                "ipv4.cluster_cidrs",
                ["198.18.0.0/17 here", "198.18.128.0/17 from"],
            ),
            (
                "underlay_ip",
                "masquerade_subnet = \"169.254.0.0/17\"\nunderlay_ip",
                "ipv4.masquerade_subnet",
                ["169.254.0.0/17 here", "169.254.169.0/29 from"],
            ),
        ] {
            let error = DpuConfig::parse(&MINIMAL.replace(replace, by))
                .and_then(|c| c.validate_with(Some(&facts)))
                .expect_err(field)
                .to_string();
            assert!(
                error.contains(&format!("`{field}`")) && values.iter().all(|v| error.contains(v)),
                "{error}"
            );
        }
        // No ovnkube file and nothing here.
        let error = DpuConfig::parse(MINIMAL)
            .and_then(DpuConfig::validate)
            .expect_err("nothing to take the CIDRs from")
            .to_string();
        assert!(
            error.contains("missing") && error.contains("[ovnkube] config"),
            "{error}"
        );
        // ovnkube's file has IPv6 subnets, this file no [ipv6] to hold the underlay IP.
        let dual =
            ovnkube("[default]\nmtu=1400\ncluster-subnets=198.18.128.0/17,fd00:10:244::/48/64\n");
        let error = DpuConfig::parse(MINIMAL)
            .and_then(|c| c.validate_with(Some(&dual)))
            .expect_err("no ipv6 section")
            .to_string();
        assert!(
            error.contains("fd00:10:244::/48") && error.contains("[ipv6]"),
            "{error}"
        );
    }
}
