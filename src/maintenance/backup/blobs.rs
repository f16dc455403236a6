//! The blob part of a backup: our own layout beside repozo's files (see `docs/backup.md`).
//!
//! ```text
//! <repo>/<stem>.blobs/            the blob revisions written by the transactions of the
//!                                 backup file <stem>.(delta)fs(z), i.e. of its range [start, end)
//!     .layout                     "bushy"
//!     .manifest                   one line per revision: "<oid 16 hex> <tid 16 hex> <size>\n",
//!                                 written last (through .manifest.tmp): its presence marks
//!                                 the directory complete
//!     0x00/…/0x07/0x03f1….blob    the revision files, ZODB's bushy layout, read-only
//! ```
//!
//! A blob revision is one file per (oid, tid), never changed once committed, and the
//! transaction that writes a blob record (a store, or an undo copying the file to its own
//! tid) has that tid. So the revisions a range of Data.fs references are exactly the files
//! `<oid>/<tid>.blob` of the data records in that range: an incremental backup holds only
//! the new ones, and a restore of a chain takes the union of its directories. A full
//! backup needs every revision again; those an earlier backup in the repository already
//! holds are hard-linked from there, not copied. The directory is built as
//! `<stem>.blobs.tmp` and renamed before the Data.fs part is renamed into place, so a
//! backup file never exists without its blobs. repozo ignores these directories (they do
//! not match its file pattern), and its `-k` leaves them; ours removes them with their
//! backup file.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::repo::Repo;
use super::{BackupError, Result, io_err};
use crate::storage::blob::{BlobDir, oid_repr};
use crate::storage::{FileStorage, Oid, Tid};

pub const MANIFEST: &str = ".manifest";

/// One revision in a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub oid: u64,
    pub tid: u64,
    pub size: u64,
}

pub fn dir_name(stem: &str) -> String {
    format!("{stem}.blobs")
}

/// A revision's path inside a bushy tree.
pub fn bushy_rel(oid: u64, tid: u64) -> PathBuf {
    let mut p = PathBuf::new();
    for b in oid.to_be_bytes() {
        p.push(format!("0x{b:02x}"));
    }
    p.push(format!("{}.blob", oid_repr(tid)));
    p
}

/// Whether a record's state is a `ZODB.blob.Blob`: its class pickle, which comes first and
/// is short, names the class. (Other records mention the class too, in their persistent
/// references, but only later in their state.)
fn looks_like_blob(data: &[u8]) -> bool {
    const CLASS: &[u8] = b"ZODB.blob\nBlob";
    data[..data.len().min(40)]
        .windows(CLASS.len())
        .any(|w| w == CLASS)
}

/// Revisions found (oid, tid, size) and blob records whose file is missing (oid, tid).
pub type Referenced = (Vec<(Oid, Tid, u64)>, Vec<(Oid, Tid)>);

/// The blob revisions the transactions in `[start, end)` of `fs` reference: every data
/// record whose revision file exists in `source` (a Blob subclass is found by its file),
/// plus the records that are blobs by their class but whose file is missing (returned
/// apart, to be reported).
pub fn referenced(fs: &FileStorage, first_tid: Tid, source: &BlobDir) -> Result<Referenced> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for txn in fs.iter_transactions(Some(first_tid), None)? {
        let txn = txn?;
        for rec in fs.transaction_records(&txn)? {
            let rec = rec?;
            let Some(data) = rec.data.as_deref() else {
                continue;
            };
            let path = source.blob_path(rec.oid, txn.tid);
            match fs::metadata(&path) {
                Ok(m) => found.push((rec.oid, txn.tid, m.len())),
                Err(_) if looks_like_blob(data) => missing.push((rec.oid, txn.tid)),
                Err(_) => {}
            }
        }
    }
    Ok((found, missing))
}

/// What the blob part of one backup did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Saved {
    pub files: u64,
    pub copied: u64,
    pub linked: u64,
    pub bytes_copied: u64,
}

/// Write `<repo>/<stem>.blobs.tmp` holding `revs` (copied from `source`, or hard-linked
/// from an earlier backup's directory in `link_from`) and its manifest.
pub fn save(
    repo: &Repo,
    stem: &str,
    source: &BlobDir,
    revs: &[(Oid, Tid, u64)],
    link_from: &[PathBuf],
    progress: &dyn Fn(u64),
) -> Result<Saved> {
    let tmp = repo.path(&format!("{}.tmp", dir_name(stem)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let layout = tmp.join(".layout");
    fs::write(&layout, "bushy").map_err(io_err(&layout))?;
    let mut saved = Saved::default();
    let mut manifest = String::new();
    for (oid, tid, size) in revs {
        let rel = bushy_rel(oid.0, tid.0);
        let dst = tmp.join(&rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let linked = link_from.iter().any(|dir| {
            let candidate = dir.join(&rel);
            fs::metadata(&candidate).is_ok_and(|m| m.len() == *size)
                && fs::hard_link(&candidate, &dst).is_ok()
        });
        if linked {
            saved.linked += 1;
        } else {
            let src = source.blob_path(*oid, *tid);
            copy_read_only(&src, &dst)?;
            saved.copied += 1;
            saved.bytes_copied += size;
        }
        saved.files += 1;
        progress(saved.files);
        manifest.push_str(&format!("{:016x} {:016x} {size}\n", oid.0, tid.0));
    }
    write_atomically(&tmp.join(MANIFEST), manifest.as_bytes())?;
    Ok(saved)
}

/// Rename the finished `<stem>.blobs.tmp` into place.
pub fn commit(repo: &Repo, stem: &str) -> Result<()> {
    let tmp = repo.path(&format!("{}.tmp", dir_name(stem)));
    let dst = repo.path(&dir_name(stem));
    fs::rename(&tmp, &dst).map_err(io_err(&dst))
}

/// Every complete blob directory of the repository, newest first (sources of hard links).
pub fn complete_dirs(repo: &Repo) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(&repo.dir).map_err(io_err(&repo.dir))? {
        let entry = entry.map_err(io_err(&repo.dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".blobs") && entry.path().join(MANIFEST).is_file() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    dirs.reverse();
    Ok(dirs)
}

/// The manifest of `<stem>.blobs`, `None` when the backup has no blob part.
pub fn read_manifest(repo: &Repo, stem: &str) -> Result<Option<Vec<Entry>>> {
    let dir = repo.path(&dir_name(stem));
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.exists() {
                return Err(BackupError::Damaged(format!(
                    "{} has no {MANIFEST}: the blob part of this backup is incomplete",
                    dir.display()
                )));
            }
            return Ok(None);
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        let parsed = (|| {
            let oid = u64::from_str_radix(it.next()?, 16).ok()?;
            let tid = u64::from_str_radix(it.next()?, 16).ok()?;
            let size = it.next()?.parse().ok()?;
            Some(Entry { oid, tid, size })
        })();
        match parsed {
            Some(e) => out.push(e),
            None => {
                return Err(BackupError::Damaged(format!(
                    "{}:{}: not a manifest line: {line:?}",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    Ok(Some(out))
}

/// Problems with the blob part of a backup: missing files, wrong sizes.
pub fn verify(repo: &Repo, stem: &str) -> Vec<String> {
    let entries = match read_manifest(repo, stem) {
        Ok(Some(e)) => e,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e.to_string()],
    };
    let dir = repo.path(&dir_name(stem));
    let mut problems = Vec::new();
    for e in entries {
        let path = dir.join(bushy_rel(e.oid, e.tid));
        match fs::metadata(&path) {
            Ok(m) if m.len() == e.size => {}
            Ok(m) => problems.push(format!(
                "{} is {} bytes, should be {} bytes",
                path.display(),
                m.len(),
                e.size
            )),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    problems
}

/// What a blob restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
    /// Files already present with the right size (incremental restore).
    pub kept: u64,
}

/// Put every revision of the chain's blob directories into `target` (created with a
/// `.layout` as ZODB does); files already there with the right size are kept.
pub fn restore(
    repo: &Repo,
    stems: &[String],
    target: &Path,
    progress: &dyn Fn(u64),
) -> Result<Restored> {
    let dir = BlobDir::open(target, false)?;
    let mut done = Restored::default();
    for stem in stems {
        let Some(entries) = read_manifest(repo, stem)? else {
            continue;
        };
        let from = repo.path(&dir_name(stem));
        for e in entries {
            let src = from.join(bushy_rel(e.oid, e.tid));
            let dst = dir.blob_path(Oid(e.oid), Tid(e.tid));
            if fs::metadata(&dst).is_ok_and(|m| m.len() == e.size) {
                done.kept += 1;
                continue;
            }
            match fs::metadata(&src) {
                Ok(m) if m.len() == e.size => {}
                Ok(m) => {
                    return Err(BackupError::Damaged(format!(
                        "{} is {} bytes, should be {} bytes",
                        src.display(),
                        m.len(),
                        e.size
                    )));
                }
                Err(_) => {
                    return Err(BackupError::Damaged(format!(
                        "{} is missing",
                        src.display()
                    )));
                }
            }
            if let Some(parent) = dst.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .create(parent)
                    .map_err(io_err(parent))?;
            }
            copy_read_only(&src, &dst)?;
            done.files += 1;
            done.bytes += e.size;
            progress(done.files);
        }
    }
    Ok(done)
}

/// Copy a blob file through a temporary name and make it read-only (ZODB's mode for
/// committed revisions).
fn copy_read_only(src: &Path, dst: &Path) -> Result<()> {
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    fs::copy(src, &tmp).map_err(|e| match fs::metadata(src) {
        Err(_) => io_err(src)(e),
        Ok(_) => io_err(&tmp)(e),
    })?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).map_err(io_err(&tmp))?;
    if fs::metadata(dst).is_ok() {
        // An earlier, damaged or partial copy: read-only files are still replaceable.
        fs::remove_file(dst).map_err(io_err(dst))?;
    }
    fs::rename(&tmp, dst).map_err(io_err(dst))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    io::Write::write_all(&mut &f, bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bushy_paths_match_zodb() {
        assert_eq!(
            bushy_rel(1, 0x040d27f3002726bb),
            PathBuf::from("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x040d27f3002726bb.blob")
        );
        assert_eq!(
            bushy_rel(0x0102, 5),
            PathBuf::from("0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x02/0x05.blob")
        );
    }
}
