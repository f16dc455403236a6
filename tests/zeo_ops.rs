//! Operational gaps of `zodbctl serve` an administrator would hit, proved with real Python
//! ZEO clients: fractional transaction timeouts (`-t 0.5`, `transaction-timeout = 1.5`),
//! bare-port addresses listening on IPv4 and IPv6, and TLS with a password-protected key.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SCENARIOS: &str = include_str!("python/zeo_ops.py");

/// A running `zodbctl serve`, stopped (SIGKILL) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Server {
    /// Start `zodbctl serve ARGS` (which name the address) and wait for its "listening on"
    /// line; the port is read from it when the address is `127.0.0.1:0`.
    fn start(dir: &Path, args: &[&str]) -> Server {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("server-{n}.log"));
        let out = fs::File::create(&log).expect("create log");
        let child = support::zodbctl()
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn zodbctl serve");
        let mut s = Server {
            child,
            log,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = s.log_text();
            if let Some(i) = text.find("listening on ('") {
                let rest = &text[i..];
                if let Some(end) = rest.find(')') {
                    let port = rest[..end].rsplit(", ").next().unwrap_or("");
                    s.port = port.parse().expect("port in the listening line");
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("server exited with {st}:\n{text}");
            }
            assert!(Instant::now() < deadline, "server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the exit code.
    fn terminate(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let text = self.log_text();
                assert!(!text.contains("panicked"), "server panicked:\n{text}");
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "server ignored SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(args: &[&str]) -> String {
    let out = support::run_python(SCENARIOS, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------
// Transaction timeout in fractional seconds
// ---------------------------------------------------------------------------------------------

/// How long the scenario's hog held the lock before the server dropped it.
fn held(out: &str) -> f64 {
    let i = out.find("held=").expect("held= in the output") + "held=".len();
    out[i..].trim().parse().expect("a number of seconds")
}

#[test]
fn fractional_timeout_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let server = Server::start(
        dir.path(),
        &["-a", "127.0.0.1:0", "-f", s(&fs_path), "-t", "0.5"],
    );
    let addr = format!("127.0.0.1:{}", server.port);
    let out = scenario(&["txn_timeout", &addr]);
    assert!(out.contains("OK txn_timeout"), "{out}");
    // The other commit waited for the half second (the lock holder was not dropped at once,
    // and the value was not truncated): a lower bound, which the timeout guarantees.
    assert!(held(&out) >= 0.4, "{out}");
    let log = server.log_text();
    assert!(
        log.contains("Transaction timeout after 0.5 seconds"),
        "{log}"
    );
    assert_eq!(server.terminate(), 0);
}

#[test]
fn fractional_timeout_from_the_toml_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("etc/zeo.toml"),
        "[zeo]\naddress = \"127.0.0.1:0\"\ntransaction-timeout = 1.5\n\
         [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
    )
    .unwrap();
    let server = Server::start(d, &["-C", s(&d.join("etc/zeo.toml"))]);
    let addr = format!("127.0.0.1:{}", server.port);
    let out = scenario(&["txn_timeout", &addr]);
    assert!(out.contains("OK txn_timeout"), "{out}");
    assert!(held(&out) >= 1.4, "{out}");
    let log = server.log_text();
    assert!(
        log.contains("Transaction timeout after 1.5 seconds"),
        "{log}"
    );
    assert_eq!(server.terminate(), 0);
}

#[test]
fn zero_negative_and_garbage_timeouts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let sock = dir.path().join("zeo.sock");
    for bad in ["0", "0.0", "-1", "-0.5", "abc", "inf", "nan"] {
        let out = support::zodbctl()
            .args(["serve", "-a", s(&sock), "-f", s(&fs_path), "-t", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
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
    let out = support::zodbctl()
        .args(["serve", "-C", s(&dir.path().join("zeo.toml"))])
        .stdin(Stdio::null())
        .output()
        .unwrap();
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
    let server = Server::start(dir.path(), &["-a", &port.to_string(), "-f", s(&fs_path)]);
    assert_eq!(server.port, port);
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
    fs::create_dir_all(d.join("var")).unwrap();
    let port = support::free_port();
    fs::write(
        d.join("zeo.toml"),
        format!(
            "[zeo]\naddress = \":{port}\"\n[storages.1]\npath = \"var/Data.fs\"\n\
             [eventlog]\npath = \"STDERR\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(d, &["-C", s(&d.join("zeo.toml"))]);
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
    let server = Server::start(dir.path(), &["-a", "127.0.0.1:0", "-f", s(&fs_path)]);
    let port = server.port;
    assert_eq!(greeting(&format!("127.0.0.1:{port}")).unwrap(), b"Z5");
    if ipv6_loopback() {
        assert!(greeting(&format!("[::1]:{port}")).is_err());
        let v6 = Server::start(
            dir.path(),
            &["-a", "[::1]:0", "-f", s(&dir.path().join("v6.fs"))],
        );
        assert_eq!(greeting(&format!("[::1]:{}", v6.port)).unwrap(), b"Z5");
        assert!(greeting(&format!("127.0.0.1:{}", v6.port)).is_err());
        assert_eq!(v6.terminate(), 0);
    }
    assert_eq!(server.terminate(), 0);
}

// ---------------------------------------------------------------------------------------------
// TLS with a password-protected private key
// ---------------------------------------------------------------------------------------------

/// Run the `openssl` CLI in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        support::output_text(&out)
    );
}

fn have_openssl() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA, a client certificate it signed, and a server certificate whose key was generated
/// encrypted, as an administrator would (`genpkey -aes-256-cbc -pass file:`): `server.key`
/// (PKCS#8, PBES2 PBKDF2-HMAC-SHA256 AES-256-CBC), passphrase in `key.pass`.
fn tls_fixture(d: &Path) {
    fs::write(d.join("key.pass"), "correct horse battery\n").unwrap();
    // openssl reads the second line when -passin and -passout name the same file.
    fs::write(d.join("out.pass"), "correct horse battery\n").unwrap();
    fs::write(d.join("wrong.pass"), "incorrect horse\n").unwrap();
    fs::write(
        d.join("cext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    fs::write(
        d.join("sext.cnf"),
        // Complete enough for ZEO's client <ssl>, which verifies with VERIFY_X509_STRICT.
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ca = [
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
        // ZEO's client <ssl> verifies with VERIFY_X509_STRICT, which wants key usage on a CA.
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(d, &ca);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-aes-256-cbc",
            "-pass",
            "file:key.pass",
            "-out",
            "server.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-passin",
            "file:key.pass",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "sext.cnf",
        ],
    );
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
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "cext.cnf",
        ],
    );
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
    openssl(d, &all);
}

/// An instance configuration serving TLS with `key` and, if given, `key-password-file`.
fn tls_toml(d: &Path, name: &str, key: &str, password_file: Option<&str>) -> PathBuf {
    fs::create_dir_all(d.join("var")).unwrap();
    let pw = password_file.map_or(String::new(), |p| format!("key-password-file = \"{p}\"\n"));
    let path = d.join(name);
    fs::write(
        &path,
        format!(
            "[zeo]\naddress = \"127.0.0.1:0\"\npid-file = \"var/{name}.pid\"\n[zeo.tls]\n\
             certificate = \"server.pem\"\nkey = \"{key}\"\n{pw}authenticate = \"ca.pem\"\n\
             [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn encrypted_keys_serve_python_tls_clients() {
    if !have_openssl() {
        eprintln!("openssl is not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_fixture(d);
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
        s(&d.join("server.pem")).to_string(),
        s(&d.join("key.pass")).to_string(),
    ];
    args.extend(keys.iter().map(|k| s(&d.join(k)).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = scenario(&args);
    assert!(out.contains("OK python_loads_keys 5"), "{out}");
    // ...zodbctl serves with, to real ZEO clients.
    let (ca, cert, ckey) = (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"));
    for key in keys {
        let conf = tls_toml(d, &format!("{key}.toml"), key, Some("key.pass"));
        let server = Server::start(d, &["-C", s(&conf)]);
        let addr = format!("127.0.0.1:{}", server.port);
        if key == "server.key" {
            // Mutual TLS still: no client certificate, no connection.
            let out = scenario(&["tls", &addr, s(&ca), s(&cert), s(&ckey)]);
            assert!(out.contains("OK tls"), "{out}");
            // A ClientStorage configured as in zope.conf: <clientstorage> with <ssl>.
            let out = scenario(&["tls_zconfig", &addr, s(&ca), s(&cert), s(&ckey)]);
            assert!(out.contains("OK tls_zconfig"), "{out}");
        } else {
            let out = scenario(&["tls_commit", &addr, s(&ca), s(&cert), s(&ckey)]);
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
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("zeo.toml"),
        format!(
            "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\
             key-password-file = \"pw\"\nauthenticate = \"{}\"\n\
             [storages.1]\npath = \"var/Data.fs\"\n[eventlog]\npath = \"STDERR\"\n",
            certs.join("serverpw.pem").display(),
            certs.join("serverpw_key.pem").display(),
            certs.join("client.pem").display(),
        ),
    )
    .unwrap();
    let server = Server::start(d, &["-C", s(&d.join("zeo.toml"))]);
    let out = scenario(&[
        "tls_commit",
        &format!("127.0.0.1:{}", server.port),
        s(&certs.join("serverpw.pem")),
        s(&certs.join("client.pem")),
        s(&certs.join("client_key.pem")),
    ]);
    assert!(out.contains("OK tls_commit"), "{out}");
    assert_eq!(server.terminate(), 0);
}

/// `zodbctl serve -C CONF`, expected to refuse to start: its output.
fn refused(conf: &Path) -> String {
    let out = support::zodbctl()
        .args(["serve", "-C", s(conf)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("listening on"), "{text}");
    text
}

#[test]
fn key_password_mistakes_are_usage_errors_before_listening() {
    if !have_openssl() {
        eprintln!("openssl is not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_fixture(d);
    let key = d.join("server.key");

    let text = refused(&tls_toml(d, "wrong.toml", "server.key", Some("wrong.pass")));
    assert!(text.contains("wrong passphrase"), "{text}");
    assert!(text.contains(s(&key)), "{text}");
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
    assert!(text.contains(s(&key)), "{text}");

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
    if !have_openssl() {
        eprintln!("openssl is not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("key.pass"), "ec pass\n").unwrap();
    fs::write(d.join("out.pass"), "ec pass\n").unwrap();
    // A self-signed P-256 certificate whose key is written encrypted (PKCS#8), and the same
    // key in OpenSSL's traditional SEC1 form (`EC PRIVATE KEY` with DEK-Info).
    openssl(
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
    openssl(
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
    fs::create_dir_all(d.join("var")).unwrap();
    for key in ["ec.key", "ec-legacy.key"] {
        let conf = d.join(format!("{key}.toml"));
        fs::write(
            &conf,
            format!(
                "[zeo]\naddress = \"127.0.0.1:0\"\npid-file = \"var/{key}.pid\"\n[zeo.tls]\n\
                 certificate = \"ec.pem\"\nkey = \"{key}\"\nkey-password-file = \"key.pass\"\n\
                 authenticate = \"ec.pem\"\n[storages.1]\npath = \"var/Data.fs\"\n\
                 [eventlog]\npath = \"STDERR\"\n"
            ),
        )
        .unwrap();
        let server = Server::start(d, &["-C", s(&conf)]);
        assert_eq!(server.terminate(), 0, "{key}");
    }
}
