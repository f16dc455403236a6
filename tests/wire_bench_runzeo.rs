//! `zodbctl bench` against the reference server (runzeo from the pinned venv), in both
//! encodings; what it wrote is then loaded by a Python ClientStorage + ZODB.DB.

mod support;

use support::RunZeo;

const CHECK: &str = r#"
import sys
from ZEO.ClientStorage import ClientStorage
from ZODB import DB
from ZODB.utils import p64
from persistent.mapping import PersistentMapping
port, n = int(sys.argv[1]), int(sys.argv[2])
db = DB(ClientStorage(('127.0.0.1', port), wait_timeout=20))
conn = db.open()
for i in range(1, n + 1):
    o = conn.get(p64(i))
    assert isinstance(o, PersistentMapping), type(o)
    assert o['n'] == i - 1, (i, dict(o))
    assert o['rev'] >= 2 and o['payload'] == 'x' * 100, dict(o)
db.close()
print('ok', n)
"#;

fn bench_then_load(msgpack: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = RunZeo::in_dir(dir.path())
        .file(&dir.path().join("Data.fs"))
        .msgpack(msgpack)
        .start();
    let (addr, port) = (server.addr(), server.port());
    let out = support::zodbctl()
        .args([
            "bench",
            &addr,
            "-n",
            "30",
            "-c",
            "3",
            "--objects-per-txn",
            "4",
        ])
        .args(["--pipeline", "4", "--max-seconds", "20", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let want_encoding = if msgpack {
        "msgpack (M5)"
    } else {
        "pickle (Z5)"
    };
    assert_eq!(report["encoding"], want_encoding);
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "update", "cold-read", "warm-read", "mixed"]);
    for p in phases {
        assert_eq!(p["errors"], 0, "{p}");
        assert_eq!(p["ops"], 30, "{p}");
        assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
        // bench's own CPU in the phase, for the benchmark script.
        let (user, sys) = (p["client_user_s"].as_f64(), p["client_sys_s"].as_f64());
        assert!(user.unwrap() >= 0.0 && sys.unwrap() >= 0.0, "{p}");
        assert!(p["client_cpu_us_per_op"].as_f64().unwrap() >= 0.0, "{p}");
    }
    // 30 objects in 3 connections of 10, 4 per transaction: 3 transactions each.
    assert_eq!(phases[0]["transactions"], 9);

    let out = support::run_python(CHECK, &[&port.to_string(), "30"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 30");
}

#[test]
fn bench_against_runzeo_pickle() {
    bench_then_load(false);
}

#[test]
fn bench_against_runzeo_msgpack() {
    bench_then_load(true);
}

#[test]
fn bench_refuses_bad_options_and_unreachable_servers() {
    support::zodbctl_cmd()
        .args(["bench", "127.0.0.1:1", "-c", "0"])
        .assert()
        .code(2);
    let port = support::free_port();
    support::zodbctl_cmd()
        .args(["bench", &format!("127.0.0.1:{port}"), "-n", "1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("cannot connect"));
}

#[test]
fn bench_unknown_storage_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunZeo::in_dir(dir.path())
        .file(&dir.path().join("Data.fs"))
        .start();
    let port = server.port();
    support::zodbctl_cmd()
        .args([
            "bench",
            &format!("127.0.0.1:{port}"),
            "--storage",
            "nope",
            "-n",
            "1",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("unknown storage"));
    // Read phases alone create their objects first.
    let out = support::zodbctl()
        .args(["bench", &format!("127.0.0.1:{port}"), "-n", "5", "-c", "1"])
        .args(["--phases", "warm-read", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["phases"][0]["ops"], 5);
}

#[test]
fn bench_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("zeo.sock");
    let _server = RunZeo::in_dir(dir.path())
        .unix(&sock)
        .file(&dir.path().join("Data.fs"))
        .start();
    let out = support::zodbctl()
        .arg("bench")
        .arg(&sock)
        .args(["-n", "8", "-c", "2", "--phases", "add,cold-read", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["phases"][1]["ops"], 8);
}
