//! The server's effective configuration, built from the command line (runzeo-style flags) or
//! from an instance configuration file.

use std::path::PathBuf;
use std::time::Duration;

use super::wire::Encoding;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// Host (empty = all interfaces) and port.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parse a runzeo address: `HOST:PORT`, `[V6]:PORT`, `PORT` or `:PORT` (all interfaces), or a
/// Unix socket path (anything containing `/`).
pub fn parse_address(s: &str) -> Result<ListenAddr, String> {
    let s = s.trim();
    if s.contains('/') {
        return Ok(ListenAddr::Unix(PathBuf::from(s)));
    }
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("bad port {p:?} in address {s:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in address {s:?}"))?;
        let p = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("address {s:?} needs :PORT after the IPv6 host"))?;
        return Ok(ListenAddr::Tcp {
            host: host.to_string(),
            port: port(p)?,
        });
    }
    match s.rsplit_once(':') {
        Some((host, p)) => Ok(ListenAddr::Tcp {
            host: host.to_string(),
            port: port(p)?,
        }),
        None => Ok(ListenAddr::Tcp {
            host: String::new(),
            port: port(s)?,
        }),
    }
}

/// Parse runzeo's `-t/--timeout`: seconds as a decimal number, fractions allowed (runzeo
/// converts it with Python's `float`). Zero, negative, infinite and NaN values are refused:
/// runzeo would accept them, but 0 or less times every transaction out at once, and "no
/// timeout" is said by leaving the option out.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let bad = || {
        "the transaction timeout is a number of seconds greater than 0, such as 30 or 2.5 \
         (leave the option out for no timeout)"
            .to_string()
    };
    let v: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v > 0.0) {
        return Err(bad());
    }
    match Duration::try_from_secs_f64(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(bad()),
    }
}

#[derive(Debug, Clone)]
pub enum StorageKind {
    File {
        path: PathBuf,
        blob_dir: Option<PathBuf>,
        read_only: bool,
        /// Pack options (`pack-gc`, `pack-keep-old`).
        pack_gc: bool,
        pack_keep_old: bool,
        /// This storage is a replica of the same-named storage of the server whose
        /// replication listener this is: `HOST:PORT` or a Unix socket path.
        replicate_from: Option<String>,
    },
    /// The non-historical session storage: superseded revisions live `history` long. With a
    /// `snapshot` file its contents survive a clean restart (and a crash, as of the last
    /// checkpoint, written every `checkpoint` while they change; zero: on stop only).
    Memory {
        history: Duration,
        snapshot: Option<PathBuf>,
        checkpoint: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub name: String,
    pub kind: StorageKind,
}

/// ZEO's `<ssl>` section: server certificate and key, and the CA that client certificates
/// must be signed by (ZEO TLS is mutual).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: Option<PathBuf>,
    /// A file whose first line is the passphrase of an encrypted key.
    pub key_password_file: Option<PathBuf>,
    pub authenticate: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub address: ListenAddr,
    pub storages: Vec<StorageConfig>,
    pub read_only: bool,
    pub encoding: Encoding,
    pub transaction_timeout: Option<Duration>,
    pub invalidation_queue_size: usize,
    pub invalidation_age: Option<f64>,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    /// Log level from the configuration (`ZODBCTL_LOG` overrides it).
    pub log_level: Option<String>,
    /// Largest accepted request frame.
    pub max_frame: usize,
    /// Network threads (shards); `None`: one per CPU.
    pub threads: Option<usize>,
    /// Largest amount of unsent output per connection before it is closed.
    pub max_outbuf: usize,
    pub tls: Option<TlsConfig>,
    /// Where the Prometheus endpoint listens (HOST:PORT); off when `None`.
    pub metrics: Option<String>,
    /// A second listener where every registration is read-only.
    pub read_only_address: Option<ListenAddr>,
    /// The admin socket (promote, resync, replication status).
    pub admin_socket: Option<PathBuf>,
    pub replication: ReplicationConfig,
}

/// `[replication] mode`: when a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// Once durable here.
    #[default]
    Async,
    /// Once a replica has it durable too.
    Sync,
}

/// `[replication] on-timeout`: what a sync commit does when no replica acknowledged in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Go on asynchronously (logged, shown in status).
    #[default]
    Degrade,
    /// Keep waiting.
    Block,
}

/// Default wait of a sync commit for a replica's acknowledgement.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Default interval between heartbeats on the replication connection.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// This server's side of replication: as a primary (`listen`) and how commits wait.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Where replicas connect; None: this server feeds no replica.
    pub listen: Option<ListenAddr>,
    pub mode: ReplicationMode,
    /// How long a sync commit waits for an acknowledgement (default 2 s).
    pub sync_timeout: Duration,
    pub on_timeout: OnTimeout,
    /// Between heartbeats (default 5 s).
    pub keep_alive: Duration,
    /// The other servers' replication addresses, asked at start whether a newer primary
    /// exists.
    pub peers: Vec<String>,
    /// `serve --resync`: a replica discards its copy and resynchronises in full on its
    /// first connection.
    pub resync: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: None,
            mode: ReplicationMode::Async,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            on_timeout: OnTimeout::Degrade,
            keep_alive: DEFAULT_KEEP_ALIVE,
            peers: Vec::new(),
            resync: false,
        }
    }
}

/// Default bound on a request frame: object records travel whole in one frame, and megabytes
/// are normal; larger values travel as blobs.
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;
/// Default bound on unsent output per connection.
pub const DEFAULT_MAX_OUTBUF: usize = 64 << 20;

impl ServerConfig {
    pub fn new(address: ListenAddr) -> Self {
        ServerConfig {
            address,
            storages: Vec::new(),
            read_only: false,
            encoding: Encoding::Pickle,
            transaction_timeout: None,
            invalidation_queue_size: 100,
            invalidation_age: None,
            pid_file: None,
            log_file: None,
            log_level: None,
            max_frame: DEFAULT_MAX_FRAME,
            threads: None,
            max_outbuf: DEFAULT_MAX_OUTBUF,
            tls: None,
            metrics: None,
            read_only_address: None,
            admin_socket: None,
            replication: ReplicationConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let tcp = |h: &str, p| ListenAddr::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(parse_address("8100").unwrap(), tcp("", 8100));
        assert_eq!(parse_address(":8100").unwrap(), tcp("", 8100));
        assert_eq!(
            parse_address("127.0.0.1:8100").unwrap(),
            tcp("127.0.0.1", 8100)
        );
        assert_eq!(parse_address("[::1]:8100").unwrap(), tcp("::1", 8100));
        assert_eq!(
            parse_address("var/zeo.sock").unwrap(),
            ListenAddr::Unix("var/zeo.sock".into())
        );
        assert!(parse_address("host:port").is_err());
        assert!(parse_address("[::1]8100").is_err());
    }

    #[test]
    fn timeouts_take_fractional_seconds() {
        assert_eq!(parse_timeout("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1e1"), Ok(Duration::from_secs(10)));
        for bad in [
            "0", "0.0", "-1", "-0.5", "inf", "nan", "", "abc", "5m", "1e300", "1e-12",
        ] {
            let e = parse_timeout(bad).unwrap_err();
            assert!(e.contains("greater than 0"), "{bad}: {e}");
        }
    }
}
