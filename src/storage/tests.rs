//! Engine tests: opening, recovery, reads, commits, undo, blobs, on real files.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::tests::tiny;
use super::*;

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    (dir, path)
}

fn meta(d: &str) -> TxnMeta {
    TxnMeta::new("/ test", d, b"".to_vec())
}

fn commit(fs: &FileStorage, stores: &[(Oid, Tid, &[u8])]) -> Committed {
    let mut t = fs.begin(meta("c")).unwrap();
    for (oid, serial, data) in stores {
        t.store(*oid, *serial, data).unwrap();
    }
    t.vote().unwrap();
    t.finish().unwrap()
}

const T1: Tid = Tid(0x03f5_8e00_3333_3333);
const T2: Tid = Tid(0x03f5_8e00_5333_3333);

#[test]
fn reads_the_python_tiny_file() {
    let (_d, path) = tmp();
    let bytes = tiny();
    fs::write(&path, &bytes).unwrap();
    let fs = FileStorage::open_read_only(&path).unwrap();
    assert!(!fs.used_index_file());
    assert_eq!(fs.len(), 2);
    assert_eq!(fs.size(), 446);
    assert_eq!(fs.last_transaction(), T2);
    let (data, tid) = fs.load(Oid(0)).unwrap();
    assert_eq!(tid, T2);
    assert_eq!(data, &bytes[241..332]);
    assert_eq!(fs.load_serial(Oid(0), T1).unwrap(), &bytes[94..158]);
    let rev = fs.load_before(Oid(0), T2).unwrap().unwrap();
    assert_eq!((rev.start, rev.end), (T1, Some(T2)));
    assert_eq!(fs.load_before(Oid(0), T1).unwrap(), None);
    assert_eq!(fs.load_before(Oid(1), T2).unwrap(), None);
    assert!(fs.load(Oid(2)).unwrap_err().is_pos_key());
    let h = fs.history(Oid(0), 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].user, b"/ bob");
    assert_eq!(h[0].description, b"add a");
    assert_eq!(h[1].description, b"initial database creation");
    assert_eq!(h[0].size, 91);
    let txns: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(txns.len(), 2);
    let recs: Vec<_> = fs
        .transaction_records(&txns[1])
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].oid, Oid(1));
    assert_eq!(recs[1].data.as_deref(), Some(&bytes[374..438]));
    let from_t2: Vec<_> = fs.iter_transactions(Some(T2), None).unwrap().collect();
    assert_eq!(from_t2.len(), 1);
    let upto_t1: Vec<_> = fs.iter_transactions(None, Some(T1)).unwrap().collect();
    assert_eq!(upto_t1.len(), 1);
    let (oid, tid, _, next) = fs.record_iternext(None).unwrap().unwrap();
    assert_eq!((oid, tid, next), (Oid(0), T2, Some(Oid(1))));
    let (oid, _, _, next) = fs.record_iternext(Some(Oid(1))).unwrap().unwrap();
    assert_eq!((oid, next), (Oid(1), None));
    assert!(
        !path.with_extension("fs.index").exists(),
        "read-only wrote an index"
    );
}

#[test]
fn writes_python_identical_index_and_uses_it() {
    let (_d, path) = tmp();
    fs::write(&path, tiny()).unwrap();
    {
        let fs = FileStorage::open(&path).unwrap();
        assert!(!fs.used_index_file());
        fs.close().unwrap();
    }
    let index = fs::read(indexfile::index_path(&path)).unwrap();
    let want: Vec<u8> = [
        &b"\x80\x03M\xbe\x01."[..],
        b"\x80\x03C\x06\x00\x00\x00\x00\x00\x00C\x10\x00\x00\x00\x01",
        b"\x00\x00\x00\x00\x00\xc7\x00\x00\x00\x00\x01\x4c\x86.",
        b"\x80\x03N.",
    ]
    .concat();
    assert_eq!(index, want);
    let fs = FileStorage::open(&path).unwrap();
    assert!(fs.used_index_file());
    assert_eq!(fs.last_transaction(), T2);
    assert_eq!(fs.new_oid().unwrap(), Oid(2));
}

#[test]
fn commit_conflicts_and_reopen() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    assert_eq!(fs.size(), 4);
    assert_eq!(fs::read(&path).unwrap(), b"FS30");
    let a = fs.new_oid().unwrap();
    assert_eq!(a, Oid(1));
    let c1 = commit(&fs, &[(Oid(0), Tid::ZERO, b"root"), (a, Tid::ZERO, b"a1")]);
    assert_eq!(c1.oids, vec![Oid(0), a]);
    let c2 = commit(&fs, &[(a, c1.tid, b"a2")]);
    assert!(c2.tid > c1.tid);
    assert_eq!(fs.load(a).unwrap(), (b"a2".to_vec(), c2.tid));
    // Stale serial.
    let mut t = fs.begin(meta("stale")).unwrap();
    match t.store(a, c1.tid, b"a3") {
        Err(StorageError::Conflict { oid, serials }) => {
            assert_eq!(oid, a);
            assert_eq!(serials, (c2.tid, c1.tid));
        }
        other => panic!("{other:?}"),
    }
    match t.check_current_serial(Oid(0), Tid(5)) {
        Err(StorageError::ReadConflict { serials, .. }) => assert_eq!(serials, (c1.tid, Tid(5))),
        other => panic!("{other:?}"),
    }
    t.check_current_serial(Oid(0), c1.tid).unwrap();
    t.abort().unwrap();
    // Explicit tids must increase.
    let lock = fs.lock_commit().unwrap();
    assert!(matches!(
        lock.begin_at(meta("old"), c1.tid, Status::Committed),
        Err(StorageError::TidNotIncreasing { .. })
    ));
    drop(fs);
    let fs = FileStorage::open(&path).unwrap();
    assert!(fs.used_index_file());
    assert_eq!(fs.load(a).unwrap(), (b"a2".to_vec(), c2.tid));
    assert_eq!(fs.load_serial(a, c1.tid).unwrap(), b"a1");
    assert_eq!(fs.last_transaction(), c2.tid);
    assert_eq!(fs.new_oid().unwrap(), Oid(2));
    let c3 = commit(&fs, &[]);
    assert!(c3.tid > c2.tid);
    assert_eq!(fs.iter_transactions(None, None).unwrap().count(), 3);
}

#[test]
fn second_writer_is_locked_out_reader_is_not() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    assert!(matches!(
        FileStorage::open(&path),
        Err(StorageError::Locked { .. })
    ));
    let ro = FileStorage::open_read_only(&path).unwrap();
    assert!(matches!(ro.new_oid(), Err(StorageError::ReadOnly { .. })));
    assert!(ro.begin(meta("x")).is_err());
    drop(fs);
    FileStorage::open(&path).unwrap();
}

#[test]
fn deletion_and_undo_semantics() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let c1 = commit(
        &fs,
        &[(Oid(0), Tid::ZERO, b"root"), (Oid(1), Tid::ZERO, b"x1")],
    );
    let c2 = commit(&fs, &[(Oid(1), c1.tid, b"x2")]);
    // Undo c2: oid 1 back to x1 through a backpointer.
    let mut t = fs.begin(meta("undo")).unwrap();
    assert_eq!(t.undo(c2.tid).unwrap(), vec![Oid(1)]);
    t.vote().unwrap();
    let u = t.finish().unwrap();
    assert_eq!(u.oids, vec![Oid(1)]);
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"x1".to_vec(), u.tid));
    let hist = fs.history(Oid(1), 10).unwrap();
    assert_eq!(hist.len(), 3);
    assert_eq!(hist[0].size, 0);
    let log = fs.undo_log(0, -20, |_| true).unwrap();
    assert_eq!(
        log.iter().map(|i| i.tid).collect::<Vec<_>>(),
        vec![u.tid, c2.tid, c1.tid]
    );
    assert_eq!(Tid::from_undo_id(log[0].id().as_bytes()), Some(u.tid));
    assert_eq!(fs.undo_log(1, 2, |_| true).unwrap().len(), 1);
    assert_eq!(fs.undo_log(1, 1, |_| true).unwrap().len(), 0);
    // Undoing c2 again is impossible: the data changed since (x1 != x2).
    let mut t = fs.begin(meta("undo again")).unwrap();
    assert!(matches!(t.undo(c2.tid), Err(StorageError::Undo { .. })));
    t.abort().unwrap();
    // Undo the creation of oid 1 (c1) -- impossible now? c1 created oid 0 and 1; the
    // current data of 1 equals c1's data (x1), so it can be undone.
    let mut t = fs.begin(meta("undo creation")).unwrap();
    let oids = t.undo(c1.tid).unwrap();
    assert_eq!(oids, vec![Oid(0), Oid(1)]);
    let g = t.finish().unwrap();
    assert!(fs.load(Oid(1)).unwrap_err().is_pos_key());
    assert!(fs.get_tid(Oid(1)).unwrap_err().is_pos_key());
    assert_eq!(fs.len(), 2);
    // loadBefore: after the deletion → PosKey; between → data with end = deletion tid.
    assert!(
        fs.load_before(Oid(1), Tid(g.tid.0 + 1))
            .unwrap_err()
            .is_pos_key()
    );
    let r = fs.load_before(Oid(1), g.tid).unwrap().unwrap();
    assert_eq!(
        (r.data.as_slice(), r.start, r.end),
        (&b"x1"[..], u.tid, Some(g.tid))
    );
    assert_eq!(fs.load_before(Oid(1), c1.tid).unwrap(), None);
    // Iterator: deletion records have no data; backpointers report data_txn.
    let txns: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    let recs: Vec<_> = fs
        .transaction_records(&txns[2])
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(recs[0].data.as_deref(), Some(&b"x1"[..]));
    assert_eq!(recs[0].data_txn, Some(c1.tid));
    let recs: Vec<_> = fs
        .transaction_records(&txns[3])
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(recs[1].data, None);
    // deleteObject on a deleted object with the right serial works; wrong serial conflicts.
    let mut t = fs.begin(meta("del")).unwrap();
    assert!(t.delete(Oid(0), c1.tid).unwrap_err().is_conflict());
    assert!(t.delete(Oid(9), Tid::ZERO).unwrap_err().is_pos_key());
    t.abort().unwrap();
    let recent = fs.recent_transactions(2).unwrap();
    assert_eq!(
        recent,
        vec![(u.tid, vec![Oid(1)]), (g.tid, vec![Oid(0), Oid(1)])]
    );
}

#[test]
fn restore_writes_explicit_tids_and_backpointers() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let t1 = Tid(0x03f5_8e00_0000_0001);
    let t2 = Tid(0x03f5_8e00_0000_0002);
    let mut t = fs
        .lock_commit()
        .unwrap()
        .begin_at(meta("r1"), t1, Status::Packed)
        .unwrap();
    t.restore(Oid(0), t1, Some(b"root"), None).unwrap();
    assert!(t.restore(Oid(0), t2, Some(b"x"), None).is_err());
    t.finish().unwrap();
    let mut t = fs
        .lock_commit()
        .unwrap()
        .begin_at(meta("r2"), t2, Status::Committed)
        .unwrap();
    t.restore(Oid(0), t2, Some(b"root"), Some(t1)).unwrap();
    t.restore(Oid(5), t2, None, None).unwrap();
    t.finish().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), t2));
    assert!(fs.load(Oid(5)).unwrap_err().is_pos_key());
    assert_eq!(fs.new_oid().unwrap(), Oid(6));
    let h = fs.history(Oid(0), 5).unwrap();
    assert_eq!(h[0].size, 0, "restore with prev_txn wrote a backpointer");
    // Packed transactions end the undo log.
    assert_eq!(fs.undo_log(0, -20, |_| true).unwrap().len(), 1);
    let txns: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(txns[0].status, Status::Packed);
}

#[test]
fn reads_never_see_an_unfinished_transaction() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let c1 = commit(&fs, &[(Oid(0), Tid::ZERO, b"v1")]);
    let mut t = fs.begin(meta("pending")).unwrap();
    t.store(Oid(0), c1.tid, b"v2").unwrap();
    t.vote().unwrap();
    assert!(fs.commit_in_progress());
    assert!(fs.try_lock_commit().unwrap().is_none());
    let reader = fs.clone();
    let seen = std::thread::spawn(move || {
        (
            reader.load(Oid(0)).unwrap(),
            reader.iter_transactions(None, None).unwrap().count(),
        )
    })
    .join()
    .unwrap();
    assert_eq!(seen, ((b"v1".to_vec(), c1.tid), 1));
    let c2 = t.finish().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"v2".to_vec(), c2.tid));
    assert!(!fs.commit_in_progress());
    // Abort after vote truncates back.
    let size = fs.size();
    let mut t = fs.begin(meta("aborted")).unwrap();
    t.store(Oid(0), c2.tid, b"v3").unwrap();
    t.vote().unwrap();
    assert!(fs::metadata(&path).unwrap().len() > size);
    drop(t);
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
    assert_eq!(fs.load(Oid(0)).unwrap().0, b"v2");
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn recovers_a_checkpoint_transaction_like_python() {
    let (_d, path) = tmp();
    fs::write(&path, tiny()).unwrap();
    // A complete transaction with status 'c' (a writer died after vote).
    let bytes = tiny();
    let mut t2 = bytes[166..446].to_vec();
    t2[0..8].copy_from_slice(&Tid(0x03f5_8e00_6000_0000).to_bytes());
    t2[16] = b'c';
    // Fix tloc for the new position (446).
    for rec in [199 - 166, 332 - 166] {
        t2[rec + 24..rec + 32].copy_from_slice(&446u64.to_be_bytes());
    }
    append(&path, &t2);
    {
        let ro = FileStorage::open_read_only(&path).unwrap();
        assert_eq!(ro.size(), 446);
        assert_eq!(ro.last_transaction(), T2);
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), 446 + 280);
    let fs = FileStorage::open(&path).unwrap();
    assert_eq!(fs.size(), 446);
    assert_eq!(fs::metadata(&path).unwrap().len(), 446);
    let tr0 = path.with_extension("fs.tr0");
    assert_eq!(fs::read(&tr0).unwrap(), t2);
    // The next tid is after the removed one.
    let c = commit(&fs, &[]);
    assert!(c.tid > Tid(0x03f5_8e00_6000_0000));
}

#[test]
fn cuts_partial_headers_and_torn_transactions() {
    let (_d, path) = tmp();
    fs::write(&path, tiny()).unwrap();
    append(&path, &[1, 2, 3, 4, 5]);
    FileStorage::open(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 446);
    assert!(!path.with_extension("fs.tr0").exists());
    // A header whose tlen runs past the end.
    let bytes = tiny();
    append(&path, &bytes[166..300]);
    let fs = FileStorage::open(&path).unwrap();
    assert_eq!(fs.size(), 446);
    assert_eq!(
        fs::read(path.with_extension("fs.tr0")).unwrap(),
        &bytes[166..300]
    );
}

#[test]
fn damage_is_reported_with_position_and_not_repaired() {
    let (_d, path) = tmp();
    let mut bytes = tiny();
    bytes[158 + 7] ^= 1; // the redundant length of transaction 1
    fs::write(&path, &bytes).unwrap();
    for ro in [true, false] {
        let err = OpenOptions::new().read_only(ro).open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Data.fs is damaged at byte 4"), "{msg}");
        assert!(msg.contains("redundant transaction length"), "{msg}");
    }
    assert_eq!(fs::read(&path).unwrap(), bytes);
    let mut bytes = tiny();
    bytes[52 + 24 + 7] = 5; // tloc of the first data record
    fs::write(&path, &bytes).unwrap();
    let msg = FileStorage::open_read_only(&path).unwrap_err().to_string();
    assert!(
        msg.contains("damaged at byte 52") && msg.contains("tloc 5 != tpos 4"),
        "{msg}"
    );
    fs::write(&path, b"FS99xxxx").unwrap();
    assert!(matches!(
        FileStorage::open(&path),
        Err(StorageError::Format { .. })
    ));
    let mut fs21 = tiny();
    fs21[..4].copy_from_slice(b"FS21");
    fs::write(&path, &fs21).unwrap();
    assert!(FileStorage::open(&path).is_err());
    let ro = FileStorage::open_read_only(&path).unwrap();
    assert!(ro.is_fs21());
    assert_eq!(ro.len(), 2);
}

#[test]
fn stale_index_is_not_trusted() {
    let (_d, path) = tmp();
    fs::write(&path, tiny()).unwrap();
    // An index claiming oid 1 is elsewhere.
    let mut ix = index::OidIndex::new();
    ix.insert(Oid(0), 199).unwrap();
    ix.insert(Oid(1), 52).unwrap();
    indexfile::write_index_file(&indexfile::index_path(&path), 446, &ix).unwrap();
    let fs = FileStorage::open(&path).unwrap();
    assert!(!fs.used_index_file());
    assert_eq!(fs.load(Oid(1)).unwrap().1, T2);
}

#[test]
fn blobs_are_stored_loaded_and_undone() {
    let (d, path) = tmp();
    let blob_dir = d.path().join("blobs");
    let fs = OpenOptions::new().blob_dir(&blob_dir).open(&path).unwrap();
    let blob_pickle: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.N.";
    let up = fs.blob_tmp_dir().unwrap().join("up1");
    fs::write(&up, "one").unwrap();
    let mut t = fs.begin(meta("b1")).unwrap();
    t.store(Oid(0), Tid::ZERO, b"root").unwrap();
    t.store_blob(Oid(1), Tid::ZERO, blob_pickle, &up).unwrap();
    let c1 = t.finish().unwrap();
    let p1 = fs.load_blob(Oid(1), c1.tid).unwrap();
    assert_eq!(fs::read_to_string(&p1).unwrap(), "one");
    assert!(p1.starts_with(blob_dir.join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01")));
    let up = fs.blob_tmp_dir().unwrap().join("up2");
    fs::write(&up, "two").unwrap();
    let mut t = fs.begin(meta("b2")).unwrap();
    t.store_blob(Oid(1), c1.tid, blob_pickle, &up).unwrap();
    let c2 = t.finish().unwrap();
    assert_eq!(
        fs::read_to_string(fs.load_blob(Oid(1), c2.tid).unwrap()).unwrap(),
        "two"
    );
    let mut t = fs.begin(meta("undo b2")).unwrap();
    t.undo(c2.tid).unwrap();
    let u = t.finish().unwrap();
    assert_eq!(
        fs::read_to_string(fs.load_blob(Oid(1), u.tid).unwrap()).unwrap(),
        "one"
    );
    // An aborted blob store leaves no file behind.
    let up = fs.blob_tmp_dir().unwrap().join("up3");
    fs::write(&up, "three").unwrap();
    let mut t = fs.begin(meta("b3")).unwrap();
    t.store_blob(Oid(1), u.tid, blob_pickle, &up).unwrap();
    let tid = t.tid();
    t.vote().unwrap();
    t.abort().unwrap();
    assert!(fs.load_blob(Oid(1), tid).unwrap_err().is_pos_key());
}

#[test]
fn storage_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileStorage>();
    fn send<T: Send>() {}
    send::<Transaction>();
    send::<CommitLock>();
    send::<TransactionIter>();
}

#[test]
fn large_transactions_spill_to_the_tmp_file() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let c1 = commit(&fs, &[(Oid(1), Tid::ZERO, b"x1")]);
    let c2 = commit(&fs, &[(Oid(1), c1.tid, b"x2")]);
    let big: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 7 << 20]).collect();
    let mut t = fs.begin(meta("big")).unwrap();
    // Stored first, so it is read back from the spill file by the undo below.
    t.store(Oid(1), c2.tid, b"x2").unwrap();
    for (i, b) in big.iter().enumerate() {
        t.store(Oid(10 + i as u64), Tid::ZERO, b).unwrap();
    }
    assert!(path.with_extension("fs.tmp").exists());
    assert_eq!(t.undo(c2.tid).unwrap(), vec![Oid(1)]);
    let c3 = t.finish().unwrap();
    assert!(!path.with_extension("fs.tmp").exists());
    assert_eq!(fs.load(Oid(1)).unwrap(), (b"x1".to_vec(), c3.tid));
    for (i, b) in big.iter().enumerate() {
        assert_eq!(&fs.load(Oid(10 + i as u64)).unwrap().0, b);
    }
    drop(fs);
    let fs = OpenOptions::new()
        .read_only(true)
        .ignore_index(true)
        .open(&path)
        .unwrap();
    assert_eq!(fs.load(Oid(14)).unwrap().1, c3.tid);
}

#[test]
fn concurrent_readers_see_consistent_snapshots_during_commits() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let n_oids = 8u64;
    let first: Vec<(Oid, Tid, &[u8])> = (0..n_oids)
        .map(|o| (Oid(o), Tid::ZERO, &b"0"[..]))
        .collect();
    let c = commit(&fs, &first);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let fs = fs.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut last = vec![0u64; n_oids as usize];
                let mut rounds = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 10 {
                    rounds += 1;
                    let oid = Oid((rounds + r) % n_oids);
                    let (data, tid) = fs.load(oid).unwrap();
                    let i: u64 = std::str::from_utf8(&data).unwrap().parse().unwrap();
                    assert!(i >= last[oid.0 as usize], "went back in time");
                    last[oid.0 as usize] = i;
                    assert_eq!(fs.load_serial(oid, tid).unwrap(), data);
                    let before = fs.load_before(oid, Tid(tid.0 + 1)).unwrap().unwrap();
                    assert_eq!(before.start, tid);
                    assert!(fs.iter_transactions(None, None).unwrap().all(|t| t.is_ok()));
                    if rounds > 100_000 {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut serial = c.tid;
    for i in 1..=60u64 {
        let mut t = fs.begin(meta("w")).unwrap();
        let d = i.to_string();
        for o in 0..n_oids {
            t.store(Oid(o), serial, d.as_bytes()).unwrap();
        }
        t.vote().unwrap();
        if i % 7 == 0 {
            t.abort().unwrap();
            continue;
        }
        serial = t.finish().unwrap().tid;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(fs.load(Oid(0)).unwrap().0, b"60");
}

#[test]
fn restore_blob_moves_the_file() {
    let (d, path) = tmp();
    let fs = OpenOptions::new()
        .blob_dir(d.path().join("b"))
        .open(&path)
        .unwrap();
    let up = fs.blob_tmp_dir().unwrap().join("up");
    fs::write(&up, "restored").unwrap();
    let tid = Tid(0x03f5_8e00_0000_0009);
    let mut t = fs
        .lock_commit()
        .unwrap()
        .begin_at(meta("r"), tid, Status::Committed)
        .unwrap();
    t.restore_blob(
        Oid(3),
        tid,
        b"\x80\x03cZODB.blob\nBlob\nq\x00.N.",
        &up,
        None,
    )
    .unwrap();
    t.finish().unwrap();
    assert_eq!(
        fs::read_to_string(fs.load_blob(Oid(3), tid).unwrap()).unwrap(),
        "restored"
    );
    assert!(!up.exists());
}

/// Spec §6: the engine's behaviour on each single-field damage of the tiny file.
#[test]
fn corruption_matrix_of_section_6() {
    let (_d, path) = tmp();
    let open_both = |bytes: &[u8]| -> (Result<FileStorage>, Result<u64>) {
        fs::write(&path, bytes).unwrap();
        // Each case is a different file: the previous case's index must not apply.
        let _ = fs::remove_file(indexfile::index_path(&path));
        let ro = OpenOptions::new().read_only(true).open(&path);
        let ro_len = fs::metadata(&path).unwrap().len();
        assert_eq!(
            ro_len,
            bytes.len() as u64,
            "read-only open changed the file"
        );
        drop(ro.as_ref().ok().cloned());
        // The read-write storage is closed at once (its size is what the tests need).
        let rw = OpenOptions::new().open(&path).map(|fs| fs.size());
        (ro, rw)
    };
    // Status 'u' mid-file: the transaction is skipped.
    let mut b = tiny();
    b[166 + 16] = b'u';
    let (ro, rw) = open_both(&b);
    let ro = ro.unwrap();
    assert_eq!(ro.len(), 1);
    assert_eq!(ro.load(Oid(0)).unwrap().1, T1);
    assert_eq!(rw.unwrap(), 446);
    // Another status byte: a warning, read as committed.
    let mut b = tiny();
    b[166 + 16] = b'x';
    let (ro, _) = open_both(&b);
    assert_eq!(ro.unwrap().load(Oid(1)).unwrap().1, T2);
    // Tid reduction: a warning, read as is.
    let mut b = tiny();
    b[166..174].copy_from_slice(&Tid(5).to_bytes());
    let (ro, _) = open_both(&b);
    assert_eq!(ro.unwrap().len(), 2);
    // Data record overrunning its transaction: fatal both ways.
    let mut b = tiny();
    b[332 + 34..332 + 42].copy_from_slice(&1000u64.to_be_bytes());
    let (ro, rw) = open_both(&b);
    assert!(matches!(ro, Err(StorageError::Corrupted { pos: 332, .. })));
    assert!(matches!(rw, Err(StorageError::Corrupted { .. })));
    // tlen < hlen in mid-file: fatal.
    let mut b = tiny();
    b[4 + 8..4 + 16].copy_from_slice(&20u64.to_be_bytes());
    let (ro, rw) = open_both(&b);
    assert!(
        matches!(ro, Err(StorageError::Corrupted { pos: 4, .. })),
        "{ro:?}"
    );
    assert!(rw.is_err());
    // Wrong prev: logged, opens.
    let mut b = tiny();
    b[199 + 16..199 + 24].copy_from_slice(&7u64.to_be_bytes());
    let (ro, rw) = open_both(&b);
    assert!(ro.is_ok() && rw.is_ok());
    // vlen != 0: refused.
    let mut b = tiny();
    b[52 + 33] = 1;
    let (ro, _) = open_both(&b);
    assert!(ro.is_err());
    // Empty file: read-only sees an empty storage at 4; read-write writes the magic.
    let (ro, rw) = open_both(b"");
    assert_eq!(ro.unwrap().size(), 4);
    assert_eq!(rw.unwrap(), 4);
    assert_eq!(fs::read(&path).unwrap(), b"FS30");
}

#[test]
fn options_stop_create_and_quota() {
    let (d, path) = tmp();
    fs::write(&path, tiny()).unwrap();
    let ro = OpenOptions::new()
        .read_only(true)
        .stop(T2)
        .open(&path)
        .unwrap();
    assert_eq!((ro.len(), ro.last_transaction()), (1, T1));
    let fs = OpenOptions::new().quota(500).open(&path).unwrap();
    let mut t = fs.begin(meta("big")).unwrap();
    t.store(Oid(5), Tid::ZERO, &[1; 100]).unwrap();
    assert!(matches!(
        t.store(Oid(6), Tid::ZERO, &[1; 100]),
        Err(StorageError::Quota { quota: 500, .. })
    ));
    drop(t);
    fs.close().unwrap();
    assert!(matches!(
        fs.begin(meta("x")),
        Err(StorageError::Closed { .. })
    ));
    assert_eq!(fs.load(Oid(0)).unwrap().1, T2, "reads work after close");
    drop(fs);
    let blobs = d.path().join("blobs");
    fs::create_dir_all(blobs.join("0x00")).unwrap();
    let fs = OpenOptions::new()
        .create(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    assert_eq!((fs.len(), fs.size()), (0, 4));
    assert!(!blobs.join("0x00").exists());
    assert_eq!(fs::read_to_string(blobs.join(".layout")).unwrap(), "bushy");
}

#[test]
fn close_does_not_wait_for_a_transaction_in_progress() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let c1 = commit(
        &fs,
        &[(Oid(0), Tid::ZERO, b"one"), (Oid(1), Tid::ZERO, b"x")],
    );
    let c2 = commit(&fs, &[(Oid(1), c1.tid, b"y".repeat(100).as_slice())]);
    let mut t = fs.begin(meta("late")).unwrap();
    t.store(Oid(0), c1.tid, b"two").unwrap();
    t.vote().unwrap();
    fs.close().unwrap();
    assert!(fs.begin(meta("refused")).is_err());
    let c3 = t.finish().unwrap();
    drop(fs);
    let fs = FileStorage::open(&path).unwrap();
    assert!(fs.used_index_file());
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"two".to_vec(), c3.tid));
    assert_eq!(fs.load(Oid(1)).unwrap().1, c2.tid);
}

/// A small file with undo, deletion and several revisions, for damage tests.
fn sample_file(path: &Path) -> Vec<u8> {
    let fs = FileStorage::open(path).unwrap();
    let c1 = commit(
        &fs,
        &[(Oid(0), Tid::ZERO, b"root"), (Oid(1), Tid::ZERO, b"one")],
    );
    let c2 = commit(
        &fs,
        &[(Oid(1), c1.tid, b"two"), (Oid(2), Tid::ZERO, b"new")],
    );
    let mut t = fs.begin(meta("undo")).unwrap();
    t.undo(c2.tid).unwrap();
    t.finish().unwrap();
    let mut t = fs.begin(meta("delete")).unwrap();
    let serial = fs.get_tid(Oid(0)).unwrap();
    t.delete(Oid(0), serial).unwrap();
    t.finish().unwrap();
    drop(fs);
    let _ = fs::remove_file(indexfile::index_path(path));
    fs::read(path).unwrap()
}

/// Every read API, for damage tests: errors are fine, panics are not.
fn exercise(fs: &FileStorage) {
    for oid in 0..4 {
        let _ = fs.load(Oid(oid));
        let _ = fs.get_tid(Oid(oid));
        let _ = fs.history(Oid(oid), 10);
        let _ = fs.load_before(Oid(oid), Tid::MAX);
        let _ = fs.load_serial(Oid(oid), fs.last_transaction());
        let _ = fs.record_iternext(Some(Oid(oid)));
    }
    if let Ok(it) = fs.iter_transactions(None, None) {
        for t in it.take(50).flatten() {
            if let Ok(recs) = fs.transaction_records(&t) {
                for _ in recs.take(50) {}
            }
        }
    }
    let _ = fs.undo_log(0, -20, |_| true);
    let _ = fs.recent_transactions(10);
}

mod damage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]
        #[test]
        fn damaged_index_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3)) {
            static SAMPLE: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
            let (_d, path) = tmp();
            let (data, mut index) = SAMPLE
                .get_or_init(|| {
                    let data = sample_file(&path);
                    drop(FileStorage::open(&path).unwrap());
                    (data, fs::read(indexfile::index_path(&path)).unwrap())
                })
                .clone();
            for (i, b) in flips {
                let i = i.index(index.len());
                index[i] ^= b | 1;
            }
            fs::write(&path, &data).unwrap();
            fs::write(indexfile::index_path(&path), &index).unwrap();
            if let Ok(fs) = FileStorage::open(&path) {
                exercise(&fs);
            }
        }

        #[test]
        fn damaged_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                     cut in proptest::option::of(any::<prop::sample::Index>())) {
            static SAMPLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let (_d, path) = tmp();
            let mut bytes = SAMPLE.get_or_init(|| sample_file(&path)).clone();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
            fs::write(&path, &bytes).unwrap();
            if let Ok(fs) = FileStorage::open_read_only(&path) {
                exercise(&fs);
            }
            if let Ok(fs) = FileStorage::open(&path) {
                exercise(&fs);
                // A usable storage accepts a new transaction after recovery.
                if let Ok(mut t) = fs.begin(meta("after")) {
                    let _ = t.store(Oid(9), Tid::ZERO, b"x");
                    let _ = t.finish();
                }
            }
        }
    }
}

#[test]
fn make_durable_syncs_without_publishing_and_a_drop_keeps_it() {
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let c1 = commit(&fs, &[(Oid(0), Tid::ZERO, b"root")]);

    // Synced, but readers still see the previous state until finish publishes it.
    let mut t = fs.begin(meta("two halves")).unwrap();
    t.store(Oid(0), c1.tid, b"root 2").unwrap();
    t.make_durable().unwrap();
    t.make_durable().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root".to_vec(), c1.tid));
    assert_eq!(fs.last_transaction(), c1.tid);
    let c2 = t.finish().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root 2".to_vec(), c2.tid));

    // Dropping (or aborting) a durable transaction must not truncate what is on disk.
    let mut t = fs.begin(meta("dropped after the sync")).unwrap();
    t.store(Oid(0), c2.tid, b"root 3").unwrap();
    t.make_durable().unwrap();
    drop(t);
    let (data, tid) = fs.load(Oid(0)).unwrap();
    assert_eq!(data, b"root 3");
    assert!(tid > c2.tid);
    drop(fs);
    let fs = FileStorage::open(&path).unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (b"root 3".to_vec(), tid));
}

#[test]
fn blocked_committers_are_woken_when_the_lock_is_released() {
    // lock_commit counts its waiters and the release notifies only when there are any:
    // every blocked thread must still get the lock in turn.
    let (_d, path) = tmp();
    let fs = FileStorage::open(&path).unwrap();
    let held = fs.lock_commit().unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for j in 0..20u64 {
                    let mut t = fs.begin(meta("w")).unwrap();
                    t.store(Oid(i * 100 + j), Tid::ZERO, b"x").unwrap();
                    t.finish().unwrap();
                }
            })
        })
        .collect();
    // Give the threads a moment to block behind the held lock (not required for
    // correctness: a thread arriving later finds it free).
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fs.len(), 80);
    assert!(!fs.commit_in_progress());
    assert_eq!(super::filestorage::lock(&fs.inner.gate).waiters, 0);
}

/// Tests of the committed map (datafile.rs): reads past it fall back to `pread`, it is
/// re-made as the committed end grows, and it never covers bytes an abort truncates.
mod committed_map {
    use super::*;
    use crate::storage::datafile::{REMAP_GROWTH_DIVISOR, REMAP_MIN_GROWTH};

    fn mapped(fs: &FileStorage) -> u64 {
        fs.df().mapped_len()
    }

    /// A payload of `len` bytes that names its oid and version.
    fn big(oid: u64, v: u64, len: usize) -> Vec<u8> {
        let mut d = format!("oid {oid} v {v} ").into_bytes();
        d.resize(len, b'a' + (v % 26) as u8);
        d
    }

    #[test]
    fn reads_past_the_map_fall_back_then_a_remap_covers_them() {
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let c0 = commit(&fs, &[(Oid(0), Tid::ZERO, b"first")]);
        drop(fs);
        let fs = FileStorage::open(&path).unwrap();
        let at_open = mapped(&fs);
        assert_eq!(at_open, fs.size(), "the committed end is mapped at open");
        assert_eq!(fs.load(Oid(0)).unwrap(), (b"first".to_vec(), c0.tid));
        // Small commits stay beyond the map: read with pread.
        let c1 = commit(&fs, &[(Oid(1), Tid::ZERO, b"second")]);
        assert_eq!(mapped(&fs), at_open);
        assert!(fs.size() > mapped(&fs));
        assert_eq!(fs.load(Oid(1)).unwrap(), (b"second".to_vec(), c1.tid));
        // Grow past the threshold: the next commit re-maps the whole committed part.
        let mut serial = Tid::ZERO;
        let mut v = 0;
        while fs.size() < at_open + REMAP_MIN_GROWTH {
            v += 1;
            serial = commit(&fs, &[(Oid(2), serial, &big(2, v, 100_000))]).tid;
        }
        assert_eq!(mapped(&fs), fs.size());
        assert_eq!(fs.load(Oid(0)).unwrap(), (b"first".to_vec(), c0.tid));
        assert_eq!(fs.load(Oid(1)).unwrap(), (b"second".to_vec(), c1.tid));
        assert_eq!(fs.load(Oid(2)).unwrap(), (big(2, v, 100_000), serial));
        // Every older revision too (walks of prev pointers, through the map).
        for (i, h) in fs.history(Oid(2), 1000).unwrap().iter().enumerate() {
            let want = big(2, v - i as u64, 100_000);
            assert_eq!(fs.load_serial(Oid(2), h.tid).unwrap(), want);
        }
        // A small commit after the re-map is past the map again, and readable.
        let c3 = commit(&fs, &[(Oid(1), c1.tid, b"third")]);
        assert!(fs.size() > mapped(&fs));
        assert_eq!(fs.load(Oid(1)).unwrap(), (b"third".to_vec(), c3.tid));
        let rev = fs.load_before(Oid(1), c3.tid).unwrap().unwrap();
        assert_eq!((rev.data, rev.start), (b"second".to_vec(), c1.tid));
    }

    #[test]
    fn remaps_are_amortised() {
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let mut remaps = 0;
        let mut last = mapped(&fs);
        let mut serial = Tid::ZERO;
        for v in 0..120 {
            serial = commit(&fs, &[(Oid(1), serial, &big(1, v, 50_000))]).tid;
            let now = mapped(&fs);
            if now != last {
                remaps += 1;
                assert!(now - last >= REMAP_MIN_GROWTH.max(last / REMAP_GROWTH_DIVISOR));
                assert_eq!(now, fs.size());
                last = now;
            }
            assert!(mapped(&fs) <= fs.size());
        }
        // 6 MB in 1 MiB steps.
        assert!((4..=6).contains(&remaps), "{remaps} re-maps");
    }

    #[test]
    fn an_aborted_vote_after_a_remap_truncates_only_past_the_map() {
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let mut serial = Tid::ZERO;
        let mut v = 0;
        while mapped(&fs) < REMAP_MIN_GROWTH {
            v += 1;
            serial = commit(&fs, &[(Oid(0), serial, &big(0, v, 200_000))]).tid;
        }
        assert_eq!(mapped(&fs), fs.size());
        let end = fs.size();
        // A big vote, aborted: the file grows well past the map, then is cut back to the
        // committed end, which is the mapped length: the map stays valid.
        let mut t = fs.begin(meta("aborted")).unwrap();
        t.store(Oid(0), serial, &big(0, 999, 3_000_000)).unwrap();
        t.vote().unwrap();
        assert!(fs::metadata(&path).unwrap().len() > end + 3_000_000);
        t.abort().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), end);
        assert_eq!(mapped(&fs), end);
        assert_eq!(fs.load(Oid(0)).unwrap(), (big(0, v, 200_000), serial));
        // A vote dropped without abort does the same.
        let mut t = fs.begin(meta("dropped")).unwrap();
        t.store(Oid(0), serial, &big(0, 998, 2_000_000)).unwrap();
        t.vote().unwrap();
        drop(t);
        assert_eq!(fs::metadata(&path).unwrap().len(), end);
        // The next commit writes over the cut bytes; reads see the new ones, not the
        // aborted transaction's.
        let c = commit(&fs, &[(Oid(0), serial, &big(0, 1000, 2_000_000))]);
        assert_eq!(mapped(&fs), fs.size(), "2 MB past the map: re-mapped");
        assert_eq!(fs.load(Oid(0)).unwrap(), (big(0, 1000, 2_000_000), c.tid));
        let rev = fs.load_before(Oid(0), c.tid).unwrap().unwrap();
        assert_eq!((rev.data, rev.start), (big(0, v, 200_000), serial));
        drop(fs);
        // The file is sound: a full scan reads it back.
        let ro = OpenOptions::new()
            .read_only(true)
            .ignore_index(true)
            .open(&path)
            .unwrap();
        assert_eq!(ro.load(Oid(0)).unwrap(), (big(0, 1000, 2_000_000), c.tid));
        assert_eq!(mapped(&ro), ro.size());
    }

    #[test]
    fn concurrent_readers_during_remaps() {
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let n_oids = 6u64;
        // Object 0 is big (copied outside the map's lock), the others small.
        let size_of = |oid: u64| if oid == 0 { 100_000 } else { 20_000 };
        let first: Vec<Vec<u8>> = (0..n_oids).map(|o| big(o, 0, size_of(o))).collect();
        let stores: Vec<(Oid, Tid, &[u8])> = first
            .iter()
            .enumerate()
            .map(|(o, d)| (Oid(o as u64), Tid::ZERO, &d[..]))
            .collect();
        let c = commit(&fs, &stores);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3u64)
            .map(|r| {
                let fs = fs.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut last = vec![0u64; n_oids as usize];
                    let mut rounds = 0u64;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) && rounds < 200_000 {
                        rounds += 1;
                        let oid = (rounds + r) % n_oids;
                        let (data, tid) = fs.load(Oid(oid)).unwrap();
                        let text = String::from_utf8_lossy(&data[..24]).into_owned();
                        let v: u64 = text.split(' ').nth(3).unwrap().parse().unwrap();
                        assert_eq!(data, big(oid, v, size_of(oid)), "torn or wrong read");
                        assert!(v >= last[oid as usize], "went back in time");
                        last[oid as usize] = v;
                        if rounds % 16 == 0 {
                            assert_eq!(fs.load_serial(Oid(oid), tid).unwrap(), data);
                        }
                    }
                    rounds
                })
            })
            .collect();
        let mut serials = vec![c.tid; n_oids as usize];
        let mut remaps = 0;
        let mut last_map = mapped(&fs);
        for v in 1..=50u64 {
            let mut t = fs.begin(meta("w")).unwrap();
            let datas: Vec<Vec<u8>> = (0..n_oids).map(|o| big(o, v, size_of(o))).collect();
            for o in 0..n_oids {
                t.store(Oid(o), serials[o as usize], &datas[o as usize])
                    .unwrap();
            }
            t.vote().unwrap();
            if v % 9 == 0 {
                t.abort().unwrap();
                continue;
            }
            let tid = t.finish().unwrap().tid;
            serials.iter_mut().for_each(|s| *s = tid);
            if mapped(&fs) != last_map {
                remaps += 1;
                last_map = mapped(&fs);
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert!(remaps >= 3, "{remaps} re-maps");
        assert_eq!(fs.load(Oid(0)).unwrap().0, big(0, 50, 100_000));
    }

    #[test]
    fn loads_past_the_map_remap_once_they_cost_a_remap() {
        use crate::storage::datafile::REMAP_MIN_MISSES;
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let c0 = commit(&fs, &[(Oid(0), Tid::ZERO, b"mapped")]);
        drop(fs);
        let fs = FileStorage::open(&path).unwrap();
        let at_open = mapped(&fs);
        // A small commit: far below the growth threshold, so not mapped by the commit.
        let c1 = commit(&fs, &[(Oid(1), Tid::ZERO, b"tail")]);
        assert_eq!(mapped(&fs), at_open);
        // Loads of mapped objects are no misses.
        for _ in 0..2 * REMAP_MIN_MISSES {
            assert_eq!(fs.load(Oid(0)).unwrap(), (b"mapped".to_vec(), c0.tid));
        }
        assert_eq!(mapped(&fs), at_open);
        // Loads of the tail are, from several threads at once: one re-map covers it.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let fs = fs.clone();
                std::thread::spawn(move || {
                    for _ in 0..REMAP_MIN_MISSES {
                        assert_eq!(fs.load(Oid(1)).unwrap(), (b"tail".to_vec(), c1.tid));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(mapped(&fs), fs.size());
        // A vote past the new map, aborted: nothing mapped is cut.
        let mut t = fs.begin(meta("aborted")).unwrap();
        t.store(Oid(1), c1.tid, &big(1, 1, 50_000)).unwrap();
        t.vote().unwrap();
        t.abort().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), mapped(&fs));
        assert_eq!(fs.load(Oid(1)).unwrap(), (b"tail".to_vec(), c1.tid));
    }

    #[test]
    fn without_a_map_reads_stay_on_pread() {
        // What a file system that cannot mmap leaves: no map, ever, and the same answers.
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let c = commit(&fs, &[(Oid(0), Tid::ZERO, b"small")]);
        fs.df().disable_map();
        let mut serial = Tid::ZERO;
        for v in 0..30 {
            serial = commit(&fs, &[(Oid(1), serial, &big(1, v, 100_000))]).tid;
        }
        assert_eq!(mapped(&fs), 0);
        assert_eq!(fs.load(Oid(0)).unwrap(), (b"small".to_vec(), c.tid));
        assert_eq!(fs.load(Oid(1)).unwrap(), (big(1, 29, 100_000), serial));
        assert_eq!(fs.history(Oid(1), 100).unwrap().len(), 30);
    }

    #[test]
    fn a_read_only_open_maps_the_committed_end_only() {
        let (_d, path) = tmp();
        let fs = FileStorage::open(&path).unwrap();
        let c = commit(&fs, &[(Oid(0), Tid::ZERO, b"committed")]);
        // A writer's voted (status c) transaction is not mapped by a reader opened now.
        let mut t = fs.begin(meta("pending")).unwrap();
        t.store(Oid(0), c.tid, &big(0, 1, 10_000)).unwrap();
        t.vote().unwrap();
        let ro = FileStorage::open_read_only(&path).unwrap();
        assert_eq!(mapped(&ro), fs.size());
        assert_eq!(ro.load(Oid(0)).unwrap(), (b"committed".to_vec(), c.tid));
        // The writer aborts: the file is cut back to exactly the reader's mapped length.
        t.abort().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), mapped(&ro));
        assert_eq!(ro.load(Oid(0)).unwrap(), (b"committed".to_vec(), c.tid));
    }
}
