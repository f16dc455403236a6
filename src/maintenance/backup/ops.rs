//! Backup, restore and verify: repozo's decisions (spec `filestorage.md` §12.3–12.6) with
//! the bytes moved by [`super::copy`] and the blobs by [`super::blobs`].
//!
//! Where this differs from repozo, deliberately:
//! * The end of a backup is the end of the last committed transaction, from a read-only
//!   open of the storage (which also gives the `.index`), and the transaction ending there
//!   is checked before anything is copied. repozo does the same through `getSize()`.
//! * Normal (not `--quick`) mode compares the source with the md5s of the `.dat` lines,
//!   chunk by chunk, instead of decompressing and re-hashing every repository file: the
//!   same decision for an intact repository, at half the reading; `backup --verify` checks
//!   the repository itself. A chain file that is missing gives a full backup.
//! * Two backups in the same second wait for the next second instead of failing.
//! * A restore removes its `.part` on failure (repozo leaves it), never replaces a file in
//!   use (the output's lock file, when there is one, must be free), and appends only the
//!   missing increments when the output already holds an earlier restore of the same chain
//!   (checked against the `.dat` md5s).
//! * A chain whose `.dat` does not describe its files (a file deleted from the repository)
//!   is refused by a restore instead of silently restoring a shorter file; only newest
//!   incrementals the `.dat` has no line for yet (a backup killed between its rename and its
//!   `.dat` line) are left out, with a warning, and the next backup removes them with the
//!   other leftovers of a killed backup (`remove_leftovers`; `docs/backup.md`, "Interrupted
//!   backups and restores"). A full backup writes its `.dat` before its rename.
//! * An incremental restore appends under `OUTPUT.part` (renamed there and back), so a kill
//!   never leaves a partial file under the output's name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::blobs;
use super::copy::{self, CopyError};
use super::repo::{self, BackupFile, DatLine, Repo, hex};
use super::{BackupError, Result, io_err};
use crate::storage::blob::BlobDir;
use crate::storage::format::{TXN_HDR_LEN, TxnHeader};
use crate::storage::lock::LockFile;
use crate::storage::{FileStorage, StorageError, Tid};

/// Where a long step reports how far it is (a progress bar at the command edge).
pub trait Progress: Sync {
    /// A new step, `total` units (bytes or files) long.
    fn start(&self, what: &str, total: u64);
    /// Units done in the current step.
    fn set(&self, done: u64);
    /// The step is over.
    fn finish(&self);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

// ---------------------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------------------

pub struct BackupOptions<'a> {
    pub source: &'a Path,
    pub repository: &'a Path,
    pub full: bool,
    pub quick: bool,
    /// zlib level of gzip output; `None` writes plain files.
    pub gzip: Option<u32>,
    pub kill_old_on_full: bool,
    /// Keep only the newest N full chains.
    pub keep: Option<usize>,
    pub blob_dir: Option<&'a Path>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
    /// Nothing new since the last backup.
    Unchanged,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub kind: BackupKind,
    /// Why a full backup was made (when it was not asked for or the first one).
    pub reason: Option<String>,
    pub source: PathBuf,
    pub repository: PathBuf,
    /// The new backup file's name (none when unchanged).
    pub file: Option<String>,
    pub start: u64,
    pub end: u64,
    /// Data.fs bytes backed up (uncompressed).
    pub bytes: u64,
    /// Bytes written for them (compressed size with gzip).
    pub written: u64,
    pub md5: Option<String>,
    pub blobs: Option<blobs::Saved>,
    /// Blob records of the range whose file is missing from the source's blob directory.
    pub missing_blobs: Vec<String>,
    /// Files and directories deleted by --kill-old-on-full / --keep.
    pub removed: Vec<String>,
    /// What an interrupted earlier backup left, removed before this one started.
    pub leftovers: Vec<String>,
    pub seconds: f64,
}

/// Deletes what a failed backup wrote, unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

enum Decision {
    Full(Option<String>),
    Incremental { start: u64, dat_stem: String },
    Unchanged,
}

pub fn backup(opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let started = Instant::now();
    let repo = Repo::open(opts.repository)?;
    let leftovers = remove_leftovers(&repo)?;
    let (src, fs, pos) = open_source(opts.source)?;
    let stem = fresh_stem(&repo)?;
    let chain = repo.chain(&stem)?;
    let decision = decide(&repo, &chain, &src, pos, opts, progress)?;
    let mut report = BackupReport {
        kind: BackupKind::Unchanged,
        reason: None,
        source: opts.source.to_path_buf(),
        repository: opts.repository.to_path_buf(),
        file: None,
        start: pos,
        end: pos,
        bytes: 0,
        written: 0,
        md5: None,
        blobs: None,
        missing_blobs: Vec::new(),
        removed: Vec::new(),
        leftovers,
        seconds: 0.0,
    };
    let (start, full, dat_stem) = match decision {
        Decision::Unchanged => {
            report.removed = prune(&repo, opts.keep, None)?;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        Decision::Full(reason) => {
            report.reason = reason;
            (0, true, stem.clone())
        }
        Decision::Incremental { start, dat_stem } => (start, false, dat_stem),
    };
    let file = BackupFile::new(&stem, full, opts.gzip.is_some());
    let final_path = repo.path(&file.name);
    let tmp_path = repo.path(&format!(".{}.tmp", file.name));
    let index_path = repo.index_path(&stem);
    let mut cleanup = Cleanup(vec![
        tmp_path.clone(),
        index_path.clone(),
        repo.path(&format!("{}.tmp", blobs::dir_name(&stem))),
    ]);

    // The index first, as repozo: it is what the restored file opens with.
    fs.save_index_to(&index_path)?;

    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .map_err(io_err(&tmp_path))?;
    progress.start(
        if full {
            "full backup"
        } else {
            "incremental backup"
        },
        pos - start,
    );
    let copied = copy::copy_range(&src, start, pos - start, &out, 0, opts.gzip, &|n| {
        progress.set(n)
    })
    .map_err(|e| match e {
        CopyError::Read(e) => io_err(opts.source)(e),
        CopyError::Write(e) => io_err(&tmp_path)(e),
    })?;
    progress.finish();
    out.sync_all().map_err(io_err(&tmp_path))?;
    drop(out);
    let md5 = copied.md5.map(|m| hex(&m)).unwrap_or_default();

    if let Some(blob_root) = opts.blob_dir {
        let source_blobs = BlobDir::open(blob_root, true)?;
        let first_tid = if start < pos {
            let mut tid = [0u8; 8];
            src.read_exact_at(&mut tid, start)
                .map_err(io_err(opts.source))?;
            Some(Tid(u64::from_be_bytes(tid)))
        } else {
            None
        };
        let (revs, missing) = if full || first_tid.is_some() {
            blobs::referenced(
                &fs,
                first_tid.filter(|_| !full).unwrap_or(Tid(0)),
                &source_blobs,
            )?
        } else {
            (Vec::new(), Vec::new())
        };
        report.missing_blobs = missing
            .iter()
            .map(|(o, t)| source_blobs.blob_path(*o, *t).display().to_string())
            .collect();
        let link_from = if full {
            blobs::complete_dirs(&repo)?
        } else {
            Vec::new()
        };
        progress.start("blobs", revs.len() as u64);
        let saved = blobs::save(&repo, &stem, &source_blobs, &revs, &link_from, &|n| {
            progress.set(n)
        })?;
        progress.finish();
        blobs::commit(&repo, &stem)?;
        cleanup.0.push(repo.path(&blobs::dir_name(&stem)));
        report.blobs = Some(saved);
    }

    // The commit, in the order that leaves no chain a kill could make wrong (see
    // `remove_leftovers`): a full backup's `.dat` before its file (a `.dat` without its file
    // belongs to no chain); an incremental's file before its `.dat` line (a file the `.dat`
    // does not describe yet is left out of restores and removed by the next backup).
    let line = DatLine {
        path: repo::dat_path_column(opts.repository, &file.name),
        start,
        end: pos,
        md5: md5.clone(),
    };
    let dat = repo.dat_path(&dat_stem);
    if full {
        cleanup.0.push(dat.clone());
        write_new(&dat, line.to_line().as_bytes())?;
        fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
    } else {
        fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
        cleanup.0.push(final_path.clone());
        append_line(&dat, &line)?;
    }
    sync_dir(&repo.dir);
    cleanup.0.clear();

    report.kind = if full {
        BackupKind::Full
    } else {
        BackupKind::Incremental
    };
    report.file = Some(file.name);
    report.start = start;
    report.bytes = copied.bytes;
    report.written = copied.written;
    report.md5 = Some(md5);
    let kill_before = (full && opts.kill_old_on_full).then_some(stem.as_str());
    report.removed = prune(&repo, opts.keep, kill_before)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The source file, a read-only storage on it, and its committed end; both opened on the
/// same file (a pack renames a new file into place).
fn open_source(path: &Path) -> Result<(File, FileStorage, u64)> {
    for _ in 0..3 {
        let src = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                BackupError::Input(format!("{}: no such file", path.display()))
            }
            _ => io_err(path)(e),
        })?;
        let fs = FileStorage::open_read_only(path)?;
        let (a, b) = (
            src.metadata().map_err(io_err(path))?,
            fs::metadata(path).map_err(io_err(path))?,
        );
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            continue;
        }
        let pos = fs.size();
        check_tail(&src, path, pos)?;
        return Ok((src, fs, pos));
    }
    Err(BackupError::Input(format!(
        "{} keeps being replaced (a pack running?); try again later",
        path.display()
    )))
}

/// The transaction that ends at `pos` must be a whole committed one: its length at
/// `pos - 8` leads to a header with the same length and a committed status.
fn check_tail(src: &File, path: &Path, pos: u64) -> Result<()> {
    if pos <= 4 {
        return Ok(());
    }
    let bad = |why: String| {
        BackupError::Damaged(format!(
            "{}: the transaction ending at {pos} does not check out ({why}); run `zodbctl verify`",
            path.display()
        ))
    };
    let mut len = [0u8; 8];
    src.read_exact_at(&mut len, pos - 8).map_err(io_err(path))?;
    let tlen = u64::from_be_bytes(len);
    let tpos = pos
        .checked_sub(8 + tlen)
        .filter(|t| *t >= 4 && tlen >= TXN_HDR_LEN)
        .ok_or_else(|| bad(format!("bad length {tlen}")))?;
    let mut hb = [0u8; TXN_HDR_LEN as usize];
    src.read_exact_at(&mut hb, tpos).map_err(io_err(path))?;
    let h = TxnHeader::decode(&hb);
    if h.tlen != tlen {
        return Err(bad(format!("header at {tpos} says length {}", h.tlen)));
    }
    if !matches!(h.status.byte(), b' ' | b'p' | b'u') {
        return Err(bad(format!(
            "status {:?} at {tpos}",
            h.status.byte() as char
        )));
    }
    Ok(())
}

/// A stem no file of the repository has yet: two backups within one second wait for the
/// next second (repozo fails with "Cannot overwrite existing file").
fn fresh_stem(repo: &Repo) -> Result<String> {
    let taken = |stem: &str| -> Result<bool> {
        let files = repo.files()?;
        Ok(files.iter().any(|f| f.stem.as_str() >= stem)
            || repo.index_path(stem).exists()
            || repo.dat_path(stem).exists())
    };
    for _ in 0..30 {
        let stem = repo::stem_at(repo::unix_now());
        if !taken(&stem)? {
            return Ok(stem);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(BackupError::Input(format!(
        "{}: a backup file dated now or later exists (is the clock right?)",
        repo.dir.display()
    )))
}

fn decide(
    repo: &Repo,
    chain: &[BackupFile],
    src: &File,
    pos: u64,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<Decision> {
    if opts.full {
        return Ok(Decision::Full(None));
    }
    let Some(first) = chain.first() else {
        return Ok(Decision::Full(None));
    };
    if !first.full {
        return Ok(Decision::Full(Some(format!(
            "the newest chain has no full backup (before {})",
            first.name
        ))));
    }
    let lines = match repo.chain_lines(chain) {
        Ok(Some(lines)) => lines,
        Ok(None) => {
            return Ok(Decision::Full(Some(format!(
                "{} is missing",
                repo.dat_path(&first.stem).display()
            ))));
        }
        Err(e) => return Ok(Decision::Full(Some(e.to_string()))),
    };
    let dat_stem = first.stem.clone();
    let Some(last) = lines.last() else {
        return Ok(Decision::Full(Some(format!(
            "{} is empty",
            repo.dat_path(&first.stem).display()
        ))));
    };
    let packed = || {
        Decision::Full(Some(
            "the file changed, possibly because of a pack".to_owned(),
        ))
    };
    if pos < last.end {
        return Ok(Decision::Full(Some(
            "the file shrunk, possibly because of a pack".to_owned(),
        )));
    }
    let checked: &[DatLine] = if opts.quick {
        std::slice::from_ref(last)
    } else {
        for f in chain {
            let p = repo.path(&f.name);
            if !p.is_file() {
                return Ok(Decision::Full(Some(format!("{} is missing", p.display()))));
            }
        }
        &lines
    };
    let total: u64 = checked.iter().map(DatLine::len).sum();
    progress.start("comparing with the last backup", total);
    let mut done = 0;
    for line in checked {
        let sum = copy::md5_range(src, line.start, line.len(), &|n| progress.set(done + n))
            .map_err(io_err(opts.source))?;
        done += line.len();
        if hex(&sum) != line.md5 {
            progress.finish();
            return Ok(packed());
        }
    }
    progress.finish();
    if pos == last.end {
        Ok(Decision::Unchanged)
    } else {
        Ok(Decision::Incremental {
            start: last.end,
            dat_stem,
        })
    }
}

/// What a killed backup can leave, removed before the next one starts; their names (for a
/// log line). A kill can stop a backup at any point of its sequence (`.index`, `.<name>.tmp`,
/// `<stem>.blobs.tmp` → `<stem>.blobs`, for a full backup `<stem>.dat`, the rename of the
/// backup file into place, for an incremental the `.dat` line), so:
/// * our temporaries: `.<name>.tmp`, `<stem>.blobs.tmp`, `<stem>.dat.tmp`,
///   `<stem>.index.index_tmp`, and `last-backup.json.tmp`;
/// * a `<stem>.index`, `<stem>.dat` or `<stem>.blobs` whose backup file does not exist
///   (the kill came before the rename);
/// * incrementals at the end of the newest chain that its `.dat` does not describe (the
///   kill came between the rename and the `.dat` line): complete, but never committed;
///   left in place they would make repozo's next backup continue from the `.dat`'s end and
///   its restore concatenate the same bytes twice.
fn remove_leftovers(repo: &Repo) -> Result<Vec<String>> {
    let files = repo.files()?;
    let has_file = |stem: &str| files.iter().any(|f| f.stem == stem);
    let mut doomed: Vec<String> = Vec::new();
    let entries = fs::read_dir(&repo.dir).map_err(io_err(&repo.dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let temporary = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .is_some_and(|n| BackupFile::parse(n).is_some())
            || [".blobs.tmp", ".dat.tmp", ".index.index_tmp"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(repo::is_stem));
        let orphan = [".index", ".dat", ".blobs"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|stem| repo::is_stem(stem) && !has_file(stem))
        });
        let record = name == format!("{RECORD}.tmp");
        if temporary || orphan || record {
            doomed.push(name);
        }
    }
    let (_, tail) = repo.split_uncommitted(repo.chain(&repo::stem_at(repo::unix_now()))?)?;
    for f in &tail {
        for name in [
            f.name.clone(),
            format!("{}.index", f.stem),
            blobs::dir_name(&f.stem),
        ] {
            if repo.path(&name).exists() {
                doomed.push(name);
            }
        }
    }
    doomed.sort();
    for name in &doomed {
        let p = repo.path(name);
        if p.is_dir() {
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
        } else {
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    if !doomed.is_empty() {
        sync_dir(&repo.dir);
    }
    Ok(doomed)
}

/// `-k` (delete everything older than the full backup `kill_before`) and `--keep N` (keep
/// the newest N full chains): backup files, their `.dat`, `.index` and blob directories.
fn prune(repo: &Repo, keep: Option<usize>, kill_before: Option<&str>) -> Result<Vec<String>> {
    let files = repo.files()?;
    let mut cutoff: Option<String> = kill_before.map(str::to_owned);
    if let Some(n) = keep.filter(|n| *n > 0) {
        let fulls: Vec<&BackupFile> = files.iter().filter(|f| f.full).collect();
        if fulls.len() > n {
            let keep_from = fulls[fulls.len() - n].stem.clone();
            cutoff = Some(match cutoff {
                Some(c) if c > keep_from => c,
                _ => keep_from,
            });
        }
    }
    let Some(cutoff) = cutoff else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for f in files.iter().filter(|f| f.stem < cutoff) {
        for name in [
            format!("{}.dat", f.stem),
            format!("{}.index", f.stem),
            f.name.clone(),
        ] {
            let p = repo.path(&name);
            if p.exists() {
                fs::remove_file(&p).map_err(io_err(&p))?;
                removed.push(name);
            }
        }
        let b = repo.path(&blobs::dir_name(&f.stem));
        if b.is_dir() {
            fs::remove_dir_all(&b).map_err(io_err(&b))?;
            removed.push(blobs::dir_name(&f.stem));
        }
    }
    Ok(removed)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn append_line(path: &Path, line: &DatLine) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(line.to_line().as_bytes())
        .map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

pub enum Output<'a> {
    File(&'a Path),
    Stdout,
}

pub struct RestoreOptions<'a> {
    pub repository: &'a Path,
    pub output: Output<'a>,
    pub date: Option<&'a str>,
    pub verify: bool,
    pub blob_dir: Option<&'a Path>,
    /// Reuse an earlier restore of the same chain at the output when it checks out.
    pub incremental: bool,
    /// Take the output's lock file even when it does not exist yet (an instance's Data.fs).
    pub lock: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreKind {
    Full,
    Incremental,
    /// The output already was this restore point.
    Unchanged,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub kind: RestoreKind,
    pub reason: Option<String>,
    pub repository: PathBuf,
    pub output: Option<PathBuf>,
    /// The chain's files, oldest first.
    pub chain: Vec<String>,
    /// Of those, the files whose bytes were written.
    pub files_written: Vec<String>,
    /// Size of the restored Data.fs.
    pub size: u64,
    /// Bytes written to it by this restore.
    pub bytes_written: u64,
    /// Bytes found already in place (incremental restore).
    pub bytes_reused: u64,
    pub verified: bool,
    pub index: bool,
    pub blobs: Option<blobs::Restored>,
    /// Newest backup files left out because the chain's `.dat` does not describe them (an
    /// interrupted backup's; the next backup removes them).
    pub uncommitted: Vec<String>,
    pub seconds: f64,
}

pub fn restore(opts: &RestoreOptions, progress: &dyn Progress) -> Result<RestoreReport> {
    let started = Instant::now();
    let repo = Repo::open(opts.repository)?;
    if let Some(d) = opts.date {
        repo::check_date(d)?;
    }
    let when = opts
        .date
        .map_or_else(|| repo::stem_at(repo::unix_now()), str::to_owned);
    // A newest incremental its `.dat` does not describe yet (a backup killed just after
    // renaming it into place) is not part of the restore point: left out, with a warning.
    let (chain, uncommitted) = repo.split_uncommitted(repo.chain(&when)?)?;
    let Some(first) = chain.first() else {
        return Err(BackupError::Input(match opts.date {
            Some(d) => format!("No files in repository before {d}: {}", repo.dir.display()),
            None => format!("No files in repository: {}", repo.dir.display()),
        }));
    };
    if !first.full {
        return Err(BackupError::Damaged(format!(
            "{}: the chain of {} has no full backup (it was deleted?)",
            repo.dir.display(),
            first.name
        )));
    }
    let lines = repo.chain_lines(&chain)?;
    if opts.verify && lines.is_none() {
        return Err(BackupError::Damaged(format!(
            "{} is missing: nothing to verify against",
            repo.dat_path(&first.stem).display()
        )));
    }
    let mut report = RestoreReport {
        kind: RestoreKind::Full,
        reason: None,
        repository: opts.repository.to_path_buf(),
        output: None,
        chain: chain.iter().map(|f| f.name.clone()).collect(),
        files_written: Vec::new(),
        size: 0,
        bytes_written: 0,
        bytes_reused: 0,
        verified: opts.verify,
        index: false,
        blobs: None,
        uncommitted: uncommitted.iter().map(|f| f.name.clone()).collect(),
        seconds: 0.0,
    };
    let out_path = match opts.output {
        Output::Stdout => {
            report.size = restore_to_stdout(&repo, &chain, lines.as_deref(), opts.verify)?;
            report.bytes_written = report.size;
            report.files_written = report.chain.clone();
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        Output::File(p) => p,
    };
    report.output = Some(out_path.to_path_buf());
    let lock_path = suffixed(out_path, ".lock");
    let _lock = if opts.lock || lock_path.exists() {
        Some(LockFile::acquire(&lock_path).map_err(|e| match e {
            StorageError::Locked { .. } => BackupError::Input(format!(
                "{} is in use (its lock {} is held): stop the server first",
                out_path.display(),
                lock_path.display()
            )),
            other => other.into(),
        })?)
    } else {
        None
    };

    // An earlier restore of this chain at the output (or, when a restore was killed while
    // appending to it, at OUTPUT.part): how much of it can stay.
    let part = suffixed(out_path, ".part");
    let (reuse, from_part) = match (&lines, opts.incremental) {
        (Some(lines), true) if out_path.exists() => {
            (reusable_prefix(out_path, lines, progress)?, false)
        }
        (Some(lines), true) if part.is_file() => (reusable_prefix(&part, lines, progress)?, true),
        _ => (Reuse::None(None), false),
    };
    let index_src = repo.index_path(&chain[chain.len() - 1].stem);
    let out_index = suffixed(out_path, ".index");
    let stems: Vec<String> = chain.iter().map(|f| f.stem.clone()).collect();
    // A full restore builds the blob directory beside the old one and swaps it in right
    // after the Data.fs; the other restores add the new revisions first (files the old
    // Data.fs does not reference), so a Data.fs never sits beside a blob directory that
    // lacks its revisions for longer than two renames.
    let mut blob_swap = None;
    match reuse {
        Reuse::Prefix { files, end, size } => {
            let unchanged = files == chain.len() && size == end;
            report.kind = if unchanged {
                RestoreKind::Unchanged
            } else {
                RestoreKind::Incremental
            };
            report.bytes_reused = end;
            if let Some(blob_dir) = opts.blob_dir {
                progress.start("blobs", 0);
                report.blobs = Some(blobs::restore(&repo, &stems, blob_dir, &|n| {
                    progress.set(n)
                })?);
                progress.finish();
                // What a full restore killed before its blob swap left.
                for p in [suffixed(blob_dir, ".part"), suffixed(blob_dir, ".old")] {
                    if p.exists() {
                        fs::remove_dir_all(&p).map_err(io_err(&p))?;
                    }
                }
            }
            // Appending keeps an index valid, but a cut does not; it is replaced below.
            remove_if_exists(&out_index)?;
            if !from_part {
                // A killed full restore's (the output is what counts).
                remove_if_exists(&part)?;
            }
            if !unchanged || from_part {
                // The appending happens in OUTPUT.part (the earlier restore renamed there):
                // a kill leaves no partial file under the output's name, and the next
                // restore continues from the `.part`.
                if !from_part {
                    fs::rename(out_path, &part).map_err(io_err(&part))?;
                }
                let out = OpenOptions::new()
                    .write(true)
                    .open(&part)
                    .map_err(io_err(&part))?;
                let back = || {
                    // Back to the state that checked out: a valid earlier restore.
                    let _ = out.set_len(end);
                    if !from_part {
                        let _ = fs::rename(&part, out_path);
                    }
                };
                if size != end
                    && let Err(e) = out.set_len(end)
                {
                    back();
                    return Err(io_err(&part)(e));
                }
                let result = concat(
                    &repo,
                    &chain[files..],
                    lines.as_deref().map(|l| &l[files..]),
                    &out,
                    &part,
                    end,
                    opts.verify,
                    progress,
                )
                .and_then(|n| {
                    out.sync_all().map_err(io_err(&part))?;
                    Ok(n)
                });
                match result {
                    Ok(n) => {
                        report.bytes_written = n;
                        report.files_written =
                            chain[files..].iter().map(|f| f.name.clone()).collect();
                    }
                    Err(e) => {
                        back();
                        return Err(e);
                    }
                }
                drop(out);
                fs::rename(&part, out_path).map_err(io_err(out_path))?;
            }
        }
        Reuse::None(reason) => {
            report.reason = reason;
            let out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&part)
                .map_err(io_err(&part))?;
            let mut cleanup = Cleanup(vec![part.clone()]);
            let n = concat(
                &repo,
                &chain,
                lines.as_deref(),
                &out,
                &part,
                0,
                opts.verify,
                progress,
            )?;
            out.sync_all().map_err(io_err(&part))?;
            drop(out);
            if let Some(blob_dir) = opts.blob_dir {
                let blob_part = suffixed(blob_dir, ".part");
                let blob_old = suffixed(blob_dir, ".old");
                for p in [&blob_part, &blob_old] {
                    if p.exists() {
                        fs::remove_dir_all(p).map_err(io_err(p))?;
                    }
                }
                cleanup.0.push(blob_part.clone());
                progress.start("blobs", 0);
                report.blobs = Some(blobs::restore(&repo, &stems, &blob_part, &|n| {
                    progress.set(n)
                })?);
                progress.finish();
                blob_swap = Some((blob_dir, blob_part, blob_old));
            }
            // No moment where the new file sits beside the old index.
            remove_if_exists(&out_index)?;
            fs::rename(&part, out_path).map_err(io_err(out_path))?;
            cleanup.0.clear();
            report.bytes_written = n;
            report.files_written = report.chain.clone();
        }
    }
    if let Some((blob_dir, blob_part, blob_old)) = blob_swap {
        if blob_dir.exists() {
            fs::rename(blob_dir, &blob_old).map_err(io_err(&blob_old))?;
        }
        fs::rename(&blob_part, blob_dir).map_err(io_err(blob_dir))?;
        if blob_old.exists() {
            fs::remove_dir_all(&blob_old).map_err(io_err(&blob_old))?;
        }
    }
    if index_src.is_file() {
        let tmp = suffixed(&out_index, ".index_tmp");
        fs::copy(&index_src, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &out_index).map_err(io_err(&out_index))?;
        report.index = true;
    }
    if let Some(parent) = out_path.parent() {
        sync_dir(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        });
    }
    report.size = fs::metadata(out_path).map_err(io_err(out_path))?.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

enum Reuse {
    /// Rewrite everything (why, when there was something to reuse).
    None(Option<String>),
    /// The output's first `files` chain files check out, ending at `end`; it is `size` long.
    Prefix { files: usize, end: u64, size: u64 },
}

/// How much of an existing output is an earlier restore of this chain, checked against
/// the `.dat` md5s chunk by chunk.
fn reusable_prefix(out: &Path, lines: &[DatLine], progress: &dyn Progress) -> Result<Reuse> {
    let file = match File::open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Reuse::None(None)),
        Err(e) => return Err(io_err(out)(e)),
    };
    let size = file.metadata().map_err(io_err(out))?.len();
    let files = lines.iter().take_while(|l| l.end <= size).count();
    if files == 0 {
        return Ok(Reuse::None(Some(format!(
            "{} is not an earlier restore of this chain (too short)",
            out.display()
        ))));
    }
    let end = lines[files - 1].end;
    progress.start("checking the earlier restore", end);
    for line in &lines[..files] {
        let sum = copy::md5_range(&file, line.start, line.len(), &|n| {
            progress.set(line.start + n)
        })
        .map_err(io_err(out))?;
        if hex(&sum) != line.md5 {
            progress.finish();
            return Ok(Reuse::None(Some(format!(
                "{} differs from the backup in bytes {}..{}: restoring in full",
                out.display(),
                line.start,
                line.end
            ))));
        }
    }
    progress.finish();
    Ok(Reuse::Prefix { files, end, size })
}

/// Write the chain files (decompressed) to `out` from `at`, each checked against its
/// `.dat` line: the size always, the md5 with `verify`. The bytes written.
#[allow(clippy::too_many_arguments)]
fn concat(
    repo: &Repo,
    files: &[BackupFile],
    lines: Option<&[DatLine]>,
    out: &File,
    out_path: &Path,
    at: u64,
    verify: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let total = lines.map_or(0, |l| l.iter().map(DatLine::len).sum());
    progress.start(
        if verify {
            "restoring, verifying"
        } else {
            "restoring"
        },
        total,
    );
    let mut pos = at;
    let mut done = 0;
    for (i, f) in files.iter().enumerate() {
        let path = repo.path(&f.name);
        let src = File::open(&path).map_err(io_err(&path))?;
        let copied =
            copy::restore_file(&src, f.gzip, verify, out, pos, &|n| progress.set(done + n))
                .map_err(|e| match e {
                    CopyError::Read(e) => io_err(&path)(e),
                    CopyError::Write(e) => io_err(out_path)(e),
                })?;
        if let Some(line) = lines.and_then(|l| l.get(i)) {
            if copied.bytes != line.len() {
                return Err(BackupError::Damaged(format!(
                    "{} is {} bytes{}, should be {} bytes",
                    path.display(),
                    copied.bytes,
                    if f.gzip { " (when uncompressed)" } else { "" },
                    line.len()
                )));
            }
            if let Some(sum) = copied.md5.map(|m| hex(&m))
                && sum != line.md5
            {
                return Err(BackupError::Damaged(format!(
                    "{} has checksum {sum}{} instead of {}",
                    path.display(),
                    if f.gzip { " (when uncompressed)" } else { "" },
                    line.md5
                )));
            }
        }
        pos += copied.bytes;
        done += copied.bytes;
    }
    progress.finish();
    Ok(pos - at)
}

fn restore_to_stdout(
    repo: &Repo,
    chain: &[BackupFile],
    lines: Option<&[DatLine]>,
    verify: bool,
) -> Result<u64> {
    use md5::{Digest, Md5};
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut total = 0;
    for (i, f) in chain.iter().enumerate() {
        let path = repo.path(&f.name);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut reader: Box<dyn io::Read> = if f.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)))
        } else {
            Box::new(file)
        };
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let got = reader.read(&mut buf).map_err(io_err(&path))?;
            if got == 0 {
                break;
            }
            if verify {
                md5.update(&buf[..got]);
            }
            out.write_all(&buf[..got])
                .map_err(io_err(Path::new("<stdout>")))?;
            n += got as u64;
        }
        if let Some(line) = lines.and_then(|l| l.get(i)) {
            if n != line.len() {
                return Err(BackupError::Damaged(format!(
                    "{} is {n} bytes, should be {} bytes",
                    path.display(),
                    line.len()
                )));
            }
            let sum = hex(&md5.finalize_reset().into());
            if verify && sum != line.md5 {
                return Err(BackupError::Damaged(format!(
                    "{} has checksum {sum} instead of {}",
                    path.display(),
                    line.md5
                )));
            }
        }
        total += n;
    }
    out.flush().map_err(io_err(Path::new("<stdout>")))?;
    Ok(total)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(p)(e)),
    }
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// repozo `-V` (with `quick`: sizes only), plus the blob parts: one message per problem.
pub fn verify(repository: &Path, quick: bool, progress: &dyn Progress) -> Result<Vec<String>> {
    let repo = Repo::open(repository)?;
    let chain = repo.chain(&repo::stem_at(repo::unix_now()))?;
    let Some(first) = chain.first() else {
        return Err(BackupError::Input(format!(
            "No files in repository: {}",
            repo.dir.display()
        )));
    };
    let dat = repo.dat_path(&first.stem);
    let Some(lines) = repo.read_dat(&first.stem)? else {
        return Ok(vec![format!("{} is missing", dat.display())]);
    };
    let mut problems = Vec::new();
    let total = lines.iter().map(DatLine::len).sum();
    progress.start(if quick { "checking sizes" } else { "verifying" }, total);
    let mut done = 0;
    for line in &lines {
        let path = repo.path(line.basename());
        let gzip = line.basename().ends_with('z');
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                problems.push(format!("{} is missing", path.display()));
                done += line.len();
                continue;
            }
        };
        let when_uncompressed = if gzip { " (when uncompressed)" } else { "" };
        let measured = if quick && !gzip {
            file.metadata().map(|m| (m.len(), None))
        } else {
            copy::md5_file(&file, gzip, &|n| progress.set(done + n)).map(|(n, m)| (n, Some(m)))
        };
        match measured {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok((size, sum)) => {
                if size != line.len() {
                    problems.push(format!(
                        "{} is {size} bytes{when_uncompressed}, should be {} bytes",
                        path.display(),
                        line.len()
                    ));
                } else if let Some(sum) = sum.filter(|_| !quick).map(|m| hex(&m))
                    && sum != line.md5
                {
                    problems.push(format!(
                        "{} has checksum {sum}{when_uncompressed} instead of {}",
                        path.display(),
                        line.md5
                    ));
                }
            }
        }
        done += line.len();
        progress.set(done);
        if let Some(f) = BackupFile::parse(line.basename()) {
            problems.extend(blobs::verify(&repo, &f.stem));
        }
    }
    progress.finish();
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// The last-backup record
// ---------------------------------------------------------------------------------------------

/// Name of the record of the last successful backup inside the repository.
pub const RECORD: &str = "last-backup.json";

/// The record a later `zodbctl check` reads (format in `docs/backup.md`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Record {
    pub version: u32,
    /// When the backup finished, seconds since the epoch (UTC); `finished`, as in the pack
    /// record, so `zodbctl check` and `top` read both alike (`metrics::records`).
    pub finished: u64,
    /// The same as `YYYY-MM-DDTHH:MM:SSZ`.
    pub time_utc: String,
    pub kind: String,
    pub storage: Option<String>,
    pub source: PathBuf,
    pub repository: PathBuf,
    pub file: Option<String>,
    /// The Data.fs position the repository now covers.
    pub end: u64,
    pub bytes: u64,
    pub blob_files: u64,
    pub seconds: f64,
}

impl Record {
    pub fn of(report: &BackupReport, storage: Option<&str>) -> Record {
        let now = repo::unix_now();
        let stem = repo::stem_at(now);
        Record {
            version: 1,
            finished: now,
            time_utc: format!(
                "{}-{}-{}T{}:{}:{}Z",
                &stem[0..4],
                &stem[5..7],
                &stem[8..10],
                &stem[11..13],
                &stem[14..16],
                &stem[17..19]
            ),
            kind: match report.kind {
                BackupKind::Full => "full",
                BackupKind::Incremental => "incremental",
                BackupKind::Unchanged => "unchanged",
            }
            .to_owned(),
            storage: storage.map(str::to_owned),
            source: report.source.clone(),
            repository: report.repository.clone(),
            file: report.file.clone(),
            end: report.end,
            bytes: report.bytes,
            blob_files: report.blobs.as_ref().map_or(0, |b| b.files),
            seconds: report.seconds,
        }
    }

    /// Write it (through a temporary file) to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        write_new(path, text.as_bytes())
    }
}
