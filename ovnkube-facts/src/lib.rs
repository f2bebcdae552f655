//! ovnkube-node's own configuration file (`/etc/openvswitch/ovn_k8s.conf`,
//! INI), where the cluster's facts already live: the cluster subnets, the
//! MTU and the masquerade subnets. dpu-agent takes them from there so that
//! an operator never copies them by hand (a typo there is a silent
//! blackhole). Reading is pure: text in, facts out; errors name the line.
//! (The caller reads the file, through a bound: [`MAX_BYTES`].)
//! (Rust types of the file's content only; where the agent looks for the
//! file is its own config's `[ovnkube]` section.)

use ipnet::IpNet;
use std::path::{Path, PathBuf};

/// Where ovnkube-node reads its file unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/openvswitch/ovn_k8s.conf";
/// OVN-Kubernetes' masquerade subnets when its file names none.
pub const DEFAULT_V4_MASQUERADE: &str = "169.254.0.0/17";
pub const DEFAULT_V6_MASQUERADE: &str = "fd69::/112";
/// The largest file a reader should take (ovnkube's is a few KiB).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// A value and whether ovnkube's file set it (or it is OVN-Kubernetes'
/// default because the file does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub explicit: bool,
}

/// What dpu-agent takes from ovnkube's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnkubeFacts {
    pub file: PathBuf,
    /// `[default] cluster-subnets`, both families, host prefixes dropped.
    pub cluster_subnets: Vec<IpNet>,
    /// `[default] mtu`.
    pub mtu: Option<u32>,
    /// `[gateway] v4-masquerade-subnet` / `v6-masquerade-subnet`.
    pub v4_masquerade: Setting<IpNet>,
    pub v6_masquerade: Setting<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvnkubeError {
    #[error("cannot read ovnkube's config {file} (config [ovnkube] config): {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("ovnkube's config {file}, line {line}: {reason}")]
    Line {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

impl OvnkubeFacts {
    /// The facts in `text`, the INI file ovnkube-node reads.
    pub fn parse(file: &Path, text: &str) -> Result<Self, OvnkubeError> {
        let mut facts = OvnkubeFacts {
            file: file.to_path_buf(),
            cluster_subnets: Vec::new(),
            mtu: None,
            v4_masquerade: default_setting(DEFAULT_V4_MASQUERADE),
            v6_masquerade: default_setting(DEFAULT_V6_MASQUERADE),
        };
        let mut section = String::new();
        for (index, raw) in text.lines().enumerate() {
            let at_line = |reason: String| OvnkubeError::Line {
                file: file.to_path_buf(),
                line: index + 1,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                section = name
                    .strip_suffix(']')
                    .ok_or_else(|| at_line(format!("{line:?} is not a [section] header")))?
                    .trim()
                    .to_ascii_lowercase();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| at_line(format!("{line:?} is neither key = value nor a section")))?;
            let key = key.trim().to_ascii_lowercase();
            let value = unquote(value.trim());
            match (section.as_str(), key.as_str()) {
                ("default", "cluster-subnets") => {
                    facts.cluster_subnets = cluster_subnets(value).map_err(at_line)?;
                }
                ("default", "mtu") => {
                    facts.mtu = Some(
                        value
                            .parse()
                            .map_err(|_| at_line(format!("mtu {value:?} is not a number")))?,
                    );
                }
                ("gateway", "v4-masquerade-subnet") => {
                    facts.v4_masquerade = explicit(value, &key, false).map_err(at_line)?;
                }
                ("gateway", "v6-masquerade-subnet") => {
                    facts.v6_masquerade = explicit(value, &key, true).map_err(at_line)?;
                }
                // Everything else is ovnkube's own business.
                _ => {}
            }
        }
        Ok(facts)
    }
}

fn default_setting(text: &str) -> Setting<IpNet> {
    Setting {
        // The two defaults are literals that parse.
        value: text.parse().expect("a literal CIDR"),
        explicit: false,
    }
}

fn explicit(value: &str, key: &str, v6: bool) -> Result<Setting<IpNet>, String> {
    let net: IpNet = value
        .parse()
        .map_err(|_| format!("{key} {value:?} is not a CIDR"))?;
    if net.addr().is_ipv6() != v6 {
        return Err(format!("{key} {value:?} is of the other address family"));
    }
    Ok(Setting {
        value: net,
        explicit: true,
    })
}

/// A value as ovnkube writes it, with or without quotes.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// `10.128.0.0/14/23,fd00:10:244::/48/64`: each a CIDR and, optionally,
/// the host prefix ovnkube carves node subnets with (not ours to use).
fn cluster_subnets(value: &str) -> Result<Vec<IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let cidr = match entry.rsplit_once('/') {
                // CIDR/hostPrefix: two slashes.
                Some((head, tail)) if head.contains('/') => {
                    tail.parse::<u8>().map_err(|_| {
                        format!(
                            "cluster-subnets entry {entry:?}: host prefix {tail:?} is not a number"
                        )
                    })?;
                    head
                }
                _ => entry,
            };
            cidr.parse::<IpNet>()
                .map_err(|_| format!("cluster-subnets entry {entry:?} is not CIDR[/hostPrefix]"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OvnkubeFacts, OvnkubeError> {
        OvnkubeFacts::parse(Path::new("/etc/openvswitch/ovn_k8s.conf"), text)
    }

    #[test]
    fn ovnkubes_file_gives_subnets_mtu_and_masquerade_subnets() {
        let facts = parse(
            "# written by the cluster installer\n\
             [default]\n\
             mtu=1400\n\
             cluster-subnets = \"10.128.0.0/14/23,fd00:10:244::/48/64\"\n\
             encap-port=6081\n\
             \n\
             [kubernetes]\n\
             service-cidrs=172.30.0.0/16\n\
             [gateway]\n\
             mode=shared\n\
             v4-masquerade-subnet='169.254.0.0/17'\n",
        )
        .expect("parses");
        assert_eq!(
            facts.cluster_subnets,
            vec![
                "10.128.0.0/14".parse::<IpNet>().expect("net"),
                "fd00:10:244::/48".parse().expect("net"),
            ]
        );
        assert_eq!(facts.mtu, Some(1400));
        assert_eq!(
            facts.v4_masquerade,
            Setting {
                value: "169.254.0.0/17".parse().expect("net"),
                explicit: true
            }
        );
        // Absent: OVN-Kubernetes' default.
        assert_eq!(
            facts.v6_masquerade,
            Setting {
                value: "fd69::/112".parse().expect("net"),
                explicit: false
            }
        );
    }

    #[test]
    fn a_host_prefix_is_optional_and_nothing_is_required() {
        let facts = parse("[default]\ncluster-subnets=10.128.0.0/14\n").expect("parses");
        assert_eq!(facts.cluster_subnets.len(), 1);
        let empty = parse("").expect("parses");
        assert!(empty.cluster_subnets.is_empty());
        assert_eq!(empty.mtu, None);
        assert_eq!(empty.v4_masquerade.value.to_string(), DEFAULT_V4_MASQUERADE);
    }

    #[test]
    fn a_bad_value_names_its_line_and_value() {
        for (text, line, needle) in [
            (
                "[default]\ncluster-subnets=10.128.0.0/33/23\n",
                2,
                "10.128.0.0/33/23",
            ),
            (
                "[default]\ncluster-subnets=10.128.0.0/14/x\n",
                2,
                "host prefix \"x\"",
            ),
            ("\n[default]\nmtu=big\n", 3, "mtu \"big\""),
            (
                "[gateway]\nv6-masquerade-subnet=169.254.0.0/17\n",
                2,
                "other address family",
            ),
            ("[default\n", 1, "section"),
            ("[default]\njust words\n", 2, "key = value"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(
                error.contains(&format!("line {line}:")) && error.contains(needle),
                "{error}"
            );
        }
    }
}
