//! Operational gaps of `zodbctl serve` an administrator would hit, proved with real Python
//! ZEO clients: fractional transaction timeouts (`-t 0.5`, `transaction-timeout = 1.5`),
//! bare-port addresses listening on IPv4 and IPv6, TLS with a password-protected key, and
//! X.509 version 1 client certificates pinned in `authenticate`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::tls::{self, Certs};
use support::{Serve, Server, path_str as s};

const SCENARIOS: &str = include_str!("python/zeo_scenarios.py");

fn scenario(args: &[&str]) -> String {
    support::python_stdout(SCENARIOS, args)
}

// ---------------------------------------------------------------------------------------------
// Transaction timeout in fractional seconds
// ---------------------------------------------------------------------------------------------

/// How long the scenario's hog held the lock before the server dropped it.
fn held(out: &str) -> f64 {
    let i = out.find("held=").expect("held= in the output") + "held=".len();
    out[i..].trim().parse().expect("a number of seconds")
}

/// The txn_timeout scenario against `server`: the other commit waited at least `min_held`
/// seconds, and the server logged its timeout as `seconds`.
fn assert_timeout(mut server: Server, seconds: &str, min_held: f64) {
    let out = scenario(&["txn_timeout", &server.addr()]);
    assert!(out.contains("OK txn_timeout"), "{out}");
    assert!(held(&out) >= min_held, "{out}");
    let log = server.log();
    let logged = format!("Transaction timeout after {seconds} seconds");
    assert!(log.contains(&logged), "{log}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn fractional_timeout_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let server = Serve::in_dir(dir.path())
        .file(&fs_path)
        .transaction_timeout(0.5)
        .start();
    // The other commit waited for the half second (the lock holder was not dropped at once,
    // and the value was not truncated): a lower bound, which the timeout guarantees.
    assert_timeout(server, "0.5", 0.4);
}

#[test]
fn fractional_timeout_from_the_toml_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = support::write_config(
        d,
        "etc/zeo.toml",
        "[zeo]\naddress = \"127.0.0.1:0\"\ntransaction-timeout = 1.5\n\
         [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
    );
    let server = Serve::in_dir(d).config(&conf).start();
    assert_timeout(server, "1.5", 1.4);
}

#[test]
fn zero_negative_and_garbage_timeouts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let sock = dir.path().join("zeo.sock");
    for bad in ["0", "0.0", "-1", "-0.5", "abc", "inf", "nan"] {
        let out = Serve::in_dir(dir.path())
            .unix(&sock)
            .file(&fs_path)
            .args(["-t", bad])
            .run();
        let text = support::output_text(&out);
        assert_eq!(out.status.code(), Some(2), "-t {bad}: {text}");
        assert!(text.contains("greater than 0"), "-t {bad}: {text}");
        assert!(!sock.exists(), "-t {bad}: the server listened");
    }
    // The configuration file says the same, with file and line.
    fs::write(
        dir.path().join("zeo.toml"),
        "[zeo]\naddress = \"127.0.0.1:0\"\ntransaction-timeout = 0\n",
    )
    .unwrap();
    let out = Serve::in_dir(dir.path())
        .config(&dir.path().join("zeo.toml"))
        .run();
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("zeo.toml:3: zeo.transaction-timeout: must be greater than 0"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// A bare port listens on every interface, IPv4 and IPv6, as runzeo does
// ---------------------------------------------------------------------------------------------

/// Whether this machine has an IPv6 loopback to test with.
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Connect and read the server's first frame: the protocol greeting (`Z5` or `M5`).
fn greeting(addr: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let sa: std::net::SocketAddr = addr.parse().expect("socket address");
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len).min(64) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

#[test]
fn a_bare_port_serves_python_clients_over_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let port = support::free_port();
    let mut server = Serve::in_dir(dir.path())
        .address(&port.to_string())
        .file(&fs_path)
        .start();
    assert_eq!(server.port(), port);
    let out = scenario(&["commit", &format!("127.0.0.1:{port}"), "v4"]);
    assert!(out.contains("OK commit v4"), "{out}");
    if ipv6_loopback() {
        let out = scenario(&["commit", &format!("[::1]:{port}"), "v6"]);
        assert!(out.contains("OK commit v6"), "{out}");
    } else {
        eprintln!("no IPv6 loopback here; the IPv6 half is skipped");
    }
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_colon_port_in_the_configuration_listens_on_both_families() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = support::free_port();
    let conf = support::write_config(
        d,
        "zeo.toml",
        &format!(
            "[zeo]\naddress = \":{port}\"\n[storages.1]\npath = \"var/Data.fs\"\n\
             [eventlog]\npath = \"STDERR\"\n"
        ),
    );
    let mut server = Serve::in_dir(d).config(&conf).start();
    assert_eq!(greeting(&format!("127.0.0.1:{port}")).unwrap(), b"Z5");
    if ipv6_loopback() {
        assert_eq!(greeting(&format!("[::1]:{port}")).unwrap(), b"Z5");
    }
    assert_eq!(server.terminate(), 0);
}

#[test]
fn explicit_hosts_listen_only_where_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    let port = server.port();
    assert_eq!(greeting(&format!("127.0.0.1:{port}")).unwrap(), b"Z5");
    if ipv6_loopback() {
        assert!(greeting(&format!("[::1]:{port}")).is_err());
        let mut v6 = Serve::in_dir(dir.path())
            .address("[::1]:0")
            .file(&dir.path().join("v6.fs"))
            .start();
        assert_eq!(greeting(&format!("[::1]:{}", v6.port())).unwrap(), b"Z5");
        assert!(greeting(&format!("127.0.0.1:{}", v6.port())).is_err());
        assert_eq!(v6.terminate(), 0);
    }
    assert_eq!(server.terminate(), 0);
}

// ---------------------------------------------------------------------------------------------
// TLS with a password-protected private key
// ---------------------------------------------------------------------------------------------

/// The shared certificate rig with the server key encrypted, as an administrator would
/// generate it (PKCS#8, PBES2 PBKDF2-HMAC-SHA256 AES-256-CBC), passphrase in `key.pass`; and
/// for [`reencrypt`] and the mistakes, `out.pass` (the same) and `wrong.pass`. None without
/// openssl.
fn tls_fixture(d: &Path) -> Option<Certs> {
    let certs = tls::make_certs(d, Some("correct horse battery"))?;
    // openssl reads the second line when -passin and -passout name the same file.
    fs::write(d.join("out.pass"), "correct horse battery\n").unwrap();
    fs::write(d.join("wrong.pass"), "incorrect horse\n").unwrap();
    Some(certs)
}

/// The server key re-encrypted in another form: `openssl ARGS -in server.key -out NAME`.
fn reencrypt(d: &Path, name: &str, args: &[&str]) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "-in",
        "server.key",
        "-passin",
        "file:key.pass",
        "-passout",
        "file:out.pass",
        "-out",
        name,
    ]);
    tls::openssl(d, &all);
}

/// An instance configuration serving TLS with `key` and, if given, `key-password-file`.
fn tls_toml(d: &Path, name: &str, key: &str, password_file: Option<&str>) -> PathBuf {
    let pw = password_file.map_or(String::new(), |p| format!("key-password-file = \"{p}\"\n"));
    support::write_config(
        d,
        name,
        &format!(
            "[zeo]\naddress = \"127.0.0.1:0\"\npid-file = \"var/{name}.pid\"\n[zeo.tls]\n\
             certificate = \"server.pem\"\nkey = \"{key}\"\n{pw}authenticate = \"ca.pem\"\n\
             [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n"
        ),
    )
}

#[test]
fn encrypted_keys_serve_python_tls_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(certs) = tls_fixture(d) else { return };
    reencrypt(
        d,
        "scrypt.key",
        &["pkcs8", "-topk8", "-v2", "aes-128-cbc", "-scrypt"],
    );
    reencrypt(
        d,
        "sha1-3des.key",
        &["pkcs8", "-topk8", "-v2", "des3", "-v2prf", "hmacWithSHA1"],
    );
    reencrypt(d, "legacy-aes.key", &["rsa", "-aes128", "-traditional"]);
    reencrypt(d, "legacy-3des.key", &["rsa", "-des3", "-traditional"]);
    let keys = [
        "server.key",
        "scrypt.key",
        "sha1-3des.key",
        "legacy-aes.key",
        "legacy-3des.key",
    ];
    // What runzeo's ssl module accepts...
    let mut args = vec![
        "python_loads_keys".to_string(),
        s(&certs.server_cert).to_string(),
        s(certs.key_pass.as_ref().expect("a passphrase")).to_string(),
    ];
    args.extend(keys.iter().map(|k| s(&d.join(k)).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = scenario(&args);
    assert!(out.contains("OK python_loads_keys 5"), "{out}");
    // ...zodbctl serves with, to real ZEO clients.
    let (ca, cert, ckey) = (&certs.ca, &certs.client_cert, &certs.client_key);
    for key in keys {
        let conf = tls_toml(d, &format!("{key}.toml"), key, Some("key.pass"));
        let mut server = Serve::in_dir(d).config(&conf).start();
        let addr = server.addr();
        if key == "server.key" {
            // Mutual TLS still: no client certificate, no connection.
            let out = scenario(&["tls", &addr, s(ca), s(cert), s(ckey)]);
            assert!(out.contains("OK tls"), "{out}");
            // A ClientStorage configured as in zope.conf: <clientstorage> with <ssl>.
            let out = scenario(&["tls_zconfig", &addr, s(ca), s(cert), s(ckey)]);
            assert!(out.contains("OK tls_zconfig"), "{out}");
        } else {
            let out = scenario(&["tls_commit", &addr, s(ca), s(cert), s(ckey)]);
            assert!(out.contains("OK tls_commit"), "{key}: {out}");
        }
        assert_eq!(server.terminate(), 0, "{key}");
    }
}

#[test]
fn zeos_own_password_protected_test_key() {
    // ZEO's test_ssl_pw: serverpw_key.pem in the traditional form (DES-EDE3-CBC), passphrase
    // from ZEO.tests.testssl.pwfunc, here in a file.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = scenario(&["zeo_tests_dir"]);
    let certs = Path::new(certs.trim());
    let key = fs::read_to_string(certs.join("serverpw_key.pem")).unwrap();
    assert!(key.contains("DEK-Info: DES-EDE3-CBC"), "{key}");
    fs::write(d.join("pw"), "1234\n").unwrap();
    let conf = support::write_config(
        d,
        "zeo.toml",
        &format!(
            "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\
             key-password-file = \"pw\"\nauthenticate = \"{}\"\n\
             [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
            certs.join("serverpw.pem").display(),
            certs.join("serverpw_key.pem").display(),
            certs.join("client.pem").display(),
        ),
    );
    let mut server = Serve::in_dir(d).config(&conf).start();
    let out = scenario(&[
        "tls_commit",
        &server.addr(),
        s(&certs.join("serverpw.pem")),
        s(&certs.join("client.pem")),
        s(&certs.join("client_key.pem")),
    ]);
    assert!(out.contains("OK tls_commit"), "{out}");
    assert_eq!(server.terminate(), 0);
}

/// `zodbctl serve -C CONF`, expected to refuse to start: its output.
fn refused(conf: &Path) -> String {
    let out = Serve::in_dir(conf.parent().expect("a directory"))
        .config(conf)
        .run();
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("listening on"), "{text}");
    text
}

#[test]
fn key_password_mistakes_are_usage_errors_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(certs) = tls_fixture(d) else { return };
    let key = &certs.server_key;

    let text = refused(&tls_toml(d, "wrong.toml", "server.key", Some("wrong.pass")));
    assert!(text.contains("wrong passphrase"), "{text}");
    assert!(text.contains(s(key)), "{text}");
    assert!(text.contains("PBKDF2-HMAC-SHA256 AES-256-CBC"), "{text}");

    reencrypt(d, "legacy.key", &["rsa", "-aes256", "-traditional"]);
    let text = refused(&tls_toml(
        d,
        "wrong2.toml",
        "legacy.key",
        Some("wrong.pass"),
    ));
    assert!(text.contains("wrong passphrase"), "{text}");
    assert!(text.contains(s(&d.join("legacy.key"))), "{text}");

    let text = refused(&tls_toml(d, "none.toml", "server.key", None));
    assert!(text.contains("is encrypted"), "{text}");
    assert!(text.contains("key-password-file"), "{text}");
    assert!(text.contains(s(key)), "{text}");

    let text = refused(&tls_toml(
        d,
        "missing.toml",
        "server.key",
        Some("nope.pass"),
    ));
    assert!(text.contains(s(&d.join("nope.pass"))), "{text}");

    fs::write(d.join("empty.pass"), "\n").unwrap();
    let text = refused(&tls_toml(d, "empty.toml", "server.key", Some("empty.pass")));
    assert!(text.contains("is empty"), "{text}");

    // PKCS#12 PBE, OpenSSL 1.0's `pkcs8 -topk8` default: refused with the conversion.
    reencrypt(d, "pbe.key", &["pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES"]);
    let text = refused(&tls_toml(d, "pbe.toml", "pbe.key", Some("key.pass")));
    assert!(text.contains("pbeWithSHAAnd3-KeyTripleDES-CBC"), "{text}");
    assert!(
        text.contains("openssl pkcs8 -topk8 -v2 aes-256-cbc"),
        "{text}"
    );

    // A key that does not belong to the certificate.
    let text = refused(&tls_toml(d, "mismatch.toml", "client.key", None));
    assert!(text.contains("do not match"), "{text}");

    // Unknown keys in [zeo.tls] are errors with file and line.
    let conf = d.join("typo.toml");
    fs::write(
        &conf,
        "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"server.pem\"\n\
         key-pasword-file = \"key.pass\"\nauthenticate = \"ca.pem\"\n",
    )
    .unwrap();
    let text = refused(&conf);
    assert!(text.contains("typo.toml:5"), "{text}");
    assert!(text.contains("key-pasword-file"), "{text}");
}

#[test]
fn encrypted_ec_keys_in_both_forms() {
    if !tls::have_openssl() {
        eprintln!("openssl is not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("key.pass"), "ec pass\n").unwrap();
    fs::write(d.join("out.pass"), "ec pass\n").unwrap();
    // A self-signed P-256 certificate whose key is written encrypted (PKCS#8), and the same
    // key in OpenSSL's traditional SEC1 form (`EC PRIVATE KEY` with DEK-Info).
    tls::openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "ec.key",
            "-passout",
            "file:key.pass",
            "-out",
            "ec.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
    );
    tls::openssl(
        d,
        &[
            "ec",
            "-aes256",
            "-in",
            "ec.key",
            "-passin",
            "file:key.pass",
            "-passout",
            "file:out.pass",
            "-out",
            "ec-legacy.key",
        ],
    );
    assert!(
        fs::read_to_string(d.join("ec.key"))
            .unwrap()
            .contains("BEGIN ENCRYPTED PRIVATE KEY")
    );
    let legacy = fs::read_to_string(d.join("ec-legacy.key")).unwrap();
    assert!(legacy.contains("BEGIN EC PRIVATE KEY") && legacy.contains("DEK-Info: AES-256-CBC"));
    for key in ["ec.key", "ec-legacy.key"] {
        let conf = support::write_config(
            d,
            &format!("{key}.toml"),
            &format!(
                "[zeo]\naddress = \"127.0.0.1:0\"\npid-file = \"var/{key}.pid\"\n[zeo.tls]\n\
                 certificate = \"ec.pem\"\nkey = \"{key}\"\nkey-password-file = \"key.pass\"\n\
                 authenticate = \"ec.pem\"\n[storages.1]\npath = \"var/Data.fs\"\n\
                 [eventlog]\npath = \"STDERR\"\n"
            ),
        );
        let mut server = Serve::in_dir(d).config(&conf).start();
        assert_eq!(server.terminate(), 0, "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// X.509 version 1 client certificates
// ---------------------------------------------------------------------------------------------

#[test]
fn pinned_v1_client_certificates_serve_python_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(certs) = tls::make_certs(d, None) else {
        return;
    };
    // Self-signed and listed in `authenticate`, as ZEO's examples set clients up.
    let Some((pinned, pinned_key)) = tls::make_v1_cert(d, "pinned", None, "2") else {
        return;
    };
    // Signed by the CA in `authenticate`, itself not listed: webpki cannot take it.
    let Some((chained, chained_key)) = tls::make_v1_cert(d, "chained", Some(&certs), "2") else {
        return;
    };
    // Pinned too, but expired (OpenSSL checks the dates of a certificate it finds in its
    // trust store).
    let Some((expired, expired_key)) = tls::make_v1_cert(d, "expired", None, "0") else {
        return;
    };
    // Self-signed and listed nowhere.
    let Some((stranger, stranger_key)) = tls::make_v1_cert(d, "stranger", None, "2") else {
        return;
    };
    // `authenticate` as a bundle: the CA, then the pinned certificates.
    let bundle = [&certs.ca, &pinned, &expired].map(|p| fs::read_to_string(p).unwrap());
    fs::write(d.join("auth.pem"), bundle.concat()).unwrap();
    let conf = support::write_config(
        d,
        "zeo.toml",
        "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"server.pem\"\n\
         key = \"server.key\"\nauthenticate = \"auth.pem\"\n\
         [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
    );
    let mut server = Serve::in_dir(d).config(&conf).start();
    let addr = server.addr();
    let ca = s(&certs.ca);

    // A real ZEO.DB with the pinned v1 certificate commits and reads back, over TLS 1.3 (what
    // Python and zodbctl agree on) and over TLS 1.2.
    let out = scenario(&["tls_commit", &addr, ca, s(&pinned), s(&pinned_key)]);
    assert!(out.contains("OK tls_commit"), "{out}");
    let out = scenario(&["tls_commit", &addr, ca, s(&pinned), s(&pinned_key), "1.2"]);
    assert!(out.contains("OK tls_commit TLSv1.2"), "{out}");
    // The CA-signed version 3 client still chains.
    let (cert, key) = (s(&certs.client_cert), s(&certs.client_key));
    let out = scenario(&["tls_commit", &addr, ca, cert, key]);
    assert!(out.contains("OK tls_commit"), "{out}");

    // A certificate not in `authenticate` is refused, and the server's log says why: a
    // stranger, and a v1 certificate that only chains to the CA (Python's OpenSSL would take
    // that one; webpki cannot, see docs/configuration.md).
    let reason = "the client certificate is X.509 version 1 and not listed in `authenticate`: \
                  a version 1 certificate is accepted only when it is itself listed there \
                  (pinned), not through a chain to a CA";
    for (cert, key) in [(&stranger, &stranger_key), (&chained, &chained_key)] {
        let before = server.log().len();
        let out = scenario(&["tls_refused", &addr, ca, s(cert), s(key)]);
        assert!(out.contains("OK tls_refused"), "{out}");
        let log = server.log();
        assert!(log[before..].contains(reason), "{}: {log}", s(cert));
    }
    let before = server.log().len();
    let out = scenario(&["tls_refused", &addr, ca, s(&expired), s(&expired_key)]);
    assert!(out.contains("OK tls_refused"), "{out}");
    let log = server.log();
    assert!(log[before..].contains("certificate expired"), "{log}");
    assert_eq!(server.terminate(), 0, "{log}");
}

#[test]
fn a_v1_server_certificate_serves_python_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(certs) = tls::make_certs(d, None) else {
        return;
    };
    let Some((server_cert, _)) = tls::make_v1_cert(d, "v1server", None, "2") else {
        return;
    };
    let conf = support::write_config(
        d,
        "zeo.toml",
        "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"v1server.pem\"\n\
         key = \"v1server.key\"\nauthenticate = \"ca.pem\"\n\
         [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
    );
    let mut server = Serve::in_dir(d).config(&conf).start();
    // The client trusts the server's certificate itself, as ZEO clients are set up.
    let (cert, key) = (s(&certs.client_cert), s(&certs.client_key));
    let out = scenario(&["tls_commit", &server.addr(), s(&server_cert), cert, key]);
    assert!(out.contains("OK tls_commit"), "{out}");
    assert_eq!(server.terminate(), 0);
    // The server's key is still checked against its certificate.
    let bad = support::write_config(
        d,
        "bad.toml",
        "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"v1server.pem\"\n\
         key = \"client.key\"\nauthenticate = \"ca.pem\"\n",
    );
    let text = refused(&bad);
    assert!(text.contains("do not match"), "{text}");
}
