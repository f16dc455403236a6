//! Issue 10's fault cases for `zodbctl backup | restore`, with the real binary: a full disk
//! (a small tmpfs) during a backup and during a restore, and kill -9 during either. Each must
//! end with the earlier good file (restored Data.fs or backup chain) unchanged or the new one
//! complete, nothing partial under a final name (a full disk: a clear error naming the
//! file), and the next run must succeed; after a killed backup, zodbctl and repozo verify the
//! repository and restore a prefix of the source.
//!
//! The full-disk tests need to mount a tmpfs (root); where that is not permitted they print
//! `SKIPPED ...` and pass.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{output_text, path_str, run_python, zodbctl};
use zodbctl::storage::{OpenOptions, Tid, TxnMeta};

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

// ---------------------------------------------------------------------------------------------
// kill -9 during backup and restore
// ---------------------------------------------------------------------------------------------

/// Append `n` transactions of two `record`-byte pseudo-random records each to the Data.fs at
/// `path` (created if needed) with our engine: tens of MB in well under a second of CPU, and
/// incompressible, so a `--gzip` backup takes as long.
fn append_txns(path: &Path, n: usize, record: usize, seed: &mut u64) {
    let fs = OpenOptions::new()
        .create(!path.exists())
        .open(path)
        .unwrap();
    let mut noise = |len: usize| {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            v.extend_from_slice(&seed.to_le_bytes());
        }
        v.truncate(len);
        v
    };
    for i in 0..n {
        let oids = fs.new_oids(2).unwrap();
        let mut t = fs
            .begin(TxnMeta::new("", format!("kill test {i}"), b"".to_vec()))
            .unwrap();
        for oid in oids {
            t.store(oid, Tid::ZERO, &noise(record)).unwrap();
        }
        t.vote().unwrap();
        t.finish().unwrap();
    }
    fs.close().unwrap();
}

fn repozo(args: &[&str]) -> Output {
    support::python_command(
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

/// The names a repository may hold once a backup has succeeded: backup files, the
/// `.dat`/`.index`/`.blobs` of an existing backup file, the last-backup record. Anything
/// else is a leftover of a killed backup that the backup should have removed.
fn stray_names(repo: &Path) -> Vec<String> {
    let all = names(repo);
    let data_stems: Vec<&str> = all
        .iter()
        .filter_map(|n| {
            [".fs", ".fsz", ".deltafs", ".deltafsz"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
        })
        .collect();
    all.iter()
        .filter(|n| {
            let of_file = [
                ".fs",
                ".fsz",
                ".deltafs",
                ".deltafsz",
                ".dat",
                ".index",
                ".blobs",
            ]
            .iter()
            .any(|s| n.strip_suffix(s).is_some_and(|st| data_stems.contains(&st)));
            !(of_file || n.as_str() == "last-backup.json")
        })
        .cloned()
        .collect()
}

/// Spawn `zodbctl ARGS` and kill -9 it after `delay`, or (`delay` None) as soon as `ready`
/// holds (polled every millisecond, at most 10 s); whether it had already exited.
fn run_and_kill(args: &[&str], delay: Option<Duration>, ready: &dyn Fn() -> bool) -> bool {
    let mut child = zodbctl()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn zodbctl");
    match delay {
        Some(d) => std::thread::sleep(d),
        None => {
            let start = Instant::now();
            while !ready() && start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    support::wait_child(&mut child, Duration::from_secs(10));
    finished
}

/// The repository verifies (zodbctl and, with `repozo`, repozo's `-V`) and restores to a
/// file that passes `zodbctl verify` and is the source's first `len` bytes for one of
/// `ends`; that length.
fn check_repository(dir: &Path, repo: &Path, src: &[u8], ends: &[u64], with_repozo: bool) -> u64 {
    let verify = run(&["backup", "--verify", "-r", path_str(repo)]);
    assert!(
        verify.status.success(),
        "verify after a kill: {}\n{:?}",
        output_text(&verify),
        names(repo)
    );
    if with_repozo {
        repozo_ok(&["-V", "-r", path_str(repo)]);
    }
    let out = dir.join("check.fs");
    for p in [out.clone(), dir.join("check.fs.index")] {
        let _ = fs::remove_file(p);
    }
    run_ok(&["restore", "-r", path_str(repo), "-o", path_str(&out)]);
    let restored = fs::read(&out).unwrap();
    let len = restored.len() as u64;
    assert!(
        ends.contains(&len),
        "restored {len} bytes, expected one of {ends:?}; repository {:?}",
        names(repo)
    );
    assert!(
        restored[..] == src[..restored.len()],
        "the restore is not a prefix of the source"
    );
    run_ok(&["verify", path_str(&out)]);
    len
}

/// Kill backups at several moments, in rounds (incremental, full, gzip): after each kill the
/// repository verifies (zodbctl and repozo) and restores a prefix of the source, and the next
/// backup succeeds, leaves nothing stray, and covers the whole source.
#[test]
fn kill_9_during_backup() {
    let started = Instant::now();
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path();
    let src = dir.join("src.fs");
    let repo = dir.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    append_txns(&src, 40, 128 * 1024, &mut seed);
    eprintln!(
        "source: {} bytes in {:?}",
        fs::metadata(&src).unwrap().len(),
        started.elapsed()
    );
    run_ok(&["backup", "-f", path_str(&src), "-r", path_str(&repo)]);

    let tmp_in_repo = || {
        names(&repo)
            .iter()
            .any(|n| n.starts_with('.') && n.ends_with(".tmp"))
    };
    // (round, extra arguments, kill delays in ms; None: once the backup file's temporary
    // `.<name>.tmp` shows, i.e. after the `.index` was written)
    type Round<'a> = (&'a str, &'a [&'a str], &'a [Option<u64>]);
    let rounds: [Round; 3] = [
        ("incremental", &[], &[None, Some(5), Some(25), Some(80)]),
        ("full", &["-F"], &[None, Some(10), Some(40)]),
        ("gzip", &["--gzip"], &[None, Some(10), Some(40)]),
    ];
    let mut stats = Vec::new();
    for (round, extra, delays) in rounds {
        for (cycle, delay) in delays.iter().enumerate() {
            if started.elapsed() > Duration::from_secs(35) {
                eprintln!("time is up: stopping at {round} cycle {cycle}");
                break;
            }
            let before = fs::metadata(&src).unwrap().len();
            append_txns(&src, 10, 128 * 1024, &mut seed);
            let bytes = fs::read(&src).unwrap();
            let mut args = vec!["backup", "-f", path_str(&src), "-r", path_str(&repo)];
            args.extend_from_slice(extra);
            let finished = run_and_kill(&args, delay.map(Duration::from_millis), &tmp_in_repo);
            let left = names(&repo);
            let repozo_now = delay.is_none() || cycle == 1;
            let len = check_repository(
                dir,
                &repo,
                &bytes,
                &[before, bytes.len() as u64],
                repozo_now,
            );
            stats.push(format!(
                "{round} {delay:?}: {} ; restored {}",
                if finished { "finished" } else { "killed" },
                if len == before {
                    "the earlier end"
                } else {
                    "the new end"
                }
            ));
            eprintln!("{round} {delay:?}: repository after the kill: {left:?}");

            let next = run_ok(&args);
            assert!(
                stray_names(&repo).is_empty(),
                "{round} {delay:?}: the next backup left {:?}\n{next}",
                stray_names(&repo)
            );
            check_repository(dir, &repo, &bytes, &[bytes.len() as u64], repozo_now);
        }
    }
    for s in &stats {
        eprintln!("{s}");
    }
    eprintln!("kill_9_during_backup: {:?}", started.elapsed());
}

fn stem_of(name: &str) -> &str {
    &name[..19]
}

/// The states a kill leaves at each step of a backup, made by hand: temporaries, an
/// `.index` (and a full backup's `.dat`) without their backup file, and an incremental
/// renamed into place whose `.dat` line was never written. zodbctl's and repozo's verify
/// pass, zodbctl's restore leaves the uncommitted file out (with a warning), and the next
/// backup removes all of it, saying so, and continues the chain correctly.
#[test]
fn killed_backup_leftovers() {
    let started = Instant::now();
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path();
    let src = dir.join("src.fs");
    let repo = dir.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut seed = 7u64;
    append_txns(&src, 4, 64 * 1024, &mut seed);
    let backup = ["backup", "-f", path_str(&src), "-r", path_str(&repo)];
    run_ok(&backup);
    let end1 = fs::metadata(&src).unwrap().len();
    append_txns(&src, 4, 64 * 1024, &mut seed);
    run_ok(&backup);
    let end2 = fs::metadata(&src).unwrap().len();
    let clean = names(&repo);

    // An incremental renamed into place, its `.dat` line not yet appended: the `.dat`
    // without its last line is exactly what a kill between the two leaves.
    let dat_name = clean.iter().find(|n| n.ends_with(".dat")).unwrap().clone();
    let dat = repo.join(&dat_name);
    let text = fs::read_to_string(&dat).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    assert_eq!(kept.len(), 2, "{text}");
    fs::write(&dat, format!("{}\n", kept[0])).unwrap();
    let delta = clean
        .iter()
        .find(|n| n.ends_with(".deltafs"))
        .unwrap()
        .clone();

    // A later backup killed before its rename: temporaries and an `.index` (a full one also
    // a `.dat`) without a backup file. Stems after the chain's.
    let later = |s: u32| format!("2099-01-01-00-00-{s:02}");
    let index = clean
        .iter()
        .find(|n| n.ends_with(".index"))
        .unwrap()
        .clone();
    fs::copy(repo.join(&index), repo.join(format!("{}.index", later(1)))).unwrap();
    fs::write(repo.join(format!(".{}.deltafs.tmp", later(1))), b"partial").unwrap();
    fs::copy(repo.join(&index), repo.join(format!("{}.index", later(2)))).unwrap();
    fs::write(repo.join(format!("{}.dat", later(2))), "x 0 1 00\n").unwrap();
    fs::write(repo.join(format!("{}.dat.tmp", later(3))), "x").unwrap();
    fs::write(repo.join(format!("{}.index.index_tmp", later(3))), "x").unwrap();
    fs::create_dir_all(repo.join(format!("{}.blobs.tmp/0x00", later(4)))).unwrap();
    fs::create_dir_all(repo.join(format!("{}.blobs", later(5)))).unwrap();
    fs::write(repo.join("last-backup.json.tmp"), "{").unwrap();
    eprintln!("made by hand: {:?}", names(&repo));

    let verify = run_ok(&["backup", "--verify", "-r", path_str(&repo)]);
    eprintln!("zodbctl verify: {verify}");
    repozo_ok(&["-V", "-r", path_str(&repo)]);
    let bytes = fs::read(&src).unwrap();
    // zodbctl: the committed chain only, with a warning naming the left-out file.
    let out = dir.join("out.fs");
    let restore = run(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
    let text = output_text(&restore);
    assert!(restore.status.success(), "{text}");
    assert!(text.contains(&delta), "no warning naming {delta}: {text}");
    assert_eq!(fs::read(&out).unwrap(), bytes[..end1 as usize]);
    // repozo's plain restore concatenates every file: the uncommitted one is complete, so
    // that is the longer prefix (its `-R -w` has no .dat line to check it against).
    let by_repozo = dir.join("repozo.fs");
    repozo_ok(&["-R", "-r", path_str(&repo), "-o", path_str(&by_repozo)]);
    assert_eq!(fs::read(&by_repozo).unwrap(), bytes[..end2 as usize]);

    // The next backup removes everything, says so, and continues from the `.dat`'s end.
    append_txns(&src, 2, 64 * 1024, &mut seed);
    let bytes = fs::read(&src).unwrap();
    let next = run_ok(&backup);
    for name in [
        delta.clone(),
        format!("{}.index", stem_of(&delta)),
        format!("{}.index", later(1)),
        format!(".{}.deltafs.tmp", later(1)),
        format!("{}.dat", later(2)),
        format!("{}.blobs", later(5)),
        "last-backup.json.tmp".to_owned(),
    ] {
        assert!(
            next.contains(&format!("removed {name}, left by an interrupted backup")),
            "no line for {name}: {next}"
        );
    }
    assert!(stray_names(&repo).is_empty(), "{:?}", stray_names(&repo));
    let lines = fs::read_to_string(&dat).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // Gone, unless the next backup ran within the same second and took the same name (file
    // names have one-second resolution, as repozo's): then it is the new backup's file,
    // named by the .dat's line, and its bytes are checked with the chain below.
    assert!(
        !repo.join(&delta).exists() || lines.lines().nth(1).unwrap().contains(&delta),
        "{delta} is still there and not the new backup's: {lines}"
    );
    assert!(
        lines
            .lines()
            .nth(1)
            .unwrap()
            .contains(&format!(" {end1} {}", bytes.len())),
        "the chain does not continue from the .dat's end: {lines}"
    );
    check_repository(dir, &repo, &bytes, &[bytes.len() as u64], true);
    let _ = fs::remove_file(&by_repozo);
    repozo_ok(&[
        "-R",
        "-w",
        "-r",
        path_str(&repo),
        "-o",
        path_str(&by_repozo),
    ]);
    assert_eq!(fs::read(&by_repozo).unwrap(), bytes);
    eprintln!("killed_backup_leftovers: {:?}", started.elapsed());
}

/// Kill restores at several moments, into a fresh output, over an earlier (shorter) restore
/// of the same chain (an incremental restore, which appends), and with `-F` over it: the
/// output is absent, the earlier file unchanged, or the complete restore, never partial;
/// the next restore handles a leftover `.part` and gives the whole source.
#[test]
fn kill_9_during_restore() {
    let started = Instant::now();
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path();
    let src = dir.join("src.fs");
    let repo = dir.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut seed = 99u64;
    let backup = ["backup", "-f", path_str(&src), "-r", path_str(&repo)];
    append_txns(&src, 60, 128 * 1024, &mut seed);
    run_ok(&backup);
    let earlier_end = fs::metadata(&src).unwrap().len() as usize;
    for _ in 0..2 {
        append_txns(&src, 30, 128 * 1024, &mut seed);
        run_ok(&backup);
    }
    let bytes = fs::read(&src).unwrap();
    let earlier = &bytes[..earlier_end];
    eprintln!("setup: {:?}", started.elapsed());

    let out = dir.join("out.fs");
    let part = part_of(&out);
    let index = dir.join("out.fs.index");
    let part_exists = || part.exists();
    let delays = [Some(2), Some(10), Some(30), Some(60), Some(120), None];
    // (what, the output before, extra arguments)
    type Scenario<'a> = (&'a str, Option<&'a [u8]>, &'a [&'a str]);
    let scenarios: [Scenario; 3] = [
        ("fresh output", None, &[]),
        ("over an earlier restore", Some(earlier), &[]),
        ("-F over an earlier restore", Some(earlier), &["-F"]),
    ];
    for (what, before, extra) in scenarios {
        for delay in delays {
            if started.elapsed() > Duration::from_secs(40) {
                eprintln!("time is up: stopping at {what} {delay:?}");
                break;
            }
            for p in [&out, &part, &index] {
                let _ = fs::remove_file(p);
            }
            if let Some(b) = before {
                fs::write(&out, b).unwrap();
            }
            let mut args = vec!["restore", "-r", path_str(&repo), "-o", path_str(&out)];
            args.extend_from_slice(extra);
            let finished = run_and_kill(&args, delay.map(Duration::from_millis), &part_exists);
            let state = if out.exists() {
                let now = fs::read(&out).unwrap();
                if now == bytes {
                    "complete"
                } else if before == Some(&now[..]) {
                    "unchanged"
                } else {
                    panic!(
                        "{what} {delay:?}: a partial output ({} bytes) under the final name",
                        now.len()
                    );
                }
            } else {
                assert!(
                    before.is_none() || part.exists(),
                    "{what} {delay:?}: the earlier restore is gone"
                );
                "absent"
            };
            eprintln!(
                "{what} {delay:?}: {} -> output {state}, .part {}",
                if finished { "finished" } else { "killed" },
                if part.exists() { "left" } else { "none" }
            );
            // The next restore handles whatever is there.
            let next = run(&["restore", "-r", path_str(&repo), "-o", path_str(&out)]);
            assert!(
                next.status.success(),
                "{what} {delay:?}: the next restore: {}",
                output_text(&next)
            );
            assert!(
                fs::read(&out).unwrap() == bytes,
                "{what} {delay:?}: not the source"
            );
            assert!(
                !part.exists(),
                "{what} {delay:?}: .part left after a good restore"
            );
            run_ok(&["verify", path_str(&out)]);
        }
    }
    eprintln!("kill_9_during_restore: {:?}", started.elapsed());
}

/// The `.blob` files under `dir`, by path relative to it, with their bytes.
fn blob_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "blob") {
                out.push((
                    p.strip_prefix(root).unwrap().to_owned(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A kill during a restore with `--blob-dir`, into a fresh output and over an earlier
/// restore: whenever the output holds the complete Data.fs, the blob directory holds every
/// revision (never a complete-looking Data.fs beside a partial blob directory); the next
/// restore completes both.
#[test]
fn kill_9_during_restore_with_blobs() {
    let started = Instant::now();
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path();
    let src = dir.join("src.fs");
    let src_blobs = dir.join("src-blobs");
    let repo = dir.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut seed = 5u64;
    {
        let fs = OpenOptions::new()
            .create(true)
            .blob_dir(&src_blobs)
            .open(&src)
            .unwrap();
        let incoming = dir.join("incoming");
        fs::create_dir(&incoming).unwrap();
        for i in 0..40u64 {
            let oid = fs.new_oid().unwrap();
            let mut t = fs
                .begin(TxnMeta::new("", format!("blob {i}"), b"".to_vec()))
                .unwrap();
            let mut blob = vec![0u8; 256 * 1024];
            for chunk in blob.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
            }
            let file = incoming.join(format!("{i}.tmp"));
            fs::write(&file, &blob).unwrap();
            t.store_blob(oid, Tid::ZERO, format!("record {i}").as_bytes(), &file)
                .unwrap();
            t.vote().unwrap();
            t.finish().unwrap();
        }
        fs.close().unwrap();
    }
    run_ok(&[
        "backup",
        "-f",
        path_str(&src),
        "-r",
        path_str(&repo),
        "--blob-dir",
        path_str(&src_blobs),
    ]);
    let bytes = fs::read(&src).unwrap();
    let want = blob_files(&src_blobs);
    assert_eq!(want.len(), 40);
    eprintln!("setup: {:?}", started.elapsed());

    let out = dir.join("out.fs");
    let blobs = dir.join("blobs");
    let blobs_part = part_of(&blobs);
    let restore = [
        "restore",
        "-r",
        path_str(&repo),
        "-o",
        path_str(&out),
        "--blob-dir",
        path_str(&blobs),
    ];
    let part_exists = || blobs_part.exists();
    for over_earlier in [false, true] {
        for delay in [Some(5), Some(20), Some(50), Some(100), None] {
            if started.elapsed() > Duration::from_secs(40) {
                eprintln!("time is up: stopping at {delay:?}");
                break;
            }
            let _ = fs::remove_dir_all(&blobs);
            for p in [out.clone(), part_of(&out), dir.join("out.fs.index")] {
                let _ = fs::remove_file(p);
            }
            let mut args = restore.to_vec();
            if over_earlier {
                // An earlier restore of the same chain: the restore is a full one over it
                // (nothing to append), swapping the blob directory.
                run_ok(&restore);
                args.push("-F");
            }
            let finished = run_and_kill(&args, delay.map(Duration::from_millis), &part_exists);
            let complete = fs::read(&out).is_ok_and(|b| b == bytes);
            let have = blob_files(&blobs);
            eprintln!(
                "blobs, over an earlier restore {over_earlier}, {delay:?}: {}: Data.fs {}, {} blob files{}",
                if finished { "finished" } else { "killed" },
                if complete {
                    "complete"
                } else if out.exists() {
                    "the earlier"
                } else {
                    "absent"
                },
                have.len(),
                if blobs_part.exists() {
                    ", blobs.part left"
                } else {
                    ""
                }
            );
            if complete {
                assert!(
                    have == want,
                    "a complete Data.fs beside {} of 40 blob files",
                    have.len()
                );
            }
            run_ok(&restore);
            assert!(fs::read(&out).unwrap() == bytes);
            assert!(
                blob_files(&blobs) == want,
                "the next restore's blobs differ"
            );
            assert!(!blobs_part.exists() && !part_of(&out).exists());
        }
    }
    eprintln!("kill_9_during_restore_with_blobs: {:?}", started.elapsed());
}
