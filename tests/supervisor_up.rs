//! `zodbctl up` on an empty directory: scaffold a server, start it under its manager, wait
//! until it serves, and leave a server a real Python `ClientStorage` commits to.

mod support;

const COMMIT: &str = r#"
import sys, transaction, ZODB
from ZEO.ClientStorage import ClientStorage
host, port = sys.argv[1].rsplit(':', 1)
def open_db():
    return ZODB.DB(ClientStorage((host, int(port)), wait_timeout=30))
db = open_db()
conn = db.open()
conn.root()['answer'] = 42
transaction.commit()
db.close()
db = open_db()
assert db.open().root()['answer'] == 42
db.close()
print('committed')
"#;

#[test]
fn up_on_an_empty_directory_serves_python_clients() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("zeo");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let out = support::zodbctl()
        .arg("up")
        .arg(&dir)
        .args(["--address", &addr])
        .output()
        .unwrap();
    let stop = || support::run_in(&dir, &["stop"]);
    if out.status.code() != Some(0) {
        let _ = stop();
        panic!("up failed: {}", support::output_text(&out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("Wrote file"), "{stdout}");
    assert!(
        stdout.contains(&format!("ZEO server ready at {addr}")),
        "{stdout}"
    );
    assert!(stdout.contains("program running; pid="), "{stdout}");

    let py = support::python_command(COMMIT, &[&addr]).output().unwrap();

    // Log rotation: rename the server's log and the transcript, then `logreopen`: both are
    // created again and receive the next lines.
    let log = dir.join("log/zeo.log");
    let transcript = dir.join("log/transcript.log");
    std::fs::rename(&log, dir.join("log/zeo.log.1")).unwrap();
    std::fs::rename(&transcript, dir.join("log/transcript.log.1")).unwrap();
    let reopen = support::run_in(&dir, &["logreopen"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reopened"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let new_log = std::fs::read_to_string(&log).unwrap_or_default();
    let new_transcript = std::fs::read_to_string(&transcript).unwrap_or_default();

    let again = support::zodbctl().arg("up").arg(&dir).output().unwrap();
    let stopped = stop();
    assert!(py.status.success(), "python: {}", support::output_text(&py));
    assert!(String::from_utf8_lossy(&py.stdout).contains("committed"));
    assert!(
        String::from_utf8_lossy(&reopen.stdout).contains("signal SIGUSR2 sent to process"),
        "{}",
        support::output_text(&reopen)
    );
    assert!(new_log.contains("Log files reopened"), "{new_log}");
    assert!(
        new_transcript.contains("transcript reopened"),
        "{new_transcript}"
    );
    // A second `up` finds the running instance and creates nothing.
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        support::output_text(&again)
    );
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("daemon process already running"), "{again}");
    assert!(!again.contains("Wrote file"), "{again}");
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("daemon process stopped"));
    assert!(dir.join("var/Data.fs").exists());
}
