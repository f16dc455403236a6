//! The FileStorage engine: `Data.fs` read and write, byte-compatible with Python ZODB 6.4
//! (spec `filestorage.md`). Nothing here knows about the network; the ZEO server and the
//! maintenance tools call it.
//!
//! # Opening
//!
//! ```no_run
//! use zodbctl::storage::{FileStorage, OpenOptions};
//! # fn main() -> zodbctl::storage::Result<()> {
//! let fs = OpenOptions::new().blob_dir("var/blobs").open("var/Data.fs")?; // read-write
//! let ro = FileStorage::open_read_only("var/Data.fs")?;                  // no lock, no changes
//! # Ok(()) }
//! ```
//!
//! A read-write open takes `Data.fs.lock` (zc.lockfile-compatible `flock`; `Locked` when
//! Python or another zodbctl has it), loads `Data.fs.index` when Python's sanity check
//! accepts it (else scans the file, with a progress bar on a terminal, and saves a fresh
//! index), and recovers a torn or unfinished (`c`) trailing transaction as Python does,
//! saving the cut bytes to `Data.fs.trN`. Any other damage is a [`StorageError::Corrupted`]
//! naming the file and byte position; nothing else is ever repaired. `FS21` (Python 2)
//! files open read-only. [`FileStorage::close`] (or dropping the last clone) writes
//! `Data.fs.index` in Python's format.
//!
//! # Reading (any thread, concurrently, also during a commit)
//!
//! [`FileStorage`] is `Clone + Send + Sync`; clones share one storage. Reads copy from a
//! read-only memory map of the committed part of the file, re-made as it grows, or are
//! positional (`pread`) past it; they take only brief read locks (index, map). The
//! invariants that make the map safe (nothing below the committed end is ever rewritten or
//! truncated while open) are documented in `datafile.rs`.
//!
//! * [`FileStorage::load`] → `(data, tid)`; [`FileStorage::load_before`] → `Option<Revision
//!   { data, start, end }>` with the exact §2.9 semantics (`PosKey` when the revision found
//!   is a deletion; `None` when the object did not exist yet);
//!   [`FileStorage::load_serial`], [`FileStorage::get_tid`], [`FileStorage::history`],
//!   [`FileStorage::last_transaction`], [`FileStorage::len`], [`FileStorage::size`],
//!   [`FileStorage::record_iternext`], [`FileStorage::load_blob`] (→ path).
//! * [`FileStorage::iter_transactions`]`(start, stop)` → [`TransactionInfo`]s;
//!   [`FileStorage::transaction_records`] → [`DataRecord`]s (`data` resolved through
//!   backpointers, `data_txn` as Python's iterator reports it).
//! * [`FileStorage::undo_log`]`(first, last, filter)` → [`UndoInfo`]s (undoInfo is
//!   `undo_log` with a filter matching the specification, the extension pickle being raw
//!   bytes); [`FileStorage::recent_transactions`]`(n)` → `(tid, oids)` for the server's
//!   invalidation queue.
//!
//! # Writing
//!
//! ```no_run
//! # use zodbctl::storage::*;
//! # fn main() -> Result<()> {
//! # let fs = FileStorage::open("Data.fs")?;
//! let oid = fs.new_oid()?;
//! let lock = fs.try_lock_commit()?.expect("nobody else is committing");
//! let mut txn = lock.begin(TxnMeta::new("/ bob", "add a", b"".to_vec()))?;
//! txn.store(oid, Tid::ZERO, b"pickle")?;       // Conflict { oid, serials } when stale
//! txn.vote()?;                                 // written after the end with status 'c'
//! let Committed { tid, oids } = txn.finish()?; // status ' ', one sync, visible to readers
//! # Ok(()) }
//! ```
//!
//! One committer at a time: [`FileStorage::try_lock_commit`] returns `None` while another
//! [`Transaction`] holds the [`CommitLock`] (the caller owns the waiting queue; ZEO takes
//! the lock at vote time), [`FileStorage::lock_commit`] blocks. A [`Transaction`] owns the
//! lock and is `Send`; it offers `store`, `store_blob` (moves the uploaded file from
//! [`FileStorage::blob_tmp_dir`] into the bushy tree), `check_current_serial`
//! (`ReadConflict`), `delete`, `restore` (with [`CommitLock::begin_at`] and an explicit,
//! increasing tid), `undo` (FileStorage's transactional undo, returning the oids), `vote`,
//! `finish` (returns the tid and every oid written, for invalidations) and `abort`
//! (also on drop; truncates a voted transaction away and removes its blob files). `finish`
//! is `make_durable` (status flip and sync: committed on disk, not yet visible) followed by
//! an in-memory publish; a server calls `make_durable` itself to sync without holding back
//! its readers, and an abort after it keeps the transaction. Also
//! `restore_blob`. Tids come from [`TimeStamp`]: strictly increasing, `laterThan` the last
//! (and after any unfinished transaction removed at open, whose blob files may linger).
//! Buffered records stay in memory up to 16 MiB, then spill to `Data.fs.tmp`. Like Python,
//! a commit syncs once, at finish; [`OpenOptions::sync_on_vote`] adds a sync at vote.
//! Conflict resolution is not attempted (it needs the application's classes): a stale
//! store is a `Conflict` carrying the committed serial, for client-side resolution.
//!
//! [`FileStorage::close`] refuses new transactions and saves the index without waiting
//! for one in progress (which may still finish or abort).
//!
//! # Where this differs from Python's FileStorage (deliberately)
//!
//! * An explicit tid that is not after the last committed one is refused
//!   ([`StorageError::TidNotIncreasing`]); Python writes it and the file then fails fstest
//!   and pack (§3.3).
//! * No conflict resolution, for stores or undo (§7); ZEO resolves store conflicts on the
//!   client.
//! * `restore` treats an unknown `prev_txn` as the hint it is documented to be and writes
//!   the data; Python 6.4 raises `UndoError("Invalid transaction id")`.
//! * After removing an unfinished `c` transaction at open, `last_transaction` is the last
//!   committed tid (Python reports the removed one), and new tids still come after the
//!   removed one (§2.8).
//! * The iterator yields `u` (legacy undone) transactions with their records where
//!   Python's `FileIterator` crashes; it never shows a transaction being committed.
//! * `FS21` files are readable (read-only); Python 3 refuses them.
//! * A backpointer is checked to point backwards at a record of the same oid, so a
//!   damaged pointer is reported instead of followed.
//! * Pack keeps a superset where ZODB 6.4's loses data or fails (§9.9: dangling
//!   references, future backpointers with or without GC), never holds the commit lock for
//!   the copy, and never leaves `Data.fs` missing or half-written (see [`pack`]).
//!
//! # Modules
//!
//! [`format`](mod@format) documents the byte layout; [`types`] ([`Oid`], [`Tid`], [`TxnMeta`]);
//! [`timestamp`]; [`error`]; [`index`] (the compact in-memory index, ~8 bytes per
//! object); [`indexfile`] (Python's `Data.fs.index`); [`blob`] (the blob directory);
//! [`lock`] (the lock file); `scan` (open-time scan and recovery); `commit`; `iter`;
//! `txnbuf` (the records of the transaction being committed); [`pack`] (pack with GC and
//! blobs, online: [`FileStorage::pack`], its phases, locks and crash invariants, and the
//! `<Data.fs>.pack.json` record); [`replica`] (the engine side of replication: raw
//! transaction bytes, their validation and append on a replica, full resync). [`memory`] is the ZEO
//! server's non-historical memory storage (owned by the server work).

pub mod blob;
mod commit;
mod datafile;
pub mod error;
mod filestorage;
pub mod format;
pub mod index;
pub mod indexfile;
mod iter;
pub mod lock;
pub mod memory;
pub mod pack;
pub mod replica;
mod scan;
pub mod timestamp;
mod txnbuf;
pub mod types;

#[cfg(test)]
mod tests;

pub use commit::{CommitLock, Committed, Transaction, crash_hook};
pub use error::{Result, StorageError};
pub use filestorage::{FileStorage, HistoryEntry, IterNext, OpenOptions, Revision};
pub use format::Status;
pub use iter::{DataRecord, RecordIter, TransactionInfo, TransactionIter, UndoInfo};
pub use pack::{Outcome as PackOutcome, PackOptions, PackReport, Phase as PackPhase};
pub use replica::{RawChunk, Replicated, TxnProof, resync_blob_dir, resync_path};
pub use scan::ScanOutcome;
pub use timestamp::TimeStamp;
pub use types::{Oid, Tid, TxnMeta};
