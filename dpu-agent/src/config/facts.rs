//! Where each fact of the offer comes from, and the one rule for a fact
//! both dpu-agent.toml and ovnkube's file can give: set in both, the two
//! must agree (else an error naming both values); set in one, that one;
//! set in neither, an error saying where to set it.

use super::ConfigError;
use noverlay_ovnkube_facts::OvnkubeFacts;
use std::fmt::Display;

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactSource {
    /// dpu-agent.toml.
    ThisFile,
    /// ovnkube's file (its path).
    Ovnkube(String),
    /// Both files, agreeing.
    Both(String),
    /// OVN-Kubernetes' default: ovnkube's file names none.
    OvnkubeDefault(String),
    /// Found in Open vSwitch's database at run time.
    Ovsdb,
    /// Read from OVN's northbound database (the gateway router's port).
    OvnNorthbound(String),
}

impl Display for FactSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactSource::ThisFile => write!(f, "from dpu-agent.toml"),
            FactSource::Ovnkube(file) => write!(f, "from {file}"),
            FactSource::Both(file) => write!(f, "from dpu-agent.toml and {file}"),
            FactSource::OvnkubeDefault(file) => {
                write!(f, "OVN-Kubernetes' default ({file} sets none)")
            }
            FactSource::Ovsdb => write!(f, "from OVSDB"),
            FactSource::OvnNorthbound(port) => write!(f, "from OVN NB, port {port}"),
        }
    }
}

/// One fact of the offer, its value as text and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// The config key, e.g. "ipv4.cluster_cidrs".
    pub key: String,
    pub value: String,
    pub source: FactSource,
}

impl Fact {
    pub fn new(key: &str, value: String, source: FactSource) -> Self {
        Fact {
            key: key.to_string(),
            value,
            source,
        }
    }
}

impl Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {} ({})", self.key, self.value, self.source)
    }
}

/// A list of values as the config writes them.
pub fn list<T: Display>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Values are compared and shown through this (a CIDR list compares as a set).
pub trait FactValue: Clone {
    fn text(&self) -> String;
    fn agrees(&self, other: &Self) -> bool;
}

impl FactValue for u32 {
    fn text(&self) -> String {
        self.to_string()
    }
    fn agrees(&self, other: &Self) -> bool {
        self == other
    }
}

impl FactValue for ipnet::IpNet {
    fn text(&self) -> String {
        self.to_string()
    }
    fn agrees(&self, other: &Self) -> bool {
        self == other
    }
}

impl FactValue for Vec<ipnet::IpNet> {
    fn text(&self) -> String {
        list(self)
    }
    fn agrees(&self, other: &Self) -> bool {
        let mut ours = self.clone();
        let mut theirs = other.clone();
        ours.sort();
        theirs.sort();
        ours == theirs
    }
}

/// The value of `key`: `ours` from dpu-agent.toml, `theirs` from ovnkube's
/// file (with whether the file sets it, or it is OVN-Kubernetes' default).
/// Recorded in `facts` with its source.
pub fn merge<T: FactValue>(
    key: &str,
    ours: Option<T>,
    theirs: Option<(T, bool)>,
    ovnkube: Option<&OvnkubeFacts>,
    facts: &mut Vec<Fact>,
) -> Result<T, ConfigError> {
    let file = ovnkube
        .map(|o| o.file.display().to_string())
        .unwrap_or_default();
    let (value, source) = match (ours, theirs) {
        (Some(ours), Some((theirs, true))) => {
            if !ours.agrees(&theirs) {
                return Err(ConfigError::Invalid {
                    field: key.into(),
                    reason: format!(
                        "{} here, but {} in {file}: set it in one place, or make them agree",
                        ours.text(),
                        theirs.text()
                    ),
                });
            }
            (ours, FactSource::Both(file))
        }
        (Some(ours), _) => (ours, FactSource::ThisFile),
        (None, Some((theirs, true))) => (theirs, FactSource::Ovnkube(file)),
        (None, Some((theirs, false))) => (theirs, FactSource::OvnkubeDefault(file)),
        (None, None) => {
            let hint = match ovnkube {
                Some(o) => format!("set it here ({} has none)", o.file.display()),
                None => format!(
                    "set it here, or point [ovnkube] config at ovnkube-node's file (default {})",
                    noverlay_ovnkube_facts::DEFAULT_PATH
                ),
            };
            return Err(ConfigError::Invalid {
                field: key.into(),
                reason: format!("missing: {hint}"),
            });
        }
    };
    facts.push(Fact::new(key, value.text(), source));
    Ok(value)
}
