//! ovnkube's facts as ovnkube itself resolves them: the cluster subnets,
//! the MTU, the service CIDRs, the masquerade subnets, the gateway and node
//! modes. ovnkube takes each from its command line, else from its INI file
//! (`--config-file`, else `/etc/openvswitch/ovn_k8s.conf`), else from the
//! default compiled into it; the agents do the same, so that an operator
//! never copies a fact by hand (a typo there is a silent blackhole).
//!
//! - [`ini`] and [`cmdline`] are pure: text in, settings out, errors name
//!   the line or the flag;
//! - [`resolve`] layers them as ovnkube does, each fact keeping its
//!   [`Origin`];
//! - [`process`] is the edge: it finds the running ovnkube-node in our
//!   network namespace (`/proc/*/cmdline`) and reads the file it names
//!   through its root, with a deadline and a bound on every read.

pub mod cmdline;
pub mod ini;
pub mod process;
mod values;

use values::cluster_subnets;
pub(crate) use values::parse_value;

use ipnet::IpNet;
use std::{fmt, path::PathBuf};

/// Where ovnkube reads its file when no `--config-file` names one.
pub const DEFAULT_PATH: &str = "/etc/openvswitch/ovn_k8s.conf";
/// Where the defaults below were read: ovnkube's binary defaults in
/// go-controller/pkg/config/config.go of this release.
pub const DEFAULTS_FROM: &str = "ovn-kubernetes 1.3.0 (8871cd9c)";
/// ovnkube's defaults when neither its command line nor its file sets
/// the fact (as ovnkube writes them: it compares a setting's text with
/// these, see [`resolve`]).
pub const DEFAULT_CLUSTER_SUBNETS: &str = "10.128.0.0/14/23";
pub const DEFAULT_MTU: u32 = 1400;
pub const DEFAULT_SERVICE_CIDRS: &str = "172.16.1.0/24";
pub const DEFAULT_V4_MASQUERADE: &str = "169.254.169.0/29";
pub const DEFAULT_V6_MASQUERADE: &str = "fd69::/125";
/// No gateway unless told (`--gateway-mode` shared or local).
pub const DEFAULT_GATEWAY_MODE: &str = "";
pub const DEFAULT_NODE_MODE: &str = "full";
/// The largest file a reader takes (ovnkube's is a few KiB).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// One value a source sets: the value, its text as written (ovnkube
/// compares that with its default) and where it was set (`--mtu`,
/// `[default] mtu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub text: String,
    pub key: String,
}

/// What one source (the command line or the file) sets of our facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub cluster_subnets: Option<Setting<Vec<IpNet>>>,
    /// `--cluster-subnet` (deprecated): replaces whatever else is set.
    pub deprecated_cluster_subnet: Option<Setting<Vec<IpNet>>>,
    pub mtu: Option<Setting<u32>>,
    pub service_cidrs: Option<Setting<Vec<IpNet>>>,
    /// `--k8s-service-cidr` / `[kubernetes] service-cidr` (deprecated):
    /// replaces service-cidrs.
    pub deprecated_service_cidr: Option<Setting<Vec<IpNet>>>,
    /// `--service-cluster-ip-range` (deprecated): replaces both.
    pub service_cluster_ip_range: Option<Setting<Vec<IpNet>>>,
    pub v4_masquerade: Option<Setting<IpNet>>,
    pub v6_masquerade: Option<Setting<IpNet>>,
    pub gateway_mode: Option<Setting<String>>,
    pub node_mode: Option<Setting<String>>,
}

/// How the file that was read was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileNamedBy {
    /// ovnkube's `--config-file`.
    ConfigFileFlag,
    /// ovnkube's default path (no `--config-file`).
    OvnkubeDefault,
    /// The agent's own config (`[ovnkube] config`): ovnkube's command line
    /// was not read.
    AgentConfig,
}

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine {
        pid: u32,
        flag: String,
    },
    File {
        path: PathBuf,
        named_by: FileNamedBy,
    },
    /// ovnkube's binary default: nothing sets it.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine { pid, flag } => {
                write!(f, "from ovnkube's command line (pid {pid}, {flag})")
            }
            Origin::File { path, named_by } => {
                let path = path.display();
                match named_by {
                    FileNamedBy::ConfigFileFlag => {
                        write!(f, "from {path} (ovnkube's --config-file)")
                    }
                    FileNamedBy::OvnkubeDefault => {
                        write!(f, "from {path} (ovnkube's default file)")
                    }
                    FileNamedBy::AgentConfig => write!(f, "from {path}"),
                }
            }
            Origin::Default => write!(f, "OVN-Kubernetes' default (ovnkube sets none)"),
        }
    }
}

/// A resolved fact and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// The file that was read, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// As ovnkube names it (in its own mount namespace).
    pub path: PathBuf,
    pub named_by: FileNamedBy,
}

/// ovnkube's facts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnkubeFacts {
    /// The ovnkube-node process whose command line was read.
    pub process: Option<u32>,
    /// The file that was read.
    pub file: Option<FileRef>,
    /// Host prefixes dropped (ovnkube's to carve node subnets with).
    pub cluster_subnets: Sourced<Vec<IpNet>>,
    pub mtu: Sourced<u32>,
    pub service_cidrs: Sourced<Vec<IpNet>>,
    pub v4_masquerade: Sourced<IpNet>,
    pub v6_masquerade: Sourced<IpNet>,
    /// "shared", "local" or "" (no gateway).
    pub gateway_mode: Sourced<String>,
    /// "full", "dpu" or "dpu-host".
    pub node_mode: Sourced<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvnkubeError {
    #[error("cannot read ovnkube's config {file}: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("ovnkube's config {file}, line {line}: {reason}")]
    Line {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("ovnkube's command line (pid {pid}): {reason}")]
    CommandLine { pid: u32, reason: String },
    #[error("cannot look for ovnkube-node in /proc: {0}")]
    Process(String),
}

impl OvnkubeFacts {
    /// The masquerade subnet of one family.
    pub fn masquerade(&self, ipv6: bool) -> &Sourced<IpNet> {
        if ipv6 {
            &self.v6_masquerade
        } else {
            &self.v4_masquerade
        }
    }

    /// Whether a fact of this origin is what ovnkube runs with: set
    /// somewhere, or ovnkube's default where its command line was read
    /// (from a file alone, a flag not seen may set it).
    pub fn binds(&self, origin: &Origin) -> bool {
        *origin != Origin::Default || self.process.is_some()
    }

    /// ovnkube's modes must be this deployment's: no local gateway, and
    /// ovnkube-node in `node_mode` ("dpu" next to dpu-agent, "dpu-host" next
    /// to host-agent) where that is known. The reason names the mode and
    /// where it was set.
    pub fn check_modes(&self, node_mode: &str) -> Result<(), String> {
        let gateway = &self.gateway_mode;
        if gateway.value == "local" {
            return Err(format!(
                "ovnkube's gateway mode is local ({}): DPU host no-overlay routing is for the shared gateway mode",
                gateway.origin
            ));
        }
        let node = &self.node_mode;
        if self.binds(&node.origin) && node.value != node_mode {
            return Err(format!(
                "ovnkube-node runs in mode {:?} ({}), not {node_mode:?}: another deployment, whose facts are not this contract's",
                node.value, node.origin
            ));
        }
        Ok(())
    }

    /// The facts of ovnkube's command line alone (`argv`, argv[0] first, of
    /// process `pid`; the file it names not read): None when it is not an
    /// ovnkube-node.
    pub fn from_command_line(argv: &[String], pid: u32) -> Result<Option<Self>, String> {
        Ok(cmdline::parse(argv)?.map(|node| resolve(Some((&node.settings, pid)), None)))
    }

    /// The facts of ovnkube's file alone (ovnkube's command line not
    /// read): what `[ovnkube] config` gives.
    pub fn from_file(file: FileRef, text: &str) -> Result<Self, OvnkubeError> {
        let settings = ini::parse(&file.path, text)?;
        Ok(resolve(None, Some((&settings, file))))
    }
}

/// ovnkube's precedence (initConfigWithPath): its defaults, overridden by
/// the file, overridden by the command line; a setting whose text equals
/// the default overrides nothing (so `--mtu=1400` leaves a file's
/// `mtu=9000` in force, as in ovnkube); the deprecated settings replace
/// the rest when set.
pub fn resolve(
    command_line: Option<(&Settings, u32)>,
    file: Option<(&Settings, FileRef)>,
) -> OvnkubeFacts {
    let empty = Settings::default();
    let (flags, pid) = command_line.unwrap_or((&empty, 0));
    let (from_file, file_ref) = match &file {
        Some((settings, file_ref)) => (*settings, Some(file_ref.clone())),
        None => (&empty, None),
    };
    let file_origin = |_: &str| match &file_ref {
        Some(file) => Origin::File {
            path: file.path.clone(),
            named_by: file.named_by.clone(),
        },
        None => Origin::Default,
    };
    let flag_origin = |key: &str| Origin::CommandLine {
        pid,
        flag: key.to_string(),
    };
    macro_rules! layered {
        ($field:ident, $default:expr) => {
            layered(
                $default,
                [
                    (
                        from_file.$field.as_ref(),
                        &file_origin as &dyn Fn(&str) -> Origin,
                    ),
                    (flags.$field.as_ref(), &flag_origin),
                ],
            )
        };
    }
    let mut cluster_subnets = layered!(cluster_subnets, default_cidrs(DEFAULT_CLUSTER_SUBNETS));
    if let Some(replacing) = &flags.deprecated_cluster_subnet {
        cluster_subnets = sourced(replacing, &flag_origin);
    }
    let mut service_cidrs = layered!(service_cidrs, default_cidrs(DEFAULT_SERVICE_CIDRS));
    let deprecated = layered!(deprecated_service_cidr, default_setting(Vec::new(), ""));
    if deprecated.origin != Origin::Default {
        service_cidrs = deprecated;
    }
    if let Some(replacing) = &flags.service_cluster_ip_range {
        service_cidrs = sourced(replacing, &flag_origin);
    }
    OvnkubeFacts {
        process: command_line.map(|(_, pid)| pid),
        file: file_ref.clone(),
        cluster_subnets,
        mtu: layered!(mtu, default_setting(DEFAULT_MTU, &DEFAULT_MTU.to_string())),
        service_cidrs,
        v4_masquerade: layered!(v4_masquerade, default_net(DEFAULT_V4_MASQUERADE)),
        v6_masquerade: layered!(v6_masquerade, default_net(DEFAULT_V6_MASQUERADE)),
        gateway_mode: layered!(
            gateway_mode,
            default_setting(String::new(), DEFAULT_GATEWAY_MODE)
        ),
        node_mode: layered!(
            node_mode,
            default_setting(DEFAULT_NODE_MODE.to_string(), DEFAULT_NODE_MODE)
        ),
    }
}

type OriginOf<'a> = &'a dyn Fn(&str) -> Origin;

fn layered<T: Clone>(
    default: Setting<T>,
    layers: [(Option<&Setting<T>>, OriginOf<'_>); 2],
) -> Sourced<T> {
    let mut current = Sourced {
        value: default.value,
        origin: Origin::Default,
    };
    let mut at_default = true;
    for (setting, origin) in layers {
        let Some(setting) = setting else { continue };
        if setting.text != default.text {
            current = sourced(setting, origin);
            at_default = false;
        } else if at_default {
            // Says what the default says: named as its source all the same.
            current.origin = origin(&setting.key);
        }
    }
    current
}

fn sourced<T: Clone>(setting: &Setting<T>, origin: OriginOf<'_>) -> Sourced<T> {
    Sourced {
        value: setting.value.clone(),
        origin: origin(&setting.key),
    }
}

fn default_setting<T>(value: T, text: &str) -> Setting<T> {
    Setting {
        value,
        text: text.to_string(),
        key: String::new(),
    }
}

fn default_cidrs(text: &str) -> Setting<Vec<IpNet>> {
    // The defaults are literals that parse.
    default_setting(cluster_subnets("default", text).unwrap_or_default(), text)
}

fn default_net(text: &str) -> Setting<IpNet> {
    let net = text.parse().unwrap_or(IpNet::V4(ipnet::Ipv4Net::default()));
    default_setting(net, text)
}

#[cfg(test)]
mod tests;
