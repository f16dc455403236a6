//! The supervisor against the real Python tools: zdaemon's controller reads our control
//! socket; a real `runzeo` is supervised (readiness by the ZEO handshake, log reopen through
//! SIGUSR2); a cluster starts its client (a Python program) only once its server (zodbctl's
//! own) answers.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn venv_bin(name: &str) -> PathBuf {
    support::python().parent().expect("venv bin").join(name)
}

/// Stops the instance (or cluster) in `dir` when dropped, so a failed test leaves nothing.
struct Stopper(PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = support::run_in(&self.0, &["stop"]);
    }
}

/// A server instance supervising Python's runzeo on `port`, with its event log in
/// log/zeo.log.
fn runzeo_instance(dir: &Path, port: u16) {
    for d in ["etc", "var", "log"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/zeo.conf"),
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n<filestorage 1>\n  path {d}/var/Data.fs\n\
             </filestorage>\n<eventlog>\n  <logfile>\n    path {d}/log/zeo.log\n  </logfile>\n\
             </eventlog>\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/zeo.toml"),
        format!(
            "[zeo]\naddress = \"127.0.0.1:{port}\"\n\n[runner]\nprogram = [{:?}, \"-C\", {:?}]\n\
             transcript = \"log/transcript.log\"\nlogfile = \"log/zeo.log\"\nstop-timeout = 10\n\
             start-timeout = 60\n",
            venv_bin("runzeo").display().to_string(),
            dir.join("etc/zeo.conf").display().to_string(),
        ),
    )
    .unwrap();
}

#[test]
fn zdaemons_controller_reads_our_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/client.toml"),
        "[zeoclient]\nservers = [\"127.0.0.1:1\"]\n[runner]\nprogram = \"sleep 100\"\n",
    )
    .unwrap();
    let _stop = Stopper(dir.path().to_path_buf());
    let socket = dir.path().join("var/zodbctl.sock");
    // zdaemon 5.2.1 run as root crashes creating a missing socket directory (§8.12).
    std::fs::create_dir_all(dir.path().join("var")).unwrap();
    let zdaemon = |args: &[&str]| -> Output {
        std::process::Command::new(venv_bin("zdaemon"))
            .arg("-s")
            .arg(&socket)
            .args(["-p", "sleep 100"])
            .args(args)
            .output()
            .expect("run zdaemon")
    };
    let out = zdaemon(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", support::output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "daemon manager not running\n"
    );

    assert_eq!(
        support::run_in(dir.path(), &["start"]).status.code(),
        Some(0)
    );
    let ours =
        String::from_utf8_lossy(&support::run_in(dir.path(), &["status"]).stdout).into_owned();
    let out = zdaemon(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), ours);

    // The raw block parses for zdaemon too: no "managing a different program" warning; its
    // `status -l` and ours print the same lines (but for the `now=` clock).
    let out = zdaemon(&["status", "-l"]);
    let raw = String::from_utf8_lossy(&out.stdout);
    let ours = support::run_in(dir.path(), &["status", "-l"]);
    let strip = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("now="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&raw), strip(&String::from_utf8_lossy(&ours.stdout)));
    assert!(!raw.contains("WARNING"), "{raw}");
    assert!(raw.contains("args=['sleep', '100']"), "{raw}");
    assert!(raw.contains("filename='"), "{raw}");

    // zdaemon's stop drives our manager too.
    let out = zdaemon(&["stop"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daemon process stopped"),
        "{}",
        support::output_text(&out)
    );
    assert!(support::wait_until(Duration::from_secs(5), || !socket.exists()));
    assert_eq!(
        support::run_in(dir.path(), &["status"]).status.code(),
        Some(3)
    );
}

#[test]
fn runzeo_is_ready_when_it_answers_and_reopens_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    runzeo_instance(dir.path(), port);
    let _stop = Stopper(dir.path().to_path_buf());
    let out = support::run_in(dir.path(), &["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    // start returned only once the handshake answers.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("server listening");
    let mut hello = [0u8; 6];
    std::io::Read::read_exact(&mut s, &mut hello).unwrap();
    assert_eq!(&hello, b"\x00\x00\x00\x02Z5");
    drop(s);

    let log = dir.path().join("log/zeo.log");
    let transcript = dir.path().join("log/transcript.log");
    std::fs::rename(&log, dir.path().join("log/zeo.log.1")).unwrap();
    std::fs::rename(&transcript, dir.path().join("log/transcript.log.1")).unwrap();
    let out = support::run_in(dir.path(), &["logreopen"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("signal SIGUSR2 sent to process"),
        "{}",
        support::output_text(&out)
    );
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("Log files reopened successfully"))
        }),
        "new zeo.log"
    );
    assert!(
        std::fs::read_to_string(&transcript)
            .unwrap()
            .contains("transcript reopened")
    );

    let out = support::run_in(dir.path(), &["logtail", "-n", "5"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Log files reopened"));

    let out = support::run_in(dir.path(), &["stop"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("daemon process stopped"));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("terminated by SIGTERM")
    );
}

#[test]
fn a_cluster_starts_its_client_once_the_server_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    // The server is zodbctl's own (`serve`, the default program of a server instance).
    let out = support::zodbctl()
        .args(["create", "server"])
        .arg(dir.path().join("server"))
        .args(["--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let client = dir.path().join("client");
    std::fs::create_dir_all(client.join("etc")).unwrap();
    // The client's program records whether the server answered when it started.
    let probe = format!(
        "import socket, sys, time\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), 1).close(); r = 'connected'\n\
         except OSError as e:\n    r = 'refused'\n\
         open('started', 'a').write(r + '\\n')\n\
         time.sleep(100)\n"
    );
    std::fs::write(client.join("probe.py"), probe).unwrap();
    std::fs::write(
        client.join("etc/client.toml"),
        format!(
            "[zeoclient]\nservers = [\"127.0.0.1:{port}\"]\n[runner]\nprogram = [{:?}, \"probe.py\"]\ntranscript = \"log/transcript.log\"\n\
             stop-timeout = 5\n",
            support::python().display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cluster.toml"),
        "[[members]]\npath = \"server\"\nkind = \"server\"\n\n\
         [[members]]\npath = \"client\"\nkind = \"client\"\n",
    )
    .unwrap();
    let _stop = Stopper(dir.path().to_path_buf());

    let out = support::run_in(dir.path(), &["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let server_at = stdout.find("server: ").expect("server line");
    let client_at = stdout.find("client: ").expect("client line");
    assert!(server_at < client_at, "{stdout}");
    assert!(support::wait_until(Duration::from_secs(10), || {
        client.join("started").exists()
    }));
    assert_eq!(
        std::fs::read_to_string(client.join("started")).unwrap(),
        "connected\n"
    );

    let out = support::run_in(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(lines.contains("server: program running; pid="), "{lines}");
    assert!(lines.contains("client: program running; pid="), "{lines}");
    // A cluster's status is one JSON document, members keyed by name; the running server's
    // record carries its figures.
    let out = support::run_in(dir.path(), &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = doc.as_object().unwrap();
    assert_eq!(members.len(), 2, "{doc}");
    assert_eq!(doc["server"]["name"], "server");
    assert_eq!(doc["server"]["ready"], true);
    assert!(doc["server"]["server"]["connections"].is_u64(), "{doc}");
    assert_eq!(doc["client"]["name"], "client");

    // Stop goes in reverse: the client first.
    let out = support::run_in(dir.path(), &["stop"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let client_at = stdout.find("client: ").expect("client line");
    let server_at = stdout.find("server: ").expect("server line");
    assert!(client_at < server_at, "{stdout}");
    assert_eq!(
        support::run_in(dir.path(), &["status"]).status.code(),
        Some(3)
    );
}

#[test]
fn zeoctl_controls_a_mkzeoinstance_home_started_by_zodbctl() {
    let top = tempfile::tempdir().unwrap();
    let home = top.path().join("zeo");
    let port = support::free_port();
    let out = std::process::Command::new(venv_bin("mkzeoinstance"))
        .arg(&home)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let _stop = Stopper(home.clone());
    // zodbctl reads the generated etc/zeo.conf and serves it itself.
    let out = support::run_in(&home, &["start"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    let pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .to_owned();
    // The generated bin/zeoctl (zdaemon's controller with ZEO's schema) finds the manager on
    // the socket named in zeo.conf and reads its status.
    let out = std::process::Command::new(home.join("bin/zeoctl"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("program running; pid={pid}")),
        "{}",
        support::output_text(&out)
    );
    let out = std::process::Command::new(home.join("bin/zeoctl"))
        .arg("stop")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daemon process stopped"),
        "{}",
        support::output_text(&out)
    );
    assert!(support::wait_until(Duration::from_secs(5), || {
        support::run_in(&home, &["status"]).status.code() == Some(3)
    }));
}

#[test]
fn the_args_line_is_pythons_repr() {
    // zdaemon's controller and third-party tools parse `args=` back as a Python literal; the
    // manager writes what Python's repr writes, quotes, escapes and all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    // The program must run with all these words as arguments (`sleep` would reject them and
    // crash-loop): a shell that ignores its positional parameters.
    let words = [
        "sh",
        "-c",
        "exec sleep 100",
        "sh",
        "it's",
        "say \"hi\"",
        "both ' and \"",
        "tab\there",
        "back\\slash",
        "été 日本",
        "nbsp\u{a0}zwsp\u{200b}",
        "del\u{7f}",
    ];
    let toml_str = |w: &str| -> String {
        let mut out = String::from("\"");
        for c in w.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let program: Vec<String> = words.iter().map(|w| toml_str(w)).collect();
    std::fs::write(
        dir.path().join("etc/client.toml"),
        format!(
            "[zeoclient]\nservers = [\"127.0.0.1:1\"]\n[runner]\nprogram = [{}]\n",
            program.join(", ")
        ),
    )
    .unwrap();
    let _stop = Stopper(dir.path().to_path_buf());
    assert_eq!(
        support::run_in(dir.path(), &["start"]).status.code(),
        Some(0)
    );
    let out = support::run_in(dir.path(), &["status", "-l"]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let args_line = raw
        .lines()
        .find(|l| l.starts_with("args="))
        .expect("args line")
        .to_owned();
    let script = "import sys, json\nprint('args=' + repr(json.loads(sys.argv[1])))";
    let json = serde_json::to_string(&words).unwrap();
    let py = support::run_python(script, &[&json]);
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim_end(), args_line);
}
