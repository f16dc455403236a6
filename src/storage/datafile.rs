//! Reads of Data.fs records: from a read-only memory map of the committed part of the file
//! when it covers the bytes asked for, else positional (`pread`, `FileExt::read_at`). Any
//! number of threads read at once, also while a commit appends past the committed end.
//!
//! # The committed map
//!
//! A `pread` costs a system call per read (about 15 % of a ZEO server's CPU under pipelined
//! loads: `vfs_read`, `filemap_get_entry`, `touch_atime`, the copy). [`DataFile`] therefore
//! maps `[0, L)` of the file read-only (`MAP_SHARED`, so it is the page cache itself, the
//! same bytes `pread` sees) and copies reads inside `L` out of the map; a read reaching past
//! `L` takes the `pread` path, which is where anything committed after the map was made is.
//!
//! Invariants (each read of the map depends on them):
//!
//! 1. **`L` is never beyond the committed, durable end.** The map is made at open, after the
//!    scan and its recovery (which truncates a torn or unfinished `c` transaction before
//!    anything is mapped), and re-made only by [`DataFile::committed_grew`], which the
//!    commit path calls after `publish` with the end of a transaction whose status byte has
//!    been flipped and synced (`make_durable`).
//! 2. **Nothing below the committed end is ever rewritten or truncated while the storage is
//!    open.** Every write goes after it: `vote` writes the new transaction at the committed
//!    end; the status flip (`c` → ` `) writes the byte at `base + 16` of that new
//!    transaction, beyond the committed end at the time (so beyond `L`); undo writes
//!    backpointer records in a new transaction (FileStorage never flips an old
//!    transaction's status to `u`); an aborted or failed vote truncates back to `base`, the
//!    committed end, which is `≥ L`. Pack (Python's and ours) writes a new file and renames
//!    it over `Data.fs`, which leaves our open inode and its map alone. So the mapped bytes
//!    never change while mapped: a read from the map can never be torn.
//! 3. **The file is never shorter than `L`**, so touching the map cannot raise `SIGBUS`:
//!    by (2) our own truncations stop at the committed end; a read-write storage holds
//!    `Data.fs.lock` (zc.lockfile), so no other well-behaved writer (Python or zodbctl) can
//!    truncate it; read-only opens (ours or Python's) never write. Only a process that
//!    ignores the lock and truncates or rewrites the file in place (e.g. `truncate(1)`, or
//!    `repozo -R -o Data.fs` over a live storage) could shrink it under the map, and then the
//!    process dies of `SIGBUS` where `pread` would have returned garbage or errors.
//! 4. **A read-only storage** (no lock) maps the committed end found by its scan, which
//!    stops before a trailing `c` or torn transaction. A live writer only ever truncates
//!    back to its own committed end, which includes every ` ` transaction the scan saw, so
//!    (2) and (3) hold there too. A read-only storage never sees later commits (its index
//!    is fixed at open), so its map is never re-made.
//!
//! Only loads (`Inner::df`) use the map. Iterators and other sequential passes read through
//! a second, never-mapped handle (`Inner::scan_df`, a `DataFile` that is never given a map),
//! so that a pass over the whole file does not leave every page it saw in the process's
//! resident set. The pages loads touch through the map do count there (as shared file pages,
//! which the page cache holds anyway); a re-map starts the count afresh.
//!
//! Re-mapping is amortised: a new map is made when the committed end has grown past the
//! mapped length by [`REMAP_MIN_GROWTH`] or by 1/[`REMAP_GROWTH_DIVISOR`] of it, whichever
//! is larger. Readers take a read lock on the current map only for the copy (a big read
//! clones its `Arc` and copies without the lock), so a re-map waits at most for the copies
//! in progress and readers wait only for the swap of a pointer; the old map is unmapped
//! when its last reader is done. When a map cannot be made (a file system without `mmap`),
//! reads stay on `pread` (logged at debug level) and no further attempt is made.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use memmap2::Mmap;

use super::error::{Result, StorageError};
use super::format::{DATA_HDR_LEN, DataHeader, TXN_HDR_LEN, TxnHeader, check_txn_header};
use super::types::{Oid, Tid};

/// Re-map when the committed end is at least this far past the mapped length...
pub const REMAP_MIN_GROWTH: u64 = 1 << 20;
/// ...and at least this fraction (1/n) of the mapped length past it.
pub const REMAP_GROWTH_DIVISOR: u64 = 16;
/// Reads up to this size copy under the map's read lock; bigger ones clone the `Arc` first
/// so that a re-map never waits for a long copy.
const COPY_UNDER_LOCK: usize = 64 << 10;

/// The current map of the committed part of the file (see the module documentation).
#[derive(Debug, Default)]
struct CommittedMap {
    current: RwLock<Option<Arc<Mmap>>>,
    /// The mapped length (0: no map), readable without the lock for re-map decisions.
    len: AtomicU64,
    /// Set when mapping failed: reads stay on `pread`.
    disabled: AtomicBool,
}

/// Longest backpointer chain followed before the file is declared damaged (a loop).
const MAX_CHAIN: usize = 100_000;

/// A data record header as read, with its backpointer when it has no data.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub pos: u64,
    pub h: DataHeader,
    /// The backpointer (`plen == 0`), else 0.
    pub back: u64,
}

impl RecordHeader {
    pub fn has_data(&self) -> bool {
        self.h.plen > 0
    }

    /// A deletion ("George Bailey") record: no data and a zero backpointer.
    pub fn is_deletion(&self) -> bool {
        self.h.plen == 0 && self.back == 0
    }

    pub fn data_pos(&self) -> u64 {
        self.pos + DATA_HDR_LEN
    }
}

/// The data file, its name (for error messages) and the map of its committed part.
#[derive(Debug)]
pub struct DataFile {
    pub file: File,
    pub path: PathBuf,
    map: CommittedMap,
}

impl DataFile {
    /// A data file without a map: every read is a `pread` until [`DataFile::map_committed`].
    pub fn new(file: File, path: &Path) -> DataFile {
        DataFile {
            file,
            path: path.to_path_buf(),
            map: CommittedMap::default(),
        }
    }

    /// Map `[0, end)`. `end` must be the committed, durable end: no byte below it is ever
    /// rewritten or truncated while the storage is open (invariants 1–4 above).
    pub fn map_committed(&self, end: u64) {
        if end == 0 || self.map.disabled.load(Ordering::Relaxed) {
            return;
        }
        let Ok(len) = usize::try_from(end) else {
            return;
        };
        // SAFETY: a mapping is only unsound if the mapped bytes change or vanish while a
        // slice of them is alive. `[0, end)` is committed and durable: this process never
        // writes or truncates below the committed end, other writers are kept out by the
        // lock file (read-write) or only append past it (read-only opens), and pack
        // replaces the file by rename (module documentation, invariants 1–4). Slices of the
        // map never outlive the `Arc<Mmap>` they borrow from.
        let made = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) };
        match made {
            Ok(m) => {
                let old = {
                    let mut cur = self.map.current.write().unwrap_or_else(|e| e.into_inner());
                    self.map.len.store(end, Ordering::Relaxed);
                    cur.replace(Arc::new(m))
                };
                // Unmapped here (outside the lock) unless a big read still holds it.
                drop(old);
            }
            Err(e) => {
                self.map.disabled.store(true, Ordering::Relaxed);
                tracing::debug!(target: "ZODB.FileStorage",
                    "{}: cannot map the file ({e}); reading with pread", self.path.display());
            }
        }
    }

    /// The committed, durable end is now `end`: re-map when it has grown well past the
    /// mapped length (amortised; see the module documentation).
    pub fn committed_grew(&self, end: u64) {
        let mapped = self.map.len.load(Ordering::Relaxed);
        let step = REMAP_MIN_GROWTH.max(mapped / REMAP_GROWTH_DIVISOR);
        if end >= mapped.saturating_add(step) {
            self.map_committed(end);
        }
    }

    /// Drop the map and never map again, as after a failed `mmap`.
    #[cfg(test)]
    pub fn disable_map(&self) {
        self.map.disabled.store(true, Ordering::Relaxed);
        *self.map.current.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.map.len.store(0, Ordering::Relaxed);
    }

    /// The mapped length (0 when there is no map).
    #[cfg(test)]
    pub fn mapped_len(&self) -> u64 {
        self.map.len.load(Ordering::Relaxed)
    }

    /// Run `f` on the mapped bytes `[pos, pos + len)`; `None` when the map does not cover
    /// them all (then the caller reads with `pread`).
    fn with_mapped<R>(&self, pos: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let end = pos.checked_add(len as u64)?;
        if end > self.map.len.load(Ordering::Relaxed) {
            return None;
        }
        let cur = self.map.current.read().unwrap_or_else(|e| e.into_inner());
        let m = cur.as_ref()?;
        // The map may have been swapped since the length was read: check against this one.
        let range = usize::try_from(pos).ok()?..usize::try_from(end).ok()?;
        if len <= COPY_UNDER_LOCK {
            return m.get(range).map(f);
        }
        let m = Arc::clone(m);
        drop(cur);
        m.get(range).map(f)
    }

    /// A small, data-carrying record of `oid` at `pos`, header and data, from the map under
    /// one read lock (the common load); `None` for anything else (backpointers, big
    /// records, damage, bytes not mapped), which the caller reads the general way.
    fn mapped_small_record(&self, pos: u64, oid: Oid) -> Option<(DataHeader, Vec<u8>)> {
        let hdr = usize::try_from(DATA_HDR_LEN).ok()?;
        let start = usize::try_from(pos).ok()?;
        if pos.checked_add(DATA_HDR_LEN)? > self.map.len.load(Ordering::Relaxed) {
            return None;
        }
        let cur = self.map.current.read().unwrap_or_else(|e| e.into_inner());
        let m: &[u8] = cur.as_ref()?;
        let h = DataHeader::decode(m.get(start..start.checked_add(hdr)?)?.try_into().ok()?);
        if h.plen == 0 || h.vlen != 0 || h.oid != oid {
            return None;
        }
        let plen = usize::try_from(h.plen)
            .ok()
            .filter(|&n| n <= COPY_UNDER_LOCK)?;
        let data = m
            .get(start + hdr..(start + hdr).checked_add(plen)?)?
            .to_vec();
        Some((h, data))
    }

    /// Read exactly `buf.len()` bytes at `pos`; running into the end of the file means the
    /// record that pointed here is damaged.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        if self
            .with_mapped(pos, buf.len(), |b| buf.copy_from_slice(b))
            .is_some()
        {
            return Ok(());
        }
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => {
                    return Err(StorageError::corrupted(
                        &self.path,
                        pos,
                        format!(
                            "unexpected end of file reading {} bytes at {pos}",
                            buf.len()
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io(&self.path, Some(pos), e)),
            }
        }
        Ok(())
    }

    /// Read up to `buf.len()` bytes at `pos`; fewer only at the end of the file.
    pub fn read_at_most(&self, buf: &mut [u8], pos: u64) -> Result<usize> {
        if let Some(n) = self.with_mapped(pos, buf.len(), |b| {
            buf.copy_from_slice(b);
            b.len()
        }) {
            return Ok(n);
        }
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io(&self.path, Some(pos), e)),
            }
        }
        Ok(done)
    }

    pub fn read_vec(&self, pos: u64, len: u64) -> Result<Vec<u8>> {
        let implausible =
            || StorageError::corrupted(&self.path, pos, format!("implausible length {len}"));
        // A damaged length must not turn into a huge allocation: check big reads against
        // the file's size first.
        if len > 1 << 26 {
            let size = self
                .file
                .metadata()
                .map_err(|e| StorageError::io(&self.path, Some(pos), e))?
                .len();
            if pos.saturating_add(len) > size {
                return Err(implausible());
            }
        }
        let len = usize::try_from(len).map_err(|_| implausible())?;
        if let Some(v) = self.with_mapped(pos, len, <[u8]>::to_vec) {
            return Ok(v);
        }
        let mut v = vec![0u8; len];
        self.read_exact_at(&mut v, pos)?;
        Ok(v)
    }

    pub fn read_u64(&self, pos: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact_at(&mut b, pos)?;
        Ok(u64::from_be_bytes(b))
    }

    /// A transaction header at `tpos`, checked against the committed end `end`.
    pub fn txn_header(&self, tpos: u64, end: u64) -> Result<TxnHeader> {
        let mut b = [0u8; TXN_HDR_LEN as usize];
        self.read_exact_at(&mut b, tpos)?;
        let h = TxnHeader::decode(&b);
        check_txn_header(&self.path, tpos, &h, end)?;
        Ok(h)
    }

    /// The metadata strings of a transaction (user, description, extension).
    pub fn txn_meta(&self, tpos: u64, h: &TxnHeader) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let all = self.read_vec(tpos + TXN_HDR_LEN, h.hlen() - TXN_HDR_LEN)?;
        let u = usize::from(h.ulen);
        let d = u + usize::from(h.dlen);
        Ok((all[..u].to_vec(), all[u..d].to_vec(), all[d..].to_vec()))
    }

    /// The data record header at `pos` (and its backpointer).
    pub fn record_header(&self, pos: u64) -> Result<RecordHeader> {
        let mut b = [0u8; DATA_HDR_LEN as usize + 8];
        let n = self.read_at_most(&mut b, pos)?;
        if n < DATA_HDR_LEN as usize {
            return Err(StorageError::corrupted(
                &self.path,
                pos,
                "data record header runs past the end of the file",
            ));
        }
        let mut hb = [0u8; DATA_HDR_LEN as usize];
        hb.copy_from_slice(&b[..DATA_HDR_LEN as usize]);
        let h = DataHeader::decode(&hb);
        if h.vlen != 0 {
            return Err(StorageError::corrupted(
                &self.path,
                pos,
                format!(
                    "data record has version length {} (versions are not supported)",
                    h.vlen
                ),
            ));
        }
        let back = if h.plen == 0 {
            if n < b.len() {
                return Err(StorageError::corrupted(
                    &self.path,
                    pos,
                    "backpointer runs past the end of the file",
                ));
            }
            u64::from_be_bytes(b[42..50].try_into().unwrap_or([0; 8]))
        } else {
            0
        };
        Ok(RecordHeader { pos, h, back })
    }

    /// The record of `oid` at `pos` and its state (backpointers resolved), reading header
    /// and data in one go when the record is small (the common load): from the map, else
    /// with one `pread`.
    pub fn record_with_state(&self, pos: u64, oid: Oid) -> Result<(RecordHeader, Option<Vec<u8>>)> {
        // From the map: exactly the data (no over-read, no zero fill, one lock).
        if let Some((h, data)) = self.mapped_small_record(pos, oid) {
            return Ok((RecordHeader { pos, h, back: 0 }, Some(data)));
        }
        const GUESS: usize = 2048;
        let mut buf = vec![0u8; GUESS];
        let n = self.read_at_most(&mut buf, pos)?;
        if n < DATA_HDR_LEN as usize {
            return Err(StorageError::corrupted(
                &self.path,
                pos,
                "data record header runs past the end of the file",
            ));
        }
        let h = DataHeader::decode(
            buf[..DATA_HDR_LEN as usize]
                .try_into()
                .map_err(|_| StorageError::corrupted(&self.path, pos, "short header"))?,
        );
        let end = (DATA_HDR_LEN + h.plen) as usize;
        if h.plen == 0 || h.vlen != 0 || h.oid != oid || end > n {
            // The general path: backpointers, big records, and every error report.
            let r = self.record_of(pos, oid)?;
            let state = self.record_state(&r)?;
            return Ok((r, state));
        }
        buf.truncate(end);
        buf.drain(..DATA_HDR_LEN as usize);
        Ok((RecordHeader { pos, h, back: 0 }, Some(buf)))
    }

    /// The record at `pos`, which must be a record of `oid` (index entries and pointers are
    /// checked, so a damaged pointer is reported rather than followed into another object).
    pub fn record_of(&self, pos: u64, oid: Oid) -> Result<RecordHeader> {
        let r = self.record_header(pos)?;
        if r.h.oid != oid {
            return Err(StorageError::corrupted(
                &self.path,
                pos,
                format!("expected a data record of oid {oid}, found oid {}", r.h.oid),
            ));
        }
        Ok(r)
    }

    pub fn record_data(&self, r: &RecordHeader) -> Result<Vec<u8>> {
        self.read_vec(r.data_pos(), r.h.plen)
    }

    /// Follow backpointers from `back` to the data (`_loadBack`): `(data, tid of the record
    /// holding it, its position)`, or `None` when the chain ends in 0 (no state).
    pub fn resolve(
        &self,
        oid: Oid,
        mut back: u64,
        from: u64,
    ) -> Result<Option<(Vec<u8>, Tid, u64)>> {
        let mut here = from;
        for _ in 0..MAX_CHAIN {
            if back == 0 {
                return Ok(None);
            }
            if back >= here {
                return Err(StorageError::corrupted(
                    &self.path,
                    here,
                    format!("backpointer {back} does not point backwards"),
                ));
            }
            let r = self.record_of(back, oid)?;
            if r.has_data() {
                return Ok(Some((self.record_data(&r)?, r.h.tid, r.pos)));
            }
            here = back;
            back = r.back;
        }
        Err(StorageError::corrupted(
            &self.path,
            here,
            "backpointer chain too long",
        ))
    }

    /// The data of record `r`, resolving a backpointer; `None` for no state.
    pub fn record_state(&self, r: &RecordHeader) -> Result<Option<Vec<u8>>> {
        if r.has_data() {
            Ok(Some(self.record_data(r)?))
        } else {
            Ok(self.resolve(r.h.oid, r.back, r.pos)?.map(|(d, _, _)| d))
        }
    }
}
