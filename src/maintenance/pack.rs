//! `zodbctl pack`: one command for every case (see `PackArgs` in `cli.rs`).
//!
//! * a `Data.fs` (a TARGET ending in `.fs`, or an existing file): packed offline by the
//!   engine ([`crate::storage::pack`]), holding the file's lock (a running server holds it:
//!   then a clear refusal, nothing touched);
//! * `HOST:PORT[:NAME]` or `UNIX_PATH[:NAME]`: the ZEO `pack(t, wait=1)` call, to zodbctl's
//!   server or runzeo, as zeopack does (a read-only registration; an unreachable server is
//!   reported and skipped; a failed pack stops the run with exit status 1; no server
//!   reachable at all is exit status 1);
//! * no TARGET: the server instance's FileStorages (`-i`, `-C`, `$ZODBCTL_INSTANCE`, or
//!   `--storage NAME`), each through the instance's running server when its lock is held
//!   (the server is up), else offline with the storage's `pack-gc`/`pack-keep-old`.
//!
//! The pack time is computed once, as zeopack does: the reference time (now, or today at
//! `-t HH[:MM[:SS]]` local time) minus `-d` days (default: the storage's `pack-days`).
//! On a terminal a progress bar shows the phases; each target ends with a one-line summary
//! (bytes before → after, records and objects removed, duration), or with `--json` one
//! JSON array of result objects on standard output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{GlobalArgs, PackArgs};
use crate::error::{EXIT_FAILURE, usage};
use crate::instance::{self, StorageConfig};
use crate::storage::{self, PackOptions, PackPhase, StorageError};
use crate::zeo::client::Client;
use crate::zeo::wire::Value;

/// How long to wait for a server to accept the connection (zeopack polls 60 times, once a
/// second).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pack through a server may take before the client gives up on the reply.
const PACK_REPLY_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// One thing to pack.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    File {
        path: PathBuf,
        blob_dir: Option<PathBuf>,
        gc: bool,
        keep_old: bool,
        days: Option<u32>,
    },
    Server {
        addr: String,
        storage: String,
        days: Option<u32>,
    },
}

/// `(target, phase, done, total)` of [`Sink::progress`].
pub type ProgressFn = Arc<dyn Fn(&str, &str, u64, u64) + Send + Sync>;

/// Where a pack reports: the command's terminal (standard output and error, an indicatif bar
/// on a terminal), or the caller's callbacks (the dashboard, `zodbctl top`).
#[derive(Clone, Default)]
pub struct Sink {
    /// Summaries, warnings and errors, one line each; `None`: standard output and error.
    pub lines: Option<Arc<dyn Fn(String) + Send + Sync>>,
    /// `(target, phase, done, total)`; `None`: a progress bar when standard error is a
    /// terminal. `total` is 0 when unknown (reachability counts objects; a server pack).
    pub progress: Option<ProgressFn>,
}

impl Sink {
    /// Writing to the terminal: no callbacks given.
    fn terminal(&self) -> bool {
        self.lines.is_none() && self.progress.is_none()
    }
    fn out(&self, line: String) {
        match &self.lines {
            Some(f) => f(line),
            None => println!("{line}"),
        }
    }
    fn err(&self, line: String) {
        match &self.lines {
            Some(f) => f(line),
            None => eprintln!("{line}"),
        }
    }
    fn progress(&self, target: &str, phase: &str, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(target, phase, done, total);
        }
    }
}

pub fn run(g: &GlobalArgs, args: &PackArgs) -> Result<u8> {
    run_with(g, args, &Sink::default())
}

/// `zodbctl pack`, reporting to `sink`.
pub fn run_with(g: &GlobalArgs, args: &PackArgs, sink: &Sink) -> Result<u8> {
    let targets = if args.targets.is_empty() {
        instance_targets(g, args, sink)?
    } else {
        args.targets
            .iter()
            .map(|t| parse_target(t, args))
            .collect::<Result<Vec<_>>>()?
    };
    let reference = reference_time(args.time.as_deref())?;
    let mut results = Vec::new();
    let mut reached = 0usize;
    let mut servers = 0usize;
    let mut status = 0;
    for t in &targets {
        let days = match t {
            Target::File { days, .. } | Target::Server { days, .. } => {
                args.days.unwrap_or(days.map_or(0.0, f64::from))
            }
        };
        let when = args.at.unwrap_or(reference - days * 86400.0);
        match t {
            Target::File {
                path,
                blob_dir,
                gc,
                keep_old,
                ..
            } => match pack_file(path, blob_dir.as_deref(), *gc, *keep_old, when, args, sink) {
                Ok(v) => results.push(v),
                Err(e) => {
                    sink.err(format!("Error packing {}: {e:#}", path.display()));
                    status = EXIT_FAILURE;
                    break;
                }
            },
            Target::Server { addr, storage, .. } => {
                servers += 1;
                match pack_server(addr, storage, when, args, sink) {
                    Ok(Some(v)) => {
                        reached += 1;
                        results.push(v);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        reached += 1;
                        sink.err(format!(
                            "Error:\nError packing storage {storage} in {addr}: {e:#}"
                        ));
                        status = EXIT_FAILURE;
                        break;
                    }
                }
            }
        }
    }
    if status == 0 && servers > 0 && reached == 0 {
        sink.err("Error:\nCannot connect to any of the configured ZEO servers.".into());
        status = EXIT_FAILURE;
    }
    if args.json {
        sink.out(serde_json::Value::Array(results).to_string());
    }
    Ok(status)
}

/// Reference time: now, or today at `HH[:MM[:SS]]` local time.
fn reference_time(at: Option<&str>) -> Result<f64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let Some(at) = at else {
        return Ok(now);
    };
    let bad = || {
        usage(anyhow!(
            "Invalid time value: {at:?} (expected HH[:MM[:SS]])"
        ))
    };
    let parts: Vec<&str> = at.split(':').collect();
    if parts.len() > 3 {
        return Err(bad());
    }
    let mut hms = [0i32; 3];
    for (i, p) in parts.iter().enumerate() {
        hms[i] = p.trim().parse().map_err(|_| bad())?;
    }
    if !(0..24).contains(&hms[0]) || !(0..60).contains(&hms[1]) || !(0..62).contains(&hms[2]) {
        return Err(bad());
    }
    // Today's local date at that time (mktime: the local time zone, DST decided by libc).
    let t = now as libc::time_t;
    // SAFETY: localtime_r and mktime only read and write the `tm` we own.
    let local = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return Err(anyhow!("cannot read the local time"));
        }
        tm.tm_hour = hms[0];
        tm.tm_min = hms[1];
        tm.tm_sec = hms[2];
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    Ok(local as f64)
}

fn parse_target(t: &str, args: &PackArgs) -> Result<Target> {
    let p = Path::new(t);
    if t.ends_with(".fs") || p.is_file() {
        return Ok(Target::File {
            path: p.to_path_buf(),
            blob_dir: args.blob_dir.clone(),
            gc: !args.no_gc,
            keep_old: !args.no_keep_old,
            days: None,
        });
    }
    if args.blob_dir.is_some() {
        return Err(usage(anyhow!(
            "--blob-dir applies to a Data.fs packed offline; a server packs its own blobs"
        )));
    }
    let storage = |n: Option<&str>| n.unwrap_or(&args.server_storage).to_string();
    if t.contains('/') {
        // A Unix socket, optionally followed by :NAME.
        if p.exists() {
            return Ok(Target::Server {
                addr: t.into(),
                storage: storage(None),
                days: None,
            });
        }
        return Ok(match t.rsplit_once(':') {
            Some((path, name)) if !name.contains('/') && !name.is_empty() => Target::Server {
                addr: path.into(),
                storage: name.into(),
                days: None,
            },
            _ => Target::Server {
                addr: t.into(),
                storage: storage(None),
                days: None,
            },
        });
    }
    // HOST:PORT[:NAME], the host possibly a bracketed IPv6 address.
    let (host, rest) = match t.strip_prefix('[') {
        Some(r) => {
            let (h, rest) = r
                .split_once(']')
                .ok_or_else(|| usage(anyhow!("Invalid server specification: {t:?}")))?;
            (format!("[{h}]"), rest.strip_prefix(':').unwrap_or(""))
        }
        None => match t.split_once(':') {
            Some((h, rest)) => (h.to_string(), rest),
            None => return Err(usage(anyhow!("Invalid server specification: {t:?}"))),
        },
    };
    let (port, name) = match rest.split_once(':') {
        Some((p, n)) => (p, Some(n)),
        None => (rest, None),
    };
    if port.parse::<u16>().is_err() || host.is_empty() {
        return Err(usage(anyhow!(
            "Invalid port in server specification: {t:?}"
        )));
    }
    Ok(Target::Server {
        addr: format!("{host}:{port}"),
        storage: storage(name),
        days: None,
    })
}

/// The instance's FileStorages: through its server when that holds the lock, else offline.
fn instance_targets(g: &GlobalArgs, args: &PackArgs, sink: &Sink) -> Result<Vec<Target>> {
    let inst = instance::locate(g)
        .map_err(|e| usage(anyhow!("{e}; or give a Data.fs or a server as TARGET")))?;
    let Some(server) = inst.server() else {
        return Err(usage(anyhow!(
            "{} is a {} instance; give a Data.fs or a server as TARGET",
            inst.file.display(),
            inst.config.kind_name()
        )));
    };
    let mut server = server.clone();
    server.resolve_paths(&inst.dir);
    let addr = server.zeo.address.connectable().to_string();
    let mut out = Vec::new();
    let mut found_any = false;
    for (name, s) in &server.storages {
        if args.storage.as_ref().is_some_and(|w| w != name) {
            continue;
        }
        let StorageConfig::File(f) = s else { continue };
        if !f.path.exists() {
            sink.err(format!(
                "{}: storage {name:?} has no Data.fs yet; nothing to pack",
                f.path.display()
            ));
            found_any = true;
            continue;
        }
        found_any = true;
        let running = storage::lock::LockFile::acquire(&lock_path(&f.path)).is_err();
        if running {
            out.push(Target::Server {
                addr: addr.clone(),
                storage: name.clone(),
                days: Some(f.pack_days),
            });
        } else {
            out.push(Target::File {
                path: f.path.clone(),
                blob_dir: args.blob_dir.clone().or_else(|| f.blob_dir.clone()),
                gc: f.pack_gc && !args.no_gc,
                keep_old: if args.no_keep_old {
                    false
                } else {
                    args.keep_old || f.pack_keep_old
                },
                days: Some(f.pack_days),
            });
        }
    }
    if !found_any {
        return Err(usage(anyhow!(
            "{} has no file storage{}",
            inst.file.display(),
            args.storage
                .as_ref()
                .map(|n| format!(" named {n:?}"))
                .unwrap_or_default()
        )));
    }
    Ok(out)
}

fn lock_path(data_fs: &Path) -> PathBuf {
    let mut s = data_fs.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn bar(args: &PackArgs, sink: &Sink, label: &str) -> ProgressBar {
    if args.json || !sink.terminal() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} {msg:18} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(label.to_string());
    pb
}

fn pack_file(
    path: &Path,
    blob_dir: Option<&Path>,
    gc: bool,
    keep_old: bool,
    when: f64,
    args: &PackArgs,
    sink: &Sink,
) -> Result<serde_json::Value> {
    if !path.is_file() {
        return Err(usage(anyhow!("no such file: {}", path.display())));
    }
    let mut open = storage::OpenOptions::new().progress(!args.json && sink.terminal());
    if let Some(b) = blob_dir {
        open = open.blob_dir(b);
    }
    let fs = match open.open(path) {
        Ok(fs) => fs,
        Err(e @ StorageError::Locked { .. }) => {
            return Err(anyhow!(
                "{e}: a server is using it; pack through the server (zodbctl pack HOST:PORT, or without TARGET in its instance) or stop it first"
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let label = path.display().to_string();
    let pb = bar(args, sink, &label);
    let p2 = pb.clone();
    let s2 = sink.clone();
    let opts = PackOptions {
        gc,
        keep_old,
        progress: Some(Arc::new(move |phase: PackPhase, done, total| {
            p2.set_message(phase.label());
            if total > 0 {
                p2.set_length(total);
                p2.set_position(done.min(total));
            }
            s2.progress(&label, phase.label(), done, total);
        })),
    };
    let r = fs.pack(when, &opts);
    pb.finish_and_clear();
    let r = r?;
    fs.close()?;
    if !args.json {
        sink.out(format!("{}: {}", path.display(), r.summary()));
    }
    let mut v = serde_json::to_value(&r)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("target".into(), path.display().to_string().into());
        m.insert("mode".into(), "offline".into());
    }
    Ok(v)
}

/// Pack through a ZEO server; `Ok(None)` when it cannot be reached (reported, skipped).
fn pack_server(
    addr: &str,
    name: &str,
    when: f64,
    args: &PackArgs,
    sink: &Sink,
) -> Result<Option<serde_json::Value>> {
    let started = Instant::now();
    let mut c = match Client::connect(addr, CONNECT_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            sink.err(format!("Couldn't connect to: ({addr:?}, {name:?}): {e}"));
            return Ok(None);
        }
    };
    c.register(name, true)
        .map_err(|e| anyhow!("registering storage {name:?}: {e}"))?;
    c.set_reply_timeout(PACK_REPLY_TIMEOUT)?;
    let label = format!("{addr}:{name}");
    let pb = bar(args, sink, &label);
    pb.set_message("packing on the server");
    sink.progress(&label, "packing on the server", 0, 0);
    pb.enable_steady_tick(Duration::from_millis(200));
    let r = c.call("pack", &[Value::Float(when), Value::Int(1)]);
    pb.finish_and_clear();
    r.map_err(|e| anyhow!("{e}"))?;
    c.close();
    let secs = started.elapsed().as_secs_f64();
    if !args.json {
        sink.out(format!(
            "{addr}:{name}: packed by the server in {secs:.2}s (details in the server log)"
        ));
    }
    let _ = std::io::stdout().flush();
    Ok(Some(serde_json::json!({
        "target": format!("{addr}:{name}"),
        "mode": "server",
        "outcome": "packed",
        "pack_time": when,
        "duration_seconds": secs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PackArgs {
        PackArgs {
            targets: vec![],
            storage: None,
            server_storage: "1".into(),
            blob_dir: None,
            days: None,
            time: None,
            at: None,
            no_gc: false,
            keep_old: false,
            no_keep_old: false,
            json: false,
        }
    }

    #[test]
    fn targets_parse_like_zeopack() {
        let a = args();
        let srv = |addr: &str, s: &str| Target::Server {
            addr: addr.into(),
            storage: s.into(),
            days: None,
        };
        assert_eq!(
            parse_target("localhost:8100", &a).unwrap(),
            srv("localhost:8100", "1")
        );
        assert_eq!(
            parse_target("h:8100:main", &a).unwrap(),
            srv("h:8100", "main")
        );
        assert_eq!(
            parse_target("[::1]:8100:x", &a).unwrap(),
            srv("[::1]:8100", "x")
        );
        assert_eq!(
            parse_target("/no/such/sock:x", &a).unwrap(),
            srv("/no/such/sock", "x")
        );
        assert!(matches!(
            parse_target("var/Data.fs", &a).unwrap(),
            Target::File {
                gc: true,
                keep_old: true,
                ..
            }
        ));
        assert!(parse_target("a", &a).is_err());
        assert!(parse_target("a:b:2", &a).is_err());
        assert!(reference_time(Some("1:2:3:4")).is_err());
        assert!(reference_time(Some("25")).is_err());
        let t = reference_time(Some("00:00")).unwrap();
        assert!(t <= reference_time(None).unwrap() + 1.0);
    }
}
