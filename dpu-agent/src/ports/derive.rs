//! Which of the bridge's ports is which, where the config leaves a name
//! out, and their port numbers. The uplink is found the way ovnkube-node finds it (so both agree on
//! the port its flows use); the patch port and the host representor by
//! elimination. Each rule answers only where the answer is unambiguous, and
//! otherwise says which `[bridge]` key settles it. Pure code, unit tested.

use super::{DiscoveryError, PortNames};
use crate::flows::PortMap;
use noverlay_ovsdb::replica::{Replica, Row, map_value, uuids};
use noverlay_proto::contract::parse_mac;
use serde_json::Value;
use std::collections::HashMap;

/// The integration bridge unless Open_vSwitch's external_ids:ovn-bridge
/// names another (as ovn-controller reads it).
const DEFAULT_INTEGRATION_BRIDGE: &str = "br-int";

/// Every port name, as configured or derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNames {
    pub host_representor: String,
    pub patch: String,
    pub uplink: String,
}

/// One interface on the bridge: its name and OVSDB `type` ("" for a
/// system device).
struct BridgeInterface {
    name: String,
    kind: String,
    peer: Option<String>,
}

/// The Open_vSwitch database's Bridge, Port and Interface tables, as a
/// monitor's replica holds them.
#[derive(Debug, Clone, Copy)]
pub struct SwitchDb<'a>(pub &'a Replica);

impl<'a> SwitchDb<'a> {
    /// The row of the bridge named `bridge`.
    pub fn bridge_row(&self, bridge: &str) -> Option<&'a Row> {
        self.0
            .rows("Bridge")
            .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(bridge))
            .map(|(_, row)| row)
    }

    /// The interface rows on the ports of the bridge named `bridge`, with
    /// their names (none when there is no such bridge).
    pub fn interfaces_of(&self, bridge: &str) -> Vec<(&'a str, &'a Row)> {
        let Some(ports) = self.bridge_row(bridge).map(|row| uuids(row.get("ports"))) else {
            return Vec::new();
        };
        let replica = self.0;
        replica
            .rows("Port")
            .filter(|(uuid, _)| ports.contains(uuid))
            .flat_map(|(_, port)| uuids(port.get("interfaces")))
            .filter_map(|uuid| replica.row("Interface", &uuid))
            .filter_map(|row| Some((row.get("name")?.as_str()?, row)))
            .collect()
    }

    /// The port numbers and bridge MAC for `names`.
    pub fn port_map(&self, names: &PortNames) -> Result<PortMap, DiscoveryError> {
        let resolved = self.resolve(names)?;
        self.ports_of(&names.bridge, &resolved)
    }

    /// The port numbers and MAC of `bridge`, whose ports are `resolved`.
    pub fn ports_of(
        &self,
        bridge: &str,
        resolved: &ResolvedNames,
    ) -> Result<PortMap, DiscoveryError> {
        if self.bridge_row(bridge).is_none() {
            return Err(DiscoveryError::NoBridge(bridge.to_string()));
        }
        let interfaces: HashMap<&str, &Row> = self.interfaces_of(bridge).into_iter().collect();
        let ofport = |port: &str, key: &'static str| -> Result<u32, DiscoveryError> {
            let interface = interfaces.get(port).ok_or_else(|| DiscoveryError::NoPort {
                bridge: bridge.to_string(),
                port: port.to_string(),
                key,
            })?;
            let raw = interface.get("ofport").cloned().unwrap_or(Value::Null);
            raw.as_i64()
                .filter(|n| (1..=0xfeff).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| DiscoveryError::NoOfport(port.to_string(), raw.to_string()))
        };
        let bridge_mac = interfaces
            .get(bridge)
            .and_then(|i| i.get("mac_in_use"))
            .and_then(Value::as_str)
            .and_then(parse_mac)
            .ok_or_else(|| DiscoveryError::NoMac(bridge.to_string()))?;
        Ok(PortMap {
            host_representor: ofport(&resolved.host_representor, "host_representor")?,
            patch: ofport(&resolved.patch, "patch_port")?,
            uplink: ofport(&resolved.uplink, "uplink")?,
            bridge_mac,
        })
    }

    /// The three port names: each as named in `names`, else derived.
    pub fn resolve(&self, names: &PortNames) -> Result<ResolvedNames, DiscoveryError> {
        if self.bridge_row(&names.bridge).is_none() {
            return Err(DiscoveryError::NoBridge(names.bridge.clone()));
        }
        let patch = self.patch_name(names)?;
        let uplink = self.uplink(names)?;
        let host_representor = match &names.host_representor {
            Some(name) => name.clone(),
            None => self.host_representor_name(&names.bridge, &patch, &uplink)?,
        };
        Ok(ResolvedNames {
            host_representor,
            patch,
            uplink,
        })
    }

    /// The uplink: as named, or else derived.
    pub fn uplink(&self, names: &PortNames) -> Result<String, DiscoveryError> {
        match &names.uplink {
            Some(name) => Ok(name.clone()),
            None => self.uplink_name(&names.bridge),
        }
    }

    /// The patch port: as named, or else the one patch interface of the
    /// bridge whose peer is on the integration bridge.
    pub fn patch_name(&self, names: &PortNames) -> Result<String, DiscoveryError> {
        if let Some(name) = &names.patch {
            return Ok(name.clone());
        }
        let bridge = names.bridge.as_str();
        let integration = self
            .0
            .rows("Open_vSwitch")
            .find_map(|(_, row)| map_value(row.get("external_ids"), "ovn-bridge"))
            .unwrap_or_else(|| DEFAULT_INTEGRATION_BRIDGE.to_string());
        let on_integration: Vec<String> = self
            .bridge_interfaces(&integration)
            .into_iter()
            .map(|i| i.name)
            .collect();
        let mut found: Vec<String> = self
            .bridge_interfaces(bridge)
            .into_iter()
            .filter(|i| {
                i.kind == "patch"
                    && i.peer
                        .as_ref()
                        .is_some_and(|peer| on_integration.contains(peer))
            })
            .map(|i| i.name)
            .collect();
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(DiscoveryError::NoPatch {
                bridge: bridge.to_string(),
                integration,
            }),
            _ => Err(DiscoveryError::ManyPatches {
                bridge: bridge.to_string(),
                integration,
                found,
            }),
        }
    }

    /// The uplink by ovnkube-node's own rule: the bridge's one interface of
    /// type `system`; else the bridge's `external_ids:bridge-uplink` (which
    /// ovnkube writes when it makes the bridge); else, for a bridge named
    /// `br<nic>`, its port `<nic>`.
    fn uplink_name(&self, bridge: &str) -> Result<String, DiscoveryError> {
        let interfaces = self.bridge_interfaces(bridge);
        let on_bridge = |name: &str| interfaces.iter().any(|i| i.name == name);
        let system: Vec<&BridgeInterface> =
            interfaces.iter().filter(|i| i.kind == "system").collect();
        if let [only] = system.as_slice() {
            return Ok(only.name.clone());
        }
        let external = self
            .bridge_row(bridge)
            .and_then(|row| map_value(row.get("external_ids"), "bridge-uplink"))
            .filter(|name| !name.is_empty());
        if let Some(name) = external {
            return if on_bridge(&name) {
                Ok(name)
            } else {
                Err(DiscoveryError::UplinkNotOnBridge {
                    bridge: bridge.to_string(),
                    named: name,
                })
            };
        }
        match bridge.strip_prefix("br") {
            Some(nic) if !nic.is_empty() && on_bridge(nic) => Ok(nic.to_string()),
            _ => Err(DiscoveryError::NoUplink {
                bridge: bridge.to_string(),
                system_interfaces: system.len(),
            }),
        }
    }

    /// The host representor by elimination: the one interface of the bridge
    /// that is neither the bridge's own (internal), a patch port, nor the
    /// uplink.
    fn host_representor_name(
        &self,
        bridge: &str,
        patch: &str,
        uplink: &str,
    ) -> Result<String, DiscoveryError> {
        let mut left: Vec<String> = self
            .bridge_interfaces(bridge)
            .into_iter()
            .filter(|i| {
                i.kind != "internal" && i.kind != "patch" && i.name != patch && i.name != uplink
            })
            .map(|i| i.name)
            .collect();
        left.sort();
        match left.len() {
            1 => Ok(left.remove(0)),
            _ => Err(DiscoveryError::HostRepresentor {
                bridge: bridge.to_string(),
                uplink: uplink.to_string(),
                left,
            }),
        }
    }

    /// The interfaces on the ports of the bridge named `bridge`.
    fn bridge_interfaces(&self, bridge: &str) -> Vec<BridgeInterface> {
        self.interfaces_of(bridge)
            .into_iter()
            .map(|(name, row)| BridgeInterface {
                name: name.to_string(),
                kind: row
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                peer: map_value(row.get("options"), "peer"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// breth0 as on a DPU: internal port, host representor, uplink, the
    /// patch port to br-int (whose peer is there), all system devices of
    /// type "" as `ovs-vsctl add-port` leaves them.
    fn dpu_bridge(bridge_external_ids: Value) -> Replica {
        let mut replica = Replica::default();
        replica
            .apply(&json!({
                "Bridge": {
                    "b1": {"new": {"name": "breth0", "external_ids": bridge_external_ids,
                        "ports": ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"], ["uuid", "p4"]]]}},
                    "b2": {"new": {"name": "br-int", "ports": ["uuid", "p9"]}}
                },
                "Port": {
                    "p1": {"new": {"name": "breth0", "interfaces": ["uuid", "i1"]}},
                    "p2": {"new": {"name": "pf0hpf", "interfaces": ["uuid", "i2"]}},
                    "p3": {"new": {"name": "patch-breth0_n1-to-br-int", "interfaces": ["uuid", "i3"]}},
                    "p4": {"new": {"name": "p0", "interfaces": ["uuid", "i4"]}},
                    "p9": {"new": {"name": "patch-br-int-to-breth0_n1", "interfaces": ["uuid", "i9"]}}
                },
                "Interface": {
                    "i1": {"new": {"name": "breth0", "type": "internal"}},
                    "i2": {"new": {"name": "pf0hpf", "type": ""}},
                    "i3": {"new": {"name": "patch-breth0_n1-to-br-int", "type": "patch",
                        "options": ["map", [["peer", "patch-br-int-to-breth0_n1"]]]}},
                    "i4": {"new": {"name": "p0", "type": ""}},
                    "i9": {"new": {"name": "patch-br-int-to-breth0_n1", "type": "patch",
                        "options": ["map", [["peer", "patch-breth0_n1-to-br-int"]]]}}
                }
            }))
            .expect("apply");
        replica
    }

    fn unnamed() -> PortNames {
        PortNames {
            bridge: "breth0".into(),
            host_representor: None,
            patch: None,
            uplink: None,
        }
    }

    fn set_type(replica: &mut Replica, interface: &str, kind: &str) {
        replica
            .apply(&json!({"Interface": {interface: {"new": {"type": kind}}}}))
            .expect("apply");
    }

    #[test]
    fn every_port_is_found_on_a_bridge_ovnkube_made() {
        let replica = dpu_bridge(json!(["map", [["bridge-uplink", "p0"]]]));
        assert_eq!(
            SwitchDb(&replica).resolve(&unnamed()),
            Ok(ResolvedNames {
                host_representor: "pf0hpf".into(),
                patch: "patch-breth0_n1-to-br-int".into(),
                uplink: "p0".into(),
            })
        );
    }

    #[test]
    fn the_uplink_follows_ovnkubes_order_of_rules() {
        // One interface of type system wins over bridge-uplink, as in ovnkube.
        let mut replica = dpu_bridge(json!(["map", [["bridge-uplink", "pf0hpf"]]]));
        set_type(&mut replica, "i4", "system");
        assert_eq!(SwitchDb(&replica).uplink_name("breth0"), Ok("p0".into()));
        // Two of them: that rule is skipped, bridge-uplink decides.
        set_type(&mut replica, "i2", "system");
        assert_eq!(
            SwitchDb(&replica).uplink_name("breth0"),
            Ok("pf0hpf".into())
        );
        // No external id: a bridge named br<nic> has the uplink <nic>.
        let mut renamed = Replica::default();
        renamed
            .apply(&json!({
                "Bridge": {"b1": {"new": {"name": "brp0", "ports": ["set", [["uuid", "p4"]]]}}},
                "Port": {"p4": {"new": {"name": "p0", "interfaces": ["uuid", "i4"]}}},
                "Interface": {"i4": {"new": {"name": "p0", "type": ""}}}
            }))
            .expect("apply");
        assert_eq!(SwitchDb(&renamed).uplink_name("brp0"), Ok("p0".into()));
    }

    #[test]
    fn an_uplink_that_cannot_be_told_says_which_key_to_set() {
        let none = dpu_bridge(json!(["map", []]));
        let error = SwitchDb(&none)
            .resolve(&unnamed())
            .expect_err("no rule applies");
        assert!(matches!(error, DiscoveryError::NoUplink { .. }), "{error}");
        assert!(error.to_string().contains("set [bridge] uplink"), "{error}");
        let elsewhere = dpu_bridge(json!(["map", [["bridge-uplink", "eth9"]]]));
        let error = SwitchDb(&elsewhere)
            .resolve(&unnamed())
            .expect_err("eth9 not here");
        assert!(
            error.to_string().contains("\"eth9\"") && error.to_string().contains("[bridge] uplink"),
            "{error}"
        );
    }

    #[test]
    fn a_second_candidate_host_representor_is_named_not_guessed() {
        let mut replica = dpu_bridge(json!(["map", [["bridge-uplink", "p0"]]]));
        replica
            .apply(&json!({
                "Bridge": {"b1": {"new": {"ports": ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"], ["uuid", "p4"], ["uuid", "p5"]]]}}},
                "Port": {"p5": {"new": {"name": "pf1hpf", "interfaces": ["uuid", "i5"]}}},
                "Interface": {"i5": {"new": {"name": "pf1hpf", "type": ""}}}
            }))
            .expect("apply");
        let error = SwitchDb(&replica)
            .resolve(&unnamed())
            .expect_err("two candidates");
        assert!(
            error.to_string().contains("pf0hpf, pf1hpf")
                && error.to_string().contains("set [bridge] host_representor"),
            "{error}"
        );
        // Named in the config, the second one does not matter.
        let named = PortNames {
            host_representor: Some("pf0hpf".into()),
            ..unnamed()
        };
        assert_eq!(
            SwitchDb(&replica)
                .resolve(&named)
                .map(|r| r.host_representor),
            Ok("pf0hpf".into())
        );
    }
}

#[cfg(test)]
mod port_map_tests {
    use super::*;
    use crate::flows::PortMap;
    use noverlay_ovsdb::Replica;
    use serde_json::json;

    fn names() -> PortNames {
        PortNames {
            bridge: "breth0".into(),
            host_representor: Some("pf0hpf".into()),
            patch: Some("patch-breth0".into()),
            uplink: Some("p0".into()),
        }
    }

    /// `initial()` with patch-breth0 a patch port whose peer is on br-int.
    fn with_patch_to_br_int() -> Replica {
        let mut replica = Replica::default();
        replica.apply(&initial()).expect("apply");
        replica
            .apply(&json!({"Interface": {"i3": {"new": {
                "type": "patch",
                "options": ["map", [["peer", "p0-other"]]]
            }}}}))
            .expect("apply");
        replica
    }

    #[test]
    fn the_patch_port_to_the_integration_bridge_is_found_when_not_named() {
        let unnamed = PortNames {
            patch: None,
            ..names()
        };
        let replica = with_patch_to_br_int();
        assert_eq!(
            SwitchDb(&replica).port_map(&unnamed).map(|m| m.patch),
            Ok(2)
        );
        // Named elsewhere by ovn-controller's external_ids:ovn-bridge: none.
        let mut elsewhere = replica.clone();
        elsewhere
            .apply(&json!({"Open_vSwitch": {"o1": {"new": {
                "external_ids": ["map", [["ovn-bridge", "br-other"], ["system-id", "node1"]]]
            }}}}))
            .expect("apply");
        let error = SwitchDb(&elsewhere)
            .port_map(&unnamed)
            .expect_err("no patch to br-other");
        assert!(matches!(error, DiscoveryError::NoPatch { .. }));
        assert!(
            error.to_string().contains("set [bridge] patch_port"),
            "{error}"
        );
        // Two of them: ambiguous, both named.
        let mut two = replica;
        two.apply(&json!({"Interface": {"i4": {"new": {
            "type": "patch",
            "options": ["map", [["peer", "p0-other"]]]
        }}}}))
        .expect("apply");
        let error = SwitchDb(&two)
            .port_map(&unnamed)
            .expect_err("ambiguous")
            .to_string();
        assert!(error.contains("p0, patch-breth0"), "{error}");
    }

    fn initial() -> Value {
        json!({
            "Bridge": {"b1": {"new": {"name": "breth0", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"], ["uuid", "p4"]]]}},
                       "b2": {"new": {"name": "br-int", "ports": ["uuid", "p9"]}}},
            "Port": {
                "p1": {"new": {"name": "breth0", "interfaces": ["uuid", "i1"]}},
                "p2": {"new": {"name": "pf0hpf", "interfaces": ["uuid", "i2"]}},
                "p3": {"new": {"name": "patch-breth0", "interfaces": ["uuid", "i3"]}},
                "p4": {"new": {"name": "p0", "interfaces": ["uuid", "i4"]}},
                "p9": {"new": {"name": "p0-other", "interfaces": ["uuid", "i9"]}}
            },
            "Interface": {
                "i1": {"new": {"name": "breth0", "ofport": 65534, "mac_in_use": "02:00:c6:12:00:0a"}},
                "i2": {"new": {"name": "pf0hpf", "ofport": 1, "mac_in_use": "aa:00:00:00:00:01"}},
                "i3": {"new": {"name": "patch-breth0", "ofport": 2, "mac_in_use": ["set", []]}},
                "i4": {"new": {"name": "p0", "ofport": 3, "mac_in_use": "aa:00:00:00:00:03"}},
                "i9": {"new": {"name": "p0-other", "ofport": 7, "mac_in_use": "aa:00:00:00:00:09"}}
            }
        })
    }

    #[test]
    fn port_map_comes_from_the_bridges_own_ports() {
        let mut replica = Replica::default();
        replica.apply(&initial()).expect("apply");
        assert_eq!(
            SwitchDb(&replica).port_map(&names()),
            Ok(PortMap {
                host_representor: 1,
                patch: 2,
                uplink: 3,
                bridge_mac: [0x02, 0x00, 0xc6, 0x12, 0x00, 0x0a],
            })
        );
        let other = PortNames {
            uplink: Some("p0-other".into()),
            ..names()
        };
        assert!(matches!(
            SwitchDb(&replica).port_map(&other),
            Err(DiscoveryError::NoPort { .. })
        ));
    }

    #[test]
    fn a_readded_port_gets_its_new_ofport_and_a_removed_one_is_reported() {
        let mut replica = Replica::default();
        replica.apply(&initial()).expect("apply");
        replica
            .apply(&json!({"Interface": {"i4": {"old": {"ofport": 3}, "new": {"name": "p0", "ofport": 9, "mac_in_use": "aa:00:00:00:00:03"}}}}))
            .expect("modify");
        assert_eq!(
            SwitchDb(&replica).port_map(&names()).map(|p| p.uplink),
            Ok(9)
        );
        replica
            .apply(&json!({"Interface": {"i2": {"old": {"name": "pf0hpf"}}}}))
            .expect("delete");
        assert!(SwitchDb(&replica).port_map(&names()).is_err());
        replica
            .apply(&json!({"Interface": {"i2": {"new": {"name": "pf0hpf", "ofport": -1, "mac_in_use": ["set", []]}}}}))
            .expect("re-add failed");
        assert!(matches!(
            SwitchDb(&replica).port_map(&names()),
            Err(DiscoveryError::NoOfport(..))
        ));
    }
}
