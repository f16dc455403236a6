//! The configuration model: what a server instance (`etc/zeo.toml`), a client instance
//! (`etc/client.toml`) and a cluster (`cluster.toml`) say.
//!
//! Every key has a default, documented here and in `docs/configuration.md`; unknown keys are
//! errors (`deny_unknown_fields`). Relative paths are relative to the instance directory (the
//! parent of `etc/`), see [`super::Instance::resolve`]. A ZConfig `zeo.conf` is mapped onto the
//! same [`ServerConfig`] by `super::zeoconf`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::address::Address;
use super::units::{ByteSize, CommandLine, ExitCodes, LogLevel, Seconds, Umask};

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// Server: etc/zeo.toml
// ---------------------------------------------------------------------------------------------

/// A ZEO server instance (`etc/zeo.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// The storage server: address, read-only, invalidation queue, timeouts, TLS.
    #[serde(default)]
    pub zeo: ZeoConfig,
    /// The storages served, by name (the name clients pass to `register`, e.g. "1").
    /// Default: one file storage "1" at `var/Data.fs`.
    #[serde(default = "default_storages")]
    pub storages: BTreeMap<String, StorageConfig>,
    /// The server's event log.
    #[serde(default)]
    pub eventlog: EventLogConfig,
    /// How `zodbctl start` supervises the server.
    #[serde(default)]
    pub runner: RunnerConfig,
    /// Environment variables set for the program (names keep their case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// `zodbctl backup` / `restore` of this instance's file storages.
    #[serde(default)]
    pub backup: BackupConfig,
    /// The Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// `[replication]`: where replicas of this server's file storages connect, and how
    /// commits wait for them. Every key has a default; without `address` this server feeds
    /// no replica.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

/// `[replication]`: this server as the primary of hot-standby replicas (zc.zrs's
/// `replicate-to`, plus synchronous commit). A replica is a server whose file storages say
/// `replicate-from`; see docs/replication.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Where replicas of this server's file storages connect: HOST:PORT, PORT (all
    /// interfaces) or a Unix socket path. Default: unset (no replica can connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// `async`: a commit is acknowledged once durable here; `sync`: only once a replica
    /// has it durable too. Default `async`.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// In sync mode, how long a commit waits for a replica's acknowledgement (seconds,
    /// more than 0). Default 2.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout: Seconds,
    /// In sync mode, what a commit does when no replica acknowledged in time: `degrade`
    /// (go on asynchronously, logged and shown in `zodbctl status`) or `block` (keep
    /// waiting). Default `degrade`.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Seconds between heartbeats on an idle replication connection (more than 0).
    /// Default 5.
    #[serde(default = "default_keep_alive_delay")]
    pub keep_alive_delay: Seconds,
    /// The other servers' replication addresses: asked at start whether a newer primary
    /// exists (so that a former primary does not come back writable). Default: none.
    #[serde(default)]
    pub peers: Vec<Address>,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            address: None,
            mode: ReplicationMode::default(),
            sync_timeout: default_sync_timeout(),
            on_timeout: OnTimeout::default(),
            keep_alive_delay: default_keep_alive_delay(),
            peers: Vec::new(),
        }
    }
}

fn default_sync_timeout() -> Seconds {
    Seconds::secs(2)
}
fn default_keep_alive_delay() -> Seconds {
    Seconds::secs(5)
}

/// `[replication] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    #[default]
    Async,
    Sync,
}

/// `[replication] on-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Degrade,
    Block,
}

/// `[metrics]`: where the server's HTTP endpoint for Prometheus and probes listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MetricsConfig {
    /// HOST:PORT, e.g. "127.0.0.1:8099" (the endpoint has no authentication: keep it on a
    /// private address).
    pub address: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            zeo: ZeoConfig::default(),
            storages: default_storages(),
            eventlog: EventLogConfig::default(),
            runner: RunnerConfig::default(),
            environment: BTreeMap::new(),
            metrics: None,
            backup: BackupConfig::default(),
            replication: ReplicationConfig::default(),
        }
    }
}

/// `[backup]`: where and how `zodbctl backup` keeps the instance's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The directory holding one repozo repository per file storage, `<repository>/<name>`
    /// (created when missing). Default `var/backups`.
    pub repository: PathBuf,
    /// Keep the newest N full backups with their incrementals; 0 keeps everything.
    /// Default 2.
    pub keep: usize,
    /// Compress backup files (`.fsz`/`.deltafsz`). Default true.
    pub gzip: bool,
    /// Back up the storage's blob directory with it. Default true.
    pub blobs: bool,
    /// Decide incremental backups from the last `.dat` line only (repozo's `-Q`). Default
    /// false.
    pub quick: bool,
}

impl Default for BackupConfig {
    fn default() -> BackupConfig {
        BackupConfig {
            repository: PathBuf::from("var/backups"),
            keep: 2,
            gzip: true,
            blobs: true,
            quick: false,
        }
    }
}

/// The default storage "1" at `var/Data.fs`, as mkzeoinstance writes it.
pub fn default_storages() -> BTreeMap<String, StorageConfig> {
    BTreeMap::from([(
        "1".to_owned(),
        StorageConfig::File(FileStorageConfig::new("var/Data.fs")),
    )])
}

/// The `<zeo>` keys of zeo.conf (zeo-protocol.md §7.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ZeoConfig {
    /// Where to listen: `HOST:PORT`, `[V6]:PORT`, `PORT` (all interfaces) or a Unix socket
    /// path (contains `/`). Default `127.0.0.1:8100`.
    #[serde(default = "default_address")]
    pub address: Address,
    /// Serve every storage read-only (writes fail with ReadOnlyError; pack still allowed).
    /// Default false.
    #[serde(default)]
    pub read_only: bool,
    /// Transactions remembered for quick cache verification of reconnecting clients.
    /// Default 100.
    #[serde(default = "default_invalidation_queue_size")]
    pub invalidation_queue_size: u32,
    /// Also verify clients whose last transaction is this recent by iterating the storage
    /// (seconds). Default: unset (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation_age: Option<Seconds>,
    /// Abort a transaction that holds the commit lock longer than this (seconds); the
    /// connection is closed. Default: unset (no timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_timeout: Option<Seconds>,
    /// Announce the msgpack encoding (`M5`) instead of pickle (`Z5`). Default false.
    #[serde(default)]
    pub msgpack: bool,
    /// The server writes its process id here. Default `var/zeo.pid`.
    #[serde(default = "default_pid_file")]
    pub pid_file: PathBuf,
    /// Largest message the server accepts; bigger frames close the connection (large values
    /// travel as blobs). Default `128MB`.
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: ByteSize,
    /// Network threads; each connection lives on one of them. Default: unset, one per two
    /// CPUs (at most 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Mutual TLS. Default: unset (plain TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// A second listener where every client is served read-only: a replica's clients
    /// (its `address` opens only once it is promoted), or read-only clients of a primary.
    /// Must differ from `address`. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_address: Option<Address>,
    /// The server's admin socket (`zodbctl promote`, `zodbctl resync`, replication
    /// status); its file permissions decide who may promote. Default `var/zeo-admin.sock`.
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
}

impl Default for ZeoConfig {
    fn default() -> ZeoConfig {
        ZeoConfig {
            address: default_address(),
            read_only: false,
            invalidation_queue_size: default_invalidation_queue_size(),
            invalidation_age: None,
            transaction_timeout: None,
            msgpack: false,
            pid_file: default_pid_file(),
            max_frame_size: default_max_frame_size(),
            threads: None,
            tls: None,
            read_only_address: None,
            admin_socket: default_admin_socket(),
        }
    }
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from("var/zeo-admin.sock")
}

/// Default server address: loopback, port 8100 (mkzeoinstance binds all interfaces; we don't).
pub const DEFAULT_PORT: u16 = 8100;
fn default_address() -> Address {
    Address::localhost(DEFAULT_PORT)
}
fn default_invalidation_queue_size() -> u32 {
    100
}
fn default_pid_file() -> PathBuf {
    PathBuf::from("var/zeo.pid")
}
fn default_max_frame_size() -> ByteSize {
    ByteSize::mib(128)
}

/// `[zeo.tls]`: the server's certificate and the CA that client certificates must chain to
/// (ZEO's TLS is mutual, zeo-protocol.md §7.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate (chain) of the server. Required.
    pub certificate: PathBuf,
    /// PEM private key; default: read from the certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// File whose first line is the passphrase of an encrypted `key` (zeo.conf's
    /// `password-function` names Python code instead). Default: unset (unencrypted key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password_file: Option<PathBuf>,
    /// CA file or directory that client certificates are verified against. Required.
    pub authenticate: PathBuf,
}

/// A storage served under one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStorage", into = "RawStorage")]
pub enum StorageConfig {
    /// `type = "file"`: a FileStorage `Data.fs`, optionally with a blob directory.
    File(FileStorageConfig),
    /// `type = "memory"`: kept in memory, not historical; for sessions.
    Memory(MemoryStorageConfig),
}

impl StorageConfig {
    pub fn is_read_only(&self) -> bool {
        match self {
            StorageConfig::File(f) => f.read_only,
            StorageConfig::Memory(_) => false,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            StorageConfig::File(_) => "file",
            StorageConfig::Memory(_) => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStorageConfig {
    /// The Data.fs. Required.
    pub path: PathBuf,
    /// Blob directory; default: none (no blob support).
    pub blob_dir: Option<PathBuf>,
    /// Open the file read-only. Default false.
    pub read_only: bool,
    /// Pack removes unreachable objects (garbage collection). Default true.
    pub pack_gc: bool,
    /// Pack keeps the previous file as `Data.fs.old`. Default true.
    pub pack_keep_old: bool,
    /// `zodbctl pack` without `-d` packs to this many days ago. Default 0 (now).
    pub pack_days: u32,
    /// This storage is a replica of the same-named storage of the server whose
    /// `[replication] address` this is (HOST:PORT or a Unix socket path). Default: unset.
    pub replicate_from: Option<Address>,
}

impl FileStorageConfig {
    pub fn new(path: impl Into<PathBuf>) -> FileStorageConfig {
        FileStorageConfig {
            path: path.into(),
            blob_dir: None,
            read_only: false,
            pack_gc: true,
            pack_keep_old: true,
            pack_days: 0,
            replicate_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryStorageConfig {
    /// Old revisions are kept this long (for readers of older snapshots and conflict
    /// resolution), then dropped. Default 300 seconds.
    pub history_seconds: Seconds,
    /// Snapshot file: the contents are written here on a clean stop and every
    /// `checkpoint-seconds`, and read back on start, so sessions survive a restart. Default:
    /// unset (nothing survives a restart).
    pub path: Option<PathBuf>,
    /// With `path`: also write the snapshot this often while the contents change, so that a
    /// crash comes back to the last checkpoint (0 = only on a clean stop: a crash comes back
    /// empty). Default 10 seconds.
    pub checkpoint_seconds: Seconds,
}

impl Default for MemoryStorageConfig {
    fn default() -> MemoryStorageConfig {
        MemoryStorageConfig {
            history_seconds: Seconds::secs(300),
            path: None,
            checkpoint_seconds: Seconds::secs(DEFAULT_CHECKPOINT_SECONDS),
        }
    }
}

/// How often a memory storage with a snapshot file writes it while its contents change.
/// Not never: Zope clients keep the mounted `/temp_folder` container cached, and a sessions
/// storage that comes back empty after a crash leaves them failing with POSKeyError until
/// they are restarted; from a checkpoint that container is there.
pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    #[default]
    File,
    Memory,
}

/// The TOML shape of a storage table: one flat table whose `type` says which keys apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawStorage {
    #[serde(default, rename = "type")]
    kind: StorageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pack_gc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pack_keep_old: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pack_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicate_from: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history_seconds: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint_seconds: Option<Seconds>,
}

impl TryFrom<RawStorage> for StorageConfig {
    type Error = String;
    fn try_from(r: RawStorage) -> Result<StorageConfig, String> {
        match r.kind {
            StorageType::File => {
                if r.history_seconds.is_some() || r.checkpoint_seconds.is_some() {
                    return Err(
                        "keys `history-seconds` and `checkpoint-seconds` apply only to type = \"memory\""
                            .into(),
                    );
                }
                let path = r.path.ok_or(
                    "a file storage needs `path` (the Data.fs, e.g. \"var/Data.fs\")".to_owned(),
                )?;
                if path.as_os_str().is_empty() {
                    return Err("`path` is empty".into());
                }
                Ok(StorageConfig::File(FileStorageConfig {
                    path,
                    blob_dir: r.blob_dir,
                    read_only: r.read_only.unwrap_or(false),
                    pack_gc: r.pack_gc.unwrap_or(true),
                    pack_keep_old: r.pack_keep_old.unwrap_or(true),
                    pack_days: r.pack_days.unwrap_or(0),
                    replicate_from: r.replicate_from,
                }))
            }
            StorageType::Memory => {
                for (set, key) in [
                    (r.blob_dir.is_some(), "blob-dir"),
                    (r.read_only.is_some(), "read-only"),
                    (r.pack_gc.is_some(), "pack-gc"),
                    (r.pack_keep_old.is_some(), "pack-keep-old"),
                    (r.pack_days.is_some(), "pack-days"),
                    (r.replicate_from.is_some(), "replicate-from"),
                ] {
                    if set && key == "replicate-from" {
                        return Err(
                            "key `replicate-from` does not apply to type = \"memory\": memory storages \
                             are not replicated (a replica serves its own, empty one until promoted)"
                                .into(),
                        );
                    }
                    if set {
                        return Err(format!(
                            "key `{key}` does not apply to type = \"memory\" (allowed: history-seconds, path, checkpoint-seconds)"
                        ));
                    }
                }
                if r.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err("`path` is empty".into());
                }
                Ok(StorageConfig::Memory(MemoryStorageConfig {
                    history_seconds: r.history_seconds.unwrap_or(Seconds::secs(300)),
                    path: r.path,
                    checkpoint_seconds: r
                        .checkpoint_seconds
                        .unwrap_or(Seconds::secs(DEFAULT_CHECKPOINT_SECONDS)),
                }))
            }
        }
    }
}

impl From<StorageConfig> for RawStorage {
    fn from(s: StorageConfig) -> RawStorage {
        match s {
            StorageConfig::File(f) => RawStorage {
                kind: StorageType::File,
                path: Some(f.path),
                blob_dir: f.blob_dir,
                read_only: Some(f.read_only),
                pack_gc: Some(f.pack_gc),
                pack_keep_old: Some(f.pack_keep_old),
                // Left out at its default, so configurations written before it stay as
                // they were.
                pack_days: (f.pack_days != 0).then_some(f.pack_days),
                replicate_from: f.replicate_from,
                history_seconds: None,
                checkpoint_seconds: None,
            },
            StorageConfig::Memory(m) => RawStorage {
                kind: StorageType::Memory,
                path: m.path,
                blob_dir: None,
                read_only: None,
                pack_gc: None,
                pack_keep_old: None,
                pack_days: None,
                replicate_from: None,
                history_seconds: Some(m.history_seconds),
                checkpoint_seconds: Some(m.checkpoint_seconds),
            },
        }
    }
}

/// `[eventlog]`: where the server logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventLogConfig {
    /// Log file; `STDERR` or `STDOUT` write to those streams. Reopened on SIGUSR2
    /// (`zodbctl logreopen`). Default `log/zeo.log`.
    #[serde(default = "default_eventlog_path")]
    pub path: PathBuf,
    /// Lowest level written: trace, debug, info, warning, error, critical. Default info.
    #[serde(default)]
    pub level: LogLevel,
}

impl Default for EventLogConfig {
    fn default() -> EventLogConfig {
        EventLogConfig {
            path: default_eventlog_path(),
            level: LogLevel::Info,
        }
    }
}

fn default_eventlog_path() -> PathBuf {
    PathBuf::from("log/zeo.log")
}

impl EventLogConfig {
    /// The stream this log goes to when its path names one.
    pub fn stream(&self) -> Option<LogStream> {
        match self.path.to_str() {
            Some("STDERR") => Some(LogStream::Stderr),
            Some("STDOUT") => Some(LogStream::Stdout),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

// ---------------------------------------------------------------------------------------------
// Runner (both kinds)
// ---------------------------------------------------------------------------------------------

/// `[runner]`: the zdaemon `<runner>` keys that still mean something (supervisor.md §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunnerConfig {
    /// The program to supervise (shell-style quoting, or an array of words).
    /// Default: for a server, zodbctl's own `serve` on this configuration; for a client,
    /// `runwsgi -v etc/zope.ini`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<CommandLine>,
    /// The manager's control socket. Default `var/zodbctl.sock`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Run the manager in the background. Default true.
    #[serde(default = "yes")]
    pub daemon: bool,
    /// Seconds: a program that exits sooner than this after starting counts as a quick
    /// crash; after this many quick crashes in a row the manager gives up. Default 10
    /// (must be ≥ 1).
    #[serde(default = "default_backoff_limit")]
    pub backoff_limit: u32,
    /// Never give up restarting. Default false.
    #[serde(default)]
    pub forever: bool,
    /// Exit codes after which the program is not restarted. Default `[0, 2]`.
    #[serde(default)]
    pub exit_codes: ExitCodes,
    /// How long `start` waits for the program to be up. Default 300 seconds.
    #[serde(default = "default_timeout")]
    pub start_timeout: Seconds,
    /// How long after SIGTERM the program gets SIGKILL; 0 = never. Default 300 seconds.
    #[serde(default = "default_timeout")]
    pub stop_timeout: Seconds,
    /// Working directory of the program. Default: the instance directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// File-creation mask of the program (octal). Default `022`.
    #[serde(default)]
    pub umask: Umask,
    /// Run as this user (name or uid) when started as root. Default: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The program's standard output and error go here. Default `log/transcript.log`.
    #[serde(default = "default_transcript")]
    pub transcript: PathBuf,
    /// The file `logtail` shows by default. Default: the transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logfile: Option<PathBuf>,
    /// zdaemon's readiness gate: run until it exits 0 before the program counts as started.
    /// Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_test_program: Option<CommandLine>,
    /// How to tell that the program is ready. Default: for a server, a connection to its
    /// address; for a client, its `http-address` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_check: Option<ReadyCheck>,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            program: None,
            socket: default_socket(),
            daemon: true,
            backoff_limit: default_backoff_limit(),
            forever: false,
            exit_codes: ExitCodes::default(),
            start_timeout: default_timeout(),
            stop_timeout: default_timeout(),
            directory: None,
            umask: Umask::default(),
            user: None,
            transcript: default_transcript(),
            logfile: None,
            start_test_program: None,
            ready_check: None,
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from("var/zodbctl.sock")
}
fn default_backoff_limit() -> u32 {
    10
}
fn default_timeout() -> Seconds {
    Seconds::secs(300)
}
fn default_transcript() -> PathBuf {
    PathBuf::from("log/transcript.log")
}

/// `ready-check = { address = "127.0.0.1:8080" }` (a TCP/Unix connect succeeds; for a ZEO
/// address the server answers the handshake), `{ http = "http://127.0.0.1:8080/" }` (any
/// HTTP response), `{ command = "curl -fs http://..." }` (exits 0), or `"none"` (ready as
/// soon as it is started: for a program that listens nowhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReadyCheck {
    Address(Address),
    Http(String),
    Command(CommandLine),
    None,
}

// ---------------------------------------------------------------------------------------------
// Client: etc/client.toml
// ---------------------------------------------------------------------------------------------

/// A Zope/WSGI client instance (`etc/client.toml`). `etc/zope.conf` is rendered from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientConfig {
    /// The `<zeoclient>` settings of the main database.
    pub zeoclient: ZeoClientConfig,
    /// The Zope side: HTTP address, object cache, session mount.
    #[serde(default)]
    pub zope: ZopeConfig,
    /// How `zodbctl start` supervises the client.
    #[serde(default)]
    pub runner: RunnerConfig,
    /// Environment variables set for the program (names keep their case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

/// `[zeoclient]`: rendered into `<zodb_db main><zeoclient>` (supervisor.md §5.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ZeoClientConfig {
    /// ZEO servers, tried in order (fail-over). Required, at least one.
    pub servers: Vec<Address>,
    /// Storage name on the server. Default "1".
    #[serde(default = "default_storage_name")]
    pub storage: String,
    /// Storage name shown by ZODB. Default "zeostorage".
    #[serde(default = "default_client_name")]
    pub name: String,
    /// ZEO client cache size. Default `128MB`.
    #[serde(default = "default_client_cache")]
    pub cache_size: ByteSize,
    /// Persistent cache file name (kept in `var` across restarts). Default: unset
    /// (in-memory cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Directory for persistent cache files. Default `var`.
    #[serde(default = "default_var")]
    pub var: PathBuf,
    /// Blob cache directory. Default `var/blobcache`.
    #[serde(default = "default_blob_cache")]
    pub blob_dir: PathBuf,
    /// True only when this host sees the server's blob directory itself. Default false.
    #[serde(default)]
    pub shared_blob_dir: bool,
    /// Open the storage read-only. Default false.
    #[serde(default)]
    pub read_only: bool,
    /// Fall back to a read-only connection when no writable server is reachable.
    /// Default false.
    #[serde(default)]
    pub read_only_fallback: bool,
}

fn default_storage_name() -> String {
    "1".into()
}
fn default_client_name() -> String {
    "zeostorage".into()
}
fn default_client_cache() -> ByteSize {
    ByteSize::mib(128)
}
fn default_var() -> PathBuf {
    PathBuf::from("var")
}
fn default_blob_cache() -> PathBuf {
    PathBuf::from("var/blobcache")
}

impl ZeoClientConfig {
    pub fn new(servers: Vec<Address>) -> ZeoClientConfig {
        ZeoClientConfig {
            servers,
            storage: default_storage_name(),
            name: default_client_name(),
            cache_size: default_client_cache(),
            client: None,
            var: default_var(),
            blob_dir: default_blob_cache(),
            shared_blob_dir: false,
            read_only: false,
            read_only_fallback: false,
        }
    }
}

/// `[zope]`: rendered into `etc/zope.conf` and `etc/zope.ini`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ZopeConfig {
    /// Where waitress listens (etc/zope.ini). Default `127.0.0.1:8080`.
    #[serde(default = "default_http")]
    pub http_address: Address,
    /// ZODB object cache of each connection, in objects. Default 30000.
    #[serde(default = "default_object_cache")]
    pub object_cache_size: u32,
    /// Name of a shared non-historical storage on the server mounted at `/temp_folder`
    /// (sessions). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
}

impl Default for ZopeConfig {
    fn default() -> ZopeConfig {
        ZopeConfig {
            http_address: default_http(),
            object_cache_size: default_object_cache(),
            sessions: None,
        }
    }
}

fn default_http() -> Address {
    Address::localhost(8080)
}
fn default_object_cache() -> u32 {
    30000
}

/// The client program when `[runner] program` is unset.
pub const DEFAULT_CLIENT_PROGRAM: &str = "runwsgi -v etc/zope.ini";

// ---------------------------------------------------------------------------------------------
// Cluster: cluster.toml
// ---------------------------------------------------------------------------------------------

/// A cluster (`cluster.toml`): instances started together, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClusterConfig {
    /// The instances. Required, at least one.
    pub members: Vec<ClusterMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClusterMember {
    /// Short name used in status output. Default: the last component of `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The instance directory, relative to the cluster directory. Required.
    pub path: PathBuf,
    /// `server` or `client`. Required.
    pub kind: MemberKind,
    /// Members start in ascending order and stop in the reverse order; equal orders start
    /// in file order. Default: the position in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_order: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    Server,
    Client,
}

impl ClusterMember {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.path.display().to_string())
        })
    }
}

impl ClusterConfig {
    /// Members in start order (stable for equal orders); stop in the reverse.
    pub fn start_order(&self) -> Vec<&ClusterMember> {
        let mut v: Vec<(u32, usize, &ClusterMember)> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.start_order.unwrap_or(i as u32), i, m))
            .collect();
        v.sort_by_key(|(o, i, _)| (*o, *i));
        v.into_iter().map(|(_, _, m)| m).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Checks serde cannot express
// ---------------------------------------------------------------------------------------------

/// A problem found after parsing: the dotted key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

fn check_runner(r: &RunnerConfig, out: &mut Vec<Problem>) {
    if r.backoff_limit == 0 {
        // zdaemon busy-loops with 0 (supervisor.md §8.14); refuse it.
        out.push(problem(
            "runner.backoff-limit",
            "must be at least 1 (seconds)",
        ));
    }
}

fn check_storage_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a storage name cannot be empty".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("storage name {name:?} contains white space"));
    }
    None
}

fn resolve(dir: &Path, p: &mut PathBuf) {
    *p = super::resolve_in(dir, p);
}

impl RunnerConfig {
    /// Make every path absolute against the instance directory (`directory` defaults to it).
    pub fn resolve_paths(&mut self, dir: &Path) {
        resolve(dir, &mut self.socket);
        resolve(dir, &mut self.transcript);
        if let Some(p) = &mut self.logfile {
            resolve(dir, p);
        }
        let mut d = self.directory.take().unwrap_or_else(|| dir.to_path_buf());
        resolve(dir, &mut d);
        self.directory = Some(d);
    }
}

impl ServerConfig {
    /// Make every path absolute against the instance directory `dir` (what a server or a
    /// maintenance command opens). `STDERR`/`STDOUT` log paths stay as they are.
    pub fn resolve_paths(&mut self, dir: &Path) {
        resolve(dir, &mut self.zeo.pid_file);
        resolve(dir, &mut self.zeo.admin_socket);
        if let Some(tls) = &mut self.zeo.tls {
            resolve(dir, &mut tls.certificate);
            resolve(dir, &mut tls.authenticate);
            if let Some(k) = &mut tls.key {
                resolve(dir, k);
            }
            if let Some(k) = &mut tls.key_password_file {
                resolve(dir, k);
            }
        }
        for storage in self.storages.values_mut() {
            match storage {
                StorageConfig::File(f) => {
                    resolve(dir, &mut f.path);
                    if let Some(b) = &mut f.blob_dir {
                        resolve(dir, b);
                    }
                }
                StorageConfig::Memory(m) => {
                    if let Some(p) = &mut m.path {
                        resolve(dir, p);
                    }
                }
            }
        }
        resolve(dir, &mut self.eventlog.path);
        self.runner.resolve_paths(dir);
        resolve(dir, &mut self.backup.repository);
    }
}

impl ClientConfig {
    /// Make every path absolute against the instance directory `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        resolve(dir, &mut self.zeoclient.var);
        resolve(dir, &mut self.zeoclient.blob_dir);
        self.runner.resolve_paths(dir);
    }
}

impl ServerConfig {
    /// Checks that serde cannot express.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.storages.is_empty() {
            out.push(problem("storages", "at least one storage is needed"));
        }
        for name in self.storages.keys() {
            if let Some(m) = check_storage_name(name) {
                out.push(problem(format!("storages.{name}"), m));
            }
        }
        if self.zeo.invalidation_queue_size == 0 {
            out.push(problem("zeo.invalidation-queue-size", "must be at least 1"));
        }
        if self.zeo.max_frame_size.bytes() < 1024 {
            out.push(problem("zeo.max-frame-size", "must be at least 1KB"));
        }
        if self.zeo.threads.is_some_and(|n| !(1..=256).contains(&n)) {
            out.push(problem("zeo.threads", "must be from 1 to 256"));
        }
        if self
            .zeo
            .transaction_timeout
            .is_some_and(|t| t.duration().is_zero())
        {
            // 0 would time every transaction out at once (runzeo accepts it and does that).
            out.push(problem(
                "zeo.transaction-timeout",
                "must be greater than 0 (leave the key out for no timeout)",
            ));
        }
        if self.zeo.read_only_address.as_ref() == Some(&self.zeo.address) {
            out.push(problem(
                "zeo.read-only-address",
                format!(
                    "is the same as zeo.address ({}); the read-only listener needs an address of its own (e.g. the next port)",
                    self.zeo.address
                ),
            ));
        }
        if self.zeo.admin_socket.as_os_str().is_empty() {
            out.push(problem(
                "zeo.admin-socket",
                "the path is empty (leave the key out for var/zeo-admin.sock)",
            ));
        }
        for (name, storage) in &self.storages {
            if let StorageConfig::File(f) = storage {
                if let Some(from) = &f.replicate_from {
                    if from.is_all_interfaces() {
                        out.push(problem(
                            format!("storages.{name}.replicate-from"),
                            format!(
                                "{from} has no host: write the primary's replication address as HOST:PORT (e.g. \"127.0.0.1:{}\") or a Unix socket path",
                                from.port().unwrap_or(8101)
                            ),
                        ));
                    }
                    if Some(from) == self.replication.address.as_ref() {
                        out.push(problem(
                            format!("storages.{name}.replicate-from"),
                            "is this server's own [replication] address; give the primary's",
                        ));
                    }
                }
            }
        }
        let r = &self.replication;
        if r.mode == ReplicationMode::Sync && r.address.is_none() {
            out.push(problem(
                "replication.mode",
                "\"sync\" needs [replication] address (where replicas connect); set it, or use mode = \"async\"",
            ));
        }
        if r.sync_timeout.duration().is_zero() {
            out.push(problem(
                "replication.sync-timeout",
                "must be greater than 0 (seconds a sync commit waits for a replica, e.g. 2)",
            ));
        }
        if r.keep_alive_delay.duration().is_zero() {
            out.push(problem(
                "replication.keep-alive-delay",
                "must be greater than 0 (seconds between heartbeats, e.g. 5)",
            ));
        }
        if let Some(a) = &r.address {
            if *a == self.zeo.address || self.zeo.read_only_address.as_ref() == Some(a) {
                out.push(problem(
                    "replication.address",
                    format!("{a} is already a ZEO listener of this server; replicas need an address of their own"),
                ));
            }
        }
        check_runner(&self.runner, &mut out);
        out
    }

    /// True when some storage of this server is a replica (`replicate-from`).
    pub fn is_replica(&self) -> bool {
        self.storages
            .values()
            .any(|s| matches!(s, StorageConfig::File(f) if f.replicate_from.is_some()))
    }

    /// Warnings that do not stop the server: the dotted key and what to consider.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.zeo.read_only_address.is_none() {
            for (name, storage) in &self.storages {
                if matches!(storage, StorageConfig::File(f) if f.replicate_from.is_some()) {
                    out.push(problem(
                        format!("storages.{name}.replicate-from"),
                        "this storage is a replica but [zeo] has no read-only-address: read-only \
                         clients cannot reach it until it is promoted (set read-only-address to \
                         serve them meanwhile)",
                    ));
                }
            }
        }
        out
    }

    /// The program the runner starts: `[runner] program`, or `zodbctl serve -C CONFIG`.
    pub fn program(&self, zodbctl: &Path, config_file: &Path) -> CommandLine {
        self.runner.program.clone().unwrap_or_else(|| {
            CommandLine(vec![
                zodbctl.display().to_string(),
                "serve".into(),
                "-C".into(),
                config_file.display().to_string(),
            ])
        })
    }

    /// The readiness check: `[runner] ready-check`, else a connection to the server address
    /// (for a replica with a `read-only-address`, that one: its main address opens only
    /// once it is promoted).
    pub fn ready_check(&self) -> ReadyCheck {
        self.runner.ready_check.clone().unwrap_or_else(|| {
            let addr = match &self.zeo.read_only_address {
                Some(ro) if self.is_replica() => ro,
                _ => &self.zeo.address,
            };
            ReadyCheck::Address(addr.connectable())
        })
    }
}

impl ClientConfig {
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.zeoclient.servers.is_empty() {
            out.push(problem(
                "zeoclient.servers",
                "at least one server address is needed",
            ));
        }
        if let Some(m) = check_storage_name(&self.zeoclient.storage) {
            out.push(problem("zeoclient.storage", m));
        }
        if let Some(s) = &self.zope.sessions {
            if let Some(m) = check_storage_name(s) {
                out.push(problem("zope.sessions", m));
            }
        }
        check_runner(&self.runner, &mut out);
        out
    }

    /// The program the runner starts: `[runner] program`, or `runwsgi -v etc/zope.ini`.
    pub fn program(&self) -> CommandLine {
        self.runner.program.clone().unwrap_or_else(|| {
            CommandLine(
                DEFAULT_CLIENT_PROGRAM
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            )
        })
    }

    /// The readiness check: `[runner] ready-check`, else a connection to `http-address`
    /// (the supervisor uses the latter only with the default program: another program need
    /// not listen there).
    pub fn ready_check(&self) -> ReadyCheck {
        self.runner
            .ready_check
            .clone()
            .unwrap_or_else(|| ReadyCheck::Address(self.zope.http_address.connectable()))
    }
}

impl ClusterConfig {
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.members.is_empty() {
            out.push(problem("members", "a cluster needs at least one member"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if !seen.insert(m.display_name()) {
                out.push(problem(
                    format!("members[{i}].name"),
                    format!("two members are named {:?}", m.display_name()),
                ));
            }
            if m.path.as_os_str().is_empty() {
                out.push(problem(format!("members[{i}].path"), "the path is empty"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_server_file_means_every_default() {
        let c: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.zeo.address.to_string(), "127.0.0.1:8100");
        assert_eq!(c.runner.socket, Path::new("var/zodbctl.sock"));
        assert!(c.problems().is_empty());
    }

    #[test]
    fn storages_are_typed() {
        let c: ServerConfig = toml::from_str(
            r#"
            [storages.main]
            path = "var/Data.fs"
            blob-dir = "var/blobs"
            [storages.sessions]
            type = "memory"
            "#,
        )
        .unwrap();
        assert!(matches!(c.storages["main"], StorageConfig::File(ref f) if f.blob_dir.is_some()));
        assert_eq!(
            c.storages["sessions"],
            StorageConfig::Memory(MemoryStorageConfig::default())
        );
        let back: ServerConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn wrong_keys_for_a_type_are_refused() {
        let e =
            toml::from_str::<ServerConfig>("[storages.s]\ntype = \"memory\"\nblob-dir = \"x\"\n")
                .unwrap_err();
        assert!(e.message().contains("does not apply"), "{e}");
        let e = toml::from_str::<ServerConfig>("[zeo]\nadress = \"x\"\n").unwrap_err();
        assert!(e.message().contains("unknown field"), "{e}");
    }

    #[test]
    fn transaction_timeout_takes_fractions_and_refuses_zero() {
        let file = Path::new("etc/zeo.toml");
        for (text, ms) in [("2.5", 2500), ("\"1500ms\"", 1500), ("30", 30_000)] {
            let c = crate::instance::parse_toml(
                file,
                &format!("[zeo]\ntransaction-timeout = {text}\n"),
            )
            .unwrap();
            let crate::instance::InstanceConfig::Server(c) = c else {
                panic!()
            };
            assert_eq!(
                c.zeo.transaction_timeout.map(|t| t.duration()),
                Some(std::time::Duration::from_millis(ms))
            );
        }
        for text in ["0", "0.0", "\"0s\""] {
            let e = crate::instance::parse_toml(
                file,
                &format!("[zeo]\nread-only = false\ntransaction-timeout = {text}\n"),
            )
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("etc/zeo.toml:3: zeo.transaction-timeout: must be greater than 0"),
                "{e}"
            );
        }
        assert!(crate::instance::parse_toml(file, "[zeo]\ntransaction-timeout = -1\n").is_err());
    }

    #[test]
    fn threads_are_checked() {
        let file = Path::new("etc/zeo.toml");
        let c = crate::instance::parse_toml(file, "[zeo]\nthreads = 3\n").unwrap();
        let crate::instance::InstanceConfig::Server(c) = c else {
            panic!()
        };
        assert_eq!(c.zeo.threads, Some(3));
        for text in ["0", "1000"] {
            let e = crate::instance::parse_toml(file, &format!("[zeo]\nthreads = {text}\n"))
                .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("etc/zeo.toml:2: zeo.threads: must be from 1 to 256"),
                "{e}"
            );
        }
    }

    #[test]
    fn paths_resolve_against_the_instance() {
        let mut c: ServerConfig = toml::from_str(
            "[storages.1]\npath = \"var/Data.fs\"\nblob-dir = \"/srv/blobs\"\n[eventlog]\npath = \"STDERR\"\n",
        )
        .unwrap();
        c.resolve_paths(Path::new("/srv/zeo"));
        let StorageConfig::File(f) = &c.storages["1"] else {
            panic!()
        };
        assert_eq!(f.path, Path::new("/srv/zeo/var/Data.fs"));
        assert_eq!(f.blob_dir.as_deref(), Some(Path::new("/srv/blobs")));
        assert_eq!(c.zeo.pid_file, Path::new("/srv/zeo/var/zeo.pid"));
        assert_eq!(c.eventlog.path, Path::new("STDERR"));
        assert_eq!(c.runner.socket, Path::new("/srv/zeo/var/zodbctl.sock"));
        assert_eq!(c.runner.directory.as_deref(), Some(Path::new("/srv/zeo")));
    }

    fn server_err(text: &str) -> String {
        crate::instance::parse_toml(Path::new("etc/zeo.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn replication_keys_and_defaults() {
        let c: ServerConfig = toml::from_str(
            r#"
            [zeo]
            address = "127.0.0.1:8100"
            read-only-address = "127.0.0.1:8102"
            [replication]
            address = "127.0.0.1:8101"
            mode = "sync"
            sync-timeout = 0.5
            on-timeout = "block"
            keep-alive-delay = 10
            peers = ["127.0.0.1:8111", "/run/zeo/repl.sock"]
            [storages.1]
            path = "var/Data.fs"
            replicate-from = "primary:8101"
            "#,
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.zeo.admin_socket, Path::new("var/zeo-admin.sock"));
        assert_eq!(c.replication.mode, ReplicationMode::Sync);
        assert_eq!(c.replication.on_timeout, OnTimeout::Block);
        assert_eq!(
            c.replication.sync_timeout.duration(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(c.replication.peers.len(), 2);
        let StorageConfig::File(f) = &c.storages["1"] else {
            panic!()
        };
        assert_eq!(
            f.replicate_from.as_ref().unwrap().to_string(),
            "primary:8101"
        );
        assert!(c.is_replica());
        assert!(c.warnings().is_empty());
        // A replica is ready when its read-only listener answers.
        assert_eq!(
            c.ready_check(),
            ReadyCheck::Address(Address::localhost(8102))
        );
        let back: ServerConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);

        let d = ServerConfig::default();
        assert_eq!(d.replication.mode, ReplicationMode::Async);
        assert_eq!(d.replication.on_timeout, OnTimeout::Degrade);
        assert_eq!(d.replication.sync_timeout, Seconds::secs(2));
        assert_eq!(d.replication.keep_alive_delay, Seconds::secs(5));
        assert!(d.replication.address.is_none() && d.replication.peers.is_empty());
        // `show` prints the defaults.
        let shown = toml::to_string(&d).unwrap();
        for key in [
            "admin-socket = \"var/zeo-admin.sock\"",
            "[replication]",
            "mode = \"async\"",
            "on-timeout = \"degrade\"",
        ] {
            assert!(shown.contains(key), "{key} not in {shown}");
        }
    }

    #[test]
    fn replication_mistakes_say_what_to_fix() {
        let e = server_err("[replication]\nmode = \"sync\"\n");
        assert!(
            e.starts_with("etc/zeo.toml:2: replication.mode: \"sync\" needs [replication] address"),
            "{e}"
        );
        let e = server_err("[replication]\naddress = \"127.0.0.1:8101\"\nsync-timeout = 0\n");
        assert!(
            e.starts_with("etc/zeo.toml:3: replication.sync-timeout: must be greater than 0"),
            "{e}"
        );
        let e = server_err("[replication]\nmode = \"eventually\"\n");
        assert!(e.contains("replication.mode") && e.contains("async"), "{e}");
        let e = server_err(
            "[zeo]\naddress = \"127.0.0.1:8100\"\nread-only-address = \"127.0.0.1:8100\"\n",
        );
        assert!(
            e.starts_with("etc/zeo.toml:3: zeo.read-only-address: is the same as zeo.address"),
            "{e}"
        );
        let e = server_err("[storages.s]\ntype = \"memory\"\nreplicate-from = \"h:1\"\n");
        assert!(e.contains("memory storages are not replicated"), "{e}");
        let e = server_err("[storages.1]\npath = \"var/Data.fs\"\nreplicate-from = \"h:x\"\n");
        assert!(
            e.starts_with("etc/zeo.toml:3: storages.1.replicate-from: bad address"),
            "{e}"
        );
        let e = server_err("[storages.1]\npath = \"var/Data.fs\"\nreplicate-from = \"8101\"\n");
        assert!(
            e.starts_with("etc/zeo.toml:3: storages.1.replicate-from: 8101 has no host"),
            "{e}"
        );
        let e = server_err("[replication]\npeer = []\n");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_replica_without_a_read_only_address_is_a_notice() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("zeo.toml");
        std::fs::write(
            &file,
            "[storages.1]\npath = \"var/Data.fs\"\nreplicate-from = \"10.0.0.1:8101\"\n",
        )
        .unwrap();
        let inst = crate::instance::load(&file).unwrap();
        assert_eq!(inst.notices.len(), 1, "{:?}", inst.notices);
        let n = inst.notices[0].to_string();
        assert!(n.contains("zeo.toml:3: storages.1.replicate-from:"), "{n}");
        assert!(
            n.contains("read-only clients cannot reach it until it is promoted"),
            "{n}"
        );
        // Without a read-only address, readiness is the main address.
        assert_eq!(
            inst.server().unwrap().ready_check(),
            ReadyCheck::Address(Address::localhost(DEFAULT_PORT))
        );
    }

    #[test]
    fn client_and_cluster() {
        let c: ClientConfig =
            toml::from_str("[zeoclient]\nservers = [\"127.0.0.1:8100\"]\n").unwrap();
        assert_eq!(c.program().to_string(), DEFAULT_CLIENT_PROGRAM);
        let k: ClusterConfig = toml::from_str(
            "[[members]]\npath = \"client1\"\nkind = \"client\"\nstart-order = 1\n\
             [[members]]\npath = \"server\"\nkind = \"server\"\nstart-order = 0\n",
        )
        .unwrap();
        assert_eq!(k.start_order()[0].display_name(), "server");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::instance::units::{ByteSize, Seconds};
    use proptest::prelude::*;
    use std::time::Duration;

    fn address() -> impl Strategy<Value = Address> {
        prop_oneof![
            ("[a-z][a-z0-9.-]{0,12}", any::<u16>())
                .prop_map(|(host, port)| Address::Tcp { host, port }),
            any::<u16>().prop_map(|port| Address::Tcp {
                host: String::new(),
                port
            }),
            "(/[a-z0-9._-]{1,8}){1,3}".prop_map(|p| Address::Unix(p.into())),
        ]
    }

    fn path() -> impl Strategy<Value = PathBuf> {
        "[a-zA-Z0-9_./ -]{1,20}".prop_map(PathBuf::from)
    }

    fn seconds() -> impl Strategy<Value = Seconds> {
        (0u64..100_000, prop_oneof![Just(0u32), 1u32..1000])
            .prop_map(|(s, ms)| Seconds(Duration::from_secs(s) + Duration::from_millis(ms.into())))
    }

    fn storage() -> impl Strategy<Value = StorageConfig> {
        prop_oneof![
            (path(), proptest::option::of(path()), any::<[bool; 3]>()).prop_map(|(p, b, f)| {
                StorageConfig::File(FileStorageConfig {
                    path: p,
                    blob_dir: b,
                    read_only: f[0],
                    pack_gc: f[1],
                    pack_keep_old: f[2],
                    pack_days: u32::from(f[0]) * 7,
                    replicate_from: f[1].then(|| Address::localhost(8101)),
                })
            }),
            (seconds(), proptest::option::of(path()), seconds()).prop_map(
                |(history_seconds, path, checkpoint_seconds)| {
                    StorageConfig::Memory(MemoryStorageConfig {
                        history_seconds,
                        path,
                        checkpoint_seconds,
                    })
                }
            ),
        ]
    }

    fn runner() -> impl Strategy<Value = RunnerConfig> {
        (
            proptest::option::of(proptest::collection::vec("[ -~]{1,8}", 1..4)),
            path(),
            any::<[bool; 2]>(),
            1u32..1000,
            proptest::collection::vec(-5i32..300, 0..4),
            (seconds(), seconds(), 0u32..0o777),
            (
                proptest::option::of(path()),
                proptest::option::of("[a-z]{1,8}"),
            ),
        )
            .prop_map(
                |(program, socket, b, backoff, codes, (t1, t2, umask), (dir, user))| RunnerConfig {
                    program: program.map(CommandLine),
                    socket,
                    daemon: b[0],
                    backoff_limit: backoff,
                    forever: b[1],
                    exit_codes: ExitCodes(codes),
                    start_timeout: t1,
                    stop_timeout: t2,
                    directory: dir,
                    umask: Umask(umask),
                    user,
                    transcript: PathBuf::from("log/t.log"),
                    logfile: None,
                    start_test_program: None,
                    ready_check: None,
                },
            )
    }

    fn server() -> impl Strategy<Value = ServerConfig> {
        (
            address(),
            any::<[bool; 2]>(),
            1u32..100_000,
            proptest::option::of(seconds()),
            (1u64 << 10)..(1u64 << 40),
            proptest::collection::btree_map("[a-z0-9]{1,6}", storage(), 1..4),
            runner(),
            proptest::collection::btree_map("[A-Za-z_]{1,6}", "[ -~]{0,10}", 0..3),
        )
            .prop_map(
                |(address, b, queue, timeout, frame, storages, runner, environment)| ServerConfig {
                    zeo: ZeoConfig {
                        address,
                        read_only: b[0],
                        invalidation_queue_size: queue,
                        invalidation_age: timeout,
                        transaction_timeout: timeout,
                        msgpack: b[1],
                        pid_file: PathBuf::from("var/zeo.pid"),
                        max_frame_size: ByteSize(frame),
                        threads: None,
                        tls: None,
                        read_only_address: b[1].then(|| Address::localhost(8102)),
                        admin_socket: PathBuf::from("var/zeo-admin.sock"),
                    },
                    storages,
                    eventlog: EventLogConfig::default(),
                    runner,
                    environment,
                    backup: BackupConfig::default(),
                    metrics: None,
                    replication: ReplicationConfig {
                        address: b[0].then(|| Address::localhost(8101)),
                        mode: if b[0] {
                            ReplicationMode::Sync
                        } else {
                            ReplicationMode::Async
                        },
                        peers: vec![Address::localhost(8111)],
                        ..ReplicationConfig::default()
                    },
                },
            )
    }

    proptest! {
        /// Whatever the model holds, its TOML reads back as the same model.
        #[test]
        fn server_config_toml_round_trip(c in server()) {
            let text = toml::to_string(&c).unwrap();
            let back: ServerConfig = toml::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, c);
        }
    }
}
