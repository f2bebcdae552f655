//! Framing: a byte stream from ovsdb-server cut into JSON messages.

use crate::Error;
use serde_json::Value;

/// Splits a byte stream into complete JSON values (OVSDB messages are
/// objects), keeping a partial tail. Incremental: each byte is scanned once
/// however many reads a large reply takes, and each value is parsed once.
#[derive(Debug, Default)]
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
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Value>, Error> {
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
                            .map_err(|e| Error::Protocol(e.to_string()))?;
                        values.push(value);
                        start = i + 1;
                    }
                }
                _ if self.depth > 0 => {}
                b' ' | b'\t' | b'\r' | b'\n' => start = i + 1,
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected byte {:?} between messages",
                        char::from(other)
                    )));
                }
            }
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_PENDING_BYTES {
            return Err(Error::Protocol("oversized message".into()));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
