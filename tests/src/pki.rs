//! Test and demo certificates, made with rcgen at run time: a CA and leaf
//! certificates with chosen SANs and validity, written as PEM files.

use noverlay_proto::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A certificate authority whose key stays in memory.
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    Current,
    Expired,
}

impl Pki {
    /// A new CA named `name`; its certificate is written to `dir/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now + Duration::days(365);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::write(dir.join(format!("{name}.crt")), ca.pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            name: name.into(),
            ca,
        })
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// Issues `file_stem.crt`/`.key` with one SAN, usable as client and
    /// server certificate, and returns the files with this CA as trust root.
    pub fn issue(
        &self,
        file_stem: &str,
        san: &str,
        validity: Validity,
    ) -> anyhow::Result<TlsFiles> {
        let mut params = CertificateParams::new(vec![san.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, san);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = match validity {
            Validity::Current => (now - Duration::days(1), now + Duration::days(90)),
            Validity::Expired => (now - Duration::days(30), now - Duration::days(1)),
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let cert_path = self.dir.join(format!("{file_stem}.crt"));
        let key_path = self.dir.join(format!("{file_stem}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        // Private, as the agents require of a key (and as `install -m 0600` leaves it).
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        Ok(TlsFiles {
            cert: cert_path,
            key: key_path,
            ca: self.ca_path(),
        })
    }
}
