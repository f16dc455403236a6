//! Two-phase commit (spec §5, §7, §2.6.1).
//!
//! A [`CommitLock`] is the storage's single commit slot; [`CommitLock::begin`] turns it into
//! a [`Transaction`]. Stores are checked for conflicts immediately and buffered in memory,
//! already formatted with their final positions; nothing touches `Data.fs` before
//! [`Transaction::vote`], which writes the whole transaction with status `c` after the
//! committed end. [`Transaction::finish`] flips that one status byte to ` `,
//! syncs, and publishes the new records to readers. [`Transaction::abort`] (or dropping the
//! transaction) truncates back. Readers never look past the committed end, so they see
//! the transaction all at once or not at all; after a crash, the open-time recovery
//! removes a `c` or torn transaction.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::datafile::RecordHeader;
use super::error::{Result, StorageError};
use super::filestorage::{FileStorage, lock, read, write};
use super::format::{
    DATA_HDR_LEN, DataHeader, Payload, Status, TXN_HDR_LEN, encode_data_record, encode_txn_head,
    encode_txn_trailer,
};
use super::index::MAX_POS;
use super::indexfile::suffixed;
use super::timestamp::TimeStamp;
use super::txnbuf::TxnBuffer;
use super::types::{Oid, Tid, TxnMeta};

/// The commit slot of a storage. Held from `begin` to `finish`/`abort`; released on drop.
#[derive(Debug)]
pub struct CommitLock {
    storage: FileStorage,
}

impl CommitLock {
    pub(crate) fn new(storage: FileStorage) -> CommitLock {
        CommitLock { storage }
    }

    /// Begin a transaction with a new tid: the current time, made later than every tid
    /// the storage has seen (`laterThan`, §3.2).
    pub fn begin(self, meta: TxnMeta) -> Result<Transaction> {
        self.begin_with(meta, None, Status::Committed)
    }

    /// Begin with an explicit tid (copying, replication): refused unless it is after the
    /// last committed transaction. `status` is ` ` or `p` (copy of a packed transaction).
    pub fn begin_at(self, meta: TxnMeta, tid: Tid, status: Status) -> Result<Transaction> {
        self.begin_with(meta, Some(tid), status)
    }

    fn begin_with(self, meta: TxnMeta, tid: Option<Tid>, status: Status) -> Result<Transaction> {
        self.storage.check_writable()?;
        meta.check()?;
        if !matches!(status, Status::Committed | Status::Packed) {
            return Err(StorageError::Transaction(format!(
                "a transaction can only be written with status ' ' or 'p', not {:?}",
                status.byte() as char
            )));
        }
        let inner = &self.storage.inner;
        let (base, last_tid) = {
            let st = read(&inner.state);
            (st.pos, st.last_tid)
        };
        let tid = {
            let mut gate = lock(&inner.gate);
            let tid = match tid {
                Some(t) => {
                    if t <= last_tid {
                        return Err(StorageError::TidNotIncreasing {
                            tid: t,
                            last: last_tid,
                        });
                    }
                    t
                }
                None => {
                    let floor = gate.last_generated.max(last_tid);
                    TimeStamp::now()
                        .later_than(TimeStamp::from_tid(floor))
                        .tid()
                }
            };
            gate.last_generated = gate.last_generated.max(tid);
            tid
        };
        let hlen =
            TXN_HDR_LEN + (meta.user.len() + meta.description.len() + meta.extension.len()) as u64;
        let buf = TxnBuffer::new(suffixed(self.storage.path(), ".tmp"));
        Ok(Transaction {
            lock: Some(self),
            tid,
            status,
            meta,
            base,
            hlen,
            buf,
            tindex: HashMap::new(),
            oids: Vec::new(),
            blob_files: Vec::new(),
            voted: false,
            durable: false,
        })
    }
}

impl Drop for CommitLock {
    fn drop(&mut self) {
        let inner = &self.storage.inner;
        let waiting = {
            let mut gate = lock(&inner.gate);
            gate.busy = false;
            gate.waiters > 0
        };
        // No waiter, no wake-up: this runs once per commit, and an unneeded notify is a
        // futex system call. A thread that starts waiting after the unlock sees busy false.
        // All waiters: a pack waiting for its swap must be among those woken (the others
        // wait on while it holds the lock; there is rarely more than one waiter).
        if waiting {
            inner.gate_cv.notify_all();
        }
    }
}

/// What [`Transaction::finish`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub tid: Tid,
    /// The oids the transaction wrote, each once, in first-write order (for invalidations).
    pub oids: Vec<Oid>,
}

/// A transaction in progress: owns the commit lock; `Send`, so a server can keep it across
/// awaits. Dropping it without `finish` aborts it.
#[derive(Debug)]
pub struct Transaction {
    lock: Option<CommitLock>,
    tid: Tid,
    status: Status,
    meta: TxnMeta,
    /// The committed end when the transaction began: where it will be written.
    base: u64,
    hlen: u64,
    /// The data records, formatted with their final positions.
    buf: TxnBuffer,
    /// oid → position of its latest record in this transaction.
    tindex: HashMap<Oid, u64>,
    oids: Vec<Oid>,
    /// Blob revisions moved into place by this transaction (removed on abort).
    blob_files: Vec<Oid>,
    voted: bool,
    /// The status byte is flipped and synced: the transaction is committed on disk but not
    /// yet visible to readers (see [`Transaction::make_durable`]).
    durable: bool,
}

impl Transaction {
    fn storage(&self) -> &FileStorage {
        // Present until finish/abort consume the transaction.
        &self
            .lock
            .as_ref()
            .expect("transaction already ended")
            .storage
    }

    /// The transaction's tid.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    pub fn meta(&self) -> &TxnMeta {
        &self.meta
    }

    /// The oids written so far.
    pub fn oids(&self) -> &[Oid] {
        &self.oids
    }

    /// The byte offset right after this transaction's record (header, data records and
    /// the redundant length): where the next transaction will start. Meaningful after
    /// [`Transaction::vote`] (nothing more can be stored); a replicating server reads the
    /// durable bytes up to here between [`Transaction::make_durable`] and `finish`.
    pub fn end(&self) -> u64 {
        self.base + self.hlen + self.buf.len() + 8
    }

    pub fn is_voted(&self) -> bool {
        self.voted
    }

    fn check_not_voted(&self) -> Result<()> {
        if self.voted {
            return Err(StorageError::Transaction(
                "the transaction has already voted".into(),
            ));
        }
        Ok(())
    }

    /// Position the next record will have in the file.
    fn here(&self) -> u64 {
        self.base + self.hlen + self.buf.len()
    }

    fn append(&mut self, oid: Oid, tid: Tid, prev: u64, payload: Payload<'_>) -> Result<()> {
        let here = self.here();
        let reclen = match payload {
            Payload::Data(d) => DATA_HDR_LEN + d.len() as u64,
            Payload::Back(_) => DATA_HDR_LEN + 8,
        };
        if here + reclen + 8 >= MAX_POS {
            return Err(StorageError::Transaction(
                "the file would grow beyond 2^48 bytes (the index format's limit)".into(),
            ));
        }
        let storage = self.storage();
        if let Some(quota) = storage.inner.quota
            && here > quota
        {
            return Err(StorageError::Quota {
                path: storage.path().to_path_buf(),
                quota,
            });
        }
        {
            let mut max = lock(&storage.inner.max_oid);
            if oid.0 > *max {
                *max = oid.0;
            }
        }
        let path = storage.path().to_path_buf();
        self.buf
            .make_room()
            .map_err(|e| StorageError::io(suffixed(&path, ".tmp"), None, e))?;
        encode_data_record(&mut self.buf.mem, oid, tid, prev, self.base, &payload);
        if self.tindex.insert(oid, here).is_none() {
            self.oids.push(oid);
        }
        Ok(())
    }

    /// `store(oid, serial, data)`: `serial` is the tid the client read (`Tid::ZERO` for a
    /// new object). `Conflict` when the object has a committed revision with another tid
    /// (the storage cannot run Python conflict resolution).
    pub fn store(&mut self, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.check_not_voted()?;
        if data.is_empty() {
            return Err(StorageError::Transaction(format!(
                "refusing to store empty data for oid {oid}"
            )));
        }
        let storage = self.storage().clone();
        let prev = read(&storage.inner.state).index.get(oid);
        if let Some(p) = prev {
            let committed = storage.df().record_of(p, oid)?.h.tid;
            if committed != serial {
                return Err(StorageError::Conflict {
                    oid,
                    serials: (committed, serial),
                });
            }
        }
        self.append(oid, self.tid, prev.unwrap_or(0), Payload::Data(data))
    }

    /// `storeBlob`: store the record, then move `blob_file` (or copy it across file
    /// systems) to the revision's final name. On a conflict the file is left where it is.
    pub fn store_blob(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob_file: &Path,
    ) -> Result<()> {
        let blobs = self.storage().blobs()?.clone();
        let mark = (
            self.buf.len(),
            self.tindex.get(&oid).copied(),
            self.oids.len(),
        );
        self.store(oid, serial, data)?;
        if let Err(e) = blobs.commit_file(oid, self.tid, blob_file) {
            self.rollback_to(oid, mark);
            return Err(e);
        }
        self.blob_files.push(oid);
        Ok(())
    }

    fn rollback_to(&mut self, oid: Oid, (len, tpos, noids): (u64, Option<u64>, usize)) {
        self.buf.truncate(len);
        match tpos {
            Some(p) => {
                self.tindex.insert(oid, p);
            }
            None => {
                self.tindex.remove(&oid);
            }
        }
        self.oids.truncate(noids);
    }

    /// `checkCurrentSerialInTransaction`: `ReadConflict` unless `serial` is the object's
    /// current tid (`PosKey` when it has none).
    pub fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.check_not_voted()?;
        let committed = self.storage().get_tid(oid)?;
        if committed != serial {
            return Err(StorageError::ReadConflict {
                oid,
                serials: (committed, serial),
            });
        }
        Ok(())
    }

    /// `deleteObject(oid, serial)`: write a deletion record. `PosKey` for an unknown oid,
    /// `Conflict` when `serial` is not the current tid.
    pub fn delete(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.check_not_voted()?;
        let storage = self.storage().clone();
        let (prev, _) = storage.current_pos(oid)?;
        let committed = storage.df().record_of(prev, oid)?.h.tid;
        if committed != serial {
            return Err(StorageError::Conflict {
                oid,
                serials: (committed, serial),
            });
        }
        self.append(oid, self.tid, prev, Payload::Back(0))
    }

    /// `restore(oid, serial, data, prev_txn)`: write a revision as given, without conflict
    /// checks (copying storages). `serial` must be the transaction's tid (begin with
    /// [`CommitLock::begin_at`]). `data == None` writes a deletion record. When `prev_txn`
    /// names a transaction of this file holding the same data for `oid`, a backpointer to
    /// it is written instead of the data (a hint, ignored when it does not resolve).
    pub fn restore(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        self.check_not_voted()?;
        if serial != self.tid {
            return Err(StorageError::Transaction(format!(
                "restore of oid {oid} with serial {serial} in transaction {}: the serial must be the transaction's tid",
                self.tid
            )));
        }
        if data.is_some_and(|d| d.is_empty()) {
            return Err(StorageError::Transaction(format!(
                "refusing to restore empty data for oid {oid}"
            )));
        }
        let storage = self.storage().clone();
        let back = match prev_txn {
            Some(t) => match storage.find_transaction(t)? {
                Some(tpos) => storage.data_find(tpos, oid, data)?,
                None => 0,
            },
            None => 0,
        };
        let prev = read(&storage.inner.state).index.get(oid).unwrap_or(0);
        let payload = match (back, data) {
            (b, _) if b != 0 => Payload::Back(b),
            (_, Some(d)) => Payload::Data(d),
            (_, None) => Payload::Back(0),
        };
        self.append(oid, serial, prev, payload)
    }

    /// `restoreBlob`: [`Transaction::restore`] plus moving `blob_file` into place for
    /// this revision (copying storages with blobs).
    pub fn restore_blob(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob_file: &Path,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        let blobs = self.storage().blobs()?.clone();
        let mark = (
            self.buf.len(),
            self.tindex.get(&oid).copied(),
            self.oids.len(),
        );
        self.restore(oid, serial, Some(data), prev_txn)?;
        if let Err(e) = blobs.commit_file(oid, self.tid, blob_file) {
            self.rollback_to(oid, mark);
            return Err(e);
        }
        self.blob_files.push(oid);
        Ok(())
    }

    /// `undo(transaction_id)`: undo the committed transaction `undo_tid` inside this one
    /// (spec §2.6.1): per record a backpointer to the revision before it (or a deletion
    /// record for an undone creation), provided nothing changed the object since, or the
    /// current data equals the data being undone. Returns the oids involved.
    pub fn undo(&mut self, undo_tid: Tid) -> Result<Vec<Oid>> {
        self.check_not_voted()?;
        let storage = self.storage().clone();
        let df = &storage.df();
        let end = storage.size();
        let tpos = storage
            .find_transaction(undo_tid)?
            .ok_or_else(|| StorageError::Undo {
                msg: "Invalid transaction id".into(),
                oid: None,
            })?;
        let th = df.txn_header(tpos, end)?;
        if th.status != Status::Committed {
            return Err(StorageError::Undo {
                msg: "non-undoable transaction".into(),
                oid: None,
            });
        }
        let tend = tpos + th.tlen;
        let mut pos = tpos + th.hlen();
        let mut failures: Vec<(Oid, String)> = Vec::new();
        let mut planned: Vec<(Oid, u64, u64, Option<Tid>)> = Vec::new();
        while pos < tend {
            let r = df.record_header(pos)?;
            let oid = r.h.oid;
            failures.retain(|(o, _)| *o != oid);
            match self.undo_record(&storage, &r) {
                Ok((back, ipos, blob_from)) => planned.push((oid, ipos, back, blob_from)),
                Err(msg) => failures.push((oid, msg)),
            }
            pos += r.h.record_len();
            if pos > tend {
                return Err(StorageError::Undo {
                    msg: "non-undoable transaction".into(),
                    oid: None,
                });
            }
        }
        if let Some((oid, msg)) = failures.into_iter().next() {
            return Err(StorageError::Undo {
                msg,
                oid: Some(oid),
            });
        }
        let mut oids = Vec::new();
        for (oid, ipos, back, blob_from) in planned {
            if let Some(from) = blob_from {
                let blobs = storage.blobs()?;
                blobs.copy_revision(oid, from, self.tid)?;
                self.blob_files.push(oid);
            }
            self.append(oid, self.tid, ipos, Payload::Back(back))?;
            if !oids.contains(&oid) {
                oids.push(oid);
            }
        }
        Ok(oids)
    }

    /// `_transactionalUndoRecord` without conflict resolution: `(backpointer, committed
    /// position, blob revision to copy)`, or the reason undo is impossible.
    fn undo_record(
        &self,
        storage: &FileStorage,
        r: &RecordHeader,
    ) -> std::result::Result<(u64, u64, Option<Tid>), String> {
        let df = &storage.df();
        let oid = r.h.oid;
        let pre = r.h.prev;
        let ipos = read(&storage.inner.state).index.get(oid).unwrap_or(0);
        // The object's current state: from this transaction if it already wrote it (an
        // earlier undo or store), else the committed record; `(data pointer, data)`.
        let current: Option<(u64, Option<Vec<u8>>)> = if let Some(&tp) = self.tindex.get(&oid) {
            let off = tp - self.base - self.hlen;
            let hb = self
                .buf
                .read(off, DATA_HDR_LEN as usize)
                .map_err(|e| e.to_string())?;
            let h = DataHeader::decode(
                hb.as_slice()
                    .try_into()
                    .map_err(|_| "bad buffered record".to_string())?,
            );
            if h.plen > 0 {
                let data = self
                    .buf
                    .read(off + DATA_HDR_LEN, h.plen as usize)
                    .map_err(|e| e.to_string())?;
                Some((tp, Some(data)))
            } else {
                let b = self
                    .buf
                    .read(off + DATA_HDR_LEN, 8)
                    .map_err(|e| e.to_string())?;
                Some((u64::from_be_bytes(b.try_into().unwrap_or([0; 8])), None))
            }
        } else if ipos != r.pos {
            let c = df.record_of(ipos, oid).map_err(|e| e.to_string())?;
            if c.has_data() {
                Some((ipos, None))
            } else {
                Some((c.back, None))
            }
        } else {
            None
        };
        if let Some((cdataptr, cdata)) = current
            && cdataptr != r.pos
        {
            let undone = df
                .record_state(r)
                .map_err(|e| e.to_string())?
                .ok_or("_loadBack() failed")?;
            let cur = match cdata {
                Some(d) => d,
                None => {
                    df.resolve(oid, cdataptr, u64::MAX)
                        .map_err(|e| e.to_string())?
                        .ok_or("_loadBack() failed")?
                        .0
                }
            };
            if undone != cur {
                if pre == 0 {
                    return Err(
                        "Can't undo an add transaction followed by conflicting transactions."
                            .into(),
                    );
                }
                return Err("Some data were modified by a later transaction".into());
            }
        }
        if pre == 0 {
            return Ok((0, ipos, None));
        }
        // Undoing to a blob revision copies its file to the new tid (§10.4).
        let mut blob_from = None;
        if let Some(blobs) = storage.inner.blobs.as_ref()
            && let Ok(Some((data, serial, _))) = df.resolve(oid, pre, u64::MAX)
            && data.windows(9).any(|w| w == b"ZODB.blob")
            && blobs.blob_path(oid, serial).is_file()
        {
            blob_from = Some(serial);
        }
        Ok((pre, ipos, blob_from))
    }

    /// `tpc_vote`: write the transaction after the committed end with status `c` (synced
    /// only with [`OpenOptions::sync_on_vote`](super::OpenOptions::sync_on_vote); Python
    /// syncs once per commit, at finish). On failure the file is truncated back and the transaction can only abort.
    pub fn vote(&mut self) -> Result<()> {
        self.check_not_voted()?;
        let storage = self.storage().clone();
        let df = &storage.df();
        let head = encode_txn_head(
            self.tid,
            Status::Checkpoint,
            &self.meta.user,
            &self.meta.description,
            &self.meta.extension,
            self.buf.len(),
        );
        let tlen = self.hlen + self.buf.len();
        let written = (|| {
            if self.buf.has_spilled() {
                df.file.write_all_at(&head, self.base)?;
                let spilled = self.buf.copy_spilled(&df.file, self.base + self.hlen)?;
                let mut tail = Vec::with_capacity(self.buf.mem.len() + 8);
                tail.extend_from_slice(&self.buf.mem);
                tail.extend_from_slice(&encode_txn_trailer(tlen));
                crash_hook::vote_write(df, &tail, self.base + self.hlen + spilled)
            } else {
                // Everything is in memory (nearly every transaction): one write.
                let mut all = Vec::with_capacity(head.len() + self.buf.mem.len() + 8);
                all.extend_from_slice(&head);
                all.extend_from_slice(&self.buf.mem);
                all.extend_from_slice(&encode_txn_trailer(tlen));
                crash_hook::vote_write(df, &all, self.base)
            }
        })()
        .and_then(|()| {
            if storage.inner.sync_on_vote {
                df.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let _ = df.file.set_len(self.base);
            return Err(StorageError::io(&df.path, Some(self.base), e));
        }
        self.voted = true;
        crash_hook::reached(crash_hook::Stage::AfterVote);
        Ok(())
    }

    /// The first half of `tpc_finish`: flip the status byte and sync once. Afterwards the
    /// transaction is committed on disk (a crash keeps it) but readers do not see it yet, so
    /// a server can sync without holding back its readers, then publish with [`finish`]
    /// (which does no I/O). Calling it again does nothing.
    ///
    /// [`finish`]: Transaction::finish
    pub fn make_durable(&mut self) -> Result<()> {
        if self.durable {
            return Ok(());
        }
        if !self.voted {
            self.vote()?;
        }
        let storage = self.storage().clone();
        let df = &storage.df();
        let status_pos = self.base + 16;
        crash_hook::reached(crash_hook::Stage::BeforeFinish);
        if let Err(e) = df.file.write_all_at(&[self.status.byte()], status_pos) {
            // Nothing changed on disk (or the flip is lost): the record is still `c`.
            return Err(StorageError::io(&df.path, Some(status_pos), e));
        }
        crash_hook::reached(crash_hook::Stage::DuringFinish);
        if let Err(e) = df.file.sync_data() {
            // The status may or may not be on disk: stop committing, like Python's
            // "Failure in _finish. Closing."
            let msg = format!("sync failed after writing the status byte at {status_pos}: {e}");
            tracing::error!(target: "ZODB.FileStorage", "{}: {msg}", df.path.display());
            *lock(&storage.inner.broken) = Some(msg);
            self.voted = false;
            return Err(StorageError::io(&df.path, Some(status_pos), e));
        }
        self.durable = true;
        Ok(())
    }

    /// `tpc_finish`: flip the status byte and sync once (unless [`make_durable`] did), then
    /// publish. Returns the tid and the oids written.
    ///
    /// [`make_durable`]: Transaction::make_durable
    pub fn finish(mut self) -> Result<Committed> {
        self.make_durable()?;
        Ok(self.publish())
    }

    /// Make a durable transaction visible to readers and release the commit lock.
    fn publish(&mut self) -> Committed {
        if let Some(storage) = self.lock.as_ref().map(|l| l.storage.clone()) {
            let end = self.end();
            {
                let mut st = write(&storage.inner.state);
                for (&oid, &pos) in &self.tindex {
                    // Positions were checked against MAX_POS when the records were added.
                    let _ = st.index.insert(oid, pos);
                }
                st.pos = end;
                st.last_tid = self.tid;
            }
            // `end` is durable (make_durable ran) and we still hold the commit lock, so
            // nothing below it can be truncated: it may be mapped (datafile.rs).
            storage.df().committed_grew(end);
        }
        self.voted = false;
        self.durable = false;
        self.blob_files.clear();
        let committed = Committed {
            tid: self.tid,
            oids: std::mem::take(&mut self.oids),
        };
        self.lock = None;
        committed
    }

    /// `tpc_abort`: forget the transaction; after a vote, truncate the file back. Blob
    /// files moved into place by this transaction are removed.
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        if self.durable {
            // Committed on disk already: truncating would lose a transaction a crash would
            // have kept, so an abort (or a drop) after make_durable publishes it instead.
            tracing::warn!(target: "ZODB.FileStorage", "abort after the commit was made durable: kept");
            self.publish();
            return Ok(());
        }
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        let storage = &lock.storage;
        if let Some(blobs) = storage.inner.blobs.as_ref() {
            for &oid in &self.blob_files {
                blobs.remove_revision(oid, self.tid);
            }
        }
        self.blob_files.clear();
        if self.voted {
            self.voted = false;
            let df = &storage.df();
            df.file
                .set_len(self.base)
                .and_then(|()| df.file.sync_data())
                .map_err(|e| StorageError::io(&df.path, Some(self.base), e))?;
        }
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Err(e) = self.abort_inner() {
            tracing::error!(target: "ZODB.FileStorage", "aborting transaction: {e}");
        }
    }
}

/// Fault injection for the crash-safety tests: a child writer process stops at a stage of
/// the commit and waits to be killed. Inert unless a test calls `set_crash_stage`.
#[doc(hidden)]
pub mod crash_hook {
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU8, Ordering};

    use crate::storage::datafile::DataFile;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Stage {
        None = 0,
        /// Half of the vote write is on disk.
        DuringVote = 1,
        AfterVote = 2,
        BeforeFinish = 3,
        /// The status byte is written, the sync not done.
        DuringFinish = 4,
    }

    static STAGE: AtomicU8 = AtomicU8::new(0);

    /// Make the process announce the stage on stdout (`@crash-test@ stage NAME`) and
    /// sleep there forever.
    pub fn set_crash_stage(stage: Stage) {
        STAGE.store(stage as u8, Ordering::SeqCst);
    }

    pub(crate) fn reached(stage: Stage) {
        if stage != Stage::None && STAGE.load(Ordering::SeqCst) == stage as u8 {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "@crash-test@ stage {stage:?}");
            let _ = out.flush();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    /// The last write of the vote (the in-memory records and the redundant length); with
    /// the `DuringVote` stage, half of it is written and the process stops there.
    pub(crate) fn vote_write(df: &DataFile, rec: &[u8], pos: u64) -> io::Result<()> {
        if STAGE.load(Ordering::SeqCst) == Stage::DuringVote as u8 {
            let half = rec.len() / 2;
            df.file.write_all_at(&rec[..half], pos)?;
            df.file.sync_data()?;
            reached(Stage::DuringVote);
        }
        df.file.write_all_at(rec, pos)
    }
}
