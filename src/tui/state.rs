//! Collection: what the dashboard watches ([`Target`]), and the [`Collector`] that turns it into
//! a [`Snapshot`] once per refresh, on its own thread. The screen is drawn from the last
//! snapshot only, so a slow manager or an unreachable server delays the next snapshot, never a
//! key press; `--json` prints the same snapshot.
//!
//! Sources, per instance: the manager's `json` record on the control socket (state, pids,
//! uptime, restarts, back-off, readiness), `/proc/PID/stat` and `statm` of the program (CPU %,
//! RSS), and for a server the ZEO status map of every storage (runzeo's keys, §7.5; rates
//! are deltas between two snapshots), the replication of its replicated storages (the
//! server's admin socket), the size of each local Data.fs, and the log files.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use super::probe;
use crate::error::usage;
use crate::instance::{self, Instance, InstanceConfig, StorageConfig};
use crate::metrics::records;
use crate::storage::TimeStamp;
use crate::supervisor::client;
use crate::supervisor::config::settings_of;
use crate::supervisor::protocol::InstanceStatus;
use crate::supervisor::settings::Settings;

/// Samples kept for the sparklines (two minutes at the default refresh).
pub const HISTORY: usize = 120;
/// Log lines kept for the log pane (scrolling back and searching).
pub const LOG_LINES: usize = 2000;
/// How long a manager or a server may take to answer before it is reported unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the screen shows, as collected at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// What is watched: the cluster's or the instance's directory name, or the addresses.
    pub title: String,
    /// When this snapshot was taken, Unix seconds.
    pub taken_at: f64,
    /// Number of this snapshot (rates need two).
    pub seq: u64,
    pub instances: Vec<InstanceInfo>,
    /// Sums over every storage of every server; `None` until two snapshots were taken.
    pub commits_per_s: Option<f64>,
    pub loads_per_s: Option<f64>,
    /// The log pane: the chosen log of the instance in focus.
    pub log: Option<LogTail>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Server,
    Client,
    /// A ZEO server given by address (`zodbctl top ADDR`): no manager, no files.
    Remote,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Remote => "zeo",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceInfo {
    pub name: String,
    pub kind: Kind,
    /// The instance directory (none for a remote server).
    pub dir: Option<PathBuf>,
    /// Where the server listens, or where a client's HTTP server does.
    pub address: Option<String>,
    /// The manager's record; `None` for a remote server. A missing manager is the record
    /// with state `not running`.
    pub status: Option<InstanceStatus>,
    /// CPU and memory of the program, while it runs.
    pub process: Option<ProcessInfo>,
    /// What the ZEO server tells (servers only).
    pub server: Option<ServerInfo>,
    /// The logs the pane can show, in the order `l` cycles through them.
    pub logs: Vec<LogSource>,
}

impl InstanceInfo {
    /// The state word shown: the manager's state, `up`/`down` for a remote server.
    pub fn state(&self) -> String {
        match (&self.status, &self.server) {
            (Some(st), _) => st.state.clone(),
            (None, Some(s)) if s.error.is_none() => "up".into(),
            (None, _) => "down".into(),
        }
    }

    /// Whether the instance counts as up in the header.
    pub fn is_up(&self) -> bool {
        match &self.status {
            Some(st) => st.state == "running",
            None => self.server.as_ref().is_some_and(|s| s.error.is_none()),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.status.as_ref().and_then(|s| s.pid)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Share of one core since the previous snapshot; `None` on the first.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerInfo {
    /// The address probed.
    pub address: String,
    /// Why the server could not be asked (`None`: it answered).
    pub error: Option<String>,
    pub storages: Vec<StorageInfo>,
}

/// One storage: the configuration's view (type, file) merged with the server's status map.
/// Every figure is optional: runzeo's keys are always there when the server answers; the
/// others only when the server reports them (zodbctl's extra statistics) or the file is local.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StorageInfo {
    pub name: String,
    /// `file` or `memory` (from the configuration).
    pub kind: Option<String>,
    /// The Data.fs of a local file storage.
    pub path: Option<PathBuf>,
    pub size_bytes: Option<u64>,
    pub objects: Option<u64>,
    /// 16 hex digits, as `server_status` gives it.
    pub last_transaction: Option<String>,
    /// The last transaction's time (from its tid), Unix seconds.
    pub last_transaction_time: Option<f64>,
    pub connections: Option<u64>,
    pub waiting: Option<u64>,
    pub active_txns: Option<u64>,
    pub commits: Option<u64>,
    pub loads: Option<u64>,
    pub stores: Option<u64>,
    pub aborts: Option<u64>,
    pub conflicts: Option<u64>,
    pub commits_per_s: Option<f64>,
    pub loads_per_s: Option<f64>,
    /// When the current commit-lock holder got the lock, Unix seconds.
    pub lock_time: Option<f64>,
    pub lock_holder: Option<String>,
    /// The server's start time, as it reports it (ctime format).
    pub started: Option<String>,
    /// commits/s and loads/s of the last [`HISTORY`] snapshots, oldest first.
    pub commits_history: Vec<f64>,
    pub loads_history: Vec<f64>,
    pub last_pack: Option<MaintenanceRecord>,
    pub last_backup: Option<MaintenanceRecord>,
    /// Status keys the dashboard does not know, as the server sent them.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// A replicated storage's replication status, as the server's admin socket reports it
    /// (`Replication::status()`: role, epoch, primary or replicas, phase, lag, in sync);
    /// `None` for a storage that is not replicated or a server that does not say.
    pub replication: Option<serde_json::Value>,
}

/// A record left by a pack or a backup (see [`maintenance_record`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MaintenanceRecord {
    /// When it finished, Unix seconds.
    pub time: Option<f64>,
    /// Its outcome, as recorded (e.g. `ok`, `failed: …`).
    pub status: Option<String>,
    pub file: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogSource {
    /// `server log`, `transcript` or `log`.
    pub label: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogTail {
    pub instance: String,
    pub label: String,
    pub path: PathBuf,
    pub lines: Vec<String>,
    /// Why the file could not be read.
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// What is watched
// ---------------------------------------------------------------------------------------------

/// The instances watched, resolved once at start.
#[derive(Debug, Clone)]
pub struct Target {
    pub title: String,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub kind: Kind,
    pub dir: Option<PathBuf>,
    /// The supervisor settings (control socket, transcript, …); `None` for a remote server.
    pub settings: Option<Settings>,
    /// Displayed address.
    pub address: Option<String>,
    /// Address to ask for status (servers).
    pub probe: Option<String>,
    /// The server's admin socket (replication status, promotion); `None` for a remote server.
    pub admin_socket: Option<PathBuf>,
    /// Configured storages: name, type, Data.fs.
    pub storages: Vec<(String, String, Option<PathBuf>)>,
    pub logs: Vec<LogSource>,
}

impl Target {
    /// The cluster or instance named by `-i`/`-C`/`$ZODBCTL_INSTANCE`/the current directory.
    pub fn from_instance(inst: &Instance) -> Result<Target> {
        let title = inst.dir.file_name().map_or_else(
            || inst.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let members = if inst.cluster().is_some() {
            inst.members()
                .map_err(usage)?
                .iter()
                .map(|(m, i)| member_of(i, Some(m.display_name())))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![member_of(inst, None)?]
        };
        Ok(Target { title, members })
    }

    /// Any ZEO servers, by address.
    pub fn from_addresses(addrs: &[String]) -> Result<Target> {
        let mut members = Vec::new();
        for a in addrs {
            let parsed: instance::Address = a
                .parse()
                .map_err(|e: instance::AddressError| usage(anyhow!("{e}")))?;
            let probe = match parsed.connectable() {
                instance::Address::Unix(p) => p.display().to_string(),
                tcp => tcp
                    .socket_addr_string()
                    .ok_or_else(|| usage(anyhow!("bad address {a:?}")))?,
            };
            members.push(Member {
                name: a.clone(),
                kind: Kind::Remote,
                dir: None,
                settings: None,
                address: Some(a.clone()),
                probe: Some(probe),
                admin_socket: None,
                storages: Vec::new(),
                logs: Vec::new(),
            });
        }
        Ok(Target {
            title: if addrs.len() == 1 {
                addrs[0].clone()
            } else {
                format!("{} ZEO servers", addrs.len())
            },
            members,
        })
    }
}

fn member_of(inst: &Instance, name: Option<String>) -> Result<Member> {
    let settings = settings_of(inst, name)?;
    let mut logs = Vec::new();
    let admin_socket = inst
        .server()
        .map(|_| crate::metrics::replication::admin_socket(inst));
    let (kind, address, probe, storages) = match &inst.config {
        InstanceConfig::Server(c) => {
            let mut c = c.clone();
            c.resolve_paths(&inst.dir);
            if c.eventlog.stream().is_none() {
                logs.push(LogSource {
                    label: "server log".into(),
                    path: c.eventlog.path.clone(),
                });
            }
            let probe = match crate::metrics::check::probe_address(&c).connectable() {
                instance::Address::Unix(p) => Some(p.display().to_string()),
                tcp => tcp.socket_addr_string(),
            };
            let storages = c
                .storages
                .iter()
                .map(|(n, s)| {
                    let path = match s {
                        StorageConfig::File(f) => Some(f.path.clone()),
                        StorageConfig::Memory(_) => None,
                    };
                    (n.clone(), s.type_name().to_owned(), path)
                })
                .collect();
            (
                Kind::Server,
                Some(c.zeo.address.to_string()),
                probe,
                storages,
            )
        }
        InstanceConfig::Client(c) => (
            Kind::Client,
            Some(c.zope.http_address.to_string()),
            None,
            Vec::new(),
        ),
        InstanceConfig::Cluster(_) => {
            return Err(usage(anyhow!(
                "{}: a cluster cannot be a member of a cluster",
                inst.file.display()
            )));
        }
    };
    if let Some(l) = &settings.logfile {
        logs.push(LogSource {
            label: "log".into(),
            path: l.clone(),
        });
    }
    if let Some(t) = &settings.transcript {
        logs.push(LogSource {
            label: "transcript".into(),
            path: t.clone(),
        });
    }
    Ok(Member {
        name: settings.name.clone(),
        kind,
        dir: Some(inst.dir.clone()),
        settings: Some(settings),
        address,
        probe,
        admin_socket,
        storages,
        logs,
    })
}

/// Which log the pane shows: set by the UI, read by the collector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Focus {
    pub instance: Option<String>,
    /// Index into the instance's [`InstanceInfo::logs`] (wraps).
    pub log: usize,
}

// ---------------------------------------------------------------------------------------------
// Collection
// ---------------------------------------------------------------------------------------------

/// Counters of one storage at the previous snapshot, for rates.
struct Prev {
    at: Instant,
    commits: u64,
    loads: u64,
    rates: (Option<f64>, Option<f64>),
    commits_history: VecDeque<f64>,
    loads_history: VecDeque<f64>,
}

/// A cached log tail: re-read only when the file changed.
struct CachedLog {
    path: PathBuf,
    key: (u64, u64, i64, i64),
    lines: Vec<String>,
}

pub struct Collector {
    target: Arc<Target>,
    /// One per member, for servers.
    watches: Vec<Option<probe::ZeoWatch>>,
    seq: u64,
    storages: HashMap<(String, String), Prev>,
    cpu: HashMap<u32, (Instant, u64)>,
    ticks: f64,
    log: Option<CachedLog>,
}

impl Collector {
    pub fn new(target: Arc<Target>) -> Collector {
        let watches = target
            .members
            .iter()
            .map(|m| {
                m.probe.as_ref().map(|a| {
                    probe::ZeoWatch::new(a, m.storages.iter().map(|s| s.0.clone()).collect())
                })
            })
            .collect();
        Collector {
            target,
            watches,
            seq: 0,
            storages: HashMap::new(),
            cpu: HashMap::new(),
            ticks: probe::ticks_per_second(),
            log: None,
        }
    }

    /// Take one snapshot. The members are asked in parallel (one short-lived thread each), so
    /// one that does not answer delays the snapshot by its timeout, not by the sum of them.
    pub fn sample(&mut self, focus: &Focus, interval: Duration) -> Snapshot {
        let now = Instant::now();
        let raw: Vec<RawMember> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .target
                .members
                .iter()
                .zip(self.watches.iter_mut())
                .map(|(m, w)| scope.spawn(move || ask(m, w.as_mut())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| RawMember::unknown()))
                .collect()
        });
        self.seq += 1;
        let mut instances = Vec::with_capacity(raw.len());
        let (mut commits, mut loads, mut any_rate) = (0.0, 0.0, false);
        let members = Arc::clone(&self.target);
        let mut live_pids = Vec::new();
        for (m, r) in members.members.iter().zip(raw) {
            let process = r.proc.map(|(pid, p)| {
                live_pids.push(pid);
                let cpu_percent = self.cpu.get(&pid).and_then(|(at, ticks)| {
                    let secs = now.duration_since(*at).as_secs_f64();
                    (secs > 0.0)
                        .then(|| p.ticks.saturating_sub(*ticks) as f64 / self.ticks / secs * 100.0)
                });
                self.cpu.insert(pid, (now, p.ticks));
                ProcessInfo {
                    pid,
                    cpu_percent,
                    rss_bytes: p.rss,
                }
            });
            let server = m.probe.as_ref().map(|addr| {
                let mut storages = self.storages_of(m, &r.zeo, now, interval);
                if let Some(repl) = &r.replication {
                    for (name, status) in repl {
                        match storages.iter_mut().find(|s| &s.name == name) {
                            Some(s) => s.replication = Some(status.clone()),
                            None => storages.push(StorageInfo {
                                name: name.clone(),
                                replication: Some(status.clone()),
                                ..Default::default()
                            }),
                        }
                    }
                }
                for s in &storages {
                    if let Some(c) = s.commits_per_s {
                        commits += c;
                        any_rate = true;
                    }
                    if let Some(l) = s.loads_per_s {
                        loads += l;
                    }
                }
                storages.sort_by(|a, b| a.name.cmp(&b.name));
                ServerInfo {
                    address: addr.clone(),
                    error: r.zeo.as_ref().err().cloned(),
                    storages,
                }
            });
            instances.push(InstanceInfo {
                name: m.name.clone(),
                kind: m.kind,
                dir: m.dir.clone(),
                address: m.address.clone(),
                status: r.status,
                process,
                server,
                logs: m.logs.clone(),
            });
        }
        self.cpu.retain(|pid, _| live_pids.contains(pid));
        let log = self.log_tail(focus, &instances);
        Snapshot {
            title: self.target.title.clone(),
            taken_at: unix_now(),
            seq: self.seq,
            instances,
            commits_per_s: any_rate.then_some(commits),
            loads_per_s: any_rate.then_some(loads),
            log,
        }
    }

    fn storages_of(
        &mut self,
        m: &Member,
        zeo: &Result<BTreeMap<String, probe::StatusMap>, String>,
        now: Instant,
        interval: Duration,
    ) -> Vec<StorageInfo> {
        let mut out: Vec<StorageInfo> = m
            .storages
            .iter()
            .map(|(name, kind, path)| StorageInfo {
                name: name.clone(),
                kind: Some(kind.clone()),
                path: path.clone(),
                size_bytes: path
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|md| md.len()),
                last_pack: path
                    .as_deref()
                    .and_then(|p| maintenance_record(p, records::Kind::Pack)),
                last_backup: path
                    .as_deref()
                    .and_then(|p| maintenance_record(p, records::Kind::Backup)),
                ..Default::default()
            })
            .collect();
        if let Ok(map) = zeo {
            for (name, status) in map {
                let idx = match out.iter().position(|s| &s.name == name) {
                    Some(i) => i,
                    None => {
                        out.push(StorageInfo {
                            name: name.clone(),
                            ..Default::default()
                        });
                        out.len() - 1
                    }
                };
                apply_status(&mut out[idx], status);
            }
        }
        for s in &mut out {
            let key = (m.name.clone(), s.name.clone());
            let (Some(c), Some(l)) = (s.commits, s.loads) else {
                // Not answering now: keep the history, show no rate.
                if let Some(p) = self.storages.get(&key) {
                    s.commits_history = p.commits_history.iter().copied().collect();
                    s.loads_history = p.loads_history.iter().copied().collect();
                }
                continue;
            };
            match self.storages.get_mut(&key) {
                None => {
                    self.storages.insert(
                        key,
                        Prev {
                            at: now,
                            commits: c,
                            loads: l,
                            rates: (None, None),
                            commits_history: VecDeque::new(),
                            loads_history: VecDeque::new(),
                        },
                    );
                }
                Some(p) => {
                    let secs = now.duration_since(p.at).as_secs_f64();
                    // A snapshot asked for early (a key press) is too short to measure a rate
                    // over: it shows the last rates and leaves the baseline alone.
                    if secs >= interval.as_secs_f64() / 2.0 && secs > 0.0 {
                        // A restarted server starts counting again from zero.
                        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
                        p.rates = (Some(rate(c, p.commits)), Some(rate(l, p.loads)));
                        p.at = now;
                        p.commits = c;
                        p.loads = l;
                        push_bounded(&mut p.commits_history, p.rates.0.unwrap_or(0.0));
                        push_bounded(&mut p.loads_history, p.rates.1.unwrap_or(0.0));
                    }
                    (s.commits_per_s, s.loads_per_s) = p.rates;
                    s.commits_history = p.commits_history.iter().copied().collect();
                    s.loads_history = p.loads_history.iter().copied().collect();
                }
            }
        }
        out
    }

    fn log_tail(&mut self, focus: &Focus, instances: &[InstanceInfo]) -> Option<LogTail> {
        let inst = match &focus.instance {
            Some(name) => instances.iter().find(|i| &i.name == name),
            None => instances.first(),
        }?;
        if inst.logs.is_empty() {
            return None;
        }
        let src = &inst.logs[focus.log % inst.logs.len()];
        let mut tail = LogTail {
            instance: inst.name.clone(),
            label: src.label.clone(),
            path: src.path.clone(),
            ..Default::default()
        };
        match std::fs::metadata(&src.path) {
            Err(e) => tail.error = Some(e.to_string()),
            Ok(md) => {
                let key = (md.ino(), md.len(), md.mtime(), md.mtime_nsec());
                match &self.log {
                    Some(c) if c.path == src.path && c.key == key => tail.lines = c.lines.clone(),
                    _ => match read_tail(&src.path, LOG_LINES) {
                        Ok(lines) => {
                            self.log = Some(CachedLog {
                                path: src.path.clone(),
                                key,
                                lines: lines.clone(),
                            });
                            tail.lines = lines;
                        }
                        Err(e) => tail.error = Some(e.to_string()),
                    },
                }
            }
        }
        Some(tail)
    }
}

fn push_bounded(q: &mut VecDeque<f64>, v: f64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

/// The last `n` lines of a log, reading at most its last 256 KiB (the log pane scrolls
/// further back than `logtail` prints).
fn read_tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    crate::supervisor::commands::tail_lines_within(path, n, 256 * 1024)
}

/// What one member answered (gathered off the collector's thread).
struct RawMember {
    status: Option<InstanceStatus>,
    proc: Option<(u32, probe::ProcSample)>,
    zeo: Result<BTreeMap<String, probe::StatusMap>, String>,
    /// The replicated storages' status from the admin socket, when it answered.
    replication: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RawMember {
    /// A probe thread that panicked: nothing is known.
    fn unknown() -> RawMember {
        RawMember {
            status: None,
            proc: None,
            zeo: Err("not asked".into()),
            replication: None,
        }
    }
}

fn ask(m: &Member, watch: Option<&mut probe::ZeoWatch>) -> RawMember {
    let status = m.settings.as_ref().map(|s| {
        client::json_status(&s.socket).unwrap_or_else(|| {
            InstanceStatus::not_running(&s.name, &s.socket.to_string_lossy(), &s.program)
        })
    });
    let proc = status
        .as_ref()
        .and_then(|s| s.pid)
        .and_then(|pid| probe::proc_sample(pid).map(|p| (pid, p)));
    let running = status.as_ref().is_none_or(|s| s.pid.is_some());
    let zeo = match watch {
        None => Err("not a server".into()),
        // A server whose program is down is not asked: its banner says the manager's state.
        Some(_) if !running => Err("not running".into()),
        Some(w) => w.status(PROBE_TIMEOUT),
    };
    // A local Unix socket: it answers at once or is refused at once (an old server, or one
    // not running, has none).
    let replication = match &m.admin_socket {
        Some(p) if running => probe::replication(p, PROBE_TIMEOUT),
        _ => None,
    };
    RawMember {
        status,
        proc,
        zeo,
        replication,
    }
}

/// Copy runzeo's status keys (and the optional ones zodbctl's server may add) into `s`.
fn apply_status(s: &mut StorageInfo, status: &serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let uint = |k: &str| status.get(k).and_then(Value::as_u64);
    let any = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| status.get(*k).and_then(Value::as_u64))
    };
    s.connections = uint("connections");
    s.loads = uint("loads");
    s.stores = uint("stores");
    s.commits = uint("commits");
    s.aborts = uint("aborts");
    s.conflicts = uint("conflicts");
    s.active_txns = uint("active_txns");
    s.waiting = uint("waiting");
    s.lock_time = status.get("lock_time").and_then(Value::as_f64);
    s.started = status
        .get("start")
        .and_then(Value::as_str)
        .map(str::to_owned);
    s.last_transaction = status
        .get("last-transaction")
        .and_then(Value::as_str)
        .map(str::to_owned);
    s.last_transaction_time = s.last_transaction.as_deref().and_then(tid_time);
    // Not in runzeo's map; zodbctl's server may report them (under one of these names).
    s.objects = any(&["objects", "object_count", "object-count"]);
    if let Some(size) = any(&["size", "file_size", "file-size", "data_size"]) {
        s.size_bytes = Some(size);
    }
    s.lock_holder = ["lock_holder", "lock-holder"]
        .iter()
        .find_map(|k| status.get(*k))
        .and_then(|v| match v {
            Value::Null => None,
            Value::String(t) => Some(t.clone()),
            other => Some(other.to_string()),
        });
    const KNOWN: &[&str] = &[
        "connections",
        "loads",
        "stores",
        "commits",
        "aborts",
        "conflicts",
        "conflicts_resolved",
        "active_txns",
        "waiting",
        "lock_time",
        "start",
        "last-transaction",
        "timeout-thread-is-alive",
        "objects",
        "object_count",
        "object-count",
        "size",
        "file_size",
        "file-size",
        "data_size",
        "lock_holder",
        "lock-holder",
    ];
    s.extra = status
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
}

/// The time of a tid given as 16 hex digits; `None` for the zero tid (empty storage).
fn tid_time(hex: &str) -> Option<f64> {
    let v = u64::from_str_radix(hex, 16).ok().filter(|&v| v != 0)?;
    Some(TimeStamp::from_tid(crate::storage::Tid(v)).time_time())
}

/// The last pack or backup of the storage at `datafs`, from the record the pack and backup
/// commands leave beside it (read by [`crate::metrics::records`], as `zodbctl check` reads
/// it); `None` when there is none. An unreadable record shows with its reason as status.
pub fn maintenance_record(datafs: &Path, kind: records::Kind) -> Option<MaintenanceRecord> {
    let file = records::record_path(datafs, kind);
    match records::last(datafs, kind) {
        records::Last::Absent => None,
        records::Last::Finished(t) => Some(MaintenanceRecord {
            time: Some(t),
            status: Some("ok".into()),
            file,
        }),
        records::Last::Unreadable(why) => Some(MaintenanceRecord {
            time: None,
            status: Some(why),
            file,
        }),
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Run the collector until `publish` returns false: a snapshot now, then one per `interval`,
/// and one at once whenever `wake` receives (the focus changed, an action finished).
pub fn run(
    mut collector: Collector,
    interval: Duration,
    focus: Arc<Mutex<Focus>>,
    wake: Receiver<()>,
    mut publish: impl FnMut(Snapshot) -> bool,
) {
    loop {
        let f = focus.lock().map(|f| f.clone()).unwrap_or_default();
        if !publish(collector.sample(&f, interval)) {
            return;
        }
        let deadline = Instant::now() + interval;
        match wake.recv_timeout(interval) {
            Ok(()) => while wake.try_recv().is_ok() {},
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Nobody wakes us any more; keep the pace.
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runzeo_keys_and_optional_ones() {
        let status: serde_json::Value = serde_json::from_str(
            r#"{"connections": 2, "loads": 10, "stores": 3, "commits": 1, "aborts": 0,
                "active_txns": 0, "lock_time": null, "conflicts": 0, "conflicts_resolved": 0,
                "start": "Sat Nov 21 02:58:35 2026", "waiting": 0,
                "timeout-thread-is-alive": "stub", "last-transaction": "03e5f0a1b2c3d4e5",
                "objects": 42, "new-key": [1]}"#,
        )
        .unwrap();
        let mut s = StorageInfo::default();
        apply_status(&mut s, status.as_object().unwrap());
        assert_eq!(s.connections, Some(2));
        assert_eq!(s.objects, Some(42));
        assert_eq!(s.lock_time, None);
        assert!(s.last_transaction_time.unwrap() > 1.0e9);
        assert_eq!(s.extra.keys().collect::<Vec<_>>(), ["new-key"]);
        assert_eq!(tid_time("0000000000000000"), None);
    }

    #[test]
    fn maintenance_records_are_optional() {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("Data.fs");
        assert_eq!(maintenance_record(&fs, records::Kind::Pack), None);
        std::fs::write(
            records::record_path(&fs, records::Kind::Pack),
            r#"{"finished": 1800000000.5, "bytes_before": 10}"#,
        )
        .unwrap();
        let r = maintenance_record(&fs, records::Kind::Pack).unwrap();
        assert_eq!(r.time, Some(1800000000.5));
        assert_eq!(r.status.as_deref(), Some("ok"));
        std::fs::write(records::record_path(&fs, records::Kind::Backup), "not json").unwrap();
        let r = maintenance_record(&fs, records::Kind::Backup).unwrap();
        assert_eq!(r.time, None);
    }
}
