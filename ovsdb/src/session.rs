//! The monitor's protocol state without I/O: the caller writes
//! [`MonitorSession::outbox`] to the server and feeds what it reads to
//! [`MonitorSession::receive`]. Every framed message is handled as it comes,
//! so a caller that stops reading halfway loses nothing.

use crate::{Error, JsonFramer, Replica};
use serde_json::{Value, json};

/// Bytes owed to the server (echo replies) at most: a server that keeps
/// sending echo requests without reading our replies is dropped.
const MAX_OUTBOX_BYTES: usize = 1024 * 1024;

/// The id of our own echo probe.
const PROBE_ID: &str = "noverlay-probe";

/// The id our monitor request carries.
pub const MONITOR_ID: u64 = 1;

#[derive(Debug)]
pub struct MonitorSession {
    framer: JsonFramer,
    outbox: Vec<u8>,
    /// The initial reply came: the replica holds the monitored state.
    started: bool,
    /// The replica changed since the caller last asked.
    changed: bool,
    /// Our echo probe is out and nothing came since.
    probing: bool,
    pub replica: Replica,
}

impl MonitorSession {
    /// A session whose first bytes out are `request`, a monitor request
    /// with id [`MONITOR_ID`].
    pub fn new(request: &Value) -> Result<Self, Error> {
        let mut session = MonitorSession {
            framer: JsonFramer::default(),
            outbox: Vec::new(),
            started: false,
            changed: false,
            probing: false,
            replica: Replica::default(),
        };
        session.queue(request)?;
        Ok(session)
    }

    /// Bytes read from the server: frames them and handles each message.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.probing = false;
        for message in self.framer.push(bytes)? {
            self.handle(message)?;
        }
        Ok(())
    }

    /// Whether the initial reply came.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the replica changed since the last call (the initial reply
    /// is not a change: the caller reads the replica once started).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What to write to the server.
    pub fn outbox(&self) -> &[u8] {
        &self.outbox
    }

    /// `n` bytes of the outbox were written.
    pub fn written(&mut self, n: usize) {
        self.outbox.drain(..n.min(self.outbox.len()));
    }

    /// Sends our echo probe (the server was silent); [`Self::probing`]
    /// stays true until anything comes back.
    pub fn probe(&mut self) -> Result<(), Error> {
        self.probing = true;
        self.queue(&json!({"id": PROBE_ID, "method": "echo", "params": []}))
    }

    pub fn probing(&self) -> bool {
        self.probing
    }

    /// The initial reply, an update, or an echo request from the server.
    fn handle(&mut self, message: Value) -> Result<(), Error> {
        if !self.started && message.get("id") == Some(&json!(MONITOR_ID)) {
            if let Some(error) = message.get("error").filter(|e| !e.is_null()) {
                return Err(Error::Protocol(format!("monitor refused: {error}")));
            }
            let result = message.get("result").cloned().unwrap_or(Value::Null);
            self.replica.apply(&result)?;
            self.started = true;
            return Ok(());
        }
        match message.get("method").and_then(Value::as_str) {
            Some("update") => {
                let updates = message
                    .get("params")
                    .and_then(|p| p.get(1))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.replica.apply(&updates)?;
                self.changed = true;
            }
            Some("echo") => self.queue(&json!({
                "id": message.get("id").cloned().unwrap_or(Value::Null),
                "result": message.get("params").cloned().unwrap_or(json!([])),
                "error": null,
            }))?,
            _ => {}
        }
        Ok(())
    }

    fn queue(&mut self, value: &Value) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Protocol(e.to_string()))?;
        if self.outbox.len() + bytes.len() > MAX_OUTBOX_BYTES {
            return Err(Error::Protocol(format!(
                "the server does not read our replies ({} bytes owed)",
                self.outbox.len()
            )));
        }
        self.outbox.extend_from_slice(&bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> MonitorSession {
        MonitorSession::new(&json!({"method": "monitor", "id": 1, "params": []})).expect("new")
    }

    #[test]
    fn the_request_goes_out_first_and_the_reply_starts_the_replica() {
        let mut s = session();
        assert!(s.outbox().starts_with(br#"{"#));
        let n = s.outbox().len();
        s.written(n);
        assert!(s.outbox().is_empty() && !s.started());
        s.receive(br#"{"id":1,"result":{"Bridge":{"b1":{"new":{"name":"breth0"}}}},"error":null}"#)
            .expect("reply");
        assert!(s.started());
        assert!(!s.take_changed(), "the initial state is not a change");
        assert_eq!(s.replica.rows("Bridge").count(), 1);
    }

    #[test]
    fn updates_framed_with_the_reply_are_applied_and_reported_once() {
        let mut s = session();
        s.receive(
            br#"{"id":1,"result":{},"error":null}{"method":"update","params":[null,{"Bridge":{"b1":{"new":{"name":"br-int"}}}}]}"#,
        )
        .expect("both");
        assert!(s.take_changed());
        assert!(!s.take_changed());
        assert_eq!(s.replica.rows("Bridge").count(), 1);
    }

    #[test]
    fn a_refused_monitor_is_an_error_naming_the_servers_reason() {
        let mut s = session();
        let error = s
            .receive(br#"{"id":1,"result":null,"error":"unknown database"}"#)
            .expect_err("refused");
        assert!(error.to_string().contains("unknown database"), "{error}");
    }

    #[test]
    fn echo_requests_are_answered_and_our_probe_clears_on_any_answer() {
        let mut s = session();
        let n = s.outbox().len();
        s.written(n);
        s.receive(br#"{"id":"x","method":"echo","params":[1]}"#)
            .expect("echo");
        let reply: Value = serde_json::from_slice(s.outbox()).expect("json");
        assert_eq!(reply, json!({"id": "x", "result": [1], "error": null}));
        s.probe().expect("probe");
        assert!(s.probing());
        s.receive(b" ").expect("whitespace");
        assert!(!s.probing());
    }

    #[test]
    fn a_server_that_never_reads_our_replies_is_dropped() {
        let mut s = session();
        let big = format!(
            r#"{{"id":"x","method":"echo","params":["{}"]}}"#,
            "a".repeat(64 * 1024)
        );
        let mut outcome = Ok(());
        for _ in 0..20 {
            outcome = s.receive(big.as_bytes());
            if outcome.is_err() {
                break;
            }
        }
        assert!(outcome.is_err_and(|e| e.to_string().contains("does not read our replies")));
    }
}
