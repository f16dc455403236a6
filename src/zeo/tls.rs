//! TLS as ZEO's `<ssl>` section sets it up: the server's certificate and key, and client
//! certificates verified against `authenticate` (a CA file or directory); ZEO's TLS is mutual.
//!
//! OpenSSL (behind Python's `ssl`) accepts a client whose certificate is itself in the trust
//! store, which is how ZEO's own examples and tests are set up: self-signed certificates, the
//! client's certificate given as the server's `authenticate` file. webpki alone refuses such
//! a certificate (a CA used as an end entity), so certificates listed in `authenticate` are
//! also accepted as they are (pinned); anything else must chain to them.
//!
//! The key may be password-protected (`key-password-file`, standing in for `<ssl>`'s
//! `password-function`): see [`key`] for the PEM forms that are decrypted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::config::TlsConfig;

mod key;
pub use key::KeyError;

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn certs_in(p: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(p)?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", p.display()))
}

/// The acceptor for a `<ssl>` / `[zeo.tls]` configuration.
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor> {
    let certs = certs_in(&cfg.certificate)?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cfg.certificate.display()));
    }
    let key_path = cfg.key.as_ref().unwrap_or(&cfg.certificate);
    let key = key::load(key_path, cfg.key_password_file.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match &cfg.authenticate {
        Some(ca) => builder
            .with_client_cert_verifier(Arc::new(ClientAuth::new(ca, &provider)?))
            .with_single_cert(certs, key),
        None => builder.with_no_client_auth().with_single_cert(certs, key),
    }
    .with_context(|| {
        format!(
            "the certificate in {} and the private key in {} do not match",
            cfg.certificate.display(),
            key_path.display()
        )
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Client-certificate verification: pinned certificates, else a chain to them.
#[derive(Debug)]
struct ClientAuth {
    pinned: Vec<CertificateDer<'static>>,
    chained: Option<Arc<dyn ClientCertVerifier>>,
    algs: WebPkiSupportedAlgorithms,
    hints: Vec<DistinguishedName>,
}

impl ClientAuth {
    fn new(ca: &Path, provider: &Arc<CryptoProvider>) -> Result<ClientAuth> {
        let files: Vec<PathBuf> = if ca.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(ca)
                .with_context(|| format!("reading {}", ca.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![ca.to_path_buf()]
        };
        let mut pinned = Vec::new();
        let mut roots = rustls::RootCertStore::empty();
        for f in &files {
            // A directory may hold other files (keys, CRLs): only certificates count.
            let Ok(certs) = certs_in(f) else { continue };
            for c in certs {
                // Certificates webpki cannot use as anchors are still pinned.
                let _ = roots.add(c.clone());
                pinned.push(c);
            }
        }
        if pinned.is_empty() {
            return Err(anyhow!(
                "no certificate to authenticate clients in {}",
                ca.display()
            ));
        }
        let hints = roots.subjects();
        let chained = if roots.is_empty() {
            None
        } else {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(provider),
            )
            .build()
            .context("building the client-certificate verifier")?;
            Some(v as Arc<dyn ClientCertVerifier>)
        };
        Ok(ClientAuth {
            pinned,
            chained,
            algs: provider.signature_verification_algorithms,
            hints,
        })
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ClientCertVerified::assertion());
        }
        match &self.chained {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
