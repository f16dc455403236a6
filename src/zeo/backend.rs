//! What the server needs from a storage: the `Backend` trait, implemented by the FileStorage
//! engine (through an adapter) and by the non-historical memory storage.
//!
//! The server never touches a storage before `vote`: the client's stores are recorded per
//! connection and replayed into a [`Commit`] once the commit lock is held (zeo-protocol.md
//! §3.3.1). So a backend only sees one commit at a time and needs no locking of its own for
//! writes; reads happen concurrently from any thread.

use std::path::{Path, PathBuf};

use super::wire::Value;

pub type Oid = [u8; 8];
pub type Tid = [u8; 8];

pub const Z64: Tid = [0; 8];

/// Errors a backend reports; each maps onto the exception class a Python client rebuilds
/// (zeo-protocol.md §2.4).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no such object {}", hex(.0))]
    PosKey(Oid),
    #[error("no such revision {} of object {}", hex(.1), hex(.0))]
    PosKeySerial(Oid, Tid),
    #[error("No blob file at {path}")]
    BlobMissing { path: String, oid: Oid, serial: Tid },
    #[error("database conflict error (oid {})", hex(.oid))]
    Conflict {
        oid: Oid,
        /// (committed, read)
        serials: (Tid, Tid),
    },
    #[error("database read conflict error (oid {})", hex(.oid))]
    ReadConflict {
        oid: Oid,
        serials: Option<(Tid, Tid)>,
    },
    #[error("read-only storage")]
    ReadOnly,
    #[error("undo error: {reason}")]
    Undo { reason: String, oid: Option<Oid> },
    #[error("storage transaction error: {0}")]
    Transaction(String),
    #[error("{0}")]
    Value(String),
    #[error("{0}")]
    Type(String),
    /// The storage cannot do this at all (Python: AttributeError on the storage).
    #[error("{0}")]
    Unsupported(String),
    #[error("storage error: {0}")]
    Io(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What `get_info` reports.
#[derive(Debug, Clone)]
pub struct StorageInfo {
    pub name: String,
    pub length: u64,
    pub size: u64,
    pub supports_undo: bool,
    pub supports_record_iternext: bool,
    /// `(module, name)` pairs, in the order a Python storage lists them.
    pub interfaces: Vec<(&'static str, &'static str)>,
}

/// The transaction metadata `tpc_begin` carries.
#[derive(Debug, Clone)]
pub struct TxnMeta {
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The extension as the client sent it: a map (or already pickled bytes).
    pub extension: Value,
    /// An explicit tid (copyTransactionsFrom / restore), else the backend assigns one.
    pub tid: Option<Tid>,
    pub status: u8,
}

/// One revision in `history`.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub tid: Tid,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// A map value (possibly empty).
    pub extension: Value,
    pub size: u64,
}

/// One transaction in `undoLog` / `undoInfo`.
#[derive(Debug, Clone)]
pub struct UndoEntry {
    pub id: Vec<u8>,
    pub tid: Tid,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Value,
    pub size: u64,
}

/// One transaction from an iterator, with its data records.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    pub tid: Tid,
    pub status: u8,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Value,
    pub records: Vec<DataRecord>,
}

#[derive(Debug, Clone)]
pub struct DataRecord {
    pub oid: Oid,
    pub tid: Tid,
    pub data: Option<Vec<u8>>,
    pub data_txn: Option<Tid>,
}

/// A transaction iterator; lives as long as the client keeps its id.
pub trait TxnCursor: Send {
    fn next_txn(&mut self) -> Result<Option<TxnRecord>, StoreError>;
}

/// The current-record walk of `record_iternext`.
pub type IterNext = (Oid, Tid, Vec<u8>, Option<Oid>);

/// `load_before`'s answer: data, start tid, end tid (None = current).
pub type Loaded = (Vec<u8>, Tid, Option<Tid>);

pub trait Backend: Send + Sync {
    fn info(&self) -> StorageInfo;
    /// A read-only storage refuses writable registrations.
    fn is_read_only(&self) -> bool;
    fn last_transaction(&self) -> Tid;
    /// Revision with the greatest tid < `before`; Ok(None) when the object exists but has none.
    fn load_before(&self, oid: &Oid, before: &Tid) -> Result<Option<Loaded>, StoreError>;
    fn load_serial(&self, oid: &Oid, serial: &Tid) -> Result<Vec<u8>, StoreError>;
    fn get_tid(&self, oid: &Oid) -> Result<Tid, StoreError>;
    fn history(&self, oid: &Oid, size: usize) -> Result<Vec<HistoryEntry>, StoreError>;
    fn record_iternext(&self, next: Option<&Oid>) -> Result<IterNext, StoreError>;
    fn new_oids(&self, n: usize) -> Result<Vec<Oid>, StoreError>;
    /// Transactions newest first (the backend applies `first`/`last` after `filter`).
    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: &dyn Fn(&UndoEntry) -> bool,
    ) -> Result<Vec<UndoEntry>, StoreError>;
    fn iterator(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<Box<dyn TxnCursor>, StoreError>;
    /// The last `n` transactions' (tid, oids), newest first, to pre-fill the invalidation
    /// queue; None when the backend cannot list them.
    fn recent_transactions(&self, n: usize) -> Option<Vec<(Tid, Vec<Oid>)>>;
    /// The blob directory, if blobs are supported.
    fn blob_dir(&self) -> Option<&Path>;
    /// The committed blob file of a revision.
    fn blob_file(&self, oid: &Oid, serial: &Tid) -> Result<PathBuf, StoreError>;
    /// Start a commit; called with the storage's commit lock held.
    fn begin(&self, meta: &TxnMeta) -> Result<Box<dyn Commit>, StoreError>;
    /// Flush and close (write the index, release the lock file).
    fn close(&self) -> Result<(), StoreError>;
    /// Pack to the unix time `t` (`pack(t, wait)`, zeo-protocol.md §3.9), blocking until
    /// done (the server calls it off its network threads); returns a one-line summary for
    /// the log. Storages without history have nothing to pack.
    fn pack(&self, t: f64) -> Result<String, StoreError> {
        let _ = t;
        Ok("nothing to pack (the storage keeps no history)".into())
    }
}

/// One commit in progress, between the server's vote and finish/abort.
pub trait Commit: Send {
    fn tid(&self) -> Tid;
    fn store(&mut self, oid: &Oid, serial: &Tid, data: &[u8]) -> Result<(), StoreError>;
    /// Store a record together with its blob file (moved into the blob directory).
    fn store_blob(
        &mut self,
        oid: &Oid,
        serial: &Tid,
        data: &[u8],
        file: &Path,
    ) -> Result<(), StoreError>;
    fn check_current(&mut self, oid: &Oid, serial: &Tid) -> Result<(), StoreError>;
    fn delete(&mut self, oid: &Oid, serial: &Tid) -> Result<(), StoreError>;
    fn restore(
        &mut self,
        oid: &Oid,
        serial: &Tid,
        data: Option<&[u8]>,
        prev_txn: Option<&Tid>,
    ) -> Result<(), StoreError>;
    /// Undo a transaction; returns the oids it writes.
    fn undo(&mut self, undo_id: &[u8]) -> Result<Vec<Oid>, StoreError>;
    /// Write the transaction (recoverable as `c`, invisible).
    fn vote(&mut self) -> Result<(), StoreError>;
    /// Commit it on disk (the status flip and its sync) without making it visible, so that
    /// the server syncs without holding back readers. Storages with nothing to sync keep
    /// the default.
    fn make_durable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Where the transaction's record ends in the file (after `vote`), for replication;
    /// None for storages that are not files.
    fn end(&self) -> Option<u64> {
        None
    }
    /// Make it visible (after `make_durable`, without I/O); returns the committed tid.
    fn finish(self: Box<Self>) -> Result<Tid, StoreError>;
    fn abort(self: Box<Self>);
}
