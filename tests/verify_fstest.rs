//! `zodbctl verify` against Python's fstest (ZODB 6.4) on healthy files and on every
//! single-field damage of spec §14.6: same verdict, same message, same exit status.
//!
//! Python writes a small file with every kind of record (modifications, an undo with a
//! backpointer, an undone creation, an empty transaction, extension and non-ASCII metadata);
//! the test derives a few hundred damaged copies from it, asks fstest about all of them in
//! one Python process (`fstest.check`, the function its `main` runs), runs the real fstest
//! command line on a representative subset, and compares with `zodbctl verify` on each.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Builds the base file (§14.1-style history plus undo, deletion, empty transaction).
const MAKE_BASE: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
from persistent.mapping import PersistentMapping
from BTrees.OOBTree import OOBTree
from ZODB.Connection import TransactionMetaData
st = ZODB.FileStorage.FileStorage(sys.argv[1])
db = ZODB.DB(st)
r = db.open().root()
r['a'] = PersistentMapping()
t = transaction.get(); t.setUser('bob'); t.note('add a'); transaction.commit()
r['a']['x'] = 1; transaction.commit()
r['b'] = PersistentMapping(); r['t'] = OOBTree(); r['t']['k'] = 'v'
t = transaction.get(); t.setExtendedInfo('foo', 'bar'); t.setUser('jürgen'); t.note('café ☕')
transaction.commit()
db.undo(db.undoLog(0, 10)[1]['id']); transaction.get().note('undo x'); transaction.commit()
db.undo(db.undoLog(0, 10)[1]['id']); transaction.get().note('undo creation'); transaction.commit()
t = TransactionMetaData(); st.tpc_begin(t); st.tpc_vote(t); st.tpc_finish(t)
r['a']['y'] = 'é'; transaction.commit()
db.close()
"#;

/// fstest's verdict on each file named on the command line, as JSON lines:
/// `{"path": ..., "ok": bool, "message": str|null, "crash": str|null}`.
const FSTEST_MANY: &str = r#"
import json, sys
from ZODB.scripts import fstest
for path in sys.argv[1:]:
    rec = {"path": path, "ok": True, "message": None, "crash": None}
    try:
        fstest.check(path)
    except fstest.FormatError as e:
        rec.update(ok=False, message=str(e))
    except Exception as e:
        rec.update(ok=False, crash=repr(e))
    print(json.dumps(rec))
"#;

struct Txn {
    pos: usize,
    tlen: usize,
    hlen: usize,
    records: Vec<usize>,
}

/// The layout of a healthy file (only to find the fields to damage).
fn layout(f: &[u8]) -> Vec<Txn> {
    let u64_at = |p: usize| u64::from_be_bytes(f[p..p + 8].try_into().unwrap()) as usize;
    let u16_at = |p: usize| u16::from_be_bytes(f[p..p + 2].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < f.len() {
        let tlen = u64_at(pos + 8);
        let hlen = 23 + u16_at(pos + 17) + u16_at(pos + 19) + u16_at(pos + 21);
        let mut records = Vec::new();
        let mut p = pos + hlen;
        while p < pos + tlen {
            records.push(p);
            let plen = u64_at(p + 34);
            p += 42 + if plen == 0 { 8 } else { plen };
        }
        out.push(Txn {
            pos,
            tlen,
            hlen,
            records,
        });
        pos += tlen + 8;
    }
    out
}

fn put_u64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put_u16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get_u64(f: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(f[at..at + 8].try_into().unwrap())
}

/// Every damaged variant: (name, bytes).
fn damaged_variants(base: &[u8]) -> Vec<(String, Vec<u8>)> {
    let txns = layout(base);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: String, f: Vec<u8>| v.push((name, f));

    add("empty".into(), Vec::new());
    add(
        "magic".into(),
        b"FS21".iter().chain(&base[4..]).copied().collect(),
    );
    let mut short = base.to_vec();
    short.truncate(3);
    add("short-magic".into(), short);

    // Truncations: near the start, around every record boundary, and all through the last
    // transaction.
    let last = txns.last().unwrap();
    let mut cuts: Vec<usize> = (0..40).collect();
    for t in &txns {
        cuts.extend([t.pos - 1, t.pos + 1, t.pos + 22, t.pos + t.tlen + 3]);
        for &r in &t.records {
            cuts.extend([r + 1, r + 41, r + 43]);
        }
    }
    cuts.extend(last.pos..base.len());
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c < base.len()) {
        add(format!("cut-{cut}"), base[..cut].to_vec());
    }

    // Trailing garbage and trailing transactions.
    for n in [1usize, 5, 22] {
        let mut f = base.to_vec();
        f.extend(std::iter::repeat_n(0u8, n));
        add(format!("trailing-zeros-{n}"), f);
    }
    let last_bytes = &base[last.pos..];
    let last_tid = get_u64(base, last.pos);
    for (name, tid, status, keep) in [
        ("trailing-header", last_tid + 1, b' ', 23usize),
        ("trailing-checkpoint", last_tid + 1, b'c', last_bytes.len()),
        ("trailing-same-tid", last_tid, b' ', last_bytes.len()),
    ] {
        let mut t = last_bytes.to_vec();
        put_u64(&mut t, 0, tid);
        t[16] = status;
        // The copy's data records must point at the copy.
        let newpos = base.len() as u64;
        for &r in &last.records {
            put_u64(&mut t, r - last.pos + 24, newpos);
        }
        let mut f = base.to_vec();
        f.extend_from_slice(&t[..keep]);
        add(name.into(), f);
    }

    for (i, t) in txns.iter().enumerate() {
        let tp = t.pos;
        let tid = get_u64(base, tp);
        let prev_tid = if i > 0 {
            get_u64(base, txns[i - 1].pos)
        } else {
            0
        };
        let mut field = |name: &str, at: usize, vals: Vec<u64>, width: usize| {
            for val in vals {
                let mut f = base.to_vec();
                if width == 8 {
                    put_u64(&mut f, at, val);
                } else {
                    put_u16(&mut f, at, val as u16);
                }
                add(format!("t{i}-{name}-{val:x}"), f);
            }
        };
        field(
            "tid",
            tp,
            vec![prev_tid, prev_tid.saturating_sub(1), tid + 1, 0, u64::MAX],
            8,
        );
        let tl = t.tlen as u64;
        let hl = t.hlen as u64;
        field(
            "tlen",
            tp + 8,
            vec![
                tl + 1,
                tl - 1,
                tl + 8,
                tl + 50,
                hl - 1,
                0,
                u64::MAX,
                u64::MAX - 100,
                tl * 2,
            ],
            8,
        );
        for (k, at) in [("ulen", 17), ("dlen", 19), ("elen", 21)] {
            let cur = u16::from_be_bytes(base[tp + at..tp + at + 2].try_into().unwrap()) as u64;
            let mut vals = vec![cur + 1, 0xffff];
            if cur > 0 {
                vals.push(cur - 1);
            }
            field(k, tp + at, vals, 2);
        }
        field("rtlen", tp + t.tlen, vec![tl + 1, tl - 1, 0], 8);
        let statuses: Vec<u8> = if i + 1 == txns.len() {
            (0..=255).collect()
        } else {
            b" cpux\x00".to_vec()
        };
        for s in statuses {
            let mut f = base.to_vec();
            f[tp + 16] = s;
            add(format!("t{i}-status-{s:02x}"), f);
        }
        for (j, &r) in t.records.iter().enumerate() {
            let plen = get_u64(base, r + 34);
            let mut rec = |name: &str, at: usize, vals: Vec<u64>, width: usize| {
                for val in vals {
                    let mut f = base.to_vec();
                    if width == 8 {
                        put_u64(&mut f, at, val);
                    } else {
                        put_u16(&mut f, at, val as u16);
                    }
                    add(format!("t{i}-r{j}-{name}-{val:x}"), f);
                }
            };
            rec("oid", r, vec![0x77, u64::MAX], 8);
            rec("tid", r + 8, vec![0, tid + 1], 8);
            rec("prev", r + 16, vec![1, r as u64 + 5, u64::MAX], 8);
            rec(
                "tloc",
                r + 24,
                vec![tp as u64 + 1, tp as u64 - 1, 0, u64::MAX],
                8,
            );
            rec("vlen", r + 32, vec![1, 7, 0xffff], 2);
            let mut plens = vec![plen + 1, plen + 8, 0, u64::MAX, u64::MAX - 41];
            if plen > 1 {
                plens.push(plen - 1);
            }
            if plen == 0 {
                rec("back", r + 42, vec![1, r as u64 + 100, u64::MAX], 8);
                plens.push(8);
            }
            rec("plen", r + 34, plens, 8);
        }
    }
    v
}

fn python_verdicts(paths: &[PathBuf]) -> BTreeMap<String, serde_json::Value> {
    let mut verdicts = BTreeMap::new();
    // Keep command lines short.
    for chunk in paths.chunks(400) {
        let args: Vec<&str> = chunk.iter().map(|p| p.to_str().unwrap()).collect();
        let out = support::run_python(FSTEST_MANY, &args);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            verdicts.insert(v["path"].as_str().unwrap().to_owned(), v);
        }
    }
    verdicts
}

fn make_base(dir: &Path) -> Vec<u8> {
    let path = dir.join("base.fs");
    support::run_python(MAKE_BASE, &[path.to_str().unwrap()]);
    fs::read(&path).unwrap()
}

#[test]
fn verify_agrees_with_fstest_on_every_single_field_damage() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let variants = damaged_variants(&base);
    let mut paths = Vec::new();
    for (name, bytes) in &variants {
        let p = dir.path().join(format!("{name}.fs"));
        fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    let verdicts = python_verdicts(&paths);

    // zodbctl on every variant, a few at a time.
    let results: Vec<(PathBuf, std::process::Output)> = std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(paths.len().div_ceil(3))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| {
                            (
                                p.clone(),
                                support::zodbctl().arg("verify").arg(p).output().unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    let mut failures = Vec::new();
    let (mut bad, mut crashes) = (0, 0);
    for (p, out) in &results {
        let key = p.to_str().unwrap();
        let py = &verdicts[key];
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(crash) = py["crash"].as_str() {
            // fstest dies with a traceback (exit status 1) when a damaged plen is 2^63 or more
            // (`file.seek` refuses it); zodbctl reports the overrun instead.
            crashes += 1;
            let expected = key.contains("-plen-ffff") && crash.contains("offset-sized integer");
            if !expected || code != Some(1) || !stderr.contains("extend beyond") {
                failures.push(format!(
                    "{key}: fstest crashed ({crash}); zodbctl: {code:?} {stderr}"
                ));
            }
            continue;
        }
        let want = if py["ok"].as_bool().unwrap() {
            (Some(0), String::new())
        } else {
            bad += 1;
            (Some(1), format!("{}\n", py["message"].as_str().unwrap()))
        };
        if (code, stderr.clone()) != want || !out.stdout.is_empty() {
            failures.push(format!(
                "{key}: fstest {want:?}, zodbctl {code:?} {stderr:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The matrix must really exercise the checks.
    assert!(
        bad > 500,
        "only {bad} of {} damaged variants were rejected",
        paths.len()
    );
    assert!(crashes > 0);
}

#[test]
fn verify_output_and_status_match_the_fstest_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let txns = layout(&base);
    let healthy = dir.path().join("Data.fs");
    fs::write(&healthy, &base).unwrap();
    let mut bad_status = base.clone();
    bad_status[txns[1].pos + 16] = b'x';
    let bad_status_path = dir.path().join("bad status.fs");
    fs::write(&bad_status_path, &bad_status).unwrap();
    let mut bad_tloc = base.clone();
    put_u64(&mut bad_tloc, txns[3].records[2] + 24, 7);
    let bad_tloc_path = dir.path().join("bad-tloc.fs");
    fs::write(&bad_tloc_path, &bad_tloc).unwrap();
    let empty = dir.path().join("empty.fs");
    fs::write(&empty, b"").unwrap();

    for path in [&healthy, &bad_status_path, &bad_tloc_path, &empty] {
        for flags in [&[][..], &["-v"][..], &["-v", "-v"][..]] {
            let p = path.to_str().unwrap();
            let mut py_args = vec!["-m", "ZODB.scripts.fstest"];
            py_args.extend_from_slice(flags);
            py_args.push(p);
            let py = std::process::Command::new(support::python())
                .args(&py_args)
                .output()
                .unwrap();
            let ours = support::zodbctl()
                .arg("verify")
                .args(flags)
                .arg(p)
                .output()
                .unwrap();
            assert_eq!(ours.status.code(), py.status.code(), "{p} {flags:?}");
            assert_eq!(
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&py.stdout),
                "stdout of {p} {flags:?}"
            );
            assert_eq!(
                String::from_utf8_lossy(&ours.stderr),
                String::from_utf8_lossy(&py.stderr),
                "stderr of {p} {flags:?}"
            );
        }
    }
}

#[test]
fn verify_accepts_a_realistic_python_file_like_fstest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let out = std::process::Command::new(support::python())
        .arg(support::make_datafs_script())
        .arg(&path)
        .args(["--size-mb", "0.3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = std::process::Command::new(support::python())
        .args(["-m", "ZODB.scripts.fstest", "-v", "-v"])
        .arg(&path)
        .output()
        .unwrap();
    let ours = support::zodbctl()
        .args(["verify", "-vv"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(py.status.code(), Some(0));
    assert_eq!(ours.status.code(), Some(0));
    assert_eq!(ours.stdout, py.stdout);
}

#[test]
fn verify_of_a_missing_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::zodbctl()
        .arg("verify")
        .arg(dir.path().join("nope.fs"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.fs"));
}
