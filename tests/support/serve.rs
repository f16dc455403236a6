//! One launcher for the servers integration tests talk to: `zodbctl serve` ([`Serve`]) and
//! the reference runzeo from the pinned venv ([`RunZeo`]). Both start a [`Server`]: listening
//! once `start()` returns (a bounded wait that panics with the server's log), killed when
//! dropped.
//!
//! ```ignore
//! let mut server = support::Serve::in_dir(dir.path()).file(&fs_path).msgpack().start();
//! python_client(&server.addr());
//! assert_eq!(server.terminate(), 0);
//! ```

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to listen, or to exit after SIGTERM. Generous: the bound only
/// matters when something is broken, and 2 shared cores can be slow.
pub const SERVER_WAIT: Duration = Duration::from_secs(60);

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp(u16),
    Unix(PathBuf),
}

/// A `zodbctl serve` to start: `Serve::in_dir(dir)`, options, then [`Serve::start`].
///
/// It listens on 127.0.0.1 with a port the kernel picks (read back from the "listening on"
/// line of its event log), unless [`unix`](Serve::unix) names a socket or a configuration
/// ([`config`](Serve::config), [`instance`](Serve::instance)) gives the address. Its standard
/// output and error go to `DIR/serve-N.log`; that is the event log too unless
/// [`log_file`](Serve::log_file) or an instance names another.
#[derive(Clone, Debug)]
#[must_use = "a Serve does nothing until .start()"]
pub struct Serve {
    dir: PathBuf,
    instance: Option<PathBuf>,
    address: Option<OsString>,
    event_log: Option<PathBuf>,
    args: Vec<OsString>,
}

impl Serve {
    /// A server whose output goes to files in `dir`.
    pub fn in_dir(dir: &Path) -> Serve {
        Serve {
            dir: dir.to_path_buf(),
            instance: None,
            address: Some("127.0.0.1:0".into()),
            event_log: None,
            args: Vec::new(),
        }
    }

    /// `-f PATH`: a FileStorage "1".
    pub fn file(self, path: &Path) -> Serve {
        self.arg("-f").arg(path)
    }

    /// `--memory NAME`: a memory storage (repeatable).
    pub fn memory(self, name: &str) -> Serve {
        self.arg("--memory").arg(name)
    }

    /// `--blob-dir DIR` for the file storage.
    pub fn blob_dir(self, dir: &Path) -> Serve {
        self.arg("--blob-dir").arg(dir)
    }

    /// `--msgpack`: announce M5.
    pub fn msgpack(self) -> Serve {
        self.arg("--msgpack")
    }

    pub fn read_only(self) -> Serve {
        self.arg("--read-only")
    }

    /// `-t SECONDS`: the transaction timeout.
    pub fn transaction_timeout(self, seconds: f64) -> Serve {
        self.arg("-t").arg(seconds.to_string())
    }

    pub fn pid_file(self, path: &Path) -> Serve {
        self.arg("--pid-file").arg(path)
    }

    /// `--log-file PATH`: the event log goes there (and is read from there).
    pub fn log_file(mut self, path: &Path) -> Serve {
        self.event_log = Some(path.to_path_buf());
        self.arg("--log-file").arg(path)
    }

    /// Listen on a Unix socket instead of TCP.
    pub fn unix(mut self, socket: &Path) -> Serve {
        self.address = Some(socket.into());
        self
    }

    /// `-a ADDRESS` as given: a bare port (every interface), `[::1]:0`, ... The port is read
    /// back from the "listening on" line; [`addr`](Server::addr) says 127.0.0.1 with it.
    pub fn address(mut self, address: &str) -> Serve {
        self.address = Some(address.into());
        self
    }

    /// `-C FILE`: the configuration (TOML or ZConfig) gives the address and storages; TLS is
    /// configured this way. A TCP address in it should be 127.0.0.1:0.
    pub fn config(mut self, file: &Path) -> Serve {
        self.address = None;
        self.arg("-C").arg(file)
    }

    /// `zodbctl -i DIR serve`: the instance's configuration, with the event log in the
    /// instance's `log/zeo.log` (as `create server` writes it).
    pub fn instance(mut self, dir: &Path) -> Serve {
        self.address = None;
        self.event_log = Some(dir.join("log/zeo.log"));
        self.instance = Some(dir.to_path_buf());
        self
    }

    /// Any other argument for `zodbctl serve`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Serve {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Serve {
        args.into_iter().fold(self, |s, a| s.arg(a))
    }

    /// Start it and wait until it listens.
    pub fn start(self) -> Server {
        Server::launch(Launch::Serve(self))
    }

    /// Run it to its exit, for a start that should fail: its status and output (captured,
    /// not in a log file).
    pub fn run(self) -> Output {
        self.command()
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run zodbctl serve: {e}"))
    }

    fn command(&self) -> Command {
        let mut cmd = super::zodbctl();
        if let Some(dir) = &self.instance {
            cmd.arg("-i").arg(dir);
        }
        cmd.arg("serve");
        if let Some(address) = &self.address {
            cmd.arg("-a").arg(address);
        }
        cmd.args(&self.args);
        cmd
    }

    fn plan(&self) -> Plan {
        let output = log_path(&self.dir, "serve");
        Plan {
            what: "zodbctl serve",
            cmd: self.command(),
            event_log: self.event_log.clone().unwrap_or_else(|| output.clone()),
            output,
            addr: None,
        }
    }
}

/// The reference server, ZEO's runzeo from the pinned venv, to start: `RunZeo::in_dir(dir)`,
/// options, then [`RunZeo::start`]. It runs in `dir`, on 127.0.0.1 with a port that was free
/// a moment ago (runzeo logs the configured port, not the bound one), its output in
/// `DIR/runzeo-N.log`; ready once it accepts a connection.
#[derive(Clone, Debug)]
#[must_use = "a RunZeo does nothing until .start()"]
pub struct RunZeo {
    dir: PathBuf,
    file: Option<PathBuf>,
    unix: Option<PathBuf>,
    msgpack: bool,
}

impl RunZeo {
    pub fn in_dir(dir: &Path) -> RunZeo {
        RunZeo {
            dir: dir.to_path_buf(),
            file: None,
            unix: None,
            msgpack: false,
        }
    }

    /// `-f PATH`.
    pub fn file(mut self, path: &Path) -> RunZeo {
        self.file = Some(path.to_path_buf());
        self
    }

    /// ZEO_MSGPACK=1 (runzeo's switch to M5); otherwise ZEO_MSGPACK is removed.
    pub fn msgpack(mut self, on: bool) -> RunZeo {
        self.msgpack = on;
        self
    }

    /// Listen on a Unix socket instead of TCP.
    pub fn unix(mut self, socket: &Path) -> RunZeo {
        self.unix = Some(socket.to_path_buf());
        self
    }

    /// Start it and wait until it accepts connections.
    pub fn start(self) -> Server {
        Server::launch(Launch::RunZeo(self))
    }

    fn plan(&self) -> Plan {
        let mut cmd = Command::new(super::python().with_file_name("runzeo"));
        let addr = match &self.unix {
            Some(sock) => {
                cmd.arg("-a").arg(sock);
                Addr::Unix(sock.clone())
            }
            None => {
                let port = super::free_port();
                cmd.arg("-a").arg(format!("127.0.0.1:{port}"));
                Addr::Tcp(port)
            }
        };
        if let Some(file) = &self.file {
            cmd.arg("-f").arg(file);
        }
        cmd.current_dir(&self.dir);
        if self.msgpack {
            cmd.env("ZEO_MSGPACK", "1");
        } else {
            cmd.env_remove("ZEO_MSGPACK");
        }
        let output = log_path(&self.dir, "runzeo");
        Plan {
            what: "runzeo",
            cmd,
            event_log: output.clone(),
            output,
            addr: Some(addr),
        }
    }
}

/// What a builder starts (kept for [`Server::restart`]).
#[derive(Clone, Debug)]
enum Launch {
    Serve(Serve),
    RunZeo(RunZeo),
}

/// One start of a server.
struct Plan {
    what: &'static str,
    cmd: Command,
    /// Where its standard output and error go (a new file).
    output: PathBuf,
    /// Where its event log is: `output`, or a file it writes itself.
    event_log: PathBuf,
    /// Known in advance (runzeo: ready when it accepts), or read from the event log.
    addr: Option<Addr>,
}

/// `DIR/PREFIX-N.log`, N counting the starts in this test binary.
fn log_path(dir: &Path, prefix: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    dir.join(format!("{prefix}-{}.log", N.fetch_add(1, Ordering::SeqCst)))
}

/// The address on the first "listening on ..." line of a ZEO event log.
fn listening_addr(log: &str) -> Option<Addr> {
    let rest = &log[log.find("listening on ")? + "listening on ".len()..];
    let line = rest.lines().next()?;
    if let Some(tcp) = line.strip_prefix("('") {
        let tcp = &tcp[tcp.find("', ")? + 3..];
        return tcp[..tcp.find(')')?].parse().ok().map(Addr::Tcp);
    }
    // A Unix socket path: complete once the line's newline is there.
    rest.contains('\n')
        .then(|| Addr::Unix(line.trim_end().into()))
}

fn accepts(addr: &Addr) -> bool {
    match addr {
        Addr::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
        Addr::Unix(path) => UnixStream::connect(path).is_ok(),
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// A running server (zodbctl's or runzeo), SIGKILLed and reaped when dropped.
pub struct Server {
    launch: Launch,
    what: &'static str,
    child: Child,
    addr: Addr,
    output: PathBuf,
    event_log: PathBuf,
}

impl Server {
    fn launch(launch: Launch) -> Server {
        let Plan {
            what,
            mut cmd,
            output,
            event_log,
            addr,
        } = match &launch {
            Launch::Serve(s) => s.plan(),
            Launch::RunZeo(r) => r.plan(),
        };
        // A reused event log keeps the "listening on" lines of earlier starts: skip them.
        let log_from = fs::metadata(&event_log).map_or(0, |m| m.len() as usize);
        let out = File::create(&output).unwrap_or_else(|e| panic!("{}: {e}", output.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the server's log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        // Owned from here on, so a failed start still kills and reaps the child.
        let mut server = Server {
            launch,
            what,
            child,
            addr: Addr::Tcp(0),
            output,
            event_log,
        };
        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            let ready = match &addr {
                Some(known) => accepts(known).then(|| known.clone()),
                None => listening_addr(server.log().get(log_from..).unwrap_or_default()),
            };
            if let Some(addr) = ready {
                server.addr = addr;
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{what} exited with {status} at start:\n{}", server.logs());
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what} did not listen within {SERVER_WAIT:?}:\n{}",
                    server.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address as clients and `zodbctl` take it: `127.0.0.1:PORT` or the socket path.
    pub fn addr(&self) -> String {
        match &self.addr {
            Addr::Tcp(port) => format!("127.0.0.1:{port}"),
            Addr::Unix(path) => path.display().to_string(),
        }
    }

    /// The TCP port (panics for a Unix socket).
    pub fn port(&self) -> u16 {
        match &self.addr {
            Addr::Tcp(port) => *port,
            Addr::Unix(path) => panic!("the server listens on {}, not TCP", path.display()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The event log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.event_log)
    }

    /// The event log and, where that is another file, the output: for failure messages.
    pub fn logs(&self) -> String {
        let mut text = self.log();
        if self.output != self.event_log {
            text += &format!("\n--- {} output\n{}", self.what, read_lossy(&self.output));
        }
        text
    }

    /// Still running (not exited, not reaped).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics (with the logs) when the server has reported a panic; `step` says when.
    pub fn assert_no_panic(&self, step: &str) {
        let text = self.logs();
        let what = self.what;
        assert!(
            !text.contains("panicked"),
            "{what} panicked ({step}):\n{text}"
        );
    }

    /// Panics (with the logs) unless it is running and has not panicked.
    pub fn assert_healthy(&mut self, step: &str) {
        self.assert_no_panic(step);
        if !self.alive() {
            panic!("{} died ({step}):\n{}", self.what, self.logs());
        }
    }

    /// Send `signal` (a `libc::SIG*`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped while it runs.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGKILL and reap; it must not have panicked before.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.assert_no_panic("before SIGKILL");
    }

    /// SIGTERM and a bounded wait: the exit code (-1 for a signal). It must not have
    /// panicked.
    pub fn terminate(&mut self) -> i32 {
        self.sigterm().code().unwrap_or(-1)
    }

    /// [`terminate`](Server::terminate), which must give exit status 0; the event log.
    pub fn stop(&mut self) -> String {
        let status = self.sigterm();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.what,
            self.logs()
        );
        self.log()
    }

    fn sigterm(&mut self) -> ExitStatus {
        if self.alive() {
            self.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + SERVER_WAIT;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let (what, logs) = (self.what, self.logs());
                panic!("{what} did not exit within {SERVER_WAIT:?} of SIGTERM:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.assert_no_panic("at exit");
        status
    }

    /// Stop it if it runs ([`stop`](Server::stop): SIGTERM, status 0), then start it again
    /// with the same options and wait until it listens. A zodbctl server on TCP gets a new
    /// port (ask [`addr`](Server::addr) again); its output goes to a new file.
    pub fn restart(&mut self) {
        if self.alive() {
            self.stop();
        }
        // The old child is reaped: dropping it kills nothing.
        *self = Server::launch(self.launch.clone());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
