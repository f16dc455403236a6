//! TLS as ZEO's `<ssl>` section sets it up: the server's certificate and key, and client
//! certificates verified against `authenticate` (a CA file or directory); ZEO's TLS is mutual.
//!
//! OpenSSL (behind Python's `ssl`) accepts a client whose certificate is itself in the trust
//! store, which is how ZEO's own examples and tests are set up: self-signed certificates, the
//! client's certificate given as the server's `authenticate` file. webpki alone refuses such
//! a certificate (a CA used as an end entity), so certificates listed in `authenticate` are
//! also accepted as they are (pinned), within their dates as OpenSSL checks them; anything
//! else must chain to them.
//!
//! Pinned certificates may be X.509 version 1, what `openssl x509 -req -signkey` wrote for
//! years (OpenSSL before 3.2 adds no extensions there), so older ZEO deployments have them and
//! OpenSSL takes them. webpki parses only version 3, for the chain and for the handshake
//! signature alike, so for a pinned certificate the signature is verified here against the
//! certificate's own SubjectPublicKeyInfo ([`cert_fields`] is the small DER walk that finds
//! it). A version 1 certificate that is not pinned is refused with that reason: accepting it
//! through a chain would mean verifying the chain without webpki. The server's own certificate
//! may be version 1 too ([`certified_key`]).
//!
//! The replication link (`docs/replication.md`) uses the same configuration the other way
//! round ([`connector`]): a replica (and the epoch probes between peers) presents the
//! certificate and key as its client certificate, and verifies the other server's certificate
//! against its own `authenticate` with the same rule — pinned, within its dates, version 1
//! included, else a chain to the certificates listed there. Host names are not relied upon,
//! as ZEO's clients do not check them against self-signed pinned certificates: a pinned
//! certificate is accepted whatever names it holds; a chained one must name the host of the
//! replicate-from (or peer) address, a DNS name or an IP address in its subjectAltName.
//!
//! The key may be password-protected (`key-password-file`, standing in for `<ssl>`'s
//! `password-function`): see [`key`] for the PEM forms that are decrypted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use pkcs8::der::{self, Reader, SliceReader, TagMode, TagNumber, asn1::BitStringRef};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerMisbehaved,
    SignatureScheme,
};

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_key = own_key(cfg, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &cfg.authenticate {
        Some(ca) => builder.with_client_cert_verifier(Arc::new(ClientAuth::new(ca, &provider)?)),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(server_key)));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The connector of a server that connects to another one (a replica to its primary, the
/// epoch probes to peers) with the same `[zeo.tls]` configuration: it presents the
/// certificate and key as its client certificate and verifies the other server's certificate
/// against `authenticate`, by the rules of the server side (pinned, else a chain; see the
/// module documentation for the server name). Without `authenticate` there is nothing to
/// verify the other server with: an error.
pub fn connector(cfg: &TlsConfig) -> Result<tokio_rustls::TlsConnector> {
    let Some(ca) = &cfg.authenticate else {
        return Err(anyhow!(
            "[zeo.tls] has no `authenticate`: replication over TLS verifies the other \
             server's certificate against it (list the primary's certificate, or its CA, there)"
        ));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let own = own_key(cfg, &provider)?;
    let verifier = ServerAuth::new(ca, &provider)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(own)));
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The configured certificate and key, ready to be presented (by the server, or as a client
/// certificate by the replication link).
fn own_key(cfg: &TlsConfig, provider: &Arc<CryptoProvider>) -> Result<CertifiedKey> {
    let certs = certs_in(&cfg.certificate)?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cfg.certificate.display()));
    }
    let key_path = cfg.key.as_ref().unwrap_or(&cfg.certificate);
    let key = key::load(key_path, cfg.key_password_file.as_deref())?;
    certified_key(certs, key, provider).map_err(|e| match e {
        ServerKeyError::Certificate => anyhow!(
            "the first certificate in {} is not a readable X.509 certificate",
            cfg.certificate.display()
        ),
        ServerKeyError::Key(e) => anyhow!(
            "the private key in {} cannot be used: {e}",
            key_path.display()
        ),
        ServerKeyError::Mismatch => anyhow!(
            "the certificate in {} and the private key in {} do not match",
            cfg.certificate.display(),
            key_path.display()
        ),
    })
}

/// Why the server's certificate and key cannot be served.
#[derive(Debug)]
enum ServerKeyError {
    Certificate,
    Key(rustls::Error),
    Mismatch,
}

/// The server's certificate chain with its key, checked to belong together.
///
/// rustls' own check (`with_single_cert`) parses the certificate with webpki, so it refuses a
/// version 1 server certificate, which OpenSSL serves and ZEO clients accept when they trust
/// it: the key's SubjectPublicKeyInfo is compared with the certificate's here instead.
fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ServerKeyError> {
    let cert_spki = certs
        .first()
        .and_then(|c| cert_fields(c).ok())
        .map(|f| f.spki.to_vec())
        .ok_or(ServerKeyError::Certificate)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(ServerKeyError::Key)?;
    // A key that cannot tell its public half is served as rustls would (it does not treat
    // that as a mismatch either).
    if let Some(key_spki) = signer.public_key()
        && key_spki.as_ref() != cert_spki.as_slice()
    {
        return Err(ServerKeyError::Mismatch);
    }
    Ok(CertifiedKey::new(certs, signer))
}

/// The certificates of `authenticate` (a file, or every certificate file of a directory).
fn authenticate_certs(ca: &Path, whom: &str) -> Result<Vec<CertificateDer<'static>>> {
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
    for f in &files {
        // A directory may hold other files (keys, CRLs): only certificates count.
        let Ok(certs) = certs_in(f) else { continue };
        pinned.extend(certs);
    }
    if pinned.is_empty() {
        return Err(anyhow!(
            "no certificate to authenticate {whom} in {}",
            ca.display()
        ));
    }
    Ok(pinned)
}

/// The rule both verifiers share: a certificate listed in `authenticate` is accepted as it is
/// (pinned) within its dates, whatever its version, its handshake signature verified against
/// its own key; any other must be version 3 and chain to them (webpki, by the caller).
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
    /// "client" or "server": whose certificate this verifies, for the refusal's reason.
    whose: &'static str,
}

impl Pinned {
    fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.certs.iter().any(|c| c.as_ref() == cert.as_ref())
    }

    /// `Ok(true)`: pinned and valid now; `Ok(false)`: not pinned, for the chain to decide.
    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<bool, rustls::Error> {
        if self.contains(end_entity) {
            check_validity(end_entity, now)?;
            return Ok(true);
        }
        // webpki would refuse this one for its version alone, and say so obscurely. (A
        // certificate this walk cannot read goes to webpki, which names the encoding error.)
        if let Ok(fields) = cert_fields(end_entity)
            && fields.version != 3
        {
            return Err(CertificateError::Other(OtherError(Arc::new(NotPinned {
                version: fields.version,
                whose: self.whose,
            })))
            .into());
        }
        Ok(false)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.contains(cert) {
            return verify_tls12_with_spki(message, spki_of(cert)?, dss, &self.algs);
        }
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.contains(cert) {
            let spki = SubjectPublicKeyInfoDer::from(spki_of(cert)?);
            return rustls::crypto::verify_tls13_signature_with_raw_key(
                message, &spki, dss, &self.algs,
            );
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    /// The certificates webpki can use as trust anchors (it takes version 1 anchors);
    /// the others are still pinned.
    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.certs {
            let _ = roots.add(c.clone());
        }
        roots
    }
}

/// Client-certificate verification: pinned certificates, else a chain to them.
#[derive(Debug)]
struct ClientAuth {
    pinned: Pinned,
    chained: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

impl ClientAuth {
    fn new(ca: &Path, provider: &Arc<CryptoProvider>) -> Result<ClientAuth> {
        ClientAuth::from_certs(authenticate_certs(ca, "clients")?, provider)
    }

    /// The verifier for the certificates of `authenticate`: each pinned, and an anchor too
    /// where webpki can use it as one.
    fn from_certs(
        pinned: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<ClientAuth> {
        let pinned = Pinned {
            certs: pinned,
            algs: provider.signature_verification_algorithms,
            whose: "client",
        };
        let roots = pinned.roots();
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
        if self.pinned.check(end_entity, now)? {
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
        self.pinned.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.pinned.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.pinned.algs.supported_schemes()
    }
}

/// Server-certificate verification for the replication link (a replica verifying its
/// primary): the same rule as [`ClientAuth`]. A pinned certificate is accepted whatever names
/// it holds; a chained one must name the host of the address connected to (webpki's check of
/// the DNS name or IP address in its subjectAltName).
#[derive(Debug)]
struct ServerAuth {
    pinned: Pinned,
    chained: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerAuth {
    fn new(ca: &Path, provider: &Arc<CryptoProvider>) -> Result<ServerAuth> {
        ServerAuth::from_certs(authenticate_certs(ca, "the other server")?, provider)
    }

    fn from_certs(
        pinned: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<ServerAuth> {
        let pinned = Pinned {
            certs: pinned,
            algs: provider.signature_verification_algorithms,
            whose: "server",
        };
        let roots = pinned.roots();
        let chained = if roots.is_empty() {
            None
        } else {
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(provider),
                )
                .build()
                .context("building the server-certificate verifier")?,
            )
        };
        Ok(ServerAuth { pinned, chained })
    }
}

impl ServerCertVerifier for ServerAuth {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.check(end_entity, now)? {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chained {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
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
        self.pinned.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.pinned.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.pinned.algs.supported_schemes()
    }
}

/// Why a certificate of another version than 3 was refused: it is not pinned.
#[derive(thiserror::Error)]
#[error(
    "the {whose} certificate is X.509 version {version} and not listed in `authenticate`: a \
     version {version} certificate is accepted only when it is itself listed there (pinned), \
     not through a chain to a CA"
)]
struct NotPinned {
    version: u8,
    whose: &'static str,
}

// rustls shows `CertificateError::Other` with `{:?}`, and the server logs that: let it read
// as the reason.
impl fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the verifier reads from a certificate without webpki.
#[derive(Debug, PartialEq, Eq)]
struct CertFields<'a> {
    /// The version field plus one, as X.509 numbers versions: 1, 2 or 3.
    version: u8,
    /// The Validity, tag and length included: read by [`validity`] when it matters.
    validity: &'a [u8],
    /// The SubjectPublicKeyInfo, tag and length included.
    spki: &'a [u8],
}

/// The version and SubjectPublicKeyInfo of a DER certificate (RFC 5280, 4.1):
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
/// TBSCertificate ::= SEQUENCE {
///     version [0] EXPLICIT INTEGER DEFAULT v1(0),  -- absent in a version 1 certificate
///     serialNumber, signature, issuer, validity, subject,
///     subjectPublicKeyInfo SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING },
///     [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions   -- optional, not read }
/// ```
///
/// Every element is walked by its length, and the whole input must be consumed.
fn cert_fields(cert: &[u8]) -> der::Result<CertFields<'_>> {
    let mut r = SliceReader::new(cert)?;
    let fields = r.sequence(|c| {
        let fields = c.sequence(|tbs| {
            let version = tbs
                .context_specific::<u8>(TagNumber::N0, TagMode::Explicit)?
                .unwrap_or(0);
            // serialNumber, signature, issuer
            for _ in 0..3 {
                tbs.tlv_bytes()?;
            }
            let validity = tbs.tlv_bytes()?;
            tbs.tlv_bytes()?; // subject
            let spki = tbs.tlv_bytes()?;
            while !tbs.is_finished() {
                tbs.tlv_bytes()?;
            }
            Ok(CertFields {
                version: version.saturating_add(1),
                validity,
                spki,
            })
        })?;
        c.tlv_bytes()?; // signatureAlgorithm
        c.tlv_bytes()?; // signatureValue
        Ok(fields)
    })?;
    r.finish(fields)
}

/// notBefore and notAfter, from `Validity ::= SEQUENCE { notBefore Time, notAfter Time }`,
/// `Time ::= CHOICE { UTCTime, GeneralizedTime }`.
fn validity(tlv: &[u8]) -> der::Result<(UnixTime, UnixTime)> {
    fn time<'a>(r: &mut impl Reader<'a>) -> der::Result<UnixTime> {
        let since_epoch = match r.peek_tag()? {
            der::Tag::UtcTime => r.decode::<der::asn1::UtcTime>()?.to_unix_duration(),
            der::Tag::GeneralizedTime => {
                r.decode::<der::asn1::GeneralizedTime>()?.to_unix_duration()
            }
            tag => return Err(tag.unexpected_error(None)),
        };
        Ok(UnixTime::since_unix_epoch(since_epoch))
    }
    let mut r = SliceReader::new(tlv)?;
    let times = r.sequence(|v| Ok((time(v)?, time(v)?)))?;
    r.finish(times)
}

/// Whether a pinned certificate is valid at `now`. Being listed in `authenticate` does not
/// make a certificate timeless: OpenSSL checks the dates of the certificate it finds there.
fn check_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (not_before, not_after) = cert_fields(cert.as_ref())
        .and_then(|f| validity(f.validity))
        .map_err(|_| CertificateError::BadEncoding)?;
    if now < not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
        .into());
    }
    if now > not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
        .into());
    }
    Ok(())
}

/// A pinned certificate's SubjectPublicKeyInfo, or the rustls error for a certificate that
/// cannot be read.
fn spki_of<'a>(cert: &'a CertificateDer<'_>) -> Result<&'a [u8], rustls::Error> {
    cert_fields(cert.as_ref())
        .map(|f| f.spki)
        .map_err(|_| CertificateError::BadEncoding.into())
}

/// A SubjectPublicKeyInfo's AlgorithmIdentifier contents (what
/// `SignatureVerificationAlgorithm::public_key_alg_id` holds) and its key bits.
fn spki_parts(spki: &[u8]) -> der::Result<(&[u8], &[u8])> {
    let mut r = SliceReader::new(spki)?;
    let parts = r.sequence(|s| {
        let alg = s.sequence(|a| a.read_slice(a.remaining_len()))?;
        let key = s.decode::<BitStringRef<'_>>()?;
        // A key is whole bytes; a BIT STRING with unused bits is not one.
        let key = key.as_bytes().ok_or_else(|| {
            der::Error::from(der::ErrorKind::Noncanonical {
                tag: der::Tag::BitString,
            })
        })?;
        Ok((alg, key))
    })?;
    r.finish(parts)
}

/// TLS 1.2's handshake signature against a SubjectPublicKeyInfo, as
/// `rustls::crypto::verify_tls12_signature` does it against a certificate: a TLS 1.2 scheme
/// may map to several algorithms (ECDSA's does not name the curve), so the one whose public
/// key algorithm is the key's is used.
fn verify_tls12_with_spki(
    message: &[u8],
    spki: &[u8],
    dss: &DigitallySignedStruct,
    supported: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let Some((_, algs)) = supported.mapping.iter().find(|(s, _)| *s == dss.scheme) else {
        return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    };
    let (key_alg, key) = spki_parts(spki).map_err(|_| CertificateError::BadEncoding)?;
    let mut signature_algorithm_id = Vec::new();
    for alg in algs.iter() {
        if alg.public_key_alg_id().as_ref() != key_alg {
            signature_algorithm_id = alg.signature_alg_id().as_ref().to_vec();
            continue;
        }
        return alg
            .verify_signature(key, message, dss.signature())
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| CertificateError::BadSignature.into());
    }
    Err(
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id,
            public_key_algorithm_id: key_alg.to_vec(),
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    //! The fixtures were made once with OpenSSL 3.0, valid for a century: a P-256 server
    //! certificate (v3), and version 1 client certificates with an RSA 2048 and a P-384 key,
    //! `openssl x509 -req -signkey KEY -extfile EMPTY_FILE`. The handshakes run in memory.

    use super::*;
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
    use rustls::{ProtocolVersion, SupportedProtocolVersion};

    const SERVER_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUYslsVyIuSLbFfsMBUqtQOWr5EY8wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMTA4NTg0MVoYDzIxMjYxMDI4
MDg1ODQxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASzPBO6dOvLclxbjqt2G/vF+hAWM9eEN6Y4ySv0I+lLE3yytmIpRpum
j+OUTiIcOF7o8gG3VWHmY82tctQZZ6Xho1MwUTAdBgNVHQ4EFgQUA0ijckeqEO6d
DHzMDu/3IQnfUjYwHwYDVR0jBBgwFoAUA0ijckeqEO6dDHzMDu/3IQnfUjYwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAkS51hPEvj72tMcPe012h
W9+oR4TMxCe3pgJCfoXnP0YCICYn3LDdzLajC5B9kW2C6h9qyRe5i7OfrSusXLUW
A+Ux
-----END CERTIFICATE-----
";
    const SERVER_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJDyyjFp/fj//ncx7
GteiR+tC/Z5Ejf6jZaiHFkQGwAShRANCAASzPBO6dOvLclxbjqt2G/vF+hAWM9eE
N6Y4ySv0I+lLE3yytmIpRpumj+OUTiIcOF7o8gG3VWHmY82tctQZZ6Xh
-----END PRIVATE KEY-----
";
    const RSA_V1_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIICqzCCAZMCFAknWvER4/pNcsSAWJUG5oV8OJwYMA0GCSqGSIb3DQEBCwUAMBEx
DzANBgNVBAMMBnYxLXJzYTAgFw0yNjExMjEwODU4NDFaGA8yMTI2MTAyODA4NTg0
MVowETEPMA0GA1UEAwwGdjEtcnNhMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIB
CgKCAQEAr+mdvXoBOUDLORiDJ21+2wBbHUNE4hQp5fKdHr1xhjcDQSrxsCbAq5zd
TDMbPRWqbhtBImUmA7YiND4R5rNJrAGGv5S9D5YsJSby1MKhgn+SuZ4PGg3TLruA
n3oPZN4SU8Wlm/LijXvjAz2iq54zOO7QJEoCnkG7NYKKubkQxPTVJkYmKH7Vd6IJ
kauNG0XDhjGdFiqoyTZROU7pwbQdurjcSOZxBHNYeVfvfhTBd9rWDm/EHKttIql+
vLVz8ysYuckTgM/dq7SMmgvklcwdbiVMwY+sK5htyRpsalCO4wkX8tvlOFQ4jpFs
FnilpeTmrk71/AADYHD0rC7bNB3mpQIDAQABMA0GCSqGSIb3DQEBCwUAA4IBAQAI
c8qrGOKW2ZPJ7jPz8bWLoG6pqQ8R4b4rFGDIayuK+hamht+FW8e2xyGDuCHABdA0
+3OR4/V2E/yijLc2coo9+Jw5wNpecSJVixilMoS9JW4fwLDQ5vPEsak55rXUJevM
OQaPg1GokHCiBW9hun7vasxwihjAv/80iZ3nOnRL4CA1i4GlzaTP45jX2qh8ZPGI
ibONSlNw3wRQnfcdbNPv62bugEUv3cRR6JRM7wmEvNhCKJQmTUdpHQeiAUm/923I
LAlhZazVz/MAcJxdx4VDeR7czLdsVFbWEjrmD9dAoK6/niHwkus/nGiOD9x17xDb
4fETKFpWM4YXiyo0E60t
-----END CERTIFICATE-----
";
    const RSA_V1_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCv6Z29egE5QMs5
GIMnbX7bAFsdQ0TiFCnl8p0evXGGNwNBKvGwJsCrnN1MMxs9FapuG0EiZSYDtiI0
PhHms0msAYa/lL0PliwlJvLUwqGCf5K5ng8aDdMuu4Cfeg9k3hJTxaWb8uKNe+MD
PaKrnjM47tAkSgKeQbs1goq5uRDE9NUmRiYoftV3ogmRq40bRcOGMZ0WKqjJNlE5
TunBtB26uNxI5nEEc1h5V+9+FMF32tYOb8Qcq20iqX68tXPzKxi5yROAz92rtIya
C+SVzB1uJUzBj6wrmG3JGmxqUI7jCRfy2+U4VDiOkWwWeKWl5OauTvX8AANgcPSs
Lts0HealAgMBAAECggEABN5B4kYnwIOIMY/5w96Q3dNYXNVJaQ7xII738CuCom86
pNQLv484UnIojFJMalgDe8E/VTStZPmRCsG+Ub8bxn8oUSb28HZ8dEQWq51TRj7s
5ZF344WxwXT+Q0Dn1NJxzrsFMUKl0w/e9sOpkSGd/fEF9kB3ar/GRDMqTvzNzQAv
H7zqjTflId6HQEeinLyzkC27+47lnyFPE1ig0xRbK2XJA3dXrh08aznrYppkMqvJ
K7nODdQ4JWpWaWk+C0DwkWyftTAkAJP4vA4yZ199IeEAGLC6KeVqwxpixOLjcpLM
nvELA/8K7TWNL882b/UhgoI3IGGG6xQnSj/wwFqFQQKBgQDeXdvDJQbJg+j1t0A+
NtvhZcXRoL4Q+O4rDm2sTq1QwIUDwyUS5lAFabiyWjadA/lrG48iGo7YJUUtOozf
P8YN8SFJe35nhOiAaakktR59XSFOllNgWjaaoSOM1IJhjkq/GVL4zLL7VMmVla3b
13ABN1l6dZJf4Ou13sW+fWmHsQKBgQDKhQi3fyXY+6DUaNspY0N+uf92ZdIOC/+R
la2yLM1dRJhhi03WvKlvskYWJ+YHIa+pN881U7SCsRoxFExSYlRdTjQrEJWoTLki
6RE9qAuDXGsVUG4YihDyXv3++e3vlUL0Pvm1ddTdNTJBrfNzrj28EHmyrYdhQpSU
JDuRQzR/NQKBgQDcRDDqbwT4HHho3ar/dav866k2a3maqlqRv+sXoZ/Au9OG1Ikm
3Ykqs3zG/uHWSxeH53azG4efx9tsX/EnO67eJJsKhQ/DTz5X5VItEFQxbk0N4Y6Z
hQNNzIzAdcjpBeA4x8cOuQYaO/Sq/eeIOzGxorg5u7jQzKXwM8nBVc1xIQKBgH/T
ChZvrV7QK8oFyNbNrWtOUJzVVYjCL/Qe6jw8pP6KbjebKm0wNS2n8y7GzhyQOYRw
ElwRUizvRZ3WtvmE0MT3uFu6IwvQKUaMnvIwn9uwuHICiwr4Egw4ws5tx61ho5nw
KcJL9igNDISCG9hXEOYj6/xIJNvRn2AFoodkSL1FAoGAHGTRrVRyi4a+xxAdJLq6
5252Lk9I8Jkhgr2tKUIyANoUhSInz7pgwyR1FYo7wfxfQHaxv9G5RVSHr+2YoKc9
KYk3hIjTVxMIkyt1C9IR/r7nHTtFpsBYerbmjogywKv89hbhs/6NY4tnukt3QdXY
fnDqhHk839MshC8sSDuCRso=
-----END PRIVATE KEY-----
";
    const EC_V1_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBWTCB4AIUBhaLRbedq+/pFbs7QtGCJ44lQ/gwCgYIKoZIzj0EAwIwEDEOMAwG
A1UEAwwFdjEtZWMwIBcNMjYxMTIxMDg1ODQxWhgPMjEyNjEwMjgwODU4NDFaMBAx
DjAMBgNVBAMMBXYxLWVjMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEq76vDezlodcU
c2O3WRrM4p8UZoIke/RjA5AnlvxvTp45NRW1HgeCxdY/89dHNiKVj+bALy7WLVjR
vc+XEGbdOJVl3NE9uBEUlRvgEoL9fkivs6WZZ1fmCJGMnmnehXHTMAoGCCqGSM49
BAMCA2gAMGUCMQD6gL2G4s42zaM0/lYm0+wSgP1ZZrKJ5VLnoQBeAY5DSXw8ZhJW
XuyCGcYci03mO/ECMFaVYdkX5dt7A6ByelVf8QfQyVo9p6zv4+i88bcaSPb1hN7B
rYI4YFsWifSGkB35Uw==
-----END CERTIFICATE-----
";
    const EC_V1_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDD6aZkUH3QK0u2sM4EG
QeFt6KH92u5HlStK/ceErj9nieG2qP00G+2dTEsYq5tM2jqhZANiAASrvq8N7OWh
1xRzY7dZGszinxRmgiR79GMDkCeW/G9Onjk1FbUeB4LF1j/z10c2IpWP5sAvLtYt
WNG9z5cQZt04lWXc0T24ERSVG+ASgv1+SK+zpZlnV+YIkYyead6FcdM=
-----END PRIVATE KEY-----
";

    /// Another P-384 key, not the certificate's.
    const OTHER_P384_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDszeNlxG2D4U2ojk74
4LNieDeEdPTkKKG6ETGO7PsLc+djIgha9ENHhYJGiFS1R42hZANiAATVzJLOQo1g
jmL4VSaWKYB6RPkP1HWGvkdEi7erN3ATSVq4+lmPfCdnDnh9l7Anc+Ejo8d9OUNG
9ziTqQuzW+IkTItaFW8JwxeGSDB7WxbBCi1EAmvmtQ+W7MTRsoHDrS0=
-----END PRIVATE KEY-----
";

    fn cert(pem: &str) -> CertificateDer<'static> {
        let mut bytes = pem.as_bytes();
        let mut certs = rustls_pemfile::certs(&mut bytes);
        certs.next().expect("a certificate").expect("PEM")
    }

    fn key(pem: &str) -> PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut pem.as_bytes())
            .expect("PEM")
            .expect("a key")
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The client's view of the server is not under test: any certificate, its signatures
    /// checked.
    #[derive(Debug)]
    struct AnyServer(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// A handshake in `version` between a server whose `authenticate` holds `pinned` and a
    /// client presenting `client_cert`, signing with `client_key` (not necessarily its key:
    /// rustls' own consistency check would parse the certificate with webpki). The server's
    /// error if it refused, else the client's certificate as the server saw it.
    fn handshake(
        version: &'static SupportedProtocolVersion,
        pinned: &[&str],
        client_cert: &str,
        client_key: &str,
    ) -> Result<CertificateDer<'static>, rustls::Error> {
        let provider = provider();
        let auth = ClientAuth::from_certs(pinned.iter().map(|p| cert(p)).collect(), &provider)
            .expect("a verifier");
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_client_cert_verifier(Arc::new(auth))
            .with_single_cert(vec![cert(SERVER_CERT)], key(SERVER_KEY))
            .expect("the server's certificate");
        let signer = provider
            .key_provider
            .load_private_key(key(client_key))
            .expect("the client's key");
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(
                provider.signature_verification_algorithms,
            )))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(
                vec![cert(client_cert)],
                signer,
            ))));
        let mut server = ServerConnection::new(Arc::new(server)).expect("a server connection");
        let mut client = ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("localhost").expect("a name"),
        )
        .expect("a client connection");
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).expect("client output");
            }
            let mut input = wire.as_slice();
            while !input.is_empty() {
                server.read_tls(&mut input).expect("server input");
                server.process_new_packets()?;
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server output");
            }
            let mut input = wire.as_slice();
            while !input.is_empty() {
                client.read_tls(&mut input).expect("client input");
                client.process_new_packets().expect("the client's side");
            }
            if !server.is_handshaking() && !client.is_handshaking() {
                let want = match version.version {
                    ProtocolVersion::TLSv1_2 => ProtocolVersion::TLSv1_2,
                    _ => ProtocolVersion::TLSv1_3,
                };
                assert_eq!(server.protocol_version(), Some(want));
                let seen = server.peer_certificates().expect("a client certificate");
                return Ok(seen[0].clone());
            }
        }
        panic!("the handshake did not finish");
    }

    /// A handshake in `version` between a replication client whose `authenticate` holds
    /// `pinned` ([`ServerAuth`]), connecting to `name`, and a server presenting `server_cert`
    /// with `server_key` (no client certificate asked). The client's error if it refused.
    fn server_handshake(
        version: &'static SupportedProtocolVersion,
        pinned: &[&str],
        name: &str,
        server_cert: &str,
        server_key: &str,
    ) -> Result<(), rustls::Error> {
        let provider = provider();
        let auth = ServerAuth::from_certs(pinned.iter().map(|p| cert(p)).collect(), &provider)
            .expect("a verifier");
        // Not `certified_key`: a key that is not the certificate's is part of the test.
        let signer = provider
            .key_provider
            .load_private_key(key(server_key))
            .expect("the server's key");
        let served = CertifiedKey::new(vec![cert(server_cert)], signer);
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(served)));
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(auth))
            .with_no_client_auth();
        let mut server = ServerConnection::new(Arc::new(server)).expect("a server connection");
        let mut client = ClientConnection::new(
            Arc::new(client),
            ServerName::try_from(name.to_string()).expect("a name"),
        )
        .expect("a client connection");
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).expect("client output");
            }
            let mut input = wire.as_slice();
            while !input.is_empty() {
                server.read_tls(&mut input).expect("server input");
                server.process_new_packets().expect("the server's side");
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server output");
            }
            let mut input = wire.as_slice();
            while !input.is_empty() {
                client.read_tls(&mut input).expect("client input");
                client.process_new_packets()?;
            }
            if !client.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn the_replication_client_takes_pinned_servers_whatever_their_name() {
        for version in VERSIONS {
            for (c, k) in [
                (RSA_V1_CERT, RSA_V1_KEY),
                (EC_V1_CERT, EC_V1_KEY),
                (SERVER_CERT, SERVER_KEY),
            ] {
                for name in ["localhost", "127.0.0.1", "elsewhere.example"] {
                    server_handshake(version, &[SERVER_CERT, c], name, c, k)
                        .unwrap_or_else(|e| panic!("{version:?} {name} {c}: {e}"));
                }
            }
            // Signed with another key than the pinned certificate's.
            let e = server_handshake(
                version,
                &[EC_V1_CERT],
                "localhost",
                EC_V1_CERT,
                OTHER_P384_KEY,
            );
            assert!(e.is_err(), "{version:?}");
        }
    }

    #[test]
    fn the_replication_client_refuses_an_unpinned_v1_server_with_the_reason() {
        for version in VERSIONS {
            let e = server_handshake(
                version,
                &[SERVER_CERT],
                "localhost",
                RSA_V1_CERT,
                RSA_V1_KEY,
            )
            .unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("the server certificate is X.509 version 1 and not listed"),
                "{version:?}: {text}"
            );
            // Nothing listed at all that would chain it.
            let e = server_handshake(version, &[EC_V1_CERT], "localhost", SERVER_CERT, SERVER_KEY)
                .unwrap_err();
            assert!(
                matches!(e, rustls::Error::InvalidCertificate(_)),
                "{version:?}: {e}"
            );
        }
    }

    const VERSIONS: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];

    #[test]
    fn fixtures_are_what_they_say() {
        for (pem, version) in [(SERVER_CERT, 3), (RSA_V1_CERT, 1), (EC_V1_CERT, 1)] {
            assert_eq!(cert_fields(&cert(pem)).expect("DER").version, version);
        }
        // webpki refuses the version 1 ones, which is the point.
        assert!(rustls::server::ParsedCertificate::try_from(&cert(RSA_V1_CERT)).is_err());
    }

    #[test]
    fn the_spki_found_is_webpkis() {
        let c = cert(SERVER_CERT);
        let parsed = rustls::server::ParsedCertificate::try_from(&c).expect("v3");
        let fields = cert_fields(&c).expect("DER");
        assert_eq!(fields.spki, parsed.subject_public_key_info().as_ref());
        // And a key's own SPKI (what rustls computes from the private key) is the v1
        // certificate's.
        for (c, k) in [(RSA_V1_CERT, RSA_V1_KEY), (EC_V1_CERT, EC_V1_KEY)] {
            let signer = provider()
                .key_provider
                .load_private_key(key(k))
                .expect("key");
            let spki = signer.public_key().expect("an SPKI");
            assert_eq!(cert_fields(&cert(c)).expect("DER").spki, spki.as_ref());
        }
    }

    #[test]
    fn pinned_v1_client_certificates_complete_both_tls_versions() {
        for version in VERSIONS {
            for (c, k) in [(RSA_V1_CERT, RSA_V1_KEY), (EC_V1_CERT, EC_V1_KEY)] {
                // Pinned alone, and among other certificates of `authenticate`.
                for pinned in [&[c][..], &[SERVER_CERT, c][..]] {
                    let seen = handshake(version, pinned, c, k)
                        .unwrap_or_else(|e| panic!("{version:?} {c}: {e}"));
                    assert_eq!(seen, cert(c));
                }
            }
        }
    }

    #[test]
    fn a_pinned_certificate_signed_with_another_key_is_refused() {
        for version in VERSIONS {
            // The same algorithm and curve, another key.
            let e = handshake(version, &[EC_V1_CERT], EC_V1_CERT, OTHER_P384_KEY).unwrap_err();
            assert_eq!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                "{version:?}"
            );
            // An RSA signature for an EC key.
            let e = handshake(version, &[EC_V1_CERT], EC_V1_CERT, RSA_V1_KEY).unwrap_err();
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
                    )
                ),
                "{version:?}: {e}"
            );
        }
    }

    #[test]
    fn an_unpinned_v1_certificate_is_refused_with_the_reason() {
        for version in VERSIONS {
            let e = handshake(version, &[SERVER_CERT], RSA_V1_CERT, RSA_V1_KEY).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("X.509 version 1 and not listed in `authenticate`")
                    && text.contains("accepted only when it is itself listed there (pinned)"),
                "{version:?}: {text}"
            );
        }
    }

    #[test]
    fn pinned_certificates_are_valid_only_within_their_dates() {
        let p = provider();
        let auth = ClientAuth::from_certs(vec![cert(RSA_V1_CERT)], &p).expect("a verifier");
        let c = cert(RSA_V1_CERT);
        let (not_before, not_after) =
            validity(cert_fields(&c).expect("DER").validity).expect("dates");
        // 2026-11-21 08:58:41 to 2126-10-28 08:58:41, the second a GeneralizedTime.
        assert_eq!(not_before.as_secs(), 1_795_251_521);
        assert_eq!(not_after.as_secs(), 4_948_851_521);
        let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        for ok in [not_before.as_secs(), 3_000_000_000, not_after.as_secs()] {
            assert!(auth.verify_client_cert(&c, &[], at(ok)).is_ok(), "{ok}");
        }
        let e = auth
            .verify_client_cert(&c, &[], at(1_000_000_000))
            .map(|_| ());
        assert!(
            matches!(
                e,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYetContext { .. }
                ))
            ),
            "{e:?}"
        );
        let e = auth
            .verify_client_cert(&c, &[], at(not_after.as_secs() + 1))
            .map(|_| ());
        assert!(
            matches!(
                e,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredContext { .. }
                ))
            ),
            "{e:?}"
        );
        assert!(validity(b"\x30\x00").is_err());
        assert!(validity(b"\x30\x02\x05\x00").is_err());
    }

    #[test]
    fn a_v1_server_certificate_goes_with_its_key_only() {
        let p = provider();
        let served = certified_key(vec![cert(RSA_V1_CERT)], key(RSA_V1_KEY), &p).expect("served");
        assert_eq!(served.cert, vec![cert(RSA_V1_CERT)]);
        for (c, k) in [(RSA_V1_CERT, EC_V1_KEY), (EC_V1_CERT, OTHER_P384_KEY)] {
            let e = certified_key(vec![cert(c)], key(k), &p).map(|_| ());
            assert!(matches!(e, Err(ServerKeyError::Mismatch)), "{e:?}");
        }
        let garbage = CertificateDer::from(b"\x30\x03\x02\x01\x00".to_vec());
        let e = certified_key(vec![garbage], key(RSA_V1_KEY), &p).map(|_| ());
        assert!(matches!(e, Err(ServerKeyError::Certificate)), "{e:?}");
        let e = certified_key(Vec::new(), key(RSA_V1_KEY), &p).map(|_| ());
        assert!(matches!(e, Err(ServerKeyError::Certificate)), "{e:?}");
    }

    #[test]
    fn malformed_der_is_an_error_not_a_panic() {
        let good = cert(RSA_V1_CERT).as_ref().to_vec();
        // Every truncation, and every byte replaced by values that break lengths and tags.
        for n in 0..good.len() {
            assert!(cert_fields(&good[..n]).is_err(), "truncated to {n}");
            for b in [0x00, 0x80, 0x84, 0xff] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = cert_fields(&bad);
                if let Ok(f) = cert_fields(&bad) {
                    let _ = spki_parts(f.spki);
                }
            }
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(cert_fields(&trailing).is_err());
        for garbage in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"not a certificate",
        ] {
            assert!(cert_fields(garbage).is_err());
            assert!(spki_parts(garbage).is_err());
            let c = CertificateDer::from(garbage.to_vec());
            assert!(matches!(
                spki_of(&c),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::BadEncoding
                ))
            ));
        }
    }
}
