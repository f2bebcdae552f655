//! A small OVSDB client (RFC 7047, JSON-RPC over the unix socket): a
//! `monitor` of the columns we need, kept as a local [`replica`]. Port
//! [`discovery`] derives the port map from the Open_vSwitch database's
//! Bridge, Port and Interface tables; [`crate::ovn`] checks the gateway
//! router in OVN's northbound database with the same client.
//!
//! Why our own: the Rust OVSDB crates are thin or unmaintained, and all we
//! need is one monitor of five columns. The replica logic is pure and unit
//! tested; the socket part is a loop around it.

pub mod derive;
pub mod discovery;
mod monitor;
pub mod replica;

pub use monitor::Monitor;
pub use replica::{PortNames, Replica};
use serde_json::{Value, json};

/// Why the port map cannot be derived (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "bridge {0:?} (config [bridge] name) not found in OVSDB: `ovs-vsctl list-br` lists the bridges"
    )]
    NoBridge(String),
    #[error(
        "port {port:?} (config [bridge] {key}) not found on bridge {bridge:?}: `ovs-vsctl list-ports {bridge}` lists its ports"
    )]
    NoPort {
        bridge: String,
        port: String,
        /// The config key that names the port.
        key: &'static str,
    },
    #[error(
        "bridge {bridge:?} has no patch port to {integration:?} (ovn-controller makes it once the gateway router is bound to this chassis): wait for it, or set [bridge] patch_port"
    )]
    NoPatch { bridge: String, integration: String },
    #[error(
        "bridge {bridge:?} has several patch ports to {integration:?} ({}): set [bridge] patch_port to the default network's",
        found.join(", ")
    )]
    ManyPatches {
        bridge: String,
        integration: String,
        found: Vec<String>,
    },
    #[error(
        "the uplink of bridge {bridge:?} cannot be told from OVSDB ({system_interfaces} interfaces of type system, no external_ids:bridge-uplink, no port named after the bridge's br<nic> name): set [bridge] uplink"
    )]
    NoUplink {
        bridge: String,
        system_interfaces: usize,
    },
    #[error(
        "bridge {bridge:?}'s external_ids:bridge-uplink names {named:?}, which is not one of its ports: fix the external id or set [bridge] uplink"
    )]
    UplinkNotOnBridge { bridge: String, named: String },
    #[error(
        "bridge {bridge:?} has {} ports besides its own, the patch ports and the uplink {uplink:?} ({}); the host representor must be the only one: set [bridge] host_representor",
        left.len(),
        if left.is_empty() { "none".to_string() } else { left.join(", ") }
    )]
    HostRepresentor {
        bridge: String,
        uplink: String,
        left: Vec<String>,
    },
    #[error("interface {0:?} has no OpenFlow port number yet (ofport {1})")]
    NoOfport(String, String),
    #[error("bridge {0:?} has no MAC address (mac_in_use of its internal interface)")]
    NoMac(String),
    /// The socket cannot be opened (the caller knows which setting names it).
    #[error("OVSDB: connect: {0}")]
    Connect(String),
    #[error("OVSDB: {0}")]
    Protocol(String),
}

pub fn monitor_request(id: u64) -> Value {
    json!({
        "method": "monitor",
        "id": id,
        "params": ["Open_vSwitch", null, {
            "Bridge": {"columns": ["name", "ports", "external_ids"]},
            "Port": {"columns": ["name", "interfaces"]},
            "Interface": {"columns": ["name", "ofport", "mac_in_use", "type", "options"]},
            "Open_vSwitch": {"columns": ["external_ids"]},
        }],
    })
}

/// Splits a byte stream into complete JSON values (OVSDB messages are
/// objects), keeping a partial tail. Incremental: each byte is scanned once
/// however many reads a large reply takes, and each value is parsed once.
#[derive(Default)]
pub struct JsonFramer {
    buffer: Vec<u8>,
    /// How much of `buffer` is already scanned.
    scanned: usize,
    /// Nesting depth of objects and arrays at `scanned`.
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// One OVSDB message at most (a monitor's initial reply is the largest: our
/// columns of a big cluster's northbound database are a few MiB). The unit's
/// MemoryMax is 256 MiB, and the parsed value takes a few times the text.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

impl JsonFramer {
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Value>, DiscoveryError> {
        self.buffer.extend_from_slice(bytes);
        let mut values = Vec::new();
        // Where the value being scanned starts; all before it is consumed.
        let mut start = 0;
        for i in self.scanned..self.buffer.len() {
            let byte = self.buffer[i];
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let value = serde_json::from_slice(&self.buffer[start..=i])
                            .map_err(|e| DiscoveryError::Protocol(e.to_string()))?;
                        values.push(value);
                        start = i + 1;
                    }
                }
                _ if self.depth > 0 => {}
                b' ' | b'\t' | b'\r' | b'\n' => start = i + 1,
                other => {
                    return Err(DiscoveryError::Protocol(format!(
                        "unexpected byte {:?} between messages",
                        char::from(other)
                    )));
                }
            }
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_PENDING_BYTES {
            return Err(DiscoveryError::Protocol("oversized message".into()));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_concatenated_and_partial_values() {
        let mut framer = JsonFramer::default();
        assert!(framer.push(br#"{"a":1}{"b":"#).expect("ok").len() == 1);
        let rest = framer.push(br#"2}"#).expect("ok");
        assert_eq!(rest, vec![json!({"b": 2})]);
        assert!(framer.push(b"}garbage").is_err());
    }

    #[test]
    fn framer_handles_strings_escapes_and_byte_at_a_time_input() {
        let text = br#" {"s":"a}\"]{","n":[1,{"x":[]}]}
[1,2] "#;
        let mut framer = JsonFramer::default();
        let mut values = Vec::new();
        for byte in text {
            values.extend(framer.push(&[*byte]).expect("valid"));
        }
        assert_eq!(
            values,
            vec![json!({"s": "a}\"]{", "n": [1, {"x": []}]}), json!([1, 2])]
        );
        assert!(framer.buffer.is_empty());
    }

    #[test]
    fn framer_reassembles_a_large_reply_from_many_reads() {
        // ~0.6 MB in 16 KiB reads, as the socket delivers a big monitor reply.
        let rows: Vec<String> = (0..20_000)
            .map(|i| format!(r#""r{i}":{{"new":{{}}}}"#))
            .collect();
        let text = format!(r#"{{"id":1,"result":{{"Port":{{{}}}}}}}"#, rows.join(","));
        let mut framer = JsonFramer::default();
        let mut values = Vec::new();
        for chunk in text.as_bytes().chunks(16 * 1024) {
            values.extend(framer.push(chunk).expect("valid"));
        }
        assert_eq!(values.len(), 1);
        assert_eq!(
            values[0]["result"]["Port"].as_object().map(|o| o.len()),
            Some(20_000)
        );
    }
}
