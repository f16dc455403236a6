//! Issue 10's fault cases for `zodbctl backup | restore`, with the real binary: a full disk
//! (a small tmpfs) during a backup and during a restore. Each must end with a
//! clear error naming the file, the earlier good file (restored Data.fs or backup chain)
//! unchanged, and nothing partial under a final name; the next run must succeed.
//!
//! The full-disk tests need to mount a tmpfs (root); where that is not permitted they print
//! `SKIPPED ...` and pass.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{output_text, path_str, run_python, zodbctl};

/// Write (or extend) a Data.fs with Python's FileStorage: N transactions of about 1 MB each
/// (hex of random bytes, so the size is what it says).
const GROW: &str = r#"
import os, sys, transaction, ZODB, ZODB.FileStorage
path, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
for i in range(n):
    with db.transaction() as c:
        c.root()['%s%d' % (tag, i)] = os.urandom(512 * 1024).hex()
db.close()
"#;

fn grow(path: &Path, mb: usize, tag: &str) {
    let out = run_python(GROW, &[path_str(path), &mb.to_string(), tag]);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn run(args: &[&str]) -> Output {
    zodbctl().args(args).output().expect("run zodbctl")
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    let text = output_text(&out);
    assert!(out.status.success(), "zodbctl {args:?}: {text}");
    text
}

fn part_of(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", p.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn full_disk_during_restore() {
    let outer = tempfile::tempdir().unwrap();
    let src = outer.path().join("src.fs");
    let repo = outer.path().join("repo");
    fs::create_dir(&repo).unwrap();
    grow(&src, 8, "a");
    run_ok(&["backup", "-f", path_str(&src), "-r", path_str(&repo)]);
    grow(&src, 2, "b");
    run_ok(&["backup", "-f", path_str(&src), "-r", path_str(&repo)]);

    let mnt = outer.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    if !support::mount_tmpfs(&mnt, "4m") {
        eprintln!("SKIPPED full_disk_during_restore: no tmpfs");
        return;
    }
    let _unmount = support::Unmount(mnt.clone());
    // A good earlier file (another database) where the restore goes.
    let out_fs = mnt.join("Data.fs");
    grow(&out_fs, 1, "old");
    let old = fs::read(&out_fs).unwrap();

    let out = run(&["restore", "-r", path_str(&repo), "-o", path_str(&out_fs)]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("No space left"), "{text}");
    assert!(text.contains(path_str(&mnt)), "no file named: {text}");
    assert_eq!(fs::read(&out_fs).unwrap(), old, "the good file was changed");
    assert!(
        !part_of(&out_fs).exists(),
        "a .part was left: {:?}",
        names(&mnt)
    );
}

#[test]
fn full_disk_during_backup() {
    let outer = tempfile::tempdir().unwrap();
    let src = outer.path().join("src.fs");
    grow(&src, 1, "a");
    let good = fs::read(&src).unwrap();
    let repo = outer.path().join("repo");
    fs::create_dir(&repo).unwrap();
    if !support::mount_tmpfs(&repo, "4m") {
        eprintln!("SKIPPED full_disk_during_backup: no tmpfs");
        return;
    }
    let _unmount = support::Unmount(repo.clone());
    run_ok(&["backup", "-f", path_str(&src), "-r", path_str(&repo)]);
    let before = names(&repo);

    grow(&src, 6, "b");
    for extra in [&[][..], &["-F"][..]] {
        let mut args = vec!["backup", "-f", path_str(&src), "-r", path_str(&repo)];
        args.extend_from_slice(extra);
        let out = run(&args);
        let text = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains("No space left"), "{text}");
        assert!(text.contains(path_str(&repo)), "no file named: {text}");
        assert_eq!(names(&repo), before, "{args:?} left files behind");
    }

    let verify = run_ok(&["backup", "--verify", "-r", path_str(&repo)]);
    assert!(!verify.contains("FAIL"), "{verify}");
    let restored = outer.path().join("restored.fs");
    run_ok(&["restore", "-r", path_str(&repo), "-o", path_str(&restored)]);
    assert_eq!(fs::read(&restored).unwrap(), good);
}
