//! The storage engine against the model that matters most: Python ZODB 6.4's FileStorage.
//! Python writes a file and zodbctl reads every revision the way Python does (using
//! Python's `Data.fs.index` without a rescan); zodbctl writes a file and Python reads it
//! identically, `fstest` passes, with zodbctl's index and without it; Python appends and
//! zodbctl reads the appended transaction. And the same random sequence of stores,
//! deletions and undos (successful and refused), with the same tids, produces a
//! byte-identical Data.fs and Data.fs.index in both implementations.
//!
//! (The broad interop suite of issue 3 lives with the verify/dump tests; this is the
//! engine's own quick check.)

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use zodbctl::storage::{FileStorage, Oid, OpenOptions, Status, Tid, TxnMeta};

/// Python's view of a storage as JSON: every transaction with its records, the current
/// state of every object, the undo log, and blob contents.
const DUMP: &str = r#"
import sys, json
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import u64, p64
path, blob_dir = sys.argv[1], (sys.argv[2] or None)
fs = FileStorage(path, read_only=True, blob_dir=blob_dir)
hx = lambda b: None if b is None else b.hex()
def blob(oid, tid):
    if not blob_dir: return None
    try:
        with open(fs.loadBlob(oid, tid), 'rb') as f: return f.read().hex()
    except POSKeyError:
        return None
txns = []
for t in fs.iterator():
    recs = [[u64(r.oid), u64(r.tid), hx(r.data), None if r.data_txn is None else u64(r.data_txn),
             blob(r.oid, r.tid)] for r in t]
    txns.append(dict(tid=u64(t.tid), status=t.status, user=t.user.hex(), desc=t.description.hex(),
                     ext=t.extension_bytes.hex(), records=recs))
current = {}
oid = None
while True:
    try:
        o, tid, data, oid = fs.record_iternext(oid)
        current[str(u64(o))] = [u64(tid), data.hex()]
    except POSKeyError as e:
        # a deleted object: skip to the next one
        o = e.args[0]
        current[str(u64(o))] = None
        nxt = p64(u64(o) + 1)
        try:
            oid = fs._index.minKey(nxt)
        except ValueError:
            oid = None
    if oid is None: break
undo = [[d['id'].decode(), d['size']] for d in fs.undoLog(0, 100)]
print(json.dumps(dict(txns=txns, current=current, undo=undo, last=u64(fs.lastTransaction()),
                      size=fs.getSize(), len=len(fs))))
fs.close()
"#;

/// These tests close a storage and reopen it (or let Python open it) while the other
/// tests of this binary spawn Python: a child between fork and exec briefly holds a copy
/// of every descriptor, including a just-closed lock file's, and flock locks belong to
/// the open file description. Running them one at a time keeps that from causing a
/// spurious `Locked`/`LockError`.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn python_view(path: &Path, blob_dir: Option<&Path>) -> Value {
    let out = support::run_python(
        DUMP,
        &[
            path.to_str().unwrap(),
            blob_dir.map_or("", |b| b.to_str().unwrap()),
        ],
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn hx(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// zodbctl's view in the same shape.
fn our_view(fs: &FileStorage) -> Value {
    let mut txns = Vec::new();
    for t in fs.iter_transactions(None, None).unwrap() {
        let t = t.unwrap();
        let mut recs = Vec::new();
        for r in fs.transaction_records(&t).unwrap() {
            let r = r.unwrap();
            let blob = fs
                .blob_dir()
                .and_then(|_| fs.load_blob(r.oid, r.tid).ok())
                .map(|p| hx(&fs::read(p).unwrap()));
            recs.push(serde_json::json!([
                r.oid.0,
                r.tid.0,
                r.data.as_deref().map(hx),
                r.data_txn.map(|t| t.0),
                blob
            ]));
        }
        txns.push(serde_json::json!({
            "tid": t.tid.0,
            "status": (t.status.byte() as char).to_string(),
            "user": hx(&t.user),
            "desc": hx(&t.description),
            "ext": hx(&t.extension),
            "records": recs,
        }));
    }
    let mut current = serde_json::Map::new();
    for oid in fs.oids() {
        let v = match fs.load(oid) {
            Ok((data, tid)) => serde_json::json!([tid.0, hx(&data)]),
            Err(e) if e.is_pos_key() => Value::Null,
            Err(e) => panic!("{e}"),
        };
        current.insert(oid.0.to_string(), v);
    }
    let undo: Vec<Value> = fs
        .undo_log(0, 100, |_| true)
        .unwrap()
        .iter()
        .map(|u| serde_json::json!([u.id(), u.size]))
        .collect();
    serde_json::json!({
        "txns": txns, "current": current, "undo": undo,
        "last": fs.last_transaction().0, "size": fs.size(), "len": fs.len(),
    })
}

const PY_WRITE: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage, persistent.mapping, BTrees.OOBTree
from ZODB.Connection import TransactionMetaData
from ZODB.blob import Blob
d = sys.argv[1]
db = ZODB.DB(ZODB.FileStorage.FileStorage(d + '/Data.fs', blob_dir=d + '/blobs'))
c = db.open(); root = c.root()
root['t'] = BTrees.OOBTree.OOBTree()
for i in range(300):
    root['t'][i] = persistent.mapping.PersistentMapping(x=i)
root['b'] = Blob(b'blob one')
t = transaction.get(); t.note('fill \u00e9t\u00e9'); t.setUser('b\u00f6b'); t.setExtendedInfo('foo', 'bar')
transaction.commit()
root['t'][5]['x'] = 'changed'; transaction.commit()
with root['b'].open('w') as f: f.write(b'blob two')
transaction.commit()
db.undo(db.undoLog(0, 1)[0]['id']); transaction.commit()
root['gone'] = persistent.mapping.PersistentMapping(); transaction.commit()
db.undo(db.undoLog(0, 1)[0]['id']); transaction.commit()
t = TransactionMetaData(description='empty'); st = db.storage
st.tpc_begin(t); st.tpc_vote(t); st.tpc_finish(t)
c.close(); db.close()
"#;

#[test]
fn zodbctl_reads_python_files_as_python_does() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    support::run_python(PY_WRITE, &[dir.path().to_str().unwrap()]);
    let path = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    let want = python_view(&path, Some(&blobs));
    let index_before = fs::read(path.with_extension("fs.index")).unwrap();
    let fs = OpenOptions::new().blob_dir(&blobs).open(&path).unwrap();
    assert!(fs.used_index_file(), "Python's Data.fs.index was not used");
    assert_eq!(our_view(&fs), want);
    fs.close().unwrap();
    drop(fs);
    // Our index of Python's file (written after a scan) is byte-identical to Python's own.
    fs::remove_file(path.with_extension("fs.index")).unwrap();
    let fs = OpenOptions::new().blob_dir(&blobs).open(&path).unwrap();
    assert!(!fs.used_index_file());
    drop(fs);
    assert_eq!(
        fs::read(path.with_extension("fs.index")).unwrap(),
        index_before
    );
    // And a full scan finds the same thing.
    let fs = OpenOptions::new()
        .blob_dir(&blobs)
        .read_only(true)
        .ignore_index(true)
        .open(&path)
        .unwrap();
    assert_eq!(our_view(&fs), want);
}

#[test]
fn python_reads_zodbctl_files_as_zodbctl_does() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    let fs = OpenOptions::new().blob_dir(&blobs).open(&path).unwrap();
    // Real pickles: an empty PersistentMapping root and a blob object.
    let pm: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.";
    let blob: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.N.";
    let ext: &[u8] = b"\x80\x03}q\x00(X\x03\x00\x00\x00fooq\x01X\x03\x00\x00\x00barq\x02X\x01\x00\x00\x00nq\x03K\x01u.";
    let mut t = fs
        .begin(TxnMeta::new("/ b\u{f6}b", "cr\u{e9}ation", ext.to_vec()))
        .unwrap();
    t.store(Oid(0), Tid::ZERO, pm).unwrap();
    let a = fs.new_oid().unwrap();
    t.store(a, Tid::ZERO, pm).unwrap();
    let b = fs.new_oid().unwrap();
    let up = fs.blob_tmp_dir().unwrap().join("upload");
    fs::write(&up, b"blob one").unwrap();
    t.store_blob(b, Tid::ZERO, blob, &up).unwrap();
    t.vote().unwrap();
    let c1 = t.finish().unwrap();
    let mut t = fs.begin(TxnMeta::new("", "modify", b"".to_vec())).unwrap();
    t.store(a, c1.tid, pm).unwrap();
    t.store(a, c1.tid, pm).unwrap(); // stored twice: two records, the last wins
    fs::write(&up, b"blob two").unwrap();
    t.store_blob(b, c1.tid, blob, &up).unwrap();
    let c2 = t.finish().unwrap();
    let mut t = fs.begin(TxnMeta::new("", "undo", b"".to_vec())).unwrap();
    t.undo(c2.tid).unwrap();
    let c3 = t.finish().unwrap();
    let mut t = fs.begin(TxnMeta::new("", "delete", b"".to_vec())).unwrap();
    t.delete(a, c3.tid).unwrap();
    t.finish().unwrap();
    fs.begin(TxnMeta::default()).unwrap().finish().unwrap(); // empty transaction
    let ours = our_view(&fs);
    fs.close().unwrap();
    drop(fs);

    assert_eq!(python_view(&path, Some(&blobs)), ours);
    let fstest = |p: &Path| {
        support::run_python(
            "import sys; from ZODB.scripts import fstest; fstest.check(sys.argv[1]); print('ok')",
            &[p.to_str().unwrap()],
        )
    };
    fstest(&path);
    // Python uses our index without a rescan.
    let used = support::run_python(
        "import sys; from ZODB.FileStorage import FileStorage as F\nf = F(sys.argv[1]); print(f._used_index); f.close()",
        &[path.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8_lossy(&used.stdout).trim(), "1");
    // Without the index, Python's scan agrees as well.
    fs::remove_file(path.with_extension("fs.index")).unwrap();
    assert_eq!(python_view(&path, Some(&blobs)), ours);
    support::run_python(
        "import sys, ZODB.FileStorage as F\nf = F.FileStorage(sys.argv[1]); print(f._used_index); f.close()",
        &[path.to_str().unwrap()],
    );
    // Python appends; zodbctl reads the appended transaction (its index covers the rest).
    support::run_python(
        r#"
import sys, transaction
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64
fs = FileStorage(sys.argv[1])
t = TransactionMetaData(description='appended by python')
fs.tpc_begin(t); fs.store(p64(7), b'\0'*8, b'\x80\x03K\x01.', '', t); fs.tpc_vote(t); fs.tpc_finish(t)
fs.close()
"#,
        &[path.to_str().unwrap()],
    );
    let fs = OpenOptions::new().blob_dir(&blobs).open(&path).unwrap();
    assert!(fs.used_index_file());
    assert_eq!(fs.load(Oid(7)).unwrap().0, b"\x80\x03K\x01.");
    assert_eq!(fs.new_oid().unwrap(), Oid(8));
    let last = fs
        .iter_transactions(None, None)
        .unwrap()
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(last.description, b"appended by python");
    assert_eq!(last.status, Status::Committed);
}

/// Replays an operation log on Python's FileStorage with the same explicit tids.
const REPLAY: &str = r#"
import sys, json, base64
from ZODB.FileStorage import FileStorage
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import UndoError
from ZODB.utils import p64
path, log = sys.argv[1], json.load(open(sys.argv[2]))
fs = FileStorage(path)
for op in log:
    t = TransactionMetaData(user=op['user'], description=op['desc'])
    fs.tpc_begin(t, p64(op['tid']))
    failed = False
    for w in op['writes']:
        kind = w[0]
        if kind == 'store':
            fs.store(p64(w[1]), p64(w[2]), bytes.fromhex(w[3]), '', t)
        elif kind == 'delete':
            fs.deleteObject(p64(w[1]), p64(w[2]), t)
        elif kind == 'undo':
            try:
                fs.undo(base64.encodebytes(p64(w[1])).rstrip(), t)
            except UndoError:
                failed = True
    if op['aborted']:
        assert failed == op['undo_failed'], op
        fs.tpc_abort(t)
    else:
        fs.tpc_vote(t)
        fs.tpc_finish(t)
fs.close()
"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn same_operations_give_byte_identical_files() {
    let _serial = one_at_a_time();
    let (mut undos, mut undo_failures) = (0, 0);
    for seed in [1u64, 7, 42] {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.fs");
        let theirs = dir.path().join("theirs.fs");
        let fs = FileStorage::open(&ours).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut tid = Tid(0x040d_0000_0000_0000);
        let mut committed: Vec<Tid> = Vec::new();
        let mut log = Vec::new();
        for n in 0..40 {
            tid = Tid(tid.0 + 1 + rng.next(1000));
            let user = if n % 3 == 0 { "/ b\u{f6}b" } else { "" };
            let desc = format!("op {n}");
            let lock = fs.lock_commit().unwrap();
            let mut t = lock
                .begin_at(
                    TxnMeta::new(user, desc.clone(), b"".to_vec()),
                    tid,
                    Status::Committed,
                )
                .unwrap();
            let mut writes = Vec::new();
            let mut undo_failed = false;
            let kind = rng.next(10);
            if kind < 3 && !committed.is_empty() {
                // One or two undos, sometimes followed by a store in the same transaction.
                for _ in 0..1 + usize::from(kind == 0) {
                    let back = rng.next(committed.len().min(4) as u64) as usize;
                    let target = committed[committed.len() - 1 - back];
                    writes.push(serde_json::json!(["undo", target.0]));
                    undos += 1;
                    if t.undo(target).is_err() {
                        undo_failed = true;
                        undo_failures += 1;
                        break;
                    }
                }
                if !undo_failed && kind == 1 {
                    let oid = rng.next(6);
                    let serial = fs.committed_tid(Oid(oid)).unwrap().unwrap_or(Tid::ZERO);
                    let data = format!("\u{80}\u{3}after undo {oid} {n}").into_bytes();
                    t.store(Oid(oid), serial, &data).unwrap();
                    writes.push(serde_json::json!(["store", oid, serial.0, hx(&data)]));
                }
            } else if kind == 3 {
                // An empty transaction.
            } else {
                for _ in 0..1 + rng.next(3) {
                    let oid = rng.next(6);
                    let serial = fs.committed_tid(Oid(oid)).unwrap().unwrap_or(Tid::ZERO);
                    if rng.next(5) == 0 && serial != Tid::ZERO {
                        t.delete(Oid(oid), serial).unwrap();
                        writes.push(serde_json::json!(["delete", oid, serial.0]));
                    } else {
                        // Sometimes the same object twice in one transaction.
                        for _ in 0..1 + usize::from(rng.next(6) == 0) {
                            let data =
                                format!("\u{80}\u{3}data {oid} {n} {}", rng.next(3)).into_bytes();
                            t.store(Oid(oid), serial, &data).unwrap();
                            writes.push(serde_json::json!(["store", oid, serial.0, hx(&data)]));
                        }
                    }
                }
            }
            let aborted = undo_failed;
            if aborted {
                t.abort().unwrap();
            } else {
                t.vote().unwrap();
                t.finish().unwrap();
                committed.push(tid);
            }
            log.push(serde_json::json!({
                "tid": tid.0, "user": user, "desc": desc, "writes": writes,
                "aborted": aborted, "undo_failed": undo_failed,
            }));
        }
        fs.close().unwrap();
        drop(fs);
        let log_path = dir.path().join("log.json");
        fs::write(&log_path, serde_json::to_vec(&log).unwrap()).unwrap();
        support::run_python(
            REPLAY,
            &[theirs.to_str().unwrap(), log_path.to_str().unwrap()],
        );
        assert_eq!(
            fs::read(&ours).unwrap(),
            fs::read(&theirs).unwrap(),
            "seed {seed}: Data.fs differs"
        );
        assert_eq!(
            fs::read(ours.with_extension("fs.index")).unwrap(),
            fs::read(theirs.with_extension("fs.index")).unwrap(),
            "seed {seed}: Data.fs.index differs"
        );
    }
    assert!(
        undo_failures > 0 && undos > undo_failures,
        "{undos} undos, {undo_failures} failed"
    );
}

/// `copyTransactionsFrom`: restore with `prev_txn` hints, which become backpointers.
const PY_COPY: &str = r#"
import sys
from ZODB.FileStorage import FileStorage
src = FileStorage(sys.argv[1], read_only=True)
dst = FileStorage(sys.argv[2])
dst.copyTransactionsFrom(src)
dst.close(); src.close()
"#;

#[test]
fn copying_transactions_gives_byte_identical_files() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    support::run_python(PY_WRITE, &[dir.path().to_str().unwrap()]);
    let src_path = dir.path().join("Data.fs");
    let src = FileStorage::open_read_only(&src_path).unwrap();
    let ours = dir.path().join("ours.fs");
    let dst = FileStorage::open(&ours).unwrap();
    for t in src.iter_transactions(None, None).unwrap() {
        let t = t.unwrap();
        let meta = TxnMeta::new(t.user.clone(), t.description.clone(), t.extension.clone());
        let mut txn = dst
            .lock_commit()
            .unwrap()
            .begin_at(meta, t.tid, t.status)
            .unwrap();
        for r in src.transaction_records(&t).unwrap() {
            let r = r.unwrap();
            txn.restore(r.oid, r.tid, r.data.as_deref(), r.data_txn)
                .unwrap();
        }
        txn.finish().unwrap();
    }
    dst.close().unwrap();
    drop(dst);
    let theirs = dir.path().join("theirs.fs");
    support::run_python(
        PY_COPY,
        &[src_path.to_str().unwrap(), theirs.to_str().unwrap()],
    );
    assert_eq!(fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());
    assert_eq!(
        fs::read(ours.with_extension("fs.index")).unwrap(),
        fs::read(theirs.with_extension("fs.index")).unwrap()
    );
}

#[test]
fn python_and_zodbctl_exclude_each_other() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path).unwrap();
    let mut t = fs.begin(TxnMeta::default()).unwrap();
    t.store(Oid(0), Tid::ZERO, b"\x80\x03K\x01.").unwrap();
    t.finish().unwrap();
    let out = support::run_python(
        r#"
import sys
from zc.lockfile import LockError
from ZODB.FileStorage import FileStorage
try:
    FileStorage(sys.argv[1])
    print('opened')
except LockError:
    print('locked')
ro = FileStorage(sys.argv[1], read_only=True)
print(len(ro)); ro.close()
print(open(sys.argv[1] + '.lock').read() == ' %d\n' % int(sys.argv[2]))
"#,
        &[path.to_str().unwrap(), &std::process::id().to_string()],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "locked\n1\nTrue\n");
    drop(fs);
    // Python holds the lock: zodbctl is refused; read-only works.
    let mut py = support::python_command(
        "import sys, time\nfrom ZODB.FileStorage import FileStorage\nfs = FileStorage(sys.argv[1])\nprint('ready', flush=True)\ntime.sleep(30)",
        &[path.to_str().unwrap()],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(py.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let locked = FileStorage::open(&path);
    let ro = FileStorage::open_read_only(&path).map(|f| f.len());
    py.kill().unwrap();
    py.wait().unwrap();
    assert!(matches!(
        locked,
        Err(zodbctl::storage::StorageError::Locked { .. })
    ));
    assert_eq!(ro.unwrap(), 1);
}
