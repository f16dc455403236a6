//! Issue 14 without Zope itself: what `create client|cluster` writes for `--python`,
//! `--program`, `--admin` and `--unix-user`; `start`'s pre-checks and clean-up of a failed
//! cluster start; readiness of a client whatever its program; `logtail` on members; the
//! manager's process title. Programs are small shell scripts, so this runs in seconds.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn ok(out: &std::process::Output) -> String {
    let text = support::output_text(out);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn create_client_with_a_virtualenv_an_admin_and_a_unix_user() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    script(&venv.join("bin/runwsgi"), "#!/bin/sh\n");
    let dir = tmp.path().join("client");
    ok(&support::zodbctl()
        .args(["create", "client", "--server", "127.0.0.1:8100"])
        .arg("--python")
        .arg(&venv)
        .args(["--admin", "admin:pa:ss", "--unix-user", "nobody"])
        .arg(&dir)
        .output()
        .unwrap());
    let toml = std::fs::read_to_string(dir.join("etc/client.toml")).unwrap();
    let runwsgi = venv.join("bin/runwsgi");
    assert!(
        toml.contains(&format!(
            "program = \"{} -v etc/zope.ini\"",
            runwsgi.display()
        )),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("PATH = \"{}:", venv.join("bin").display())),
        "{toml}"
    );
    assert!(toml.contains("user = \"nobody\""), "{toml}");
    // AuthEncoding's {SHA256} scheme: the hex digest of the password, as mkwsgiinstance
    // writes it when bcrypt is not installed.
    let inituser = std::fs::read_to_string(dir.join("inituser")).unwrap();
    assert_eq!(
        inituser,
        format!("admin:{{SHA256}}{}\n", sha256_hex("pa:ss"))
    );
    let mode = std::fs::metadata(dir.join("inituser"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The old name of the Unix-user option still works; a malformed --admin is refused.
    ok(&support::zodbctl()
        .args([
            "create",
            "client",
            "--server",
            "127.0.0.1:8100",
            "--user",
            "nobody",
        ])
        .arg(tmp.path().join("old"))
        .output()
        .unwrap());
    let out = support::zodbctl()
        .args([
            "create",
            "client",
            "--server",
            "127.0.0.1:8100",
            "--admin",
            "admin",
        ])
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", support::output_text(&out));
    assert!(!tmp.path().join("bad").exists());
}

/// SHA-256 by Python (the reference for the inituser hash).
fn sha256_hex(s: &str) -> String {
    let out = support::python_stdout(
        "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
        &[s],
    );
    out.trim().to_owned()
}

#[test]
fn create_cluster_passes_program_and_admin_to_every_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    ok(&support::zodbctl()
        .args(["create", "cluster", "--clients", "2", "--sessions"])
        .args(["--program", "/opt/zope/bin/runwsgi -v etc/zope.ini"])
        .args(["--admin", "boss:pw"])
        .arg(&dir)
        .output()
        .unwrap());
    for c in ["client1", "client2"] {
        let toml = std::fs::read_to_string(dir.join(c).join("etc/client.toml")).unwrap();
        assert!(
            toml.contains("program = \"/opt/zope/bin/runwsgi -v etc/zope.ini\""),
            "{toml}"
        );
        assert!(
            std::fs::read_to_string(dir.join(c).join("inituser"))
                .unwrap()
                .starts_with("boss:{SHA256}")
        );
    }
    // The sessions storage is saved on stop and at checkpoints.
    let zeo = std::fs::read_to_string(dir.join("server/etc/zeo.toml")).unwrap();
    assert!(zeo.contains("path = \"var/sessions.snapshot\""), "{zeo}");
}

#[test]
fn start_checks_every_member_before_starting_any() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let base = support::free_port();
    ok(&support::zodbctl()
        .args([
            "create",
            "cluster",
            "--clients",
            "1",
            "--base-port",
            &base.to_string(),
        ])
        .args(["--program", "no-such-runwsgi -v etc/zope.ini"])
        .arg(&dir)
        .output()
        .unwrap());
    let out = support::run_in(&dir, &["start"]);
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("client1: can't find program 'no-such-runwsgi' on PATH"),
        "{text}"
    );
    assert!(text.contains("pip install 'Zope[wsgi]' ZEO"), "{text}");
    assert!(text.contains("nothing was started"), "{text}");
    assert!(!text.contains("daemon process started"), "{text}");
    let out = support::run_in(&dir.join("server"), &["status"]);
    assert_eq!(out.status.code(), Some(3), "the server was not started");
}

#[test]
fn a_client_is_ready_when_it_serves_and_a_failed_cluster_start_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let base = loop {
        let b = support::free_port();
        if b < 65000 && std::net::TcpListener::bind(("127.0.0.1", b + 1)).is_ok() {
            break b;
        }
    };
    // A "Zope" that listens on its HTTP address only after a second, given by absolute path.
    let slow = tmp.path().join("bin/slow-zope");
    let py = support::python();
    script(
        &slow,
        &format!(
            "#!/bin/sh\nsleep 1\nexec {} -c 'import socket,time; s=socket.socket(); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
             s.bind((\"127.0.0.1\", {})); s.listen(); time.sleep(120)'\n",
            py.display(),
            base + 1
        ),
    );
    ok(&support::zodbctl()
        .args([
            "create",
            "cluster",
            "--clients",
            "1",
            "--base-port",
            &base.to_string(),
        ])
        .arg("--program")
        .arg(&slow)
        .arg(&dir)
        .output()
        .unwrap());
    let out = support::run_in(&dir, &["start"]);
    let text = ok(&out);
    assert!(text.contains("client1: daemon process started"), "{text}");
    // Ready means the HTTP address answers, not that the program was spawned.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", base + 1)).is_ok(),
        "start returned before the client listened:\n{text}"
    );
    let json = support::run_in(&dir.join("client1"), &["status", "--json"]);
    assert!(String::from_utf8_lossy(&json.stdout).contains("\"ready\":true"));
    ok(&support::run_in(&dir, &["stop"]));

    // A client that never listens: the start fails, names it, and stops the server it started.
    let client_toml = dir.join("client1/etc/client.toml");
    let text = std::fs::read_to_string(&client_toml).unwrap().replace(
        "socket = \"var/zodbctl.sock\"",
        "socket = \"var/zodbctl.sock\"\nstart-timeout = 2",
    );
    std::fs::write(&client_toml, text).unwrap();
    script(&slow, "#!/bin/sh\nexec sleep 120\n");
    let out = support::run_in(&dir, &["start"]);
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("server: daemon process started"), "{text}");
    assert!(
        text.contains("client1 did not start; stopping what this command started: server"),
        "{text}"
    );
    for member in ["server", "client1"] {
        let st = support::run_in(&dir.join(member), &["status"]);
        assert_eq!(st.status.code(), Some(3), "{member} left running");
    }
}

#[test]
fn logtail_shows_members_with_their_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    ok(&support::zodbctl()
        .args(["create", "cluster", "--clients", "1"])
        .arg(&dir)
        .output()
        .unwrap());
    std::fs::write(dir.join("server/log/zeo.log"), "zeo 1\nzeo 2\n").unwrap();
    std::fs::write(dir.join("server/log/transcript.log"), "manager line\n").unwrap();
    std::fs::write(dir.join("server/log/other.log"), "other\n").unwrap();
    std::fs::write(dir.join("client1/log/transcript.log"), "zope 1\nzope 2\n").unwrap();

    let text = ok(&support::run_in(&dir, &["logtail", "-n", "1"]));
    assert_eq!(text, "server: zeo 2\nclient1: zope 2\n");
    let text = ok(&support::run_in(&dir, &["logtail", "-m", "client1"]));
    assert_eq!(text, "zope 1\nzope 2\n");
    // A server shows its ZEO log, as zeoctl did.
    let text = ok(&support::run_in(&dir.join("server"), &["logtail"]));
    assert_eq!(text, "zeo 1\nzeo 2\n");
    // --file is relative to the instance, wherever the command runs.
    let out = support::zodbctl_in(&dir.join("server"))
        .args(["logtail", "--file", "log/other.log"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(ok(&out), "other\n");
    let out = support::run_in(&dir, &["logtail", "-m", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(support::output_text(&out).contains("server, client1"));

    // -f on a cluster follows every member, each line with its name.
    let mut child = support::zodbctl_in(&dir)
        .args(["logtail", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    for (file, line) in [
        ("server/log/zeo.log", "zeo 3\n"),
        ("client1/log/transcript.log", "zope 3\n"),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(file))
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }
    // The follower polls every 250 ms.
    std::thread::sleep(Duration::from_millis(1500));
    let mut seen = String::new();
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = child.wait();
    assert!(seen.contains("server: zeo 3\n"), "{seen}");
    assert!(seen.contains("client1: zope 3\n"), "{seen}");
}

#[test]
fn the_manager_names_its_instance_in_ps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zeo");
    let port = support::free_port();
    ok(&support::zodbctl()
        .args(["create", "server", "-a", &format!("127.0.0.1:{port}")])
        .arg(&dir)
        .output()
        .unwrap());
    ok(&support::run_in(&dir, &["start"]));
    let json = support::run_in(&dir, &["status", "--json"]);
    let rec: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let manager = rec["manager_pid"].as_u64().expect("manager pid");
    let cmdline = std::fs::read(format!("/proc/{manager}/cmdline")).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{manager}/comm")).unwrap();
    ok(&support::run_in(&dir, &["stop"]));
    assert_eq!(
        String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim_end(),
        format!("zodbctl manager {}", dir.display())
    );
    assert_eq!(comm.trim(), "zodbctl-manager");
}

#[test]
fn a_sessions_client_started_alone_needs_its_server_up() {
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in virtualenv: its python "has" every module (prints no missing one).
    let venv = tmp.path().join("venv");
    script(&venv.join("bin/python"), "#!/bin/sh\nexit 0\n");
    script(&venv.join("bin/runwsgi"), "#!/bin/sh\nexec sleep 60\n");
    let dir = tmp.path().join("site");
    let base = support::free_port();
    ok(&support::zodbctl()
        .args(["create", "cluster", "--clients", "1", "--sessions"])
        .args(["--base-port", &base.to_string()])
        .arg("--python")
        .arg(&venv)
        .arg(&dir)
        .output()
        .unwrap());
    let out = support::run_in(&dir.join("client1"), &["start"]);
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("start the server first"), "{text}");
    assert!(!dir.join("client1/var/zodbctl-sessions.done").exists());
    let st = support::run_in(&dir.join("client1"), &["status"]);
    assert_eq!(st.status.code(), Some(3), "nothing was started");
}
