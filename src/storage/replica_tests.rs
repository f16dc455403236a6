//! Replication engine tests: a primary copied chunk by chunk into a replica, refusals,
//! resync, and the generation.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::storage::{Committed, OpenOptions, PackOptions, TimeStamp, TxnMeta};

const BLOB_PICKLE: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.N.";

fn meta(d: &str) -> TxnMeta {
    TxnMeta::new("/ test", d, b"".to_vec())
}

fn open(dir: &Path, name: &str) -> FileStorage {
    OpenOptions::new()
        .blob_dir(dir.join(format!("{name}.blobs")))
        .progress(false)
        .open(dir.join(format!("{name}.fs")))
        .unwrap()
}

fn serial(fs: &FileStorage, oid: u64) -> Tid {
    fs.committed_tid(Oid(oid)).unwrap().unwrap_or(Tid::ZERO)
}

fn commit(fs: &FileStorage, stores: &[(u64, &[u8])]) -> Committed {
    let mut t = fs.begin(meta("c")).unwrap();
    for (oid, data) in stores {
        t.store(Oid(*oid), serial(fs, *oid), data).unwrap();
    }
    t.finish().unwrap()
}

fn commit_blob(fs: &FileStorage, oid: u64, content: &str) -> Committed {
    let up = fs.blob_tmp_dir().unwrap().join(format!("up-{content}"));
    fs::write(&up, content).unwrap();
    let mut t = fs.begin(meta("blob")).unwrap();
    t.store_blob(Oid(oid), serial(fs, oid), BLOB_PICKLE, &up)
        .unwrap();
    t.finish().unwrap()
}

fn undo(fs: &FileStorage, tid: Tid) -> Committed {
    let mut t = fs.begin(meta("undo")).unwrap();
    t.undo(tid).unwrap();
    t.finish().unwrap()
}

/// Creations, updates, a large record, blobs, undo of a data and of a blob change, a
/// deletion, an empty transaction.
fn populate(fs: &FileStorage, large: bool) {
    commit(fs, &[(0, b"root"), (1, b"x1"), (2, b"y1")]);
    let c2 = commit(fs, &[(1, b"x2")]);
    if large {
        let big = vec![7u8; 300_000];
        commit(fs, &[(3, &big)]);
    }
    commit_blob(fs, 4, "one");
    let b2 = commit_blob(fs, 4, "two");
    undo(fs, b2.tid);
    undo(fs, c2.tid);
    let mut t = fs.begin(meta("delete")).unwrap();
    t.delete(Oid(2), serial(fs, 2)).unwrap();
    t.finish().unwrap();
    commit(fs, &[]);
    commit(fs, &[(1, b"x3"), (0, b"root2"), (1, b"x4")]);
    // Last, one record per oid: the index sanity check at reopen looks at the last
    // transaction and (like Python's) expects each of its records to be current.
    commit(fs, &[(6, b"z")]);
}

/// Copy the blob files of a chunk to the replica's tmp directory (what a receiver does).
fn stage_blobs(r: &FileStorage, blobs: &[(Oid, Tid, PathBuf)]) -> Vec<(Oid, Tid, PathBuf)> {
    blobs
        .iter()
        .enumerate()
        .map(|(i, (oid, tid, src))| {
            let dst = r.blob_tmp_dir().unwrap().join(format!("incoming-{i}"));
            fs::copy(src, &dst).unwrap();
            (*oid, *tid, dst)
        })
        .collect()
}

/// Replicate `p` into `r` up to `limit` in chunks of `max_bytes`; returns the chunk ends.
fn replicate_to(p: &FileStorage, r: &FileStorage, limit: u64, max_bytes: u64) -> Vec<u64> {
    let generation = p.generation();
    let mut pos = r.size();
    let mut ends = Vec::new();
    while pos < limit {
        let chunk = p
            .raw_chunk(generation, pos, limit, max_bytes)
            .unwrap()
            .unwrap();
        assert!(chunk.txns >= 1);
        assert_eq!(chunk.start, pos);
        let mut buf = vec![0u8; (chunk.end - chunk.start) as usize];
        assert!(p.read_raw(generation, chunk.start, &mut buf).unwrap());
        let blobs = stage_blobs(r, &chunk.blobs);
        let rep = r.prepare_replicated(pos, &buf, blobs).unwrap();
        assert_eq!(rep.end(), chunk.end);
        assert_eq!(rep.last_tid(), chunk.last_tid);
        assert_eq!(rep.txns().len(), chunk.txns);
        rep.publish();
        pos = chunk.end;
        ends.push(pos);
    }
    ends
}

fn replicate(p: &FileStorage, r: &FileStorage, max_bytes: u64) -> Vec<u64> {
    replicate_to(p, r, p.size(), max_bytes)
}

/// Same objects, same current data and history, same blob files.
fn assert_same_content(p: &FileStorage, r: &FileStorage) {
    assert_eq!(p.oids(), r.oids());
    assert_eq!(p.last_transaction(), r.last_transaction());
    assert_eq!(p.size(), r.size());
    for oid in p.oids() {
        let a = p.load(oid).map_err(|e| e.to_string());
        let b = r.load(oid).map_err(|e| e.to_string());
        assert_eq!(a, b, "{oid}");
        assert_eq!(p.history(oid, 100).unwrap(), r.history(oid, 100).unwrap());
        for h in p.history(oid, 100).unwrap() {
            if let Ok(pb) = p.load_blob(oid, h.tid) {
                let rb = r.load_blob(oid, h.tid).unwrap();
                assert_eq!(fs::read(pb).unwrap(), fs::read(rb).unwrap());
            }
        }
    }
}

#[test]
fn replicates_byte_identically_chunk_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    populate(&p, true);
    let r = open(dir.path(), "replica");
    assert_eq!(fs::read(r.path()).unwrap(), b"FS30");
    // Small chunks: one transaction each (the large record's too).
    let ends = replicate(&p, &r, 100);
    assert!(ends.len() >= 10, "{ends:?}");
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(r.path()).unwrap());
    assert_same_content(&p, &r);
    assert_eq!(
        fs::read_to_string(r.load_blob(Oid(4), r.get_tid(Oid(4)).unwrap()).unwrap()).unwrap(),
        "one"
    );
    // Both agree on every boundary, the empty file included.
    for end in std::iter::once(4).chain(ends.iter().copied()) {
        let a = p.txn_ending_at(end).unwrap().unwrap();
        assert_eq!(Some(a), r.txn_ending_at(end).unwrap());
        assert_eq!(a.end, end);
    }
    let empty = p.txn_ending_at(4).unwrap().unwrap();
    assert_eq!((empty.start, empty.tid), (4, Tid::ZERO));
    assert_eq!(empty.md5, <[u8; 16]>::from(Md5::digest(b"FS30")));
    let last = p.txn_ending_at(p.size()).unwrap().unwrap();
    assert_eq!(last.tid, p.last_transaction());
    let bytes = fs::read(p.path()).unwrap();
    assert_eq!(
        last.md5,
        <[u8; 16]>::from(Md5::digest(&bytes[last.start as usize..last.end as usize]))
    );
    // Garbage positions.
    for end in [
        0,
        3,
        5,
        27,
        100,
        ends[0] - 1,
        ends[0] + 1,
        p.size() + 8,
        u64::MAX,
    ] {
        assert_eq!(p.txn_ending_at(end).unwrap(), None, "{end}");
    }
    // Reopen the replica, with its index and without.
    let rpath = r.path().to_path_buf();
    drop(r);
    let r = open(dir.path(), "replica");
    assert!(r.used_index_file());
    assert_same_content(&p, &r);
    drop(r);
    let r = OpenOptions::new()
        .blob_dir(dir.path().join("replica.blobs"))
        .ignore_index(true)
        .progress(false)
        .open(&rpath)
        .unwrap();
    assert!(!r.used_index_file());
    assert_same_content(&p, &r);
    // And it keeps following.
    commit(&p, &[(5, b"new")]);
    replicate(&p, &r, 1 << 20);
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(&rpath).unwrap());
    assert_eq!(r.load(Oid(5)).unwrap().0, b"new");
}

#[test]
fn big_chunks_and_blob_lists() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    populate(&p, false);
    let g0 = p.generation();
    let all = p.raw_chunk(g0, 4, p.size(), u64::MAX).unwrap().unwrap();
    assert_eq!((all.start, all.end), (4, p.size()));
    assert_eq!(all.last_tid, p.last_transaction());
    assert_eq!(all.txns, p.iter_transactions(None, None).unwrap().count());
    // Two stores and the undo's copy of the first revision.
    let blob_tids: Vec<Tid> = all.blobs.iter().map(|b| b.1).collect();
    assert_eq!(blob_tids.len(), 3, "{:?}", all.blobs);
    assert!(
        all.blobs
            .iter()
            .all(|(oid, _, path)| *oid == Oid(4) && path.is_file())
    );
    // An empty range, and a limit that is not a boundary or beyond the file.
    let none = p.raw_chunk(g0, p.size(), p.size(), 10).unwrap().unwrap();
    assert_eq!((none.txns, none.end), (0, p.size()));
    assert!(p.raw_chunk(g0, 4, p.size() - 1, u64::MAX).is_err());
    assert!(p.raw_chunk(g0, 4, p.size() + 1, u64::MAX).is_err());
    assert!(p.raw_chunk(g0, 5, p.size(), u64::MAX).is_err());
    let mut buf = [0u8; 16];
    assert!(p.read_raw(g0, p.size() - 8, &mut buf).is_err());
    let r = open(dir.path(), "replica");
    replicate(&p, &r, u64::MAX);
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(r.path()).unwrap());
    assert_same_content(&p, &r);
}

#[test]
fn a_durable_unpublished_transaction_can_be_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    let r = open(dir.path(), "replica");
    commit(&p, &[(0, b"root")]);
    replicate(&p, &r, u64::MAX);
    let mut t = p.begin(meta("sync")).unwrap();
    t.store(Oid(0), serial(&p, 0), b"root2").unwrap();
    t.vote().unwrap();
    t.make_durable().unwrap();
    let end = t.end();
    assert!(end > p.size());
    assert_eq!(
        p.txn_ending_at(end).unwrap(),
        None,
        "not committed for readers yet"
    );
    replicate_to(&p, &r, end, u64::MAX);
    assert_eq!(r.size(), end);
    let c = t.finish().unwrap();
    assert_eq!(r.last_transaction(), c.tid);
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(r.path()).unwrap());
    assert_eq!(p.txn_ending_at(end).unwrap(), r.txn_ending_at(end).unwrap());
}

/// The replica's file is unchanged by a refused or dropped `prepare_replicated`.
fn assert_refused(r: &FileStorage, at: u64, bytes: &[u8], what: &str) {
    let before = fs::read(r.path()).unwrap();
    let size = r.size();
    match r.prepare_replicated(at, bytes, Vec::new()) {
        Err(e @ StorageError::Replication { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(what), "{msg}");
            assert!(msg.contains(&r.path().display().to_string()), "{msg}");
        }
        other => panic!("{what}: {other:?}"),
    }
    assert_eq!(fs::read(r.path()).unwrap(), before);
    assert_eq!(r.size(), size);
}

#[test]
fn invalid_bytes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    commit(&p, &[(0, b"root"), (1, b"one")]);
    let first_end = p.size();
    commit(&p, &[(1, b"two")]);
    let bytes = fs::read(p.path()).unwrap();
    let t1 = bytes[4..first_end as usize].to_vec();
    let t2 = bytes[first_end as usize..].to_vec();
    let r = open(dir.path(), "replica");
    assert_refused(&r, 5, &t1, "committed end is 4");
    assert_refused(&r, 4, &t1[..t1.len() - 1], "runs past");
    let mut bad = t1.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_refused(&r, 4, &bad, "redundant transaction length");
    let mut bad = t1.clone();
    bad[16] = b'c';
    assert_refused(&r, 4, &bad, "transaction status 'c'");
    let mut bad = t1.clone();
    let hlen = 23 + 6 + 1; // "/ test", "c", no extension
    bad[hlen + 15] ^= 1;
    assert_refused(&r, 4, &bad, "differs from its transaction's");
    let mut bad = t1.clone();
    bad[hlen + 31] ^= 1;
    assert_refused(&r, 4, &bad, "transaction position");
    // The second transaction alone is not at the replica's end...
    assert_refused(&r, 4, &t2, "transaction position");
    let rep = r.prepare_replicated(4, &t1, Vec::new()).unwrap();
    assert_eq!(
        rep.txns(),
        &[(
            p.iter_transactions(None, None)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .tid,
            vec![Oid(0), Oid(1)]
        )]
    );
    rep.publish();
    // ... and the first again has a tid that does not increase.
    let again = t1.clone();
    assert_refused(&r, first_end, &again, "is not after");
    // A blob file that belongs to no record of the bytes.
    let stray = r.blob_tmp_dir().unwrap().join("stray");
    fs::write(&stray, "x").unwrap();
    let err = r
        .prepare_replicated(first_end, &t2, vec![(Oid(9), Tid(1), stray.clone())])
        .unwrap_err();
    assert!(err.to_string().contains("no record"), "{err}");
    assert!(stray.exists());
    assert_eq!(r.size(), first_end);
    replicate(&p, &r, u64::MAX);
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(r.path()).unwrap());
}

#[test]
fn replicated_is_send() {
    fn send<T: Send>() {}
    send::<Replicated>();
}

#[test]
fn dropping_unpublished_truncates_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    populate(&p, false);
    let r = open(dir.path(), "replica");
    let g0 = p.generation();
    let chunk = p.raw_chunk(g0, 4, p.size(), u64::MAX).unwrap().unwrap();
    let mut buf = vec![0u8; (chunk.end - 4) as usize];
    assert!(p.read_raw(g0, 4, &mut buf).unwrap());
    let blobs = stage_blobs(&r, &chunk.blobs);
    let installed: Vec<PathBuf> = chunk
        .blobs
        .iter()
        .map(|(o, t, _)| r.blobs().unwrap().blob_path(*o, *t))
        .collect();
    let rep = r.prepare_replicated(4, &buf, blobs).unwrap();
    assert_eq!(fs::metadata(r.path()).unwrap().len(), chunk.end);
    assert!(installed.iter().all(|b| b.is_file()));
    // Not visible before publish.
    assert_eq!(r.size(), 4);
    assert!(r.load(Oid(0)).unwrap_err().is_pos_key());
    assert!(r.commit_in_progress());
    drop(rep);
    assert!(!r.commit_in_progress());
    assert_eq!(fs::read(r.path()).unwrap(), b"FS30");
    assert!(installed.iter().all(|b| !b.exists()));
    replicate(&p, &r, u64::MAX);
    assert_same_content(&p, &r);
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn install_file_swaps_in_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    populate(&p, false);
    let r = open(dir.path(), "replica");
    commit(&r, &[(0, b"replica root"), (7, b"only here")]);
    commit_blob(&r, 8, "replica blob");
    let (old_pos, old_df) = r.current_pos(Oid(7)).unwrap();
    let gen0 = r.generation();
    let rblobs = r.blob_dir().unwrap().to_path_buf();
    let new = resync_path(r.path());
    let new_blobs = resync_blob_dir(&rblobs);
    fs::copy(p.path(), &new).unwrap();
    copy_tree(p.blob_dir().unwrap(), &new_blobs);
    // Not a FileStorage, and an unfinished tail: refused, nothing changes.
    let junk = dir.path().join("junk.fs");
    fs::write(&junk, b"nope").unwrap();
    assert!(matches!(
        r.install_file(&junk, None),
        Err(StorageError::Format { .. })
    ));
    let torn = dir.path().join("torn.fs");
    let pb = fs::read(p.path()).unwrap();
    fs::write(&torn, &pb[..pb.len() - 3]).unwrap();
    let err = r.install_file(&torn, None).unwrap_err();
    assert!(err.to_string().contains("unfinished or torn"), "{err}");
    assert_eq!(r.generation(), gen0);
    assert_eq!(r.load(Oid(7)).unwrap().0, b"only here");

    r.install_file(&new, Some(&new_blobs)).unwrap();
    assert!(r.generation() > gen0);
    assert!(!new.exists() && !new_blobs.exists());
    assert!(!suffixed(&rblobs, ".old-resync").exists());
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(r.path()).unwrap());
    assert_same_content(&p, &r);
    assert!(r.load(Oid(7)).unwrap_err().is_pos_key());
    // A reader that took the old file keeps reading it.
    let (_, data) = old_df.record_with_state(old_pos, Oid(7)).unwrap();
    assert_eq!(data.unwrap(), b"only here");
    // The blob directory works for new commits and replication goes on.
    assert!(r.blob_tmp_dir().unwrap().is_dir());
    commit_blob(&p, 4, "three");
    replicate(&p, &r, u64::MAX);
    assert_same_content(&p, &r);
    let rpath = r.path().to_path_buf();
    drop(r);
    let r = open(dir.path(), "replica");
    assert!(r.used_index_file());
    assert_same_content(&p, &r);
    assert_eq!(fs::read(p.path()).unwrap(), fs::read(&rpath).unwrap());
}

#[test]
fn stale_resync_files_are_removed_or_rolled_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), "replica");
    commit_blob(&r, 1, "kept");
    let tid = r.last_transaction();
    let rpath = r.path().to_path_buf();
    let rblobs = r.blob_dir().unwrap().to_path_buf();
    drop(r);
    // A download that never finished.
    fs::write(resync_path(&rpath), b"FS30partial").unwrap();
    fs::create_dir_all(resync_blob_dir(&rblobs).join("0x00")).unwrap();
    let r = open(dir.path(), "replica");
    assert!(!resync_path(&rpath).exists());
    assert!(!resync_blob_dir(&rblobs).exists());
    drop(r);
    // Interrupted between the blob swap and the commit point: the old tree comes back.
    fs::write(resync_path(&rpath), b"FS30").unwrap();
    fs::rename(&rblobs, suffixed(&rblobs, ".old-resync")).unwrap();
    fs::create_dir_all(rblobs.join("tmp")).unwrap();
    let r = open(dir.path(), "replica");
    assert_eq!(
        fs::read_to_string(r.load_blob(Oid(1), tid).unwrap()).unwrap(),
        "kept"
    );
    assert!(!suffixed(&rblobs, ".old-resync").exists());
}

#[test]
fn a_pack_changes_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    commit(&p, &[(0, b"root1")]);
    commit(&p, &[(0, b"root2")]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let g0 = p.generation();
    let report = p
        .pack(TimeStamp::now().time_time(), &PackOptions::default())
        .unwrap();
    assert_eq!(report.outcome, crate::storage::PackOutcome::Packed);
    assert_ne!(p.generation(), g0);
    assert_eq!(p.raw_chunk(g0, 4, p.size(), u64::MAX).unwrap(), None);
    let mut buf = [0u8; 4];
    assert!(!p.read_raw(g0, 0, &mut buf).unwrap());
    assert!(p.read_raw(p.generation(), 0, &mut buf).unwrap());
    assert_eq!(&buf, b"FS30");
}

#[test]
fn flipped_bytes_never_panic_and_payload_flips_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "primary");
    commit(&p, &[(0, b"root"), (1, b"one")]);
    let c2 = commit(&p, &[(1, b"two"), (2, b"three")]);
    undo(&p, c2.tid);
    let mut t = p.begin(meta("delete")).unwrap();
    t.delete(Oid(2), serial(&p, 2)).unwrap();
    t.finish().unwrap();
    let bytes = fs::read(p.path()).unwrap()[4..].to_vec();
    // Bytes whose value no check looks at: metadata strings and record payloads.
    let mut free = vec![false; bytes.len()];
    for info in p.iter_transactions(None, None).unwrap() {
        let info = info.unwrap();
        let tpos = (info.pos - 4) as usize;
        let meta_len = info.user.len() + info.description.len() + info.extension.len();
        free[tpos + 23..tpos + 23 + meta_len]
            .iter_mut()
            .for_each(|b| *b = true);
        let mut rp = tpos + 23 + meta_len;
        while rp < tpos + info.tlen as usize {
            let h = DataHeader::decode(bytes[rp..rp + 42].try_into().unwrap());
            if h.plen > 0 {
                free[rp + 42..rp + 42 + h.plen as usize]
                    .iter_mut()
                    .for_each(|b| *b = true);
            }
            rp += h.record_len() as usize;
        }
    }
    let r = open(dir.path(), "replica");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4);
    runner
        .run(&strategy, |flips| {
            let mut b = bytes.clone();
            let mut only_free = true;
            for (i, x) in &flips {
                let i = i.index(b.len());
                b[i] ^= x;
                only_free &= free[i];
            }
            match r.prepare_replicated(4, &b, Vec::new()) {
                Ok(rep) => drop(rep),
                Err(e) => {
                    prop_assert!(!only_free, "refused a payload-only change: {e}");
                    prop_assert!(matches!(e, StorageError::Replication { .. }), "{e}");
                }
            }
            prop_assert_eq!(fs::read(r.path()).unwrap(), b"FS30".to_vec());
            prop_assert_eq!(r.size(), 4);
            Ok(())
        })
        .unwrap();
}
