//! Opening a connection: the switch's hello read and the highest version
//! both sides offer picked (1.4, or 1.3 on a bridge that allows no later
//! one).

use super::{MAX_MESSAGE, Reader, SessionError};
use crate::wire::{self, Header};
use tokio::io::AsyncReadExt;

/// Reads the switch's hello (it sends one as soon as it accepts) and
/// picks the highest version both sides offer.
pub(super) async fn negotiate(reader: &mut Reader, name: &str) -> Result<u8, SessionError> {
    let broken = |_| SessionError::Broken(name.to_string());
    let mut message = vec![0u8; wire::HEADER_LEN];
    reader.read_exact(&mut message).await.map_err(broken)?;
    let header = Header::parse(&message)
        .filter(|h| h.length >= wire::HEADER_LEN && h.length <= MAX_MESSAGE)
        .ok_or(SessionError::Malformed("hello header"))?;
    message.resize(header.length, 0);
    reader
        .read_exact(&mut message[wire::HEADER_LEN..])
        .await
        .map_err(broken)?;
    if header.kind == wire::OFPT_ERROR {
        let (kind, code) = wire::error_type_code(&message).unwrap_or_default();
        return Err(SessionError::Refused {
            what: "our hello".into(),
            message: None,
            kind,
            code,
        });
    }
    let offered = wire::hello_versions(&message).ok_or(SessionError::Malformed("hello"))?;
    wire::negotiate(&wire::VERSIONS, &offered).ok_or_else(|| SessionError::NoCommonVersion {
        endpoint: name.to_string(),
        offered,
    })
}

/// Version numbers as the bridge's `protocols` column spells them.
pub fn names(versions: &[u8]) -> String {
    if versions.is_empty() {
        return "no OpenFlow version".into();
    }
    versions
        .iter()
        .map(|v| wire::version_name(*v))
        .collect::<Vec<_>>()
        .join(",")
}
