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

use support::Server;

const PY: &str = include_str!("python/zeo_crash.py");
const WRITERS: usize = 3;
const ROUNDS: usize = 2;
/// Acknowledged commits each writer must have before the kill.
const ACKS_BEFORE_KILL: usize = 8;
const WAIT: Duration = Duration::from_secs(60);

/// The server under test on `datafs`: zodbctl's own, or with ZEO_CRASH_SERVER=runzeo the
/// reference server, to tell the server's failures from the test's own.
fn start_server(dir: &Path, datafs: &Path) -> Server {
    if std::env::var("ZEO_CRASH_SERVER").is_ok_and(|v| v == "runzeo") {
        support::RunZeo::in_dir(dir).file(datafs).start()
    } else {
        support::Serve::in_dir(dir).file(datafs).start()
    }
}

fn acks(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ack "))
        .count()
}

/// `zeo_crash.py ARGS`, which must succeed; its output.
fn python(args: &[&str]) -> std::process::Output {
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
    out
}

#[test]
fn kill_9_during_commits_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datafs = dir.path().join("Data.fs");
    let mut ack_files = Vec::new();
    for round in 0..ROUNDS {
        let mut server = start_server(dir.path(), &datafs);
        let port = server.port().to_string();
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
                        server.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "writers made too little progress:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
        // The writers notice the dead server within their 5 s wait_timeout and stop.
        let deadline = Instant::now() + WAIT;
        for (child, ack, _) in &mut writers {
            support::wait_child(child, deadline.saturating_duration_since(Instant::now()));
            ack_files.push(ack.clone());
        }
    }
    // Restart on the crashed file, stop cleanly, and let Python judge the file.
    let mut server = start_server(dir.path(), &datafs);
    server.stop();
    let mut args = vec!["check".to_string(), datafs.display().to_string()];
    args.extend(ack_files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The Data.fs check.
    let out = python(&args);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
