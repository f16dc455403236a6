//! `zodbctl backup | restore`: repozo-compatible backups of a Data.fs, with its blobs.
//!
//! The repository holds repozo's files byte for byte (format in [`repo`]), so repozo
//! restores and verifies what zodbctl writes and the other way round; the blob revisions
//! of each backup file sit beside it in a directory of our own ([`blobs`], described with
//! the whole layout in `docs/backup.md`). [`ops`] holds the decisions (repozo's §12.4 rules,
//! chain selection, incremental restore); [`copy`] moves the bytes (md5 overlapped with the
//! copy, parallel gzip members, `copy_file_range`); [`command`] is the command edge
//! (instance configuration, progress bars, the summary, the last-backup record).

pub mod blobs;
pub mod command;
pub mod copy;
pub mod ops;
pub mod repo;

use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong in a backup, restore or verify. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something the user fixes (a missing repository, an output that is in use).
    #[error("{0}")]
    Input(String),
    /// The repository disagrees with itself or with the source: never restored silently.
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Attach the path to an I/O error.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}
