//! OVN's half of the contract, checked in the local northbound database
//! (optional `[ovn]` section). Our flows hand the host's traffic to the
//! gateway router and take its replies back; the path blackholes unless the
//! router's external port has the bridge's MAC and the node underlay IP,
//! and the router routes the masquerade subnet back via the dummy next hop
//! with a static MAC binding for it (nobody answers ARP for that address).
//! Those are ovnkube-node's to configure; this module only reads them
//! (an OVSDB monitor, so a change is seen at once) and reports a mismatch
//! in status and metrics, naming both values.

mod mismatch;
mod routes;

pub use crate::config::OvnConfig;
pub use crate::state::ClusterRoutes;
use crate::{
    config::{GatewayPort, GatewayPortSource},
    state::{AgentHandle, Source},
};
use ipnet::IpNet;
pub use mismatch::Mismatch;
use noverlay_ovsdb::{
    Error as OvsdbError, Monitor, RECONNECT_DELAY,
    replica::{Replica, map_value, strings, uuids},
};
use noverlay_proto::contract::{Offer, format_mac, parse_mac};
use routes::parse_prefix;
pub use routes::{ROUTE_IMPORT_OWNER, cluster_routes};
use serde_json::{Value, json};
use std::{net::IpAddr, time::Duration};
use tokio_util::sync::CancellationToken;

/// The northbound rows the check reads.
pub fn monitor_request() -> Value {
    json!({
        "method": "monitor",
        "id": noverlay_ovsdb::session::MONITOR_ID,
        "params": ["OVN_Northbound", null, {
            "Logical_Router": {"columns": ["name", "ports", "static_routes"]},
            "Logical_Router_Port": {"columns": ["name", "mac", "networks", "options"]},
            "Logical_Router_Static_Route": {"columns": [
                "ip_prefix", "nexthop", "external_ids", "policy", "route_table",
            ]},
            "Static_MAC_Binding": {"columns": ["logical_port", "ip", "mac"]},
        }],
    })
}

/// What OVN must agree with: our side of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// breth0's MAC; None while unknown (no check of the port's MAC yet).
    pub bridge_mac: Option<[u8; 6]>,
    pub families: Vec<ExpectedFamily>,
    /// The contract's MTU: the largest packet the host sends.
    pub mtu: u32,
    /// Both families' cluster CIDRs: OVN must route each somewhere.
    pub cluster_cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFamily {
    pub underlay_ip: IpAddr,
    pub masquerade_subnet: IpNet,
    pub dummy_next_hop: IpAddr,
}

impl Expected {
    pub fn new(offer: &Offer, bridge_mac: Option<[u8; 6]>) -> Self {
        Expected {
            bridge_mac,
            families: offer
                .families
                .iter()
                .map(|f| ExpectedFamily {
                    underlay_ip: f.underlay_ip,
                    masquerade_subnet: f.masquerade.subnet,
                    dummy_next_hop: f.masquerade.dummy_next_hop,
                })
                .collect(),
            mtu: offer.mtu,
            cluster_cidrs: offer
                .families
                .iter()
                .flat_map(|f| f.cluster_cidrs.iter().copied())
                .collect(),
        }
    }
}

pub(crate) type Row = serde_json::Map<String, Value>;

/// The gateway router's row and its external port's row.
fn router_and_port<'r>(
    replica: &'r Replica,
    config: &OvnConfig,
) -> Result<(&'r Row, Option<&'r Row>), Mismatch> {
    let router_name = &config.gateway_router;
    let port_name = config.external_port();
    let (_, router) = replica
        .rows("Logical_Router")
        .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(router_name.as_str()))
        .ok_or_else(|| Mismatch::NoRouter(router_name.clone()))?;
    let port = uuids(router.get("ports"))
        .iter()
        .filter_map(|uuid| replica.row("Logical_Router_Port", uuid))
        .find(|row| row.get("name").and_then(Value::as_str) == Some(port_name.as_str()));
    Ok((router, port))
}

/// (prefix, next hop) of each of the router's static routes.
fn static_routes(replica: &Replica, router: &Row) -> Vec<(Option<IpNet>, String)> {
    uuids(router.get("static_routes"))
        .iter()
        .filter_map(|uuid| replica.row("Logical_Router_Static_Route", uuid))
        .map(|row| {
            let prefix = row.get("ip_prefix").and_then(Value::as_str).unwrap_or("");
            (
                parse_prefix(prefix),
                row.get("nexthop")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The external port's name and networks, for the underlay IPs the config
/// leaves out, and the router's routes, for its masquerade subnets.
pub fn gateway_port(replica: &Replica, config: &OvnConfig) -> Result<GatewayPort, Mismatch> {
    let name = config.external_port();
    let (router, port) = router_and_port(replica, config)?;
    let routes = static_routes(replica, router)
        .into_iter()
        .filter_map(|(prefix, via)| Some((prefix?, via.parse().ok()?)))
        .collect();
    let Some(port) = port else {
        return Err(Mismatch::NoPort {
            router: config.gateway_router.clone(),
            port: name,
        });
    };
    let networks = strings(port.get("networks"))
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .collect();
    Ok(GatewayPort {
        router: config.gateway_router.clone(),
        name,
        networks,
        routes,
    })
}

/// How long reading the gateway port at load may take (a local socket
/// answers in milliseconds).
pub const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Reads the gateway router's external port once, within `deadline`: a
/// monitor's initial state, on a thread of its own (the config is loaded
/// outside and inside the runtime).
pub fn read_gateway_port(config: &OvnConfig, deadline: Duration) -> Result<GatewayPort, String> {
    let socket = config.nb_socket.clone();
    let read = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(async {
            match tokio::time::timeout(deadline, Monitor::start(&socket, &monitor_request())).await
            {
                Ok(Ok(monitor)) => Ok(monitor.into_replica()),
                Ok(Err(OvsdbError::Connect(reason))) => Err(format!(
                    "cannot connect to {reason} (config [ovn] nb_socket): is OVN's northbound ovsdb-server running?"
                )),
                Ok(Err(other)) => Err(format!("{}: {other}", socket.display())),
                Err(_) => Err(format!(
                    "{}: no monitor reply within {deadline:?}",
                    socket.display()
                )),
            }
        })
    });
    let replica = read
        .join()
        .map_err(|_| "the northbound read failed".to_string())??;
    gateway_port(&replica, config).map_err(|e| e.to_string())
}

/// The gateway router's port as the northbound database has it now.
pub struct Northbound;

impl GatewayPortSource for Northbound {
    fn gateway_port(&self, config: &OvnConfig) -> Result<GatewayPort, String> {
        read_gateway_port(config, READ_DEADLINE)
    }
}

/// Everything in the northbound replica that would blackhole the path.
pub fn check(replica: &Replica, config: &OvnConfig, expected: &Expected) -> Vec<Mismatch> {
    check_and_count(replica, config, expected).0
}

/// [`check`], and the router's routes for the cluster CIDRs (None without
/// the router).
pub fn check_and_count(
    replica: &Replica,
    config: &OvnConfig,
    expected: &Expected,
) -> (Vec<Mismatch>, Option<ClusterRoutes>) {
    let router_name = &config.gateway_router;
    let port_name = config.external_port();
    let (router, port) = match router_and_port(replica, config) {
        Ok(found) => found,
        Err(missing) => return (vec![missing], None),
    };
    let mut mismatches = Vec::new();
    match port {
        None => mismatches.push(Mismatch::NoPort {
            router: router_name.clone(),
            port: port_name.clone(),
        }),
        Some(port) => {
            let mac = port.get("mac").and_then(Value::as_str).unwrap_or_default();
            if let Some(bridge_mac) = expected.bridge_mac
                && parse_mac(mac) != Some(bridge_mac)
            {
                mismatches.push(Mismatch::PortMac {
                    port: port_name.clone(),
                    found: mac.to_string(),
                    bridge_mac: format_mac(&bridge_mac),
                });
            }
            if let Some(gateway_mtu) = map_value(port.get("options"), "gateway_mtu")
                .and_then(|mtu| mtu.parse::<u32>().ok())
                .filter(|gateway_mtu| *gateway_mtu < expected.mtu)
            {
                mismatches.push(Mismatch::GatewayMtu {
                    port: port_name.clone(),
                    gateway_mtu,
                    mtu: expected.mtu,
                });
            }
            let networks = strings(port.get("networks"));
            for family in &expected.families {
                let has_ip = networks.iter().any(|n| {
                    n.parse::<IpNet>()
                        .is_ok_and(|net| net.addr() == family.underlay_ip)
                });
                if !has_ip {
                    mismatches.push(Mismatch::PortAddress {
                        port: port_name.clone(),
                        found: networks.clone(),
                        underlay_ip: family.underlay_ip,
                    });
                }
            }
        }
    }
    let routes = static_routes(replica, router);
    for family in &expected.families {
        let subnet = family.masquerade_subnet;
        match routes.iter().find(|(prefix, _)| *prefix == Some(subnet)) {
            None => mismatches.push(Mismatch::NoMasqueradeRoute {
                router: router_name.clone(),
                subnet,
                found: routes
                    .iter()
                    .map(|(prefix, via)| match prefix {
                        Some(p) => format!("{p} via {via}"),
                        None => format!("? via {via}"),
                    })
                    .collect(),
            }),
            Some((_, via)) if via.parse::<IpAddr>().ok() != Some(family.dummy_next_hop) => {
                mismatches.push(Mismatch::RouteNextHop {
                    router: router_name.clone(),
                    subnet,
                    found: via.clone(),
                    dummy_next_hop: family.dummy_next_hop,
                });
            }
            Some(_) => {}
        }
        let bound = replica.rows("Static_MAC_Binding").any(|(_, row)| {
            row.get("logical_port").and_then(Value::as_str) == Some(port_name.as_str())
                && row
                    .get("ip")
                    .and_then(Value::as_str)
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                    == Some(family.dummy_next_hop)
        });
        if !bound {
            mismatches.push(Mismatch::NoMacBinding {
                port: port_name.clone(),
                ip: family.dummy_next_hop,
            });
        }
    }
    let counted = cluster_routes(replica, router, &expected.cluster_cidrs);
    mismatches.extend(
        counted
            .unrouted
            .iter()
            .map(|cidr| Mismatch::NoClusterRoute {
                router: router_name.clone(),
                cidr: *cidr,
            }),
    );
    (mismatches, Some(counted))
}

/// Follows the northbound database, the offer and the port map; records
/// the check's outcome as the "ovn" source (and the mismatches for
/// metrics) after every change. Reconnects when the database goes away.
pub async fn run_ovn_check(handle: AgentHandle, config: OvnConfig, shutdown: CancellationToken) {
    // The same failure every half second is logged once a minute.
    let mut failing = noverlay_runtime::logging::Repeats::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(e) = follow(&handle, &config) => {
                let e = match e {
                    OvsdbError::Connect(reason) => format!(
                        "cannot connect to the northbound database at {reason} (config [ovn] nb_socket); is OVN's ovsdb-server running, and is this its socket?"
                    ),
                    other => format!("northbound database {}: {other}", config.nb_socket.display()),
                };
                if let Some(suppressed) = failing.due(&e) {
                    tracing::warn!(error = %e, suppressed, "northbound database lost; retrying");
                }
                // Counts of a router we cannot read are not shown as now.
                handle.set_ovn_routes(None);
                handle.set_source(Source::Ovn, Err(e));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

async fn follow(handle: &AgentHandle, config: &OvnConfig) -> Result<(), OvsdbError> {
    let mut monitor = Monitor::start(&config.nb_socket, &monitor_request()).await?;
    let (mut offers, mut ports) = handle.subscribe();
    let mut last: Option<Vec<Mismatch>> = None;
    loop {
        let expected = Expected::new(&handle.offer(), handle.ports().map(|p| p.bridge_mac));
        let (mismatches, counted) = check_and_count(monitor.replica(), config, &expected);
        handle.set_ovn_routes(counted);
        if last.as_ref() != Some(&mismatches) {
            if mismatches.is_empty() {
                tracing::info!(router = %config.gateway_router, "OVN's gateway router agrees with the contract");
            } else {
                for mismatch in &mismatches {
                    // A CIDR without routes is expected for the seconds BGP
                    // and route import take: a warning in the log; lasting,
                    // it is a blackhole, and it fails the source like the
                    // others (the alerts wait minutes).
                    if matches!(mismatch, Mismatch::NoClusterRoute { .. }) {
                        tracing::warn!(%mismatch, "OVN routes none of a cluster CIDR");
                    } else {
                        tracing::error!(%mismatch, "OVN's half of the contract does not hold");
                    }
                }
            }
            let outcome = match mismatches.as_slice() {
                [] => Ok(()),
                some => Err(some
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            handle.set_ovn_mismatches(mismatches.len());
            handle.set_source(Source::Ovn, outcome);
            last = Some(mismatches);
        }
        tokio::select! {
            changed = monitor.changed() => changed?,
            changed = offers.changed() => if changed.is_err() { return Ok(()) },
            changed = ports.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OvnConfig {
        OvnConfig {
            nb_socket: "/var/run/ovn/ovnnb_db.sock".into(),
            gateway_router: "GR_node1".into(),
            external_port: None,
        }
    }

    fn expected() -> Expected {
        Expected {
            bridge_mac: Some([2, 0, 0xc6, 0x12, 0, 0x0a]),
            families: vec![ExpectedFamily {
                underlay_ip: "198.18.0.10".parse().expect("ip"),
                masquerade_subnet: "169.254.0.0/17".parse().expect("net"),
                dummy_next_hop: "169.254.0.4".parse().expect("ip"),
            }],
            mtu: 1400,
            cluster_cidrs: vec!["198.18.128.0/17".parse().expect("net")],
        }
    }

    /// The northbound rows as ovnkube-node leaves them (a monitor reply).
    fn northbound(mac: &str, networks: Value, via: &str, binding_ip: &str) -> Replica {
        let mut replica = Replica::default();
        replica
            .apply(&json!({
                "Logical_Router": {"r1": {"new": {
                    "name": "GR_node1",
                    "ports": ["set", [["uuid", "p1"]]],
                    "static_routes": ["set", [["uuid", "s1"], ["uuid", "s2"]]],
                }}},
                "Logical_Router_Port": {"p1": {"new": {
                    "name": "rtoe-GR_node1", "mac": mac, "networks": networks,
                }}},
                "Logical_Router_Static_Route": {
                    "s1": {"new": {"ip_prefix": "169.254.0.0/17", "nexthop": via,
                                   "output_port": "rtoe-GR_node1"}},
                    "s2": {"new": {"ip_prefix": "198.18.128.0/17", "nexthop": "198.18.0.20",
                                   "output_port": ["set", []]}},
                },
                "Static_MAC_Binding": {"m1": {"new": {
                    "logical_port": "rtoe-GR_node1", "ip": binding_ip, "mac": "0a:58:a9:fe:00:04",
                }}},
            }))
            .expect("valid updates");
        replica
    }

    #[test]
    fn ovnkubes_gateway_router_agrees() {
        let nb = northbound(
            "02:00:c6:12:00:0a",
            json!("198.18.0.10/24"),
            "169.254.0.4",
            "169.254.0.4",
        );
        assert_eq!(check(&nb, &config(), &expected()), vec![]);
    }

    #[test]
    fn the_gateway_port_gives_its_networks_and_a_missing_one_is_named() {
        let nb = northbound(
            "02:00:c6:12:00:0a",
            json!(["set", ["198.18.0.10/24", "2001:db8::2/64"]]),
            "169.254.0.4",
            "169.254.0.4",
        );
        let port = gateway_port(&nb, &config()).expect("port");
        assert_eq!(port.name, "rtoe-GR_node1");
        assert_eq!(
            port.networks,
            vec![
                "198.18.0.10/24".parse::<IpNet>().expect("net"),
                "2001:db8::2/64".parse().expect("net")
            ]
        );
        let other = OvnConfig {
            external_port: Some("rtoe-other".into()),
            ..config()
        };
        let error = gateway_port(&nb, &other).expect_err("no such port");
        assert!(
            error.to_string().contains("\"rtoe-other\" not found"),
            "{error}"
        );
    }

    #[test]
    fn each_mismatch_names_both_values() {
        let nb = northbound(
            "02:00:c6:12:00:0b",
            json!(["set", ["198.18.0.11/24", "fd00::1/64"]]),
            "169.254.0.9",
            "169.254.0.5",
        );
        let found: Vec<String> = check(&nb, &config(), &expected())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].contains("02:00:c6:12:00:0b") && found[0].contains("02:00:c6:12:00:0a"));
        assert!(found[1].contains("198.18.0.11/24") && found[1].contains("198.18.0.10"));
        assert!(found[2].contains("via 169.254.0.9") && found[2].contains("169.254.0.4"));
        assert!(found[3].contains("169.254.0.4") && found[3].contains("rtoe-GR_node1"));
    }

    #[test]
    fn a_missing_router_route_or_port_is_named() {
        let nb = northbound(
            "02:00:c6:12:00:0a",
            json!("198.18.0.10/24"),
            "169.254.0.4",
            "169.254.0.4",
        );
        let other_router = OvnConfig {
            gateway_router: "GR_node2".into(),
            ..config()
        };
        assert_eq!(
            check(&nb, &other_router, &expected()),
            vec![Mismatch::NoRouter("GR_node2".into())]
        );
        let other_port = OvnConfig {
            external_port: Some("rtoe-x".into()),
            ..config()
        };
        let mismatches = check(&nb, &other_port, &expected());
        assert_eq!(
            mismatches[0],
            Mismatch::NoPort {
                router: "GR_node1".into(),
                port: "rtoe-x".into()
            }
        );
        let mut other_subnet = expected();
        other_subnet.families[0].masquerade_subnet = "169.254.128.0/17".parse().expect("net");
        let text = check(&nb, &config(), &other_subnet)[0].to_string();
        assert!(
            text.contains("no route for the masquerade subnet 169.254.128.0/17")
                && text.contains("169.254.0.0/17 via 169.254.0.4"),
            "{text}"
        );
    }

    #[test]
    fn a_gateway_mtu_below_the_hosts_is_named_and_one_at_it_is_not() {
        let mut nb = northbound(
            "02:00:c6:12:00:0a",
            json!("198.18.0.10/24"),
            "169.254.0.4",
            "169.254.0.4",
        );
        let options = |mtu: &str| {
            json!({"Logical_Router_Port": {"p1": {"new": {
                "name": "rtoe-GR_node1", "mac": "02:00:c6:12:00:0a",
                "networks": "198.18.0.10/24",
                "options": ["map", [["gateway_mtu", mtu]]],
            }}}})
        };
        nb.apply(&options("1400")).expect("update");
        assert_eq!(check(&nb, &config(), &expected()), vec![]);
        nb.apply(&options("1300")).expect("update");
        let found = check(&nb, &config(), &expected());
        assert_eq!(
            found,
            vec![Mismatch::GatewayMtu {
                port: "rtoe-GR_node1".into(),
                gateway_mtu: 1300,
                mtu: 1400
            }]
        );
        let text = found[0].to_string();
        assert!(
            text.contains("gateway_mtu=1300") && text.contains("MTU 1400"),
            "{text}"
        );
    }

    #[test]
    fn the_bridge_mac_is_not_checked_while_unknown() {
        let nb = northbound(
            "02:00:c6:12:00:0b",
            json!("198.18.0.10/24"),
            "169.254.0.4",
            "169.254.0.4",
        );
        let unknown = Expected {
            bridge_mac: None,
            ..expected()
        };
        assert_eq!(check(&nb, &config(), &unknown), vec![]);
    }

    /// Static routes under their uuids, as route import and ovnkube write
    /// them: (uuid, prefix, next hop, owner).
    fn with_routes(routes: &[(&str, &str, &str, Option<&str>)]) -> Replica {
        let mut nb = northbound(
            "02:00:c6:12:00:0a",
            json!("198.18.0.10/24"),
            "169.254.0.4",
            "169.254.0.4",
        );
        let uuids: Vec<Value> = routes.iter().map(|(u, ..)| json!(["uuid", u])).collect();
        let mut rows = serde_json::Map::new();
        for (uuid, prefix, via, owner) in routes {
            let ids = match owner {
                Some(owner) => json!(["map", [["k8s.ovn.org/owner-controller", owner]]]),
                None => json!(["map", []]),
            };
            rows.insert(
                uuid.to_string(),
                json!({"new": {"ip_prefix": prefix, "nexthop": via, "external_ids": ids}}),
            );
        }
        nb.apply(&json!({
            "Logical_Router": {"r1": {"new": {
                "name": "GR_node1",
                "ports": ["set", [["uuid", "p1"]]],
                "static_routes": ["set", uuids],
            }}},
            "Logical_Router_Static_Route": rows,
        }))
        .expect("valid updates");
        nb
    }

    #[test]
    fn routes_inside_or_holding_a_cluster_cidr_are_counted_and_imported_ones_told_apart() {
        let nb = with_routes(&[
            ("s1", "169.254.0.0/17", "169.254.0.4", None),
            ("a", "198.18.201.0/24", "198.18.0.21", Some("RouteImport")),
            ("b", "198.18.201.0/24", "198.18.0.22", Some("RouteImport")),
            ("c", "198.18.202.0/24", "198.18.0.22", Some("someone-else")),
            ("d", "198.19.0.0/24", "198.18.0.22", Some("RouteImport")),
        ]);
        let (mismatches, counted) = check_and_count(&nb, &config(), &expected());
        assert_eq!(mismatches, vec![]);
        assert_eq!(
            counted,
            Some(ClusterRoutes {
                routes: 3,
                imported: 2,
                unrouted: vec![]
            })
        );
        // A default route holds every cluster CIDR.
        let nb = with_routes(&[
            ("s1", "169.254.0.0/17", "169.254.0.4", None),
            ("e", "0.0.0.0/0", "198.18.0.1", None),
        ]);
        let (mismatches, counted) = check_and_count(&nb, &config(), &expected());
        assert_eq!(mismatches, vec![]);
        assert_eq!(counted.map(|c| (c.routes, c.imported)), Some((1, 0)));
    }

    #[test]
    fn a_cluster_cidr_without_any_route_is_named() {
        let nb = with_routes(&[
            ("s1", "169.254.0.0/17", "169.254.0.4", None),
            ("d", "198.19.0.0/24", "198.18.0.22", Some("RouteImport")),
        ]);
        let (mismatches, counted) = check_and_count(&nb, &config(), &expected());
        let cidr: IpNet = "198.18.128.0/17".parse().expect("net");
        assert_eq!(
            mismatches,
            vec![Mismatch::NoClusterRoute {
                router: "GR_node1".into(),
                cidr
            }]
        );
        assert_eq!(counted.map(|c| c.unrouted), Some(vec![cidr]));
        let text = mismatches[0].to_string();
        assert!(
            text.contains("no route for the cluster CIDR 198.18.128.0/17"),
            "{text}"
        );
    }

    #[test]
    fn only_destination_routes_of_the_main_table_count_and_families_stay_apart() {
        let mut nb = with_routes(&[
            ("s1", "169.254.0.0/17", "169.254.0.4", None),
            ("v4default", "0.0.0.0/0", "198.18.0.1", None),
            ("src", "198.18.201.0/24", "198.18.0.21", None),
            ("other_table", "198.18.202.0/24", "198.18.0.22", None),
            ("discard", "198.18.203.0/24", "discard", None),
            ("host", "198.18.204.1", "198.18.0.22", Some("RouteImport")),
        ]);
        nb.apply(&json!({"Logical_Router_Static_Route": {
            "src": {"new": {"ip_prefix": "198.18.201.0/24", "nexthop": "198.18.0.21", "policy": "src-ip"}},
            "other_table": {"new": {"ip_prefix": "198.18.202.0/24", "nexthop": "198.18.0.22", "route_table": "rtb-1"}},
        }}))
        .expect("valid updates");
        let six: IpNet = "fd00:10:244::/48".parse().expect("net");
        let cidrs = vec!["198.18.128.0/17".parse().expect("net"), six];
        let Ok((router, _)) = router_and_port(&nb, &config()) else {
            panic!("no router");
        };
        let counted = cluster_routes(&nb, router, &cidrs);
        // The IPv4 default route and the host route count; the source
        // policy, other table and discard routes do not; an IPv4 default
        // route holds no IPv6 CIDR.
        assert_eq!(
            counted,
            ClusterRoutes {
                routes: 2,
                imported: 1,
                unrouted: vec![six]
            }
        );
    }
}
