//! [`Backend`] over the non-historical memory storage (`crate::storage::memory`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::{
    Backend, Commit, HistoryEntry, IterNext, Loaded, Oid, StorageInfo, StoreError, Tid, TxnCursor,
    TxnMeta, UndoEntry,
};
use super::wire::Value;
use crate::storage::memory::{MemCommit, MemError, MemoryStorage};

pub struct MemoryBackend {
    store: Arc<MemoryStorage>,
    read_only: bool,
}

impl MemoryBackend {
    pub fn new(store: Arc<MemoryStorage>, read_only: bool) -> Self {
        MemoryBackend { store, read_only }
    }
}

fn err(oid: &Oid, e: MemError) -> StoreError {
    match e {
        MemError::NotFound => StoreError::PosKey(*oid),
        MemError::NoSuchRevision => StoreError::PosKey(*oid),
        MemError::ReadConflict => StoreError::ReadConflict {
            oid: *oid,
            serials: None,
        },
        MemError::Conflict { committed, read } => StoreError::Conflict {
            oid: *oid,
            serials: (committed, read),
        },
        e @ MemError::TidNotIncreasing(..) => StoreError::Transaction(e.to_string()),
    }
}

impl Backend for MemoryBackend {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            name: format!("Memory storage {}", self.store.name()),
            length: self.store.len(),
            size: self.store.size(),
            supports_undo: false,
            supports_record_iternext: true,
            interfaces: vec![
                ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
                ("ZODB.interfaces", "IStorage"),
                ("zope.interface", "Interface"),
            ],
        }
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn last_transaction(&self) -> Tid {
        self.store.last_transaction()
    }

    fn load_before(&self, oid: &Oid, before: &Tid) -> Result<Option<Loaded>, StoreError> {
        self.store.load_before(oid, before).map_err(|e| err(oid, e))
    }

    fn load_serial(&self, oid: &Oid, serial: &Tid) -> Result<Vec<u8>, StoreError> {
        self.store.load_serial(oid, serial).map_err(|e| err(oid, e))
    }

    fn get_tid(&self, oid: &Oid) -> Result<Tid, StoreError> {
        self.store
            .current(oid)
            .map(|(t, _)| t)
            .map_err(|e| err(oid, e))
    }

    fn history(&self, oid: &Oid, size: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let revs = self.store.history(oid, size).map_err(|e| err(oid, e))?;
        Ok(revs
            .into_iter()
            .map(|(tid, size)| HistoryEntry {
                tid,
                user: Vec::new(),
                description: Vec::new(),
                extension: Value::Map(vec![]),
                size,
            })
            .collect())
    }

    fn record_iternext(&self, next: Option<&Oid>) -> Result<IterNext, StoreError> {
        self.store
            .record_iternext(next)
            .ok_or_else(|| StoreError::Value("empty tree".into()))
    }

    fn new_oids(&self, n: usize) -> Result<Vec<Oid>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(self.store.new_oids(n))
    }

    fn undo_log(
        &self,
        _first: i64,
        _last: i64,
        _filter: &dyn Fn(&UndoEntry) -> bool,
    ) -> Result<Vec<UndoEntry>, StoreError> {
        Ok(Vec::new())
    }

    fn iterator(
        &self,
        _start: Option<Tid>,
        _stop: Option<Tid>,
    ) -> Result<Box<dyn TxnCursor>, StoreError> {
        Err(StoreError::Unsupported(
            "a memory storage keeps no transaction history to iterate".into(),
        ))
    }

    fn recent_transactions(&self, n: usize) -> Option<Vec<(Tid, Vec<Oid>)>> {
        Some(self.store.recent_transactions(n))
    }

    fn blob_dir(&self) -> Option<&Path> {
        None
    }

    fn blob_file(&self, oid: &Oid, _serial: &Tid) -> Result<PathBuf, StoreError> {
        Err(StoreError::PosKey(*oid))
    }

    fn begin(&self, meta: &TxnMeta) -> Result<Box<dyn Commit>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let c = self
            .store
            .begin(meta.tid)
            .map_err(|e| StoreError::Transaction(e.to_string()))?;
        Ok(Box::new(MemoryCommit(c)))
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct MemoryCommit(MemCommit);

impl Commit for MemoryCommit {
    fn tid(&self) -> Tid {
        self.0.tid()
    }

    fn store(&mut self, oid: &Oid, serial: &Tid, data: &[u8]) -> Result<(), StoreError> {
        self.0.store(oid, serial, data).map_err(|e| err(oid, e))
    }

    fn store_blob(
        &mut self,
        _oid: &Oid,
        _serial: &Tid,
        _data: &[u8],
        _file: &Path,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "a memory storage does not store blobs".into(),
        ))
    }

    fn check_current(&mut self, oid: &Oid, serial: &Tid) -> Result<(), StoreError> {
        self.0.check_current(oid, serial).map_err(|e| match e {
            MemError::Conflict { committed, read } => StoreError::ReadConflict {
                oid: *oid,
                serials: Some((committed, read)),
            },
            e => err(oid, e),
        })
    }

    fn delete(&mut self, oid: &Oid, serial: &Tid) -> Result<(), StoreError> {
        self.0.delete(oid, serial).map_err(|e| err(oid, e))
    }

    fn restore(
        &mut self,
        oid: &Oid,
        _serial: &Tid,
        data: Option<&[u8]>,
        _prev_txn: Option<&Tid>,
    ) -> Result<(), StoreError> {
        self.0.restore(oid, data);
        Ok(())
    }

    fn undo(&mut self, _undo_id: &[u8]) -> Result<Vec<Oid>, StoreError> {
        Err(StoreError::Undo {
            reason: "a memory storage does not support undo".into(),
            oid: None,
        })
    }

    fn vote(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Tid, StoreError> {
        Ok(self.0.finish())
    }

    fn abort(self: Box<Self>) {}
}
