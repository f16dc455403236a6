//! [`FileStorage`]: opening, reads, and the state shared with the commit path.

use std::fs::OpenOptions as FsOpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::blob::BlobDir;
use super::commit::{CommitLock, Transaction};
use super::datafile::{DataFile, RecordHeader};
use super::error::{Result, StorageError};
use super::format::{FILE_HDR_LEN, MAGIC_FS21, MAGIC_FS30};
use super::index::OidIndex;
use super::indexfile::{ReadIndexError, index_path, read_index_file, suffixed, write_index_file};
use super::lock::LockFile;
use super::scan::{self, ScanOutcome, ScanParams};
use super::types::{Oid, Tid, TxnMeta};

/// How to open a storage. The default: read-write, no blobs, a progress bar while
/// scanning when stderr is a terminal.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Open without the lock; never modify any file.
    pub read_only: bool,
    /// Replace any existing file (and blob directory) with an empty storage.
    pub create: bool,
    /// Enable blobs, kept in this directory.
    pub blob_dir: Option<PathBuf>,
    /// Refuse commits that would grow the file past this many bytes.
    pub quota: Option<u64>,
    /// Read-only time travel: only transactions with tid < stop are visible.
    pub stop: Option<Tid>,
    /// Show a progress bar while scanning (only when stderr is a terminal).
    pub progress: bool,
    /// Do not read `Data.fs.index` (always scan).
    pub ignore_index: bool,
    /// Also sync at vote, not only at finish. Python syncs once per commit (at finish);
    /// that is the default. With this, a power failure during the finish sync cannot
    /// leave a committed status byte over data blocks that never reached the disk (§5),
    /// at the cost of a second sync per commit.
    pub sync_on_vote: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            create: false,
            blob_dir: None,
            quota: None,
            stop: None,
            progress: true,
            ignore_index: false,
            sync_on_vote: false,
        }
    }
}

impl OpenOptions {
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }
    pub fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    pub fn blob_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.blob_dir = Some(dir.into());
        self
    }
    pub fn quota(mut self, bytes: u64) -> Self {
        self.quota = Some(bytes);
        self
    }
    pub fn stop(mut self, tid: Tid) -> Self {
        self.stop = Some(tid);
        self
    }
    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
    pub fn sync_on_vote(mut self, yes: bool) -> Self {
        self.sync_on_vote = yes;
        self
    }
    pub fn ignore_index(mut self, yes: bool) -> Self {
        self.ignore_index = yes;
        self
    }

    pub fn open(&self, path: impl AsRef<Path>) -> Result<FileStorage> {
        FileStorage::open_with(path.as_ref(), self)
    }
}

/// What is visible to readers: changed by `finish` and by a pack's swap, under the write
/// lock. The data file handles live here, beside the index, so that a reader always gets an
/// index position together with the file it is a position in: a pack's swap replaces both at
/// once (pack/mod.rs, "The swap"), and a reader that took the old pair keeps reading the old,
/// still open and mapped, file.
#[derive(Debug)]
pub(crate) struct Visible {
    pub index: OidIndex,
    /// End of the last committed transaction.
    pub pos: u64,
    pub last_tid: Tid,
    pub df: Arc<DataFile>,
    /// The same file, never mapped: for iterators and other sequential passes (undo log,
    /// recent transactions). Mapping what they read would make the process's resident set
    /// grow with every page a pass has seen, where `pread` leaves those pages to the page
    /// cache; the map is for the random loads it makes cheaper.
    pub scan_df: Arc<DataFile>,
    /// Bumped by every swap of the file (pack, replica resync): a replication sender
    /// that saw another value is reading a file that is no longer `Data.fs` (replica.rs).
    pub generation: u64,
}

/// The commit gate: at most one [`CommitLock`] exists per storage.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub busy: bool,
    /// Threads blocked in [`FileStorage::lock_commit`]. Releasing the lock notifies the
    /// condition variable only when this is non-zero: std's `Condvar::notify_one` makes a
    /// futex system call even when nobody waits, once per commit otherwise.
    pub waiters: usize,
    /// The last tid handed out or seen (including a removed `c` transaction's).
    pub last_generated: Tid,
    /// A pack waits for the lock for its swap: it goes first, so that back-to-back commits
    /// (each `try_lock_commit` right after the previous release) cannot starve it.
    pub pack_waiting: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The path of `Data.fs` (the files themselves are in [`Visible`]).
    pub path: PathBuf,
    pub read_only: bool,
    pub fs21: bool,
    pub state: RwLock<Visible>,
    /// Highest oid in use or handed out.
    pub max_oid: Mutex<u64>,
    pub gate: Mutex<Gate>,
    pub gate_cv: Condvar,
    pub blobs: Option<BlobDir>,
    pub quota: Option<u64>,
    pub sync_on_vote: bool,
    pub closed: AtomicBool,
    /// A pack is running (one at a time, pack/mod.rs).
    pub packing: AtomicBool,
    /// Set when a failure left the file in an unknown state: no more commits.
    pub broken: Mutex<Option<String>>,
    /// Held for the storage's lifetime; released when the last clone is dropped.
    pub _lock: Option<LockFile>,
    pub used_index: bool,
    /// The position covered by the `Data.fs.index` on disk, when it is known to be ours
    /// or verified: closing skips rewriting an index that is already current.
    pub saved_index_pos: Mutex<Option<u64>>,
}

/// A FileStorage (`Data.fs`): cheap to clone (all clones share one open storage), `Send`
/// and `Sync`. See the [module documentation](super) for the API tour.
#[derive(Clone)]
pub struct FileStorage {
    pub(crate) inner: Arc<Inner>,
}

/// A summary: the index itself would be millions of lines.
impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = read(&self.inner.state);
        f.debug_struct("FileStorage")
            .field("path", &self.inner.path)
            .field("read_only", &self.inner.read_only)
            .field("objects", &st.index.len())
            .field("size", &st.pos)
            .field("last_tid", &st.last_tid)
            .finish()
    }
}

/// One revision returned by [`FileStorage::load_before`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub data: Vec<u8>,
    /// The tid of the revision (of the backpointer record for an undone revision).
    pub start: Tid,
    /// The tid of the next revision, `None` when this one is current.
    pub end: Option<Tid>,
}

/// `record_iternext`'s answer: (oid, tid, data, next oid).
pub type IterNext = (Oid, Tid, Vec<u8>, Option<Oid>);

/// One entry of [`FileStorage::history`].
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub tid: Tid,
    /// `TimeStamp(tid).timeTime()`.
    pub time: f64,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The raw extension pickle (empty when there is none).
    pub extension: Vec<u8>,
    /// `plen`: the pickle's size, 0 for a backpointer record.
    pub size: u64,
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FileStorage {
    /// Open read-write (creating the file if missing), no blobs.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStorage> {
        OpenOptions::new().open(path)
    }

    /// Open read-only: no lock, no change to any file.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<FileStorage> {
        OpenOptions::new().read_only(true).open(path)
    }

    fn open_with(path: &Path, opts: &OpenOptions) -> Result<FileStorage> {
        let read_only = opts.read_only;
        if opts.create && read_only {
            return Err(StorageError::Transaction(
                "a storage cannot be created read-only".into(),
            ));
        }
        let lock = if read_only {
            None
        } else {
            Some(LockFile::acquire(&suffixed(path, ".lock"))?)
        };
        let file = FsOpenOptions::new()
            .read(true)
            .write(!read_only)
            .create(!read_only)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(path, None, e))?;
        let scan_file = file
            .try_clone()
            .map_err(|e| StorageError::io(path, None, e))?;
        let df = DataFile::new(file, path);
        if !read_only {
            // A transaction buffer left behind by a crash (we hold the lock, so no writer
            // is using it; Python truncates it at every open for the same reason).
            scan::remove_if_exists(&suffixed(path, ".tmp"))?;
            // What an interrupted pack left (the old file is intact, pack/mod.rs).
            super::pack::remove_stale(path)?;
            // What an interrupted replica resync left (replica.rs).
            super::replica::remove_stale(path, opts.blob_dir.as_deref())?;
        }
        if opts.create {
            df.file
                .set_len(0)
                .map_err(|e| StorageError::io(path, Some(0), e))?;
            scan::remove_if_exists(&index_path(path))?;
            if let Some(dir) = &opts.blob_dir
                && dir.exists()
            {
                std::fs::remove_dir_all(dir).map_err(|e| StorageError::io(dir, None, e))?;
            }
        }
        let size = df
            .file
            .metadata()
            .map_err(|e| StorageError::io(path, None, e))?
            .len();
        let mut fs21 = false;
        if size == 0 {
            if !read_only {
                scan::init_empty(&df)?;
            }
        } else {
            let mut magic = [0u8; 4];
            let n = df.read_at_most(&mut magic, 0)?;
            if n < 4 || (&magic != MAGIC_FS30 && &magic != MAGIC_FS21) {
                return Err(StorageError::Format {
                    path: path.to_path_buf(),
                    msg: format!(
                        "invalid file header {:?}",
                        String::from_utf8_lossy(&magic[..n])
                    ),
                });
            }
            if &magic == MAGIC_FS21 {
                if !read_only {
                    return Err(StorageError::Format {
                        path: path.to_path_buf(),
                        msg: "FS21 (Python 2) files can only be opened read-only; convert them with zodbupdate --convert-py3".into(),
                    });
                }
                fs21 = true;
            }
        }
        let (mut index, outcome, source) = load_index(&df, opts, size)?;
        let used_index = matches!(source, IndexSource::File { .. });
        let mut saved_index_pos = match source {
            IndexSource::File { pos } => Some(pos),
            _ => None,
        };
        if !used_index && !read_only {
            // Python saves right after a full rescan, so the next open is quick (and a
            // stale index left beside an emptied file is replaced at once).
            save_index(&df, outcome.pos, &index)?;
            saved_index_pos = Some(outcome.pos);
        }
        index.shrink_to_fit();
        let max_oid = index.max_oid().map_or(0, |o| o.0);
        let blobs = match &opts.blob_dir {
            Some(dir) => Some(BlobDir::open(dir, read_only)?),
            None => None,
        };
        // After the scan and any recovery truncation: `outcome.pos` is the committed end
        // (datafile.rs, "The committed map").
        df.map_committed(outcome.pos);
        warn_if_future(path, outcome.last_tid);
        tracing::debug!(target: "ZODB.FileStorage",
            "opened {}{}: {} objects, end {}, last transaction {}, {}",
            path.display(),
            if read_only { " read-only" } else { "" },
            index.len(),
            outcome.pos,
            outcome.last_tid,
            if used_index {
                "index file used"
            } else {
                "scanned"
            }
        );
        Ok(FileStorage {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                read_only,
                fs21,
                state: RwLock::new(Visible {
                    index,
                    pos: outcome.pos,
                    last_tid: outcome.last_tid,
                    df: Arc::new(df),
                    scan_df: Arc::new(DataFile::new(scan_file, path)),
                    generation: 0,
                }),
                max_oid: Mutex::new(max_oid),
                gate: Mutex::new(Gate {
                    busy: false,
                    waiters: 0,
                    pack_waiting: false,
                    last_generated: outcome.tid_floor.max(outcome.last_tid),
                }),
                gate_cv: Condvar::new(),
                blobs,
                quota: opts.quota,
                sync_on_vote: opts.sync_on_vote,
                closed: AtomicBool::new(false),
                packing: AtomicBool::new(false),
                broken: Mutex::new(None),
                _lock: lock,
                used_index,
                saved_index_pos: Mutex::new(saved_index_pos),
            }),
        })
    }

    /// The path of `Data.fs`.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// True when the file has the Python 2 magic `FS21` (read-only access).
    pub fn is_fs21(&self) -> bool {
        self.inner.fs21
    }

    /// True when the open used a saved `Data.fs.index` instead of a full scan.
    pub fn used_index_file(&self) -> bool {
        self.inner.used_index
    }

    /// Number of objects (`len(storage)`; deleted objects count until a pack).
    pub fn len(&self) -> usize {
        read(&self.inner.state).index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `getSize()`: the committed end of the file.
    pub fn size(&self) -> u64 {
        read(&self.inner.state).pos
    }

    /// Write the oid index of the committed part in Python's `Data.fs.index` format to
    /// `path` (through a temporary file), returning the position it covers. For backups:
    /// repozo keeps such a file beside every backup file, and a restore copies it so that
    /// the restored file opens without a rescan. The index and the position come from the
    /// same snapshot, so they agree even while a writer commits.
    pub fn save_index_to(&self, path: &Path) -> Result<u64> {
        let st = read(&self.inner.state);
        write_index_file(path, st.pos, &st.index).map_err(|e| StorageError::io(path, None, e))?;
        Ok(st.pos)
    }

    /// `lastTransaction()`: the tid of the last committed transaction (`Tid::ZERO` when
    /// there is none).
    pub fn last_transaction(&self) -> Tid {
        read(&self.inner.state).last_tid
    }

    /// Approximate heap bytes used by the oid index.
    pub fn index_memory_bytes(&self) -> usize {
        read(&self.inner.state).index.memory_bytes()
    }

    /// The position of `oid`'s current record: a read lock and an index lookup (a direct
    /// load in a dense bucket, see [`OidIndex::get`]).
    /// Together with the file it is a position in (see [`Visible`]).
    pub(crate) fn current_pos(&self, oid: Oid) -> Result<(u64, Arc<DataFile>)> {
        let st = read(&self.inner.state);
        // Not `ok_or`: that builds (and drops, out of line) an unused error on every hit.
        match st.index.get(oid) {
            Some(pos) => Ok((pos, Arc::clone(&st.df))),
            None => Err(StorageError::PosKey { oid, tid: None }),
        }
    }

    /// The mapped data file (for loads): the current one, which a pack may replace.
    pub(crate) fn df(&self) -> Arc<DataFile> {
        Arc::clone(&read(&self.inner.state).df)
    }

    /// The unmapped handle of the current data file and the committed end in it, read
    /// together (a pack's swap replaces both).
    pub(crate) fn scan_view(&self) -> (Arc<DataFile>, u64) {
        let st = read(&self.inner.state);
        (Arc::clone(&st.scan_df), st.pos)
    }

    fn current_record(&self, oid: Oid) -> Result<RecordHeader> {
        let (pos, df) = self.current_pos(oid)?;
        df.record_of(pos, oid)
    }

    /// `load(oid)`: the current data and its tid. `PosKey` for an unknown oid or a deleted
    /// object.
    pub fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        let (pos, df) = self.current_pos(oid)?;
        let (r, state) = df.record_with_state(pos, oid)?;
        match state {
            Some(data) => Ok((data, r.h.tid)),
            None => Err(StorageError::PosKey { oid, tid: None }),
        }
    }

    /// `getTid(oid)`: the tid of the current revision; `PosKey` when deleted.
    pub fn get_tid(&self, oid: Oid) -> Result<Tid> {
        let r = self.current_record(oid)?;
        if r.is_deletion() {
            return Err(StorageError::PosKey { oid, tid: None });
        }
        Ok(r.h.tid)
    }

    /// The tid of the current record even when it is a deletion (what conflict checks
    /// compare against); `None` for an unknown oid.
    pub fn committed_tid(&self, oid: Oid) -> Result<Option<Tid>> {
        let (pos, df) = {
            let st = read(&self.inner.state);
            (st.index.get(oid), Arc::clone(&st.df))
        };
        match pos {
            Some(p) => Ok(Some(df.record_of(p, oid)?.h.tid)),
            None => Ok(None),
        }
    }

    /// Walk `prev` pointers from the current record; returns the file walked (one file for
    /// the whole walk, even when a pack swaps files meanwhile).
    fn walk_prev(
        &self,
        oid: Oid,
        mut f: impl FnMut(&DataFile, &RecordHeader) -> Result<bool>,
    ) -> Result<Arc<DataFile>> {
        let (mut pos, df) = self.current_pos(oid)?;
        loop {
            let r = df.record_of(pos, oid)?;
            if !f(&df, &r)? || r.h.prev == 0 {
                return Ok(df);
            }
            if r.h.prev >= pos {
                return Err(StorageError::corrupted(
                    &self.inner.path,
                    pos,
                    format!(
                        "previous-record pointer {} does not point backwards",
                        r.h.prev
                    ),
                ));
            }
            pos = r.h.prev;
        }
    }

    /// `loadSerial(oid, serial)`: the data of the revision written by `serial`.
    pub fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let mut found = None;
        let df = self.walk_prev(oid, |_, r| {
            if r.h.tid == serial {
                found = Some(*r);
                return Ok(false);
            }
            Ok(r.h.tid > serial)
        })?;
        let missing = StorageError::PosKey {
            oid,
            tid: Some(serial),
        };
        match found {
            Some(r) => df.record_state(&r)?.ok_or(missing),
            None => Err(missing),
        }
    }

    /// `loadBefore(oid, tid)`: the revision current just before `tid` (spec §2.9).
    /// `Ok(None)` when the object had no revision before `tid`; `PosKey` for an unknown
    /// oid, and when the revision found is a deletion.
    pub fn load_before(&self, oid: Oid, tid: Tid) -> Result<Option<Revision>> {
        let mut end = None;
        let mut found = None;
        let df = self.walk_prev(oid, |_, r| {
            if r.h.tid < tid {
                found = Some(*r);
                return Ok(false);
            }
            end = Some(r.h.tid);
            Ok(true)
        })?;
        let Some(r) = found else {
            return Ok(None);
        };
        match df.record_state(&r)? {
            Some(data) => Ok(Some(Revision {
                data,
                start: r.h.tid,
                end,
            })),
            None => Err(StorageError::PosKey {
                oid,
                tid: Some(r.h.tid),
            }),
        }
    }

    /// `history(oid, size)`: up to `size` revisions, newest first.
    pub fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let mut out = Vec::new();
        // The walk reached these records from the index, so their transactions are
        // committed; `size()` could belong to another file after a pack's swap, so only
        // the header's own consistency is checked here.
        let end = u64::MAX;
        self.walk_prev(oid, |df, r| {
            if out.len() >= size {
                return Ok(false);
            }
            let th = df.txn_header(r.h.tloc, end)?;
            let (user, description, extension) = df.txn_meta(r.h.tloc, &th)?;
            out.push(HistoryEntry {
                tid: r.h.tid,
                time: r.h.tid.timestamp().time_time(),
                user,
                description,
                extension,
                size: r.h.plen,
            });
            Ok(out.len() < size)
        })?;
        Ok(out)
    }

    /// `record_iternext(next)`: the first object with oid ≥ `next` (or the smallest),
    /// its current tid and data, and the following oid. `Ok(None)` when there is none.
    /// A deleted object yields `PosKey`, as in Python.
    pub fn record_iternext(&self, next: Option<Oid>) -> Result<Option<IterNext>> {
        let (oid, following) = {
            let st = read(&self.inner.state);
            let Some(oid) = st.index.min_key_from(next.unwrap_or(Oid(0))) else {
                return Ok(None);
            };
            let following = oid
                .0
                .checked_add(1)
                .and_then(|n| st.index.min_key_from(Oid(n)));
            (oid, following)
        };
        let (data, tid) = self.load(oid)?;
        Ok(Some((oid, tid, data, following)))
    }

    /// All oids with their current positions, in oid order (a snapshot).
    pub fn oids(&self) -> Vec<Oid> {
        read(&self.inner.state)
            .index
            .iter()
            .map(|(o, _)| o)
            .collect()
    }

    /// `new_oid()`: the next unused oid (the highest stored or handed-out oid plus one).
    pub fn new_oid(&self) -> Result<Oid> {
        self.check_writable()?;
        let mut max = lock(&self.inner.max_oid);
        *max = max
            .checked_add(1)
            .ok_or_else(|| StorageError::Transaction("the oid space is exhausted".into()))?;
        Ok(Oid(*max))
    }

    /// `n` fresh oids (ZEO's `new_oids`).
    pub fn new_oids(&self, n: usize) -> Result<Vec<Oid>> {
        (0..n).map(|_| self.new_oid()).collect()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(StorageError::ReadOnly {
                path: self.inner.path.clone(),
            });
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StorageError::Closed {
                path: self.inner.path.clone(),
            });
        }
        if let Some(why) = lock(&self.inner.broken).as_ref() {
            return Err(StorageError::Transaction(format!(
                "{}: no more commits after an earlier failure: {why}",
                self.inner.path.display()
            )));
        }
        Ok(())
    }

    /// Wait for the commit lock (one committer at a time).
    pub fn lock_commit(&self) -> Result<CommitLock> {
        self.check_writable()?;
        let mut gate = lock(&self.inner.gate);
        while gate.busy || gate.pack_waiting {
            // Counted under the gate mutex, so a releaser that sees 0 cannot miss us.
            gate.waiters += 1;
            gate = self
                .inner
                .gate_cv
                .wait(gate)
                .unwrap_or_else(|e| e.into_inner());
            gate.waiters -= 1;
        }
        gate.busy = true;
        Ok(CommitLock::new(self.clone()))
    }

    /// Take the commit lock if it is free: `Ok(None)` when another transaction holds it
    /// (the caller owns the queue of waiting transactions and retries when the holder ends).
    pub fn try_lock_commit(&self) -> Result<Option<CommitLock>> {
        self.check_writable()?;
        let mut gate = lock(&self.inner.gate);
        if gate.busy || gate.pack_waiting {
            return Ok(None);
        }
        gate.busy = true;
        Ok(Some(CommitLock::new(self.clone())))
    }

    /// The commit lock for a pack's swap: ahead of every other waiter (see `Gate`).
    pub(crate) fn lock_commit_for_pack(&self) -> Result<CommitLock> {
        self.check_writable()?;
        let mut gate = lock(&self.inner.gate);
        gate.pack_waiting = true;
        while gate.busy {
            gate.waiters += 1;
            gate = self
                .inner
                .gate_cv
                .wait(gate)
                .unwrap_or_else(|e| e.into_inner());
            gate.waiters -= 1;
        }
        gate.pack_waiting = false;
        gate.busy = true;
        Ok(CommitLock::new(self.clone()))
    }

    /// True while a transaction holds the commit lock.
    pub fn commit_in_progress(&self) -> bool {
        lock(&self.inner.gate).busy
    }

    /// Begin a transaction with a new tid, waiting for the commit lock.
    pub fn begin(&self, meta: TxnMeta) -> Result<Transaction> {
        self.lock_commit()?.begin(meta)
    }

    /// The blob directory, when blobs are enabled.
    pub fn blob_dir(&self) -> Option<&Path> {
        self.inner.blobs.as_ref().map(|b| b.root())
    }

    /// Where to put uploaded blob files before [`Transaction::store_blob`] (same file
    /// system as the blob directory).
    pub fn blob_tmp_dir(&self) -> Result<PathBuf> {
        Ok(self.blobs()?.tmp_dir())
    }

    pub(crate) fn blobs(&self) -> Result<&BlobDir> {
        self.inner.blobs.as_ref().ok_or_else(|| StorageError::Blob {
            path: self.inner.path.clone(),
            msg: "this storage has no blob directory".into(),
        })
    }

    /// `loadBlob(oid, serial)`: the path of a committed blob revision (`PosKey` when there
    /// is no such file).
    pub fn load_blob(&self, oid: Oid, serial: Tid) -> Result<PathBuf> {
        let path = self.blobs()?.blob_path(oid, serial);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StorageError::PosKey {
                oid,
                tid: Some(serial),
            })
        }
    }

    /// Close: refuse further transactions and write `Data.fs.index` (read-write only).
    /// Reads keep working until the last clone is dropped, which releases the lock file.
    /// Does not wait for a transaction in progress: the index covers the committed part,
    /// and a transaction finished later only appends after it (both Python and zodbctl
    /// scan what follows the index's position).
    pub fn close(&self) -> Result<()> {
        if self.inner.read_only || self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if lock(&self.inner.broken).is_some() {
            return Ok(());
        }
        self.inner.save_index_if_changed()
    }
}

impl Inner {
    fn save_index_if_changed(&self) -> Result<()> {
        let st = read(&self.state);
        let mut saved = lock(&self.saved_index_pos);
        if *saved == Some(st.pos) {
            return Ok(());
        }
        save_index(&st.df, st.pos, &st.index)?;
        *saved = Some(st.pos);
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.read_only && !self.closed.load(Ordering::SeqCst) && lock(&self.broken).is_none() {
            if let Err(e) = self.save_index_if_changed() {
                tracing::warn!(target: "ZODB.FileStorage", "{e}");
            }
        }
    }
}

/// Where the index of an open came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexSource {
    /// An empty file: nothing to index.
    Empty,
    /// `Data.fs.index`, covering the file up to `pos`.
    File { pos: u64 },
    /// A full scan.
    Scanned,
}

fn save_index(df: &DataFile, pos: u64, index: &OidIndex) -> Result<()> {
    let ipath = index_path(&df.path);
    write_index_file(&ipath, pos, index).map_err(|e| StorageError::io(&ipath, None, e))
}

fn load_index(
    df: &DataFile,
    opts: &OpenOptions,
    size: u64,
) -> Result<(OidIndex, ScanOutcome, IndexSource)> {
    let mut params = ScanParams {
        start: FILE_HDR_LEN,
        start_tid: Tid::ZERO,
        read_only: opts.read_only,
        stop: opts.stop,
        progress: opts.progress,
    };
    if size <= FILE_HDR_LEN {
        return Ok((
            OidIndex::new(),
            ScanOutcome {
                pos: FILE_HDR_LEN,
                last_tid: Tid::ZERO,
                tid_floor: Tid::ZERO,
                truncated: None,
            },
            IndexSource::Empty,
        ));
    }
    if !opts.ignore_index && opts.stop.is_none() {
        let ipath = index_path(&df.path);
        match read_index_file(&ipath) {
            Ok((pos, index)) => match scan::index_is_sane(df, &index, pos, size)? {
                Some(ltid) => {
                    params.start = pos;
                    params.start_tid = ltid;
                    let mut index = index;
                    let outcome = scan::scan(df, &mut index, &params)?;
                    let outcome = ScanOutcome {
                        last_tid: outcome.last_tid.max(ltid),
                        ..outcome
                    };
                    return Ok((index, outcome, IndexSource::File { pos }));
                }
                None => tracing::warn!(target: "ZODB.FileStorage",
                    "ignoring index {}: it does not match the data file",
                    ipath.display()
                ),
            },
            Err(ReadIndexError::Missing) => {}
            Err(e) => {
                tracing::warn!(target: "ZODB.FileStorage", "ignoring index {}: {e}", ipath.display())
            }
        }
    }
    let mut index = OidIndex::new();
    let outcome = scan::scan(df, &mut index, &params)?;
    Ok((index, outcome, IndexSource::Scanned))
}

fn warn_if_future(path: &Path, last: Tid) {
    if last == Tid::ZERO {
        return;
    }
    let now = super::timestamp::TimeStamp::now().time_time();
    let ahead = last.timestamp().time_time() - now;
    if ahead > 1800.0 {
        tracing::error!(target: "ZODB.FileStorage",
            "{}: database records {ahead:.0} seconds in the future",
            path.display()
        );
    } else if ahead > 0.0 {
        tracing::warn!(target: "ZODB.FileStorage",
            "{}: database records {ahead:.0} seconds in the future",
            path.display()
        );
    }
}
