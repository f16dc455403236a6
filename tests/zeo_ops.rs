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
