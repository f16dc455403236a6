//! Pack equivalence with Python: a history made by Python ZODB (BTrees, an unlinked subtree,
//! undo, an IExternalGC deletion, blobs, commits after the pack time including an undo of a
//! pre-pack transaction) packed by `zodbctl pack` and by Python's `FileStorage.pack` to the
//! same time: the same transactions and records, byte for byte; fstest and fsrefs pass on
//! zodbctl's output; Python opens it with zodbctl's index without a rescan; the blob
//! directories (and their `.old`) match. Script: `tests/python/pack_equiv.py`.

mod support;

use std::path::Path;

const PY: &str = include_str!("python/pack_equiv.py");

fn py(args: &[&str]) -> String {
    let out = support::run_python(PY, args);
    assert!(
        out.status.success(),
        "pack_equiv.py {args:?} failed:\n{}",
        support::output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn zodbctl_pack_equals_python_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = d.join("made.fs");
    let made_blobs = d.join("made-blobs");
    let t = py(&[
        "make",
        support::path_str(&made),
        support::path_str(&made_blobs),
    ]);
    let t = t.lines().last().unwrap().to_string();
    for side in ["ours", "python"] {
        std::fs::copy(&made, d.join(format!("{side}.fs"))).unwrap();
        let idx = d.join("made.fs.index");
        if idx.exists() {
            std::fs::copy(&idx, d.join(format!("{side}.fs.index"))).unwrap();
        }
        copy_tree(&made_blobs, &d.join(format!("{side}-blobs")));
    }
    let ours = d.join("ours.fs");
    let out = support::zodbctl_cmd()
        .args(["pack", support::path_str(&ours), "--blob-dir"])
        .arg(d.join("ours-blobs"))
        .args(["--at", &t])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("packed to"), "{summary}");
    let record = std::fs::read_to_string(d.join("ours.fs.pack.json")).unwrap();
    assert!(record.contains("\"objects_removed\""), "{record}");
    py(&[
        "pack",
        support::path_str(&d.join("python.fs")),
        support::path_str(&d.join("python-blobs")),
        &t,
    ]);
    let verdict = py(&[
        "compare",
        support::path_str(&ours),
        support::path_str(&d.join("ours-blobs")),
        support::path_str(&d.join("python.fs")),
        support::path_str(&d.join("python-blobs")),
    ]);
    eprintln!("{verdict}");
    for module in ["ZODB.scripts.fstest", "ZODB.scripts.fsrefs"] {
        let out = support::python_module(module, [&ours]);
        let text = support::output_text(&out);
        assert!(out.status.success(), "{module}: {text}");
        assert!(
            !text.contains("missing") && !text.contains("Error"),
            "{module}: {text}"
        );
    }
    // Packing again to the same time frees nothing and changes nothing.
    let before = std::fs::read(&ours).unwrap();
    let out = support::zodbctl_cmd()
        .args(["pack", support::path_str(&ours), "--json", "--blob-dir"])
        .arg(d.join("ours-blobs"))
        .args(["--at", &t])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["outcome"], "nothing-freed", "{v}");
    assert_eq!(std::fs::read(&ours).unwrap(), before);
}

#[test]
fn offline_pack_refuses_a_locked_file_and_packs_a_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    support::make_datafs(&fs, "3", None);
    let lock = zodbctl::storage::lock::LockFile::acquire(&dir.path().join("Data.fs.lock")).unwrap();
    let out = support::zodbctl_cmd()
        .args(["pack", support::path_str(&fs)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("server"),
        "{}",
        support::output_text(&out)
    );
    drop(lock);
    let before = std::fs::metadata(&fs).unwrap().len();
    let out = support::zodbctl_cmd()
        .args(["pack", support::path_str(&fs), "--no-keep-old", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["outcome"], "packed", "{v}");
    assert_eq!(v[0]["bytes_before"], before);
    assert!(v[0]["bytes_after"].as_u64().unwrap() < before);
    assert!(!dir.path().join("Data.fs.old").exists());
    let out = support::python_module("ZODB.scripts.fstest", [&fs]);
    assert!(out.status.success(), "{}", support::output_text(&out));
    let out = support::python_module("ZODB.scripts.fsrefs", [&fs]);
    assert!(
        out.status.success() && !support::output_text(&out).contains("missing"),
        "{}",
        support::output_text(&out)
    );
}

#[test]
fn instance_pack_is_offline_when_stopped_and_through_the_server_when_running() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("zeo");
    let port = support::free_port();
    let out = support::zodbctl_cmd()
        .args(["create", "server"])
        .arg(&inst)
        .args(["--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let crontab = std::fs::read_to_string(inst.join("etc/crontab")).unwrap();
    assert!(crontab.contains("pack -d 7"), "{crontab}");
    // No Data.fs yet: nothing to pack, not an error.
    let out = support::zodbctl_cmd()
        .arg("-i")
        .arg(&inst)
        .arg("pack")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let datafs = inst.join("var/Data.fs");
    support::make_datafs(&datafs, "2", None);
    let pack = |expect: &str| {
        let out = support::zodbctl_cmd()
            .arg("-i")
            .arg(&inst)
            .args(["pack", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", support::output_text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["mode"], expect, "{v}");
    };
    pack("offline");
    assert!(inst.join("var/Data.fs.pack.json").exists());
    let mut server = support::Serve::in_dir(&inst).instance(&inst).start();
    pack("server");
    let log = server.stop();
    assert!(
        log.contains("pack(time=") || server.logs().contains("pack(time="),
        "{log}"
    );
}
