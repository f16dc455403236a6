//! The engine side of replication: a replica keeps a byte-identical copy of a primary's
//! `Data.fs` by appending the primary's committed transaction records, unchanged, at the
//! same offsets. Nothing here knows about the network; the ZEO server moves the bytes.
//!
//! # Primary (sender)
//!
//! * [`FileStorage::generation`] changes with every swap of the file (pack, resync). A
//!   sender remembers it with its position; when it changed, positions in the old file mean
//!   nothing in the new one and the replica needs a full resync.
//! * [`FileStorage::txn_ending_at`] proves a replica's claimed position: the transaction
//!   ending exactly there and the md5 of its bytes. Equal proofs at the replica's end mean
//!   the replica's file is a prefix of ours (tids increase, so the last transaction pins
//!   the history as far as a replica can have diverged from us: a replica only ever
//!   appends our bytes).
//! * [`FileStorage::raw_chunk`] lists whole transactions from a boundary, and the blob
//!   files they need; [`FileStorage::read_raw`] reads their bytes. Both go through the
//!   unmapped handle, and both accept positions up to the file's length, not only the
//!   visible committed end: synchronous replication ships a transaction after
//!   `Transaction::make_durable` and before its publish, using
//!   [`Transaction::end`](super::Transaction::end) as the limit. Bytes past the visible end are only safe to read while their transaction is
//!   durable and holds the commit lock (it cannot be truncated then); the caller
//!   guarantees that by passing the end it knows to be durable.
//!
//! # Replica (receiver)
//!
//! [`FileStorage::prepare_replicated`] is the replica's vote + make_durable and
//! [`Replicated::publish`] its finish:
//!
//! * **Under the commit lock** from prepare to publish (or drop), so no pack, resync or
//!   local writer can move the end under it.
//! * **Validated before anything is written.** The bytes must be whole transactions at the
//!   committed end, tids increasing (also past the storage's last tid), status ` ` or `p`,
//!   redundant lengths matching, data records exactly filling each transaction with its
//!   tid and position, `prev` and backpointers pointing backwards. So the file stays a
//!   valid FileStorage that Python and our own scan accept, whatever a sender sends; a
//!   refusal ([`StorageError::Replication`]) names the offset and changes nothing.
//! * **One positional write, then one `sync_data`.** The bytes land beyond the committed
//!   end, which readers never look past and the map never covers (`datafile.rs`
//!   invariants 1–2), so readers are undisturbed; blob files are moved into place first,
//!   so a published record never lacks its blob file.
//! * **Durable before visible.** After prepare the transactions are on disk with their
//!   final status (a crash keeps them, as after `make_durable`); `publish` only updates
//!   memory (index, end, last tid, max oid, the tid floor, the committed map), so a server
//!   can publish under its own visibility lock.
//! * **Dropping a [`Replicated`] unpublished truncates back** to where it began (synced)
//!   and removes the blob files it installed: the end readers know is restored exactly.
//!
//! # Full resynchronisation
//!
//! The replica downloads the primary's file to [`resync_path`] (`<Data.fs>.resync`) and
//! its blobs to [`resync_blob_dir`] (`<blob_dir>.resync`), then
//! [`FileStorage::install_file`] swaps them in the way a pack swaps its output (the scan
//! of the new file runs without the commit lock): `Data.fs.index` removed, the rename of
//! the new file over `Data.fs` is the commit point, the directory is synced, and the
//! readers' view (index, end, both handles) is replaced under the state lock at once. A
//! reader holding the old file keeps reading it until it lets go. The blob tree is swapped
//! just before the commit point (current tree → `<blob_dir>.old-resync`, new tree into
//! place) and the old tree removed after it. A read-write open cleans up after a crash:
//! with `<blob_dir>.old-resync` present, the old tree is put back when `<Data.fs>.resync`
//! still exists (the commit point was not reached; this assumes the new file was
//! `resync_path`) and removed otherwise; then a stale `<Data.fs>.resync` and
//! `<blob_dir>.resync` are removed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions as FsOpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};

use super::commit::CommitLock;
use super::datafile::DataFile;
use super::error::{Result, StorageError};
use super::filestorage::{FileStorage, lock, read, write};
use super::format::{
    DATA_HDR_LEN, DataHeader, FILE_HDR_LEN, MAGIC_FS30, Status, TXN_HDR_LEN, TxnHeader,
};
use super::index::{MAX_POS, OidIndex};
use super::indexfile::{index_path, suffixed, write_index_file};
use super::pack::is_blob_record;
use super::scan::{self, ScanParams};
use super::types::{Oid, Tid};

/// Where a replica downloads the primary's file for a full resync: `<Data.fs>.resync`.
pub fn resync_path(data_fs: &Path) -> PathBuf {
    suffixed(data_fs, ".resync")
}

/// Where a replica downloads the primary's blob tree for a full resync:
/// `<blob_dir>.resync`.
pub fn resync_blob_dir(blob_dir: &Path) -> PathBuf {
    suffixed(blob_dir, ".resync")
}

/// The current blob tree while [`FileStorage::install_file`] swaps a new one in.
fn old_blob_dir(blob_dir: &Path) -> PathBuf {
    suffixed(blob_dir, ".old-resync")
}

/// Proof of a position: the transaction ending there and the md5 of its record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnProof {
    pub start: u64,
    pub end: u64,
    pub tid: Tid,
    pub md5: [u8; 16],
}

/// Whole transactions `[start, end)` of the current file, for a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawChunk {
    pub start: u64,
    pub end: u64,
    /// The tid of the last transaction in the chunk (`Tid::ZERO` when it is empty).
    pub last_tid: Tid,
    pub txns: usize,
    /// `(oid, tid, file)` of every blob revision the chunk's records refer to.
    pub blobs: Vec<(Oid, Tid, PathBuf)>,
}

/// Largest piece of a blob-candidate record read to recognise it: the class pickle comes
/// first and a blob's state is tiny, so a prefix decides.
const BLOB_SNIFF: u64 = 64 << 10;
/// Read size for hashing.
const HASH_BUF: usize = 1 << 20;

fn refused(path: &Path, pos: u64, msg: impl Into<String>) -> StorageError {
    StorageError::Replication {
        path: path.to_path_buf(),
        pos,
        msg: msg.into(),
    }
}

fn file_len(df: &DataFile) -> Result<u64> {
    Ok(df
        .file
        .metadata()
        .map_err(|e| StorageError::io(&df.path, None, e))?
        .len())
}

/// The header of the transaction ending exactly at `end` when the bytes there form one
/// (trailer, header, data records all consistent); `None` otherwise. Only I/O errors are
/// errors: the position is a peer's claim, garbage is an answer, not a failure.
fn txn_ending_at(df: &DataFile, end: u64) -> Result<Option<(u64, TxnHeader)>> {
    if end < FILE_HDR_LEN + TXN_HDR_LEN + 8 {
        return Ok(None);
    }
    let tlen = df.read_u64(end - 8)?;
    let Some(tpos) = (end - 8).checked_sub(tlen) else {
        return Ok(None);
    };
    if tpos < FILE_HDR_LEN || tlen < TXN_HDR_LEN {
        return Ok(None);
    }
    let mut hb = [0u8; TXN_HDR_LEN as usize];
    df.read_exact_at(&mut hb, tpos)?;
    let th = TxnHeader::decode(&hb);
    if th.tlen != tlen
        || th.hlen() > tlen
        || !matches!(
            th.status,
            Status::Committed | Status::Packed | Status::Undone
        )
    {
        return Ok(None);
    }
    match walk_records(df, tpos, &th, |_, _| Ok(()))? {
        true => Ok(Some((tpos, th))),
        false => Ok(None),
    }
}

/// Walk the data record headers of the transaction at `tpos` (whose bytes are in the
/// file), calling `f(position, header)`. `false` when they do not exactly fill the
/// transaction with its own tid and position.
fn walk_records(
    df: &DataFile,
    tpos: u64,
    th: &TxnHeader,
    mut f: impl FnMut(u64, &DataHeader) -> Result<()>,
) -> Result<bool> {
    let tend = tpos + th.tlen;
    let mut p = tpos + th.hlen();
    while p < tend {
        if tend - p < DATA_HDR_LEN {
            return Ok(false);
        }
        let mut b = [0u8; DATA_HDR_LEN as usize];
        df.read_exact_at(&mut b, p)?;
        let h = DataHeader::decode(&b);
        if h.vlen != 0 || h.tid != th.tid || h.tloc != tpos || h.record_len() > tend - p {
            return Ok(false);
        }
        f(p, &h)?;
        p += h.record_len();
    }
    Ok(true)
}

impl FileStorage {
    /// The file's generation: changed by every swap of `Data.fs` (pack, [`install_file`]).
    /// Positions from another generation belong to another file.
    ///
    /// [`install_file`]: FileStorage::install_file
    pub fn generation(&self) -> u64 {
        read(&self.inner.state).generation
    }

    /// The unmapped handle and the generation it belongs to, under one read lock.
    fn raw_view(&self) -> (Arc<DataFile>, u64) {
        let st = read(&self.inner.state);
        (Arc::clone(&st.scan_df), st.generation)
    }

    /// The transaction ending exactly at `end` in the current file (committed part only),
    /// with the md5 of its record bytes; `end == 4` is the empty file (the header's md5,
    /// tid 0). `Ok(None)` when `end` is past the committed end or is not a transaction's
    /// end.
    pub fn txn_ending_at(&self, end: u64) -> Result<Option<TxnProof>> {
        let (df, committed) = self.scan_view();
        if end > committed || end < FILE_HDR_LEN {
            return Ok(None);
        }
        let (start, tid) = if end == FILE_HDR_LEN {
            (0, Tid::ZERO)
        } else {
            match txn_ending_at(&df, end)? {
                Some((tpos, th)) => (tpos, th.tid),
                None => return Ok(None),
            }
        };
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; HASH_BUF.min((end - start) as usize)];
        let mut p = start;
        while p < end {
            let n = ((end - p) as usize).min(buf.len());
            df.read_exact_at(&mut buf[..n], p)?;
            md5.update(&buf[..n]);
            p += n as u64;
        }
        let start = if end == FILE_HDR_LEN { end } else { start };
        Ok(Some(TxnProof {
            start,
            end,
            tid,
            md5: md5.finalize().into(),
        }))
    }

    /// Whole transactions from the boundary `from`, ending at or before the boundary
    /// `limit` (≤ the file's length: it may include a durable, unpublished transaction),
    /// at most `max_bytes` of them but at least one when `from < limit`; with the blob
    /// files their records refer to. `Ok(None)` when the file's generation is not
    /// `generation`. A `from`/`limit` that is not a transaction boundary is an error.
    pub fn raw_chunk(
        &self,
        generation: u64,
        from: u64,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Option<RawChunk>> {
        let (df, gen_now) = self.raw_view();
        if gen_now != generation {
            return Ok(None);
        }
        let path = self.path();
        let size = file_len(&df)?;
        if limit > size {
            return Err(refused(
                path,
                limit,
                format!("chunk limit {limit} is beyond the end of the file ({size} bytes)"),
            ));
        }
        if from < FILE_HDR_LEN || from > limit {
            return Err(refused(
                path,
                from,
                format!("chunk start {from} is not within [4, {limit}]"),
            ));
        }
        let blob_dir = self.inner.blobs.as_ref();
        let mut chunk = RawChunk {
            start: from,
            end: from,
            last_tid: Tid::ZERO,
            txns: 0,
            blobs: Vec::new(),
        };
        let mut pos = from;
        while pos < limit {
            if limit - pos < TXN_HDR_LEN + 8 {
                return Err(refused(
                    path,
                    pos,
                    format!("no whole transaction fits before the limit {limit}"),
                ));
            }
            let mut hb = [0u8; TXN_HDR_LEN as usize];
            df.read_exact_at(&mut hb, pos)?;
            let th = TxnHeader::decode(&hb);
            let next = pos.checked_add(th.tlen).and_then(|x| x.checked_add(8));
            let next = match next {
                Some(n)
                    if n <= limit
                        && th.tlen >= th.hlen()
                        && matches!(
                            th.status,
                            Status::Committed | Status::Packed | Status::Undone
                        ) =>
                {
                    n
                }
                _ => {
                    return Err(refused(
                        path,
                        pos,
                        format!(
                            "no valid transaction starts here (length {}, status {:?}) ending by {limit}",
                            th.tlen,
                            th.status.byte() as char
                        ),
                    ));
                }
            };
            if df.read_u64(next - 8)? != th.tlen {
                return Err(refused(
                    path,
                    next - 8,
                    "redundant transaction length does not match the header",
                ));
            }
            if chunk.txns > 0 && next - from > max_bytes {
                break;
            }
            let mut blobs = Vec::new();
            let whole = walk_records(&df, pos, &th, |rpos, h| {
                // `u` (legacy undone) records have no revision and so no blob file.
                let Some(dir) = blob_dir.filter(|_| th.status != Status::Undone) else {
                    return Ok(());
                };
                let is_blob = if h.plen > 0 {
                    let n = h.plen.min(BLOB_SNIFF);
                    let data = df.read_vec(rpos + DATA_HDR_LEN, n)?;
                    is_blob_record(&data)
                } else {
                    let back = df.read_u64(rpos + DATA_HDR_LEN)?;
                    // An undo of a blob revision: the undo copied the file to its own tid.
                    match df.resolve(h.oid, back, rpos)? {
                        Some((data, _, _)) => is_blob_record(&data),
                        None => false,
                    }
                };
                if is_blob {
                    blobs.push((h.oid, h.tid, dir.blob_path(h.oid, h.tid)));
                }
                Ok(())
            })?;
            if !whole {
                return Err(refused(
                    path,
                    pos,
                    "the data records do not exactly fill the transaction",
                ));
            }
            chunk.blobs.extend(blobs);
            chunk.end = next;
            chunk.last_tid = th.tid;
            chunk.txns += 1;
            pos = next;
        }
        // A swap meanwhile: what was read is the old file's, and the blob paths may be too.
        if self.generation() != generation {
            return Ok(None);
        }
        Ok(Some(chunk))
    }

    /// Fill `buf` from the current file at `pos` (up to the file's length, so also a
    /// durable, unpublished transaction). `false` (and `buf` unspecified) when the file's
    /// generation is not `generation`.
    pub fn read_raw(&self, generation: u64, pos: u64, buf: &mut [u8]) -> Result<bool> {
        let (df, gen_now) = self.raw_view();
        if gen_now != generation {
            return Ok(false);
        }
        let size = file_len(&df)?;
        let end = pos.saturating_add(buf.len() as u64);
        if end > size {
            return Err(refused(
                self.path(),
                pos,
                format!(
                    "read of {} bytes runs past the end of the file ({size} bytes)",
                    buf.len()
                ),
            ));
        }
        df.read_exact_at(buf, pos)?;
        Ok(true)
    }

    /// Validate `bytes` (whole transactions from a primary, to go at `at`), move the blob
    /// files in place, write the bytes with one positional write and sync. Not visible
    /// until [`Replicated::publish`]; see the [module documentation](self).
    pub fn prepare_replicated(
        &self,
        at: u64,
        bytes: &[u8],
        blobs: Vec<(Oid, Tid, PathBuf)>,
    ) -> Result<Replicated> {
        let commit = self.lock_commit()?;
        let path = self.path().to_path_buf();
        let (df, end_now, last_tid) = {
            let st = read(&self.inner.state);
            (Arc::clone(&st.df), st.pos, st.last_tid)
        };
        if at != end_now {
            return Err(refused(
                &path,
                at,
                format!("the bytes are for offset {at} but the committed end is {end_now}"),
            ));
        }
        let plan = validate(&path, at, bytes, last_tid)?;
        let mut rep = Replicated {
            storage: self.clone(),
            df,
            at,
            end: plan.end,
            last_tid: plan.last_tid,
            max_oid: plan.max_oid,
            index: plan.index,
            txns: plan.txns,
            blob_files: Vec::new(),
            written: false,
            published: false,
            _lock: Some(commit),
        };
        if !blobs.is_empty() {
            let dir = self.blobs()?;
            for (oid, tid, file) in &blobs {
                if !plan.records.contains(&(*oid, *tid)) {
                    return Err(refused(
                        &path,
                        at,
                        format!(
                            "blob file {} for oid {oid} tid {tid}, which has no record in the bytes",
                            file.display()
                        ),
                    ));
                }
            }
            for (oid, tid, file) in blobs {
                // On failure, `rep`'s drop removes the files installed so far.
                dir.commit_file(oid, tid, &file)?;
                rep.blob_files.push((oid, tid));
            }
        }
        if !bytes.is_empty() {
            rep.written = true;
            rep.df
                .file
                .write_all_at(bytes, at)
                .and_then(|()| rep.df.file.sync_data())
                .map_err(|e| StorageError::io(&path, Some(at), e))?;
        }
        Ok(rep)
    }

    /// Swap in `new`, a complete and synced `Data.fs` from the primary (normally
    /// [`resync_path`]), and `new_blob_dir` as the blob tree (when this storage has blobs).
    /// The file is scanned before the commit lock is taken; a file that is not a valid
    /// FileStorage or ends in an unfinished transaction is refused and nothing changes.
    /// See the [module documentation](self) for the order on disk.
    pub fn install_file(&self, new: &Path, new_blob_dir: Option<&Path>) -> Result<()> {
        self.check_writable()?;
        let path = self.path().to_path_buf();
        let ioerr = |p: &Path, e: io::Error| StorageError::io(p, None, e);
        let file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .open(new)
            .map_err(|e| ioerr(new, e))?;
        let ndf = DataFile::new(file, new);
        let size = file_len(&ndf)?;
        let mut magic = [0u8; 4];
        let n = ndf.read_at_most(&mut magic, 0)?;
        if n < 4 || &magic != MAGIC_FS30 {
            return Err(StorageError::Format {
                path: new.to_path_buf(),
                msg: format!(
                    "invalid file header {:?} (a resync needs an FS30 file)",
                    String::from_utf8_lossy(&magic[..n])
                ),
            });
        }
        let mut index = OidIndex::new();
        let outcome = scan::scan(
            &ndf,
            &mut index,
            &ScanParams {
                start: FILE_HDR_LEN,
                start_tid: Tid::ZERO,
                // Never repair what we were sent: refuse it below instead.
                read_only: true,
                stop: None,
                progress: false,
            },
        )?;
        if outcome.pos != size {
            return Err(StorageError::Format {
                path: new.to_path_buf(),
                msg: format!(
                    "ends in an unfinished or torn transaction at byte {} ({size} bytes)",
                    outcome.pos
                ),
            });
        }
        index.shrink_to_fit();
        let blob_swap = match (new_blob_dir, self.inner.blobs.as_ref()) {
            (Some(nb), Some(dir)) => {
                prepare_blob_tree(nb, dir.layout().name())?;
                Some((nb, dir.root()))
            }
            (Some(nb), None) => {
                tracing::warn!(target: "ZODB.FileStorage",
                    "{}: ignoring the blob directory {} of a resync: this storage has no blobs",
                    path.display(), nb.display());
                None
            }
            _ => None,
        };
        // Handles first: once the rename is done, nothing may fail before the swap.
        let file = ndf.file.try_clone().map_err(|e| ioerr(new, e))?;
        let scan_file = ndf.file.try_clone().map_err(|e| ioerr(new, e))?;
        drop(ndf);

        let commit = self.lock_commit()?;
        if let Some((nb, root)) = blob_swap {
            swap_blob_trees(nb, root)?;
        }
        let ipath = index_path(&path);
        let committed = scan::remove_if_exists(&ipath)
            .and_then(|()| fs::rename(new, &path).map_err(|e| ioerr(new, e)));
        if let Err(e) = committed {
            if let Some((nb, root)) = blob_swap {
                unswap_blob_trees(nb, root);
            }
            return Err(e);
        }
        sync_dir(&path);
        let saved = match write_index_file(&ipath, outcome.pos, &index) {
            Ok(()) => Some(outcome.pos),
            Err(e) => {
                tracing::warn!(target: "ZODB.FileStorage",
                    "cannot write {} after a resync: {e} (the next open rescans)", ipath.display());
                None
            }
        };
        let max_oid = index.max_oid().map_or(0, |o| o.0);
        let df = Arc::new(DataFile::new(file, &path));
        df.map_committed(outcome.pos);
        let old = {
            let mut st = write(&self.inner.state);
            let old = (
                std::mem::replace(&mut st.df, df),
                std::mem::replace(&mut st.scan_df, Arc::new(DataFile::new(scan_file, &path))),
            );
            st.index = index;
            st.pos = outcome.pos;
            st.last_tid = outcome.last_tid;
            st.generation += 1;
            *lock(&self.inner.saved_index_pos) = saved;
            old
        };
        {
            // Oids and tids are never reused, even if the new file is "older".
            let mut m = lock(&self.inner.max_oid);
            *m = (*m).max(max_oid);
        }
        {
            let mut gate = lock(&self.inner.gate);
            gate.last_generated = gate
                .last_generated
                .max(outcome.tid_floor.max(outcome.last_tid));
        }
        drop(commit);
        // The old file is unmapped and closed when its last reader is done with it.
        drop(old);
        if let Some((_, root)) = blob_swap {
            let old = old_blob_dir(root);
            if let Err(e) = fs::remove_dir_all(&old) {
                tracing::warn!(target: "ZODB.FileStorage",
                    "cannot remove the previous blob tree {}: {e}", old.display());
            }
        }
        tracing::info!(target: "ZODB.FileStorage",
            "{}: installed a resynchronised file ({} bytes, last transaction {})",
            path.display(), outcome.pos, outcome.last_tid);
        Ok(())
    }
}

/// Make a downloaded blob tree usable by the storage's `BlobDir`, which keeps its root
/// path and layout: same layout (written when missing), a `tmp` directory.
fn prepare_blob_tree(nb: &Path, layout: &str) -> Result<()> {
    if !nb.is_dir() {
        return Err(StorageError::Blob {
            path: nb.to_path_buf(),
            msg: "the resync blob directory does not exist".into(),
        });
    }
    let lf = nb.join(".layout");
    match fs::read_to_string(&lf) {
        Ok(t) if t.trim() == layout => {}
        Ok(t) => {
            return Err(StorageError::Blob {
                path: lf,
                msg: format!(
                    "the resync blob directory has layout {:?}, this storage uses {layout:?}",
                    t.trim()
                ),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::write(&lf, layout).map_err(|e| StorageError::io(&lf, None, e))?;
        }
        Err(e) => return Err(StorageError::io(&lf, None, e)),
    }
    let tmp = nb.join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, None, e))
}

/// Current tree → `<root>.old-resync`, `nb` → root (undone on failure).
fn swap_blob_trees(nb: &Path, root: &Path) -> Result<()> {
    let old = old_blob_dir(root);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| StorageError::io(&old, None, e))?;
    }
    if root.exists() {
        fs::rename(root, &old).map_err(|e| StorageError::io(root, None, e))?;
    }
    if let Err(e) = fs::rename(nb, root) {
        let _ = fs::rename(&old, root);
        return Err(StorageError::io(nb, None, e));
    }
    sync_dir(root);
    Ok(())
}

fn unswap_blob_trees(nb: &Path, root: &Path) {
    let old = old_blob_dir(root);
    let res = fs::rename(root, nb).and_then(|()| fs::rename(&old, root));
    if let Err(e) = res {
        tracing::error!(target: "ZODB.FileStorage",
            "cannot put the blob tree {} back after a failed resync: {e}", root.display());
    }
}

/// Sync the directory holding `path` (best effort: a rename is durable once it is).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// At a read-write open: finish or undo what an interrupted [`FileStorage::install_file`]
/// left, and remove a stale download (module documentation).
pub(crate) fn remove_stale(data_fs: &Path, blob_dir: Option<&Path>) -> Result<()> {
    let resync = resync_path(data_fs);
    if let Some(root) = blob_dir {
        let old = old_blob_dir(root);
        if old.is_dir() {
            if resync.exists() || !root.exists() {
                if root.exists() {
                    fs::remove_dir_all(root).map_err(|e| StorageError::io(root, None, e))?;
                }
                fs::rename(&old, root).map_err(|e| StorageError::io(&old, None, e))?;
                tracing::warn!(target: "ZODB.FileStorage",
                    "put the blob tree {} back: a resync was interrupted before its file was installed",
                    root.display());
            } else {
                fs::remove_dir_all(&old).map_err(|e| StorageError::io(&old, None, e))?;
                tracing::warn!(target: "ZODB.FileStorage",
                    "removed {} left by an interrupted resync", old.display());
            }
        }
        let stale = resync_blob_dir(root);
        if stale.is_dir() {
            fs::remove_dir_all(&stale).map_err(|e| StorageError::io(&stale, None, e))?;
            tracing::warn!(target: "ZODB.FileStorage",
                "removed {} left by an interrupted resync", stale.display());
        }
    }
    match fs::remove_file(&resync) {
        Ok(()) => tracing::warn!(target: "ZODB.FileStorage",
            "removed {} left by an interrupted resync", resync.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&resync, None, e)),
    }
    Ok(())
}

/// What validation learnt about the bytes.
struct Plan {
    end: u64,
    last_tid: Tid,
    max_oid: Option<u64>,
    index: HashMap<Oid, u64>,
    txns: Vec<(Tid, Vec<Oid>)>,
    /// `(oid, tid)` of every record (blob files must belong to one).
    records: HashSet<(Oid, Tid)>,
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Check that `bytes` are whole, valid transactions to go at `at` after `last_tid`
/// (module documentation); every refusal names the absolute offset.
fn validate(path: &Path, at: u64, bytes: &[u8], last_tid: Tid) -> Result<Plan> {
    let len = bytes.len() as u64;
    let end = at
        .checked_add(len)
        .filter(|&e| e < MAX_POS)
        .ok_or_else(|| refused(path, at, "the file would grow beyond 2^48 bytes"))?;
    let mut plan = Plan {
        end,
        last_tid,
        max_oid: None,
        index: HashMap::new(),
        txns: Vec::new(),
        records: HashSet::new(),
    };
    let mut o = 0u64;
    while o < len {
        let tpos = at + o;
        let left = len - o;
        if left < TXN_HDR_LEN {
            return Err(refused(
                path,
                tpos,
                format!("only {left} bytes left: not a whole transaction header"),
            ));
        }
        let mut hb = [0u8; TXN_HDR_LEN as usize];
        hb.copy_from_slice(&bytes[o as usize..(o + TXN_HDR_LEN) as usize]);
        let th = TxnHeader::decode(&hb);
        if th.tid <= plan.last_tid {
            return Err(refused(
                path,
                tpos,
                format!(
                    "transaction id {} is not after the previous transaction {}",
                    th.tid, plan.last_tid
                ),
            ));
        }
        match th.status {
            Status::Committed | Status::Packed => {}
            s => {
                return Err(refused(
                    path,
                    tpos,
                    format!(
                        "transaction status {:?}: only committed (' ') or packed ('p') transactions are replicated",
                        s.byte() as char
                    ),
                ));
            }
        }
        if th.tlen < th.hlen() {
            return Err(refused(
                path,
                tpos,
                format!(
                    "transaction length {} is shorter than its header ({})",
                    th.tlen,
                    th.hlen()
                ),
            ));
        }
        if th.tlen > left - 8 {
            return Err(refused(
                path,
                tpos,
                format!(
                    "transaction length {} (+8) runs past the {left} bytes left",
                    th.tlen
                ),
            ));
        }
        let tend = o + th.tlen;
        let red = be64(&bytes[tend as usize..]);
        if red != th.tlen {
            return Err(refused(
                path,
                at + tend,
                format!(
                    "redundant transaction length {red} does not match the header's {}",
                    th.tlen
                ),
            ));
        }
        let mut oids = Vec::new();
        let mut seen = HashSet::new();
        let mut p = o + th.hlen();
        while p < tend {
            let rpos = at + p;
            if tend - p < DATA_HDR_LEN {
                return Err(refused(
                    path,
                    rpos,
                    "data record header runs past the transaction end",
                ));
            }
            let mut db = [0u8; DATA_HDR_LEN as usize];
            db.copy_from_slice(&bytes[p as usize..(p + DATA_HDR_LEN) as usize]);
            let h = DataHeader::decode(&db);
            let bad = |msg: String| Err(refused(path, rpos, msg));
            if h.vlen != 0 {
                return bad(format!("data record has version length {}", h.vlen));
            }
            if h.tid != th.tid {
                return bad(format!(
                    "data record tid {} differs from its transaction's {}",
                    h.tid, th.tid
                ));
            }
            if h.tloc != tpos {
                return bad(format!(
                    "data record's transaction position {} is not {tpos}",
                    h.tloc
                ));
            }
            if h.prev >= rpos {
                return bad(format!(
                    "previous-record pointer {} does not point backwards",
                    h.prev
                ));
            }
            if h.record_len() > tend - p {
                return bad(format!(
                    "data record of {} bytes runs past the transaction end {}",
                    h.record_len(),
                    at + tend
                ));
            }
            if h.plen == 0 {
                let back = be64(&bytes[(p + DATA_HDR_LEN) as usize..]);
                if back >= rpos {
                    return bad(format!("backpointer {back} does not point backwards"));
                }
            }
            plan.index.insert(h.oid, rpos);
            plan.records.insert((h.oid, h.tid));
            plan.max_oid = plan.max_oid.max(Some(h.oid.0));
            if seen.insert(h.oid) {
                oids.push(h.oid);
            }
            p += h.record_len();
        }
        plan.txns.push((th.tid, oids));
        plan.last_tid = th.tid;
        o = tend + 8;
    }
    Ok(plan)
}

/// Replicated transactions written and synced but not yet visible: holds the commit
/// lock. [`Replicated::publish`] makes them visible; dropping it truncates them away.
#[derive(Debug)]
pub struct Replicated {
    storage: FileStorage,
    /// The file written (the commit lock keeps it `Data.fs`).
    df: Arc<DataFile>,
    at: u64,
    end: u64,
    last_tid: Tid,
    max_oid: Option<u64>,
    /// oid → position of its newest record in the bytes.
    index: HashMap<Oid, u64>,
    txns: Vec<(Tid, Vec<Oid>)>,
    /// Blob revisions moved into place (removed unless published).
    blob_files: Vec<(Oid, Tid)>,
    written: bool,
    published: bool,
    /// Released after `Drop::drop` ran, so a truncation happens under the lock.
    _lock: Option<CommitLock>,
}

impl Replicated {
    /// Per transaction, in order: its tid and the oids it wrote (each once).
    pub fn txns(&self) -> &[(Tid, Vec<Oid>)] {
        &self.txns
    }

    /// The end of the file after these transactions.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The tid of the last transaction (the storage's last tid when there are none).
    pub fn last_tid(&self) -> Tid {
        self.last_tid
    }

    /// Make the transactions visible to readers and release the commit lock. No I/O.
    pub fn publish(mut self) {
        let inner = &self.storage.inner;
        {
            let mut st = write(&inner.state);
            for (&oid, &pos) in &self.index {
                // Positions were checked against MAX_POS by `validate`.
                let _ = st.index.insert(oid, pos);
            }
            st.pos = self.end;
            st.last_tid = self.last_tid;
        }
        if let Some(m) = self.max_oid {
            let mut max = lock(&inner.max_oid);
            *max = (*max).max(m);
        }
        {
            let mut gate = lock(&inner.gate);
            gate.last_generated = gate.last_generated.max(self.last_tid);
        }
        // Durable (synced by prepare) and under the commit lock: may be mapped.
        self.df.committed_grew(self.end);
        self.published = true;
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if let Some(blobs) = self.storage.inner.blobs.as_ref() {
            for &(oid, tid) in &self.blob_files {
                blobs.remove_revision(oid, tid);
            }
        }
        if self.written {
            let res = self
                .df
                .file
                .set_len(self.at)
                .and_then(|()| self.df.file.sync_data());
            if let Err(e) = res {
                let msg = format!(
                    "cannot truncate unpublished replicated transactions back to {}: {e}",
                    self.at
                );
                tracing::error!(target: "ZODB.FileStorage", "{}: {msg}", self.df.path.display());
                *lock(&self.storage.inner.broken) = Some(msg);
            }
        }
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
