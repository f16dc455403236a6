//! Crash safety of the commit: a real writer process is killed (SIGKILL) at each stage of
//! a commit, and reopening never loses a finished transaction and never shows an
//! unfinished one. Python's fstest then accepts the recovered file.
//!
//! The writer is this test binary re-executed with `CRASH_CHILD` set: it commits a few
//! transactions (reporting each finished tid on stdout), then begins one more and stops at
//! the requested stage (the storage's `crash_hook`), announcing it; the parent kills it
//! there.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zodbctl::storage::crash_hook::{self, Stage};
use zodbctl::storage::{FileStorage, Oid, OpenOptions, StorageError, Tid, TxnMeta};

const FINISHED: usize = 3;
/// Marks the child's reports on stdout (libtest writes there too).
const MARK: &str = "@crash-test@ ";

fn data(i: usize) -> Vec<u8> {
    format!("\u{80}revision {i} {}", "x".repeat(i * 50)).into_bytes()
}

/// Open read-write. Another test thread of this process may be between fork and exec,
/// holding a copy of a just-closed descriptor of the same lock file for a moment (flock
/// locks belong to the open file description): retry briefly.
fn open_rw(path: &Path) -> FileStorage {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match OpenOptions::new().open(path) {
            Err(StorageError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// The new objects of the transaction that is interrupted.
fn pending_oid(i: usize, k: u64) -> Oid {
    Oid(10_000 + i as u64 * 100 + k)
}

/// The child writer. A no-op in a normal test run.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var("CRASH_CHILD") else {
        return;
    };
    let (stage, path) = spec.split_once(':').expect("stage:path");
    let fs = open_rw(Path::new(path));
    let mut serial = fs.get_tid(Oid(1)).unwrap_or(Tid::ZERO);
    let start = fs.iter_transactions(None, None).unwrap().count();
    for i in start..start + FINISHED {
        let mut t = fs
            .begin(TxnMeta::new("", format!("t{i}"), b"".to_vec()))
            .unwrap();
        t.store(Oid(1), serial, &data(i)).unwrap();
        t.store(Oid(2 + i as u64), Tid::ZERO, &data(i)).unwrap();
        t.vote().unwrap();
        serial = t.finish().unwrap().tid;
        println!("{MARK}finished {} {i}", serial.0);
    }
    let i = start + FINISHED;
    let mut t = fs
        .begin(TxnMeta::new("", format!("t{i}"), b"".to_vec()))
        .unwrap();
    println!("{MARK}pending {} {i}", t.tid().0);
    // Enough data that the vote write is a real multi-block write.
    t.store(Oid(1), serial, &data(i)).unwrap();
    for k in 0..50u64 {
        t.store(pending_oid(i, k), Tid::ZERO, &data(100)).unwrap();
    }
    let stage = match stage {
        "before-vote" => {
            println!("{MARK}stage BeforeVote");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "during-vote" => Stage::DuringVote,
        "after-vote" => Stage::AfterVote,
        "before-finish" => Stage::BeforeFinish,
        "during-finish" => Stage::DuringFinish,
        other => panic!("unknown stage {other}"),
    };
    crash_hook::set_crash_stage(stage);
    t.vote().unwrap();
    t.finish().unwrap();
    println!("{MARK}stage not reached");
}

struct Run {
    finished: Vec<(Tid, usize)>,
    pending: (Tid, usize),
}

fn kill_writer_at(stage: &str, path: &Path) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env("CRASH_CHILD", format!("{stage}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut finished = Vec::new();
    let mut pending = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "writer did not reach {stage}");
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("writer exited before {stage}"))
            .unwrap();
        // libtest may print "test child_writer ... " on the same line before our output.
        let ours = line
            .find("finished ")
            .or(line.find("pending "))
            .or(line.find("stage "));
        let words: Vec<&str> = ours.map_or(vec![], |i| line[i..].split_whitespace().collect());
        match words.as_slice() {
            ["finished", tid, i] => finished.push((Tid(tid.parse().unwrap()), i.parse().unwrap())),
            ["pending", tid, i] => pending = Some((Tid(tid.parse().unwrap()), i.parse().unwrap())),
            ["stage", s] => {
                assert_ne!(*s, "not", "stage {stage} not reached");
                break;
            }
            _ => {}
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Run {
        finished,
        pending: pending.expect("pending tid"),
    }
}

/// After a crash: every finished transaction is there with its data; the pending one is
/// wholly present when `expect_committed`, else wholly absent.
fn check_after_crash(
    path: &Path,
    all_finished: &[(Tid, usize)],
    (pending, pi): (Tid, usize),
    expect_committed: bool,
) -> bool {
    let check = |fs: &FileStorage| -> bool {
        let tids: Vec<Tid> = fs
            .iter_transactions(None, None)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect();
        for (tid, i) in all_finished {
            assert!(tids.contains(tid), "finished transaction {tid} lost");
            assert_eq!(fs.load_serial(Oid(1), *tid).unwrap(), data(*i));
            assert_eq!(fs.load(Oid(2 + *i as u64)).unwrap(), (data(*i), *tid));
        }
        let committed = tids.contains(&pending);
        assert_eq!(
            committed, expect_committed,
            "transaction {pending}: committed {committed}, expected {expect_committed}"
        );
        if committed {
            assert_eq!(fs.last_transaction(), pending);
            assert_eq!(fs.load_serial(Oid(1), pending).unwrap(), data(pi));
            for k in 0..50 {
                assert_eq!(fs.load(pending_oid(pi, k)).unwrap().1, pending);
            }
        } else {
            for k in 0..50 {
                assert!(fs.load(pending_oid(pi, k)).unwrap_err().is_pos_key());
            }
        }
        committed
    };
    // Read-only first: it must ignore the damage without touching the file.
    let before = std::fs::read(path).unwrap();
    let ro_committed = check(&FileStorage::open_read_only(path).unwrap());
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "read-only open changed the file"
    );
    let fs = open_rw(path);
    let committed = check(&fs);
    assert_eq!(committed, ro_committed);
    if !committed {
        // Nothing after the last finished transaction but earlier rounds' additions.
        assert!(fs.last_transaction() >= all_finished.last().unwrap().0);
        assert!(fs.last_transaction() < pending);
    }
    // The storage is usable again; new tids are after the crashed one.
    let mut t = fs
        .begin(TxnMeta::new("", "after crash", b"".to_vec()))
        .unwrap();
    assert!(t.tid() > pending);
    let fresh = fs.new_oid().unwrap();
    t.store(fresh, Tid::ZERO, b"after").unwrap();
    t.finish().unwrap();
    committed
}

fn fstest(path: &Path) {
    support::run_python(
        "import sys; from ZODB.scripts import fstest; fstest.check(sys.argv[1]); print('ok')",
        &[path.to_str().unwrap()],
    );
}

fn crash_at(stage: &str, expect_committed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut all = Vec::new();
    let mut committed_pending = Vec::new();
    let mut trs = 0;
    // Twice in a row: the second writer also recovers from the first crash.
    for round in 0..2 {
        let run = kill_writer_at(stage, &path);
        assert_eq!(run.finished.len(), FINISHED);
        all.extend(run.finished);
        let committed = check_after_crash(&path, &all, run.pending, expect_committed);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tr"))
            .collect();
        let expect_tr = stage != "before-vote" && !committed;
        if expect_tr {
            trs += 1;
        }
        assert_eq!(leftovers.len(), trs, "{stage} round {round}: {leftovers:?}");
        if committed {
            committed_pending.push(run.pending);
        }
        for (tid, i) in &committed_pending {
            let fs = FileStorage::open_read_only(&path).unwrap();
            assert_eq!(fs.load_serial(Oid(1), *tid).unwrap(), data(*i));
        }
    }
    fstest(&path);
}

#[test]
fn crash_before_vote() {
    crash_at("before-vote", false);
}

#[test]
fn crash_during_vote_write() {
    crash_at("during-vote", false);
}

#[test]
fn crash_after_vote() {
    crash_at("after-vote", false);
}

#[test]
fn crash_before_status_flip() {
    crash_at("before-finish", false);
}

#[test]
fn crash_during_finish() {
    // The status byte is written but not synced: after a process kill the page cache has
    // it, so the transaction is committed, as a whole. (A power failure at this point is
    // another matter; see `OpenOptions::sync_on_vote`.)
    crash_at("during-finish", true);
}
