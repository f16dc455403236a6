//! The TLS certificate rig of the ZEO tests, made with the `openssl` CLI: a CA, a server
//! certificate it signed for 127.0.0.1 / localhost, and a client certificate it signed, all
//! complete enough for both ends: ZEO's client `<ssl>` verifies with VERIFY_X509_STRICT, and
//! webpki (our server) refuses v1 certificates and wants clientAuth on the client's.
//!
//! ```ignore
//! let Some(certs) = support::tls::make_certs(dir, None) else { return };
//! ```
//!
//! [`make_v1_cert`] adds an X.509 version 1 certificate, as older ZEO deployments have them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files [`make_certs`] wrote in its directory. They have fixed names there (`ca.pem`,
/// `server.pem`, `server.key`, `client.pem`, `client.key`, `key.pass`), so configurations in
/// the same directory may name them relatively.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA certificate (`ca.pem`; its key is `ca.key`): what clients and the server trust.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    /// `server.key`: PKCS#8, encrypted when a passphrase was given.
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// `key.pass`, the server key's passphrase and a newline, when there is one.
    pub key_pass: Option<PathBuf>,
}

/// Whether the `openssl` CLI is there to make certificates with.
pub fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run the `openssl` CLI in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        super::output_text(&out)
    );
}

/// Make the CA, server and client certificates in `dir`; the server key is generated
/// encrypted with `server_key_pass` (as an administrator would: `genpkey -aes-256-cbc`, so
/// PBES2 PBKDF2-HMAC-SHA256 AES-256-CBC), the passphrase written to `key.pass`. None, with a
/// note on standard error, when openssl is not available (the caller skips its test); panics
/// when openssl fails.
pub fn make_certs(dir: &Path, server_key_pass: Option<&str>) -> Option<Certs> {
    if !have_openssl() {
        eprintln!("openssl is not available; skipping the TLS test");
        return None;
    }
    let d = dir;
    fs::write(
        d.join("cext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write cext.cnf");
    fs::write(
        d.join("sext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write sext.cnf");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            // VERIFY_X509_STRICT wants key usage on a CA.
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let mut genkey = vec![
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "server.key",
    ];
    let mut csr = vec![
        "req",
        "-new",
        "-key",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ];
    let key_pass = server_key_pass.map(|pass| {
        let path = d.join("key.pass");
        fs::write(&path, format!("{pass}\n")).expect("write key.pass");
        genkey.extend(["-aes-256-cbc", "-pass", "file:key.pass"]);
        csr.extend(["-passin", "file:key.pass"]);
        path
    });
    openssl(d, &genkey);
    openssl(d, &csr);
    sign(d, "server", "sext.cnf");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    sign(d, "client", "cext.cnf");
    Some(Certs {
        ca: d.join("ca.pem"),
        server_cert: d.join("server.pem"),
        server_key: d.join("server.key"),
        client_cert: d.join("client.pem"),
        client_key: d.join("client.key"),
        key_pass,
    })
}

/// `NAME.csr` signed by the CA with the extensions in `ext`, as `NAME.pem`.
fn sign(dir: &Path, name: &str, ext: &str) {
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    );
}

/// An X.509 version 1 certificate `NAME.pem` (for a client, or a server: it names no host) with its key `NAME.key`, in `dir`:
/// self-signed (`openssl x509 -req -signkey`, what ZEO administrators ran for years), or
/// signed by the CA of `ca` ([`make_certs`] in the same directory), with an empty extension
/// file, valid for `days` (`"0"`: expired a second later). None, with a note on standard error, when this OpenSSL writes version 3 all the same
/// (3.2 and later add key identifiers by default: openssl/openssl#24601) — the caller skips;
/// 3.0 writes version 1, which `openssl x509 -text` is asked to confirm.
pub fn make_v1_cert(
    dir: &Path,
    name: &str,
    ca: Option<&Certs>,
    days: &str,
) -> Option<(PathBuf, PathBuf)> {
    let (csr, pem, key) = (
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.key"),
    );
    fs::write(dir.join("v1-empty.cnf"), "").expect("write v1-empty.cnf");
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    let mut args = vec!["x509", "-req", "-in", &csr, "-out", &pem, "-days", days];
    args.extend(["-extfile", "v1-empty.cnf"]);
    match ca {
        Some(_) => args.extend(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]),
        None => args.extend(["-signkey", &key]),
    }
    openssl(dir, &args);
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &pem])
        .current_dir(dir)
        .output()
        .expect("run openssl x509 -text");
    let text = String::from_utf8_lossy(&text.stdout);
    if !text.contains("Version: 1 (0x0)") {
        eprintln!("this openssl does not write X.509 version 1 certificates; skipping:\n{text}");
        return None;
    }
    Some((dir.join(pem), dir.join(key)))
}
