//! A small OVSDB client (RFC 7047, JSON-RPC over the unix socket): one
//! `monitor` of the Bridge, Port and Interface columns we need, kept as a
//! local replica, from which the port map is derived.
//!
//! Why our own: the Rust OVSDB crates are thin or unmaintained, and all we
//! need is one monitor of five columns. The replica logic is pure and unit
//! tested; the socket part is a loop around it.

use crate::flows::PortMap;
use noverlay_proto::contract::parse_mac;
use serde_json::{Value, json};
use std::{collections::HashMap, path::Path};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// The bridge and port names to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNames {
    pub bridge: String,
    pub host_representor: String,
    pub patch: String,
    pub uplink: String,
}

/// Why the port map cannot be derived (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("bridge {0:?} not found in OVSDB")]
    NoBridge(String),
    #[error("port {port:?} not found on bridge {bridge:?}")]
    NoPort { bridge: String, port: String },
    #[error("interface {0:?} has no OpenFlow port number yet (ofport {1})")]
    NoOfport(String, String),
    #[error("bridge {0:?} has no MAC address (mac_in_use of its internal interface)")]
    NoMac(String),
    #[error("OVSDB: {0}")]
    Protocol(String),
}

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

    fn rows(
        &self,
        table: &str,
    ) -> impl Iterator<Item = (&String, &serde_json::Map<String, Value>)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|rows| rows.iter())
    }

    /// The port numbers and bridge MAC for `names`.
    pub fn port_map(&self, names: &PortNames) -> Result<PortMap, DiscoveryError> {
        let bridge = self
            .rows("Bridge")
            .find(|(_, row)| row.get("name").and_then(Value::as_str) == Some(&names.bridge))
            .map(|(_, row)| row)
            .ok_or_else(|| DiscoveryError::NoBridge(names.bridge.clone()))?;
        let port_uuids = uuids(bridge.get("ports"));
        // Interfaces of the bridge's ports, by name.
        let mut interfaces: HashMap<&str, &serde_json::Map<String, Value>> = HashMap::new();
        for (uuid, port) in self.rows("Port") {
            if !port_uuids.contains(uuid) {
                continue;
            }
            for interface_uuid in uuids(port.get("interfaces")) {
                if let Some(interface) = self
                    .tables
                    .get("Interface")
                    .and_then(|rows| rows.get(&interface_uuid))
                    && let Some(name) = interface.get("name").and_then(Value::as_str)
                {
                    interfaces.insert(name, interface);
                }
            }
        }
        let ofport = |port: &str| -> Result<u32, DiscoveryError> {
            let interface = interfaces.get(port).ok_or_else(|| DiscoveryError::NoPort {
                bridge: names.bridge.clone(),
                port: port.to_string(),
            })?;
            let raw = interface.get("ofport").cloned().unwrap_or(Value::Null);
            raw.as_i64()
                .filter(|n| (1..=0xfeff).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| DiscoveryError::NoOfport(port.to_string(), raw.to_string()))
        };
        let bridge_mac = interfaces
            .get(names.bridge.as_str())
            .and_then(|i| i.get("mac_in_use"))
            .and_then(Value::as_str)
            .and_then(parse_mac)
            .ok_or_else(|| DiscoveryError::NoMac(names.bridge.clone()))?;
        Ok(PortMap {
            host_representor: ofport(&names.host_representor)?,
            patch: ofport(&names.patch)?,
            uplink: ofport(&names.uplink)?,
            bridge_mac,
        })
    }
}

/// The uuids in an OVSDB `["uuid", u]` or `["set", [["uuid", u], ...]]`.
fn uuids(value: Option<&Value>) -> Vec<String> {
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

/// The monitor request for the columns we replicate.
pub fn monitor_request(id: u64) -> Value {
    json!({
        "method": "monitor",
        "id": id,
        "params": ["Open_vSwitch", null, {
            "Bridge": {"columns": ["name", "ports"]},
            "Port": {"columns": ["name", "interfaces"]},
            "Interface": {"columns": ["name", "ofport", "mac_in_use"]},
        }],
    })
}

/// Splits a byte stream into complete JSON values; keeps a partial tail.
#[derive(Default)]
pub struct JsonFramer {
    buffer: Vec<u8>,
}

/// OVSDB messages are small; a peer sending more without closing a value is broken.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

impl JsonFramer {
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Value>, DiscoveryError> {
        self.buffer.extend_from_slice(bytes);
        let mut values = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            match stream.next() {
                Some(Ok(value)) => {
                    consumed = stream.byte_offset();
                    values.push(value);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(DiscoveryError::Protocol(e.to_string())),
                None => break,
            }
        }
        self.buffer.drain(..consumed);
        if self.buffer.len() > MAX_PENDING_BYTES {
            return Err(DiscoveryError::Protocol("oversized message".into()));
        }
        Ok(values)
    }
}

/// A live monitor on an OVSDB unix socket.
pub struct Monitor {
    stream: UnixStream,
    framer: JsonFramer,
    pub replica: Replica,
}

impl Monitor {
    /// Connects and installs the monitor; the replica holds the initial state.
    pub async fn start(socket: &Path) -> Result<Self, DiscoveryError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| DiscoveryError::Protocol(format!("connect {}: {e}", socket.display())))?;
        let mut monitor = Monitor {
            stream,
            framer: JsonFramer::default(),
            replica: Replica::default(),
        };
        monitor.send(&monitor_request(1)).await?;
        loop {
            for message in monitor.read().await? {
                if message.get("id") == Some(&json!(1)) {
                    if let Some(error) = message.get("error").filter(|e| !e.is_null()) {
                        return Err(DiscoveryError::Protocol(format!(
                            "monitor refused: {error}"
                        )));
                    }
                    let result = message.get("result").cloned().unwrap_or(Value::Null);
                    monitor.replica.apply(&result)?;
                    return Ok(monitor);
                }
                monitor.handle(message).await?;
            }
        }
    }

    /// Waits for the next change to the replica.
    pub async fn changed(&mut self) -> Result<(), DiscoveryError> {
        loop {
            let mut changed = false;
            for message in self.read().await? {
                changed |= self.handle(message).await?;
            }
            if changed {
                return Ok(());
            }
        }
    }

    /// Applies an update or answers an echo; true when the replica changed.
    async fn handle(&mut self, message: Value) -> Result<bool, DiscoveryError> {
        match message.get("method").and_then(Value::as_str) {
            Some("update") => {
                let updates = message
                    .get("params")
                    .and_then(|p| p.get(1))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.replica.apply(&updates)?;
                Ok(true)
            }
            Some("echo") => {
                let reply = json!({
                    "id": message.get("id").cloned().unwrap_or(Value::Null),
                    "result": message.get("params").cloned().unwrap_or(json!([])),
                    "error": null,
                });
                self.send(&reply).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn send(&mut self, value: &Value) -> Result<(), DiscoveryError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| DiscoveryError::Protocol(e.to_string()))?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| DiscoveryError::Protocol(format!("write: {e}")))
    }

    async fn read(&mut self) -> Result<Vec<Value>, DiscoveryError> {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = self
                .stream
                .read(&mut buffer)
                .await
                .map_err(|e| DiscoveryError::Protocol(format!("read: {e}")))?;
            if n == 0 {
                return Err(DiscoveryError::Protocol(
                    "ovsdb-server closed the connection".into(),
                ));
            }
            let values = self.framer.push(&buffer[..n])?;
            if !values.is_empty() {
                return Ok(values);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PortNames {
        PortNames {
            bridge: "breth0".into(),
            host_representor: "pf0hpf".into(),
            patch: "patch-breth0".into(),
            uplink: "p0".into(),
        }
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
            uplink: "p0-other".into(),
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

    #[test]
    fn framer_splits_concatenated_and_partial_values() {
        let mut framer = JsonFramer::default();
        assert!(framer.push(br#"{"a":1}{"b":"#).expect("ok").len() == 1);
        let rest = framer.push(br#"2}"#).expect("ok");
        assert_eq!(rest, vec![json!({"b": 2})]);
        assert!(framer.push(b"}garbage").is_err());
    }
}
