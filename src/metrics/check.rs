//! `zodbctl check`: zeoup and zeo-nagios, done right, and a health check of whole instances.
//!
//! Three forms:
//! - `check ADDR[:NAME]`: any ZEO server, runzeo included — connect with a timeout, register
//!   read-only, `lastTransaction`, load the root; `--write` commits a probe as zeoup did (a new
//!   revision of the root with the same state; a ConflictError counts as success).
//! - `check --nagios ADDR[:NAME]`: exactly zeo-nagios (ZEO 6.2 `ZEO/nagios.py`): the `ruok`
//!   request, its messages (`OK`, `Empty storage '1'`, `No storages`, `Can't connect ...`),
//!   exit codes and perfdata (`-m`, `-s`, `-u`), the status file included, so a Nagios or
//!   Icinga configuration can switch. With `:NAME` only that storage is checked; a name the
//!   server does not serve is CRITICAL (`Unknown storage 'NAME'`), which is what zeo-nagios
//!   reports too when given such an address (it cannot connect to it).
//! - `check` (no address): every instance of the cluster, or the one instance.
//!
//! Every form exits with the Nagios codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use super::records::{self, Kind, Last};
use super::ruok::{Addr, RuokError, ruok};
use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::usage;
use crate::instance::{self, Instance, InstanceConfig};
use crate::zeo::client::{Client, ClientError, MAXTID};
use crate::zeo::wire::Value;

/// zeo-nagios's "no transaction yet" last tid.
const NO_TRANSACTION: &str = "0000000000000000";
/// zeo-nagios's metrics: reported as they are, and as rates.
const NODIFF_NAMES: [&str; 3] = ["active_txns", "connections", "waiting"];
const DIFF_NAMES: [&str; 6] = [
    "aborts",
    "commits",
    "conflicts",
    "conflicts_resolved",
    "loads",
    "stores",
];
/// The state of a new root (an empty `PersistentMapping`), as ZODB writes it, for `--write`
/// against a storage that has no root yet.
const EMPTY_ROOT: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\
\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Level {
    pub fn code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub check: String,
    pub status: Level,
    pub message: String,
    /// The figure behind the verdict, for scripts (seconds, bytes, percent...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
}

struct Report {
    instance: Option<String>,
    verdicts: Vec<Verdict>,
}

impl Report {
    fn add(&mut self, check: &str, status: Level, message: String, value: Option<Json>) {
        self.verdicts.push(Verdict {
            instance: self.instance.clone(),
            check: check.to_owned(),
            status,
            message,
            value,
        });
    }
}

pub fn run(g: &GlobalArgs, args: &CheckArgs) -> Result<u8> {
    if args.crit_disk > args.warn_disk {
        return Err(usage(anyhow::anyhow!(
            "--crit-disk ({}%) is above --warn-disk ({}%)",
            args.crit_disk,
            args.warn_disk
        )));
    }
    if args.crit_lag < args.warn_lag {
        return Err(usage(anyhow::anyhow!(
            "--crit-lag ({:?}) is below --warn-lag ({:?})",
            args.crit_lag,
            args.warn_lag
        )));
    }
    if let (Some(target), true) = (&args.target, args.nagios) {
        let (addr, name) = split_target(target);
        let (text, code) = nagios(&addr, name.as_deref(), args);
        println!("{text}");
        return Ok(code);
    }
    let verdicts = match &args.target {
        Some(target) => {
            let (addr, name) = split_target(target);
            let mut r = Report {
                instance: None,
                verdicts: Vec::new(),
            };
            check_server(&mut r, &addr, name.as_deref().unwrap_or("1"), args);
            r.verdicts
        }
        None => check_instances(g, args)?,
    };
    let worst = verdicts
        .iter()
        .map(|v| v.status)
        .max()
        .unwrap_or(Level::Unknown);
    if args.json {
        let doc = json!({"status": worst, "exit": worst.code(), "checks": verdicts});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if args.nagios {
        // Instance mode as a plugin: the first line sums up, problems follow.
        let bad: Vec<&Verdict> = verdicts.iter().filter(|v| v.status != Level::Ok).collect();
        if bad.is_empty() {
            println!("OK");
        } else {
            for v in bad {
                println!("{}", line_of(v));
            }
        }
    } else {
        for v in &verdicts {
            println!("{}", line_of(v));
        }
    }
    Ok(worst.code())
}

fn line_of(v: &Verdict) -> String {
    let who = match &v.instance {
        Some(i) => format!("{i}: {}", v.check),
        None => v.check.clone(),
    };
    format!("{:<8} {who}: {}", v.status.label(), v.message)
}

/// `ADDR[:NAME]` → the address and the storage name, if given. A name follows the port (or a
/// Unix socket path) after one more colon: `127.0.0.1:8100:1`, `[::1]:8100:main`,
/// `var/zeo.sock:1`.
pub fn split_target(s: &str) -> (String, Option<String>) {
    if s.starts_with('[') {
        if let Some(i) = s.find("]:") {
            let rest = &s[i + 2..];
            if let Some((port, name)) = rest.split_once(':') {
                return (format!("{}:{port}", &s[..i + 1]), Some(name.to_owned()));
            }
        }
        return (s.to_owned(), None);
    }
    if s.contains('/') {
        let tail_start = s.rfind('/').map_or(0, |i| i + 1);
        if let Some(j) = s[tail_start..].rfind(':') {
            let at = tail_start + j;
            return (s[..at].to_owned(), Some(s[at + 1..].to_owned()));
        }
        return (s.to_owned(), None);
    }
    if s.matches(':').count() >= 2 {
        if let Some((a, n)) = s.rsplit_once(':') {
            return (a.to_owned(), Some(n.to_owned()));
        }
    }
    (s.to_owned(), None)
}

/// Python's `repr` of a str, as `%r` writes a storage name.
fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Python's `str()` of a float.
fn py_float(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let a = v.abs();
    if v == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{v:?}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Python: mantissa, 'e', sign, at least two exponent digits.
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

/// A JSON value as Python's f-string shows what `json.loads` made of it.
fn py_value(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn new_metric(metrics: &mut Vec<String>, storage: &str, name: &str, value: String) {
    let label = if storage == "1" {
        name.to_owned()
    } else if storage.contains(' ') {
        format!("'{storage}:{name}'")
    } else {
        format!("{storage}:{name}")
    };
    metrics.push(format!("{label}={value}"));
}

/// zeo-nagios's `result`: the messages, the first metric after `|` on the first line, the
/// others on a `| ` line.
fn nagios_result(mut messages: Vec<String>, metrics: &[String]) -> String {
    if let Some(first) = metrics.first() {
        messages[0] = format!("{}|{first}", messages[0]);
    }
    if metrics.len() > 1 {
        messages.push(format!("| {}", metrics[1..].join("\n ")));
    }
    messages.join("\n")
}

fn number(v: Option<&Json>) -> f64 {
    v.and_then(Json::as_f64).unwrap_or(0.0)
}

/// zeo-nagios against `addr`: its output and exit status.
fn nagios(addr: &str, name: Option<&str>, args: &CheckArgs) -> (String, u8) {
    let mut data = match ruok(&Addr::parse(addr), args.timeout) {
        Ok(d) => d,
        Err(e @ RuokError::Connect(_)) => return (e.to_string(), 2),
        Err(e) => return (format!("UNKNOWN: {e}"), 3),
    };
    if let Some(n) = name {
        match data.remove(n) {
            Some(v) => {
                data = Map::new();
                data.insert(n.to_owned(), v);
            }
            None => return (format!("Unknown storage {}", py_repr(n)), 2),
        }
    }
    if data.is_empty() {
        return ("No storages".into(), 1);
    }
    let mut metrics = Vec::new();
    if args.output_metrics {
        // serde_json's map is sorted by key, as zeo-nagios's `sorted(data.items())`.
        for (sid, sdata) in &data {
            for n in NODIFF_NAMES {
                new_metric(
                    &mut metrics,
                    sid,
                    n,
                    py_value(sdata.get(n).unwrap_or(&Json::Null)),
                );
            }
        }
        if let Some(status) = &args.status_path {
            rate_metrics(&mut metrics, &mut data, status, args.time_units.seconds());
        }
    }
    let mut messages = Vec::new();
    let mut level = 0;
    for (sid, sdata) in &data {
        if sdata.get("last-transaction").and_then(Json::as_str) == Some(NO_TRANSACTION) {
            messages.push(format!("Empty storage {}", py_repr(sid)));
            level = level.max(1);
        }
    }
    if messages.is_empty() {
        messages.push("OK".into());
    }
    (nagios_result(messages, &metrics), level)
}

/// zeo-nagios's `-s`: rates against the previous sample in the status file, which is then
/// replaced by this one (same JSON as zeo-nagios writes, so the two can take turns).
fn rate_metrics(metrics: &mut Vec<String>, data: &mut Map<String, Json>, status: &Path, per: f64) {
    let now = std::time::SystemTime::now();
    let unix = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Ok(meta) = std::fs::metadata(status) {
        let dt = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        if dt > 0.0 {
            let old: Map<String, Json> = std::fs::read(status)
                .ok()
                .and_then(|t| serde_json::from_slice(&t).ok())
                .unwrap_or_default();
            let dt = dt / per;
            for (sid, sdata) in data.iter_mut() {
                if let Json::Object(m) = sdata {
                    m.insert("sameple-time".into(), json!(unix));
                }
                if let Some(sold) = old.get(sid) {
                    for n in DIFF_NAMES {
                        let v = (number(sdata.get(n)) - number(sold.get(n))) / dt;
                        new_metric(metrics, sid, n, py_float(v));
                    }
                }
            }
        }
    }
    if let Ok(text) = serde_json::to_string(&*data) {
        let _ = std::fs::write(status, text);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A human age: `42 s`, `3.5 min`, `2.1 h`, `4.0 d`.
pub fn age_text(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

fn now_unix() -> f64 {
    crate::zeo::stats::unix_now()
}

fn tid_hex(t: &[u8; 8]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

fn tid_age(t: &[u8; 8]) -> f64 {
    now_unix() - crate::storage::memory::tid_to_unix(t)
}

/// The last-transaction verdict.
fn last_txn_verdict(r: &mut Report, storage: &str, tid: [u8; 8], args: &CheckArgs) {
    if tid == [0; 8] {
        r.add(
            &format!("storage {storage}"),
            Level::Warning,
            format!("Empty storage {}", py_repr(storage)),
            None,
        );
        return;
    }
    let age = tid_age(&tid);
    let level = match args.warn_commit_age {
        Some(w) if age > w.as_secs_f64() => Level::Warning,
        _ => Level::Ok,
    };
    r.add(
        &format!("storage {storage}"),
        level,
        format!("last transaction {} ({} ago)", tid_hex(&tid), age_text(age)),
        Some(json!({"last_transaction": tid_hex(&tid), "age_seconds": age})),
    );
}

fn is_conflict(e: &ClientError) -> bool {
    match e {
        ClientError::Conflict(_) => true,
        ClientError::Remote { class_path, .. } => class_path.contains("ConflictError"),
        _ => false,
    }
}

/// zeoup done right, against any ZEO server.
fn check_server(r: &mut Report, addr: &str, storage: &str, args: &CheckArgs) {
    let t0 = Instant::now();
    let mut c = match Client::connect(addr, args.timeout) {
        Ok(c) => c,
        Err(e) => {
            r.add(
                "connect",
                Level::Critical,
                format!("Can't connect to {addr}: {e}"),
                None,
            );
            return;
        }
    };
    r.add(
        "connect",
        Level::Ok,
        format!("{addr} answered in {}", ms(t0.elapsed())),
        Some(json!(t0.elapsed().as_secs_f64())),
    );
    let t = Instant::now();
    let last = match c.register(storage, !args.write) {
        Ok(tid) => tid,
        Err(ClientError::Remote { class_path, state }) => {
            let unknown = class_path.ends_with("ValueError");
            let msg = if unknown {
                format!("Unknown storage {}", py_repr(storage))
            } else {
                format!("register failed: {class_path} {state:?}")
            };
            r.add("register", Level::Critical, msg, None);
            return;
        }
        Err(e) => {
            r.add(
                "register",
                Level::Critical,
                format!("register failed: {e}"),
                None,
            );
            return;
        }
    };
    r.add(
        "register",
        Level::Ok,
        format!(
            "storage {} registered {}in {}",
            py_repr(storage),
            if args.write { "" } else { "read-only " },
            ms(t.elapsed())
        ),
        None,
    );
    match c.last_transaction() {
        Ok(tid) => last_txn_verdict(r, storage, tid, args),
        Err(e) => {
            r.add(
                "lastTransaction",
                Level::Critical,
                format!("failed: {e}"),
                None,
            );
            return;
        }
    }
    let t = Instant::now();
    let root = c.call(
        "loadBefore",
        &[Value::Bytes(vec![0; 8]), Value::Bytes(MAXTID.to_vec())],
    );
    let root_serial = match root {
        Ok(Value::Tuple(v)) if v.len() == 3 => {
            let size = match &v[0] {
                Value::Bytes(b) => b.len(),
                _ => 0,
            };
            r.add(
                "root",
                Level::Ok,
                format!("root object loaded ({size} bytes) in {}", ms(t.elapsed())),
                Some(json!(t.elapsed().as_secs_f64())),
            );
            match (&v[0], &v[1]) {
                (Value::Bytes(data), Value::Bytes(s)) => <[u8; 8]>::try_from(s.as_slice())
                    .ok()
                    .map(|s| (s, data.clone())),
                _ => None,
            }
        }
        Ok(Value::Nil) | Err(ClientError::Remote { .. }) if last == [0; 8] => {
            r.add(
                "root",
                Level::Warning,
                "no root object yet (empty storage)".into(),
                None,
            );
            None
        }
        Ok(other) => {
            r.add(
                "root",
                Level::Critical,
                format!("unexpected reply {other:?}"),
                None,
            );
            return;
        }
        Err(e) => {
            r.add(
                "root",
                Level::Critical,
                format!("loading the root failed: {e}"),
                None,
            );
            return;
        }
    };
    if args.write {
        let t = Instant::now();
        // The root's own state again (or a fresh root): a new revision that changes nothing,
        // which every client's cache simply reloads.
        let (serial, data) = root_serial.unwrap_or(([0; 8], EMPTY_ROOT.to_vec()));
        match c.commit("zodbctl check probe", &[([0; 8], serial, data)]) {
            Ok(tid) => r.add(
                "write",
                Level::Ok,
                format!(
                    "probe committed as {} in {}",
                    tid_hex(&tid),
                    ms(t.elapsed())
                ),
                Some(json!(t.elapsed().as_secs_f64())),
            ),
            Err(e) if is_conflict(&e) => r.add(
                "write",
                Level::Ok,
                "probe met a ConflictError: another client committed; the server commits".into(),
                None,
            ),
            Err(e) => r.add(
                "write",
                Level::Critical,
                format!("commit failed: {e}"),
                None,
            ),
        }
    }
    c.close();
}

/// The instances `check` and `status` look at: (name, instance).
pub fn members(g: &GlobalArgs) -> Result<Vec<(String, Instance)>> {
    let inst = instance::locate(g).map_err(usage)?;
    if inst.cluster().is_some() {
        return Ok(inst
            .members()
            .map_err(usage)?
            .into_iter()
            .map(|(m, i)| (m.display_name(), i))
            .collect());
    }
    let name = inst.dir.file_name().map_or_else(
        || "instance".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(vec![(name, inst)])
}

/// Where a server instance's clients connect: its address, or for a replica its
/// read-only address when it has one (the writable one opens only at promotion).
pub fn server_addr(inst: &Instance) -> Option<Addr> {
    use crate::instance::Address;
    let sc = inst.server()?;
    Some(match probe_address(sc).connectable() {
        Address::Tcp { host, port } => Addr::Tcp(host, port),
        Address::Unix(p) => Addr::Unix(inst.resolve(&p).display().to_string()),
    })
}

/// The address to ask a server for its status: a replica's read-only address when it has
/// one (its writable address is closed until it is promoted), else its address.
pub fn probe_address(sc: &crate::instance::ServerConfig) -> &crate::instance::Address {
    match &sc.zeo.read_only_address {
        Some(ro) if sc.is_replica() => ro,
        _ => &sc.zeo.address,
    }
}

/// The file storages of a server instance: (name, Data.fs).
pub fn file_storages(inst: &Instance) -> Vec<(String, PathBuf)> {
    use crate::instance::StorageConfig;
    let Some(sc) = inst.server() else {
        return Vec::new();
    };
    sc.storages
        .iter()
        .filter_map(|(n, s)| match s {
            StorageConfig::File(f) => Some((n.clone(), inst.resolve(&f.path))),
            StorageConfig::Memory(_) => None,
        })
        .collect()
}

fn check_instances(g: &GlobalArgs, args: &CheckArgs) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    for (name, inst) in members(g)? {
        let mut r = Report {
            instance: Some(name.clone()),
            verdicts: Vec::new(),
        };
        let settings = crate::supervisor::config::settings_of(&inst, Some(name.clone()))?;
        let status = crate::supervisor::client::json_status(&settings.socket);
        let uptime = status.as_ref().and_then(|st| st.uptime);
        match status {
            None => r.add(
                "manager",
                Level::Critical,
                "daemon manager not running".into(),
                None,
            ),
            Some(st) => {
                let level = match st.state.as_str() {
                    "running" => Level::Ok,
                    "starting" | "backoff" | "stopping" => Level::Warning,
                    _ => Level::Critical,
                };
                let pid = st.pid.map_or(String::new(), |p| format!(", pid {p}"));
                let up = st
                    .uptime
                    .map_or(String::new(), |u| format!(", up {}", age_text(u)));
                r.add("program", level, format!("{}{pid}{up}", st.state), None);
            }
        }
        if matches!(inst.config, InstanceConfig::Server(_)) {
            check_server_instance(&mut r, &inst, args);
            check_replication(&mut r, &inst, args, uptime);
        }
        out.extend(r.verdicts);
    }
    Ok(out)
}

fn check_server_instance(r: &mut Report, inst: &Instance, args: &CheckArgs) {
    let Some(addr) = server_addr(inst) else {
        return;
    };
    let t = Instant::now();
    let data = match ruok(&addr, args.timeout) {
        Ok(d) => {
            let conns: f64 = d.values().map(|s| number(s.get("connections"))).sum();
            r.add(
                "server",
                Level::Ok,
                format!(
                    "{addr} answered in {}, {conns} connections",
                    ms(t.elapsed())
                ),
                Some(json!(conns)),
            );
            Some(d)
        }
        Err(e) => {
            r.add("server", Level::Critical, format!("{addr}: {e}"), None);
            None
        }
    };
    if let (Some(data), Some(sc)) = (&data, inst.server()) {
        for name in sc.storages.keys() {
            let Some(s) = data.get(name) else {
                r.add(
                    &format!("storage {name}"),
                    Level::Critical,
                    "not served".into(),
                    None,
                );
                continue;
            };
            let tid = s
                .get("last-transaction")
                .and_then(Json::as_str)
                .and_then(parse_tid)
                .unwrap_or([0; 8]);
            last_txn_verdict(r, name, tid, args);
            if let Some(since) = s.get("lock_time").and_then(Json::as_f64) {
                let held = (now_unix() - since).max(0.0);
                let level = if held >= args.crit_lock.as_secs_f64() {
                    Level::Critical
                } else if held >= args.warn_lock.as_secs_f64() {
                    Level::Warning
                } else {
                    Level::Ok
                };
                r.add(
                    &format!("lock {name}"),
                    level,
                    format!("commit lock held for {held:.1} s"),
                    Some(json!(held)),
                );
            }
        }
    }
    for (name, path) in file_storages(inst) {
        disk_verdict(r, &name, &path, args);
        for kind in [Kind::Pack, Kind::Backup] {
            age_verdict(r, &name, &path, kind, args);
        }
    }
}

/// The replicated storages of a running server, from its admin socket: one verdict each.
/// None when the socket does not answer and the server is not running or is not configured
/// to replicate (an older server has no admin socket); a warning when a running server
/// configured to replicate does not answer on it.
fn check_replication(r: &mut Report, inst: &Instance, args: &CheckArgs, uptime: Option<f64>) {
    use super::replication;
    let timeout = args.timeout.min(replication::ADMIN_TIMEOUT);
    let Some(storages) = replication::of_instance(inst, timeout) else {
        if uptime.is_some() && replication::configured(inst) {
            r.add(
                "replication",
                Level::Warning,
                format!(
                    "replication status unknown: the admin socket {} does not answer",
                    replication::admin_socket(inst).display()
                ),
                None,
            );
        }
        return;
    };
    let limits = replication::Limits {
        warn_lag: args.warn_lag.as_secs_f64(),
        crit_lag: args.crit_lag.as_secs_f64(),
        silence: replication::silence_limit(inst),
        uptime,
    };
    for (name, status) in &storages {
        let (level, message) = replication::verdict(status, &limits);
        r.add(
            &format!("replication {name}"),
            level,
            message,
            Some(json!({
                "status": status,
                "warn_lag_seconds": limits.warn_lag,
                "crit_lag_seconds": limits.crit_lag,
            })),
        );
    }
}

fn parse_tid(hex: &str) -> Option<[u8; 8]> {
    let v = u64::from_str_radix(hex, 16).ok()?;
    Some(v.to_be_bytes())
}

fn disk_verdict(r: &mut Report, name: &str, path: &Path, args: &CheckArgs) {
    let probe = if path.exists() {
        path.to_path_buf()
    } else {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let check = format!("disk {name}");
    match super::exposition::disk_space(&probe) {
        Some((avail, total)) if total > 0.0 => {
            let pct = avail / total * 100.0;
            let level = if pct < args.crit_disk {
                Level::Critical
            } else if pct < args.warn_disk {
                Level::Warning
            } else {
                Level::Ok
            };
            r.add(
                &check,
                level,
                format!(
                    "{pct:.1}% free ({:.1} GiB) beside {}",
                    avail / (1u64 << 30) as f64,
                    path.display()
                ),
                Some(json!({"free_percent": pct, "free_bytes": avail})),
            );
        }
        _ => r.add(
            &check,
            Level::Unknown,
            format!("cannot read the file system of {}", path.display()),
            None,
        ),
    }
}

fn age_verdict(r: &mut Report, name: &str, path: &Path, kind: Kind, args: &CheckArgs) {
    let limit = match kind {
        Kind::Pack => args.warn_pack_age,
        Kind::Backup => args.warn_backup_age,
    };
    let check = format!("{} {name}", kind.name());
    match records::last(path, kind) {
        Last::Absent => r.add(
            &check,
            Level::Ok,
            format!("no {} recorded", kind.name()),
            None,
        ),
        Last::Unreadable(e) => r.add(&check, Level::Unknown, e, None),
        Last::Finished(t) => {
            let age = now_unix() - t;
            let level = match limit {
                Some(l) if age > l.as_secs_f64() => Level::Warning,
                _ => Level::Ok,
            };
            r.add(
                &check,
                level,
                format!("last {} finished {} ago", kind.name(), age_text(age)),
                Some(json!(age)),
            );
        }
    }
}

/// Key figures of a running server instance for `status`: connections, and per storage the
/// last transaction and its age, and the file size. `None` when it does not answer.
pub fn server_figures(inst: &Instance, timeout: Duration) -> Option<Json> {
    let addr = server_addr(inst)?;
    let data = ruok(&addr, timeout).ok()?;
    let files: std::collections::HashMap<String, PathBuf> =
        file_storages(inst).into_iter().collect();
    let mut storages = Map::new();
    let mut conns = 0.0;
    for (name, s) in &data {
        conns += number(s.get("connections"));
        let tid = s
            .get("last-transaction")
            .and_then(Json::as_str)
            .and_then(parse_tid)
            .unwrap_or([0; 8]);
        let size = s.get("size").and_then(Json::as_u64).or_else(|| {
            files
                .get(name)
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
        });
        storages.insert(
            name.clone(),
            json!({
                "connections": s.get("connections"),
                "last_transaction": tid_hex(&tid),
                "last_commit_age": (tid != [0; 8]).then(|| tid_age(&tid)),
                "size": size,
            }),
        );
    }
    Some(json!({"address": addr.to_string(), "connections": conns as u64, "storages": storages}))
}

/// One line of figures for `status`'s long form.
pub fn figures_line(f: &Json) -> String {
    let mut parts = vec![format!("connections={}", f["connections"])];
    if let Some(m) = f["storages"].as_object() {
        for (name, s) in m {
            let age = s["last_commit_age"]
                .as_f64()
                .map_or("never".into(), age_text);
            let size = s["size"].as_u64().map_or("?".into(), |b| b.to_string());
            parts.push(format!(
                "storage {name}: last commit {age} ago, size {size} bytes, connections {}",
                s["connections"]
            ));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            split_target("127.0.0.1:8100"),
            ("127.0.0.1:8100".into(), None)
        );
        assert_eq!(
            split_target("127.0.0.1:8100:1"),
            ("127.0.0.1:8100".into(), Some("1".into()))
        );
        assert_eq!(
            split_target("[::1]:8100:main"),
            ("[::1]:8100".into(), Some("main".into()))
        );
        assert_eq!(
            split_target("/run/zeo.sock:1"),
            ("/run/zeo.sock".into(), Some("1".into()))
        );
        assert_eq!(split_target("var/zeo.sock"), ("var/zeo.sock".into(), None));
    }

    #[test]
    fn python_formatting() {
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(2.0), "2.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(1.5e20), "1.5e+20");
        assert_eq!(py_repr("1"), "'1'");
        let mut m = Vec::new();
        new_metric(&mut m, "1", "loads", "3".into());
        new_metric(&mut m, "a b", "loads", "3".into());
        new_metric(&mut m, "x", "loads", "3".into());
        assert_eq!(m, ["loads=3", "'a b:loads'=3", "x:loads=3"]);
        assert_eq!(
            nagios_result(vec!["OK".into()], &m),
            "OK|loads=3\n| 'a b:loads'=3\n x:loads=3"
        );
    }
}
