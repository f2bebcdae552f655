//! Where each fact of the offer comes from, and the one rule for a fact
//! both dpu-agent.toml and ovnkube's file can give: set in both, the two
//! must agree (else an error naming both values); set in one, that one;
//! set in neither, an error saying where to set it.

use super::ConfigError;
use noverlay_ovnkube_facts::{Origin, OvnkubeFacts, Sourced};
use std::fmt::Display;

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactSource {
    /// dpu-agent.toml.
    ThisFile,
    /// ovnkube's configuration: its command line, its file or its default.
    Ovnkube(Origin),
    /// dpu-agent.toml, and ovnkube's configuration agreeing.
    Both(Origin),
    /// Found in Open vSwitch's database at run time.
    Ovsdb,
    /// Read from OVN's northbound database: what, e.g. "port rtoe-GR_node1".
    OvnNorthbound(String),
}

impl Display for FactSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactSource::ThisFile => write!(f, "from dpu-agent.toml"),
            FactSource::Ovnkube(origin) => write!(f, "{origin}"),
            FactSource::Both(origin) => write!(f, "from dpu-agent.toml, and {origin}"),
            FactSource::Ovsdb => write!(f, "from OVSDB"),
            FactSource::OvnNorthbound(what) => write!(f, "from OVN NB, {what}"),
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

/// A fact as ovnkube resolves it, and whether it is what ovnkube runs with
/// ([`OvnkubeFacts::binds`]).
pub struct Theirs<'a, T> {
    pub fact: &'a Sourced<T>,
    pub binds: bool,
}

/// The fact `pick` of ovnkube's facts, if they were read.
pub fn theirs<'a, T>(
    ovnkube: Option<&'a OvnkubeFacts>,
    pick: impl Fn(&'a OvnkubeFacts) -> &'a Sourced<T>,
) -> Option<Theirs<'a, T>> {
    ovnkube.map(|o| {
        let fact = pick(o);
        Theirs {
            fact,
            binds: o.binds(&fact.origin),
        }
    })
}

/// The value of `key`: `ours` from dpu-agent.toml, `theirs` as ovnkube
/// resolves it. Set here and what ovnkube runs with, the two must agree;
/// set here only (or ovnkube's is a default a flag not seen may change),
/// this file's; else ovnkube's. None when neither has it. Recorded in
/// `facts` with its source.
pub fn merge<T: FactValue>(
    key: &str,
    ours: Option<T>,
    theirs: Option<Theirs<'_, T>>,
    facts: &mut Vec<Fact>,
) -> Result<Option<T>, ConfigError> {
    let (value, source) = match (ours, theirs.map(|t| (t.fact, t.binds))) {
        (Some(ours), Some((theirs, true))) => {
            if !ours.agrees(&theirs.value) {
                return Err(ConfigError::Invalid {
                    field: key.into(),
                    reason: format!(
                        "{} here, but {} {}: set it in one place, or make them agree",
                        ours.text(),
                        theirs.value.text(),
                        theirs.origin
                    ),
                });
            }
            (ours, FactSource::Both(theirs.origin.clone()))
        }
        (Some(ours), _) => (ours, FactSource::ThisFile),
        (None, Some((theirs, _))) => (
            theirs.value.clone(),
            FactSource::Ovnkube(theirs.origin.clone()),
        ),
        (None, None) => return Ok(None),
    };
    facts.push(Fact::new(key, value.text(), source));
    Ok(Some(value))
}

/// The error for a fact nobody gives.
pub fn missing(key: &str, ovnkube: Option<&OvnkubeFacts>) -> ConfigError {
    let hint = match ovnkube {
        Some(_) => "set it here (ovnkube's configuration has none)".to_string(),
        None => format!(
            "set it here, or run next to ovnkube-node (its command line is read), or point [ovnkube] config at its file (default {})",
            noverlay_ovnkube_facts::DEFAULT_PATH
        ),
    };
    ConfigError::Invalid {
        field: key.into(),
        reason: format!("missing: {hint}"),
    }
}
