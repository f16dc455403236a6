//! FileStorage interoperability with real Python ZODB 6.4, in both directions.
//!
//! `tests/python/storage_build.py` writes a Data.fs with Python (many objects, revisions, a
//! BTree with several buckets, blobs, an undo, an undone creation, a `deleteObject`, an empty
//! transaction, non-ASCII metadata and extensions) and prints the operation behind each
//! transaction. `tests/python/storage_describe.py` prints everything Python's FileStorage
//! says about a file: every transaction and record of the iterator (and iterator ranges),
//! and per object load, record_iternext, history, loadSerial and loadBefore of every
//! revision, the blobs, and the undo log. [`describe`] computes the same from zodbctl's
//! engine, so the two views are compared as JSON values.
//!
//! 1. Python writes, zodbctl reads: equal views; Python's `Data.fs.index` is used without a
//!    rescan.
//! 2. zodbctl writes (replaying the same operations through the engine API): the file is
//!    Python's byte for byte apart from the tids; Python reads it:
//!    equal views (tids mapped to transaction numbers), the same application objects through
//!    `ZODB.DB`, fstest and fsrefs clean, with zodbctl's `Data.fs.index` (which Python uses
//!    without a rescan) and without it; then Python appends and zodbctl reads that too.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use zodbctl::storage::{FileStorage, Oid, OpenOptions, StorageError, Tid, TxnMeta};

const BUILD: &str = include_str!("python/storage_build.py");
const DESCRIBE: &str = include_str!("python/storage_describe.py");
/// `ZODB.utils.maxtid`.
const MAXTID: Tid = Tid(0x7fff_ffff_ffff_ffff);

/// Python appends one transaction to an existing storage (a document and a blob change).
const APPEND: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1], blob_dir=sys.argv[2]))
root = db.open().root()
root['docs']['d002']['appended'] = 'ajouté ✓'
with root['b2'].open('w') as f:
    f.write(b'blob written by Python after zodbctl')
t = transaction.get(); t.setUser('python'); t.note('appended by Python'); t.setExtendedInfo('k', 'v')
transaction.commit()
db.close()
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn oid_of(s: &str) -> Oid {
    Oid(u64::from_str_radix(s, 16).unwrap())
}

fn tid_of(s: &str) -> Tid {
    Tid(u64::from_str_radix(s, 16).unwrap())
}

fn h64(v: u64) -> String {
    format!("{v:016x}")
}

/// A result in the describe format: a value, or "POSKeyError" for `PosKey`.
fn guard(r: Result<Value, StorageError>) -> Value {
    match r {
        Ok(v) => v,
        Err(StorageError::PosKey { .. }) => json!("POSKeyError"),
        Err(e) => panic!("unexpected storage error: {e}"),
    }
}

/// `ZODB.blob.is_blob_record`: the record's class is `ZODB.blob.Blob`.
fn is_blob_record(data: &[u8]) -> bool {
    zodbctl::pickle::record_class(data).is_ok_and(|(m, c)| m == "ZODB.blob" && c == "Blob")
}

/// What `storage_describe.py` prints, computed by zodbctl's engine.
fn describe(st: &FileStorage) -> Value {
    let mut txns = Vec::new();
    let mut tids = Vec::new();
    for t in st.iter_transactions(None, None).unwrap() {
        let t = t.unwrap();
        let recs: Vec<Value> = st
            .transaction_records(&t)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                json!([
                    h64(r.oid.0),
                    h64(r.tid.0),
                    r.data.as_deref().map(hex),
                    r.data_txn.map(|t| h64(t.0))
                ])
            })
            .collect();
        tids.push(t.tid);
        txns.push(json!({
            "tid": h64(t.tid.0),
            "status": (t.status.byte() as char).to_string(),
            "user": hex(&t.user),
            "description": hex(&t.description),
            "extension": hex(&t.extension),
            "records": recs,
        }));
    }
    let mut ranges = Vec::new();
    let range = |start: Option<Tid>, stop: Option<Tid>| -> Value {
        st.iter_transactions(start, stop)
            .unwrap()
            .map(|t| json!(h64(t.unwrap().tid.0)))
            .collect()
    };
    for k in (0..tids.len()).step_by(4) {
        let after = Tid(tids[k].0 + 1);
        let stop = tids[(k + 3).min(tids.len() - 1)];
        ranges.push(range(Some(tids[k]), None));
        ranges.push(range(Some(after), Some(stop)));
        ranges.push(range(None, Some(Tid(tids[k].0 - 1))));
    }

    let mut objects = Vec::new();
    let mut blobs = Vec::new();
    for oid in st.oids() {
        let load = guard(st.load(oid).map(|(d, t)| json!([hex(&d), h64(t.0)])));
        let iternext = guard(st.record_iternext(Some(oid)).map(|r| {
            let (o, t, d, next) = r.expect("an oid from the index");
            json!([h64(o.0), h64(t.0), hex(&d), next.map(|n| h64(n.0))])
        }));
        let hist = st.history(oid, 1 << 30).unwrap();
        let mut serial = Vec::new();
        let mut before = Vec::new();
        for e in &hist {
            let data = st.load_serial(oid, e.tid);
            if let Ok(d) = &data
                && is_blob_record(d)
                && st.blob_dir().is_some()
            {
                let path = st.load_blob(oid, e.tid).unwrap();
                blobs.push(json!([
                    h64(oid.0),
                    h64(e.tid.0),
                    hex(&fs::read(path).unwrap())
                ]));
            }
            serial.push(guard(data.map(|d| json!(hex(&d)))));
            for q in [e.tid, Tid(e.tid.0 + 1)] {
                before.push(load_before(st, oid, q));
            }
        }
        before.push(load_before(st, oid, MAXTID));
        objects.push(json!({
            "oid": h64(oid.0),
            "load": load,
            "iternext": iternext,
            "history": hist.iter().map(|e| json!([h64(e.tid.0), e.size, hex(&e.user), hex(&e.description)])).collect::<Vec<_>>(),
            "load_serial": serial,
            "load_before": before,
        }));
    }
    let undo_log: Vec<Value> = st
        .undo_log(0, 1 << 30, |_| true)
        .unwrap()
        .iter()
        .map(|u| json!([u.id(), hex(&u.user), hex(&u.description), u.size]))
        .collect();
    json!({
        "last_transaction": h64(st.last_transaction().0),
        "len": st.len(),
        "size": st.size(),
        "transactions": txns,
        "ranges": ranges,
        "objects": objects,
        "blobs": blobs,
        "undo_log": undo_log,
    })
}

fn load_before(st: &FileStorage, oid: Oid, tid: Tid) -> Value {
    guard(st.load_before(oid, tid).map(|r| match r {
        None => Value::Null,
        Some(r) => json!([hex(&r.data), h64(r.start.0), r.end.map(|e| h64(e.0))]),
    }))
}

/// Python's view of a file (and whether it used the index file); `app` adds what
/// `ZODB.DB` shows.
fn python_describe(path: &Path, blobs: &Path, app: bool) -> (Value, bool) {
    let mut args = vec![path.to_str().unwrap(), blobs.to_str().unwrap()];
    if app {
        args.push("app");
    }
    let out = support::run_python(DESCRIBE, &args);
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = v["used_index"].as_i64() == Some(1);
    v.as_object_mut().unwrap().remove("used_index");
    (v, used)
}

/// Assert two views are equal, naming the first differing part.
fn assert_same(ours: &Value, theirs: &Value, what: &str) {
    if ours == theirs {
        return;
    }
    for key in theirs.as_object().unwrap().keys() {
        let (a, b) = (&ours[key], &theirs[key]);
        if a != b {
            if let (Some(a), Some(b)) = (a.as_array(), b.as_array()) {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert_eq!(x, y, "{what}: {key}[{i}] differs");
                }
                assert_eq!(a.len(), b.len(), "{what}: {key} lengths differ");
            }
            assert_eq!(a, b, "{what}: {key} differs");
        }
    }
    assert_eq!(ours, theirs, "{what}");
}

/// Python writes the reference file; returns the operations.
fn python_build(path: &Path, blobs: &Path) -> Vec<Value> {
    let out = support::run_python(BUILD, &[path.to_str().unwrap(), blobs.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn python_writes_zodbctl_reads_every_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    python_build(&path, &blobs);
    let (theirs, _) = python_describe(&path, &blobs, false);
    assert_covers_every_kind_of_record(&theirs);

    let st = OpenOptions::new()
        .read_only(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    assert!(
        st.used_index_file(),
        "Python's Data.fs.index was not used (rescan)"
    );
    let deep = support::zodbctl()
        .args(["verify", "--deep"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(deep.status.success() && deep.stderr.is_empty(), "{deep:?}");
    assert_same(&describe(&st), &theirs, "zodbctl reading Python's file");
    drop(st);

    // The same through a full scan, and through a read-write open.
    let st = OpenOptions::new()
        .read_only(true)
        .ignore_index(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    assert!(!st.used_index_file());
    assert_same(&describe(&st), &theirs, "zodbctl scanning Python's file");
    drop(st);
    let st = OpenOptions::new().blob_dir(&blobs).open(&path).unwrap();
    assert!(st.used_index_file());
    assert_same(
        &describe(&st),
        &theirs,
        "zodbctl opening Python's file read-write",
    );
    st.close().unwrap();
}

/// The reference file really has what the comparison is meant to cover.
fn assert_covers_every_kind_of_record(view: &Value) {
    let txns = view["transactions"].as_array().unwrap();
    let records: Vec<&Value> = txns
        .iter()
        .flat_map(|t| t["records"].as_array().unwrap())
        .collect();
    assert!(txns.len() >= 19, "{} transactions", txns.len());
    assert!(view["objects"].as_array().unwrap().len() > 150);
    assert!(
        records.iter().any(|r| !r[3].is_null() && !r[2].is_null()),
        "no undo backpointer"
    );
    assert!(records.iter().any(|r| r[2].is_null()), "no deletion record");
    assert!(
        txns.iter()
            .any(|t| t["records"].as_array().unwrap().is_empty()),
        "no empty transaction"
    );
    assert!(txns.iter().any(|t| t["extension"] != ""), "no extension");
    assert!(
        txns.iter().any(|t| unhex(t["user"].as_str().unwrap())
            .iter()
            .any(|b| *b >= 0x80)),
        "no non-ASCII user"
    );
    assert!(
        view["blobs"].as_array().unwrap().len() >= 3,
        "too few blob revisions"
    );
    assert!(
        records
            .iter()
            .filter_map(|r| r[2].as_str())
            .any(|d| zodbctl::pickle::record_class(&unhex(d))
                .is_ok_and(|(m, c)| m == "BTrees.OOBTree" && c == "OOBucket")),
        "no BTree bucket"
    );
    let objects = view["objects"].as_array().unwrap();
    assert!(
        objects.iter().any(|o| o["load"] == "POSKeyError"),
        "no deleted object"
    );
    assert!(view["undo_log"].as_array().unwrap().len() >= 15);
}

/// Replace every tid (hex, or base64 undo id) in `v` by its transaction number, so that
/// views of two files written at different times compare.
fn normalize(v: &Value, tids: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => json!(tids.get(s).cloned().unwrap_or_else(|| s.clone())),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, tids)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), normalize(x, tids)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn tid_names(view: &Value) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (i, t) in view["transactions"].as_array().unwrap().iter().enumerate() {
        let tid = tid_of(t["tid"].as_str().unwrap());
        m.insert(h64(tid.0), format!("T{i}"));
        m.insert(tid.to_undo_id(), format!("T{i}"));
    }
    m
}

/// zodbctl commits the transactions of Python's reference file through the engine API:
/// stores (blobs included) for commits, `undo` for undos, `delete` for deleteObject.
fn replay(st: &FileStorage, ops: &[Value], reference: &Value) {
    let txns = reference["transactions"].as_array().unwrap();
    let blob_content: HashMap<(String, String), String> = reference["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                (
                    b[0].as_str().unwrap().to_owned(),
                    b[1].as_str().unwrap().to_owned(),
                ),
                b[2].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut serials: HashMap<Oid, Tid> = HashMap::new();
    let mut new_tids: Vec<Tid> = Vec::new();
    for (i, (op, t)) in ops.iter().zip(txns).enumerate() {
        let meta = TxnMeta::new(
            unhex(t["user"].as_str().unwrap()),
            unhex(t["description"].as_str().unwrap()),
            unhex(t["extension"].as_str().unwrap()),
        );
        let mut txn = st.begin(meta).unwrap();
        let mut touched = Vec::new();
        match (op.as_str(), op.as_array()) {
            (Some("commit"), _) => {
                for r in t["records"].as_array().unwrap() {
                    let oid = oid_of(r[0].as_str().unwrap());
                    let data = unhex(r[2].as_str().expect("a commit record has data"));
                    let serial = serials.get(&oid).copied().unwrap_or(Tid(0));
                    let key = (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    );
                    if let Some(content) = blob_content.get(&key) {
                        let upload = st
                            .blob_tmp_dir()
                            .unwrap()
                            .join(format!("upload-{i}-{}", oid.0));
                        fs::write(&upload, unhex(content)).unwrap();
                        txn.store_blob(oid, serial, &data, &upload).unwrap();
                    } else {
                        txn.store(oid, serial, &data).unwrap();
                    }
                    touched.push(oid);
                }
            }
            (Some("empty"), _) => {}
            (_, Some(a)) if a[0] == "undo" => {
                let k = a[1].as_u64().unwrap() as usize;
                touched = txn.undo(new_tids[k]).unwrap();
            }
            (_, Some(a)) if a[0] == "delete" => {
                let oid = oid_of(a[1].as_str().unwrap());
                txn.delete(oid, serials[&oid]).unwrap();
                touched.push(oid);
            }
            _ => panic!("unknown operation {op}"),
        }
        let tid = txn.tid();
        txn.vote().unwrap();
        txn.finish().unwrap();
        for oid in touched {
            serials.insert(oid, tid);
        }
        new_tids.push(tid);
    }
}

/// `ours` with every tid (transaction headers and data records) replaced by the tid of the
/// transaction at the same place in `theirs`.
fn with_tids_of(ours: &[u8], theirs: &[u8]) -> Vec<u8> {
    let u64_at = |b: &[u8], p: usize| u64::from_be_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    let mut out = ours.to_vec();
    let mut pos = 4;
    while pos + 23 <= out.len() && pos + 8 <= theirs.len() {
        let tid: [u8; 8] = theirs[pos..pos + 8].try_into().unwrap();
        let tlen = u64_at(&out, pos + 8);
        let hlen = 23
            + usize::from(u16::from_be_bytes([out[pos + 17], out[pos + 18]]))
            + usize::from(u16::from_be_bytes([out[pos + 19], out[pos + 20]]))
            + usize::from(u16::from_be_bytes([out[pos + 21], out[pos + 22]]));
        out[pos..pos + 8].copy_from_slice(&tid);
        let mut p = pos + hlen;
        while p < pos + tlen {
            out[p + 8..p + 16].copy_from_slice(&tid);
            let plen = u64_at(&out, p + 34);
            p += 42 + if plen == 0 { 8 } else { plen };
        }
        pos += tlen + 8;
    }
    out
}

#[test]
fn zodbctl_writes_python_reads_checks_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let ref_path = dir.path().join("ref.fs");
    let ref_blobs = dir.path().join("ref-blobs");
    let ops = python_build(&ref_path, &ref_blobs);
    let (reference, _) = python_describe(&ref_path, &ref_blobs, true);

    let path = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    let st = OpenOptions::new()
        .create(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    replay(&st, &ops, &reference);
    let ours = describe(&st);
    st.close().unwrap();
    drop(st);
    let index = dir.path().join("Data.fs.index");
    assert!(index.is_file(), "zodbctl wrote no Data.fs.index on close");

    let want = normalize(&reference, &tid_names(&reference));
    let mut want_storage = want.clone();
    want_storage.as_object_mut().unwrap().remove("app");
    assert_same(
        &normalize(&ours, &tid_names(&ours)),
        &want_storage,
        "zodbctl's own view of the file it wrote",
    );

    assert_eq!(
        with_tids_of(&fs::read(&path).unwrap(), &fs::read(&ref_path).unwrap()),
        fs::read(&ref_path).unwrap(),
        "zodbctl's file is not Python's, byte for byte, apart from the tids"
    );

    for with_index in [true, false] {
        if !with_index {
            fs::remove_file(&index).unwrap();
        }
        let (theirs, used_index) = python_describe(&path, &blobs, true);
        assert_eq!(
            used_index, with_index,
            "Python's use of zodbctl's Data.fs.index"
        );
        assert_same(
            &normalize(&theirs, &tid_names(&theirs)),
            &want,
            &format!("Python reading zodbctl's file (index: {with_index})"),
        );
        assert_same(
            &{
                let mut t = theirs.clone();
                t.as_object_mut().unwrap().remove("app");
                t
            },
            &ours,
            "Python and zodbctl see the same tids",
        );
        let fstest = support::python_module("ZODB.scripts.fstest", [&path]);
        assert!(
            fstest.status.success() && fstest.stdout.is_empty() && fstest.stderr.is_empty(),
            "fstest (index: {with_index}): {fstest:?}"
        );
        let fsrefs = support::python_module("ZODB.scripts.fsrefs", [&path]);
        assert!(
            fsrefs.status.success() && fsrefs.stdout.is_empty() && fsrefs.stderr.is_empty(),
            "fsrefs (index: {with_index}): {fsrefs:?}"
        );
        assert_eq!(
            index.exists(),
            with_index,
            "a read-only Python open wrote an index"
        );
    }

    // zodbctl's own tools agree with Python's on the file zodbctl wrote.
    let verify = support::zodbctl()
        .args(["verify", "--deep"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{verify:?}"
    );
    let dump = support::zodbctl().arg("dump").arg(&path).output().unwrap();
    let fsdump = support::python_module("ZODB.FileStorage.fsdump", [&path]);
    assert!(dump.status.success() && fsdump.status.success());
    assert!(
        dump.stdout == fsdump.stdout,
        "zodbctl dump and fsdump differ"
    );

    // Python appends (a read-write open: it rescans, then saves its own index on close).
    support::run_python(APPEND, &[path.to_str().unwrap(), blobs.to_str().unwrap()]);
    let (after, _) = python_describe(&path, &blobs, false);
    let st = OpenOptions::new()
        .read_only(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    assert!(
        st.used_index_file(),
        "Python's index after its append was not used"
    );
    let ours = describe(&st);
    assert_same(
        &ours,
        &after,
        "zodbctl reading Python's appended transaction",
    );
    let last = after["transactions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["description"], json!(hex(b"appended by Python")));
    assert_eq!(h64(st.last_transaction().0), last["tid"].as_str().unwrap());
}

#[test]
fn zodbctl_reads_a_realistic_python_file_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    support::make_datafs(&path, "0.5", Some(&blobs));
    let (theirs, _) = python_describe(&path, &blobs, false);
    assert!(!theirs["blobs"].as_array().unwrap().is_empty());
    let st = OpenOptions::new()
        .read_only(true)
        .blob_dir(&blobs)
        .open(&path)
        .unwrap();
    assert!(st.used_index_file());
    assert_same(
        &describe(&st),
        &theirs,
        "zodbctl reading make_datafs.py's file",
    );
}
