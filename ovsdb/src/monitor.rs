//! The thin async session: a [`MonitorSession`] driven over a unix socket
//! with tokio. Callers wait for [`Monitor::changed`] inside `select!` next
//! to other events, so it is cancel-safe: every framed message is handled
//! as it is read (several often arrive in one read), replies owed to the
//! server go out from the session's outbox, which remembers how much was
//! written, and a change is reported exactly once. An echo probe of ours
//! finds a server that went silent.

use crate::{Error, Replica, START_DEADLINE, session::MonitorSession};
use serde_json::Value;
use std::{path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    time::Instant,
};

/// Silence from the server after which we send an echo probe.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// How long the probe may go unanswered before the server counts as gone.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

pub struct Monitor {
    stream: UnixStream,
    session: MonitorSession,
    /// When the server last sent anything.
    heard: Instant,
    probe_after: Duration,
}

impl Monitor {
    /// Connects and installs `request` (a monitor request with id
    /// [`crate::session::MONITOR_ID`]); the replica holds the initial state.
    /// Connecting and the initial reply together have [`START_DEADLINE`].
    pub async fn start(socket: &Path, request: &Value) -> Result<Self, Error> {
        Self::start_probing(socket, request, PROBE_AFTER).await
    }

    /// As [`Monitor::start`], probing after `probe_after` of silence.
    pub async fn start_probing(
        socket: &Path,
        request: &Value,
        probe_after: Duration,
    ) -> Result<Self, Error> {
        tokio::time::timeout(START_DEADLINE, Self::connect(socket, request, probe_after))
            .await
            .map_err(|_| {
                Error::Protocol(format!(
                    "no monitor reply from {} within {START_DEADLINE:?}",
                    socket.display()
                ))
            })?
    }

    async fn connect(socket: &Path, request: &Value, probe_after: Duration) -> Result<Self, Error> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| Error::Connect(format!("{}: {e}", socket.display())))?;
        let mut monitor = Monitor {
            stream,
            session: MonitorSession::new(request)?,
            heard: Instant::now(),
            probe_after,
        };
        while !monitor.session.started() {
            monitor.flush().await?;
            monitor.fill().await?;
        }
        Ok(monitor)
    }

    /// The monitored rows as the server last reported them.
    pub fn replica(&self) -> &Replica {
        &self.session.replica
    }

    /// The replica, for a caller done with the session.
    pub fn into_replica(self) -> Replica {
        self.session.replica
    }

    /// Waits for the next change to the replica (cancel-safe).
    pub async fn changed(&mut self) -> Result<(), Error> {
        loop {
            self.flush().await?;
            if self.session.take_changed() {
                return Ok(());
            }
            let quiet_until = self.heard + self.probe_after;
            let probing = self.session.probing();
            tokio::select! {
                filled = self.fill() => filled?,
                _ = tokio::time::sleep_until(quiet_until), if !probing => self.session.probe()?,
                _ = tokio::time::sleep_until(quiet_until + PROBE_DEADLINE), if probing => {
                    return Err(Error::Protocol(format!(
                        "no answer to an echo within {PROBE_DEADLINE:?} after {:?} of silence: the server is gone",
                        self.probe_after
                    )));
                }
            }
        }
    }

    /// Writes what is owed; a cancelled flush resumes where it stopped.
    async fn flush(&mut self) -> Result<(), Error> {
        while !self.session.outbox().is_empty() {
            let written = self
                .stream
                .write(self.session.outbox())
                .await
                .map_err(|e| Error::Protocol(format!("write: {e}")))?;
            self.session.written(written);
        }
        Ok(())
    }

    /// Reads once and hands what came to the session; cancel-safe (a read
    /// either happened, and is handled, or did not).
    async fn fill(&mut self) -> Result<(), Error> {
        let mut buffer = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut buffer)
            .await
            .map_err(|e| Error::Protocol(format!("read: {e}")))?;
        if n == 0 {
            return Err(Error::Protocol("ovsdb-server closed the connection".into()));
        }
        self.heard = Instant::now();
        self.session.receive(&buffer[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JsonFramer;
    use serde_json::json;
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
        assert_eq!(bridge_names(monitor.replica()), ["breth0"]);
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
        assert_eq!(bridge_names(monitor.replica()), ["br-int"]);
        drop(serving);
    }
}
