//! `zodbctl verify` against Python's fstest (ZODB 6.4) on healthy files and on every
//! single-field damage of spec §14.6: same verdict, same message, same exit status.
//!
//! Python writes a small file with every kind of record (modifications, an undo with a
//! backpointer, an undone creation, an empty transaction, extension and non-ASCII metadata);
//! the test derives a few hundred damaged copies from it, asks fstest about all of them in
//! one Python process (`fstest.check`, the function its `main` runs), runs the real fstest
//! command line on a representative subset, and compares with `zodbctl verify` on each.

mod support;

use support::damage::{
    damaged_variants, layout, make_base, put_u64, python_json_by_path, write_variants,
    zodbctl_on_each,
};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

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

fn python_verdicts(paths: &[PathBuf]) -> BTreeMap<String, serde_json::Value> {
    python_json_by_path(FSTEST_MANY, &[], paths)
}

#[test]
fn verify_agrees_with_fstest_on_every_single_field_damage() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let paths = write_variants(dir.path(), &damaged_variants(&base));
    let verdicts = python_verdicts(&paths);

    // zodbctl on every variant, a few at a time.
    let results = zodbctl_on_each(&["verify"], &paths);

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
            let py_args = flags.iter().copied().chain([p]);
            let py = support::python_module("ZODB.scripts.fstest", py_args);
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
    support::make_datafs(&path, "0.3", None);
    let py = support::python_module(
        "ZODB.scripts.fstest",
        [Path::new("-v"), Path::new("-v"), &path],
    );
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

#[test]
fn deep_verify_accepts_python_files_and_catches_pointer_damage_fstest_misses() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let healthy = dir.path().join("healthy.fs");
    fs::write(&healthy, &base).unwrap();
    let realistic = dir.path().join("realistic.fs");
    support::make_datafs(&realistic, "0.3", None);
    for p in [&healthy, &realistic] {
        let out = support::zodbctl()
            .args(["verify", "--deep"])
            .arg(p)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Damage fstest does not look at: prev and back pointers, record tids.
    let variants: Vec<(String, Vec<u8>)> = damaged_variants(&base)
        .into_iter()
        .filter(|(name, _)| {
            ["-prev-", "-back-", "-tid-"]
                .iter()
                .any(|k| name.contains(k))
        })
        .filter(|(name, _)| name.contains("-r"))
        .collect();
    let paths = write_variants(dir.path(), &variants);
    let verdicts = python_verdicts(&paths);
    let mut caught = 0;
    for p in &paths {
        if !verdicts[p.to_str().unwrap()]["ok"].as_bool().unwrap() {
            continue; // fstest itself objects (e.g. a huge backpointer read as a length)
        }
        let plain = support::zodbctl().arg("verify").arg(p).output().unwrap();
        assert_eq!(plain.status.code(), Some(0), "{}", p.display());
        let deep = support::zodbctl()
            .args(["verify", "--deep"])
            .arg(p)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&deep.stderr);
        assert_eq!(deep.status.code(), Some(1), "{}: {stderr}", p.display());
        assert!(stderr.contains("found by the deep checks"), "{stderr}");
        caught += 1;
    }
    assert!(caught > 30, "only {caught} variants checked");
}

/// Python deletes an object that is still referenced (`deleteObject`, no unlinking): fsrefs
/// reports the dangling reference, and so does `verify --deep`; fstest and plain `verify`
/// see nothing wrong.
#[test]
fn deep_verify_reports_what_fsrefs_reports() {
    const DANGLING: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
st = ZODB.FileStorage.FileStorage(sys.argv[1])
db = ZODB.DB(st)
root = db.open().root()
root['a'] = a = PersistentMapping()
transaction.commit()
t = TransactionMetaData()
st.tpc_begin(t)
st.deleteObject(a._p_oid, a._p_serial, t)
st.tpc_vote(t)
st.tpc_finish(t)
db.close()
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    support::run_python(DANGLING, &[path.to_str().unwrap()]);
    let fsrefs = support::python_module("ZODB.scripts.fsrefs", [&path]);
    let fsrefs_out = String::from_utf8_lossy(&fsrefs.stdout);
    assert!(
        fsrefs_out.contains("object creation was undone"),
        "{fsrefs_out}"
    );
    let plain = support::zodbctl()
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(0));
    let deep = support::zodbctl()
        .args(["verify", "--deep"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&deep.stderr);
    assert_eq!(deep.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "object 0x0000000000000000 (persistent.mapping.PersistentMapping) refers to an object whose creation was undone or that was deleted: 0x0000000000000001"
        ),
        "{stderr}"
    );
}

/// Without PATH, `verify` and `dump` work on the server instance's FileStorage; a last
/// transaction caught between vote and finish (status `c`) is checked again instead of
/// being reported at once, while real damage is still reported.
#[test]
fn verify_and_dump_find_the_instance_file_and_wait_out_a_commit_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("zeo");
    let created = support::zodbctl()
        .args(["create", "server"])
        .arg(&inst)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let data = inst.join("var/Data.fs");
    let base = make_base(dir.path());
    fs::write(&data, &base).unwrap();

    let verify = || support::run_in(&inst, &["verify"]);
    let out = verify();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let by_instance = support::run_in(&inst, &["dump"]);
    let by_path = support::zodbctl().arg("dump").arg(&data).output().unwrap();
    assert!(by_instance.status.success());
    assert_eq!(by_instance.stdout, by_path.stdout);

    // A commit in progress that finishes while verify looks.
    let last = layout(&base).last().unwrap().pos;
    let mut voted = base.clone();
    voted[last + 16] = b'c';
    fs::write(&data, &voted).unwrap();
    let child = support::zodbctl_in(&inst)
        .arg("verify")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    fs::write(&data, &base).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // One that never finishes is reported, with fstest's message.
    fs::write(&data, &voted).unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{} checkpoint flag was not cleared at {last}\n",
            data.display()
        )
    );
    // An explicit PATH is taken as is, at once (fstest's behaviour).
    let out = support::zodbctl()
        .arg("verify")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let unknown = support::run_in(&inst, &["verify", "--storage", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
}
