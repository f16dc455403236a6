//! kill -9 of `zodbctl serve` during continuous commits by several real Python ZEO clients:
//! after the server is restarted on the same Data.fs, every transaction a client got
//! acknowledged (tpc_finish returned) is present, and no transaction is partial.
//!
//! Each round starts the server on the same file, lets `WRITERS` Python clients
//! (`tests/python/zeo_crash.py write`) commit continuously — single-object and 25-object
//! transactions, records of varied sizes — and SIGKILLs the server while they do; the writers
//! record every acknowledged tid. The next round's server must recover the file and serve
//! it (its writers read the trees the previous rounds built). Finally the server is restarted
//! once more and stopped with SIGTERM, and Python's FileStorage and fstest check the file
//! (`zeo_crash.py check`).

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PY: &str = include_str!("python/zeo_crash.py");
const WRITERS: usize = 3;
const ROUNDS: usize = 2;
/// Acknowledged commits each writer must have before the kill.
const ACKS_BEFORE_KILL: usize = 8;
const WAIT: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(datafs: &Path, log: PathBuf) -> Server {
        let out = File::create(&log).expect("create the server log");
        // ZEO_CRASH_SERVER=runzeo runs the same test against the reference server, to tell
        // the server's failures from the test's own.
        // (runzeo logs the configured port, so it gets a free one instead of 0.)
        let runzeo_port = std::env::var("ZEO_CRASH_SERVER")
            .is_ok_and(|v| v == "runzeo")
            .then(support::free_port);
        let mut cmd = if let Some(port) = runzeo_port {
            let python = support::python();
            let mut c = std::process::Command::new(python.with_file_name("runzeo"));
            c.args(["-a", &format!("127.0.0.1:{port}"), "-f"]);
            c
        } else {
            let mut c = support::zodbctl();
            c.args(["serve", "-a", "127.0.0.1:0", "-f"]);
            c
        };
        let child = cmd
            .arg(datafs)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn zodbctl serve");
        let mut s = Server {
            child,
            port: 0,
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let text = s.log_text();
            if let Some(port) = listening_port(&text) {
                s.port = runzeo_port.unwrap_or(port);
                return s;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("zodbctl serve exited with {status} at start:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "zodbctl serve did not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn no_panic(&self) {
        let text = self.log_text();
        assert!(!text.contains("panicked"), "the server panicked:\n{text}");
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the server");
        let _ = self.child.wait();
        self.no_panic();
    }

    fn terminate(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "no exit on SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "server exited with {status}:\n{}",
            self.log_text()
        );
        self.no_panic();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find("listening on ('")? + "listening on ('".len()..];
    let rest = &rest[rest.find("', ")? + 3..];
    rest[..rest.find(')')?].parse().ok()
}

fn acks(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ack "))
        .count()
}

fn python(args: &[&str]) {
    let out = support::python_command(PY, args)
        .stdin(Stdio::null())
        .output()
        .expect("run zeo_crash.py");
    assert!(
        out.status.success(),
        "zeo_crash.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_during_commits_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datafs = dir.path().join("Data.fs");
    let mut ack_files = Vec::new();
    for round in 0..ROUNDS {
        let server = Server::start(&datafs, dir.path().join(format!("server-{round}.log")));
        let port = server.port.to_string();
        if round == 0 {
            python(&["setup", "127.0.0.1", &port, &WRITERS.to_string()]);
        }
        let mut writers: Vec<(Child, PathBuf, PathBuf)> = (0..WRITERS)
            .map(|i| {
                let ack = dir.path().join(format!("ack-{round}-{i}.txt"));
                let err = dir.path().join(format!("writer-{round}-{i}.err"));
                let child = support::python_command(
                    PY,
                    &[
                        "write",
                        "127.0.0.1",
                        &port,
                        &i.to_string(),
                        &round.to_string(),
                        "100000",
                        "120",
                    ],
                )
                .stdin(Stdio::null())
                .stdout(File::create(&ack).expect("ack file"))
                .stderr(File::create(&err).expect("err file"))
                .spawn()
                .expect("spawn a writer");
                (child, ack, err)
            })
            .collect();
        // Let every writer get some commits acknowledged, then kill the server mid-stream.
        let deadline = Instant::now() + WAIT;
        while writers
            .iter()
            .any(|(_, ack, _)| acks(ack) < ACKS_BEFORE_KILL)
        {
            for (child, ack, err) in &mut writers {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "writer exited early ({status}):\n{}\n{}\n--- server\n{}",
                        std::fs::read_to_string(ack).unwrap_or_default(),
                        std::fs::read_to_string(err).unwrap_or_default(),
                        server.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "writers made too little progress:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill9();
        // The writers notice the dead server within their 5 s wait_timeout and stop.
        let deadline = Instant::now() + WAIT;
        for (child, ack, _) in &mut writers {
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ack_files.push(ack.clone());
        }
    }
    // Restart on the crashed file, stop cleanly, and let Python judge the file.
    let server = Server::start(&datafs, dir.path().join("server-final.log"));
    server.terminate();
    let mut args = vec!["check".to_string(), datafs.display().to_string()];
    args.extend(ack_files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::python_command(PY, &args)
        .stdin(Stdio::null())
        .output()
        .expect("run the check");
    assert!(
        out.status.success(),
        "the Data.fs check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
