//! `zodbctl serve` with real Python ZODB/ZEO clients and real Python FileStorage files:
//! invalidations and conflicts between two DBs, persistent client caches across a restart,
//! Data.fs compatibility both ways (fstest, identical reads), read-only serving, several
//! storages, status, signals, transaction timeout, TLS, configuration files. (kill -9 during
//! commits is `zeo_crash.rs`, hostile clients `zeo_hostile.rs`.)

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Serve, path_str as s};

const SCENARIOS: &str = include_str!("python/zeo_scenarios.py");

fn scenario(args: &[&str]) -> String {
    support::python_stdout(SCENARIOS, args)
}

#[test]
fn two_dbs_see_each_others_commits_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    let out = scenario(&["two_dbs", &server.addr()]);
    assert!(out.contains("OK two_dbs"), "{out}");
    assert_eq!(server.terminate(), 0);
}

/// The same with the connections on different network threads: the committer's thread
/// writes the invalidation to the other client's socket itself, before its own reply.
#[test]
fn two_dbs_on_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path())
        .file(&fs_path)
        .args(["--threads", "2"])
        .start();
    let out = scenario(&["two_dbs", &server.addr()]);
    assert!(out.contains("OK two_dbs"), "{out}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn persistent_client_caches_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let cache = dir.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    let out = scenario(&["cache_fill", &server.addr(), s(&cache)]);
    assert!(out.contains("OK cache_fill"), "{out}");
    assert_eq!(server.terminate(), 0);
    assert!(
        dir.path().join("Data.fs.index").exists(),
        "no index written on SIGTERM"
    );
    assert!(
        !dir.path().join("Data.fs.lock").exists()
            || fs::read_to_string(dir.path().join("Data.fs.lock")).is_ok()
    );

    // Restarted server; another client commits before the cached client comes back.
    server.restart();
    scenario(&["other_commit", &server.addr()]);
    let out = scenario(&["cache_reuse", &server.addr(), s(&cache)]);
    assert!(out.contains("OK cache_reuse"), "{out}");
    let log = server.log();
    assert!(log.contains("Return 1 invalidations up to tid"), "{log}");
    assert_eq!(server.terminate(), 0);
}

fn fstest(path: &Path) {
    let out = support::python_module("ZODB.scripts.fstest", [Path::new("-v"), path]);
    assert!(
        out.status.success(),
        "fstest failed on {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn datafs_written_through_serve_passes_fstest_and_reads_identically_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    scenario(&["write_some", &server.addr()]);
    let via_zeo = dir.path().join("via_zeo.txt");
    scenario(&["records", &server.addr(), s(&via_zeo)]);
    assert_eq!(server.terminate(), 0);
    fstest(&fs_path);
    let via_python = dir.path().join("via_python.txt");
    scenario(&["records", s(&fs_path), s(&via_python)]);
    let a = fs::read_to_string(&via_zeo).unwrap();
    let b = fs::read_to_string(&via_python).unwrap();
    assert!(a.lines().count() > 40, "{a}");
    assert!(a == b, "ZEO and Python FileStorage disagree");
}

#[test]
fn python_written_datafs_is_served_identically() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    support::make_datafs(&fs_path, "1", None);
    let via_python = dir.path().join("via_python.txt");
    scenario(&["records", s(&fs_path), s(&via_python)]);
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    let via_zeo = dir.path().join("via_zeo.txt");
    scenario(&["records", &server.addr(), s(&via_zeo)]);
    assert_eq!(server.terminate(), 0);
    let a = fs::read_to_string(&via_zeo).unwrap();
    let b = fs::read_to_string(&via_python).unwrap();
    assert!(a == b, "ZEO and Python FileStorage disagree");
    fstest(&fs_path);
}

#[test]
fn read_only_server_serves_read_only_and_fallback_clients() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).start();
    scenario(&["write_some", &server.addr()]);
    assert_eq!(server.terminate(), 0);
    let mut server = Serve::in_dir(dir.path()).file(&fs_path).read_only().start();
    let out = scenario(&["read_only", &server.addr()]);
    assert!(out.contains("OK read_only"), "{out}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_file_and_a_memory_storage_on_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path())
        .file(&fs_path)
        .memory("sessions")
        .msgpack()
        .start();
    let out = scenario(&["sessions", &server.addr()]);
    assert!(out.contains("OK sessions"), "{out}");
    let out = scenario(&["status", &server.addr()]);
    assert!(out.contains("OK status"), "{out}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn sigterm_writes_the_index_removes_the_pid_file_and_sigusr2_reopens_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let pid = dir.path().join("zeo.pid");
    let log = dir.path().join("zeo.log");
    let mut server = Serve::in_dir(dir.path())
        .file(&fs_path)
        .pid_file(&pid)
        .log_file(&log)
        .start();
    let pid_text = fs::read_to_string(&pid).expect("pid file");
    assert_eq!(pid_text.trim(), server.pid().to_string());
    fs::rename(&log, dir.path().join("zeo.log.1")).unwrap();
    server.signal(libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "log not reopened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.terminate(), 0);
    assert!(!pid.exists(), "pid file left behind");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("Log files reopened successfully"), "{text}");
    assert!(text.contains("terminated by SIGTERM"), "{text}");
    assert!(dir.path().join("Data.fs.index").exists());
}

#[test]
fn transaction_timeout_aborts_releases_the_lock_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let mut server = Serve::in_dir(dir.path())
        .file(&fs_path)
        .transaction_timeout(1.0)
        .start();
    let out = scenario(&["txn_timeout", &server.addr()]);
    assert!(out.contains("OK txn_timeout"), "{out}");
    let log = server.log();
    assert!(log.contains("Transaction timeout after 1 seconds"), "{log}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn mutual_tls_from_a_toml_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA, a server certificate and a client certificate signed by it.
    let Some(certs) = support::tls::make_certs(d, None) else {
        return;
    };
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(
        d.join("etc/zeo.toml"),
        "[zeo]\naddress = \"127.0.0.1:0\"\n[zeo.tls]\ncertificate = \"server.pem\"\n\
         key = \"server.key\"\nauthenticate = \"ca.pem\"\n\
         [storages.1]\ntype = \"file\"\npath = \"var/Data.fs\"\n\
         [eventlog]\npath = \"STDERR\"\n",
    )
    .unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    let mut server = Serve::in_dir(d).config(&d.join("etc/zeo.toml")).start();
    let out = scenario(&[
        "tls",
        &server.addr(),
        s(&certs.ca),
        s(&certs.client_cert),
        s(&certs.client_key),
    ]);
    assert!(out.contains("OK tls"), "{out}");
    assert_eq!(server.terminate(), 0);
    assert!(!d.join("var/zeo.pid").exists(), "pid file left behind");
}

#[test]
fn serves_a_zconfig_zeo_conf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("etc/zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  msgpack true\n</zeo>\n\
         <filestorage 1>\n  path var/Data.fs\n</filestorage>\n\
         <mappingstorage sessions>\n</mappingstorage>\n\
         <eventlog>\n  <logfile>\n    path STDERR\n  </logfile>\n</eventlog>\n",
    )
    .unwrap();
    let mut server = Serve::in_dir(d).config(&d.join("etc/zeo.conf")).start();
    let out = scenario(&["sessions", &server.addr()]);
    assert!(out.contains("OK sessions"), "{out}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let fs_path = dir.path().join("Data.fs");
    let sock = dir.path().join("zeo.sock");
    let mut server = Serve::in_dir(dir.path()).unix(&sock).file(&fs_path).start();
    let out = scenario(&["two_dbs", s(&sock)]);
    assert!(out.contains("OK two_dbs"), "{out}");
    assert_eq!(server.terminate(), 0);
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn tls_with_zeos_own_self_signed_certificates_from_a_zeo_conf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = scenario(&["zeo_tests_dir"]);
    let certs = Path::new(certs.trim());
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("zeo.conf"),
        format!(
            "<zeo>\n  address 127.0.0.1:0\n  <ssl>\n    certificate {}\n    key {}\n\
             \x20   authenticate {}\n  </ssl>\n</zeo>\n\
             <filestorage 1>\n  path var/Data.fs\n</filestorage>\n\
             <eventlog>\n  <logfile>\n    path STDERR\n  </logfile>\n</eventlog>\n",
            certs.join("server.pem").display(),
            certs.join("server_key.pem").display(),
            certs.join("client.pem").display(),
        ),
    )
    .unwrap();
    let mut server = Serve::in_dir(d).config(&d.join("zeo.conf")).start();
    let out = scenario(&["tls_zeo_certs", &server.addr()]);
    assert!(out.contains("OK tls_zeo_certs"), "{out}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn invalidation_age_verifies_caches_older_than_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("etc/zeo.toml"),
        "[zeo]\naddress = \"127.0.0.1:0\"\ninvalidation-queue-size = 1\n\
         invalidation-age = \"1h\"\n\
         [storages.1]\ntype = \"file\"\npath = \"var/Data.fs\"\n\
         [eventlog]\npath = \"STDERR\"\n",
    )
    .unwrap();
    let conf = d.join("etc/zeo.toml");
    let mut server = Serve::in_dir(d).config(&conf).start();
    let out = scenario(&["cache_fill", &server.addr(), s(&cache)]);
    assert!(out.contains("OK cache_fill"), "{out}");
    // Two commits while the cached client is away: more than the queue holds.
    scenario(&["other_commit", &server.addr()]);
    scenario(&["other_commit", &server.addr()]);
    let out = scenario(&["cache_reuse", &server.addr(), s(&cache)]);
    assert!(out.contains("OK cache_reuse"), "{out}");
    let log = server.log();
    assert!(log.contains("invalidations up to tid"), "{log}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn memory_storage_drops_superseded_revisions_after_history_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    fs::write(
        d.join("etc/zeo.toml"),
        "[zeo]\naddress = \"127.0.0.1:0\"\n\
         [storages.sessions]\ntype = \"memory\"\nhistory-seconds = 0\n\
         [eventlog]\npath = \"STDERR\"\n",
    )
    .unwrap();
    let mut server = Serve::in_dir(d).config(&d.join("etc/zeo.toml")).start();
    let out = scenario(&["memory_snapshot", &server.addr()]);
    assert!(out.contains("OK memory_snapshot"), "{out}");
    assert_eq!(server.terminate(), 0);
}
