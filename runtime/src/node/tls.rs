//! TLS for the HTTP API (rustls with ring): the certificate chain and key
//! of `node.toml`, and optionally a CA whose certificates every client
//! must present (mutual TLS, on top of the bearer token). Read at start,
//! where a bad file stops the node with the file named, and again on
//! SIGHUP, where a bad file keeps the running configuration: connections
//! already open keep the configuration they started with, new ones get
//! the new.

use super::config::TlsFiles;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The API's TLS configuration, replaced whole on reload.
pub struct ServerTls {
    acceptor: RwLock<TlsAcceptor>,
}

impl ServerTls {
    pub fn load(files: &TlsFiles) -> Result<ServerTls> {
        Ok(ServerTls {
            acceptor: RwLock::new(TlsAcceptor::from(server_config(files)?)),
        })
    }

    /// Reads the files again; on an error the running configuration stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<()> {
        let acceptor = TlsAcceptor::from(server_config(files)?);
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// What accepts the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("`{key}` = {}: {e}", path.display())))
}

/// What is wrong with a PEM file, in words (the parser's own message
/// lists the bytes of the marker it missed).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::MissingSectionEnd { end_marker } => format!(
            "a section is not closed: `-----END {}-----` is missing",
            String::from_utf8_lossy(end_marker)
        ),
        Pem::IllegalSectionStart { line } => format!(
            "a malformed BEGIN line: `{}`",
            String::from_utf8_lossy(line)
        ),
        other => other.to_string(),
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "`{key}` = {}: not PEM certificates: {}",
                path.display(),
                pem_problem(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "`{key}` = {}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The server configuration the files describe, checked: the key matches
/// the certificate, the CA file holds CA certificates.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let chain = certificates("tls_cert", &files.cert)?;
    let key_bytes = read("tls_key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        Error::Config(format!(
            "`tls_key` = {}: no private key in it ({}): a PEM file with -----BEGIN PRIVATE KEY-----",
            files.key.display(),
            pem_problem(&e)
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls_client_ca", ca)? {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("`tls_client_ca` = {}: {e}", ca.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("`tls_client_ca` = {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::Config(format!(
            "`tls_cert` = {} and `tls_key` = {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate and its key, written to `dir`.
    fn self_signed(dir: &Path, stem: &str) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn error(files: &TlsFiles) -> String {
        match server_config(files) {
            Ok(_) => panic!("{files:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_files_load_and_each_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("trackc-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = self_signed(&dir, "a");
        let b = self_signed(&dir, "b");
        let tls = ServerTls::load(&a).unwrap();
        assert_eq!(
            tls.acceptor().config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
        let missing = TlsFiles {
            cert: dir.join("nowhere.pem"),
            ..a.clone()
        };
        assert!(
            error(&missing).contains("`tls_cert` ="),
            "{}",
            error(&missing)
        );
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").unwrap();
        let e = error(&TlsFiles {
            cert: garbage.clone(),
            ..a.clone()
        });
        assert!(e.contains("`-----END NOTHING-----` is missing"), "{e}");
        let e = error(&TlsFiles {
            cert: a.key.clone(),
            ..a.clone()
        });
        assert!(e.contains("no certificate in it"), "{e}");
        let e = error(&TlsFiles {
            key: garbage.clone(),
            ..a.clone()
        });
        assert!(
            e.contains("`tls_key`") && e.contains("no private key"),
            "{e}"
        );
        // A's certificate with B's key.
        let e = error(&TlsFiles {
            key: b.key.clone(),
            ..a.clone()
        });
        assert!(e.contains("`tls_cert`") && e.contains("`tls_key`"), "{e}");
        let e = error(&TlsFiles {
            client_ca: Some(garbage),
            ..a.clone()
        });
        assert!(e.contains("`tls_client_ca`"), "{e}");
        // A failed reload keeps what was loaded.
        assert!(tls.reload(&missing).is_err());
        assert!(tls.reload(&b).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
