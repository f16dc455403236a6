//! Shared helpers for integration tests: the zodbctl binary, free ports, a pinned Python
//! virtualenv with ZODB/ZEO/zdaemon (created under `target/` on first use), and
//! - [`Serve`] / [`RunZeo`]: start `zodbctl serve` or the reference runzeo, listening, as a
//!   [`Server`] that is killed when dropped (`serve.rs`);
//! - [`damage`]: the verify/dump tests' damaged Data.fs copies;
//! - [`tls`]: a CA with server and client certificates for the TLS tests (`openssl`);
//! - [`raw`]: a ZEO connection driven frame by frame (hostile-input and ordering tests).
//!
//! Each test binary includes this with `mod support;`; not every helper is used by each
//! (hence the allowances: an unused helper or re-export is not a warning).
#![allow(dead_code, unused_imports)]

pub mod damage;
pub mod raw;
mod serve;
pub mod tls;

pub use serve::{RunZeo, Serve, Server};

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `zodbctl` binary under test.
pub fn zodbctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zodbctl"))
}

/// `zodbctl -i DIR`, for the arguments that follow.
pub fn zodbctl_in(dir: &Path) -> Command {
    let mut cmd = zodbctl();
    cmd.arg("-i").arg(dir);
    cmd
}

/// Run `zodbctl -i DIR ARGS...`; its output, whatever its status.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    zodbctl_in(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run zodbctl -i {} {args:?}: {e}", dir.display()))
}

/// assert_cmd's view of the binary, for CLI assertions.
pub fn zodbctl_cmd() -> assert_cmd::Command {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_zodbctl"))
}

/// The checkout's top directory.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory (where the venv lives).
pub fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp for integration tests.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// A TCP port on 127.0.0.1 that was free a moment ago, with its neighbours on both sides
/// free too (p-1 ..= p+6): `create cluster` puts its server's metrics endpoint one below the
/// base port and its clients just above, then, with `--replicas`, the server's replication
/// port and four ports per replica (one client and one replica reach p+6); and a port the
/// kernel hands out is in the ephemeral range, where outgoing connections take local ports
/// too.
pub fn free_port() -> u16 {
    let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut last = 0;
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = listener.local_addr().expect("local addr").port();
        last = p;
        if p > 1025 && p < u16::MAX - 7 && bindable(p - 1) && (1..=6).all(|i| bindable(p + i)) {
            return p;
        }
    }
    last
}

/// Path of the Python interpreter of the pinned virtualenv, creating it if needed.
///
/// Creation is guarded by an flock on `target/pyenv.lock`, so parallel test binaries wait for
/// one creator. The venv is rebuilt when `tests/requirements.txt` changes.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(create_venv).clone()
}

fn create_venv() -> PathBuf {
    make_venv("pyenv", &["tests/requirements.txt"])
}

/// The virtualenv with real Zope (`tests/requirements-zope.txt` on top of
/// `tests/requirements.txt`), created once under `target/pyenv-zope` like [`python`]'s; its
/// directory. A venv of its own, so that installing Zope never changes what the other tests'
/// venv holds while they run.
pub fn zope_venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let python = make_venv(
            "pyenv-zope",
            &["tests/requirements.txt", "tests/requirements-zope.txt"],
        );
        python
            .parent()
            .and_then(Path::parent)
            .expect("venv/bin/python")
            .to_path_buf()
    })
    .clone()
}

/// Create (once, under an flock) `target/NAME` with the requirement files installed; its
/// Python. Rebuilt when the files change.
fn make_venv(name: &str, requirement_files: &[&str]) -> PathBuf {
    let target = target_dir();
    fs::create_dir_all(&target).expect("create target dir");
    let venv = target.join(name);
    let python = venv.join("bin/python");
    let wanted: String = requirement_files
        .iter()
        .map(|f| {
            fs::read_to_string(repo_root().join(f)).unwrap_or_else(|e| panic!("read {f}: {e}"))
        })
        .collect();
    let stamp = venv.join("requirements.txt");

    let lock = File::create(target.join(format!("{name}.lock"))).expect("create venv lock");
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock target/pyenv.lock");

    if python.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let _ = fs::remove_dir_all(&venv);
    let base = std::env::var("ZODBCTL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("creating the test virtualenv in {} (once)", venv.display());
    run_ok(
        Command::new(&base).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    for f in requirement_files {
        pip.arg("-r").arg(repo_root().join(f));
    }
    run_ok(
        &mut pip,
        &format!("pip install -r {}", requirement_files.join(" -r ")),
    );
    fs::write(&stamp, &wanted).expect("write venv stamp");
    python
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a Python snippet in the venv with `args` as sys.argv[1:]; panics with its output on
/// failure, returns its output on success.
pub fn run_python(script: &str, args: &[&str]) -> Output {
    let out = python_command(script, args).output().expect("run python");
    assert!(
        out.status.success(),
        "python failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run_python`]'s standard output, as text: what a scenario script printed.
pub fn python_stdout(script: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run_python(script, args).stdout).into_owned()
}

/// A path as an argument list of `&str` wants it (the tests' paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Write a server configuration at `dir/NAME` (NAME may be `etc/zeo.toml`), creating its
/// folder and `dir/var` (where the configurations keep Data.fs and pid files); its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    for folder in [path.parent().unwrap_or(dir), &dir.join("var")] {
        fs::create_dir_all(folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A `Command` running a Python snippet in the venv, for tests that need more control.
pub fn python_command(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// `tools/make_datafs.py`: the project's deterministic Data.fs generator (real ZODB, seeded).
pub fn make_datafs_script() -> PathBuf {
    repo_root().join("tools/make_datafs.py")
}

/// Write a realistic Data.fs of about `size_mb` MB at `path` with `tools/make_datafs.py`
/// (Python ZODB), its blobs in `blobs` if given; panics with the script's output on failure.
pub fn make_datafs(path: &Path, size_mb: &str, blobs: Option<&Path>) {
    let mut cmd = Command::new(python());
    cmd.arg(make_datafs_script())
        .arg(path)
        .args(["--size-mb", size_mb]);
    if let Some(blobs) = blobs {
        cmd.arg("--blobs").arg(blobs);
    }
    run_ok(&mut cmd, "tools/make_datafs.py");
}

/// `python -m MODULE ARGS...` in the venv (ZODB's scripts: fstest, fsdump, fsrefs, ...),
/// whatever its status.
pub fn python_module<I, S>(module: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(python())
        .args(["-m", module])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python -m {module}: {e}"))
}

/// A command's standard output followed by its standard error, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Poll `f` every 20 ms until it holds or `limit` has passed; whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether the command `tool` runs (`tool -V` succeeds), installing Debian's `package` first
/// when it is missing and the tests run as root with apt-get, as on the project's machines
/// and CI: `cargo test` alone sets up what the tests need. Guarded by an flock so parallel
/// test binaries install once.
#[allow(dead_code)]
pub fn ensure_tool(tool: &str, package: &str) -> bool {
    let runs = || {
        Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/usr/bin/apt-get").exists() {
        return false;
    }
    let target = target_dir();
    let _ = fs::create_dir_all(&target);
    let Ok(lock) = File::create(target.join("apt.lock")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if runs() {
        return true;
    }
    eprintln!("installing {package} with apt-get for the tests");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !apt(&["install", "-y", "-q", package]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", package]);
    }
    runs()
}

/// Run `cmd` to completion like `Command::output`, but kill it (SIGKILL, its process group
/// included) after `limit`: a hung Python harness fails its test with what it printed instead
/// of holding the suite until CI's limit.
#[allow(dead_code)]
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > limit {
                    eprintln!("killing pid {pid} and its group after {limit:?}");
                    // SAFETY: signals to our own child's process group (it is not reaped
                    // before `done` is set).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    out
}

/// Mount a tmpfs of `size` (mount's syntax: bytes, or `4m`) on the existing directory `dir`,
/// for the tests of a full disk; false (with the reason on stderr) where mounting is not
/// permitted (not root, a container without CAP_SYS_ADMIN), so the caller can skip.
/// Pair it with an [`Unmount`] guard.
pub fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "cannot mount a tmpfs on {}: {}",
                dir.display(),
                output_text(&o).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("cannot run mount: {e}");
            false
        }
    }
}

/// Lazily unmounts its directory when dropped, so a failing test does not leave a mount
/// behind (lazy: a killed child may still hold a file open in it).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Wait up to `limit` for `child` to exit; past it, kill and reap it.
#[allow(dead_code)]
pub fn wait_child(child: &mut std::process::Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
