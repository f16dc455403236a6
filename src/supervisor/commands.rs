//! The control commands: start, stop, restart, status, kill, wait, fg, logtail, logreopen, up.
//!
//! Messages and exit statuses are zdaemon's where scripts depend on them (supervisor.md §1.5,
//! §1.8): `daemon process started, pid=N`, `program running; pid=N`, `daemon manager not
//! running`; `status` exits 0 when the manager runs and 3 when it does not; a failed start
//! exits 1. The wait loops print zdaemon's ". " per second but poll every few milliseconds.
//! For a cluster each line is prefixed with the instance name; servers start first (each
//! waits until ready before the next starts), and stop last.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::client;
use super::config::{self, Target};
use super::manager::{self, Mode};
use super::protocol::{InstanceStatus, ParsedStatus};
use super::settings::{ReadyCheck, Settings};
use super::zope;
use crate::cli::{
    CreateServerArgs, GlobalArgs, KillArgs, LogtailArgs, StartArgs, StatusArgs, UpArgs,
};
use crate::error::usage;
use crate::instance;

/// `status` exit status when no manager runs (LSB "not running", zdaemon's 3).
pub const EXIT_NOT_RUNNING: u8 = 3;

/// How often the wait loops look at the manager.
const POLL: Duration = Duration::from_millis(10);
/// zdaemon gives a manager that never answered this long before declaring it dead.
const MANAGER_GRACE: Duration = Duration::from_secs(10);
/// Transcript lines shown when a start fails.
const TAIL_ON_FAILURE: usize = 10;

/// Where a command's messages go: the terminal, or a dashboard (`zodbctl top`), which runs the
/// same functions on a worker thread and shows their lines in its activity line.
#[derive(Clone)]
pub enum Sink {
    Terminal,
    Lines(std::sync::Arc<dyn Fn(String) + Send + Sync>),
}

/// Writes each message line, prefixed with the instance name inside a cluster.
struct Out {
    prefix: String,
    sink: Sink,
    /// Whether the current wait loop printed dots (a cluster's lines skip the empty line).
    dots: std::cell::Cell<bool>,
}

impl Out {
    fn new(target: &Target, s: &Settings) -> Out {
        Out {
            prefix: if target.is_cluster() {
                format!("{}: ", s.name)
            } else {
                String::new()
            },
            sink: Sink::Terminal,
            dots: std::cell::Cell::new(false),
        }
    }

    fn line(&self, msg: &str) {
        match &self.sink {
            Sink::Terminal => println!("{}{msg}", self.prefix),
            Sink::Lines(f) => f(format!("{}{msg}", self.prefix)),
        }
    }

    /// A line of a failure report (standard error on a terminal).
    fn error_line(&self, msg: &str) {
        match &self.sink {
            Sink::Terminal => eprintln!("{msg}"),
            Sink::Lines(f) => f(msg.to_owned()),
        }
    }

    /// zdaemon's progress dots, on a terminal only.
    fn dot(&self) {
        if let Sink::Terminal = self.sink {
            print!(". ");
            self.dots.set(true);
            let _ = io::stdout().flush();
        }
    }

    /// The end of a wait loop: a newline after the dots, then the message (zdaemon's form).
    fn finish(&self, msg: &str) {
        if matches!(self.sink, Sink::Terminal)
            && (self.prefix.is_empty() || self.dots.replace(false))
        {
            println!();
        }
        self.line(msg);
    }
}

/// A control action on one instance, as the CLI commands of the same name do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop,
    Restart,
    Kill(Signal),
    Logreopen,
}

/// Run `action` on one instance with its messages (prefixed with the instance name) sent to
/// `sink`: the dashboard's entry point into the code behind `start`, `stop`, `restart`,
/// `kill` and `logreopen`. Returns the command's exit status.
///
/// `Start` needs a running manager here: a new manager is forked, and forking is only safe
/// from a single-threaded process, which a caller with threads is not (it runs
/// `zodbctl -i DIR start` instead).
pub fn control(s: &Settings, action: Control, sink: Sink) -> Result<u8> {
    let out = Out {
        prefix: format!("{}: ", s.name),
        sink,
        dots: std::cell::Cell::new(false),
    };
    match action {
        Control::Start => start_one(s, &out),
        Control::Stop => stop_one(s, &out),
        Control::Restart => restart_one(s, &out),
        Control::Kill(sig) => {
            send_signal(s, &out, sig);
            Ok(0)
        }
        Control::Logreopen => {
            logreopen_one(s, &out);
            Ok(0)
        }
    }
}

enum Waited {
    Done(ParsedStatus),
    ManagerGone(Option<String>),
    TimedOut,
}

/// zdaemon's wait loop (§1.4): dots each second until `cond` holds, the manager disappears or
/// `timeout` passes. `child` is the manager we just forked, whose early exit ends the wait.
fn await_manager(
    s: &Settings,
    out: &Out,
    mut child: Option<Pid>,
    timeout: Option<Duration>,
    cond: impl Fn(&ParsedStatus) -> bool,
) -> Waited {
    let start = Instant::now();
    let mut dots = 0u64;
    // A manager we did not just fork has answered already; its absence means it is gone.
    let mut seen = child.is_none();
    loop {
        let st = client::status(&s.socket).map(|(p, _)| p);
        match st {
            Some(p) if cond(&p) => return Waited::Done(p),
            Some(_) => seen = true,
            None => {
                if let Some(pid) = child {
                    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => {}
                        Ok(status) => {
                            let (code, text) = manager::describe_exit(&status);
                            let why = match code {
                                Some(c) => format!("the manager exited with status {c}"),
                                None => format!("the manager was {text}"),
                            };
                            return Waited::ManagerGone(Some(why));
                        }
                        Err(_) => child = None,
                    }
                }
                if seen || (child.is_none() && start.elapsed() > MANAGER_GRACE) {
                    return Waited::ManagerGone(None);
                }
            }
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            return Waited::TimedOut;
        }
        std::thread::sleep(POLL);
        let secs = start.elapsed().as_secs();
        if secs > dots {
            dots = secs;
            out.dot();
        }
    }
}

/// The last lines of the transcript, for a failure report.
fn report_failure(s: &Settings, out: &Out, why: &str) {
    out.error_line(&format!("zodbctl: {}: {why}", s.name));
    if let Some(t) = &s.transcript {
        match tail_lines(t, TAIL_ON_FAILURE) {
            Ok(lines) if !lines.is_empty() => {
                out.error_line(&format!("last lines of {}:", t.display()));
                for l in lines {
                    out.error_line(&format!("  {l}"));
                }
            }
            _ => {}
        }
    }
}

/// The last `n` lines of a file, reading at most its last 64 KiB (`logtail`, failure
/// reports).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    // Enough for n ordinary log lines without reading a large file whole.
    tail_lines_within(path, n, 64 * 1024)
}

/// The last `n` lines of a file, reading at most its last `max_bytes` (the first, partial
/// line of that window is dropped).
pub fn tail_lines_within(path: &Path, n: usize, max_bytes: u64) -> io::Result<Vec<String>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// Threads of this process (Linux), 1 if unknown.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Exit statuses beyond 255 or negative are folded the way the shell shows them.
fn exit_byte(code: i32) -> u8 {
    (code & 0xff) as u8
}

fn run_foreground(s: &Settings) -> Result<u8> {
    if let Err(e) = zope::precheck(s) {
        return Err(usage(anyhow!("{}: {e}", s.name)));
    }
    let filename = s.resolve_program().map_err(usage)?;
    if let Some((st, _)) = client::status(&s.socket) {
        println!("daemon process already running; pid={}", st.pid);
        return Ok(1);
    }
    if let Err(e) = zope::prepare(s) {
        eprintln!("zodbctl: {}: {e}", s.name);
        return Ok(1);
    }
    Ok(exit_byte(manager::run(
        s.clone(),
        filename,
        Mode::Foreground,
    )))
}

fn start_one(s: &Settings, out: &Out) -> Result<u8> {
    let mut child = None;
    match client::status(&s.socket) {
        Some((st, _)) if st.pid != 0 && !st.testing => {
            out.line(&format!("daemon process already running; pid={}", st.pid));
            return Ok(0);
        }
        Some(_) => {
            // The manager is up but the program is not (back-off) or not ready yet.
            let _ = client::request(&s.socket, "start");
        }
        None => {
            let filename = s.resolve_program().map_err(usage)?;
            if !s.daemon {
                return Ok(exit_byte(manager::run(
                    s.clone(),
                    filename,
                    Mode::Foreground,
                )));
            }
            if thread_count() > 1 {
                return Err(anyhow!(
                    "internal error: the manager must be forked from a single-threaded process"
                ));
            }
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            // SAFETY: the controller is single-threaded (checked above: no runtime or thread
            // exists before supervisor commands), so the child may run any code after fork.
            match unsafe { nix::unistd::fork() }.context("fork")? {
                ForkResult::Child => {
                    exec_manager(s, &filename);
                    // zodbctl could not be executed again: manage from here, under the
                    // controller's process title.
                    let code = manager::run(s.clone(), filename, Mode::Daemon);
                    std::process::exit(code);
                }
                ForkResult::Parent { child: pid } => child = Some(pid),
            }
        }
    }
    match await_manager(s, out, child, Some(s.start_timeout), |p| {
        p.pid != 0 && !p.testing
    }) {
        Waited::Done(p) => {
            out.finish(&format!("daemon process started, pid={}", p.pid));
            Ok(0)
        }
        Waited::ManagerGone(why) => {
            out.finish("daemon manager not running");
            report_failure(s, out, why.as_deref().unwrap_or("the manager is gone"));
            Ok(1)
        }
        Waited::TimedOut => {
            out.finish("Program took too long to start");
            report_failure(
                s,
                out,
                &format!(
                    "not ready after {} s (start-timeout); the manager keeps trying",
                    s.start_timeout.as_secs()
                ),
            );
            Ok(1)
        }
    }
}

/// The environment variable that carries a daemon manager's settings across the exec.
const MANAGER_SETTINGS_ENV: &str = "ZODBCTL_MANAGER_SETTINGS";

/// In the freshly forked manager: replace this process by `zodbctl manager DIR`, so that
/// `ps` tells the instances apart (`zodbctl manager /srv/site/server`) instead of showing
/// the command that started them. The pid stays the same, so the controller's wait is
/// unaffected. Returns only if the exec failed.
fn exec_manager(s: &Settings, filename: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Ok(json) = serde_json::to_string(&(s, filename)) else {
        return;
    };
    let label = s
        .instance_dir
        .as_ref()
        .map_or_else(|| s.name.clone(), |d| d.display().to_string());
    let _ = std::process::Command::new(exe)
        .arg0("zodbctl")
        .arg("manager")
        .arg(label)
        .env(MANAGER_SETTINGS_ENV, json)
        .exec();
}

/// `zodbctl manager DIR`: the daemon manager [`exec_manager`] started, in daemon mode.
pub fn manager_process() -> Result<u8> {
    let json = std::env::var(MANAGER_SETTINGS_ENV).map_err(|_| {
        usage(anyhow!(
            "`zodbctl manager` is run by `zodbctl start`; use `zodbctl -i DIR start`"
        ))
    })?;
    let (s, filename): (Settings, std::path::PathBuf) =
        serde_json::from_str(&json).context("the manager's settings")?;
    // SAFETY: nothing else runs yet (the manager's first steps); the variable must not reach
    // the supervised program.
    unsafe { std::env::remove_var(MANAGER_SETTINGS_ENV) };
    // `ps -e` and `top` show the short name (at most 15 bytes).
    // SAFETY: PR_SET_NAME copies a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"zodbctl-manager".as_ptr()) };
    Ok(exit_byte(manager::run(s, filename, Mode::Daemon)))
}

fn stop_one(s: &Settings, out: &Out) -> Result<u8> {
    match client::status(&s.socket) {
        None => {
            out.line("daemon manager not running");
            return Ok(0);
        }
        Some((st, _)) if st.pid == 0 && !st.should_be_up => {
            out.line("daemon process not running");
            return Ok(0);
        }
        Some(_) => {}
    }
    let _ = client::request(&s.socket, "stop");
    // The manager exits once the program and its process group are gone: wait for that, so
    // a following `start` finds a clean slate.
    match await_manager(s, out, None, None, |_| false) {
        Waited::ManagerGone(_) => out.finish("daemon process stopped"),
        Waited::Done(_) | Waited::TimedOut => {}
    }
    Ok(0)
}

fn restart_one(s: &Settings, out: &Out) -> Result<u8> {
    let old = match client::status(&s.socket) {
        Some((st, _)) if st.pid != 0 => st.pid,
        _ => return start_one(s, out),
    };
    let _ = client::request(&s.socket, "restart");
    match await_manager(s, out, None, Some(s.start_timeout), |p| {
        p.pid != 0 && p.pid != old && !p.testing
    }) {
        Waited::Done(p) => {
            out.finish(&format!("daemon process restarted, pid={}", p.pid));
            Ok(0)
        }
        Waited::ManagerGone(why) => {
            out.finish("daemon manager not running");
            report_failure(s, out, why.as_deref().unwrap_or("the manager is gone"));
            Ok(1)
        }
        Waited::TimedOut => {
            out.finish("Program took too long to start");
            report_failure(s, out, "not ready within start-timeout");
            Ok(1)
        }
    }
}

pub fn start(g: &GlobalArgs, args: &StartArgs) -> Result<u8> {
    let target = config::load_noting(g)?;
    if args.foreground {
        return run_foreground(&target.single("start --foreground")?);
    }
    // Everything that can be checked is checked before anything starts, so that a missing
    // program or package does not leave half a cluster running.
    let problems: Vec<String> = target
        .members()
        .iter()
        .filter(|s| client::status(&s.socket).is_none())
        .filter_map(|s| zope::precheck(s).err().map(|e| format!("{}: {e}", s.name)))
        .collect();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("zodbctl: {p}");
        }
        return Err(usage(anyhow!("nothing was started")));
    }
    let mut started: Vec<&Settings> = Vec::new();
    for s in target.members() {
        let out = Out::new(&target, s);
        let was_up = client::status(&s.socket).is_some();
        // A running member is left as it is (start_one says so).
        let prepared = if was_up { Ok(false) } else { zope::prepare(s) };
        let code = match prepared {
            Ok(true) => {
                out.line("created the /temp_folder mount point for sessions");
                start_one(s, &out)?
            }
            Ok(false) => start_one(s, &out)?,
            Err(e) => {
                report_failure(s, &out, &e);
                1
            }
        };
        if code != 0 {
            // Clients are not started against a server that is not ready, and a cluster is
            // not left half started: what this command started is stopped again.
            if !started.is_empty() {
                let names: Vec<&str> = started.iter().map(|m| m.name.as_str()).collect();
                eprintln!(
                    "zodbctl: {} did not start; stopping what this command started: {}",
                    s.name,
                    names.join(", ")
                );
                // The failed member's manager may still be retrying: stop it too.
                stop_one(s, &out)?;
                for m in started.iter().rev() {
                    stop_one(m, &Out::new(&target, m))?;
                }
            }
            return Ok(code);
        }
        if !was_up {
            started.push(s);
        }
    }
    Ok(0)
}

pub fn stop(g: &GlobalArgs) -> Result<u8> {
    let target = config::load(g)?;
    for s in target.members().iter().rev() {
        stop_one(s, &Out::new(&target, s))?;
    }
    Ok(0)
}

pub fn restart(g: &GlobalArgs) -> Result<u8> {
    let target = config::load(g)?;
    for s in target.members() {
        let code = restart_one(s, &Out::new(&target, s))?;
        if code != 0 {
            return Ok(code);
        }
    }
    Ok(0)
}

pub fn status(g: &GlobalArgs, args: &StatusArgs) -> Result<u8> {
    let target = config::load(g)?;
    let mut code = 0;
    // Running servers' figures (connections, last commit age, file size), by member name.
    let figures = |name: &str| -> Option<serde_json::Value> {
        let members = crate::metrics::check::members(g).ok()?;
        let (_, inst) = members.into_iter().find(|(n, _)| n == name)?;
        crate::metrics::check::server_figures(&inst, STATUS_FIGURES_TIMEOUT)
    };
    // Running servers' replication, by storage name (their admin socket; none when it does
    // not answer or no storage is replicated).
    let replication = |name: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let members = crate::metrics::check::members(g).ok()?;
        let (_, inst) = members.into_iter().find(|(n, _)| n == name)?;
        crate::metrics::replication::of_instance(&inst, STATUS_FIGURES_TIMEOUT)
            .filter(|m| !m.is_empty())
    };
    // A cluster's records form one document keyed by member name.
    let mut cluster_doc = serde_json::Map::new();
    for s in target.members() {
        if args.json {
            let rec = client::json_status(&s.socket).unwrap_or_else(|| {
                code = EXIT_NOT_RUNNING;
                InstanceStatus::not_running(&s.name, &s.socket.to_string_lossy(), &s.program)
            });
            let running = rec.pid.is_some();
            let mut v = serde_json::to_value(&rec)?;
            if running && let Some(f) = figures(&s.name) {
                v["server"] = f;
            }
            if running && let Some(r) = replication(&s.name) {
                v["replication"] = serde_json::Value::Object(r);
            }
            if target.is_cluster() {
                cluster_doc.insert(s.name.clone(), v);
            } else {
                println!("{}", serde_json::to_string(&v)?);
            }
            continue;
        }
        let out = Out::new(&target, s);
        match client::status(&s.socket) {
            None => {
                out.line("daemon manager not running");
                code = EXIT_NOT_RUNNING;
            }
            Some((st, raw)) => {
                if st.pid == 0 {
                    out.line("daemon manager running; daemon process not running");
                } else {
                    out.line(&format!("program running; pid={}", st.pid));
                }
                if args.long {
                    // zdaemon prints the reply as is, then an empty line.
                    println!("{raw}");
                    if st.pid != 0
                        && let Some(f) = figures(&s.name)
                    {
                        out.line(&format!(
                            "server: {}",
                            crate::metrics::check::figures_line(&f)
                        ));
                    }
                }
                if st.pid != 0
                    && let Some(r) = replication(&s.name)
                {
                    for (name, status) in &r {
                        out.line(&format!(
                            "replication {name}: {}",
                            crate::metrics::replication::summary(status)
                        ));
                    }
                }
            }
        }
    }
    if args.json && target.is_cluster() {
        println!("{}", serde_json::to_string(&cluster_doc)?);
    }
    Ok(code)
}

/// How long `status` waits for a server's figures.
const STATUS_FIGURES_TIMEOUT: Duration = Duration::from_secs(2);

/// A signal by name (any case, with or without `SIG`) or number (§1.5 `kill`).
pub fn parse_signal(arg: &str) -> Result<Signal> {
    let bad = || usage(anyhow!("invalid signal '{arg}'"));
    if let Ok(n) = arg.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    if arg.contains('_') {
        return Err(bad());
    }
    let upper = arg.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

pub fn kill(g: &GlobalArgs, args: &KillArgs) -> Result<u8> {
    let sig = parse_signal(&args.signal)?;
    let target = config::load(g)?;
    for s in target.members() {
        let out = Out::new(&target, s);
        send_signal(s, &out, sig);
    }
    Ok(0)
}

fn send_signal(s: &Settings, out: &Out, sig: Signal) {
    let pid = match client::status(&s.socket) {
        Some((st, _)) if st.pid != 0 => st.pid,
        _ => {
            out.line("daemon process not running");
            return;
        }
    };
    out.line(&format!("kill({pid}, {})", sig as i32));
    match nix::sys::signal::kill(Pid::from_raw(pid as i32), sig) {
        Ok(()) => out.line(&format!("signal {} sent to process {pid}", sig.as_str())),
        Err(e) => out.line(&format!("Error: {}", e.desc())),
    }
}

pub fn wait(g: &GlobalArgs) -> Result<u8> {
    let target = config::load(g)?;
    for s in target.members() {
        let out = Out::new(&target, s);
        if client::status(&s.socket).is_none() {
            out.line("daemon manager not running");
            continue;
        }
        match await_manager(s, &out, None, None, |p| p.pid == 0) {
            Waited::Done(_) => out.finish("daemon process stopped"),
            Waited::ManagerGone(_) | Waited::TimedOut => out.finish("daemon manager not running"),
        }
    }
    status(
        g,
        &StatusArgs {
            json: false,
            long: false,
        },
    )
    .map(|_| 0)
}

pub fn fg(g: &GlobalArgs) -> Result<u8> {
    let s = config::load(g)?.single("fg")?;
    if matches!(client::status(&s.socket), Some((st, _)) if st.pid != 0) {
        println!("To run the program in the foreground, please stop it first.");
        return Ok(1);
    }
    let filename = s.resolve_program().map_err(usage)?;
    println!("{}", shell_words::join(&s.program));
    let _ = io::stdout().flush();
    let mut cmd = std::process::Command::new(&filename);
    cmd.arg0(&s.program[0])
        .args(&s.program[1..])
        .envs(s.environment.iter().cloned());
    if let Some(d) = &s.directory {
        cmd.current_dir(d);
    }
    // exec: the program takes over this process, so its exit status, its signals and
    // systemd's view of the main pid are exactly the program's (§9 item 25).
    let err = cmd.exec();
    Err(anyhow!("can't exec '{}': {err}", filename.display()))
}

pub fn logtail(g: &GlobalArgs, args: &LogtailArgs) -> Result<u8> {
    // An absolute --file needs no instance (zdaemon's `logtail FILE`).
    if let Some(f) = args.file.as_ref().filter(|f| f.is_absolute()) {
        return tail_one(f, args);
    }
    let target = match config::load(g) {
        Ok(t) => t,
        // A relative --file outside any instance is relative to the current directory.
        Err(_) if args.file.is_some() && args.member.is_none() => {
            return tail_one(args.file.as_deref().unwrap_or(Path::new(".")), args);
        }
        Err(e) => return Err(e),
    };
    let members: Vec<&Settings> = match &args.member {
        Some(name) => {
            let found = target.members().iter().find(|s| &s.name == name);
            match found {
                Some(s) if target.is_cluster() => vec![s],
                _ => {
                    let names: Vec<&str> =
                        target.members().iter().map(|s| s.name.as_str()).collect();
                    return Err(usage(anyhow!(
                        "-m {name}: no such member (this {} has: {})",
                        if target.is_cluster() {
                            "cluster"
                        } else {
                            "instance"
                        },
                        names.join(", ")
                    )));
                }
            }
        }
        None => target.members().iter().collect(),
    };
    let files = members
        .iter()
        .map(|s| log_of(s, args.file.as_deref()).map(|f| (s.name.clone(), f)))
        .collect::<Result<Vec<_>>>()?;
    if let [(_, file)] = files.as_slice() {
        return tail_one(file, args);
    }
    // A cluster: each member's last lines, then (with -f) every file followed at once.
    let mut stdout = io::stdout().lock();
    for (name, file) in &files {
        match tail_lines(file, args.lines) {
            Ok(lines) => {
                for l in &lines {
                    writeln!(stdout, "{name}: {l}")?;
                }
            }
            Err(e) => writeln!(stdout, "{name}: ({}: {e})", file.display())?,
        }
    }
    stdout.flush()?;
    drop(stdout);
    if args.follow {
        follow_many(&files)?;
    }
    Ok(0)
}

/// The file `logtail` shows for one instance: `--file` (relative to the instance directory),
/// else `[runner] logfile` (a server's ZEO event log by default), else the transcript.
fn log_of(s: &Settings, file: Option<&Path>) -> Result<std::path::PathBuf> {
    if let Some(f) = file {
        return Ok(match &s.instance_dir {
            Some(d) => instance::resolve_in(d, f),
            None => f.to_path_buf(),
        });
    }
    s.logfile
        .clone()
        .or_else(|| s.transcript.clone())
        .ok_or_else(|| {
            usage(anyhow!(
                "No default log file specified; use logtail --file FILE"
            ))
        })
}

fn tail_one(file: &Path, args: &LogtailArgs) -> Result<u8> {
    let lines =
        tail_lines(file, args.lines).with_context(|| format!("reading {}", file.display()))?;
    let mut stdout = io::stdout().lock();
    for l in &lines {
        writeln!(stdout, "{l}")?;
    }
    stdout.flush()?;
    drop(stdout);
    if args.follow {
        follow(file)?;
    }
    Ok(0)
}

/// One followed file of `logtail -f` on a cluster: complete lines are printed with the
/// member's name in front; rotation and truncation are handled as [`follow`] does.
struct Followed {
    name: String,
    path: std::path::PathBuf,
    file: Option<(std::fs::File, u64)>,
    pos: u64,
    partial: Vec<u8>,
}

impl Followed {
    fn open(name: &str, path: &Path) -> Followed {
        let mut f = Followed {
            name: name.to_owned(),
            path: path.to_path_buf(),
            file: None,
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = std::fs::File::open(path) {
            let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
            f.pos = file.metadata().map(|m| m.len()).unwrap_or(0);
            f.file = Some((file, ino));
        }
        f
    }

    /// Print what was appended since the last call.
    fn poll(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.file.is_none() {
            // Not there yet (a member that never ran): pick it up from its start.
            if let Ok(file) = std::fs::File::open(&self.path) {
                let ino = file.metadata()?.ino();
                self.file = Some((file, ino));
                self.pos = 0;
            }
        }
        let Some((f, ino)) = self.file.as_mut() else {
            return Ok(());
        };
        let len = f.metadata()?.len();
        if len < self.pos {
            self.pos = 0;
        }
        f.seek(SeekFrom::Start(self.pos))?;
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk)?;
        self.pos += chunk.len() as u64;
        let replaced = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != *ino);
        self.emit(&chunk, out)?;
        if replaced {
            // Rotated: the old file is finished; follow the new one from its start.
            self.file = None;
            self.pos = 0;
        }
        Ok(())
    }

    fn emit(&mut self, chunk: &[u8], out: &mut dyn Write) -> io::Result<()> {
        self.partial.extend_from_slice(chunk);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.write_all(self.name.as_bytes())?;
            out.write_all(b": ")?;
            out.write_all(&line)?;
        }
        Ok(())
    }
}

/// `logtail -f` on a cluster: every member's file, each line prefixed. Runs until interrupted.
fn follow_many(files: &[(String, std::path::PathBuf)]) -> Result<()> {
    let mut followed: Vec<Followed> = files.iter().map(|(n, p)| Followed::open(n, p)).collect();
    let mut stdout = io::stdout();
    loop {
        for f in &mut followed {
            f.poll(&mut stdout)?;
        }
        stdout.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `tail -F`: print what is appended; start over when the file is truncated or replaced
/// (log rotation). Runs until interrupted.
fn follow(path: &Path) -> Result<()> {
    let open = |p: &Path| -> io::Result<(std::fs::File, u64)> {
        let f = std::fs::File::open(p)?;
        let ino = f.metadata()?.ino();
        Ok((f, ino))
    };
    let (mut f, mut ino) = open(path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut stdout = io::stdout();
    loop {
        let len = f.metadata()?.len();
        if len < pos {
            writeln!(stdout, "==> File truncated <==")?;
            pos = f.seek(SeekFrom::Start(0))?;
        }
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk)?;
        if !chunk.is_empty() {
            pos += chunk.len() as u64;
            stdout.write_all(&chunk)?;
            stdout.flush()?;
        }
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(m) = std::fs::metadata(path)
            && m.ino() != ino
        {
            // Rotated: finish the old file (lines written before the rename), then follow
            // the new one from its start.
            let mut rest = Vec::new();
            f.read_to_end(&mut rest)?;
            stdout.write_all(&rest)?;
            if let Ok((nf, ni)) = open(path) {
                writeln!(stdout, "==> {} was replaced <==", path.display())?;
                f = nf;
                ino = ni;
                pos = 0;
            }
        }
    }
}

pub fn logreopen(g: &GlobalArgs) -> Result<u8> {
    let target = config::load(g)?;
    for s in target.members() {
        logreopen_one(s, &Out::new(&target, s));
    }
    Ok(0)
}

fn logreopen_one(s: &Settings, out: &Out) {
    if client::status(&s.socket).is_none() {
        out.line("daemon manager not running");
        return;
    }
    let _ = client::request(&s.socket, "reopen_transcript");
    send_signal(s, out, Signal::SIGUSR2);
}

pub fn up(g: &GlobalArgs, args: &UpArgs) -> Result<u8> {
    let dir = match &args.dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        None => config::instance_dir(g)?,
    };
    let inst = match instance::locate_in_dir(&dir) {
        Ok(inst) => inst,
        Err(instance::ConfigError::NotFound { .. }) => {
            // An empty (or missing) directory: lay out a server with every default.
            instance::scaffold::create_server(&CreateServerArgs {
                dir: dir.clone(),
                address: args.address.clone(),
                blobs: false,
                storages: Vec::new(),
                user: None,
                metrics: None,
            })?;
            instance::locate_in_dir(&dir).map_err(usage)?
        }
        Err(e) => return Err(usage(e)),
    };
    let target = config::target_of(&inst)?;
    for s in target.members() {
        let out = Out::new(&target, s);
        let code = start_one(s, &out)?;
        if code != 0 {
            return Ok(code);
        }
        if let Some(ReadyCheck::Zeo(addr)) = &s.ready {
            out.line(&format!("ZEO server ready at {addr}"));
        }
    }
    let g = GlobalArgs {
        instance: Some(dir),
        config: None,
    };
    status(
        &g,
        &StatusArgs {
            json: false,
            long: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_zdaemon() {
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("SigHup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("SIGUSR2").unwrap(), Signal::SIGUSR2);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("ded").is_err());
        assert!(parse_signal("SIG_DFL").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let lines = tail_lines(&p, 10).unwrap();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0], "line 6");
        assert_eq!(lines[9], "line 15");
    }
}
