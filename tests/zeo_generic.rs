//! ZODB's generic storage tests, run by real Python `ZEO.ClientStorage` clients against
//! `zodbctl serve` on 127.0.0.1 (a free port per server), in both encodings. The Python side
//! is `tests/python/zeo_generic.py`: ZEO's own test classes from `ZEO/tests/testZEO.py`, with
//! only the server launcher replaced.

mod support;

use std::process::Stdio;

const HARNESS: &str = include_str!("python/zeo_generic.py");

fn run_suite(encoding: &str, suites: &str) {
    run_suite_with(encoding, suites, &[]);
}

/// `extra`: more arguments for the harness (e.g. `--threads N` for the servers).
fn run_suite_with(encoding: &str, suites: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zodbctl = env!("CARGO_BIN_EXE_zodbctl");
    let mut args = vec![zodbctl, encoding, suites];
    args.extend_from_slice(extra);
    // A suite takes a minute or two; a hang (a deadlock between a pack and a commit, say)
    // fails the test with the harness's output instead of holding the whole run.
    let out = support::output_within(
        support::python_command(HARNESS, &args)
            .current_dir(dir.path())
            .stdin(Stdio::null()),
        std::time::Duration::from_secs(600),
    );
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

// FileStorage: ZEO's FileStorageTests (Basic, Revision, History, Iterator, Synchronized, MT,
// ReadOnly, ConflictResolving, TransactionalUndo, Persistent, CommitLock, Thread, Iteration,
// Misc) and the Recovery tests, in both encodings.
//
// The pickle runs (here and for TLS below) give the servers 3 network threads, so that
// connections of one test live on different threads: invalidations are then written to
// other threads' sockets and the commit lock passes between threads. The msgpack runs keep
// the default (one thread on a 2-CPU machine).

#[test]
fn file_storage_pickle() {
    run_suite_with("pickle", "file,recovery", &["--threads", "3"]);
}

#[test]
fn file_storage_msgpack() {
    run_suite("msgpack", "file,recovery");
}

// Blobs: streamed (private client cache), the reusable blob suite, and a shared blob
// directory. TLS: ZEO's FileStorageSSLTests (its own self-signed certificates, from a
// zeo.conf <ssl> section). Each in both encodings.
#[test]
fn blobs_pickle() {
    run_suite("pickle", "blob,blobreuse");
}

#[test]
fn blobs_msgpack() {
    run_suite("msgpack", "blob,blobreuse");
}

#[test]
fn shared_blob_dir_and_tls_pickle() {
    run_suite_with("pickle", "sharedblob,ssl", &["--threads", "3"]);
}

#[test]
fn shared_blob_dir_and_tls_msgpack() {
    run_suite("msgpack", "sharedblob,ssl");
}

// The memory storage under ZEO's MappingStorage suite, and client-side conflict resolution.
#[test]
fn memory_storage_pickle() {
    run_suite("pickle", "memory,conflict");
}

#[test]
fn memory_storage_msgpack() {
    run_suite("msgpack", "memory,conflict");
}
