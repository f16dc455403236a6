//! Pack engine tests on real files (Python equivalence is in `tests/pack_python.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::storage::{Committed, TxnMeta};

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    (dir, path)
}

/// A record of class `persistent.list.PersistentList`-like shape whose state is a list of
/// persistent references `(oid, class)` plus a marker payload.
fn obj(refs: &[u64], tag: &str) -> Vec<u8> {
    let mut v = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
    v.extend_from_slice(b"\x80\x03](");
    for r in refs {
        v.extend_from_slice(b"C\x08");
        v.extend_from_slice(&r.to_be_bytes());
        v.extend_from_slice(b"h\x00\x86Q");
    }
    v.push(b'X');
    v.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    v.extend_from_slice(tag.as_bytes());
    v.extend_from_slice(b"e.");
    v
}

fn commit(fs: &FileStorage, stores: &[(u64, &[u8])]) -> Committed {
    let mut t = fs.begin(TxnMeta::new("/ t", "c", b"".to_vec())).unwrap();
    for (oid, data) in stores {
        let serial = fs.get_tid(Oid(*oid)).unwrap_or(Tid::ZERO);
        t.store(Oid(*oid), serial, data).unwrap();
    }
    t.vote().unwrap();
    t.finish().unwrap()
}

/// fstest's structural check of a file.
fn fstest(path: &std::path::Path) {
    let f = std::fs::File::open(path).unwrap();
    let mut progress = |_| {};
    let opts = crate::maintenance::fstest::Options {
        label: "Data.fs",
        verbosity: 0,
        progress: &mut progress,
    };
    let mut out = Vec::new();
    let r = crate::maintenance::fstest::check(&f, &mut out, opts);
    assert!(r.is_ok(), "{r:?} {}", String::from_utf8_lossy(&out));
}

fn now() -> f64 {
    TimeStamp::now().time_time()
}

/// A moment strictly between what was committed and what comes next.
fn pause() -> f64 {
    std::thread::sleep(Duration::from_millis(15));
    let t = now();
    std::thread::sleep(Duration::from_millis(15));
    t
}

fn statuses(fs: &FileStorage) -> Vec<u8> {
    fs.iter_transactions(None, None)
        .unwrap()
        .map(|t| t.unwrap().status.byte())
        .collect()
}

#[test]
fn gc_pack_keeps_what_is_reachable_and_current() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(&fs, &[(0, &obj(&[], "root0"))]);
    commit(
        &fs,
        &[
            (0, &obj(&[1, 3], "root1")),
            (1, &obj(&[2], "a1")),
            (2, &obj(&[], "b1")),
            (3, &obj(&[], "c1")),
        ],
    );
    commit(&fs, &[(1, &obj(&[2], "a2"))]);
    commit(&fs, &[(0, &obj(&[1], "root2"))]); // c unlinked
    let t = pause();
    let after = commit(&fs, &[(2, &obj(&[], "b2"))]);
    let before = fs.size();
    let r = fs.pack(t, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Packed);
    assert_eq!(r.bytes_before, before);
    assert_eq!(r.bytes_after, fs.size());
    assert!(r.bytes_after < before);
    assert_eq!(r.objects_removed, 1);
    assert!(fs.load(Oid(3)).unwrap_err().is_pos_key());
    assert_eq!(fs.load(Oid(1)).unwrap().0, obj(&[2], "a2"));
    assert_eq!(fs.load(Oid(2)).unwrap(), (obj(&[], "b2"), after.tid));
    assert_eq!(fs.history(Oid(2), 10).unwrap().len(), 2);
    assert_eq!(fs.history(Oid(1), 10).unwrap().len(), 1);
    assert_eq!(statuses(&fs), b"ppp ");
    assert!(suffixed(&path, ".old").exists());
    assert!(!suffixed(&path, ".pack").exists());
    // Commits go on after the swap, and the file reopens with the pack's index.
    commit(&fs, &[(1, &obj(&[2], "a3"))]);
    let size = fs.size();
    drop(fs);
    let fs = FileStorage::open(&path).unwrap();
    assert!(fs.used_index_file());
    assert_eq!(fs.size(), size);
    assert_eq!(fs.load(Oid(1)).unwrap().0, obj(&[2], "a3"));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record_path(&path)).unwrap()).unwrap();
    assert_eq!(rec["bytes_before"], before);
    assert_eq!(rec["objects_removed"], 1);
    // A second pack to the same time frees nothing and changes nothing; packing a fully
    // packed file is redundant (§9.2).
    let bytes = std::fs::read(&path).unwrap();
    let r = fs.pack(t, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::NothingFreed, "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(
        fs.pack(now() + 1.0, &PackOptions::default())
            .unwrap()
            .outcome,
        Outcome::Packed
    );
    let bytes = std::fs::read(&path).unwrap();
    let r = fs.pack(now() + 1.0, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Redundant, "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn nothing_freed_changes_nothing_and_empty_is_not_packed() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    assert_eq!(
        fs.pack(now(), &PackOptions::default()).unwrap().outcome,
        Outcome::Empty
    );
    commit(&fs, &[(0, &obj(&[1], "r")), (1, &obj(&[], "x"))]);
    let bytes = std::fs::read(&path).unwrap();
    let r = fs.pack(now() + 1.0, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::NothingFreed);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!suffixed(&path, ".pack").exists());
    assert!(!record_path(&path).exists());
    assert!(fs.pack(f64::NAN, &PackOptions::default()).is_err());
}

#[test]
fn undo_after_the_pack_time_is_retargeted() {
    // Spec §9.5.
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(&fs, &[(0, &obj(&[], "root"))]);
    commit(
        &fs,
        &[
            (0, &obj(&[1], "root")),
            (1, &obj(&[2, 3], "a1")),
            (2, &obj(&[], "c")),
            (3, &obj(&[], "b")),
        ],
    );
    commit(&fs, &[(1, &obj(&[2, 3], "a2"))]);
    commit(&fs, &[(1, &obj(&[3], "a3"))]);
    let t = pause();
    let t6 = commit(&fs, &[(1, &obj(&[3], "a6"))]);
    let mut u = fs.begin(TxnMeta::new("", "undo", vec![])).unwrap();
    u.undo(t6.tid).unwrap();
    u.vote().unwrap();
    u.finish().unwrap();
    let r = fs.pack(t, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Packed);
    assert_eq!(statuses(&fs), b"pp  ");
    assert_eq!(fs.load(Oid(1)).unwrap().0, obj(&[3], "a3"));
    assert!(fs.load(Oid(2)).unwrap_err().is_pos_key());
    // The undo's record is still a backpointer, into the packed region.
    let last = fs
        .iter_transactions(None, None)
        .unwrap()
        .last()
        .unwrap()
        .unwrap();
    let recs: Vec<_> = fs
        .transaction_records(&last)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].data_txn.is_some());
    assert_eq!(fs.undo_log(0, 10, |_| true).unwrap().len(), 2);
    // Packing again to a later time turns the backpointer into data.
    let r = fs.pack(now() + 1.0, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Packed);
    assert_eq!(fs.load(Oid(1)).unwrap().0, obj(&[3], "a3"));
}

#[test]
fn future_backpointer_to_an_unreachable_object_keeps_it_and_its_references() {
    // §9.9.1: Ta root.x = X, X.ref = Y1; Tb X.ref = Y2; Tc del root.x; <pack>; Td undo Tc;
    // Te undo Tb.
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(&fs, &[(0, &obj(&[], "root"))]);
    commit(
        &fs,
        &[
            (0, &obj(&[1], "root x")),
            (1, &obj(&[2], "X y1")),
            (2, &obj(&[], "Y1")),
        ],
    );
    let tb = commit(&fs, &[(1, &obj(&[3], "X y2")), (3, &obj(&[], "Y2"))]);
    let tc = commit(&fs, &[(0, &obj(&[], "root"))]);
    let t = pause();
    for undo in [tc.tid, tb.tid] {
        let mut u = fs.begin(TxnMeta::new("", "undo", vec![])).unwrap();
        u.undo(undo).unwrap();
        u.vote().unwrap();
        u.finish().unwrap();
    }
    for gc in [true, false] {
        let (_d2, copy) = tmp();
        std::fs::copy(&path, &copy).unwrap();
        let c = FileStorage::open(&copy).unwrap();
        let r = c
            .pack(
                t,
                &PackOptions {
                    gc,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(r.outcome, Outcome::Packed);
        assert_eq!(c.load(Oid(1)).unwrap().0, obj(&[2], "X y1"));
        assert_eq!(c.load(Oid(2)).unwrap().0, obj(&[], "Y1"));
        assert_eq!(c.load(Oid(0)).unwrap().0, obj(&[1], "root x"));
        fstest(&copy);
    }
}

#[test]
fn dangling_references_warn_and_pack_on_and_gc_off_keeps_everything_current() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(
        &fs,
        &[
            (0, &obj(&[7, 1], "root")),
            (1, &obj(&[], "a")),
            (2, &obj(&[], "lost")),
        ],
    );
    commit(&fs, &[(1, &obj(&[], "a2"))]);
    let (_d2, copy) = tmp();
    std::fs::copy(&path, &copy).unwrap();
    let r = fs.pack(now() + 1.0, &PackOptions::default()).unwrap();
    assert_eq!(
        (r.outcome, r.dangling_references, r.objects_removed),
        (Outcome::Packed, 1, 1)
    );
    let c = FileStorage::open(&copy).unwrap();
    let r = c
        .pack(
            now() + 1.0,
            &PackOptions {
                gc: false,
                keep_old: false,
                progress: None,
            },
        )
        .unwrap();
    assert_eq!(
        (r.outcome, r.objects_removed, r.records_removed),
        (Outcome::Packed, 0, 1)
    );
    assert_eq!(c.load(Oid(2)).unwrap().0, obj(&[], "lost"));
    assert!(!suffixed(&copy, ".old").exists());
}

#[test]
fn one_pack_at_a_time_and_stale_pack_files_are_removed_at_open() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(&fs, &[(0, &obj(&[], "r"))]);
    commit(&fs, &[(0, &obj(&[], "r2"))]);
    fs.inner.packing.store(true, Ordering::SeqCst);
    let e = fs.pack(now() + 1.0, &PackOptions::default()).unwrap_err();
    assert!(e.to_string().contains("already packing"), "{e}");
    fs.inner.packing.store(false, Ordering::SeqCst);
    drop(fs);
    std::fs::write(suffixed(&path, ".pack"), b"FS30garbage").unwrap();
    let fs = FileStorage::open(&path).unwrap();
    assert!(!suffixed(&path, ".pack").exists());
    assert_eq!(fs.load(Oid(0)).unwrap().0, obj(&[], "r2"));
}

#[test]
fn commits_and_loads_go_on_during_a_pack() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    commit(&fs, &[(0, &obj(&(1..200).collect::<Vec<_>>(), "root"))]);
    for round in 0..20 {
        let stores: Vec<(u64, Vec<u8>)> = (1..200)
            .map(|o| (o, obj(&[], &format!("{o}-{round}-{}", "x".repeat(200)))))
            .collect();
        let refs: Vec<(u64, &[u8])> = stores.iter().map(|(o, d)| (*o, &d[..])).collect();
        commit(&fs, &refs);
    }
    let t = pause();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut i = 0;
            while (!stop.load(Ordering::SeqCst) || done.len() < 5)
                && Instant::now() < deadline
                && i < 5000
            {
                let o = 1 + (i % 199);
                let data = obj(&[], &format!("live {i}"));
                done.push((o, commit(&fs, &[(o, &data)]).tid, data));
                i += 1;
            }
            done
        })
    };
    let reader = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 1_000_000 {
                for o in 0..200 {
                    fs.load(Oid(o)).unwrap();
                    fs.load_before(Oid(o), Tid(u64::MAX)).unwrap();
                }
                fs.undo_log(0, 5, |_| true).unwrap();
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let r = fs.pack(t, &PackOptions::default()).unwrap();
    stop.store(true, Ordering::SeqCst);
    let done = writer.join().unwrap();
    reader.join().unwrap();
    assert_eq!(r.outcome, Outcome::Packed);
    assert!(r.commit_lock_seconds < 1.0, "{r:?}");
    let mut latest = std::collections::HashMap::new();
    for (o, tid, data) in &done {
        assert_eq!(&fs.load_serial(Oid(*o), *tid).unwrap(), data);
        latest.insert(*o, (*tid, data.clone()));
    }
    for (o, (tid, data)) in latest {
        assert_eq!(fs.load(Oid(o)).unwrap(), (data, tid));
    }
    drop(fs);
    fstest(&path);
}

#[test]
fn blobs_are_removed_and_kept_in_the_old_tree() {
    let (d, path) = tmp();
    let blob_dir = d.path().join("blobs");
    let fs = crate::storage::OpenOptions::new()
        .blob_dir(&blob_dir)
        .open(&path)
        .unwrap();
    let blob = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.";
    let mut tids = Vec::new();
    for (oid, content) in [(1u64, "one"), (1, "two"), (2, "gone")] {
        let up = fs.blob_tmp_dir().unwrap().join(format!("up{oid}{content}"));
        std::fs::write(&up, content).unwrap();
        let mut t = fs.begin(TxnMeta::new("", "", vec![])).unwrap();
        if oid == 1 && content == "one" {
            t.store(Oid(0), Tid::ZERO, &obj(&[1, 2], "root")).unwrap();
        }
        let serial = fs.get_tid(Oid(oid)).unwrap_or(Tid::ZERO);
        t.store_blob(Oid(oid), serial, blob, &up).unwrap();
        t.vote().unwrap();
        tids.push(t.finish().unwrap().tid);
    }
    commit(&fs, &[(0, &obj(&[1], "root"))]);
    let r = fs.pack(now() + 1.0, &PackOptions::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Packed);
    let bd = crate::storage::blob::BlobDir::open(&blob_dir, true).unwrap();
    assert!(bd.blob_path(Oid(1), tids[1]).exists());
    assert!(!bd.blob_path(Oid(1), tids[0]).exists());
    assert!(!bd.oid_dir(Oid(2)).exists());
    let old = blobs::old_dir(&blob_dir);
    let old_bd = crate::storage::blob::BlobDir::open(&old, true).unwrap();
    for (o, t) in [(1, tids[0]), (1, tids[1]), (2, tids[2])] {
        assert!(old_bd.blob_path(Oid(o), t).exists(), "{o} {t}");
    }
    assert!(!blob_dir.join(blobs::REMOVED).exists());
    assert_eq!(r.blob_files_removed, 2);
}
