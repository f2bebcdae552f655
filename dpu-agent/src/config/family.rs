//! One address family's section, and the rule that makes the offer's
//! families from it, ovnkube's file and OVN's northbound database.

use super::{ConfigError, DpuConfig, Fact, FactSource, GatewayPort, facts};
use ipnet::IpNet;
use noverlay_ovnkube_facts::{OvnkubeFacts, Sourced};
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
    /// Whether a fact is left to OVN's northbound database: a family's
    /// underlay IP (the family is configured here, or implied by ovnkube's
    /// cluster subnets), or its masquerade subnet where ovnkube's
    /// configuration cannot be read.
    pub fn needs_northbound(&self, ovnkube: Option<&OvnkubeFacts>) -> bool {
        [
            (&self.ipv4, contract::Family::Ipv4),
            (&self.ipv6, contract::Family::Ipv6),
        ]
        .iter()
        .any(|(family, kind)| match family {
            Some(family) => {
                family.underlay_ip.is_none()
                    || (family.masquerade_subnet.is_none() && ovnkube.is_none())
            }
            None => ovnkube_cidrs(ovnkube, *kind).is_some(),
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
            let family = match (family, &theirs_cidrs) {
                (Some(family), _) => family,
                (None, Some(theirs)) => {
                    if self.ovn.is_none() {
                        return Err(ConfigError::Invalid {
                            field: name.into(),
                            reason: format!(
                                "ovnkube has {name} cluster subnets ({}, {}) but this file has no [{name}] section: add one with the node's underlay_ip, or an [ovn] section to read it from OVN's northbound database",
                                facts::list(&theirs.value),
                                theirs.origin
                            ),
                        });
                    }
                    // The family ovnkube names, all its facts found elsewhere.
                    &implied
                }
                (None, None) => continue,
            };
            let subnet =
                masquerade_subnet(name, family.masquerade_subnet, ovnkube, gateway_port, facts)?;
            let cluster_key = format!("{name}.cluster_cidrs");
            let cluster_cidrs = facts::merge(
                &cluster_key,
                family.cluster_cidrs.clone(),
                theirs_cidrs.as_ref().map(|fact| facts::Theirs {
                    fact,
                    binds: ovnkube.is_some_and(|o| o.binds(&fact.origin)),
                }),
                facts,
            )?
            .ok_or_else(|| facts::missing(&cluster_key, ovnkube))?;
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
            check_not_stealing(
                name,
                &cluster_cidrs,
                (underlay_ip, &underlay_source),
                ovnkube,
            )?;
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

/// A cluster CIDR must not take traffic that is ovnkube's: the path's
/// lookup (priority 510) runs ahead of ovnkube's flows, so a CIDR covering
/// the node's own underlay IP would take its hairpin traffic, and one
/// overlapping ovnkube's service CIDRs its service replies (host to
/// ClusterIP, NodePort hairpin). Both are refused, naming the values; the
/// service CIDRs count where they are what ovnkube runs with.
fn check_not_stealing(
    name: &str,
    cluster_cidrs: &[IpNet],
    (underlay_ip, underlay_source): (IpAddr, &FactSource),
    ovnkube: Option<&OvnkubeFacts>,
) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: format!("{name}.cluster_cidrs"),
        reason,
    };
    if let Some(cidr) = cluster_cidrs.iter().find(|c| c.contains(&underlay_ip)) {
        return Err(invalid(format!(
            "{cidr} covers the node's underlay IP {underlay_ip} ({underlay_source}): the path would take the node's own traffic from ovnkube; leave it out"
        )));
    }
    let Some(services) = ovnkube
        .map(|o| &o.service_cidrs)
        .filter(|s| ovnkube.is_some_and(|o| o.binds(&s.origin)))
    else {
        return Ok(());
    };
    for cidr in cluster_cidrs {
        if let Some(service) = services
            .value
            .iter()
            .find(|s| s.contains(cidr) || cidr.contains(*s))
        {
            return Err(invalid(format!(
                "{cidr} overlaps ovnkube's service CIDR {service} ({}): the path would take its service replies; leave it out",
                services.origin
            )));
        }
    }
    Ok(())
}

/// ovnkube's cluster subnets of `family` (None without ovnkube's facts or
/// without a subnet of this family).
fn ovnkube_cidrs(
    ovnkube: Option<&OvnkubeFacts>,
    family: contract::Family,
) -> Option<Sourced<Vec<IpNet>>> {
    let subnets = &ovnkube?.cluster_subnets;
    let value: Vec<IpNet> = subnets
        .value
        .iter()
        .copied()
        .filter(|c| contract::Family::of_net(c) == family)
        .collect();
    (!value.is_empty()).then(|| Sourced {
        value,
        origin: subnets.origin.clone(),
    })
}

/// The family's masquerade subnet: from this file and ovnkube's
/// configuration (see [`facts::merge`]), checked against the route
/// ovnkube gives it on the gateway router (the subnet via its dummy next
/// hop) where OVN's northbound database was read; taken from that route
/// when neither names it.
fn masquerade_subnet(
    name: &str,
    ours: Option<IpNet>,
    ovnkube: Option<&OvnkubeFacts>,
    gateway: Option<&GatewayPort>,
    facts: &mut Vec<Fact>,
) -> Result<IpNet, ConfigError> {
    let key = format!("{name}.masquerade_subnet");
    let family = if name == "ipv4" {
        contract::Family::Ipv4
    } else {
        contract::Family::Ipv6
    };
    let theirs = facts::theirs(ovnkube, |o| o.masquerade(family == contract::Family::Ipv6));
    let routes = gateway.map(|g| (g.router.as_str(), g.masquerade_routes(family)));
    let shown = |router: &str, routes: &[(IpNet, IpAddr)]| {
        routes
            .iter()
            .map(|(prefix, via)| format!("route {prefix} via {via} on {router}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match facts::merge(&key, ours, theirs, facts)? {
        Some(subnet) => {
            if let Some((router, routes)) = &routes
                && !routes.is_empty()
                && !routes.iter().any(|(prefix, _)| *prefix == subnet)
            {
                let source = facts
                    .iter()
                    .rev()
                    .find(|f| f.key == key)
                    .map(|f| f.source.to_string())
                    .unwrap_or_default();
                return Err(ConfigError::Invalid {
                    field: key,
                    reason: format!(
                        "{subnet} ({source}), but OVN NB has {}: replies to the host would not be routed back; make ovnkube's masquerade subnet and this one agree",
                        shown(router, routes)
                    ),
                });
            }
            Ok(subnet)
        }
        None => match &routes {
            Some((router, routes)) if routes.len() == 1 => {
                let (subnet, _) = routes[0];
                facts.push(Fact::new(
                    &key,
                    subnet.to_string(),
                    FactSource::OvnNorthbound(shown(router, routes)),
                ));
                Ok(subnet)
            }
            Some((router, routes)) if routes.len() > 1 => Err(ConfigError::Invalid {
                field: key,
                reason: format!(
                    "not set here and ovnkube's configuration was not read; OVN NB has several masquerade-shaped routes ({}): set it here",
                    shown(router, routes)
                ),
            }),
            _ => Err(facts::missing(&key, ovnkube)),
        },
    }
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
        [ip] => Ok((
            *ip,
            FactSource::OvnNorthbound(format!("port {}", port.name)),
        )),
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
        OvnkubeFacts::from_file(
            noverlay_ovnkube_facts::FileRef {
                path: "/etc/openvswitch/ovn_k8s.conf".into(),
                named_by: noverlay_ovnkube_facts::FileNamedBy::OvnkubeDefault,
            },
            "[default]\nmtu=1400\ncluster-subnets=198.18.128.0/17/24,fd00:10:244::/48/64\n",
        )
        .expect("parses")
    }

    /// ovnkube's facts from this command line (process `pid`).
    fn command_line(line: &str, pid: u32) -> OvnkubeFacts {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        OvnkubeFacts::from_command_line(&argv, pid)
            .expect("parses")
            .expect("a node")
    }

    fn port(networks: &[&str]) -> GatewayPort {
        GatewayPort {
            router: "GR_node1".into(),
            name: "rtoe-GR_node1".into(),
            routes: Vec::new(),
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
        assert!(config.needs_northbound(Some(&ovnkube())));
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

    fn with_routes(routes: &[(&str, &str)]) -> GatewayPort {
        GatewayPort {
            routes: routes
                .iter()
                .map(|(prefix, via)| (prefix.parse().expect("prefix"), via.parse().expect("ip")))
                .collect(),
            ..port(&["198.18.1.2/24", "2001:db8::2/64"])
        }
    }

    #[test]
    fn the_masquerade_subnet_is_checked_against_ovn_and_taken_from_it_when_nobody_says() {
        let routes = [
            ("169.254.169.0/29", "169.254.169.4"),
            ("fd69::/125", "fd69::4"),
            // A cluster route: not the masquerade subnet's shape.
            ("198.18.128.0/17", "198.18.1.20"),
        ];
        // ovnkube's defaults, and OVN routes them: agreed.
        let config = load(&format!("{BARE}{OVN}"), Some(&with_routes(&routes))).expect("valid");
        assert_eq!(
            config.offer.families[0].masquerade.subnet.to_string(),
            "169.254.169.0/29"
        );
        // ovnkube's default, but OVN routes the /17 (flags the file does not show).
        let other = with_routes(&[("169.254.0.0/17", "169.254.0.4"), ("fd69::/125", "fd69::4")]);
        let error = load(&format!("{BARE}{OVN}"), Some(&other)).expect_err("disagree");
        assert!(
            error.contains("ipv4.masquerade_subnet")
                && error.contains("169.254.169.0/29 (OVN-Kubernetes' default (ovnkube sets none))")
                && error.contains("route 169.254.0.0/17 via 169.254.0.4 on GR_node1"),
            "{error}"
        );
        // No ovnkube configuration to read: OVN's route says it.
        let bare =
            format!("mtu = 1400\n{BARE}{OVN}\n[ipv4]\ncluster_cidrs = [\"198.18.128.0/17\"]\n");
        let config = DpuConfig::parse(&bare)
            .and_then(|c| c.validate_from(None, Some(&with_routes(&routes))))
            .expect("valid");
        let shown: Vec<String> = config.facts.iter().map(ToString::to_string).collect();
        assert!(
            shown.contains(&"ipv4.masquerade_subnet = 169.254.169.0/29 (from OVN NB, route 169.254.169.0/29 via 169.254.169.4 on GR_node1)".to_string()),
            "{shown:?}"
        );
        let error = DpuConfig::parse(&bare)
            .and_then(|c| c.validate_from(None, Some(&port(&["198.18.1.2/24"]))))
            .expect_err("nobody says")
            .to_string();
        assert!(
            error.contains("ipv4.masquerade_subnet") && error.contains("missing"),
            "{error}"
        );
    }

    #[test]
    fn ovnkube_in_another_gateway_or_node_mode_is_refused_naming_where_it_says_so() {
        let facts = |text: &str| {
            OvnkubeFacts::from_file(
                noverlay_ovnkube_facts::FileRef {
                    path: "/etc/openvswitch/ovn_k8s.conf".into(),
                    named_by: noverlay_ovnkube_facts::FileNamedBy::OvnkubeDefault,
                },
                text,
            )
            .expect("parses")
        };
        let port = port(&["198.18.1.2/24", "2001:db8::2/64"]);
        for (text, needle) in [
            (
                "[default]\ncluster-subnets=198.18.128.0/17\n[gateway]\nmode=local\n",
                "gateway mode is local (from /etc/openvswitch/ovn_k8s.conf",
            ),
            (
                "[default]\ncluster-subnets=198.18.128.0/17\n[ovnkubenode]\nmode=dpu-host\n",
                "mode \"dpu-host\"",
            ),
        ] {
            let error = DpuConfig::parse(&format!("{BARE}{OVN}"))
                .and_then(|c| c.validate_from(Some(&facts(text)), Some(&port)))
                .expect_err(text)
                .to_string();
            assert!(error.contains(needle), "{error}");
        }
        let dpu = facts(
            "[default]\ncluster-subnets=198.18.128.0/17\n[ovnkubenode]\nmode=dpu\n[gateway]\nmode=shared\n",
        );
        DpuConfig::parse(&format!("{BARE}{OVN}"))
            .and_then(|c| c.validate_from(Some(&dpu), Some(&port)))
            .expect("dpu mode, shared gateway");
    }

    #[test]
    fn ovnkubes_default_binds_where_its_command_line_was_read() {
        let read = |line: &str| command_line(line, 42);
        let port = port(&["198.18.1.2/24", "2001:db8::2/64"]);
        let text = format!("mtu = 1500\n{BARE}{OVN}");
        // ovnkube-node runs with MTU 1400 (its default, no flag): 1500 here
        // disagrees with what it really uses.
        let error = DpuConfig::parse(&text)
            .and_then(|c| {
                c.validate_from(
                    Some(&read("ovnkube --init-node n --ovnkube-node-mode=dpu --cluster-subnets=198.18.128.0/17")),
                    Some(&port),
                )
            })
            .expect_err("disagrees")
            .to_string();
        assert!(
            error.contains("1500 here") && error.contains("1400 OVN-Kubernetes' default"),
            "{error}"
        );
        // From a file alone, a flag not seen may set it: this file's wins.
        let config = DpuConfig::parse(&text)
            .and_then(|c| {
                let file = OvnkubeFacts::from_file(
                    noverlay_ovnkube_facts::FileRef {
                        path: "/etc/openvswitch/ovn_k8s.conf".into(),
                        named_by: noverlay_ovnkube_facts::FileNamedBy::OvnkubeDefault,
                    },
                    "[default]\ncluster-subnets=198.18.128.0/17\n",
                )
                .expect("parses");
                c.validate_from(Some(&file), Some(&port))
            })
            .expect("valid");
        assert_eq!(config.offer.mtu, 1500);
    }

    #[test]
    fn a_cluster_cidr_that_would_take_ovnkubes_traffic_is_refused() {
        let port = port(&["198.18.1.2/24", "2001:db8::2/64"]);
        // Covering the node's underlay IP (from OVN's port).
        let covering = OvnkubeFacts::from_file(
            noverlay_ovnkube_facts::FileRef {
                path: "/etc/openvswitch/ovn_k8s.conf".into(),
                named_by: noverlay_ovnkube_facts::FileNamedBy::OvnkubeDefault,
            },
            "[default]\nmtu=1400\ncluster-subnets=198.18.0.0/16\n",
        )
        .expect("parses");
        let error = DpuConfig::parse(&format!("{BARE}{OVN}"))
            .and_then(|c| c.validate_from(Some(&covering), Some(&port)))
            .expect_err("covers the node")
            .to_string();
        assert!(
            error.contains("ipv4.cluster_cidrs")
                && error.contains("198.18.0.0/16 covers the node's underlay IP 198.18.1.2 (from OVN NB, port rtoe-GR_node1)"),
            "{error}"
        );
        // Overlapping the service CIDRs ovnkube-node runs with.
        let facts = command_line(
            "ovnkube --init-node n --ovnkube-node-mode=dpu --cluster-subnets=10.96.0.0/12 --k8s-service-cidr=10.96.0.0/16",
            7,
        );
        let error = DpuConfig::parse(&format!("{BARE}{OVN}"))
            .and_then(|c| c.validate_from(Some(&facts), Some(&port)))
            .expect_err("overlaps the services")
            .to_string();
        assert!(
            error.contains("10.96.0.0/12 overlaps ovnkube's service CIDR 10.96.0.0/16 (from ovnkube's command line (pid 7, --k8s-service-cidr))"),
            "{error}"
        );
        // ovnkube's default service CIDR from a file alone binds nothing:
        // a flag not seen may have moved it.
        let file = OvnkubeFacts::from_file(
            noverlay_ovnkube_facts::FileRef {
                path: "/etc/openvswitch/ovn_k8s.conf".into(),
                named_by: noverlay_ovnkube_facts::FileNamedBy::OvnkubeDefault,
            },
            "[default]\nmtu=1400\ncluster-subnets=172.16.0.0/16\n",
        )
        .expect("parses");
        DpuConfig::parse(&format!("{BARE}{OVN}"))
            .and_then(|c| c.validate_from(Some(&file), Some(&port)))
            .expect("valid");
    }
}
