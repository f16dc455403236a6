//! The daemon manager: one per instance. It owns the control socket, runs the program in its
//! own process group, copies its output into the transcript, restarts it with zdaemon's
//! back-off, and answers the control protocol (`protocol`).
//!
//! The manager is single-threaded: one `poll(2)` loop over the listening socket, the open
//! control connections, a self-pipe woken by signals and the transcript pipe. It is entered
//! right after `fork` (daemon mode) or in place (foreground mode), before any thread or async
//! runtime exists. Delays use the monotonic clock; only the wall-clock fields of the status
//! block use the system clock (§9 item 30).
//!
//! Behaviour differences from zdaemon's zdrun, all deliberate (§9): SIGTERM/SIGINT stop the
//! program (with escalation) before the manager exits; SIGHUP/SIGUSR1/SIGUSR2 reopen the
//! transcript instead of killing the manager; signals go to the program's process group;
//! `stop-timeout` always applies (default 300 s); malformed socket input is answered; every
//! child is reaped in a loop; `backoff-limit 0` means "no back-off", not a busy loop.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use thiserror::Error;

use super::daemon;
use super::protocol::{self, Framing, InstanceStatus, Request, StatusBlock};
use super::ready::{self, Notifier};
use super::settings::{ReadyCheck, Settings};

/// Exit statuses of the manager (§2.16).
pub const EXIT_OK: i32 = 0;
pub const EXIT_GAVE_UP: i32 = 1;
pub const EXIT_TAKEN: i32 = 1;

/// Most control connections served at once; older ones are superseded.
const MAX_CONNECTIONS: usize = 8;
/// A control connection that sends no complete line in this time is dropped.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Between readiness probes of a freshly spawned program.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// SIGKILL is repeated this often while the program survives it.
const KILL_REPEAT: Duration = Duration::from_secs(1);
/// How often leftover members of a stopped program's process group are looked for.
const GROUP_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum ManagerError {
    #[error("another manager is already up using socket '{path}':\n{status}")]
    Taken { path: PathBuf, status: String },
    #[error("can't create the control socket {path}: {err}")]
    Socket { path: PathBuf, err: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Where the manager runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Detached (after the caller forked): setsid, chdir, umask, stdin from /dev/null,
    /// transcript on fds 1 and 2.
    Daemon,
    /// In the caller's process and terminal (`start --foreground`, systemd): output stays on
    /// the terminal, systemd is notified when `NOTIFY_SOCKET` is set.
    Foreground,
}

/// A line in the manager's own log (the transcript in daemon mode, stderr in foreground
/// mode), with zdaemon's message texts (§2.15).
fn mlog(level: &str, msg: &str) {
    // zdaemon's DEBUG lines are hidden at its default INFO level; ZODBCTL_LOG=debug shows them.
    if level == "DEBUG"
        && !std::env::var(crate::logging::LOG_ENV).is_ok_and(|v| v.contains("debug"))
    {
        return;
    }
    let line = format!("{} {level} manager {msg}\n", timestamp(SystemTime::now()));
    // fd 2 is the transcript file (daemon) or the terminal; a failed log write must not stop
    // supervision.
    let _ = io::stderr().write_all(line.as_bytes());
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC, without pulling in a date crate.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn wall(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The wait status in zdaemon's words: `exit status N`, `terminated by SIGX (core dumped)`.
pub fn describe_exit(status: &WaitStatus) -> (Option<i32>, String) {
    match *status {
        WaitStatus::Exited(_, code) => (Some(code), format!("exit status {code}")),
        WaitStatus::Signaled(_, sig, core) => (
            None,
            format!(
                "terminated by {}{}",
                sig.as_str(),
                if core { " (core dumped)" } else { "" }
            ),
        ),
        ref other => (None, format!("unknown termination cause {other:?}")),
    }
}

/// The control socket, bound with zdaemon's link protocol (§2.3) so two managers can't both
/// own it and a stale file left by a killed manager is recovered.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<ControlSocket, ManagerError> {
        let sock_err = |err| ManagerError::Socket {
            path: path.to_path_buf(),
            err,
        };
        let tmp = PathBuf::from(format!("{}.{}", path.display(), std::process::id()));
        for attempt in 0..5 {
            let _ = std::fs::remove_file(&tmp);
            let listener = UnixListener::bind(&tmp).map_err(sock_err)?;
            let linked = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
                .and_then(|()| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    listener.set_nonblocking(true).map_err(sock_err)?;
                    let ino = std::fs::metadata(path).map_err(sock_err)?.ino();
                    return Ok(ControlSocket {
                        listener,
                        path: path.to_path_buf(),
                        ino,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 4 => {
                    drop(listener);
                    match super::client::request(path, "status") {
                        Ok(reply) if protocol::parse_status(&reply).is_some() => {
                            return Err(ManagerError::Taken {
                                path: path.to_path_buf(),
                                status: reply,
                            });
                        }
                        _ => {
                            mlog(
                                "WARNING",
                                &format!("Unlinking stale socket {}; sleep 1", path.display()),
                            );
                            let _ = std::fs::remove_file(path);
                            // zdaemon's pause lets a manager that is just starting answer.
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
                Err(e) => return Err(sock_err(e)),
            }
        }
        Err(sock_err(io::Error::other(
            "gave up after repeated attempts",
        )))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Unlink only our own file: a manager that lost a race must not remove the winner's.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    opened: Instant,
}

/// Signals the manager reacts to, raised by handlers and consumed by the loop.
struct SignalFlags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    chld: Arc<AtomicBool>,
    wake: UnixStream,
}

impl SignalFlags {
    fn install() -> io::Result<SignalFlags> {
        use signal_hook::consts::*;
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let flags = SignalFlags {
            term: Arc::new(AtomicBool::new(false)),
            int: Arc::new(AtomicBool::new(false)),
            reopen: Arc::new(AtomicBool::new(false)),
            chld: Arc::new(AtomicBool::new(false)),
            wake,
        };
        let reg = |sig, flag: &Arc<AtomicBool>| -> io::Result<()> {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, wake_tx.try_clone()?)?;
            Ok(())
        };
        reg(SIGTERM, &flags.term)?;
        reg(SIGINT, &flags.int)?;
        reg(SIGHUP, &flags.reopen)?;
        reg(SIGUSR1, &flags.reopen)?;
        reg(SIGUSR2, &flags.reopen)?;
        reg(SIGCHLD, &flags.chld)?;
        Ok(flags)
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The program's output path in daemon mode: a pipe whose read end the manager copies into
/// the transcript file, so a reopened transcript receives the program's next lines.
struct Transcript {
    path: Option<PathBuf>,
    file: File,
    pipe_r: Option<File>,
    pipe_w: Option<OwnedFd>,
}

impl Transcript {
    fn open(path: Option<&Path>) -> io::Result<Transcript> {
        let file = match path {
            Some(p) => daemon::open_append(p)?,
            None => File::options().write(true).open("/dev/null")?,
        };
        let (pipe_r, pipe_w) = if path.is_some() {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            let r = File::from(r);
            // SAFETY: F_SETFL on a descriptor we own.
            unsafe {
                let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let t = Transcript {
            path: path.map(Path::to_path_buf),
            file,
            pipe_r,
            pipe_w,
        };
        t.install_std()?;
        Ok(t)
    }

    /// The manager's own stdout/stderr (its log, stray output) go straight to the file.
    fn install_std(&self) -> io::Result<()> {
        daemon::dup_onto(&self.file, 1)?;
        daemon::dup_onto(&self.file, 2)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(p) = self.path.clone() {
            self.copy();
            self.file = daemon::open_append(&p)?;
            self.install_std()?;
        }
        Ok(())
    }

    fn program_stdio(&self) -> io::Result<(Stdio, Stdio)> {
        match &self.pipe_w {
            Some(w) => Ok((w.try_clone()?.into(), w.try_clone()?.into())),
            None => Ok((self.file.try_clone()?.into(), self.file.try_clone()?.into())),
        }
    }

    /// Copy whatever the program wrote, unmodified.
    fn copy(&mut self) {
        let Some(r) = &mut self.pipe_r else { return };
        let mut buf = [0u8; 16384];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // A full disk must not stop supervision; the bytes are dropped.
                    let _ = self.file.write_all(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

/// A readiness probe in flight.
enum Probe {
    Idle,
    /// The check command runs as this child.
    Command(Pid),
}

pub struct Manager {
    s: Settings,
    filename: PathBuf,
    socket: ControlSocket,
    conns: Vec<Conn>,
    signals: SignalFlags,
    transcript: Option<Transcript>,
    notifier: Option<Notifier>,
    home_env: Vec<(String, String)>,

    should_be_up: bool,
    pid: Option<Pid>,
    /// Restart not before this instant (back-off), or SIGKILL at it (when `killing`).
    delay: Option<Instant>,
    killing: bool,
    backoff: u64,
    lasttime: Option<(Instant, SystemTime)>,
    testing: bool,
    next_probe: Instant,
    probe: Probe,
    /// Members of the last program's process group still alive after it exited on stop,
    /// and when they get SIGKILL.
    lingering: Option<(Pid, Instant)>,
    started: Instant,
    spawns: u64,
    last_exit: Option<String>,
    ready_notified: bool,
    /// Set when the manager must end with this status once the program is gone.
    exit_status: Option<i32>,
    signal_stops: u32,
}

impl Manager {
    /// Prepare a manager: identity, socket, signals, transcript. In daemon mode the caller
    /// has already forked; this detaches (setsid, chdir, umask, fds) before returning.
    pub fn new(s: Settings, filename: PathBuf, mode: Mode) -> Result<Manager, anyhow::Error> {
        let switch = daemon::plan_switch(s.user.as_deref())?;
        if mode == Mode::Daemon {
            nix::unistd::setsid().map_err(io::Error::from)?;
            daemon::close_inherited_fds();
        } else {
            daemon::cloexec_inherited_fds();
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(parent) = s.socket.parent() {
            dirs.push(parent.to_path_buf());
        }
        if let Some(d) = &s.directory {
            dirs.push(d.clone());
        }
        if let Some(parent) = s.transcript.as_ref().and_then(|t| t.parent()) {
            dirs.push(parent.to_path_buf());
        }
        for d in &dirs {
            daemon::make_dir_for(d, switch.as_ref())?;
        }
        let mut home_env = Vec::new();
        if let Some(id) = &switch {
            if let Some(t) = &s.transcript {
                daemon::chown_file(t, id);
            }
            daemon::switch_to(id)?;
            home_env.push(("HOME".into(), id.home.to_string_lossy().into_owned()));
            home_env.push(("USER".into(), id.name.clone()));
            home_env.push(("LOGNAME".into(), id.name.clone()));
        }
        let socket = ControlSocket::bind(&s.socket)?;
        let signals = SignalFlags::install()?;
        // zdaemon applies `directory` and `umask` in daemon mode only; here they are the
        // program's working directory and mask in both modes, so a foreground manager under
        // systemd runs `runwsgi -v etc/zope.ini` from the instance directory too.
        let chdir = s
            .directory
            .as_ref()
            .map(|d| (d, std::env::set_current_dir(d)));
        let mut transcript = None;
        if mode == Mode::Daemon {
            daemon::stdin_from_devnull()?;
            // The transcript is created before the umask applies, as in zdaemon (§2.4).
            transcript = Some(Transcript::open(s.transcript.as_deref())?);
            mlog("INFO", "daemonizing the process");
        }
        daemon::set_umask(s.umask);
        match chdir {
            Some((d, Ok(()))) => mlog("INFO", &format!("set current directory: '{}'", d.display())),
            Some((d, Err(e))) => mlog(
                "WARNING",
                &format!("can't chdir into '{}': {e}", d.display()),
            ),
            None => {}
        }
        let notifier = if mode == Mode::Foreground {
            Notifier::from_env()
        } else {
            None
        };
        let now = Instant::now();
        Ok(Manager {
            s,
            filename,
            socket,
            conns: Vec::new(),
            signals,
            transcript,
            notifier,
            home_env,
            should_be_up: true,
            pid: None,
            delay: None,
            killing: false,
            backoff: 0,
            lasttime: None,
            testing: false,
            next_probe: now,
            probe: Probe::Idle,
            lingering: None,
            started: now,
            spawns: 0,
            last_exit: None,
            ready_notified: false,
            exit_status: None,
            signal_stops: 0,
        })
    }

    /// Supervise until the program is stopped or gives up; returns the manager's exit status.
    pub fn run(mut self) -> i32 {
        mlog("INFO", "daemon manager started");
        let status = loop {
            if self.should_be_up && self.pid.is_none() && self.delay.is_none() {
                self.spawn();
            }
            if let Some(code) = self.exit_status
                && self.pid.is_none()
                && self.lingering.is_none()
            {
                break code;
            }
            if !self.should_be_up && self.pid.is_none() && self.lingering.is_none() {
                mlog("INFO", "Exiting");
                break EXIT_OK;
            }
            self.wait_for_events();
            // The program's output first, so its last words precede the manager's lines
            // about its exit.
            if let Some(t) = &mut self.transcript {
                t.copy();
            }
            self.handle_signals();
            self.reap();
            self.expire_timers();
            self.probe_readiness();
            self.serve_connections();
        };
        if let Some(n) = &self.notifier {
            let _ = n.notify("STOPPING=1");
        }
        // Clean-up of anything the program left behind in its group (fatal exit, give-up).
        if let Some((pgid, _)) = self.lingering.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if let Some(t) = &mut self.transcript {
            t.copy();
        }
        status
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        // Nothing pending: wake up now and then anyway, as a safety net for a lost signal.
        let mut t = Duration::from_secs(1);
        if let Some(d) = self.delay {
            t = t.min(d.saturating_duration_since(now));
        }
        if self.testing && matches!(self.probe, Probe::Idle) {
            t = t.min(self.next_probe.saturating_duration_since(now));
        }
        if self.lingering.is_some() {
            t = t.min(GROUP_POLL);
        }
        if let Some(c) = self.conns.iter().map(|c| c.opened).min() {
            t = t.min((c + CONNECTION_TIMEOUT).saturating_duration_since(now));
        }
        t
    }

    fn wait_for_events(&mut self) {
        let timeout = self.poll_timeout();
        let mut fds = vec![
            libc::pollfd {
                fd: self.signals.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.socket.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(r) = self.transcript.as_ref().and_then(|t| t.pipe_r.as_ref()) {
            fds.push(libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &self.conns {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // Round up so a pending deadline is not polled for in a tight loop of 0 ms waits.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        self.signals.drain();
    }

    fn handle_signals(&mut self) {
        let term = self.signals.term.swap(false, Ordering::SeqCst);
        let int = self.signals.int.swap(false, Ordering::SeqCst);
        if term || int {
            let name = if term { "SIGTERM" } else { "SIGINT" };
            self.signal_stops += 1;
            if self.signal_stops == 1 {
                mlog(
                    "CRITICAL",
                    &format!("daemon manager killed by {name}; stopping the program"),
                );
                self.stop(false);
                self.exit_status.get_or_insert(EXIT_OK);
            } else if let Some(pid) = self.pid {
                // Asked twice: don't wait for the stop timeout.
                mlog("WARNING", &format!("{name} again; killing pid {pid}"));
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
        if self.signals.reopen.swap(false, Ordering::SeqCst) {
            self.reopen_logs();
        }
    }

    fn reopen_logs(&mut self) {
        if let Some(t) = &mut self.transcript {
            match t.reopen() {
                Ok(()) => mlog("INFO", "transcript reopened"),
                Err(e) => mlog("ERROR", &format!("can't reopen the transcript: {e}")),
            }
        }
    }

    fn spawn(&mut self) {
        let now = Instant::now();
        self.lasttime = Some((now, SystemTime::now()));
        self.spawns += 1;
        let mut cmd = Command::new(&self.filename);
        cmd.arg0(&self.s.program[0])
            .args(&self.s.program[1..])
            .envs(self.home_env.iter().cloned())
            .envs(self.s.environment.iter().cloned())
            // The program answers to its own supervisor protocol, not ours.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            // Its own process group, so stop and kill reach its children too (§9 item 14).
            .process_group(0);
        let manager = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork
        // and exec. If the manager is killed outright (SIGKILL, OOM), the program gets
        // SIGTERM instead of running on unsupervised (zdaemon orphans it, §2.11).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != manager {
                    // The manager died before prctl took effect (no allocation here).
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        if let Some(t) = &self.transcript {
            match t.program_stdio() {
                Ok((out, err)) => {
                    cmd.stdout(out).stderr(err);
                }
                Err(e) => mlog("ERROR", &format!("can't pass the transcript: {e}")),
            }
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // The child is reaped by `reap` (waitpid on every child), not through `child`.
                drop(child);
                self.pid = Some(pid);
                self.testing = self.s.ready.is_some();
                self.next_probe = now;
                mlog("INFO", &format!("spawned process pid={pid}"));
                if !self.testing {
                    self.became_ready();
                }
            }
            Err(e) => {
                // Handled like a program that exited at once with status 127 (§9 item 19).
                mlog(
                    "ERROR",
                    &format!("can't exec '{}': {e}", self.filename.display()),
                );
                self.after_exit(None, 127, "exit status 127".into());
            }
        }
    }

    fn became_ready(&mut self) {
        if !self.ready_notified
            && let Some(n) = &self.notifier
        {
            if let Err(e) = n.notify("READY=1") {
                mlog("WARNING", &format!("can't notify systemd: {e}"));
            }
            self.ready_notified = true;
        }
    }

    fn reap(&mut self) {
        self.signals.chld.store(false, Ordering::SeqCst);
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            if Some(pid) == self.pid {
                mlog("DEBUG", &format!("controlled process {pid} exited"));
                let (code, text) = describe_exit(&status);
                self.program_exited(pid, code, text);
            } else if matches!(self.probe, Probe::Command(p) if p == pid) {
                self.probe = Probe::Idle;
                if matches!(status, WaitStatus::Exited(_, 0)) && self.testing {
                    mlog("DEBUG", "start test succeeded");
                    self.testing = false;
                    self.became_ready();
                } else {
                    self.next_probe = Instant::now() + PROBE_INTERVAL * 2;
                }
            } else {
                mlog("DEBUG", &format!("unknown process {pid} exited"));
            }
        }
    }

    fn program_exited(&mut self, pid: Pid, code: Option<i32>, text: String) {
        self.pid = None;
        self.testing = false;
        // Anything of the program's group still alive (its children) is stopped with it.
        if nix::sys::signal::killpg(pid, None).is_ok() {
            if self.killing || !self.should_be_up {
                let deadline = if self.s.stop_timeout.is_zero() {
                    Instant::now() + KILL_REPEAT
                } else {
                    self.delay
                        .unwrap_or_else(|| Instant::now() + self.s.stop_timeout)
                };
                self.lingering = Some((pid, deadline));
            } else {
                let _ = killpg(pid, Signal::SIGTERM);
            }
        }
        if self.killing {
            // Our own stop or restart: no back-off, no fatal exit codes (§2.8 step 1).
            self.killing = false;
            self.delay = None;
            mlog("INFO", &format!("pid {pid}: {text}"));
            self.last_exit = Some(text);
            return;
        }
        self.after_exit(Some(pid), code.unwrap_or(-1), text);
    }

    /// zdaemon's governor and fatal exit codes (§2.8).
    fn after_exit(&mut self, pid: Option<Pid>, es: i32, text: String) {
        let now = Instant::now();
        self.last_exit = Some(text.clone());
        if let Some((last, _)) = self.lasttime
            && now.duration_since(last) < Duration::from_secs(self.s.backoff_limit)
        {
            self.backoff += 1;
            if self.backoff >= self.s.backoff_limit {
                if self.s.forever {
                    self.backoff = self.s.backoff_limit;
                } else {
                    mlog("CRITICAL", "restarting too frequently; quit");
                    self.should_be_up = false;
                    self.exit_status = Some(EXIT_GAVE_UP);
                    return;
                }
            }
            mlog(
                "INFO",
                &format!("sleep {} to avoid rapid restarts", self.backoff),
            );
            self.delay = Some(now + Duration::from_secs(self.backoff));
        } else {
            self.backoff = 0;
            self.delay = None;
        }
        let who = pid.map_or_else(|| "exec".to_owned(), |p| format!("pid {p}"));
        // A signal death is never fatal (es = -1); a spawn failure (no pid) isn't either.
        if pid.is_some() && es >= 0 && self.s.exit_codes.contains(&es) {
            mlog("INFO", &format!("{who}: {text}; exiting now"));
            self.should_be_up = false;
            self.delay = None;
            self.exit_status = Some(es);
            return;
        }
        mlog("INFO", &format!("{who}: {text}"));
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        if let Some(d) = self.delay
            && d <= now
        {
            self.delay = None;
            if self.killing
                && let Some(pid) = self.pid
            {
                mlog("WARNING", &format!("pid {pid}: still running; SIGKILL"));
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
                self.delay = Some(now + KILL_REPEAT);
            }
        }
        if let Some((pgid, deadline)) = self.lingering {
            if killpg(pgid, None).is_err() {
                self.lingering = None;
            } else if deadline <= now {
                mlog(
                    "WARNING",
                    &format!("process group {pgid} still has members; SIGKILL"),
                );
                let _ = killpg(pgid, Signal::SIGKILL);
                self.lingering = Some((pgid, now + KILL_REPEAT));
            }
        }
    }

    fn probe_readiness(&mut self) {
        if !self.testing || !matches!(self.probe, Probe::Idle) || Instant::now() < self.next_probe {
            return;
        }
        let Some(check) = self.s.ready.clone() else {
            self.testing = false;
            return;
        };
        let ok = match &check {
            ReadyCheck::Zeo(addr) => ready::zeo_handshake(addr).is_ok(),
            ReadyCheck::Connect(addr) => ready::connects(addr).is_ok(),
            ReadyCheck::Http(url) => ready::http_responds(url).is_ok(),
            ReadyCheck::Command(argv) => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .envs(self.s.environment.iter().cloned())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                match cmd.spawn() {
                    Ok(child) => {
                        self.probe = Probe::Command(Pid::from_raw(child.id() as i32));
                        drop(child);
                    }
                    Err(e) => {
                        // zdaemon then calls the program started (§9 item 21); we keep
                        // waiting, so `start` times out with this reason in the transcript.
                        mlog("CRITICAL", &format!("start test can't run: {e}"));
                        self.next_probe = Instant::now() + Duration::from_secs(1);
                    }
                }
                return;
            }
        };
        if ok {
            mlog("DEBUG", "start test succeeded");
            self.testing = false;
            self.became_ready();
        } else {
            self.next_probe = Instant::now() + PROBE_INTERVAL;
        }
    }

    fn signal_group(&self, pid: Pid, sig: Signal) {
        if killpg(pid, sig).is_err() {
            // The program left its group (setsid); signal it alone.
            let _ = kill(pid, sig);
        }
    }

    /// zdaemon's `stop` (§2.9); `restart` reuses it without telling systemd we stop.
    fn stop(&mut self, restarting: bool) -> &'static str {
        self.should_be_up = false;
        self.backoff = 0;
        self.delay = None;
        self.killing = false;
        if !restarting && let Some(n) = &self.notifier {
            let _ = n.notify("STOPPING=1");
        }
        match self.pid {
            Some(pid) => {
                self.signal_group(pid, Signal::SIGTERM);
                self.killing = true;
                if !self.s.stop_timeout.is_zero() {
                    self.delay = Some(Instant::now() + self.s.stop_timeout);
                }
                "Sent SIGTERM"
            }
            None => "Application already stopped",
        }
    }

    fn execute(&mut self, req: &Request) -> Option<String> {
        if let Some(reply) = protocol::static_reply(req) {
            return Some(reply);
        }
        Some(match req {
            Request::Status => self.status_block().render(),
            Request::Json => serde_json::to_string(&self.instance_status()).unwrap_or_default(),
            Request::Start => {
                self.should_be_up = true;
                self.backoff = 0;
                self.delay = None;
                self.killing = false;
                if self.pid.is_none() {
                    self.spawn();
                    "Application started".into()
                } else {
                    "Application already started".into()
                }
            }
            Request::Stop => self.stop(false).into(),
            Request::Restart => {
                self.stop(true);
                self.should_be_up = true;
                if self.pid.is_some() {
                    "Sent SIGTERM; will restart later".into()
                } else {
                    self.spawn();
                    "Application started".into()
                }
            }
            Request::Kill(Ok(n)) => match self.pid {
                None => "Application not running".into(),
                // SAFETY: kill(2) with a pid we spawned and any signal number; errors are
                // reported, not trusted.
                Some(pid) => match unsafe { libc::kill(pid.as_raw(), *n) } {
                    0 => format!("Signal {n} sent"),
                    _ => {
                        let e = io::Error::last_os_error();
                        format!(
                            "Kill {n} failed: [Errno {}] {}",
                            e.raw_os_error().unwrap_or(0),
                            strerror(&e)
                        )
                    }
                },
            },
            Request::ReopenTranscript => {
                self.reopen_logs();
                return None;
            }
            _ => return Some("Internal error".into()),
        })
    }

    fn status_block(&self) -> StatusBlock {
        let now_i = Instant::now();
        let now_w = SystemTime::now();
        let delay = self
            .delay
            .map(|d| wall(now_w) + d.saturating_duration_since(now_i).as_secs_f64());
        StatusBlock {
            now: wall(now_w),
            should_be_up: self.should_be_up,
            delay,
            backoff: self.backoff,
            lasttime: self.lasttime.map(|(_, w)| wall(w)),
            application: self.pid.map_or(0, |p| p.as_raw() as u32),
            testing: self.testing,
            manager: std::process::id(),
            backofflimit: self.s.backoff_limit,
            filename: self.filename.to_string_lossy().into_owned(),
            args: self.s.program.clone(),
        }
    }

    fn instance_status(&self) -> InstanceStatus {
        let now = Instant::now();
        let state = match (self.pid, self.should_be_up) {
            (Some(_), false) => "stopping",
            (Some(_), true) if self.killing => "restarting",
            (Some(_), true) if self.testing => "starting",
            (Some(_), true) => "running",
            (None, true) if self.delay.is_some() => "backoff",
            (None, _) => "stopped",
        };
        InstanceStatus {
            name: self.s.name.clone(),
            state: state.into(),
            manager_pid: Some(std::process::id()),
            pid: self.pid.map(|p| p.as_raw() as u32),
            uptime: self
                .pid
                .and(self.lasttime)
                .map(|(t, _)| now.duration_since(t).as_secs_f64()),
            manager_uptime: Some(now.duration_since(self.started).as_secs_f64()),
            restarts: self.spawns.saturating_sub(1),
            backoff: self.backoff,
            delay: self
                .delay
                .map(|d| d.saturating_duration_since(now).as_secs_f64()),
            last_exit: self.last_exit.clone(),
            ready: self.pid.is_some() && !self.testing,
            should_be_up: self.should_be_up,
            program: self.s.program.clone(),
            socket: self.s.socket.to_string_lossy().into_owned(),
        }
    }

    fn serve_connections(&mut self) {
        loop {
            match self.socket.listener.accept() {
                Ok((stream, _)) => self.accept(stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    mlog("ERROR", &format!("socket.error in doaccept(): {e}"));
                    break;
                }
            }
        }
        let mut i = 0;
        while i < self.conns.len() {
            match self.read_conn(i) {
                Some(reply) => {
                    let conn = self.conns.swap_remove(i);
                    let _ = conn.stream.set_nonblocking(false);
                    let _ = conn
                        .stream
                        .set_write_timeout(Some(Duration::from_millis(500)));
                    if let Some(reply) = reply
                        && let Err(e) = (&conn.stream).write_all(reply.as_bytes())
                    {
                        mlog("WARNING", &format!("Error sending reply: {e}"));
                    }
                }
                None => i += 1,
            }
        }
    }

    fn accept(&mut self, stream: UnixStream) {
        // The socket file is 0700, but a root-owned manager's socket directory might not be;
        // the peer must be us or root.
        let me = nix::unistd::Uid::effective();
        let allowed =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .is_ok_and(|c| c.uid() == me.as_raw() || c.uid() == 0);
        if !allowed {
            let _ = (&stream).write_all(b"Permission denied\n");
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            let old = self.conns.remove(0);
            let _ = old.stream.set_nonblocking(false);
            let _ = (&old.stream).write_all(b"Command superseded by new command\n");
        }
        self.conns.push(Conn {
            stream,
            buf: Vec::new(),
            opened: Instant::now(),
        });
    }

    /// Read what connection `i` sent; `Some(reply)` when it is done (`Some(None)`: close
    /// without a reply).
    fn read_conn(&mut self, i: usize) -> Option<Option<String>> {
        let mut eof = false;
        let mut buf = [0u8; 4096];
        loop {
            let conn = &mut self.conns[i];
            match (&conn.stream).read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    conn.buf.extend_from_slice(&buf[..n]);
                    if conn.buf.len() > protocol::MAX_REQUEST || buf[..n].contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    mlog("ERROR", &format!("socket.error in dorecv(): {e}"));
                    return Some(None);
                }
            }
        }
        let timed_out = self.conns[i].opened.elapsed() > CONNECTION_TIMEOUT;
        match protocol::frame(&self.conns[i].buf, eof || timed_out) {
            Framing::Incomplete => None,
            Framing::Error(msg) => Some(Some(protocol::terminate(msg.into()))),
            Framing::Line(req) => Some(self.execute(&req).map(protocol::terminate)),
        }
    }
}

fn strerror(e: &io::Error) -> String {
    // io::Error's Display appends " (os error N)"; zdaemon shows the bare text.
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Run a manager for `s` in this process until it ends; returns its exit status. In daemon
/// mode the caller has just forked and is the child.
pub fn run(s: Settings, filename: PathBuf, mode: Mode) -> i32 {
    match Manager::new(s, filename, mode) {
        Ok(m) => m.run(),
        Err(e) => {
            let taken = e
                .downcast_ref::<ManagerError>()
                .is_some_and(|m| matches!(m, ManagerError::Taken { .. }));
            eprintln!("zodbctl: error: {e:#}");
            if taken {
                EXIT_TAKEN
            } else if e.downcast_ref::<daemon::IdentityError>().is_some() {
                crate::error::EXIT_USAGE.into()
            } else {
                crate::error::EXIT_FAILURE.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_229_918);
        assert_eq!(timestamp(t), "2026-11-21T02:58:38Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn exit_descriptions() {
        let p = Pid::from_raw(1);
        assert_eq!(
            describe_exit(&WaitStatus::Exited(p, 3)),
            (Some(3), "exit status 3".into())
        );
        assert_eq!(
            describe_exit(&WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            (None, "terminated by SIGKILL".into())
        );
    }
}
