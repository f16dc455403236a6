//! What the dashboard asks servers and the kernel: ZEO status maps (zeo-protocol.md §7.5), the
//! replication status on a server's admin socket, and a process's CPU time and RSS from
//! `/proc`.
//!
//! A server is watched through one long-lived read-only connection per storage, on which each
//! refresh calls `server_status`. The `ruok` handshake (§1.4, what zeo-nagios uses) would need
//! no `register`, but it is a new connection each time, and runzeo and `zodbctl serve` both log
//! every connection: a dashboard refreshing each second would write 3600 lines an hour into
//! the server log. So `ruok` is only used to learn the storage names of a server given by
//! address, once per (re)connection. The status map counts the dashboard's own connection in
//! `connections`; [`ZeoWatch`] takes it out again.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::zeo::client::{Client, ClientError};
use crate::zeo::wire::Value;

pub type StatusMap = serde_json::Map<String, serde_json::Value>;

/// The storages of one server, each watched through its own registered connection.
pub struct ZeoWatch {
    addr: String,
    /// Storage names: from the configuration, or learnt with `ruok`.
    names: Vec<String>,
    configured: bool,
    conns: BTreeMap<String, Client>,
}

impl ZeoWatch {
    /// `names` empty: ask the server which storages it has.
    pub fn new(addr: &str, names: Vec<String>) -> ZeoWatch {
        ZeoWatch {
            addr: addr.to_owned(),
            configured: !names.is_empty(),
            names,
            conns: BTreeMap::new(),
        }
    }

    /// Each storage's status map; `Err` says why the server could not be asked (then every
    /// connection is dropped and the next call starts afresh).
    pub fn status(&mut self, timeout: Duration) -> Result<BTreeMap<String, StatusMap>, String> {
        let r = self.try_status(timeout);
        if r.is_err() {
            self.conns.clear();
            if !self.configured {
                self.names.clear();
            }
        }
        r
    }

    fn try_status(&mut self, timeout: Duration) -> Result<BTreeMap<String, StatusMap>, String> {
        if self.names.is_empty() {
            // Learn the names; this answer is this refresh's figures too.
            let m = ruok(&self.addr, timeout)?;
            self.names = m.keys().cloned().collect();
            return Ok(m
                .into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::Object(o) => Some((k, o)),
                    _ => None,
                })
                .collect());
        }
        let mut out = BTreeMap::new();
        for name in &self.names {
            let conn = match self.conns.get_mut(name) {
                Some(c) => c,
                None => {
                    let mut c = Client::connect(&self.addr, timeout).map_err(|e| match e {
                        ClientError::Connect { source, .. } => format!("cannot connect: {source}"),
                        e => e.to_string(),
                    })?;
                    c.register(name, true)
                        .map_err(|e| format!("register {name:?}: {e}"))?;
                    self.conns.entry(name.clone()).or_insert(c)
                }
            };
            let v = conn
                .call("server_status", &[])
                .map_err(|e| format!("server_status of {name:?}: {e}"))?;
            let serde_json::Value::Object(mut map) = to_json(&v) else {
                return Err(format!("server_status of {name:?} is not a map"));
            };
            if let Some(n) = map.get("connections").and_then(serde_json::Value::as_u64) {
                map.insert("connections".into(), n.saturating_sub(1).into());
            }
            out.insert(name.clone(), map);
        }
        Ok(out)
    }
}

/// A status value as JSON (the shape `ruok` gives it).
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Str(s) => J::String(s.clone()),
        Value::List(items) | Value::Tuple(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Global { module, name, .. } => J::String(format!("{module}.{name}")),
    }
}

/// A `ruok` answer is a few hundred bytes per storage; anything past this is not one.
const MAX_FRAME: usize = 16 << 20;

/// The per-storage status maps of the server at `addr` (`HOST:PORT`, `[V6]:PORT` or a Unix
/// socket path), keyed by storage name; `Err` says why there is none, in words for the
/// dashboard's banner.
pub fn ruok(addr: &str, timeout: Duration) -> Result<StatusMap, String> {
    let text = if addr.contains('/') {
        let mut s = UnixStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        exchange(&mut s)?
    } else {
        let mut last = None;
        let mut found = None;
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    found = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut s = found.ok_or_else(|| match last {
            Some(e) => format!("cannot connect: {e}"),
            None => format!("{addr} resolves to no address"),
        })?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        exchange(&mut s)?
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) | Err(_) => Err("the server's ruok answer is not a JSON object".into()),
    }
}

/// Send `ruok`, skip the server's announcement, return the status frame.
fn exchange(s: &mut (impl Read + Write)) -> Result<Vec<u8>, String> {
    let mut hello = Vec::with_capacity(8);
    hello.extend_from_slice(&4u32.to_be_bytes());
    hello.extend_from_slice(b"ruok");
    s.write_all(&hello).map_err(io_words)?;
    let announcement = read_frame(s)?;
    if !(announcement.len() == 2 && matches!(announcement[0], b'Z' | b'M')) {
        return Err("not a ZEO 5 server (unexpected handshake)".into());
    }
    read_frame(s)
}

fn read_frame(s: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(io_words)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("the server sent a {len}-byte frame to ruok"));
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).map_err(io_words)?;
    Ok(buf)
}

fn io_words(e: std::io::Error) -> String {
    match e.kind() {
        ErrorKind::UnexpectedEof => "the server closed the connection (TLS, or not ZEO?)".into(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "no answer (timed out)".into(),
        _ => e.to_string(),
    }
}

/// The replication status of a server's replicated storages, by storage name, from its
/// admin socket (`{"cmd": "status"}`); `None` when the socket does not answer (a server not
/// running, or one without replication). Asked on the collector's thread, never the UI's.
pub fn replication(
    admin_socket: &std::path::Path,
    timeout: Duration,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    crate::metrics::replication::fetch(admin_socket, timeout)
}

/// CPU time (user + system, in clock ticks) and resident set size (bytes) of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    pub ticks: u64,
    pub rss: u64,
}

/// Read `/proc/PID/stat` and `/proc/PID/statm`; `None` when the process is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcSample {
        ticks,
        rss: pages.saturating_mul(page_size()),
    })
}

/// utime + stime (fields 14 and 15). The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the name come field 3 (state) onwards: utime is the 12th of those.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(line), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = proc_sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(proc_sample(u32::MAX).is_none());
    }

    #[test]
    fn ruok_of_nothing_says_why() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = ruok(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
    }

    #[test]
    fn ruok_reads_the_second_frame() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 8];
            c.read_exact(&mut req).unwrap();
            assert_eq!(&req[4..], b"ruok");
            let body = br#"{"1": {"commits": 3, "lock_time": null}}"#;
            let mut out = Vec::new();
            out.extend_from_slice(&2u32.to_be_bytes());
            out.extend_from_slice(b"M5");
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
            c.write_all(&out).unwrap();
        });
        let m = ruok(&addr, Duration::from_secs(2)).unwrap();
        server.join().unwrap();
        assert_eq!(m["1"]["commits"], 3);
    }
}
