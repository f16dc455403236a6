//! The blob directory (spec §10): one file per (oid, tid) outside Data.fs.
//!
//! ```text
//! <blob_dir>/.layout                     "bushy" (or the deprecated "lawn")
//! <blob_dir>/tmp/                        uploads and other uncommitted files
//! <blob_dir>/0x00/…/0x01/<tid>.blob      bushy: one directory per oid byte, most significant first
//! <blob_dir>/0x01/<tid>.blob             lawn: one directory per oid (`oid_repr`)
//! ```
//!
//! File names are `oid_repr(tid) + ".blob"` (hex with leading zeros stripped, padded to an
//! even digit count). Committed files are made read-only, their read bits copied from the
//! directory, like ZODB's `set_not_writable`. Directories are created with mode 0700.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::types::{Oid, Tid};

/// How oids map to directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Bushy,
    Lawn,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bushy => "bushy",
            Layout::Lawn => "lawn",
        }
    }
}

/// An opened blob directory.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
    layout: Layout,
}

/// `ZODB.utils.oid_repr` of 8 bytes: `0x` + hex without leading zeros, even digit count.
pub fn oid_repr(v: u64) -> String {
    let hex = format!("{v:x}");
    if v == 0 {
        "0x00".to_string()
    } else if hex.len() % 2 == 1 {
        format!("0x0{hex}")
    } else {
        format!("0x{hex}")
    }
}

fn blob_err(path: &Path, msg: impl Into<String>) -> StorageError {
    StorageError::Blob {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn mkdir_0700(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl BlobDir {
    /// Open (creating unless `read_only`) a blob directory, choosing the layout as ZODB does:
    /// `.layout` if present; else bushy for a missing or empty directory; else lawn.
    pub fn open(root: &Path, read_only: bool) -> Result<BlobDir, StorageError> {
        let layout_file = root.join(".layout");
        let layout = match fs::read_to_string(&layout_file) {
            Ok(text) => match text.trim() {
                "bushy" => Layout::Bushy,
                "lawn" => Layout::Lawn,
                other => {
                    return Err(blob_err(
                        &layout_file,
                        format!("unknown blob directory layout {other:?}"),
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let has_entries = match fs::read_dir(root) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok())
                        .any(|e| !e.file_name().to_string_lossy().starts_with('.')),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(StorageError::io(root, None, e)),
                };
                let layout = if has_entries {
                    Layout::Lawn
                } else {
                    Layout::Bushy
                };
                if !read_only {
                    mkdir_0700(root).map_err(|e| StorageError::io(root, None, e))?;
                    fs::write(&layout_file, layout.name())
                        .map_err(|e| StorageError::io(&layout_file, None, e))?;
                }
                layout
            }
            Err(e) => return Err(StorageError::io(&layout_file, None, e)),
        };
        let dir = BlobDir {
            root: root.to_path_buf(),
            layout,
        };
        if !read_only {
            let tmp = dir.tmp_dir();
            mkdir_0700(&tmp).map_err(|e| StorageError::io(&tmp, None, e))?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Where uploads and other uncommitted blob files go (same file system as the blobs,
    /// so committing them is a rename).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The directory of an oid's revisions.
    pub fn oid_dir(&self, oid: Oid) -> PathBuf {
        match self.layout {
            Layout::Bushy => {
                let mut p = self.root.clone();
                for b in oid.to_bytes() {
                    p.push(format!("0x{b:02x}"));
                }
                p
            }
            Layout::Lawn => self.root.join(oid_repr(oid.0)),
        }
    }

    /// The file of one committed revision.
    pub fn blob_path(&self, oid: Oid, tid: Tid) -> PathBuf {
        self.oid_dir(oid).join(format!("{}.blob", oid_repr(tid.0)))
    }

    /// Move (or, across file systems, copy) `src` to the revision's final name and make it
    /// read-only. An existing file of that name (an orphan of a transaction that never
    /// committed) is replaced.
    pub fn commit_file(&self, oid: Oid, tid: Tid, src: &Path) -> Result<PathBuf, StorageError> {
        let dir = self.oid_dir(oid);
        mkdir_0700(&dir).map_err(|e| StorageError::io(&dir, None, e))?;
        let dst = self.blob_path(oid, tid);
        if fs::rename(src, &dst).is_err() {
            copy_replacing(src, &dst)?;
            fs::remove_file(src).map_err(|e| StorageError::io(src, None, e))?;
        }
        set_not_writable(&dst).map_err(|e| StorageError::io(&dst, None, e))?;
        Ok(dst)
    }

    /// Copy a committed revision to another tid (undo of a blob change, §10.4).
    pub fn copy_revision(&self, oid: Oid, from: Tid, to: Tid) -> Result<PathBuf, StorageError> {
        let src = self.blob_path(oid, from);
        let dir = self.oid_dir(oid);
        mkdir_0700(&dir).map_err(|e| StorageError::io(&dir, None, e))?;
        let dst = self.blob_path(oid, to);
        copy_replacing(&src, &dst)?;
        set_not_writable(&dst).map_err(|e| StorageError::io(&dst, None, e))?;
        Ok(dst)
    }

    /// Remove a revision file that belonged to an aborted transaction.
    pub fn remove_revision(&self, oid: Oid, tid: Tid) {
        let path = self.blob_path(oid, tid);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(target: "ZODB.FileStorage", "could not remove blob file {}: {e}", path.display());
        }
    }
}

fn copy_replacing(src: &Path, dst: &Path) -> Result<(), StorageError> {
    // The destination may be a read-only orphan; copy beside it and rename over it.
    let tmp = dst.with_extension("blob.tmp");
    let mut input = File::open(src).map_err(|e| StorageError::io(src, None, e))?;
    let mut output = File::create(&tmp).map_err(|e| StorageError::io(&tmp, None, e))?;
    io::copy(&mut input, &mut output).map_err(|e| StorageError::io(&tmp, None, e))?;
    output
        .sync_all()
        .map_err(|e| StorageError::io(&tmp, None, e))?;
    fs::rename(&tmp, dst).map_err(|e| StorageError::io(dst, None, e))
}

/// ZODB's `set_not_writable`: clear the write bits, add the directory's read bits.
fn set_not_writable(path: &Path) -> io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    let dir_mode = path
        .parent()
        .map(fs::metadata)
        .transpose()?
        .map_or(0, |m| m.permissions().mode());
    let new = (mode & !0o222) | (dir_mode & 0o444);
    fs::set_permissions(path, fs::Permissions::from_mode(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_zodb() {
        assert_eq!(oid_repr(0), "0x00");
        assert_eq!(oid_repr(1), "0x01");
        assert_eq!(oid_repr(0x100), "0x0100");
        assert_eq!(oid_repr(5), "0x05");
        assert_eq!(oid_repr(0x040d_27f3_0027_26bb), "0x040d27f3002726bb");
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(&dir.path().join("blobs"), false).unwrap();
        assert_eq!(blobs.layout(), Layout::Bushy);
        assert_eq!(
            fs::read_to_string(dir.path().join("blobs/.layout")).unwrap(),
            "bushy"
        );
        assert!(blobs.tmp_dir().is_dir());
        assert_eq!(
            blobs
                .blob_path(Oid(1), Tid(0x040d_27f3_0027_26bb))
                .strip_prefix(blobs.root())
                .unwrap(),
            Path::new("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x040d27f3002726bb.blob")
        );
    }

    #[test]
    fn commit_makes_files_read_only_and_replaces_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(&dir.path().join("b"), false).unwrap();
        for content in ["first", "second"] {
            let up = blobs.tmp_dir().join("upload");
            fs::write(&up, content).unwrap();
            let dst = blobs.commit_file(Oid(7), Tid(9), &up).unwrap();
            assert_eq!(fs::read_to_string(&dst).unwrap(), content);
            assert_eq!(fs::metadata(&dst).unwrap().permissions().mode() & 0o222, 0);
            assert!(!up.exists());
        }
        let copy = blobs.copy_revision(Oid(7), Tid(9), Tid(10)).unwrap();
        assert_eq!(fs::read_to_string(copy).unwrap(), "second");
        blobs.remove_revision(Oid(7), Tid(10));
        assert!(!blobs.blob_path(Oid(7), Tid(10)).exists());
    }

    #[test]
    fn legacy_directories_are_lawn() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("old/0x01")).unwrap();
        let blobs = BlobDir::open(&dir.path().join("old"), false).unwrap();
        assert_eq!(blobs.layout(), Layout::Lawn);
        assert_eq!(blobs.oid_dir(Oid(0x100)), dir.path().join("old/0x0100"));
    }
}
