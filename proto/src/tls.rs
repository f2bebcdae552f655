//! Mutual TLS shared by both agents: TLS 1.3 only, a certificate on both
//! sides, and the peer's identity pinned to one SAN named in config.
//!
//! The DPU authorises exactly one host identity: a client certificate signed
//! by the CA but without that SAN is refused during the handshake, so an
//! unauthorised peer never reaches a gRPC handler.

use rustls::{
    ClientConfig, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use serde::Deserialize;
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The PEM files of one agent's TLS identity and of the CA it trusts.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This agent's certificate chain (PEM).
    pub cert: PathBuf,
    /// This agent's private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs the peer's certificate (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The error for a certificate and key that rustls refuses together.
    fn unusable_identity(&self, error: rustls::Error) -> TlsError {
        TlsError::KeyMismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: error.to_string(),
        }
    }
}

/// The ring provider, used explicitly so that no process-wide default matters.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol gRPC runs on.
const ALPN_H2: &[u8] = b"h2";

/// Server side (dpu-agent): requires a client certificate from `files.ca`
/// whose SAN is `authorised_client`.
pub fn server_config(
    files: &TlsFiles,
    authorised_client: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let identity = PeerIdentity::parse(authorised_client)?;
    let provider = crypto_provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(SanPinnedClientVerifier {
        inner: webpki,
        identity,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| files.unusable_identity(e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side (host-agent): presents `files.cert`; the server's name is
/// checked against the SAN given at connect time, exactly (no wildcard).
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(
        Arc::new(load_roots(&files.ca)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExactNameServerVerifier { inner: webpki }))
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| files.unusable_identity(e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A peer identity: the DNS name or IP address that must be among the peer
/// certificate's SANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(ServerName<'static>);

impl PeerIdentity {
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        ServerName::try_from(text.to_string())
            .map(PeerIdentity)
            .map_err(|_| TlsError::BadIdentity(text.to_string()))
    }

    pub fn server_name(&self) -> ServerName<'static> {
        self.0.clone()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_str())
    }
}

/// webpki chain validation (CA, expiry, key usage) plus the SAN pin.
#[derive(Debug)]
struct SanPinnedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    identity: PeerIdentity,
}

impl ClientCertVerifier for SanPinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("unparsable client certificate: {e}")))?;
        cert.verify_is_valid_for_subject_name(&self.identity.0)
            .map_err(|e| {
                let presented = match e {
                    webpki::Error::CertNotValidForName(context) => context.presented,
                    _ => Vec::new(),
                };
                // Logged by the listener as "certificate not valid for name
                // <authorised>; certificate is only valid for <SANs>".
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext {
                        expected: self.identity.server_name(),
                        presented,
                    },
                )
            })?;
        require_exact_name(&cert, &self.identity.0)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A wildcard SAN (`*.node1.example`) names a set of hosts, not a peer:
/// the identity must be among the certificate's DNS names exactly. (IP
/// identities are matched exactly by webpki already.)
fn require_exact_name(
    cert: &webpki::EndEntityCert<'_>,
    identity: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let ServerName::DnsName(name) = identity else {
        return Ok(());
    };
    if cert
        .valid_dns_names()
        .any(|san| san.eq_ignore_ascii_case(name.as_ref()))
    {
        return Ok(());
    }
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::NotValidForNameContext {
            expected: identity.to_owned(),
            presented: cert
                .valid_dns_names()
                .map(|san| {
                    format!("DnsName({san:?}) (wildcards do not match: the name must be exact)")
                })
                .collect(),
        },
    ))
}

/// webpki's server certificate checks, plus the exact-name rule.
#[derive(Debug)]
struct ExactNameServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ExactNameServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("unparsable server certificate: {e}")))?;
        require_exact_name(&cert, server_name)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// PEM files are small; anything bigger (a device, a mistaken path) is
/// refused before it is read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads a PEM file after checking that it is one: a regular file (not a
/// directory, a device such as /dev/zero, or a FIFO that would block), of
/// sane size, and for a private key not readable by every user.
fn read_pem(path: &Path, what: &'static str, secret: bool) -> Result<Vec<u8>, TlsError> {
    use std::{io::Read, os::unix::fs::PermissionsExt};
    let refuse = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a directory, a device or a FIFO)".into(),
        ));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(refuse(format!(
            "{} bytes: a PEM file is at most {MAX_PEM_BYTES} bytes",
            meta.len()
        )));
    }
    let mode = meta.permissions().mode();
    if secret && mode & 0o004 != 0 {
        return Err(refuse(format!(
            "readable by every user (mode {:o}): make it private (chmod 600)",
            mode & 0o777
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES).read_to_end(&mut bytes))
        .map_err(|e| refuse(e.to_string()))?;
    Ok(bytes)
}

/// When the certificate an agent presents (the first of its chain at
/// `path`) expires, in Unix seconds: what the expiry metric and alert read.
pub fn certificate_expiry_unix(path: &Path) -> Result<i64, TlsError> {
    let chain = load_certs(path)?;
    let unreadable = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| unreadable("no CERTIFICATE block found".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path, "certificate", false)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path, "private key", true)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Which side of the channel an identity serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// dpu-agent: presents a server certificate.
    Server,
    /// host-agent: presents a client certificate.
    Client,
}

/// Checks an agent's own TLS files the way its peer will: the files load,
/// the key matches the certificate, and the certificate is valid now under
/// the configured CA (one CA signs both agents). What `check-config`, start
/// and reload run, so that a broken identity is named before it is served.
pub fn check_identity(files: &TlsFiles, role: Role) -> Result<(), TlsError> {
    // Loads every file and pairs key and certificate.
    client_config(files)?;
    let chain = load_certs(&files.cert)?;
    let (end_entity, intermediates) = chain.split_first().ok_or_else(|| TlsError::Pem {
        path: files.cert.clone(),
        what: "certificate",
        reason: "no CERTIFICATE block found".into(),
    })?;
    let roots = Arc::new(load_roots(&files.ca)?);
    let provider = crypto_provider();
    let now = UnixTime::now();
    let verified = match role {
        Role::Client => WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?
            .verify_client_cert(end_entity, intermediates, now)
            .map(drop),
        Role::Server => {
            // Only the chain and its validity matter here, not a name.
            let name = ServerName::try_from("identity-check.invalid")
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            let result = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?
                .verify_server_cert(end_entity, intermediates, &name, &[], now)
                .map(drop);
            match result {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(()),
                other => other,
            }
        }
    };
    verified.map_err(|e| TlsError::Pem {
        path: files.cert.clone(),
        what: "certificate",
        reason: format!("not valid under CA {}: {e}", files.ca.display()),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load {what} from {path}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("certificate {cert} and key {key} do not form a usable identity: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("peer identity {0:?} is neither a DNS name nor an IP address")]
    BadIdentity(String),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    #[error(transparent)]
    Rustls(rustls::Error),
}
