//! The storage's error type. Every error about the file names it and, where there is one,
//! the byte position; ZODB's application-level errors (POSKeyError, ConflictError, ...) are
//! variants the server maps onto the Python exception of the same name.

use std::io;
use std::path::PathBuf;

use super::types::{Oid, Tid};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error on a file of the storage; `pos` is the byte position when one applies.
    #[error("{}{}: {source}", path.display(), at(*pos))]
    Io {
        path: PathBuf,
        pos: Option<u64>,
        #[source]
        source: io::Error,
    },

    /// The file is not a FileStorage (`FileStorageFormatError`).
    #[error("{}: not a FileStorage file: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// The file is damaged at `pos` (`CorruptedError` / `CorruptedTransactionError`): the
    /// storage reports it and changes nothing.
    #[error("{} is damaged at byte {pos}: {msg}", path.display())]
    Corrupted {
        path: PathBuf,
        pos: u64,
        msg: String,
    },

    /// Another process holds the lock file (`zc.lockfile.LockError`).
    #[error("couldn't lock {}: another process has the storage open for writing", path.display())]
    Locked { path: PathBuf },

    /// No such object, no such revision, or the revision is a deletion (`POSKeyError`).
    #[error("POSKeyError: object {oid} has no {}", match tid { Some(t) => format!("revision {t}"), None => "current data".into() })]
    PosKey { oid: Oid, tid: Option<Tid> },

    /// A store with a stale serial (`ConflictError`). `serials` is ZODB's pair:
    /// (serial currently committed, serial this transaction started with).
    #[error(
        "database conflict error (oid {oid}, serial this txn started with {}, serial currently committed {})",
        serials.1, serials.0
    )]
    Conflict { oid: Oid, serials: (Tid, Tid) },

    /// `checkCurrentSerialInTransaction` found a newer revision (`ReadConflictError`);
    /// `serials` as in [`StorageError::Conflict`].
    #[error(
        "database read conflict error (oid {oid}, serial this txn started with {}, serial currently committed {})",
        serials.1, serials.0
    )]
    ReadConflict { oid: Oid, serials: (Tid, Tid) },

    /// A write on a read-only storage (`ReadOnlyError`).
    #[error("{} is open read-only", path.display())]
    ReadOnly { path: PathBuf },

    /// Misuse of the two-phase commit or invalid transaction input
    /// (`StorageTransactionError`).
    #[error("{0}")]
    Transaction(String),

    /// An explicit tid that does not increase (refused; Python would corrupt the file).
    #[error("transaction id {tid} is not after the last committed transaction {last}")]
    TidNotIncreasing { tid: Tid, last: Tid },

    /// Undo refused (`UndoError`).
    #[error("UndoError: {msg}{}", oid.map(|o| format!(" (oid {o})")).unwrap_or_default())]
    Undo { msg: String, oid: Option<Oid> },

    /// The commit would grow the file past the configured quota (`FileStorageQuotaError`).
    #[error("{}: the storage quota of {quota} bytes would be exceeded", path.display())]
    Quota { path: PathBuf, quota: u64 },

    /// A blob problem: no blob directory, a missing blob file, a bad layout.
    #[error("{msg}: {}", path.display())]
    Blob { path: PathBuf, msg: String },

    /// The storage was closed.
    #[error("{} is closed", path.display())]
    Closed { path: PathBuf },
    /// A pack that cannot run or failed (nothing was changed).
    #[error("pack: {0}")]
    Pack(String),

    /// Replication refused (replica.rs): bytes that are not whole, valid transactions at
    /// the committed end, or a request for bytes that are not there. Nothing was changed.
    #[error("{}: replication refused at byte {pos}: {msg}", path.display())]
    Replication {
        path: PathBuf,
        pos: u64,
        msg: String,
    },
}

fn at(pos: Option<u64>) -> String {
    pos.map(|p| format!(" at byte {p}")).unwrap_or_default()
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, pos: Option<u64>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            pos,
            source,
        }
    }

    pub fn corrupted(path: impl Into<PathBuf>, pos: u64, msg: impl Into<String>) -> Self {
        StorageError::Corrupted {
            path: path.into(),
            pos,
            msg: msg.into(),
        }
    }

    /// True for `POSKeyError`.
    pub fn is_pos_key(&self) -> bool {
        matches!(self, StorageError::PosKey { .. })
    }

    /// True for `ConflictError` and `ReadConflictError`.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StorageError::Conflict { .. } | StorageError::ReadConflict { .. }
        )
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_position() {
        let e = StorageError::corrupted(
            "/x/Data.fs",
            446,
            "redundant transaction length check failed",
        );
        assert_eq!(
            e.to_string(),
            "/x/Data.fs is damaged at byte 446: redundant transaction length check failed"
        );
        let e = StorageError::io("/x/Data.fs", Some(4), io::Error::other("boom"));
        assert_eq!(e.to_string(), "/x/Data.fs at byte 4: boom");
        let e = StorageError::Conflict {
            oid: Oid(1),
            serials: (Tid(2), Tid(0)),
        };
        assert!(e.to_string().contains("oid 0x0000000000000001"));
        assert!(e.is_conflict());
    }
}
