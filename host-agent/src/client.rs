//! The host's gRPC client to the DPU: mTLS with the DPU's identity pinned.

use hyper_util::rt::TokioIo;
use noverlay_proto::{MAX_MESSAGE_BYTES, pb::dpu_agent_client::DpuAgentClient, tls::PeerIdentity};
use rustls::ClientConfig;
use std::{error::Error as StdError, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a connection attempt (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings detect a DPU that vanished without closing the connection,
/// so the host notices within about 15 s even while only watching.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

pub type DpuClient = DpuAgentClient<Channel>;

/// Connects to `address` (host:port) and verifies that the DPU's
/// certificate carries `identity`.
pub async fn connect(
    address: &str,
    identity: &PeerIdentity,
    tls: Arc<ClientConfig>,
) -> Result<DpuClient, ClientError> {
    // The URI only names the authority for HTTP/2; TLS is done below.
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| ClientError::Address(address.to_string(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(tls);
    let server_name = identity.server_name();
    let target = address.to_string();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| {
            let reason = error_chain(&e);
            let hint = connect_hint(&reason);
            ClientError::Connect {
                address: address.to_string(),
                identity: identity.to_string(),
                reason: format!("{reason}{hint}"),
            }
        })?;
    Ok(DpuAgentClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// An error and its causes on one line: tonic's own Display ("transport
/// error") hides the TLS reason an operator needs.
pub fn error_chain(error: &dyn StdError) -> String {
    noverlay_runtime::one_line(error)
}

/// What an operator does about a failed connection, where the cause says
/// it (the texts are the kernel's, the resolver's and rustls' own).
fn connect_hint(reason: &str) -> &'static str {
    const HINTS: [(&[&str], &str); 6] = [
        (
            &["Connection refused"],
            " (config dpu.address: nothing listens there; is dpu-agent running, and is this its `listen` address?)",
        ),
        (
            &[
                "failed to lookup address",
                "Name or service not known",
                "name resolution",
            ],
            " (config dpu.address: the name does not resolve; fix the name or the host's resolver)",
        ),
        (
            &["UnknownIssuer"],
            " (config tls.ca: it did not sign the DPU's certificate; give it the CA that signed dpu-agent's)",
        ),
        (
            &["NotValidForName"],
            " (config dpu.identity: the DPU's certificate does not name it)",
        ),
        (
            &["Expired", "NotValidYet"],
            " (the DPU's certificate is outside its validity period: renew it, or check both clocks)",
        ),
        (
            &["timed out", "No route to host", "Network is unreachable"],
            " (config dpu.address: no answer; check the route and any firewall between host and DPU)",
        ),
    ];
    HINTS
        .iter()
        .find(|(causes, _)| causes.iter().any(|c| reason.contains(c)))
        .map_or("", |(_, hint)| hint)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid DPU address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot reach dpu-agent {identity} at {address}: {reason}")]
    Connect {
        address: String,
        identity: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_connection_names_the_setting_to_fix() {
        for (reason, setting) in [
            (
                "transport error: Connection refused (os error 111)",
                "dpu.address",
            ),
            (
                "transport error: failed to lookup address information: Temporary failure in name resolution",
                "dpu.address",
            ),
            (
                "transport error: invalid peer certificate: UnknownIssuer",
                "tls.ca",
            ),
            ("invalid peer certificate: NotValidForName", "dpu.identity"),
        ] {
            assert!(super::connect_hint(reason).contains(setting), "{reason}");
        }
        assert_eq!(super::connect_hint("stream closed"), "");
    }
}
