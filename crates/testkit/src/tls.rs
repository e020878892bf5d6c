//! TLS material for servers started by tests: a fresh CA and one certificate it signed for
//! 127.0.0.1 and localhost, usable to serve and (for cluster routes) as a client.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Error, ErrorKind, Result};

/// PEM files written by [`tls_files`].
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn generation(what: &str, error: rcgen::Error) -> Error {
    Error::new(
        ErrorKind::Filesystem,
        format!("making the test {what}: {error}"),
    )
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` into `dir`.
pub fn tls_files(dir: &Path) -> Result<TlsFiles> {
    let ca_key = KeyPair::generate().map_err(|e| generation("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| generation("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "canton-sidecar test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| generation("CA", e))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().map_err(|e| generation("server key", e))?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(|e| generation("server certificate", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "canton-sidecar test server");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .signed_by(&server_key, &issuer)
        .map_err(|e| generation("server certificate", e))?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    for (path, text) in [
        (&files.ca, ca_cert.pem()),
        (&files.cert, cert.pem()),
        (&files.key, server_key.serialize_pem()),
    ] {
        std::fs::write(path, text).map_err(|e| {
            Error::io(
                ErrorKind::Filesystem,
                format!("writing {}", path.display()),
                e,
            )
        })?;
    }
    Ok(files)
}
