//! The zodbctl side of the storage benchmark (run it through `scripts/bench-storage.sh`,
//! which prepares the files with `tools/make_datafs.py`, runs Python ZODB on the same files
//! and prints the ratios).
//!
//!     cargo bench --bench storage -- DIR
//!
//! Measures, on DIR/Big.fs: open with Python's `Data.fs.index`, open by a full scan
//! (DIR/Big-noindex.fs, a hard link without an index), random loads of current objects
//! (the same oid sequence as the Python side), index memory per object; on copies of
//! DIR/Small.fs: commits of 1-object and 100-object transactions (fsync-bound), and the
//! same on tmpfs (/dev/shm), where fsync is free and the commit path's own cost shows.
//! Then `zodbctl verify` and `zodbctl dump` on DIR/Big.fs (fstest's and fsdump's jobs).
//! Prints one JSON object. Built but never run by `cargo test` (no `--bench` argument).

use std::path::{Path, PathBuf};
use std::time::Instant;

use zodbctl::storage::{FileStorage, OpenOptions, StorageError, Tid, TxnMeta};

const LOADS: usize = 200_000;
const COMMITS_1: usize = 200;
const COMMITS_100: usize = 30;
const OPEN_RUNS: usize = 3;
/// Opens with an index take milliseconds: more runs, so the best is not a noisy one.
const INDEX_OPEN_RUNS: usize = 10;

/// The same 213-byte record as the Python side (`scripts/bench_storage.py`).
fn record() -> Vec<u8> {
    let mut r = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
    r.extend_from_slice(b"\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04");
    r.extend_from_slice(b"C\x88");
    r.extend(std::iter::repeat_n(b'x', 136));
    r.extend_from_slice(b"q\x05ss.");
    r
}

/// Knuth's MMIX LCG, 31 bits per step: the Python side draws the same sequence.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The resident set size, as the Python side measures fsIndex.
fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024.0
}

fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn open_ro(path: &Path) -> FileStorage {
    OpenOptions::new()
        .read_only(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn commits(dir: &Path, small: &Path, n_txn: usize, n_obj: usize) -> f64 {
    let work = dir.join("commit-rust.fs");
    for suffix in ["", ".index", ".lock", ".tmp"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
    }
    std::fs::copy(small, &work).expect("copy Small.fs");
    std::fs::copy(
        format!("{}.index", small.display()),
        format!("{}.index", work.display()),
    )
    .expect("copy Small.fs.index");
    let st = FileStorage::open(&work).expect("open the commit copy");
    let data = record();
    let t = Instant::now();
    for _ in 0..n_txn {
        let mut txn = st
            .begin(TxnMeta::new("bench", "commit", Vec::new()))
            .expect("begin");
        for _ in 0..n_obj {
            let oid = st.new_oid().expect("new_oid");
            txn.store(oid, Tid(0), &data).expect("store");
        }
        txn.vote().expect("vote");
        txn.finish().expect("finish");
    }
    let rate = n_txn as f64 / t.elapsed().as_secs_f64();
    st.close().expect("close");
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test` runs bench targets without --bench: nothing to do there.
        return;
    }
    let Some(dir) = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
    else {
        eprintln!("usage: cargo bench --bench storage -- DIR (see scripts/bench-storage.sh)");
        std::process::exit(2);
    };
    let big = dir.join("Big.fs");
    let noindex = dir.join("Big-noindex.fs");
    let small = dir.join("Small.fs");

    let file_bytes = std::fs::metadata(&big).expect("Big.fs").len();
    // First, before any other open has grown the heap: the resident set an open adds.
    let rss_before = rss_bytes();
    let st = open_ro(&big);
    let index_rss_bytes_per_object = (rss_bytes() - rss_before) / st.len() as f64;
    drop(st);
    drop(open_ro(&big)); // warm the page cache
    let st = open_ro(&big);
    assert!(st.used_index_file(), "Big.fs.index was not used");
    drop(st);
    let open_index_s = best(INDEX_OPEN_RUNS, || drop(open_ro(&big)));
    let st = open_ro(&noindex);
    assert!(!st.used_index_file());
    drop(st);
    let open_scan_s = best(OPEN_RUNS, || drop(open_ro(&noindex)));

    let st = open_ro(&big);
    let objects = st.len();
    let index_bytes_per_object = st.index_memory_bytes() as f64 / objects as f64;
    let oids = st.oids();
    let mut rnd = Lcg(42);
    let sample: Vec<_> = (0..LOADS)
        .map(|_| oids[(rnd.next() % oids.len() as u64) as usize])
        .collect();
    let mut ok = 0usize;
    let t = Instant::now();
    for oid in &sample {
        match st.load(*oid) {
            Ok(_) => ok += 1,
            Err(StorageError::PosKey { .. }) => {}
            Err(e) => panic!("load {oid}: {e}"),
        }
    }
    let loads_per_s = ok as f64 / t.elapsed().as_secs_f64();
    drop(st);

    let commit1_per_s = commits(&dir, &small, COMMITS_1, 1);
    let commit100_per_s = commits(&dir, &small, COMMITS_100, 100);
    // The same on tmpfs, where fsync costs nothing: the commit path's own cost.
    let shm = Path::new("/dev/shm").join(format!("zodbctl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&shm).expect("create a directory in /dev/shm");
    let commit1_tmpfs_per_s = commits(&shm, &small, COMMITS_1 * 5, 1);
    let commit100_tmpfs_per_s = commits(&shm, &small, COMMITS_100 * 5, 100);
    let _ = std::fs::remove_dir_all(&shm);

    // The maintenance tools on the same file: `verify` (fstest) and `dump` (fsdump).
    let tool = |args: &[&str]| {
        best(1, || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_zodbctl"))
                .args(args)
                .arg(&big)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run zodbctl");
            assert!(out.success(), "zodbctl {args:?} failed");
        })
    };
    let verify_s = tool(&["verify"]);
    let dump_s = tool(&["dump"]);

    println!(
        "{}",
        serde_json::json!({
            "file_bytes": file_bytes,
            "objects": objects,
            "open_index_s": open_index_s,
            "open_scan_s": open_scan_s,
            "loads_per_s": loads_per_s,
            "commit1_per_s": commit1_per_s,
            "commit100_per_s": commit100_per_s,
            "commit1_tmpfs_per_s": commit1_tmpfs_per_s,
            "commit100_tmpfs_per_s": commit100_tmpfs_per_s,
            "index_bytes_per_object": index_bytes_per_object,
            "index_rss_bytes_per_object": index_rss_bytes_per_object,
            "verify_s": verify_s,
            "dump_s": dump_s,
        })
    );
}
