//! The dpu-agent TOML config and its validation.
//!
//! Parsing is strict (unknown fields are errors, so a typo never silently
//! falls back to a default) and every error names the field and the value.

mod bridge;

pub use bridge::{BridgeConfig, StaticPorts};
use ipnet::IpNet;
use noverlay_proto::{
    contract::{self, ContractError, FamilyContract, Masquerade, Mode, Offer},
    tls::{PeerIdentity, TlsFiles},
};
use serde::Deserialize;
use std::{
    net::{IpAddr, SocketAddr},
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
    /// MTU of the host's cluster-CIDR routes.
    pub mtu: u32,
    pub ipv4: Option<FamilyConfig>,
    pub ipv6: Option<FamilyConfig>,
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub uplink_guard: UplinkGuardConfig,
    /// Check OVN's half of the contract in the local northbound database.
    pub ovn: Option<crate::ovn::OvnConfig>,
}

/// The uplink guard (an nftables netdev egress chain on the uplink that
/// drops masquerade-sourced packets). On by default.
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

/// One address family: the DPU is the authority for CIDRs and underlay IP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    /// e.g. "169.254.0.0/17" or "fd69::/112"; the host must use the same.
    pub masquerade_subnet: IpNet,
    /// The cluster CIDRs routed from the host through the DPU.
    pub cluster_cidrs: Vec<IpNet>,
    /// The node underlay IP: source of path traffic on the physical link.
    pub underlay_ip: IpAddr,
}

fn default_true() -> bool {
    true
}

/// A config that passed validation, with its derived offer.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub raw: DpuConfig,
    pub authorised_host: PeerIdentity,
    /// Revision 1; the running agent renumbers on reload.
    pub offer: Offer,
    pub static_ports: Option<crate::flows::PortMap>,
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
        fields
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text)
            .map_err(|e| e.in_file(path))?
            .validate()
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

    /// Checks every field; the error names the first bad one.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
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
        let families = self.families()?;
        let offer = Offer::new(1, self.mode, families, self.mtu).map_err(|e| {
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
        Ok(ValidConfig {
            raw: self,
            authorised_host,
            offer,
            static_ports,
        })
    }

    /// The configured families as contract parts; the error names the family.
    pub fn families(&self) -> Result<Vec<FamilyContract>, ConfigError> {
        let mut families = Vec::new();
        for (name, family) in [("ipv4", &self.ipv4), ("ipv6", &self.ipv6)] {
            let Some(family) = family else { continue };
            let masquerade = Masquerade::from_subnet(family.masquerade_subnet).map_err(|e| {
                ConfigError::Invalid {
                    field: format!("{name}.masquerade_subnet"),
                    reason: e.to_string(),
                }
            })?;
            let expected = if name == "ipv4" {
                contract::Family::Ipv4
            } else {
                contract::Family::Ipv6
            };
            for (field, is_family) in [
                ("masquerade_subnet", masquerade.family() == expected),
                (
                    "underlay_ip",
                    contract::Family::of_addr(&family.underlay_ip) == expected,
                ),
            ] {
                if !is_family {
                    return Err(ConfigError::Invalid {
                        field: format!("{name}.{field}"),
                        reason: format!("not an {name} value"),
                    });
                }
            }
            families.push(FamilyContract {
                masquerade,
                cluster_cidrs: family.cluster_cidrs.clone(),
                underlay_ip: family.underlay_ip,
            });
        }
        Ok(families)
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
}
