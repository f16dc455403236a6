//! The manager with real processes: start/stop, back-off, exit codes, stop escalation,
//! signals to the manager, a broken socket client, stale sockets, systemd notify.
//!
//! Each test runs its own instance in a temporary directory with small back-off and stop
//! timeouts, so the whole file takes a few seconds.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    /// A client instance whose `[runner]` table is `runner` (TOML lines).
    fn new(runner: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/client.toml"),
            format!(
                "[zeoclient]\nservers = [\"127.0.0.1:1\"]\n\n[runner]\n\
                 transcript = \"log/transcript.log\"\n{runner}\n"
            ),
        )
        .unwrap();
        Instance { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.path().join("var/zodbctl.sock")
    }

    fn z(&self, args: &[&str]) -> Output {
        support::run_in(self.path(), args)
    }

    fn json(&self) -> Value {
        let out = self.z(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    fn transcript(&self) -> String {
        std::fs::read_to_string(self.path().join("log/transcript.log")).unwrap_or_default()
    }

    fn spawns(&self) -> usize {
        self.transcript().matches("spawned process pid=").count()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Never leave a manager behind, even when an assertion failed.
        if let Ok(out) = support::zodbctl_in(self.path())
            .args(["status", "--json"])
            .output()
            && let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
        {
            for key in ["pid", "manager_pid"] {
                if let Some(pid) = v[key].as_i64() {
                    // SAFETY: kill(2) on a pid this test started.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Alive and not a zombie.
fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn pid_of(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn start_status_stop_cycle_with_zdaemon_messages() {
    let inst = Instance::new("program = \"sleep 100\"");
    let out = inst.z(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", support::output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "daemon manager not running\n"
    );

    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("daemon process started, pid="), "{stdout}");

    let v = inst.json();
    assert_eq!(v["state"], "running");
    assert_eq!(v["ready"], true);
    let pid = pid_of(&v, "pid");
    let out = inst.z(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("program running; pid={pid}\n")
    );
    let out = inst.z(&["start"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("daemon process already running; pid={pid}\n")
    );

    // The socket is owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(inst.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let out = inst.z(&["stop"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\ndaemon process stopped\n"));
    assert!(!alive(pid));
    assert!(!inst.socket().exists());
    let out = inst.z(&["stop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "daemon manager not running\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn garbage_on_the_socket_is_answered_and_not_fatal() {
    let inst = Instance::new("program = \"sleep 100\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let ask = |bytes: &[u8], half_close: bool| -> String {
        let mut s = UnixStream::connect(inst.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        if half_close {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    assert_eq!(
        ask(b"\xff\xfe garbage\n", false),
        "Unknown command '\u{fffd}\u{fffd}'; 'help' for a list\n"
    );
    assert_eq!(ask(b"\n", false), "Empty command\n");
    assert_eq!(ask(b"status", true), "Command not terminated by newline\n");
    assert_eq!(ask(&[b'x'; 10_001], false), "Command exceeds 10 KB\n");
    assert_eq!(ask(b"kill x\n", false), "Bad signal 'x'\n");
    // A client that connects and says nothing does not block others.
    let _idle = UnixStream::connect(inst.socket()).unwrap();
    let status = ask(b"status\n", false);
    assert!(status.starts_with("status=running\nnow="), "{status}");
    assert_eq!(inst.z(&["status"]).status.code(), Some(0));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn crash_loop_backs_off_and_gives_up_at_the_limit() {
    // zdaemon's governor: quick crashes delay 1, 2 s ...; the 3rd quick crash with
    // backoff-limit 3 ends the manager with status 1 (3 spawns, at t = 0, 1, 3).
    let inst = Instance::new("program = \"sh -c 'exit 1'\"\nbackoff-limit = 3");
    let t0 = Instant::now();
    let out = inst.z(&["start"]);
    // The program's pid shows up at once; start may also see it die: both are fine.
    let _ = out;
    assert!(
        support::wait_until(Duration::from_secs(8), || !inst.socket().exists()),
        "manager still up: {}",
        inst.transcript()
    );
    let elapsed = t0.elapsed();
    let log = inst.transcript();
    assert_eq!(inst.spawns(), 3, "{log}");
    assert!(log.contains("sleep 1 to avoid rapid restarts"), "{log}");
    assert!(log.contains("sleep 2 to avoid rapid restarts"), "{log}");
    assert!(log.contains("restarting too frequently; quit"), "{log}");
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(7),
        "{elapsed:?}"
    );
    assert_eq!(inst.z(&["status"]).status.code(), Some(3));
}

#[test]
fn crash_loop_with_forever_keeps_going() {
    let inst = Instance::new("program = \"sh -c 'exit 1'\"\nbackoff-limit = 2\nforever = true");
    let _ = inst.z(&["start"]);
    // Delays 1, 2, 2, 2...: spawns at 0, 1, 3, 5.
    assert!(
        support::wait_until(Duration::from_secs(8), || inst.spawns() >= 4),
        "{}",
        inst.transcript()
    );
    let v = inst.json();
    assert_ne!(v["state"], "not running", "{v}");
    assert_eq!(v["backoff"], 2, "{v}");
    assert!(!inst.transcript().contains("restarting too frequently"));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn exit_codes_0_and_2_end_the_manager() {
    for code in [0, 2] {
        let inst = Instance::new(&format!("program = \"sh -c 'sleep 0.3; exit {code}'\""));
        assert_eq!(inst.z(&["start"]).status.code(), Some(0));
        assert!(
            support::wait_until(Duration::from_secs(5), || !inst.socket().exists()),
            "{}",
            inst.transcript()
        );
        assert_eq!(inst.spawns(), 1);
        assert!(
            inst.transcript()
                .contains(&format!("exit status {code}; exiting now")),
            "{}",
            inst.transcript()
        );
    }
    // In the foreground the manager exits with the program's status (for systemd).
    let inst = Instance::new("program = \"sh -c 'exit 2'\"");
    let out = inst.z(&["start", "--foreground"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::output_text(&out));
    // `daemon = false`: `start` itself runs the manager and returns the program's status.
    let inst = Instance::new("program = \"sh -c 'exit 2'\"\ndaemon = false");
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::output_text(&out));
    // Any other status is restarted.
    let inst = Instance::new("program = \"sh -c 'sleep 0.2; exit 3'\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    assert!(support::wait_until(Duration::from_secs(5), || inst
        .spawns()
        >= 2));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn stop_kills_a_program_ignoring_sigterm_and_its_grandchildren() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let inst = Instance::new(&format!(
        "program = [\"sh\", \"-c\", \"trap '' TERM; sleep 100 & echo $! > {p}; sleep 100 & \
         echo $! >> {p}; wait\"]\nstop-timeout = 1",
        p = pids.display()
    ));
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    assert!(support::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&pids).is_ok_and(|s| s.lines().count() == 2)
    }));
    let program = pid_of(&inst.json(), "pid");
    let kids: Vec<i64> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let t0 = Instant::now();
    let out = inst.z(&["stop"]);
    let took = t0.elapsed();
    assert!(String::from_utf8_lossy(&out.stdout).contains("daemon process stopped"));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!alive(program));
    for k in kids {
        assert!(!alive(k), "grandchild {k} survived");
    }
    assert!(
        inst.transcript().contains("SIGKILL"),
        "{}",
        inst.transcript()
    );
}

#[test]
fn a_killed_program_is_restarted() {
    let inst = Instance::new("program = \"sleep 100\"\nbackoff-limit = 1");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let first = pid_of(&inst.json(), "pid");
    std::thread::sleep(Duration::from_millis(1100));
    // SAFETY: kill(2) on the program this test started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let mut second = 0;
    assert!(support::wait_until(Duration::from_secs(3), || {
        second = inst.json()["pid"].as_i64().unwrap_or(0);
        second != 0 && second != first
    }));
    let v = inst.json();
    assert_eq!(v["restarts"], 1);
    assert_eq!(v["last_exit"], "terminated by SIGKILL");
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
    assert!(!alive(second));
}

#[test]
fn sigterm_to_the_manager_stops_the_program_first() {
    let inst = Instance::new("program = \"sh -c 'sleep 100 & wait'\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let v = inst.json();
    let (manager, program) = (pid_of(&v, "manager_pid"), pid_of(&v, "pid"));
    // SAFETY: kill(2) on the manager this test started.
    unsafe { libc::kill(manager as i32, libc::SIGTERM) };
    assert!(support::wait_until(Duration::from_secs(5), || !alive(
        manager
    )));
    assert!(!alive(program));
    // Nothing of the program's process group is left.
    // SAFETY: signal 0 only checks for existence.
    assert!(unsafe { libc::kill(-(program as i32), 0) } != 0);
    assert!(!inst.socket().exists());
    assert_eq!(inst.z(&["status"]).status.code(), Some(3));
}

#[test]
fn sighup_to_the_manager_reopens_instead_of_killing_it() {
    let inst = Instance::new("program = \"sleep 100\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let manager = pid_of(&inst.json(), "manager_pid");
    let log = inst.path().join("log/transcript.log");
    std::fs::rename(&log, inst.path().join("log/transcript.log.1")).unwrap();
    // SAFETY: kill(2) on the manager this test started.
    unsafe { libc::kill(manager as i32, libc::SIGHUP) };
    assert!(support::wait_until(Duration::from_secs(3), || log.exists()));
    assert_eq!(inst.z(&["status"]).status.code(), Some(0));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
    assert!(inst.transcript().contains("Exiting"));
}

#[test]
fn stale_socket_after_kill_9_of_the_manager_is_recovered() {
    let inst = Instance::new("program = \"sleep 100\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let v = inst.json();
    let (manager, program) = (pid_of(&v, "manager_pid"), pid_of(&v, "pid"));
    // SAFETY: kill(2) on the manager this test started.
    unsafe { libc::kill(manager as i32, libc::SIGKILL) };
    assert!(support::wait_until(Duration::from_secs(3), || !alive(
        manager
    )));
    // Nothing runs on unsupervised: the program follows its manager (parent-death signal).
    assert!(support::wait_until(Duration::from_secs(3), || !alive(
        program
    )));
    assert!(inst.socket().exists(), "the stale socket stays behind");
    assert_eq!(inst.z(&["status"]).status.code(), Some(3));
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("Unlinking stale socket"),
        "{}",
        support::output_text(&out)
    );
    assert_eq!(inst.json()["state"], "running");
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn a_second_manager_is_refused() {
    let inst = Instance::new("program = \"sleep 100\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let out = inst.z(&["start", "--foreground"]);
    assert_eq!(out.status.code(), Some(1), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("already running"),
        "{}",
        support::output_text(&out)
    );
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn start_reports_a_program_that_never_gets_ready() {
    let inst = Instance::new(
        "program = \"sh -c 'echo booting; sleep 100'\"\nready-check = { command = \"test -e never\" }\n\
         start-timeout = 1",
    );
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", support::output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Program took too long to start"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start-timeout"), "{err}");
    assert!(err.contains("booting"), "transcript tail expected: {err}");
    assert_eq!(inst.json()["state"], "starting");
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn readiness_gates_start() {
    let inst = Instance::new(
        "program = \"sh -c 'sleep 0.5; touch ready; exec sleep 100'\"\n\
         ready-check = { command = \"test -e ready\" }",
    );
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(inst.path().join("ready").exists());
    assert_eq!(inst.json()["ready"], true);
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn logreopen_moves_the_transcript_to_a_new_file() {
    let inst = Instance::new(
        "program = [\"sh\", \"-c\", \"trap 'echo got USR2' USR2; while :; do sleep 0.05; done\"]",
    );
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let log = inst.path().join("log/transcript.log");
    let old = inst.path().join("log/transcript.log.1");
    std::fs::rename(&log, &old).unwrap();
    let out = inst.z(&["logreopen"]);
    let pid = pid_of(&inst.json(), "pid");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kill({pid}, 12)\nsignal SIGUSR2 sent to process {pid}\n")
    );
    assert!(support::wait_until(Duration::from_secs(3), || {
        inst.transcript().contains("got USR2")
    }));
    assert!(!std::fs::read_to_string(&old).unwrap().contains("got USR2"));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn foreground_manager_notifies_systemd() {
    let inst = Instance::new("program = \"sleep 100\"");
    let notify = inst.path().join("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut child = support::zodbctl_in(inst.path())
        .args(["start", "--foreground"])
        .env("NOTIFY_SOCKET", &notify)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    assert_eq!(inst.z(&["status"]).status.code(), Some(0));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = rx.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn kill_and_wait() {
    let inst = Instance::new("program = \"sleep 100\"\nexit-codes = []");
    let out = inst.z(&["kill"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "daemon process not running\n"
    );
    let out = inst.z(&["kill", "ded"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let pid = pid_of(&inst.json(), "pid");
    let waiter = support::zodbctl_in(inst.path())
        .arg("wait")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = inst.z(&["kill", "term"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kill({pid}, 15)\nsignal SIGTERM sent to process {pid}\n")
    );
    let out = waiter.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daemon process stopped"),
        "{}",
        support::output_text(&out)
    );
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn fg_runs_the_program_and_returns_its_status() {
    let inst = Instance::new("program = \"sh -c 'echo in fg; exit 5'\"");
    let out = inst.z(&["fg"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sh -c 'echo in fg; exit 5'\nin fg\n"
    );
}

#[test]
fn logtail_shows_the_end_of_the_transcript() {
    let inst = Instance::new("program = \"sh -c 'echo line one; echo line two; sleep 100'\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    assert!(support::wait_until(Duration::from_secs(3), || inst
        .transcript()
        .contains("line two")));
    let out = inst.z(&["logtail", "-n", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line one\nline two\n");
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn user_switching_when_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let inst = Instance::new("program = \"sh -c 'id -u; exec sleep 100'\"\nuser = \"nobody\"");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(inst.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(support::wait_until(Duration::from_secs(3), || inst
        .transcript()
        .contains("65534")));
    use std::os::unix::fs::MetadataExt;
    for owned in ["var", "log", "log/transcript.log"] {
        assert_eq!(
            std::fs::metadata(inst.path().join(owned)).unwrap().uid(),
            65534,
            "{owned}"
        );
    }
    assert_eq!(std::fs::metadata(inst.socket()).unwrap().uid(), 65534);
    // Root's controller may still talk to the manager.
    assert_eq!(inst.z(&["status"]).status.code(), Some(0));
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn the_scaffolded_logrotate_snippet_works_with_logrotate_f() {
    let Ok(logrotate) = which("logrotate") else {
        eprintln!("skipped: logrotate is not installed");
        return;
    };
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("zeo");
    let out = support::zodbctl()
        .args(["create", "server"])
        .arg(&dir)
        .args(["--address", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    // The server's own program is not what is tested here: a stand-in that answers SIGUSR2
    // the way the server does (it reopens its log) and says so on stdout.
    let toml = dir.join("etc/zeo.toml");
    let conf = std::fs::read_to_string(&toml).unwrap().replace(
        "[runner]\n",
        "[runner]\nprogram = [\"sh\", \"-c\", \"trap 'echo got USR2' USR2; \
         while :; do sleep 0.05; done\"]\nready-check = { command = \"true\" }\n",
    );
    std::fs::write(&toml, conf).unwrap();
    let z = |args: &[&str]| support::run_in(&dir, args);
    let out = z(&["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let transcript = dir.join("log/transcript.log");
    let out = std::process::Command::new(logrotate)
        .arg("-f")
        .arg("-s")
        .arg(top.path().join("state"))
        .arg(dir.join("etc/logrotate.conf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    assert!(dir.join("log/transcript.log.1").exists());
    assert!(support::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&transcript).is_ok_and(|t| t.contains("got USR2"))
    }));
    let out = z(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(
        std::fs::read_to_string(&transcript)
            .unwrap()
            .contains("Exiting")
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn restart_replaces_the_program() {
    let inst = Instance::new("program = \"sleep 100\"");
    assert_eq!(inst.z(&["start"]).status.code(), Some(0));
    let first = pid_of(&inst.json(), "pid");
    let out = inst.z(&["restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let second = pid_of(&inst.json(), "pid");
    assert_ne!(first, second);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .ends_with(&format!("daemon process restarted, pid={second}\n"))
    );
    assert!(!alive(first));
    assert_eq!(inst.json()["restarts"], 1);
    assert_eq!(inst.z(&["stop"]).status.code(), Some(0));
}

#[test]
fn a_missing_program_is_a_usage_error() {
    let inst = Instance::new("program = \"no-such-program-zz --flag\"");
    let out = inst.z(&["start"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("can't find program 'no-such-program-zz' on PATH"),
        "{}",
        support::output_text(&out)
    );
    assert!(!inst.socket().exists());
}

#[test]
fn logtail_follows_a_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "one\n").unwrap();
    let mut child = support::zodbctl()
        .args(["logtail", "-f", "-n", "1", "--file"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"two\n").unwrap();
    drop(f);
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::write(&log, "three\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    let one = out.find("one\n").expect(&out);
    let two = out.find("two\n").expect(&out);
    let three = out.find("three\n").expect(&out);
    assert!(one < two && two < three, "{out}");
}
