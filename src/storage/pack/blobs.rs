//! Blob files of a pack (spec §10.5): the `.removed` list written while copying the
//! pre-pack region, processed after the swap.
//!
//! `<blob_dir>/.removed` holds one line per dropped blob revision, as Python writes it: 16
//! hex digits (an oid no longer reachable at all: its whole directory goes) or 32 (oid and
//! tid: one revision file goes). With `keep_old`, `<blob_dir>.old` becomes a complete
//! pre-pack tree: `.layout` and every remaining `.blob` file are hard-linked into it (an
//! existing one is replaced) and removed files are moved there; without it they are
//! deleted. Directories left empty are removed, then `.removed` itself.
//!
//! The list is only processed after the new `Data.fs` is in place: a crash before leaves
//! every blob file (the old `Data.fs` still needs them); a crash after leaves a `.removed`
//! that the next pack overwrites, and some garbage files, never a missing live one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::super::blob::BlobDir;
use super::super::types::{Oid, Tid};

/// The name of the removal list inside the blob directory.
pub const REMOVED: &str = ".removed";

/// Collects `.removed` lines while the pre-pack region is copied.
pub(crate) struct Removed {
    out: io::BufWriter<fs::File>,
    pub lines: u64,
}

impl Removed {
    pub fn create(blobs: &BlobDir) -> io::Result<Removed> {
        let f = fs::File::create(blobs.root().join(REMOVED))?;
        Ok(Removed {
            out: io::BufWriter::new(f),
            lines: 0,
        })
    }

    pub fn oid(&mut self, oid: Oid) -> io::Result<()> {
        self.lines += 1;
        writeln!(self.out, "{:016x}", oid.0)
    }

    pub fn revision(&mut self, oid: Oid, tid: Tid) -> io::Result<()> {
        self.lines += 1;
        writeln!(self.out, "{:016x}{:016x}", oid.0, tid.0)
    }

    pub fn finish(self) -> io::Result<()> {
        self.out
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    }
}

/// `<blob_dir>.old`.
pub fn old_dir(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".old");
    PathBuf::from(s)
}

/// Apply `.removed` (see the module documentation); returns the number of files removed.
///
/// `live` tells whether an oid has a current record in the packed file. Files are removed
/// after the commit lock is released, so a commit may have given a whole-oid line's oid a
/// new blob revision meanwhile (a client still holding an object the pack found
/// unreachable); such a directory is left whole, old revisions included: a superset, never
/// a lost blob.
pub(crate) fn apply(
    blobs: &BlobDir,
    keep_old: bool,
    live: &dyn Fn(Oid) -> bool,
) -> io::Result<u64> {
    let root = blobs.root();
    let list = root.join(REMOVED);
    let text = match fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let old = old_dir(root);
    if keep_old {
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        fs::create_dir_all(&old)?;
        let layout = root.join(".layout");
        if layout.exists() {
            fs::hard_link(&layout, old.join(".layout"))
                .or_else(|_| fs::copy(&layout, old.join(".layout")).map(|_| ()))?;
        }
    }
    let mut removed = 0u64;
    for line in text.split_whitespace() {
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        let target = match line.len() {
            16 => match parse(line) {
                Some(o) if live(Oid(o)) => continue,
                o => o.map(|o| blobs.oid_dir(Oid(o))),
            },
            32 => parse(&line[..16])
                .zip(parse(&line[16..]))
                .map(|(o, t)| blobs.blob_path(Oid(o), Tid(t))),
            _ => None,
        };
        let Some(path) = target else {
            tracing::warn!(target: "ZODB.FileStorage.pack",
                "{}: ignoring bad line {line:?}", list.display());
            continue;
        };
        if !path.exists() {
            continue;
        }
        removed += if path.is_dir() {
            count_blobs(&path)?
        } else {
            1
        };
        if keep_old {
            let dest = old.join(path.strip_prefix(root).unwrap_or(&path));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(&path, &dest)?;
        } else if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        remove_empty_parents(root, &path);
    }
    fs::remove_file(&list)?;
    if keep_old {
        link_tree(root, root, &old)?;
    }
    Ok(removed)
}

fn count_blobs(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += count_blobs(&e.path())?;
        } else if e.path().extension().is_some_and(|x| x == "blob") {
            n += 1;
        }
    }
    Ok(n)
}

/// Remove the directories above `path` that are now empty, up to (not including) `root`.
fn remove_empty_parents(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Hard-link every `.blob` file under `dir` into the same place under `old`.
fn link_tree(root: &Path, dir: &Path, old: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            if p.file_name().is_some_and(|n| n == "tmp") && dir == root {
                continue;
            }
            link_tree(root, &p, old)?;
        } else if p.extension().is_some_and(|x| x == "blob") {
            let dest = old.join(p.strip_prefix(root).unwrap_or(&p));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            if !dest.exists() {
                fs::hard_link(&p, &dest).or_else(|_| fs::copy(&p, &dest).map(|_| ()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oid listed whole in `.removed` that got a new revision after the pack's lock was
    /// released keeps its directory; one that did not loses it.
    #[test]
    fn a_whole_oid_line_spares_an_oid_that_is_live_again() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(&dir.path().join("blobs"), false).unwrap();
        let (live_oid, dead_oid) = (Oid(7), Oid(8));
        for oid in [live_oid, dead_oid] {
            let p = blobs.blob_path(oid, Tid(1));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"blob").unwrap();
        }
        fs::write(
            blobs.root().join(REMOVED),
            format!("{:016x}\n{:016x}\n", live_oid.0, dead_oid.0),
        )
        .unwrap();
        let n = apply(&blobs, false, &|oid| oid == live_oid).unwrap();
        assert_eq!(n, 1);
        assert!(blobs.blob_path(live_oid, Tid(1)).exists());
        assert!(!blobs.oid_dir(dead_oid).exists());
        assert!(!blobs.root().join(REMOVED).exists());
    }
}
