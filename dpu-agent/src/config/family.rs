//! One address family's section, and the rule that makes the offer's
//! families from it, ovnkube's file and OVN's northbound database.

use super::{ConfigError, DpuConfig, Fact, FactSource, GatewayPort, facts};
use ipnet::IpNet;
use noverlay_ovnkube_facts::OvnkubeFacts;
use noverlay_proto::contract::{self, FamilyContract, Masquerade};
use serde::Deserialize;
use std::net::IpAddr;

/// One address family: the DPU is the authority for CIDRs and underlay IP.
/// The masquerade subnet and the cluster CIDRs may come from ovnkube's
/// file instead, the underlay IP from OVN's northbound database; set in
/// both places, they must agree.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    /// e.g. "169.254.0.0/17" or "fd69::/112"; the host must use the same.
    pub masquerade_subnet: Option<IpNet>,
    /// The cluster CIDRs routed from the host through the DPU.
    pub cluster_cidrs: Option<Vec<IpNet>>,
    /// The node underlay IP: source of path traffic on the physical link.
    /// When absent, the address of this family on the gateway router's
    /// external port (needs `[ovn]`).
    pub underlay_ip: Option<IpAddr>,
}

impl DpuConfig {
    /// Whether a family's underlay IP is left to OVN's northbound database
    /// (the family is configured here, or implied by ovnkube's file).
    pub fn wants_underlay_from_ovn(&self, ovnkube: Option<&OvnkubeFacts>) -> bool {
        [
            (&self.ipv4, contract::Family::Ipv4),
            (&self.ipv6, contract::Family::Ipv6),
        ]
        .iter()
        .any(|(family, kind)| match family {
            Some(family) => family.underlay_ip.is_none(),
            None => !ovnkube_cidrs(ovnkube, *kind).is_empty(),
        })
    }

    /// The configured families as contract parts, each fact recorded with
    /// its source; the error names the family.
    pub fn families(
        &self,
        ovnkube: Option<&OvnkubeFacts>,
        gateway_port: Option<&GatewayPort>,
        facts: &mut Vec<Fact>,
    ) -> Result<Vec<FamilyContract>, ConfigError> {
        let mut families = Vec::new();
        for (name, family) in [("ipv4", &self.ipv4), ("ipv6", &self.ipv6)] {
            let expected = if name == "ipv4" {
                contract::Family::Ipv4
            } else {
                contract::Family::Ipv6
            };
            let theirs_cidrs = ovnkube_cidrs(ovnkube, expected);
            let implied = FamilyConfig::default();
            let family = match (family, ovnkube) {
                (Some(family), _) => family,
                (None, Some(o)) if !theirs_cidrs.is_empty() => {
                    if self.ovn.is_none() {
                        return Err(ConfigError::Invalid {
                            field: name.into(),
                            reason: format!(
                                "{} has {name} cluster subnets ({}) but this file has no [{name}] section: add one with the node's underlay_ip, or an [ovn] section to read it from OVN's northbound database",
                                o.file.display(),
                                facts::list(&theirs_cidrs)
                            ),
                        });
                    }
                    // The family ovnkube's file names, all its facts found elsewhere.
                    &implied
                }
                (None, _) => continue,
            };
            let theirs_masquerade = ovnkube.map(|o| {
                let setting = if name == "ipv4" {
                    &o.v4_masquerade
                } else {
                    &o.v6_masquerade
                };
                (setting.value, setting.explicit)
            });
            let subnet = facts::merge(
                &format!("{name}.masquerade_subnet"),
                family.masquerade_subnet,
                theirs_masquerade,
                ovnkube,
                facts,
            )?;
            let theirs_cidrs = (!theirs_cidrs.is_empty()).then_some((theirs_cidrs, true));
            let cluster_cidrs = facts::merge(
                &format!("{name}.cluster_cidrs"),
                family.cluster_cidrs.clone(),
                theirs_cidrs,
                ovnkube,
                facts,
            )?;
            let masquerade = Masquerade::from_subnet(subnet).map_err(|e| ConfigError::Invalid {
                field: format!("{name}.masquerade_subnet"),
                reason: e.to_string(),
            })?;
            let (underlay_ip, underlay_source) = match family.underlay_ip {
                Some(ip) => (ip, FactSource::ThisFile),
                None => underlay_from_ovn(name, expected, self.ovn.is_some(), gateway_port)?,
            };
            for (field, is_family) in [
                ("masquerade_subnet", masquerade.family() == expected),
                (
                    "underlay_ip",
                    contract::Family::of_addr(&underlay_ip) == expected,
                ),
            ] {
                if !is_family {
                    return Err(ConfigError::Invalid {
                        field: format!("{name}.{field}"),
                        reason: format!("not an {name} value"),
                    });
                }
            }
            facts.push(Fact::new(
                &format!("{name}.underlay_ip"),
                underlay_ip.to_string(),
                underlay_source,
            ));
            families.push(FamilyContract {
                masquerade,
                cluster_cidrs,
                underlay_ip,
            });
        }
        Ok(families)
    }
}

/// The cluster subnets of `family` in ovnkube's file (none without it).
fn ovnkube_cidrs(ovnkube: Option<&OvnkubeFacts>, family: contract::Family) -> Vec<IpNet> {
    ovnkube
        .map(|o| {
            o.cluster_subnets
                .iter()
                .copied()
                .filter(|c| contract::Family::of_net(c) == family)
                .collect()
        })
        .unwrap_or_default()
}

/// The family's underlay IP from the gateway router's external port: its
/// one address of that family (OVN-Kubernetes gives it the node's IP).
fn underlay_from_ovn(
    name: &str,
    family: contract::Family,
    ovn_configured: bool,
    port: Option<&GatewayPort>,
) -> Result<(IpAddr, FactSource), ConfigError> {
    let field = format!("{name}.underlay_ip");
    let Some(port) = port else {
        let reason = if ovn_configured {
            "not in this file, and OVN's northbound database was not read for it".to_string()
        } else {
            format!(
                "missing: set [{name}] underlay_ip, or add an [ovn] section to read it from OVN's northbound database"
            )
        };
        return Err(ConfigError::Invalid { field, reason });
    };
    let addresses: Vec<IpAddr> = port
        .networks
        .iter()
        .filter(|n| contract::Family::of_net(n) == family)
        .map(IpNet::addr)
        .collect();
    match addresses.as_slice() {
        [ip] => Ok((*ip, FactSource::OvnNorthbound(port.name.clone()))),
        _ => Err(ConfigError::Invalid {
            field,
            reason: format!(
                "not in this file, and the gateway router's port {} has {} {name} networks ({}) where one is needed: set [{name}] underlay_ip",
                port.name,
                addresses.len(),
                facts::list(&port.networks)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Listen, identity, TLS and the bridge's name: nothing of the cluster.
    const BARE: &str = r#"
listen = "0.0.0.0:50051"
authorised_host = "host-agent.node1"

[tls]
cert = "/etc/noverlay/dpu-agent.crt"
key = "/etc/noverlay/dpu-agent.key"
ca = "/etc/noverlay/ca.crt"

[bridge]
name = "breth0"
"#;

    const OVN: &str =
        "\n[ovn]\nnb_socket = \"/var/run/ovn/ovnnb_db.sock\"\ngateway_router = \"GR_node1\"\n";

    fn ovnkube() -> OvnkubeFacts {
        OvnkubeFacts::parse(
            Path::new("/etc/openvswitch/ovn_k8s.conf"),
            "[default]\nmtu=1400\ncluster-subnets=198.18.128.0/17/24,fd00:10:244::/48/64\n",
        )
        .expect("parses")
    }

    fn port(networks: &[&str]) -> GatewayPort {
        GatewayPort {
            name: "rtoe-GR_node1".into(),
            networks: networks
                .iter()
                .map(|n| n.parse().expect("network"))
                .collect(),
        }
    }

    fn load(text: &str, port: Option<&GatewayPort>) -> Result<super::super::ValidConfig, String> {
        DpuConfig::parse(text)
            .and_then(|c| c.validate_from(Some(&ovnkube()), port))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn underlay_ips_left_out_come_from_the_gateway_routers_port() {
        let config = DpuConfig::parse(&format!("{BARE}{OVN}")).expect("parses");
        assert!(config.wants_underlay_from_ovn(Some(&ovnkube())));
        let port = port(&["198.18.1.2/24", "2001:db8::2/64"]);
        let config = load(&format!("{BARE}{OVN}"), Some(&port)).expect("valid");
        let underlay: Vec<String> = config
            .offer
            .families
            .iter()
            .map(|f| f.underlay_ip.to_string())
            .collect();
        assert_eq!(underlay, ["198.18.1.2", "2001:db8::2"]);
        let shown: Vec<String> = config.facts.iter().map(ToString::to_string).collect();
        assert!(
            shown.contains(
                &"ipv4.underlay_ip = 198.18.1.2 (from OVN NB, port rtoe-GR_node1)".into()
            ),
            "{shown:?}"
        );
        // Set here, this file's value is the one offered (the OVN check
        // compares it with the port at run time).
        let own = format!("{BARE}{OVN}\n[ipv4]\nunderlay_ip = \"198.18.1.9\"\n");
        let config = load(&own, Some(&port)).expect("valid");
        assert_eq!(
            config.offer.families[0].underlay_ip.to_string(),
            "198.18.1.9"
        );
    }

    #[test]
    fn an_underlay_ip_nobody_can_tell_says_where_to_set_it() {
        let two = port(&["198.18.1.2/24", "198.18.7.2/24", "2001:db8::2/64"]);
        let error = load(&format!("{BARE}{OVN}"), Some(&two)).expect_err("ambiguous");
        assert!(
            error.contains("ipv4.underlay_ip")
                && error.contains("198.18.1.2/24,198.18.7.2/24")
                && error.contains("set [ipv4] underlay_ip"),
            "{error}"
        );
        let v4_only = port(&["198.18.1.2/24"]);
        let error = load(&format!("{BARE}{OVN}"), Some(&v4_only)).expect_err("no ipv6");
        assert!(
            error.contains("ipv6.underlay_ip") && error.contains("0 ipv6 networks"),
            "{error}"
        );
        // Without [ovn] there is nowhere to read it from.
        let error = load(BARE, None).expect_err("no source");
        assert!(
            error.contains("no [ipv4] section") && error.contains("an [ovn] section"),
            "{error}"
        );
        let error = load(&format!("{BARE}\n[ipv4]\n"), None).expect_err("no source");
        assert!(
            error.contains("ipv4.underlay_ip") && error.contains("add an [ovn] section"),
            "{error}"
        );
    }
}
