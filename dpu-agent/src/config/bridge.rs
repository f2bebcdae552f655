//! The `[bridge]` section: the shared gateway bridge, its ports by name,
//! our cookie, how to reach Open vSwitch, and its validation.

use super::{ConfigError, DEFAULT_COOKIE, default_true};
use crate::flows::{BasePipeline, PortMap};
use noverlay_proto::contract;
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

/// The shared gateway bridge and its ports, by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// e.g. "breth0".
    pub name: String,
    /// The host PF representor port, e.g. "pf0hpf". When absent, the one
    /// port of the bridge that is not its own, a patch port or the uplink,
    /// found in OVSDB.
    pub host_representor: Option<String>,
    /// The default-network patch port to br-int. When absent, the one
    /// patch port of the bridge whose peer is on the integration bridge
    /// (ovn-controller makes it), found in OVSDB.
    pub patch_port: Option<String>,
    /// The physical uplink, e.g. "p0". When absent, found in OVSDB as
    /// ovnkube-node finds it: the bridge's one interface of type `system`,
    /// else its `external_ids:bridge-uplink`, else `<nic>` of `br<nic>`.
    pub uplink: Option<String>,
    /// Cookie marking our flows; flows with another cookie are never touched.
    #[serde(default = "default_cookie")]
    pub cookie: u64,
    /// The base pipeline (tables 1-3 and the ingress ct flow): `"auto"`
    /// (default: only where no other controller has it), `true` or `false`.
    #[serde(default, deserialize_with = "base_pipeline")]
    pub base_pipeline: BasePipeline,
    /// Program the bridge (default). Off: plan and serve only, as in the
    /// loopback demo where there is no Open vSwitch.
    #[serde(default = "default_true")]
    pub program: bool,
    /// The OVSDB unix socket, for port discovery.
    #[serde(default = "default_ovsdb_socket")]
    pub ovsdb_socket: PathBuf,
    /// The bridge's OpenFlow target: `unix:PATH` or `tcp:IP:PORT`; default
    /// "unix:/var/run/openvswitch/<name>.mgmt".
    pub openflow: Option<String>,
    /// Allow a `tcp:` OpenFlow target that is not a loopback address. Off
    /// by default: plain TCP is unauthenticated, so anyone who can reach or
    /// answer that address can pose as the switch (or as us to it). Turn
    /// this on only on a network nothing else can reach.
    #[serde(default)]
    pub allow_remote_tcp: bool,
    /// ovs-vswitchd's control socket, where its fragment reassembly counters
    /// are read (metrics). Default: `ovs-vswitchd.<pid>.ctl` in the OVSDB
    /// socket's directory, the pid from `ovs-vswitchd.pid` there.
    pub vswitchd_control: Option<PathBuf>,
    /// Safety-net verification of our flows, on top of the flow monitor.
    #[serde(default = "default_verify_interval_ms")]
    pub verify_interval_ms: u64,
    /// Port numbers and MAC given by hand instead of OVSDB discovery.
    pub static_ports: Option<StaticPorts>,
}

fn default_ovsdb_socket() -> PathBuf {
    PathBuf::from("/var/run/openvswitch/db.sock")
}

fn default_verify_interval_ms() -> u64 {
    5000
}

impl BridgeConfig {
    /// The bridge's OpenFlow target.
    pub fn openflow_target(&self) -> String {
        self.openflow
            .clone()
            .unwrap_or_else(|| format!("unix:/var/run/openvswitch/{}.mgmt", self.name))
    }
}

/// `true`, `false` or `"auto"`; any other value is an error naming it.
fn base_pipeline<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BasePipeline, D::Error> {
    struct Setting;
    impl serde::de::Visitor<'_> for Setting {
        type Value = BasePipeline;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("true, false or \"auto\"")
        }

        fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<BasePipeline, E> {
            Ok(if on {
                BasePipeline::On
            } else {
                BasePipeline::Off
            })
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<BasePipeline, E> {
            match text {
                "auto" => Ok(BasePipeline::Auto),
                other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
            }
        }
    }
    d.deserialize_any(Setting)
}

/// Cookies other controllers of the gateway bridge use.
const NEIGHBOUR_COOKIES: &[(u64, &str)] = &[
    (0xdeff105, "OVN-Kubernetes' (default flows)"),
    (0x0304, "OVN-Kubernetes' (PMTUD flows)"),
    (0x0305, "OVN-Kubernetes' (GARP flows)"),
    (0xe745ecf105, "OVN-Kubernetes' (ETP=local flows)"),
];

fn default_cookie() -> u64 {
    DEFAULT_COOKIE
}

impl BridgeConfig {
    /// Checks every field of the section; the error names the first bad
    /// one. Returns the hand-written port map, if any.
    pub(super) fn validate(&self) -> Result<Option<PortMap>, ConfigError> {
        for (field, name) in [
            ("bridge.name", Some(&self.name)),
            ("bridge.host_representor", self.host_representor.as_ref()),
            ("bridge.patch_port", self.patch_port.as_ref()),
            ("bridge.uplink", self.uplink.as_ref()),
        ] {
            if let Some(name) = name {
                validate_port_name(field, name)?;
            }
        }
        let cookie = self.cookie;
        if cookie == 0 || cookie == u64::MAX {
            return Err(ConfigError::Invalid {
                field: "bridge.cookie".into(),
                reason: format!(
                    "{cookie:#x} is reserved; pick a cookie of our own such as {DEFAULT_COOKIE:#x}"
                ),
            });
        }
        if let Some((_, owner)) = NEIGHBOUR_COOKIES.iter().find(|(c, _)| *c == cookie) {
            return Err(ConfigError::Invalid {
                field: "bridge.cookie".into(),
                reason: format!(
                    "{cookie:#x} is {owner}; every write of ours deletes the flows of our cookie first, so it would wipe theirs: pick a cookie of our own such as {DEFAULT_COOKIE:#x}"
                ),
            });
        }
        if !(100..=3_600_000).contains(&self.verify_interval_ms) {
            return Err(ConfigError::Invalid {
                field: "bridge.verify_interval_ms".into(),
                reason: format!("{} is outside 100..=3600000", self.verify_interval_ms),
            });
        }
        let socket_address = |address: &str| address.parse::<SocketAddr>().is_ok();
        if let Some(address) = self
            .openflow
            .as_deref()
            .and_then(|t| t.strip_prefix("tcp:"))
            && let Ok(address) = address.parse::<SocketAddr>()
            && !address.ip().is_loopback()
            && !self.allow_remote_tcp
        {
            return Err(ConfigError::Invalid {
                field: "bridge.openflow".into(),
                reason: format!(
                    "tcp:{address} is plain, unauthenticated TCP to a non-loopback address: anyone who can reach it can pose as the switch; use the bridge's unix: management socket (the agent runs beside Open vSwitch), or set [bridge] allow_remote_tcp = true on a network nothing else can reach"
                ),
            });
        }
        if let Some(target) = &self.openflow
            && target.starts_with("ssl:")
        {
            return Err(ConfigError::Invalid {
                field: "bridge.openflow".into(),
                reason: format!(
                    "{target:?}: ssl: targets are not supported (the agent speaks OpenFlow itself, over unix: or tcp:); use the bridge's management socket, unix:/var/run/openvswitch/{}.mgmt",
                    self.name
                ),
            });
        }
        if let Some(target) = &self.openflow
            && !(target.starts_with("unix:")
                || target.strip_prefix("tcp:").is_some_and(socket_address))
        {
            return Err(ConfigError::Invalid {
                field: "bridge.openflow".into(),
                reason: format!("{target:?} is not an OpenFlow target (unix:PATH or tcp:IP:PORT)"),
            });
        }
        self.static_ports
            .as_ref()
            .map(StaticPorts::validate)
            .transpose()
    }
}

/// Hand-written port map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPorts {
    pub host_representor: u32,
    pub patch_port: u32,
    pub uplink: u32,
    pub bridge_mac: String,
}

impl StaticPorts {
    fn validate(&self) -> Result<PortMap, ConfigError> {
        for (field, port) in [
            (
                "bridge.static_ports.host_representor",
                self.host_representor,
            ),
            ("bridge.static_ports.patch_port", self.patch_port),
            ("bridge.static_ports.uplink", self.uplink),
        ] {
            // OpenFlow ports 1..=0xfeff are physical/logical ports.
            if !(1..=0xfeff).contains(&port) {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    reason: format!("{port} is not an OpenFlow port number (1-65279)"),
                });
            }
        }
        let bridge_mac =
            contract::parse_mac(&self.bridge_mac).ok_or_else(|| ConfigError::Invalid {
                field: "bridge.static_ports.bridge_mac".into(),
                reason: format!("{:?} is not a MAC address", self.bridge_mac),
            })?;
        Ok(PortMap {
            host_representor: self.host_representor,
            patch: self.patch_port,
            uplink: self.uplink,
            bridge_mac,
        })
    }
}

/// OVS port names: printable, no spaces or quoting characters, so that they
/// are safe in OVSDB requests and flow text.
fn validate_port_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field: field.into(),
            reason: format!("{name:?} is not a port name (letters, digits, '-', '_', '.')"),
        })
    }
}
