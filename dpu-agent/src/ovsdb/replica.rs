//! The port names to resolve and the local replica of the monitored OVSDB
//! rows (the port map is derived from it in `derive.rs`). Pure code, unit
//! tested.

use super::DiscoveryError;
use serde_json::Value;
use std::collections::HashMap;

/// The bridge and port names to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNames {
    pub bridge: String,
    /// None: each of these is derived from the bridge (`derive.rs`).
    pub host_representor: Option<String>,
    pub patch: Option<String>,
    pub uplink: Option<String>,
}

/// One row: column name -> OVSDB value.
pub type Row = serde_json::Map<String, Value>;

/// Rows of the monitored tables, by uuid: column name -> OVSDB value.
#[derive(Debug, Default, Clone)]
pub struct Replica {
    tables: HashMap<String, HashMap<String, serde_json::Map<String, Value>>>,
}

impl Replica {
    /// Applies a `<table-updates>` object (initial monitor reply or an
    /// `update` notification).
    pub fn apply(&mut self, updates: &Value) -> Result<(), DiscoveryError> {
        let updates = updates
            .as_object()
            .ok_or_else(|| DiscoveryError::Protocol("table-updates is not an object".into()))?;
        for (table, rows) in updates {
            let rows = rows
                .as_object()
                .ok_or_else(|| DiscoveryError::Protocol(format!("{table}: rows not an object")))?;
            let replica = self.tables.entry(table.clone()).or_default();
            for (uuid, change) in rows {
                match change.get("new").and_then(Value::as_object) {
                    Some(new) => {
                        let row = replica.entry(uuid.clone()).or_default();
                        for (column, value) in new {
                            row.insert(column.clone(), value.clone());
                        }
                    }
                    None => {
                        replica.remove(uuid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every row of `table`: (uuid, columns).
    pub fn rows(
        &self,
        table: &str,
    ) -> impl Iterator<Item = (&String, &serde_json::Map<String, Value>)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|rows| rows.iter())
    }

    /// The row of the bridge named `bridge`.
    pub fn bridge_row(&self, bridge: &str) -> Option<&Row> {
        self.rows("Bridge")
            .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(bridge))
            .map(|(_, row)| row)
    }

    /// The interface rows on the ports of the bridge named `bridge`, with
    /// their names (none when there is no such bridge).
    pub fn interfaces_of(&self, bridge: &str) -> Vec<(&str, &Row)> {
        let Some(ports) = self.bridge_row(bridge).map(|row| uuids(row.get("ports"))) else {
            return Vec::new();
        };
        self.rows("Port")
            .filter(|(uuid, _)| ports.contains(uuid))
            .flat_map(|(_, port)| uuids(port.get("interfaces")))
            .filter_map(|uuid| self.row("Interface", &uuid))
            .filter_map(|row| Some((row.get("name")?.as_str()?, row)))
            .collect()
    }

    /// The row of `table` with this uuid.
    pub fn row(&self, table: &str, uuid: &str) -> Option<&serde_json::Map<String, Value>> {
        self.tables.get(table)?.get(uuid)
    }
}

/// The value of `key` in an OVSDB map column (`["map", [[k, v], ...]]`).
pub fn map_value(value: Option<&Value>, key: &str) -> Option<String> {
    value?
        .as_array()
        .filter(|a| a.first().and_then(Value::as_str) == Some("map"))?
        .get(1)?
        .as_array()?
        .iter()
        .find_map(|pair| {
            let pair = pair.as_array()?;
            (pair.first()?.as_str()? == key).then(|| pair.get(1)?.as_str().map(str::to_string))?
        })
}

/// The strings in an OVSDB string or `["set", [s, ...]]` (an optional
/// column that is empty is `["set", []]`).
pub fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) if parts.first().and_then(Value::as_str) == Some("set") => parts
            .get(1)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The uuids in an OVSDB `["uuid", u]` or `["set", [["uuid", u], ...]]`.
pub fn uuids(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(parts)) = value else {
        return Vec::new();
    };
    match (parts.first().and_then(Value::as_str), parts.get(1)) {
        (Some("uuid"), Some(Value::String(u))) => vec![u.clone()],
        (Some("set"), Some(Value::Array(items))) => {
            items.iter().flat_map(|i| uuids(Some(i))).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::PortMap;
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
        assert_eq!(replica.port_map(&unnamed).map(|m| m.patch), Ok(2));
        // Named elsewhere by ovn-controller's external_ids:ovn-bridge: none.
        let mut elsewhere = replica.clone();
        elsewhere
            .apply(&json!({"Open_vSwitch": {"o1": {"new": {
                "external_ids": ["map", [["ovn-bridge", "br-other"], ["system-id", "node1"]]]
            }}}}))
            .expect("apply");
        let error = elsewhere
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
        let error = two.port_map(&unnamed).expect_err("ambiguous").to_string();
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
            replica.port_map(&names()),
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
            replica.port_map(&other),
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
        assert_eq!(replica.port_map(&names()).map(|p| p.uplink), Ok(9));
        replica
            .apply(&json!({"Interface": {"i2": {"old": {"name": "pf0hpf"}}}}))
            .expect("delete");
        assert!(replica.port_map(&names()).is_err());
        replica
            .apply(&json!({"Interface": {"i2": {"new": {"name": "pf0hpf", "ofport": -1, "mac_in_use": ["set", []]}}}}))
            .expect("re-add failed");
        assert!(matches!(
            replica.port_map(&names()),
            Err(DiscoveryError::NoOfport(..))
        ));
    }
}
