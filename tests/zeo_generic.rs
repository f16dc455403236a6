//! ZODB's generic storage tests, run by real Python `ZEO.ClientStorage` clients against
//! `zodbctl serve` on 127.0.0.1 (a free port per server), in both encodings. The Python side
//! is `tests/python/zeo_generic.py`: ZEO's own test classes from `ZEO/tests/testZEO.py`, with
//! only the server launcher replaced.

mod support;

use std::process::Stdio;

const HARNESS: &str = include_str!("python/zeo_generic.py");

fn run_suite(encoding: &str, suites: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zodbctl = env!("CARGO_BIN_EXE_zodbctl");
    let out = support::python_command(HARNESS, &[zodbctl, encoding, suites])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run the Python harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "generic storage tests ({suites}, {encoding}) failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!(
        "{suites} {encoding}: {}",
        stdout.lines().last().unwrap_or("")
    );
}

#[test]
fn memory_storage_msgpack() {
    run_suite("msgpack", "memory");
}

#[test]
fn memory_storage_pickle() {
    run_suite("pickle", "memory");
}
