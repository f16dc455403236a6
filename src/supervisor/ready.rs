//! Readiness probes the manager runs after each spawn, and systemd's notify protocol.

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

/// How long one probe may take: the program runs on this host, so a healthy server answers
/// within milliseconds; a probe that stalls is retried rather than blocking the manager.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

/// Connect to `HOST:PORT`, `[V6]:PORT`, `PORT` (127.0.0.1) or a Unix socket path.
fn connect(addr: &str, timeout: Duration) -> io::Result<Stream> {
    if addr.contains('/') {
        let s = UnixStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        return Ok(Stream::Unix(s));
    }
    let target = if addr.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_owned()
    };
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
    for sa in target.to_socket_addrs()? {
        // A server bound to all interfaces is probed on loopback.
        let sa = if sa.ip().is_unspecified() {
            let mut local = sa;
            local.set_ip(if sa.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
            local
        } else {
            sa
        };
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                return Ok(Stream::Tcp(s));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The ZEO handshake: a ZEO 5 server speaks first with a sized frame (4-byte big-endian
/// length, then the protocol letter and version: `Z5` for pickle, `M5` for msgpack).
pub fn zeo_handshake(addr: &str) -> io::Result<String> {
    let mut s = connect(addr, PROBE_TIMEOUT)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > 64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a ZEO handshake (frame of {len} bytes)"),
        ));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    if !matches!(payload.first(), Some(b'Z' | b'M')) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a ZEO handshake",
        ));
    }
    Ok(String::from_utf8_lossy(&payload).into_owned())
}

/// A connection is accepted.
pub fn connects(addr: &str) -> io::Result<()> {
    connect(addr, PROBE_TIMEOUT).map(|_| ())
}

/// `GET` of an `http://HOST:PORT/PATH` URL gets an HTTP status line, whatever the status
/// (a Zope that answers 401 or 404 is up).
pub fn http_responds(url: &str) -> io::Result<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "only http:// URLs can be probed",
        )
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let mut s = connect(&addr, PROBE_TIMEOUT)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    match &mut s {
        Stream::Tcp(t) => {
            t.set_write_timeout(Some(PROBE_TIMEOUT))?;
            std::io::Write::write_all(t, request.as_bytes())?;
        }
        Stream::Unix(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a TCP address",
            ));
        }
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    if &head == b"HTTP/" {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP response",
        ))
    }
}

/// systemd's notify socket (`NOTIFY_SOCKET`), when the manager runs under `Type=notify`.
pub struct Notifier {
    sock: UnixDatagram,
    addr: String,
}

impl Notifier {
    pub fn from_env() -> Option<Notifier> {
        let addr = std::env::var("NOTIFY_SOCKET").ok()?;
        if addr.is_empty() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Send one state line such as `READY=1`; failures only matter to systemd, which then
    /// times the unit out, so they are reported but not fatal.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        if let Some(name) = self.addr.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            self.sock.send_to_addr(state.as_bytes(), &sa)?;
        } else {
            self.sock.send_to(state.as_bytes(), &self.addr)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn handshake_probe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"\x00\x00\x00\x02Z5").unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n").unwrap();
        });
        assert_eq!(zeo_handshake(&addr).unwrap(), "Z5");
        assert!(zeo_handshake(&addr).is_err());
        t.join().unwrap();
        assert!(connects("127.0.0.1:1").is_err());
    }

    #[test]
    fn http_probe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /ok HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.0 401 Unauthorized\r\n\r\n").unwrap();
        });
        http_responds(&format!("http://127.0.0.1:{port}/ok")).unwrap();
        t.join().unwrap();
        assert!(http_responds("https://x/").is_err());
    }

    #[test]
    fn notify_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: path.to_string_lossy().into_owned(),
        };
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 32];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }
}
