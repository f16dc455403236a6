//! `zodbctl top`: against the reference server (runzeo) by address, and in a real terminal
//! (tmux) against a cluster served by zodbctl with a Python client committing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use support::RunZeo;

/// A bounded commit loop: at most N commits, LIMIT seconds, or until the STOP file exists.
/// Disconnections (the server restarting) are waited out.
const COMMITTER: &str = r#"
import os, sys, time, transaction, ZODB
from ZEO.ClientStorage import ClientStorage
addr, n, limit, stop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
host, port = addr.rsplit(':', 1)
db = ZODB.DB(ClientStorage((host, int(port)), wait_timeout=30))
conn = db.open()
deadline = time.time() + limit
done = 0
while done < n and time.time() < deadline and not os.path.exists(stop):
    try:
        conn.root()['n'] = done
        transaction.commit()
        done += 1
    except Exception:
        transaction.abort()
        time.sleep(0.2)
    time.sleep(0.02)
db.close()
print('committed', done)
"#;

fn text(out: &Output) -> String {
    support::output_text(out)
}

#[test]
fn top_by_address_shows_the_storages_of_runzeo() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunZeo::in_dir(dir.path())
        .file(&dir.path().join("Data.fs"))
        .start();
    let addr = server.addr();
    let stop = dir.path().join("stop");
    let py = support::python_command(COMMITTER, &[&addr, "5", "20", support::path_str(&stop)])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));

    let out = support::zodbctl()
        .args(["top", &addr, "--once", "--read-only", "--interval", "0.2"])
        .env("COLUMNS", "120")
        .env("LINES", "30")
        .output()
        .unwrap();
    let frame = text(&out);
    assert!(out.status.success(), "{frame}");
    assert!(frame.contains("up 1/1"), "{frame}");
    assert!(frame.contains(&format!("Storages of {addr}")), "{frame}");
    assert!(frame.contains("[read-only]"), "{frame}");
    assert!(!frame.contains("R restart"), "{frame}");
    // The storage row: name "1", and a last transaction (5 commits were made).
    let row = frame
        .lines()
        .find(|l| l.starts_with("│1 "))
        .unwrap_or_else(|| panic!("no row for storage 1:\n{frame}"));
    assert!(!row.contains("none"), "{row}");

    let out = support::zodbctl()
        .args(["top", &addr, "--json", "--interval", "0.2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inst = &snap["instances"][0];
    assert_eq!(inst["kind"], "remote");
    assert_eq!(inst["server"]["error"], serde_json::Value::Null, "{snap}");
    let st = &inst["server"]["storages"][0];
    assert_eq!(st["name"], "1");
    // ZODB.DB's root object, then the 5 commits of the loop.
    assert_eq!(st["commits"], 6, "{st}");
    assert!(st["last_transaction"].as_str().unwrap() != "0000000000000000");
    // The dashboard does not count itself as a client.
    assert_eq!(st["connections"], 0, "{st}");
    // runzeo's map has no object count: absent, not invented.
    assert_eq!(st["objects"], serde_json::Value::Null);

    // Without a terminal and without --once/--json: a usage error, not a garbled screen.
    let out = support::zodbctl().args(["top", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--once"), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// tmux
// ---------------------------------------------------------------------------------------------

/// tmux, installed by the test setup where it can be (root with apt-get, as in CI).
fn have_tmux() -> bool {
    support::ensure_tool("tmux", "tmux")
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: format!("zodbctl-top-{}", std::process::id()),
        };
        let out = t
            .cmd()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg("sh")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux new-session: {}", text(&out));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn send_literal(&self, keys: &str) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", "top", "-l", keys])
            .output()
            .unwrap();
        assert!(out.status.success(), "send-keys: {}", text(&out));
    }

    fn send_key(&self, key: &str) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", "top", key])
            .output()
            .unwrap();
        assert!(out.status.success(), "send-keys: {}", text(&out));
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn format(&self, f: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "top", f])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Wait until the screen satisfies `f`; the last screen either way.
    fn wait_for(&self, limit: Duration, mut f: impl FnMut(&str) -> bool) -> (bool, String) {
        let mut screen = String::new();
        let ok = support::wait_until(limit, || {
            screen = self.capture();
            f(&screen)
        });
        (ok, screen)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Stops the cluster when dropped, so a failed test leaves nothing running.
struct Stopper(PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = support::run_in(&self.0, &["stop"]);
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cluster: zodbctl's own server, and a client instance whose program is a Python sleeper.
fn make_cluster(dir: &Path, port: u16) {
    let out = support::zodbctl()
        .args(["create", "server"])
        .arg(dir.join("server"))
        .args(["--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let client = dir.join("client");
    std::fs::create_dir_all(client.join("etc")).unwrap();
    std::fs::write(
        client.join("etc/client.toml"),
        format!(
            "[zeoclient]\nservers = [\"127.0.0.1:{port}\"]\n[runner]\n\
             program = [{:?}, \"-c\", \"import time; time.sleep(600)\"]\n\
             transcript = \"log/transcript.log\"\nstop-timeout = 5\n",
            support::python().display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        "[[members]]\npath = \"server\"\nkind = \"server\"\n\n\
         [[members]]\npath = \"client\"\nkind = \"client\"\n",
    )
    .unwrap();
}

fn server_pid(dir: &Path) -> Option<u32> {
    let out = support::run_in(&dir.join("server"), &["status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("program running; pid="))
        .and_then(|p| p.trim().parse().ok())
}

/// The commits/s figure of the header, if it shows one.
fn header_commits(screen: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains("zodbctl top"))?;
    let after = line.split("commits/s ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn dashboard_in_tmux_shows_commits_restarts_a_member_and_quits_cleanly() {
    if !have_tmux() {
        eprintln!(
            "SKIPPED: tmux is not installed (apt-get install tmux); the dashboard was not tested in a terminal"
        );
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("demo");
    let port = support::free_port();
    make_cluster(&dir, port);
    let _stop = Stopper(dir.clone());
    let out = support::run_in(&dir, &["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid_before = server_pid(&dir).expect("server pid");

    let stop_file = top.path().join("stop-committing");
    let _committer = KillOnDrop(
        support::python_command(
            COMMITTER,
            &[
                &format!("127.0.0.1:{port}"),
                "3000",
                "60",
                support::path_str(&stop_file),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );

    let tmux = Tmux::new(120, 40);
    let before = top.path().join("stty-before");
    let after = top.path().join("stty-after");
    // The shell records the terminal settings around the dashboard, and its exit status.
    tmux.send_literal(&format!(
        "stty -g > {b}; {exe} -i {d} top --interval 0.5; echo top-exited-$?; stty -g > {a}",
        b = before.display(),
        a = after.display(),
        exe = env!("CARGO_BIN_EXE_zodbctl"),
        d = dir.display(),
    ));
    tmux.send_key("Enter");

    let (ok, screen) = tmux.wait_for(Duration::from_secs(20), |s| {
        s.contains("Storages of server") && s.contains("client")
    });
    assert!(ok, "the dashboard did not show the cluster:\n{screen}");
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "not on the alternate screen"
    );

    // The counters move: commits/s above zero while the Python client commits.
    let (ok, screen) = tmux.wait_for(Duration::from_secs(30), |s| {
        header_commits(s).is_some_and(|c| c > 0.0)
    });
    assert!(ok, "commits/s never moved:\n{screen}");

    // Restart the server from the dashboard (it is selected: first in start order).
    tmux.send_literal("R");
    let (ok, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("Restart server"));
    assert!(ok, "no confirmation asked:\n{screen}");
    tmux.send_literal("y");
    let mut pid_after = None;
    let changed = support::wait_until(Duration::from_secs(60), || {
        pid_after = server_pid(&dir);
        pid_after.is_some_and(|p| p != pid_before)
    });
    assert!(
        changed,
        "the server's pid did not change ({pid_before} → {pid_after:?}):\n{}",
        tmux.capture()
    );
    let (ok, screen) = tmux.wait_for(Duration::from_secs(30), |s| {
        s.contains("restart server: done")
    });
    assert!(ok, "the restart was not reported:\n{screen}");
    // The dashboard follows the new process.
    let (ok, screen) = tmux.wait_for(Duration::from_secs(15), |s| {
        s.lines()
            .any(|l| l.contains("server") && l.contains(&pid_after.unwrap().to_string()))
    });
    assert!(ok, "the new pid is not shown:\n{screen}");

    // `q` leaves the terminal as it was: main screen, same settings, the shell's prompt back.
    std::fs::write(&stop_file, "").unwrap();
    tmux.send_literal("q");
    let (ok, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("top-exited-0"));
    assert!(ok, "top did not exit with status 0:\n{screen}");
    assert!(support::wait_until(Duration::from_secs(5), || after.exists()));
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(
        tmux.format("#{cursor_flag}"),
        "1",
        "the cursor is still hidden"
    );
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "the terminal settings were not restored"
    );
}
