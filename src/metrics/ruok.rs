//! The `ruok` status request (zeo-protocol.md §7.5), as `zeo-nagios` makes it: connect, send
//! the `ruok` frame in place of a handshake, read the server's announcement and one JSON frame
//! mapping each storage name to its `server_status`. runzeo and `zodbctl serve` both answer it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use thiserror::Error;

/// Largest status frame read (a server with thousands of storages stays far below).
const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum RuokError {
    /// No connection; the text is Python's `OSError` form, as zeo-nagios prints it.
    #[error("Can't connect {0}")]
    Connect(String),
    #[error("the server's status answer could not be read: {0}")]
    Protocol(String),
}

/// Where to connect, parsed as zeo-nagios does: `[V6]:PORT`, `HOST:PORT`, else a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(String, u16),
    Unix(String),
}

impl Addr {
    pub fn parse(s: &str) -> Addr {
        let tcp = |host: &str, port: &str| {
            let ok = !host.is_empty()
                && !host.chars().any(char::is_whitespace)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| port.parse().ok().map(|p| Addr::Tcp(host.to_owned(), p)))
                .flatten()
        };
        if let Some(rest) = s.strip_prefix('[')
            && let Some((host, port)) = rest.rsplit_once("]:")
            && let Some(a) = tcp(host, port)
        {
            return a;
        }
        if let Some((host, port)) = s.rsplit_once(':')
            && let Some(a) = tcp(host, port)
        {
            return a;
        }
        Addr::Unix(s.to_owned())
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            Addr::Tcp(h, p) => write!(f, "{h}:{p}"),
            Addr::Unix(p) => f.write_str(p),
        }
    }
}

/// An OS error as Python's `str(OSError)` shows it: `[Errno 111] Connection refused`.
pub fn py_oserror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = std::io::Error::from_raw_os_error(code).to_string();
            let text = text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text)
                .to_owned();
            format!("[Errno {code}] {text}")
        }
        None => e.to_string(),
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(addr: &Addr, timeout: Duration) -> Result<Box<dyn Stream>, RuokError> {
    let fail = |e: std::io::Error| RuokError::Connect(py_oserror(&e));
    match addr {
        Addr::Tcp(host, port) => {
            let mut last = None;
            let addrs = (host.as_str(), *port).to_socket_addrs().map_err(|e| {
                // getaddrinfo failures have no errno; Python shows socket.gaierror's text.
                RuokError::Connect(format!("[Errno -2] {e}"))
            })?;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        s.set_read_timeout(Some(timeout)).map_err(fail)?;
                        s.set_write_timeout(Some(timeout)).map_err(fail)?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(fail(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
            })))
        }
        Addr::Unix(path) => {
            let s = UnixStream::connect(path).map_err(fail)?;
            s.set_read_timeout(Some(timeout)).map_err(fail)?;
            s.set_write_timeout(Some(timeout)).map_err(fail)?;
            Ok(Box::new(s))
        }
    }
}

fn frame(s: &mut dyn Stream) -> Result<Vec<u8>, RuokError> {
    let proto = |e: std::io::Error| RuokError::Protocol(e.to_string());
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(proto)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(RuokError::Protocol(format!("a frame of {n} bytes")));
    }
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).map_err(proto)?;
    Ok(buf)
}

/// Ask the server at `addr` for its storages' status.
pub fn ruok(
    addr: &Addr,
    timeout: Duration,
) -> Result<serde_json::Map<String, serde_json::Value>, RuokError> {
    let mut s = connect(addr, timeout)?;
    s.write_all(b"\x00\x00\x00\x04ruok")
        .map_err(|e| RuokError::Protocol(e.to_string()))?;
    let _announcement = frame(&mut *s)?;
    let status = frame(&mut *s)?;
    match serde_json::from_slice(&status) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => Err(RuokError::Protocol(format!("not a JSON object: {other}"))),
        Err(e) => Err(RuokError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_zeo_nagios_reads_them() {
        assert_eq!(
            Addr::parse("127.0.0.1:8100"),
            Addr::Tcp("127.0.0.1".into(), 8100)
        );
        assert_eq!(Addr::parse("[::1]:8100"), Addr::Tcp("::1".into(), 8100));
        assert_eq!(
            Addr::parse("var/zeo.sock"),
            Addr::Unix("var/zeo.sock".into())
        );
        assert_eq!(Addr::parse("host:port"), Addr::Unix("host:port".into()));
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(py_oserror(&e), "[Errno 111] Connection refused");
    }
}
