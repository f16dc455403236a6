//! `zodbctl backup | restore` against the real repozo (ZODB 6.4 in the test venv): each
//! restores and verifies the other's repositories; restored files are byte-identical
//! prefixes of the source, pass fstest and open in Python without a rescan; backups taken
//! while Python clients commit through `zodbctl serve` restore consistent; blobs; the
//! incremental restore; `--date` against repozo's `-D`; bad input; the `bin/repozo` wrapper.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{Serve, make_datafs, output_text, path_str, python_command, run_python, zodbctl};

/// Append N small transactions to a Data.fs with Python's FileStorage (closing it, which
/// saves Data.fs.index); with a blob directory, each transaction also writes a blob
/// revision whose content names the transaction.
const APPEND: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage, ZODB.blob
from persistent.mapping import PersistentMapping
path, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
blobs = sys.argv[4] if len(sys.argv) > 4 else None
db = ZODB.DB(ZODB.FileStorage.FileStorage(path, blob_dir=blobs))
conn = db.open()
root = conn.root()
for i in range(n):
    m = root.setdefault('appended', PersistentMapping())
    m['%s-%d' % (tag, i)] = ('x%d' % i) * 50
    if blobs:
        b = root.get('blob%d' % (i % 3))
        if b is None:
            b = root['blob%d' % (i % 3)] = ZODB.blob.Blob()
        with b.open('w') as f:
            f.write(('%s-%d ' % (tag, i)).encode() * 1000)
    transaction.commit()
db.close()
"#;

/// fstest on each file, then a read-only open that must use the index file as it is.
const CHECK_RESTORED: &str = r#"
import sys, ZODB.FileStorage
from ZODB.scripts import fstest
for path in sys.argv[1:]:
    fstest.check(path)
    fs = ZODB.FileStorage.FileStorage(path, read_only=True)
    restored = fs._restore_index()
    assert restored is not None, path + ": the index file is not usable (rescan)"
    assert restored[1] == fs._pos, (path, restored[1], fs._pos)
    fs.close()
print("ok")
"#;

const PACK: &str = r#"
import sys, time, ZODB.FileStorage
from ZODB.serialize import referencesf
fs = ZODB.FileStorage.FileStorage(sys.argv[1])
fs.pack(time.time(), referencesf)
fs.close()
"#;

fn repozo(args: &[&str]) -> Output {
    python_command(
        "import sys; from ZODB.scripts.repozo import main; sys.exit(main())",
        args,
    )
    .output()
    .expect("run repozo")
}

fn repozo_ok(args: &[&str]) {
    let out = repozo(args);
    assert!(
        out.status.success(),
        "repozo {args:?}: {}",
        output_text(&out)
    );
}

fn zodbctl_ok(args: &[&str]) -> String {
    let out = zodbctl().args(args).output().expect("run zodbctl");
    assert!(
        out.status.success(),
        "zodbctl {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn zodbctl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = zodbctl_ok(&all);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn append(path: &Path, n: usize, tag: &str) {
    run_python(APPEND, &[path_str(path), &n.to_string(), tag]);
}

fn append_blobs(path: &Path, n: usize, tag: &str, blobs: &Path) {
    run_python(
        APPEND,
        &[path_str(path), &n.to_string(), tag, path_str(blobs)],
    );
}

fn check_restored(paths: &[&Path]) {
    let args: Vec<&str> = paths.iter().map(|p| path_str(p)).collect();
    let out = run_python(CHECK_RESTORED, &args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert!(
        x == y,
        "{} ({} bytes) and {} ({} bytes) differ",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("Data.fs");
    make_datafs(&src, "2", None);
    src
}

fn backup_files(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("fs") || n.ends_with("fsz"))
        .collect();
    names.sort();
    names
}

#[test]
fn repozo_restores_and_verifies_our_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    for (name, gzip) in [("plain", false), ("gzip", true)] {
        let repo = dir.path().join(name);
        fs::create_dir(&repo).unwrap();
        let mut args = vec!["backup", "-f", path_str(&src), "-r", path_str(&repo)];
        if gzip {
            args.push("--gzip");
        }
        let r = zodbctl_json(&args);
        assert_eq!(r["kind"], "full", "{r}");
        for round in 0..3 {
            append(&src, 5, &format!("{name}{round}"));
            let r = zodbctl_json(&args);
            assert_eq!(r["kind"], "incremental", "{r}");
        }
        let r = zodbctl_json(&args);
        assert_eq!(r["kind"], "unchanged", "{r}");
        let files = backup_files(&repo);
        assert_eq!(files.len(), 4, "{files:?}");
        let ext = if gzip { "fsz" } else { "fs" };
        assert!(files[0].ends_with(&format!(".{ext}")), "{files:?}");
        assert!(
            files[1..]
                .iter()
                .all(|f| f.ends_with(&format!(".delta{ext}")))
        );

        repozo_ok(&["-V", "-r", path_str(&repo)]);
        repozo_ok(&["-V", "-Q", "-r", path_str(&repo)]);
        let out = dir.path().join(format!("{name}-by-repozo.fs"));
        repozo_ok(&["-R", "-w", "-r", path_str(&repo), "-o", path_str(&out)]);
        assert_same_file(&src, &out);
        let ours = dir.path().join(format!("{name}-by-zodbctl.fs"));
        zodbctl_ok(&[
            "restore",
            "-r",
            path_str(&repo),
            "-o",
            path_str(&ours),
            "--verify",
        ]);
        assert_same_file(&src, &ours);
        check_restored(&[&out, &ours]);
        // And zodbctl's own verification of the repository.
        zodbctl_ok(&["backup", "--verify", "-r", path_str(&repo)]);
    }
}

#[test]
fn zodbctl_restores_and_extends_repozo_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    for (name, gzip) in [("plain", false), ("gzip", true)] {
        let repo = dir.path().join(name);
        fs::create_dir(&repo).unwrap();
        let mut args = vec!["-B", "-r", path_str(&repo), "-f", path_str(&src)];
        if gzip {
            args.push("-z");
        }
        repozo_ok(&args);
        for round in 0..2 {
            // repozo refuses two backups in the same second.
            std::thread::sleep(Duration::from_millis(1100));
            append(&src, 4, &format!("{name}{round}"));
            repozo_ok(&args);
        }
        assert_eq!(backup_files(&repo).len(), 3);
        zodbctl_ok(&["backup", "--verify", "-r", path_str(&repo)]);
        let out = dir.path().join(format!("{name}.fs"));
        zodbctl_ok(&["restore", "-r", path_str(&repo), "-o", path_str(&out), "-w"]);
        assert_same_file(&src, &out);
        check_restored(&[&out]);

        // zodbctl continues repozo's chain, and repozo restores the result.
        append(&src, 3, &format!("{name}-ours"));
        let mut ours = vec!["backup", "-f", path_str(&src), "-r", path_str(&repo)];
        if gzip {
            ours.push("-z");
        }
        assert_eq!(zodbctl_json(&ours)["kind"], "incremental");
        let back = dir.path().join(format!("{name}-back.fs"));
        repozo_ok(&["-R", "-w", "-r", path_str(&repo), "-o", path_str(&back)]);
        assert_same_file(&src, &back);
    }
}

#[test]
fn date_picks_the_same_chain_as_repozo() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    let args = ["backup", "-f", path_str(&src), "-r", path_str(&repo)];
    zodbctl_ok(&args);
    append(&src, 3, "a");
    zodbctl_ok(&args);
    let full = [
        "backup",
        "-f",
        path_str(&src),
        "-r",
        path_str(&repo),
        "--full",
    ];
    append(&src, 3, "b");
    zodbctl_ok(&full);
    append(&src, 3, "c");
    zodbctl_ok(&args);
    let stems: Vec<String> = backup_files(&repo)
        .iter()
        .map(|n| n.split('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(stems.len(), 4);
    let mut dates: Vec<String> = stems.clone();
    dates.push(stems[0][..10].to_owned()); // the date-only pitfall: excludes that day
    dates.push("2000-01-01".to_owned());
    dates.push("2999-01-01-00".to_owned());
    for s in &stems[1..] {
        // One second before each backup.
        let t: u64 = s[17..19].parse().unwrap();
        if t > 0 {
            dates.push(format!("{}{:02}", &s[..17], t - 1));
        }
    }
    for (i, d) in dates.iter().enumerate() {
        let theirs = dir.path().join(format!("r{i}.fs"));
        let ours = dir.path().join(format!("z{i}.fs"));
        let r = repozo(&[
            "-R",
            "-r",
            path_str(&repo),
            "-D",
            d,
            "-o",
            path_str(&theirs),
        ]);
        let z = zodbctl()
            .args([
                "restore",
                "-r",
                path_str(&repo),
                "-D",
                d,
                "-o",
                path_str(&ours),
            ])
            .output()
            .unwrap();
        assert_eq!(
            r.status.success(),
            z.status.success(),
            "{d}: repozo {} / zodbctl {}",
            output_text(&r),
            output_text(&z)
        );
        if r.status.success() {
            assert_same_file(&theirs, &ours);
        } else {
            assert!(
                output_text(&z).contains("No files in repository"),
                "{}",
                output_text(&z)
            );
        }
    }
}

#[test]
fn incremental_restore_appends_only_the_missing_increments() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    let args = ["backup", "-f", path_str(&src), "-r", path_str(&repo), "-z"];
    zodbctl_ok(&args);
    let out = dir.path().join("restored.fs");
    let r = zodbctl_json(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
    assert_eq!(r["kind"], "full", "{r}");
    let first_size = fs::metadata(&out).unwrap().len();

    let mut increments = 0;
    for round in 0..2 {
        append(&src, 6, &format!("r{round}"));
        let b = zodbctl_json(&args);
        increments += b["bytes"].as_u64().unwrap();
    }
    let r = zodbctl_json(&["restore", "-r", path_str(&repo), "-o", path_str(&out), "-w"]);
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_eq!(r["bytes_written"].as_u64().unwrap(), increments, "{r}");
    assert_eq!(r["bytes_reused"].as_u64().unwrap(), first_size, "{r}");
    assert_eq!(r["files_written"].as_array().unwrap().len(), 2, "{r}");
    let full = dir.path().join("full.fs");
    zodbctl_ok(&["restore", "-r", path_str(&repo), "-o", path_str(&full)]);
    assert_same_file(&full, &out);
    assert_same_file(&src, &out);
    assert_same_file(
        &full.with_extension("fs.index"),
        &out.with_extension("fs.index"),
    );
    check_restored(&[&out]);

    // Up to date: nothing written.
    let r = zodbctl_json(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
    assert_eq!(r["kind"], "unchanged", "{r}");
    assert_eq!(r["bytes_written"], 0);

    // A target that differs from the backup is rewritten in full, not extended.
    let mut bytes = fs::read(&out).unwrap();
    bytes[200] ^= 0xff;
    bytes.truncate(first_size as usize);
    fs::write(&out, &bytes).unwrap();
    let r = zodbctl_json(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
    assert_eq!(r["kind"], "full", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("differs"), "{r}");
    assert_same_file(&src, &out);

    // A torn tail (a restore killed while appending) is cut back and extended.
    let bytes = fs::read(&src).unwrap();
    fs::write(&out, &bytes[..first_size as usize + 100]).unwrap();
    let r = zodbctl_json(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_same_file(&src, &out);
}

/// Every blob revision the file references, read through ZODB.DB's storage (`loadBlob`),
/// and the current objects' blobs through the application objects.
const READ_BLOBS: &str = r#"
import sys, ZODB, ZODB.FileStorage
path, blobs = sys.argv[1], sys.argv[2]
db = ZODB.DB(ZODB.FileStorage.FileStorage(path, blob_dir=blobs, read_only=True))
st = db.storage
n = 0
for txn in st.iterator():
    for rec in txn:
        if rec.data and b'ZODB.blob\nBlob' in rec.data[:40]:
            with open(st.loadBlob(rec.oid, rec.tid), 'rb') as f:
                assert f.read(), (rec.oid, rec.tid)
            n += 1
conn = db.open()
root = conn.root()
for k in sorted(root):
    if k.startswith('blob'):
        with root[k].open() as f:
            f.read()
db.close()
print(n)
"#;

#[test]
fn blobs_are_backed_up_incrementally_and_restore_readable() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Data.fs");
    let blobs = dir.path().join("blobs");
    append_blobs(&src, 3, "a", &blobs);
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    let args = [
        "backup",
        "-f",
        path_str(&src),
        "-r",
        path_str(&repo),
        "--blob-dir",
        path_str(&blobs),
        "-z",
    ];
    let r = zodbctl_json(&args);
    assert_eq!(r["blobs"]["files"], 3, "{r}");
    assert_eq!(r["blobs"]["copied"], 3, "{r}");
    append_blobs(&src, 4, "b", &blobs);
    let r = zodbctl_json(&args);
    assert_eq!(r["kind"], "incremental");
    assert_eq!(r["blobs"]["files"], 4, "only the new revisions: {r}");
    assert_eq!(r["blobs"]["copied"], 4, "{r}");
    // A full backup links what the repository already holds instead of copying it.
    let mut full = args.to_vec();
    full.push("--full");
    let r = zodbctl_json(&full);
    assert_eq!(r["blobs"]["files"], 7, "{r}");
    assert_eq!(r["blobs"]["linked"], 7, "{r}");
    assert_eq!(r["blobs"]["copied"], 0, "{r}");
    append_blobs(&src, 2, "c", &blobs);
    zodbctl_json(&args);
    zodbctl_ok(&["backup", "--verify", "-r", path_str(&repo)]);
    // repozo still reads the Data.fs part.
    repozo_ok(&["-V", "-r", path_str(&repo)]);

    let out = dir.path().join("restored/Data.fs");
    fs::create_dir(dir.path().join("restored")).unwrap();
    let out_blobs = dir.path().join("restored/blobs");
    let r = zodbctl_json(&[
        "restore",
        "-r",
        path_str(&repo),
        "-o",
        path_str(&out),
        "--blob-dir",
        path_str(&out_blobs),
    ]);
    assert_eq!(r["blobs"]["files"], 9, "{r}");
    assert_same_file(&src, &out);
    let n = support::python_stdout(READ_BLOBS, &[path_str(&out), path_str(&out_blobs)]);
    assert_eq!(n.trim(), "9");

    // A missing blob file in the repository is reported by verify and stops a restore.
    let blob_dir = fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".blobs"))
        .max()
        .unwrap();
    let manifest = fs::read_to_string(blob_dir.join(".manifest")).unwrap();
    let first: Vec<&str> = manifest.lines().next().unwrap().split(' ').collect();
    let oid = u64::from_str_radix(first[0], 16).unwrap();
    let tid = u64::from_str_radix(first[1], 16).unwrap();
    let mut victim = blob_dir.clone();
    for b in oid.to_be_bytes() {
        victim.push(format!("0x{b:02x}"));
    }
    victim.push(format!("0x{tid:016x}.blob"));
    fs::remove_file(&victim).unwrap_or_else(|e| panic!("{}: {e}", victim.display()));
    let out = zodbctl()
        .args(["backup", "--verify", "-r", path_str(&repo)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("is missing"),
        "{}",
        output_text(&out)
    );
}

/// A client committing through ZEO, one object per transaction, printing each tid once
/// `tpc_finish` has returned (acknowledged), until the stop file appears (bounded).
const COMMITTER: &str = r#"
import os, sys, time, transaction, ZODB, ZEO.ClientStorage
from ZODB.utils import u64
host, port = sys.argv[1].rsplit(':', 1)
stop, me = sys.argv[2], sys.argv[3]
db = ZODB.DB(ZEO.ClientStorage.ClientStorage((host, int(port)), wait_timeout=30))
conn = db.open()
m = conn.root()[me]
deadline = time.time() + 60
i = 0
while not os.path.exists(stop) and time.time() < deadline and i < 3000:
    try:
        m['k%d' % i] = 'v' * 300
        transaction.commit()
    except Exception:
        transaction.abort()
        continue
    print(u64(m._p_serial), flush=True)
    i += 1
db.close()
"#;

/// One mapping per client, so that their commits never conflict.
const PREPARE: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
from persistent.mapping import PersistentMapping
db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1]))
conn = db.open()
for name in sys.argv[2:]:
    conn.root()[name] = PersistentMapping()
transaction.commit()
db.close()
"#;

const TIDS_OF: &str = r#"
import sys, ZODB.FileStorage
from ZODB.utils import u64
from ZODB.scripts import fstest
fstest.check(sys.argv[1])
fs = ZODB.FileStorage.FileStorage(sys.argv[1], read_only=True)
for t in fs.iterator():
    print(u64(t.tid))
fs.close()
"#;

fn acked(files: &[PathBuf]) -> Vec<u64> {
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(f).unwrap_or_default();
        // The last line may be half written.
        let lines: Vec<&str> = text.lines().collect();
        let complete = if text.ends_with('\n') {
            &lines[..]
        } else {
            &lines[..lines.len().saturating_sub(1)]
        };
        out.extend(complete.iter().filter_map(|l| l.trim().parse::<u64>().ok()));
    }
    out
}

#[test]
fn backups_while_clients_commit_restore_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    run_python(PREPARE, &[path_str(&src), "c0", "c1"]);
    let server = Serve::in_dir(dir.path()).file(&src).start();
    let stop = dir.path().join("stop");
    let mut clients = Vec::new();
    let mut logs = Vec::new();
    for c in 0..2 {
        let log = dir.path().join(format!("acks{c}.txt"));
        let child = python_command(
            COMMITTER,
            &[&server.addr(), path_str(&stop), &format!("c{c}")],
        )
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(dir.path().join(format!("client{c}.err"))).unwrap())
        .spawn()
        .unwrap();
        clients.push(child);
        logs.push(log);
    }
    let started = support::wait_until(Duration::from_secs(60), || acked(&logs).len() >= 20);
    if !started {
        let errs: Vec<String> = (0..2)
            .map(|c| {
                fs::read_to_string(dir.path().join(format!("client{c}.err"))).unwrap_or_default()
            })
            .collect();
        fs::write(&stop, b"").unwrap();
        panic!("the clients did not commit: {errs:?}");
    }
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    for round in 0..3 {
        let before = acked(&logs);
        let mut args = vec!["backup", "-f", path_str(&src), "-r", path_str(&repo)];
        if round == 1 {
            args.push("-z");
        }
        let r = zodbctl_json(&args);
        assert_ne!(r["kind"], "unchanged", "{r}");
        let out = dir.path().join(format!("restored{round}.fs"));
        zodbctl_ok(&["restore", "-r", path_str(&repo), "-o", path_str(&out), "-w"]);
        let present: std::collections::HashSet<u64> =
            support::python_stdout(TIDS_OF, &[path_str(&out)])
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
        for t in &before {
            assert!(
                present.contains(t),
                "round {round}: acknowledged tid {t} is missing"
            );
        }
        // The restored file is a prefix of the live one.
        let live = fs::read(&src).unwrap();
        let restored = fs::read(&out).unwrap();
        assert!(live.starts_with(&restored), "round {round}: not a prefix");
        std::thread::sleep(Duration::from_millis(300));
    }
    fs::write(&stop, b"").unwrap();
    for mut c in clients {
        let _ = c.wait();
    }
    drop(server);
    repozo_ok(&["-V", "-r", path_str(&repo)]);
}

#[test]
fn bad_input_gives_clear_errors_and_keeps_good_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let missing = dir.path().join("nope");
    let out = zodbctl()
        .args(["backup", "-f", path_str(&src), "-r", path_str(&missing)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains(path_str(&missing)));
    let out = zodbctl()
        .args([
            "restore",
            "-r",
            path_str(&dir.path().join("nope")),
            "-o",
            "x.fs",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    let empty = zodbctl()
        .args(["restore", "-r", path_str(&repo), "-o", "x.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output_text(&empty).contains("No files in repository"));
    let args = ["backup", "-f", path_str(&src), "-r", path_str(&repo)];
    zodbctl_ok(&args);
    append(&src, 3, "a");
    zodbctl_ok(&args);
    append(&src, 3, "b");
    zodbctl_ok(&args);
    let good = dir.path().join("good.fs");
    zodbctl_ok(&["restore", "-r", path_str(&repo), "-o", path_str(&good)]);
    let good_bytes = fs::read(&good).unwrap();
    let files = backup_files(&repo);

    // A damaged chain file: a verified restore fails naming it, the good output stays.
    let damaged = repo.join(&files[1]);
    let saved = fs::read(&damaged).unwrap();
    let mut bad = saved.clone();
    bad[10] ^= 1;
    fs::write(&damaged, &bad).unwrap();
    let out = zodbctl()
        .args([
            "restore",
            "-r",
            path_str(&repo),
            "-o",
            path_str(&good),
            "-w",
            "-F",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains(&files[1]),
        "{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("checksum"),
        "{}",
        output_text(&out)
    );
    assert_eq!(fs::read(&good).unwrap(), good_bytes);
    assert!(!dir.path().join("good.fs.part").exists());
    let out = zodbctl()
        .args(["backup", "--verify", "-r", path_str(&repo)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(output_text(&out).contains(&files[1]));

    // A truncated one: even without -w the size check catches it.
    fs::write(&damaged, &saved[..saved.len() - 5]).unwrap();
    let out = zodbctl()
        .args([
            "restore",
            "-r",
            path_str(&repo),
            "-o",
            path_str(&good),
            "-F",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("should be"),
        "{}",
        output_text(&out)
    );
    assert_eq!(fs::read(&good).unwrap(), good_bytes);

    // A chain file deleted: the .dat disagrees; refused, naming the file.
    fs::remove_file(&damaged).unwrap();
    let out = zodbctl()
        .args(["restore", "-r", path_str(&repo), "-o", path_str(&good)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains(&files[1]),
        "{}",
        output_text(&out)
    );
    assert_eq!(fs::read(&good).unwrap(), good_bytes);
    // ... and the next backup starts a new chain.
    let r = zodbctl_json(&args);
    assert_eq!(r["kind"], "full");
    assert!(r["reason"].as_str().unwrap().contains(&files[1]), "{r}");

    // A packed source (Python's pack: shorter, rewritten): a full backup, saying why.
    let repo2 = dir.path().join("repo2");
    fs::create_dir(&repo2).unwrap();
    zodbctl_ok(&["backup", "-f", path_str(&src), "-r", path_str(&repo2)]);
    run_python(PACK, &[path_str(&src)]);
    let r = zodbctl_json(&["backup", "-f", path_str(&src), "-r", path_str(&repo2)]);
    assert_eq!(r["kind"], "full", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("pack"), "{r}");
    let r = zodbctl_json(&[
        "backup",
        "-f",
        path_str(&src),
        "-r",
        path_str(&repo2),
        "-Q",
        "-k",
    ]);
    assert_eq!(r["kind"], "unchanged", "{r}");
    repozo_ok(&["-V", "-r", path_str(&repo2)]);
}

#[test]
fn instance_backup_restore_and_the_repozo_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("zeo");
    let port = support::free_port().to_string();
    zodbctl_ok(&[
        "create",
        "server",
        path_str(&inst),
        "--address",
        &format!("127.0.0.1:{port}"),
        "--blobs",
    ]);
    let datafs = inst.join("var/Data.fs");
    append_blobs(&datafs, 3, "a", &inst.join("var/blobs"));
    // Defaults from [backup]: var/backups/1, gzip, blobs.
    let r = zodbctl_json(&["-i", path_str(&inst), "backup"]);
    assert_eq!(r["kind"], "full", "{r}");
    assert!(r["file"].as_str().unwrap().ends_with(".fsz"), "{r}");
    assert_eq!(r["blobs"]["files"], 3, "{r}");
    let record: Value =
        serde_json::from_str(&fs::read_to_string(inst.join("var/Data.fs.backup.json")).unwrap())
            .unwrap();
    assert_eq!(record["kind"], "full");
    assert!(record["finished"].as_u64().is_some(), "{record}");
    assert!(inst.join("var/backups/1/last-backup.json").is_file());
    let crontab = fs::read_to_string(inst.join("etc/crontab")).unwrap();
    assert!(crontab.contains("backup --full"), "{crontab}");

    // bin/repozo: repozo's flags, grouped as cron lines write them.
    let repozo_sh = inst.join("bin/repozo");
    append_blobs(&datafs, 2, "b", &inst.join("var/blobs"));
    let out = std::process::Command::new(&repozo_sh)
        .args(["-BQz", "-v"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let out = std::process::Command::new(&repozo_sh)
        .args(["-V"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout_copy = std::process::Command::new(&repozo_sh)
        .args(["-R"])
        .output()
        .unwrap();
    assert!(stdout_copy.status.success());
    assert_eq!(stdout_copy.stdout, fs::read(&datafs).unwrap());
    let out_fs = dir.path().join("wrapped.fs");
    let out = std::process::Command::new(&repozo_sh)
        .args(["-R", "-w", "--output", path_str(&out_fs)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_same_file(&datafs, &out_fs);
    let bad = std::process::Command::new(&repozo_sh)
        .args(["-B", "-R"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));

    // Restore into the instance: refused while the server runs, done when it is stopped.
    let server = Serve::in_dir(&inst).instance(&inst).start();
    let out = zodbctl()
        .args(["-i", path_str(&inst), "restore"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("in use"),
        "{}",
        output_text(&out)
    );
    drop(server);
    let before = fs::read(&datafs).unwrap();
    fs::remove_file(&datafs).unwrap();
    fs::remove_dir_all(inst.join("var/blobs")).unwrap();
    let r = zodbctl_json(&["-i", path_str(&inst), "restore"]);
    assert_eq!(r["blobs"]["files"], 5, "{r}");
    assert_eq!(fs::read(&datafs).unwrap(), before);
    let n = support::python_stdout(
        READ_BLOBS,
        &[path_str(&datafs), path_str(&inst.join("var/blobs"))],
    );
    assert_eq!(n.trim(), "5");
}
