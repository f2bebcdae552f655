//! A live monitor on an OVSDB unix socket: the replica follows the
//! server's updates, the server's echo requests are answered, and an echo
//! probe of ours finds a server that went silent.
//!
//! Callers wait for [`Monitor::changed`] inside `select!` next to other
//! events, so it is cancel-safe: every framed message is kept until it is
//! handled (several often arrive in one read), replies owed to the server
//! go out from a buffer that remembers how much was written, and a change
//! is reported exactly once.

use super::{DiscoveryError, JsonFramer, Replica};
use serde_json::{Value, json};
use std::{collections::VecDeque, path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    time::Instant,
};

/// After this long without a message from the server we send an echo...
const PROBE_AFTER: Duration = Duration::from_secs(5);
/// ...and a server that has not answered it (or sent anything) this long
/// after is dead.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// Replies owed to a server that does not read them.
const MAX_OUTBOX_BYTES: usize = 1024 * 1024;

/// The id of our echo probes (the monitor request is id 1).
const PROBE_ID: &str = "noverlay-probe";

pub struct Monitor {
    stream: UnixStream,
    framer: JsonFramer,
    /// Framed messages not handled yet.
    pending: VecDeque<Value>,
    /// Bytes owed to the server (echo replies, probes), front first.
    outbox: Vec<u8>,
    /// The replica changed since the caller last heard.
    unreported: bool,
    /// When the server last sent anything, and whether a probe is out.
    heard: Instant,
    probing: bool,
    probe_after: Duration,
    pub replica: Replica,
}

impl Monitor {
    /// Connects and installs `request` (a monitor request with id 1); the
    /// replica holds the initial state.
    pub async fn start(socket: &Path, request: &Value) -> Result<Self, DiscoveryError> {
        Self::start_probing(socket, request, PROBE_AFTER).await
    }

    /// As [`Monitor::start`], probing after `probe_after` of silence.
    pub async fn start_probing(
        socket: &Path,
        request: &Value,
        probe_after: Duration,
    ) -> Result<Self, DiscoveryError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| DiscoveryError::Connect(format!("{}: {e}", socket.display())))?;
        let mut monitor = Monitor {
            stream,
            framer: JsonFramer::default(),
            pending: VecDeque::new(),
            outbox: Vec::new(),
            unreported: false,
            heard: Instant::now(),
            probing: false,
            probe_after,
            replica: Replica::default(),
        };
        monitor.queue(request)?;
        loop {
            while let Some(message) = monitor.pending.pop_front() {
                if message.get("id") == Some(&json!(1)) {
                    if let Some(error) = message.get("error").filter(|e| !e.is_null()) {
                        return Err(DiscoveryError::Protocol(format!(
                            "monitor refused: {error}"
                        )));
                    }
                    let result = message.get("result").cloned().unwrap_or(Value::Null);
                    monitor.replica.apply(&result)?;
                    // Updates framed with the reply stay pending.
                    return Ok(monitor);
                }
                monitor.handle(message)?;
            }
            monitor.flush().await?;
            monitor.fill().await?;
        }
    }

    /// Waits for the next change to the replica (cancel-safe).
    pub async fn changed(&mut self) -> Result<(), DiscoveryError> {
        loop {
            while let Some(message) = self.pending.pop_front() {
                self.handle(message)?;
            }
            self.flush().await?;
            if std::mem::take(&mut self.unreported) {
                return Ok(());
            }
            let quiet_until = self.heard + self.probe_after;
            tokio::select! {
                filled = self.fill() => filled?,
                _ = tokio::time::sleep_until(quiet_until), if !self.probing => {
                    self.probing = true;
                    self.queue(&json!({"id": PROBE_ID, "method": "echo", "params": []}))?;
                }
                _ = tokio::time::sleep_until(quiet_until + PROBE_DEADLINE), if self.probing => {
                    return Err(DiscoveryError::Protocol(format!(
                        "no answer to an echo within {PROBE_DEADLINE:?} after {:?} of silence: the server is gone",
                        self.probe_after
                    )));
                }
            }
        }
    }

    /// Applies an update, answers an echo, notes the answer to our probe.
    fn handle(&mut self, message: Value) -> Result<(), DiscoveryError> {
        match message.get("method").and_then(Value::as_str) {
            Some("update") => {
                let updates = message
                    .get("params")
                    .and_then(|p| p.get(1))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.replica.apply(&updates)?;
                self.unreported = true;
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

    fn queue(&mut self, value: &Value) -> Result<(), DiscoveryError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| DiscoveryError::Protocol(e.to_string()))?;
        if self.outbox.len() + bytes.len() > MAX_OUTBOX_BYTES {
            return Err(DiscoveryError::Protocol(format!(
                "the server does not read our replies ({} bytes owed)",
                self.outbox.len()
            )));
        }
        self.outbox.extend_from_slice(&bytes);
        Ok(())
    }

    /// Writes what is owed; a cancelled flush resumes where it stopped.
    async fn flush(&mut self) -> Result<(), DiscoveryError> {
        while !self.outbox.is_empty() {
            let written = self
                .stream
                .write(&self.outbox)
                .await
                .map_err(|e| DiscoveryError::Protocol(format!("write: {e}")))?;
            self.outbox.drain(..written);
        }
        Ok(())
    }

    /// Reads once and frames what came; cancel-safe (a read either
    /// happened, and is framed, or did not).
    async fn fill(&mut self) -> Result<(), DiscoveryError> {
        let mut buffer = [0u8; 16 * 1024];
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
        self.heard = Instant::now();
        self.probing = false;
        self.pending.extend(self.framer.push(&buffer[..n])?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake ovsdb-server on a socket of the test's: answers the monitor
    /// request with an empty replica, then hands the connection over.
    async fn server() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        (dir, path, listener)
    }

    async fn accept_monitor(listener: &UnixListener) -> UnixStream {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut framer = JsonFramer::default();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(n > 0, "the monitor request never came");
            if !framer.push(&buffer[..n]).expect("frames").is_empty() {
                break;
            }
        }
        stream
            .write_all(br#"{"id":1,"result":{},"error":null}"#)
            .await
            .expect("reply");
        stream
    }

    fn update(name: &str) -> String {
        format!(
            r#"{{"method":"update","params":[null,{{"Bridge":{{"b1":{{"new":{{"name":"{name}"}}}}}}}}]}}"#
        )
    }

    fn bridge_names(replica: &Replica) -> Vec<String> {
        replica
            .rows("Bridge")
            .filter_map(|(_, row)| Some(row.get("name")?.as_str()?.to_string()))
            .collect()
    }

    /// An echo request whose reply cannot be written at once (it is larger
    /// than the socket's buffers and the server does not read yet) framed
    /// in one read with an update: a wait cancelled while the reply is
    /// stuck loses neither the update nor a byte of the reply.
    #[tokio::test]
    async fn a_cancelled_wait_keeps_every_framed_message() {
        const PAYLOAD: usize = 512 * 1024;
        let (_dir, path, listener) = server().await;
        let serving = tokio::spawn(async move {
            let stream = accept_monitor(&listener).await;
            let (reader, mut writer) = stream.into_split();
            let burst = format!(
                r#"{{"id":0,"method":"echo","params":["{}"]}}{}"#,
                "x".repeat(PAYLOAD),
                update("breth0")
            );
            tokio::spawn(async move {
                writer.write_all(burst.as_bytes()).await.expect("burst");
                writer
            });
            reader
        });
        let mut monitor = Monitor::start(&path, &json!({"id": 1, "method": "monitor"}))
            .await
            .expect("monitor");
        let reader = serving.await.expect("server");
        // The reply fills the socket: the wait is cancelled while stuck.
        tokio::select! {
            _ = monitor.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        // The server reads now: the change is reported, the reply whole.
        let reading = tokio::spawn(async move {
            let mut reader = reader;
            let mut framer = JsonFramer::default();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buffer).await.expect("read");
                assert!(n > 0, "closed before the reply");
                if let Some(reply) = framer.push(&buffer[..n]).expect("a whole JSON reply").pop() {
                    return reply;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), monitor.changed())
            .await
            .expect("the update framed with the echo was lost")
            .expect("changed");
        assert_eq!(bridge_names(&monitor.replica), ["breth0"]);
        let reply = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the reply never arrived whole")
            .expect("reader");
        assert_eq!(reply["id"], json!(0));
        assert_eq!(reply["result"][0].as_str().map(str::len), Some(PAYLOAD));
    }

    /// A server that keeps the socket open but says nothing, not even to
    /// our echo: the wait ends with an error instead of hanging.
    #[tokio::test]
    async fn a_silent_server_is_found_by_the_echo_probe() {
        let (_dir, path, listener) = server().await;
        let serving = tokio::spawn(async move { accept_monitor(&listener).await });
        let mut monitor = Monitor::start_probing(
            &path,
            &json!({"id": 1, "method": "monitor"}),
            Duration::from_millis(100),
        )
        .await
        .expect("monitor");
        let _silent = serving.await.expect("server");
        let started = std::time::Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(10), monitor.changed())
            .await
            .expect("the wait never ended")
            .expect_err("a dead server");
        assert!(
            error.to_string().contains("no answer to an echo"),
            "{error}"
        );
        assert!(
            started.elapsed() >= PROBE_DEADLINE,
            "{:?}",
            started.elapsed()
        );
    }

    /// A server that answers the probe keeps the monitor alive.
    #[tokio::test]
    async fn an_answered_probe_keeps_the_monitor() {
        let (_dir, path, listener) = server().await;
        let serving = tokio::spawn(async move {
            let mut stream = accept_monitor(&listener).await;
            let mut framer = JsonFramer::default();
            let mut buffer = [0u8; 4096];
            // Answer the first probe, then send an update.
            loop {
                let n = stream.read(&mut buffer).await.expect("read");
                assert!(n > 0);
                if let Some(probe) = framer.push(&buffer[..n]).expect("frames").first() {
                    let reply = json!({"id": probe["id"], "result": [], "error": null});
                    stream
                        .write_all(reply.to_string().as_bytes())
                        .await
                        .expect("reply");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            stream
                .write_all(update("br-int").as_bytes())
                .await
                .expect("update");
            stream
        });
        let mut monitor = Monitor::start_probing(
            &path,
            &json!({"id": 1, "method": "monitor"}),
            Duration::from_millis(100),
        )
        .await
        .expect("monitor");
        tokio::time::timeout(Duration::from_secs(10), monitor.changed())
            .await
            .expect("no update")
            .expect("alive");
        assert_eq!(bridge_names(&monitor.replica), ["br-int"]);
        drop(serving);
    }
}
