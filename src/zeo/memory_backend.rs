//! [`Backend`] over the non-historical memory storage (`crate::storage::memory`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::backend::{
    Backend, Commit, HistoryEntry, IterNext, Loaded, Oid, StorageInfo, StoreError, Tid, TxnCursor,
    TxnMeta, UndoEntry,
};
use super::wire::Value;
use crate::storage::memory::{MemCommit, MemError, MemoryStorage, Startup};

pub struct MemoryBackend {
    store: Arc<MemoryStorage>,
    read_only: bool,
    snapshot: Option<Snapshots>,
}

/// The snapshot file of a memory storage and the thread that checkpoints it.
struct Snapshots {
    path: PathBuf,
    /// Tells the checkpoint thread to end (`true`), with the condition variable it waits on.
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl MemoryBackend {
    pub fn new(store: Arc<MemoryStorage>, read_only: bool) -> Self {
        MemoryBackend {
            store,
            read_only,
            snapshot: None,
        }
    }

    /// A backend for serving. With a `snapshot` file (the configured `path`, which `create`
    /// always writes) the storage is brought up with [`MemoryStorage::start`] (from the file
    /// when it exists: a fresh last tid, a root object when empty), its contents are written
    /// there every `checkpoint` while they change (zero: never) and on
    /// [`close`](Backend::close). Without one it starts as a brand-new storage (last
    /// transaction zero, no objects), as `serve --memory` always has: ZODB's own storage
    /// tests expect exactly that.
    pub fn open(
        store: Arc<MemoryStorage>,
        read_only: bool,
        snapshot: Option<PathBuf>,
        checkpoint: Duration,
    ) -> Self {
        if snapshot.is_none() {
            return MemoryBackend::new(store, read_only);
        }
        let (how, problem) = store.start(snapshot.as_deref());
        if let Some(e) = problem {
            // The file is kept for inspection; the next checkpoint writes a new one beside it.
            warn!(target: LOG, "storage '{}': {e}; starting empty", store.name());
            if let Some(p) = &snapshot {
                let mut aside = p.as_os_str().to_owned();
                aside.push(".bad");
                let _ = std::fs::rename(p, aside);
            }
        }
        match (&how, &snapshot) {
            (Startup::Restored(n), Some(p)) => {
                info!(target: LOG, "storage '{}': {n} objects restored from {}", store.name(), p.display());
                if checkpoint.is_zero() && !read_only {
                    // Without checkpoints the file is only true until the first commit: a
                    // crash must then come back empty, not to this old state.
                    if let Err(e) = std::fs::remove_file(p) {
                        warn!(target: LOG, "can't remove {}: {e}", p.display());
                    }
                }
            }
            _ => info!(target: LOG, "storage '{}' starts empty", store.name()),
        }
        let snapshot = snapshot.map(|path| {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let thread = (!checkpoint.is_zero() && !read_only).then(|| {
                let (store, path, stop) = (Arc::clone(&store), path.clone(), Arc::clone(&stop));
                let saved = store.last_transaction();
                std::thread::Builder::new()
                    .name(format!("checkpoint-{}", store.name()))
                    .spawn(move || checkpoints(&store, &path, checkpoint, &stop, saved))
                    .ok()
            });
            Snapshots {
                path,
                stop,
                thread: Mutex::new(thread.flatten()),
            }
        });
        MemoryBackend {
            store,
            read_only,
            snapshot,
        }
    }
}

const LOG: &str = "ZEO.runzeo";

/// Write the snapshot every `every` when the storage changed since the last one, until told
/// to stop. A failed write is logged and retried at the next checkpoint.
/// `saved` is the last transaction the file (or the start) reflects, read before the thread
/// exists: a commit made before the thread first runs must still count as a change.
fn checkpoints(
    store: &MemoryStorage,
    path: &Path,
    every: Duration,
    stop: &(Mutex<bool>, Condvar),
    mut saved: Tid,
) {
    let (lock, cv) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = cv
            .wait_timeout_while(stopped, every, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        let last = store.last_transaction();
        if last == saved {
            continue;
        }
        match store.save(path) {
            Ok(_) => saved = last,
            Err(e) => warn!(target: LOG, "checkpoint of storage '{}' failed: {e}", store.name()),
        }
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
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        {
            let (lock, cv) = &*snap.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        let thread = snap.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        if self.read_only {
            return Ok(());
        }
        let n = self
            .store
            .save(&snap.path)
            .map_err(|e| StoreError::Transaction(e.to_string()))?;
        info!(target: LOG, "storage '{}': {n} objects saved to {}", self.store.name(), snap.path.display());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(b: &MemoryBackend, oid: u8, data: &[u8]) {
        let meta = TxnMeta {
            tid: None,
            user: Vec::new(),
            description: Vec::new(),
            extension: Value::Map(vec![]),
            status: b' ',
        };
        let mut c = b.begin(&meta).unwrap();
        let o = [0, 0, 0, 0, 0, 0, 0, oid];
        let serial = b.get_tid(&o).unwrap_or([0; 8]);
        c.store(&o, &serial, data).unwrap();
        c.vote().unwrap();
        c.finish().unwrap();
    }

    #[test]
    fn checkpoints_and_the_snapshot_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s.snapshot");
        let store = || MemoryStorage::new("s", Duration::from_secs(300));
        let b = MemoryBackend::open(
            store(),
            false,
            Some(snap.clone()),
            Duration::from_millis(30),
        );
        commit(&b, 1, b"one");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !snap.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(snap.exists(), "a checkpoint was written");
        commit(&b, 2, b"two");
        b.close().unwrap();
        let again = MemoryBackend::open(store(), false, Some(snap.clone()), Duration::ZERO);
        assert!(again.get_tid(&[0, 0, 0, 0, 0, 0, 0, 2]).is_ok());
        assert!(again.last_transaction() > b.last_transaction());
        // Without checkpoints the restored file is consumed: a crash comes back empty.
        assert!(!snap.exists());
        drop(again);
        let empty = MemoryBackend::open(store(), false, Some(snap), Duration::ZERO);
        assert!(empty.get_tid(&[0, 0, 0, 0, 0, 0, 0, 2]).is_err());
    }
}
