//! [`Backend`] over the FileStorage engine (`crate::storage`).
//!
//! The engine has its own commit gate; the server takes its fair commit lock first, so the
//! engine's gate is always free when `begin` runs (a blocking wait covers anything else that
//! might hold it, such as a future online pack).

use std::path::{Path, PathBuf};

use super::backend::{
    Backend, Commit, DataRecord, HistoryEntry, IterNext, Loaded, Oid, StorageInfo, StoreError, Tid,
    TxnCursor, TxnMeta, TxnRecord, UndoEntry,
};
use super::wire::{self, Value};
use crate::storage::{self as fs, FileStorage, Status, StorageError};

pub struct FileBackend {
    fs: FileStorage,
    /// `pack-gc` and `pack-keep-old` of the storage's configuration.
    pack: fs::PackOptions,
}

impl FileBackend {
    pub fn new(fs: FileStorage) -> Self {
        FileBackend {
            fs,
            pack: fs::PackOptions::default(),
        }
    }

    /// Pack with these options (GC, keep-old).
    pub fn with_pack_options(mut self, gc: bool, keep_old: bool) -> Self {
        self.pack.gc = gc;
        self.pack.keep_old = keep_old;
        self
    }
}

fn oid(o: &Oid) -> fs::Oid {
    fs::Oid::from_bytes(*o)
}

fn tid(t: &Tid) -> fs::Tid {
    fs::Tid::from_bytes(*t)
}

fn err(e: StorageError) -> StoreError {
    match e {
        StorageError::PosKey { oid, tid: None } => StoreError::PosKey(oid.to_bytes()),
        StorageError::PosKey { oid, tid: Some(t) } => {
            StoreError::PosKeySerial(oid.to_bytes(), t.to_bytes())
        }
        StorageError::Conflict { oid, serials } => StoreError::Conflict {
            oid: oid.to_bytes(),
            serials: (serials.0.to_bytes(), serials.1.to_bytes()),
        },
        StorageError::ReadConflict { oid, serials } => StoreError::ReadConflict {
            oid: oid.to_bytes(),
            serials: Some((serials.0.to_bytes(), serials.1.to_bytes())),
        },
        StorageError::ReadOnly { .. } => StoreError::ReadOnly,
        StorageError::Undo { msg, oid } => StoreError::Undo {
            reason: msg,
            oid: oid.map(fs::Oid::to_bytes),
        },
        e @ (StorageError::Transaction(_) | StorageError::TidNotIncreasing { .. }) => {
            StoreError::Transaction(e.to_string())
        }
        e => StoreError::Io(e.to_string()),
    }
}

/// The stored extension pickle as a map (empty when absent or not plain data).
fn ext_value(raw: &[u8]) -> Value {
    if raw.is_empty() {
        return Value::Map(vec![]);
    }
    match crate::pickle::loads(raw)
        .ok()
        .and_then(|v| wire::from_pickle(v).ok())
    {
        Some(v @ Value::Map(_)) => v,
        _ => Value::Map(vec![]),
    }
}

/// The extension as FileStorage stores it: Python's `extension_bytes` (a pickle of the dict,
/// empty for an empty dict); bytes from the client are already pickled.
fn ext_bytes(v: &Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::Bytes(b) => Ok(b.clone()),
        Value::Map(m) if m.is_empty() => Ok(Vec::new()),
        Value::Nil => Ok(Vec::new()),
        v => {
            let p = wire::to_pickle(v).map_err(|e| {
                StoreError::Transaction(format!("unstorable transaction extension: {e}"))
            })?;
            crate::pickle::dumps(&p).map_err(|e| {
                StoreError::Transaction(format!("unstorable transaction extension: {e}"))
            })
        }
    }
}

impl Backend for FileBackend {
    fn info(&self) -> StorageInfo {
        let mut interfaces = Vec::new();
        if self.fs.blob_dir().is_some() {
            interfaces.push(("ZODB.interfaces", "IBlobStorageRestoreable"));
            interfaces.push(("ZODB.interfaces", "IBlobStorage"));
        }
        interfaces.extend([
            ("ZODB.interfaces", "IStorageRestoreable"),
            ("ZODB.interfaces", "IStorageIteration"),
            ("ZODB.interfaces", "IStorageUndoable"),
            ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
            ("ZODB.interfaces", "IExternalGC"),
            ("ZODB.interfaces", "IStorage"),
            ("zope.interface", "Interface"),
        ]);
        StorageInfo {
            name: self.fs.path().display().to_string(),
            length: self.fs.len() as u64,
            size: self.fs.size(),
            supports_undo: true,
            supports_record_iternext: true,
            interfaces,
        }
    }

    fn is_read_only(&self) -> bool {
        self.fs.is_read_only()
    }

    fn last_transaction(&self) -> Tid {
        self.fs.last_transaction().to_bytes()
    }

    fn load_before(&self, o: &Oid, before: &Tid) -> Result<Option<Loaded>, StoreError> {
        // Nearly every load asks for the current revision (before = the client's view, after
        // the last commit): the engine's `load` reads it with one pread where the walk below
        // reads the header and then the data. When the current record precedes `before` it is
        // the answer and nothing ends it; anything else (older views, deletions, errors) takes
        // the general path.
        if let Ok((data, start)) = self.fs.load(oid(o)) {
            let start = start.to_bytes();
            if start < *before {
                return Ok(Some((data, start, None)));
            }
        }
        Ok(self
            .fs
            .load_before(oid(o), tid(before))
            .map_err(err)?
            .map(|r| (r.data, r.start.to_bytes(), r.end.map(fs::Tid::to_bytes))))
    }

    fn load_serial(&self, o: &Oid, serial: &Tid) -> Result<Vec<u8>, StoreError> {
        self.fs
            .load_serial(oid(o), tid(serial))
            .map_err(|e| match e {
                // loadSerial's POSKeyError carries the oid only, as Python's.
                StorageError::PosKey { oid, .. } => StoreError::PosKey(oid.to_bytes()),
                e => err(e),
            })
    }

    fn get_tid(&self, o: &Oid) -> Result<Tid, StoreError> {
        self.fs.get_tid(oid(o)).map(fs::Tid::to_bytes).map_err(err)
    }

    fn history(&self, o: &Oid, size: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self
            .fs
            .history(oid(o), size)
            .map_err(err)?
            .into_iter()
            .map(|h| HistoryEntry {
                tid: h.tid.to_bytes(),
                user: h.user,
                description: h.description,
                extension: ext_value(&h.extension),
                size: h.size,
            })
            .collect())
    }

    fn record_iternext(&self, next: Option<&Oid>) -> Result<IterNext, StoreError> {
        match self.fs.record_iternext(next.map(oid)).map_err(err)? {
            Some((o, t, data, n)) => {
                Ok((o.to_bytes(), t.to_bytes(), data, n.map(fs::Oid::to_bytes)))
            }
            None => Err(StoreError::Value("empty tree".into())),
        }
    }

    fn new_oids(&self, n: usize) -> Result<Vec<Oid>, StoreError> {
        Ok(self
            .fs
            .new_oids(n)
            .map_err(err)?
            .into_iter()
            .map(fs::Oid::to_bytes)
            .collect())
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: &dyn Fn(&UndoEntry) -> bool,
    ) -> Result<Vec<UndoEntry>, StoreError> {
        let entry = |u: &fs::UndoInfo| UndoEntry {
            id: u.id().into_bytes(),
            tid: u.tid.to_bytes(),
            user: u.user.clone(),
            description: u.description.clone(),
            extension: ext_value(&u.extension),
            size: u.size,
        };
        let first = usize::try_from(first).unwrap_or(0);
        Ok(self
            .fs
            .undo_log(first, last, |u| filter(&entry(u)))
            .map_err(err)?
            .iter()
            .map(entry)
            .collect())
    }

    fn iterator(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<Box<dyn TxnCursor>, StoreError> {
        let it = self
            .fs
            .iter_transactions(start.as_ref().map(tid), stop.as_ref().map(tid))
            .map_err(err)?;
        Ok(Box::new(FileCursor(it)))
    }

    fn recent_transactions(&self, n: usize) -> Option<Vec<(Tid, Vec<Oid>)>> {
        let mut v = self.fs.recent_transactions(n).ok()?;
        // The engine lists them oldest first; the queue wants newest first.
        v.reverse();
        Some(
            v.into_iter()
                .map(|(t, oids)| {
                    (
                        t.to_bytes(),
                        oids.into_iter().map(fs::Oid::to_bytes).collect(),
                    )
                })
                .collect(),
        )
    }

    fn blob_dir(&self) -> Option<&Path> {
        self.fs.blob_dir()
    }

    fn blob_file(&self, o: &Oid, serial: &Tid) -> Result<PathBuf, StoreError> {
        self.fs.load_blob(oid(o), tid(serial)).map_err(|e| match e {
            StorageError::PosKey { .. } | StorageError::Blob { .. } => StoreError::BlobMissing {
                path: self
                    .fs
                    .blob_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                oid: *o,
                serial: *serial,
            },
            e => err(e),
        })
    }

    fn begin(&self, meta: &TxnMeta) -> Result<Box<dyn Commit>, StoreError> {
        let m = fs::TxnMeta::new(
            meta.user.clone(),
            meta.description.clone(),
            ext_bytes(&meta.extension)?,
        );
        let lock = match self.fs.try_lock_commit().map_err(err)? {
            Some(l) => l,
            None => self.fs.lock_commit().map_err(err)?,
        };
        let txn = match meta.tid {
            Some(t) => {
                let status = match meta.status {
                    b'p' => Status::Packed,
                    _ => Status::Committed,
                };
                lock.begin_at(m, tid(&t), status)
            }
            None => lock.begin(m),
        }
        .map_err(err)?;
        Ok(Box::new(FileCommit(txn)))
    }

    fn pack(&self, t: f64) -> Result<String, StoreError> {
        // Progress to the log, a line per phase (operators follow long packs there).
        let path = self.fs.path().display().to_string();
        let last = std::sync::Mutex::new(None);
        let mut opts = self.pack.clone();
        opts.progress = Some(std::sync::Arc::new(move |phase: fs::PackPhase, _, _| {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if *l != Some(phase) {
                *l = Some(phase);
                tracing::info!(target: "ZODB.FileStorage.pack", "{path}: {}", phase.label());
            }
        }));
        let r = self.fs.pack(t, &opts).map_err(err)?;
        Ok(r.summary())
    }

    fn close(&self) -> Result<(), StoreError> {
        self.fs.close().map_err(err)
    }
}

struct FileCursor(fs::TransactionIter);

impl TxnCursor for FileCursor {
    fn next_txn(&mut self) -> Result<Option<TxnRecord>, StoreError> {
        let Some(t) = self.0.next() else {
            return Ok(None);
        };
        let t = t.map_err(err)?;
        let mut records = Vec::new();
        for r in self.0.records(&t) {
            let r = r.map_err(err)?;
            records.push(DataRecord {
                oid: r.oid.to_bytes(),
                tid: r.tid.to_bytes(),
                data: r.data,
                data_txn: r.data_txn.map(fs::Tid::to_bytes),
            });
        }
        Ok(Some(TxnRecord {
            tid: t.tid.to_bytes(),
            status: t.status.byte(),
            user: t.user,
            description: t.description,
            extension: ext_value(&t.extension),
            records,
        }))
    }
}

struct FileCommit(fs::Transaction);

impl Commit for FileCommit {
    fn tid(&self) -> Tid {
        self.0.tid().to_bytes()
    }

    fn store(&mut self, o: &Oid, serial: &Tid, data: &[u8]) -> Result<(), StoreError> {
        self.0.store(oid(o), tid(serial), data).map_err(err)
    }

    fn store_blob(
        &mut self,
        o: &Oid,
        serial: &Tid,
        data: &[u8],
        file: &Path,
    ) -> Result<(), StoreError> {
        self.0
            .store_blob(oid(o), tid(serial), data, file)
            .map_err(err)
    }

    fn check_current(&mut self, o: &Oid, serial: &Tid) -> Result<(), StoreError> {
        self.0
            .check_current_serial(oid(o), tid(serial))
            .map_err(err)
    }

    fn delete(&mut self, o: &Oid, serial: &Tid) -> Result<(), StoreError> {
        self.0.delete(oid(o), tid(serial)).map_err(err)
    }

    fn restore(
        &mut self,
        o: &Oid,
        serial: &Tid,
        data: Option<&[u8]>,
        prev_txn: Option<&Tid>,
    ) -> Result<(), StoreError> {
        self.0
            .restore(oid(o), tid(serial), data, prev_txn.map(tid))
            .map_err(err)
    }

    fn undo(&mut self, undo_id: &[u8]) -> Result<Vec<Oid>, StoreError> {
        let t = fs::Tid::from_undo_id(undo_id).ok_or_else(|| StoreError::Undo {
            reason: "Invalid transaction id".into(),
            oid: None,
        })?;
        Ok(self
            .0
            .undo(t)
            .map_err(err)?
            .into_iter()
            .map(fs::Oid::to_bytes)
            .collect())
    }

    fn vote(&mut self) -> Result<(), StoreError> {
        self.0.vote().map_err(err)
    }

    fn make_durable(&mut self) -> Result<(), StoreError> {
        self.0.make_durable().map_err(err)
    }

    fn end(&self) -> Option<u64> {
        Some(self.0.end())
    }

    fn finish(self: Box<Self>) -> Result<Tid, StoreError> {
        self.0.finish().map(|c| c.tid.to_bytes()).map_err(err)
    }

    fn abort(self: Box<Self>) {
        if let Err(e) = self.0.abort() {
            tracing::error!(target: "ZEO.StorageServer", "aborting a transaction failed: {e}");
        }
    }
}
