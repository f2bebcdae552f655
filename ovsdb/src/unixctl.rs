//! One call to an Open vSwitch daemon's control socket (what `ovs-appctl`
//! does): the same JSON-RPC framing as OVSDB, one request, one reply, a
//! deadline on the whole exchange.

use crate::{Error, JsonFramer};
use serde_json::{Value, json};
use std::{path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// A daemon's answers to the commands we send are a few KiB; anything far
/// larger is not an answer to them.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Runs `command` (no arguments) on the daemon behind `socket` and returns
/// its text, or the daemon's error, within `deadline`.
pub async fn call(socket: &Path, command: &str, deadline: Duration) -> Result<String, Error> {
    tokio::time::timeout(deadline, exchange(socket, command))
        .await
        .map_err(|_| {
            Error::Control(format!(
                "{command}: no answer from {} within {deadline:?}",
                socket.display()
            ))
        })?
}

async fn exchange(socket: &Path, command: &str) -> Result<String, Error> {
    let at = socket.display();
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| Error::Control(format!("{command}: connect {at}: {e}")))?;
    let request = json!({"id": 0, "method": command, "params": []});
    stream
        .write_all(request.to_string().as_bytes())
        .await
        .map_err(|e| Error::Control(format!("{command}: write to {at}: {e}")))?;
    let mut framer = JsonFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0usize;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| Error::Control(format!("{command}: read from {at}: {e}")))?;
        if n == 0 {
            return Err(Error::Control(format!(
                "{command}: {at} closed without an answer"
            )));
        }
        read += n;
        if read > MAX_REPLY_BYTES {
            return Err(Error::Control(format!(
                "{command}: {at} answered over {MAX_REPLY_BYTES} bytes"
            )));
        }
        if let Some(reply) = framer
            .push(&buf[..n])
            .map_err(|e| Error::Control(format!("{command}: {at}: {e}")))?
            .into_iter()
            .find(|m| m.get("id") == Some(&json!(0)))
        {
            return answer(command, &reply);
        }
    }
}

/// The text of a reply: `result` when `error` is null, else the error.
fn answer(command: &str, reply: &Value) -> Result<String, Error> {
    match (reply.get("result"), reply.get("error")) {
        (_, Some(error)) if !error.is_null() => Err(Error::Refused(format!(
            "{command}: {}",
            error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string)
        ))),
        (Some(Value::String(text)), _) => Ok(text.clone()),
        _ => Err(Error::Control(format!(
            "{command}: malformed answer {reply}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A daemon that answers one request with `reply`.
    async fn daemon(reply: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.ctl");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                // In two writes, as a daemon may send it.
                let (head, tail) = reply.split_at(reply.len() / 2);
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(tail.as_bytes()).await;
                // Silent after: a missing answer must time out.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn the_result_or_the_daemons_error_comes_back() {
        let (_dir, path) = daemon(r#"{"id":0,"result":"v4 enabled: 1\n","error":null}"#).await;
        let text = call(&path, "dpctl/ipf-get-status", Duration::from_secs(2))
            .await
            .expect("answer");
        assert_eq!(text, "v4 enabled: 1\n");
        let (_dir, path) = daemon(r#"{"id":0,"result":null,"error":"unknown command"}"#).await;
        let error = call(&path, "nope", Duration::from_secs(2))
            .await
            .expect_err("error");
        assert_eq!(error, Error::Refused("nope: unknown command".into()));
    }

    #[tokio::test]
    async fn silence_and_a_missing_socket_are_errors_that_say_so() {
        let (_dir, path) = daemon(r#"{"id":1,"result":"not ours","error":null}"#).await;
        let error = call(&path, "dpctl/ipf-get-status", Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(error.to_string().contains("no answer"), "{error}");
        let error = call(
            Path::new("/nonexistent/ovs-vswitchd.ctl"),
            "x",
            Duration::from_secs(1),
        )
        .await
        .expect_err("missing");
        assert!(
            error
                .to_string()
                .contains("connect /nonexistent/ovs-vswitchd.ctl"),
            "{error}"
        );
    }
}
