//! Pack (spec `filestorage.md` §9, blobs §10.5): [`FileStorage::pack`] removes the
//! revisions no reader at or after the pack time can need and, with garbage collection,
//! the objects unreachable from the root, while reads and commits go on.
//!
//! # The result
//!
//! Python's, record for record (§9.4): the pre-pack region copied with status `p`, records
//! at `prev = 0` with backpointers resolved to data; the post-pack region copied with its
//! status, `prev` re-linked and backpointers re-targeted into the new file. Where ZODB 6.4
//! loses data or fails (§9.9) the intended semantics are kept instead, a superset Python
//! reads like its own output:
//!
//! * a pre-pack revision a post-pack backpointer targets is kept with everything reachable
//!   from it and its object's pack-time revision, with or without GC;
//! * the references of post-pack data records are roots too (an object a post-pack
//!   commit refers to is never collected);
//! * a dangling reference is logged with its oid and skipped;
//! * a re-targeted backpointer with no match in the new file is written with its data.
//!
//! Redundant packs (§9.2) and packs that free nothing (§9.4.3) change no file. The memory
//! storage has no history: its pack is the server's no-op.
//!
//! # Phases and locks
//!
//! 1. **Index** (§9.2) and 2. **reachability** (§9.3, [`gc`]): read the committed part
//!    of the old file through its unmapped handle, without any lock (committed bytes never
//!    change while the storage is open, `datafile.rs` invariant 2).
//! 3. **Copy to the pack time** into `Data.fs.pack`, no lock.
//! 4. **Copy the rest**: the post-pack region up to the committed end, repeatedly, without
//!    the commit lock, until what is left is under [`CATCH_UP_BYTES`] (or after
//!    [`CATCH_UP_ROUNDS`] rounds); then `Data.fs.pack` is synced and its index written and
//!    synced (`Data.fs.pack.index`), still without the lock.
//! 5. **The swap**, under the commit lock (the only time a pack holds it): copy the last few
//!    transactions, sync them, and rename. Commits wait for the lock at vote (a ZEO vote is
//!    delayed, never failed); readers are never blocked beyond a pointer swap.
//!
//! # The swap (invariants)
//!
//! * **Atomic for readers.** The data file handles live beside the index in
//!   `filestorage::Visible`; readers take a position and its file under one read lock. The
//!   swap replaces index, committed end and both handles under the write lock at once. A
//!   reader holding the old pair keeps reading the old file: its inode stays open (and
//!   mapped) until the last reader drops it, even after the rename unlinks its name. So the
//!   committed-map invariants of `datafile.rs` hold per file: nothing below a file's
//!   committed end is rewritten while any handle on it exists.
//! * **No transaction spans the swap.** A [`Transaction`](super::Transaction) owns the
//!   commit lock from `begin` to `finish`/`abort`, so the swap (which holds it) never sees
//!   one in progress: every durable transaction is published and copied, none is
//!   half-written at the end of the old file.
//! * **Crash at any moment → the old or the complete new file.** Order on disk: the new
//!   file is synced; with `keep_old`, `Data.fs` is hard-linked to `Data.fs.old.tmp` and
//!   renamed to `Data.fs.old` (the live name is never missing, unlike Python's
//!   rename-away); `Data.fs.index` is removed; `Data.fs.pack` is renamed to `Data.fs`
//!   (the commit point) and the directory synced; then `Data.fs.pack.index` is renamed to
//!   `Data.fs.index`. Before the commit point the old file is intact (with no index or its
//!   own: a rescan at worst); after it the new one is complete and synced, with its own
//!   index or none (a rescan). A stale `Data.fs.pack` (and `.pack.index`, `.old.tmp`) is
//!   removed at the next read-write open, with a log line.
//! * **The index.** `Data.fs.pack.index` covers the new file up to where the copy stood
//!   before the final batch; the final batch's few transactions are scanned at the next
//!   open, by Python and by us (an index may be behind its file, §4.1.3).
//! * **Errors (ENOSPC included)** before the commit point remove `Data.fs.pack` and its
//!   index, change nothing else, and leave the storage serving and writable.
//! * **One pack at a time** per storage: a second gets [`StorageError::Pack`] at once.
//!
//! # The record of a pack
//!
//! Each successful pack writes [`record_path`] (`<Data.fs>.pack.json`), which `zodbctl
//! check` reads: a JSON object with `finished` (unix seconds), `pack_time` (unix seconds),
//! `bytes_before`, `bytes_after`, `records_removed`, `objects_removed` and
//! `duration_seconds`.

pub mod blobs;
pub(crate) mod gc;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::datafile::DataFile;
use super::error::{Result, StorageError};
use super::filestorage::{FileStorage, lock, write};
use super::format::{
    DATA_HDR_LEN, DataHeader, FILE_HDR_LEN, Payload, Status, TXN_HDR_LEN, TxnHeader,
    encode_data_record,
};
use super::index::OidIndex;
use super::indexfile::{index_path, suffixed, write_index_file};
use super::timestamp::TimeStamp;
use super::types::{Oid, Tid};

/// Copy-rest stops chasing new commits without the lock once less than this is left.
pub const CATCH_UP_BYTES: u64 = 256 << 10;
/// ... or after this many rounds (commits faster than the copy).
pub const CATCH_UP_ROUNDS: usize = 20;

/// The phases, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Index,
    Reachability,
    CopyPrePack,
    CopyRest,
    Swap,
    Blobs,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Index => "index",
            Phase::Reachability => "reachability",
            Phase::CopyPrePack => "copy to pack time",
            Phase::CopyRest => "copy the rest",
            Phase::Swap => "swap",
            Phase::Blobs => "blobs",
        }
    }
}

/// A progress callback: `(phase, done, total)` (bytes, or objects for reachability with
/// total 0).
pub type Progress = Arc<dyn Fn(Phase, u64, u64) + Send + Sync>;

/// How to pack.
#[derive(Clone)]
pub struct PackOptions {
    /// Remove objects unreachable from the root (Python's `pack_gc`, default true).
    pub gc: bool,
    /// Keep `Data.fs.old` and `<blob_dir>.old` (Python's `pack_keep_old`, default true).
    pub keep_old: bool,
    pub progress: Option<Progress>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            gc: true,
            keep_old: true,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackOptions")
            .field("gc", &self.gc)
            .field("keep_old", &self.keep_old)
            .finish()
    }
}

/// What a pack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The file was replaced by the packed one.
    Packed,
    /// Already packed to a later time, or nothing committed since (RedundantPackWarning).
    Redundant,
    /// Nothing to free: the file is unchanged.
    NothingFreed,
    /// An empty storage is not packed.
    Empty,
}

/// The result of [`FileStorage::pack`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct PackReport {
    pub outcome: Outcome,
    /// The pack time as unix seconds (as given) and as a tid (hex).
    pub pack_time: f64,
    pub pack_tid: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub objects_removed: u64,
    pub transactions_removed: u64,
    pub dangling_references: u64,
    pub blob_files_removed: u64,
    pub duration_seconds: f64,
    /// Time to write the new index (before the swap, off the commit lock).
    pub index_write_seconds: f64,
    /// Longest time the pack held the commit lock.
    pub commit_lock_seconds: f64,
}

impl PackReport {
    /// A one-line summary for logs and the command line.
    pub fn summary(&self) -> String {
        match self.outcome {
            Outcome::Packed => format!(
                "packed to {}: {} → {} bytes, {} records and {} objects removed, {:.2}s",
                self.pack_tid_time(),
                self.bytes_before,
                self.bytes_after,
                self.records_removed,
                self.objects_removed,
                self.duration_seconds
            ),
            Outcome::Redundant => format!(
                "nothing to do: already packed to a later time than {} or no changes since the last pack ({} bytes)",
                self.pack_tid_time(),
                self.bytes_before
            ),
            Outcome::NothingFreed => format!(
                "nothing to free at {}: file unchanged ({} bytes)",
                self.pack_tid_time(),
                self.bytes_before
            ),
            Outcome::Empty => "empty storage: nothing to pack".into(),
        }
    }

    fn pack_tid_time(&self) -> String {
        let ts = TimeStamp::from_tid(Tid(u64::from_str_radix(&self.pack_tid, 16).unwrap_or(0)));
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02.0} UTC",
            ts.year(),
            ts.month(),
            ts.day(),
            ts.hour(),
            ts.minute(),
            ts.second().floor()
        )
    }
}

/// `<Data.fs>.pack.json`: the record of the last successful pack (module documentation).
pub fn record_path(data_fs: &Path) -> PathBuf {
    suffixed(data_fs, ".pack.json")
}

/// Write the pack record (best effort: a pack that worked is not failed by it).
fn write_record(data_fs: &Path, r: &PackReport) {
    let finished = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let v = serde_json::json!({
        "finished": finished,
        "pack_time": r.pack_time,
        "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after,
        "records_removed": r.records_removed,
        "objects_removed": r.objects_removed,
        "duration_seconds": r.duration_seconds,
    });
    let path = record_path(data_fs);
    let tmp = suffixed(&path, ".tmp");
    let res = fs::write(&tmp, format!("{v}\n")).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = res {
        tracing::warn!(target: "ZODB.FileStorage.pack", "cannot write {}: {e}", path.display());
    }
}

/// The files a pack leaves behind when it is interrupted: removed at a read-write open.
pub(crate) fn remove_stale(data_fs: &Path) -> Result<()> {
    for suffix in [".pack", ".pack.index", ".pack.index.index_tmp", ".old.tmp"] {
        let p = suffixed(data_fs, suffix);
        match fs::remove_file(&p) {
            Ok(()) => tracing::warn!(target: "ZODB.FileStorage",
                "removed {} left by an interrupted pack", p.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&p, None, e)),
        }
    }
    Ok(())
}

/// Clears the storage's packing flag when the pack ends, however it ends.
struct PackingFlag<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for PackingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// `Data.fs.pack` being written: removed on drop unless it was renamed into place.
struct PackFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes written (the position of the next write).
    pos: u64,
    /// The new index: oid → position of its latest record in the new file.
    index: OidIndex,
    /// tid → position of each transaction written (for re-targeting backpointers).
    tids: HashMap<u64, u64>,
    done: bool,
}

impl PackFile {
    fn create(path: PathBuf) -> Result<PackFile> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, None, e))?;
        Ok(PackFile {
            path,
            out: BufWriter::with_capacity(4 << 20, f),
            pos: 0,
            index: OidIndex::new(),
            tids: HashMap::new(),
            done: false,
        })
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| StorageError::io(&self.path, Some(self.pos), e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| StorageError::io(&self.path, Some(self.pos), e))
    }

    /// Read back from the new file (flushing first).
    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().read_exact_at(buf, pos))
            .map_err(|e| StorageError::io(&self.path, Some(pos), e))
    }

    /// `_data_find` in the new file: the first record of `oid` in the transaction at
    /// `tpos`: its position when it is a backpointer record or holds exactly `data`.
    fn data_find(&mut self, tpos: u64, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let mut hb = [0u8; TXN_HDR_LEN as usize];
        self.read_at(&mut hb, tpos)?;
        let h = TxnHeader::decode(&hb);
        let tend = tpos + h.tlen;
        let mut pos = tpos + h.hlen();
        while pos < tend {
            let mut db = [0u8; DATA_HDR_LEN as usize];
            self.read_at(&mut db, pos)?;
            let d = DataHeader::decode(&db);
            if d.oid == oid {
                if d.plen == 0 {
                    return Ok(pos);
                }
                let Some(data) = data else { return Ok(0) };
                if d.plen != data.len() as u64 {
                    return Ok(0);
                }
                let mut v = vec![0u8; data.len()];
                self.read_at(&mut v, pos + DATA_HDR_LEN)?;
                return Ok(if v == data { pos } else { 0 });
            }
            pos += d.record_len();
        }
        Ok(0)
    }
}

impl Drop for PackFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(suffixed(&self.path, ".index"));
            let _ = fs::remove_file(suffixed(&self.path, ".index.index_tmp"));
        }
    }
}

/// Append one data record to `t` (a transaction being assembled at `tpos`).
fn push_record(t: &mut Vec<u8>, oid: Oid, tid: Tid, prev: u64, tloc: u64, payload: Rec<'_>) {
    encode_data_record(t, oid, tid, prev, tloc, &payload);
}

/// A record's payload: `Data` is never empty (an empty payload reads back as a backpointer).
type Rec<'a> = Payload<'a>;

fn data_or_none(d: &Option<Vec<u8>>) -> Rec<'_> {
    match d {
        Some(d) if !d.is_empty() => Rec::Data(d),
        _ => Rec::Back(0),
    }
}

/// The counters a pack accumulates.
#[derive(Default)]
struct Counts {
    records_removed: u64,
    transactions_removed: u64,
}

impl FileStorage {
    /// Pack to the unix time `t` (spec §9; see the [module documentation](self)). Reads and
    /// commits go on meanwhile; the call returns when the new file is in place.
    pub fn pack(&self, t: f64, opts: &PackOptions) -> Result<PackReport> {
        self.check_writable()?;
        let started = Instant::now();
        // Up to the end of year 9999: beyond, the timestamp's year field wraps.
        if !(0.0..=253_402_300_799.0).contains(&t) {
            return Err(StorageError::Pack(format!("Invalid pack time {t}")));
        }
        let stop = TimeStamp::from_unix(t).tid();
        if stop == Tid::ZERO {
            return Err(StorageError::Pack("Invalid pack time".into()));
        }
        if self.inner.packing.swap(true, Ordering::SeqCst) {
            return Err(StorageError::Pack(format!(
                "{}: already packing (one pack per storage at a time)",
                self.path().display()
            )));
        }
        let _flag = PackingFlag(&self.inner.packing);
        let progress = |p: Phase, done: u64, total: u64| {
            if let Some(f) = &opts.progress {
                f(p, done, total);
            }
        };
        let path = self.path().to_path_buf();
        let (df, end) = self.scan_view();
        let mut report = PackReport {
            outcome: Outcome::Empty,
            pack_time: t,
            pack_tid: format!("{:016x}", stop.0),
            bytes_before: end,
            bytes_after: end,
            records_removed: 0,
            objects_removed: 0,
            transactions_removed: 0,
            dangling_references: 0,
            blob_files_removed: 0,
            duration_seconds: 0.0,
            index_write_seconds: 0.0,
            commit_lock_seconds: 0.0,
        };
        let finish = |mut r: PackReport| {
            r.duration_seconds = started.elapsed().as_secs_f64();
            r
        };
        if self.is_empty() {
            return Ok(finish(report));
        }
        tracing::info!(target: "ZODB.FileStorage.pack",
            "packing {} to {} (gc {}, {} bytes)", path.display(), report.pack_tid_time(),
            opts.gc, end);

        // Phase 1.
        let pre = gc::build_pack_index(&df, end, stop, |p| progress(Phase::Index, p, end))?;
        if pre.redundant {
            tracing::info!(target: "ZODB.FileStorage.pack",
                "{}: the database has already been packed to a later time or no changes have been made since the last pack",
                path.display());
            report.outcome = Outcome::Redundant;
            return Ok(finish(report));
        }
        // Phase 2.
        let mut visited = 0u64;
        let reach = gc::reachable(&df, end, &pre, opts.gc, || {
            visited += 1;
            if visited % 4096 == 0 {
                progress(Phase::Reachability, visited, 0);
            }
        })?;
        report.dangling_references = reach.dangling;
        tracing::debug!(target: "ZODB.FileStorage.pack",
            "{}: {} pre-pack transactions, {} objects, index {} bytes, marks {} bytes",
            path.display(), pre.transactions, pre.curpos.len(), pre.curpos.memory_bytes(),
            reach.marks.memory_bytes());

        // Phase 3.
        let mut out = PackFile::create(suffixed(&path, ".pack"))?;
        let mut removed_blobs = match self.inner.blobs.as_ref() {
            Some(b) => Some(
                blobs::Removed::create(b)
                    .map_err(|e| StorageError::io(b.root().join(blobs::REMOVED), None, e))?,
            ),
            None => None,
        };
        let mut counts = Counts::default();
        out.write(&{
            let mut m = [0u8; 4];
            df.read_exact_at(&mut m, 0)?;
            m
        })?;
        self.copy_to_packtime(
            &df,
            &pre,
            &reach,
            &mut out,
            removed_blobs.as_mut(),
            &mut counts,
            |p| progress(Phase::CopyPrePack, p, pre.packpos),
        )?;
        if out.pos == pre.packpos {
            tracing::info!(target: "ZODB.FileStorage.pack",
                "{}: nothing to free; file unchanged", path.display());
            if let Some(b) = self.inner.blobs.as_ref() {
                let _ = fs::remove_file(b.root().join(blobs::REMOVED));
            }
            report.outcome = Outcome::NothingFreed;
            return Ok(finish(report));
        }
        if let Some(r) = removed_blobs.take() {
            r.finish().map_err(|e| StorageError::io(&path, None, e))?;
        }
        drop(reach);

        // Phase 4: catch up without the lock.
        let mut pos = pre.packpos;
        let mut last = Tid::ZERO;
        let mut buf = Vec::new();
        for _ in 0..CATCH_UP_ROUNDS {
            let (_, now_end) = self.scan_view();
            progress(Phase::CopyRest, pos, now_end);
            if now_end.saturating_sub(pos) < CATCH_UP_BYTES {
                break;
            }
            while pos < now_end {
                let (next, tid) = copy_one(&df, pos, now_end, last, &mut out, &mut buf)?;
                pos = next;
                last = tid;
            }
        }
        out.sync()?;
        let index_at = out.pos;
        let t_index = Instant::now();
        let pack_index = suffixed(&out.path, ".index");
        write_index_file(&pack_index, index_at, &out.index)
            .map_err(|e| StorageError::io(&pack_index, None, e))?;
        report.index_write_seconds = t_index.elapsed().as_secs_f64();

        // Phase 5: the swap, under the commit lock.
        progress(Phase::Swap, 0, 1);
        let commit = self.lock_commit_for_pack()?;
        let locked = Instant::now();
        let (now_df, now_end) = self.scan_view();
        if !Arc::ptr_eq(&now_df, &df) {
            return Err(StorageError::Pack(
                "the data file was replaced during the pack".into(),
            ));
        }
        while pos < now_end {
            let (next, tid) = copy_one(&df, pos, now_end, last, &mut out, &mut buf)?;
            pos = next;
            last = tid;
        }
        out.sync()?;
        let old_len = self.len();
        let new_len = out.index.len();
        self.swap_in(&mut out, opts.keep_old, index_at)?;
        report.commit_lock_seconds = locked.elapsed().as_secs_f64();
        drop(commit);
        report.bytes_before = now_end;
        report.bytes_after = out.pos;
        report.objects_removed = old_len.saturating_sub(new_len) as u64;
        report.records_removed = counts.records_removed;
        report.transactions_removed = counts.transactions_removed;
        report.outcome = Outcome::Packed;
        if !opts.keep_old {
            let old = suffixed(&path, ".old");
            if let Err(e) = fs::remove_file(&old)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(target: "ZODB.FileStorage.pack", "cannot remove {}: {e}", old.display());
            }
        }

        // Blobs, after the commit point (blobs.rs).
        if let Some(b) = self.inner.blobs.as_ref() {
            progress(Phase::Blobs, 0, 1);
            let live = |oid: Oid| matches!(self.committed_tid(oid), Ok(Some(_)));
            match blobs::apply(b, opts.keep_old, &live) {
                Ok(n) => report.blob_files_removed = n,
                Err(e) => tracing::error!(target: "ZODB.FileStorage.pack",
                    "{}: removing packed blob files: {e} (the pack itself is complete; the next pack retries)",
                    b.root().display()),
            }
        }
        let report = finish(report);
        write_record(&path, &report);
        tracing::info!(target: "ZODB.FileStorage.pack", "{}: {}", path.display(), report.summary());
        Ok(report)
    }

    /// Phase 3 (§9.4.2, blobs §10.5).
    #[allow(clippy::too_many_arguments)]
    fn copy_to_packtime(
        &self,
        df: &DataFile,
        pre: &gc::PrePack,
        reach: &gc::Reach,
        out: &mut PackFile,
        mut removed: Option<&mut blobs::Removed>,
        counts: &mut Counts,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        let mut pos = FILE_HDR_LEN;
        let mut last = Tid::ZERO;
        let mut buf = Vec::new();
        let mut t = Vec::new();
        while pos < pre.packpos {
            let h = gc::read_txn(df, pos, pre.packpos, last, &mut buf)?;
            last = h.tid;
            let recs = gc::records(&df.path, pos, &h, &buf)?;
            let tpos = out.pos;
            t.clear();
            let hlen = h.hlen() as usize;
            t.extend_from_slice(&buf[..hlen]);
            t[16] = Status::Packed.byte();
            let mut kept = Vec::new();
            for (rpos, d, back, off) in recs {
                if !reach.keeps(&pre.curpos, d.oid, rpos) {
                    counts.records_removed += 1;
                    if let Some(r) = removed.as_deref_mut() {
                        note_blob(df, pre, reach, r, rpos, &d, back, &buf[off..])?;
                    }
                    continue;
                }
                let here = tpos + t.len() as u64;
                if d.plen > 0 {
                    let data = &buf[off..off + d.plen as usize];
                    push_record(&mut t, d.oid, d.tid, 0, tpos, Rec::Data(data));
                } else {
                    let data = df.resolve(d.oid, back, rpos)?.map(|(v, _, _)| v);
                    push_record(&mut t, d.oid, d.tid, 0, tpos, data_or_none(&data));
                }
                kept.push((d.oid, here));
            }
            if kept.is_empty() {
                counts.transactions_removed += 1;
            } else {
                let tlen = t.len() as u64;
                t[8..16].copy_from_slice(&tlen.to_be_bytes());
                t.extend_from_slice(&tlen.to_be_bytes());
                for (oid, p) in kept {
                    out.index
                        .insert(oid, p)
                        .map_err(|e| StorageError::Pack(format!("position {} too large", e.0)))?;
                }
                out.tids.insert(h.tid.0, tpos);
                out.write(&t)?;
            }
            pos = h.next_pos(pos);
            progress(pos);
        }
        Ok(())
    }

    /// Under the commit lock: put the new file in place (module documentation, "The swap").
    fn swap_in(&self, out: &mut PackFile, keep_old: bool, index_at: u64) -> Result<()> {
        let path = self.path().to_path_buf();
        let ioerr = |p: &Path, e| StorageError::io(p, None, e);
        if keep_old {
            let tmp = suffixed(&path, ".old.tmp");
            let _ = fs::remove_file(&tmp);
            fs::hard_link(&path, &tmp).map_err(|e| ioerr(&tmp, e))?;
            fs::rename(&tmp, suffixed(&path, ".old")).map_err(|e| ioerr(&tmp, e))?;
        }
        let ipath = index_path(&path);
        match fs::remove_file(&ipath) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ioerr(&ipath, e)),
        }
        // The commit point.
        fs::rename(&out.path, &path).map_err(|e| ioerr(&out.path, e))?;
        out.done = true;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let saved = match fs::rename(suffixed(&out.path, ".index"), &ipath) {
            Ok(()) => Some(index_at),
            Err(e) => {
                tracing::warn!(target: "ZODB.FileStorage.pack",
                    "cannot install the new index {}: {e} (the next open rescans)", ipath.display());
                None
            }
        };
        let file = out.out.get_ref().try_clone().map_err(|e| ioerr(&path, e))?;
        let scan_file = file.try_clone().map_err(|e| ioerr(&path, e))?;
        let df = Arc::new(DataFile::new(file, &path));
        df.map_committed(out.pos);
        let index = std::mem::take(&mut out.index);
        let mut st = write(&self.inner.state);
        let old_df = std::mem::replace(&mut st.df, df);
        st.scan_df = Arc::new(DataFile::new(scan_file, &path));
        st.index = index;
        st.pos = out.pos;
        st.generation += 1;
        *lock(&self.inner.saved_index_pos) = saved;
        drop(st);
        // The old file is unmapped and closed when its last reader is done with it.
        drop(old_df);
        Ok(())
    }
}

/// Note a dropped blob revision in `.removed` (§10.5).
#[allow(clippy::too_many_arguments)]
fn note_blob(
    df: &DataFile,
    pre: &gc::PrePack,
    reach: &gc::Reach,
    removed: &mut blobs::Removed,
    rpos: u64,
    d: &DataHeader,
    back: u64,
    data: &[u8],
) -> Result<()> {
    let resolved;
    let data = if d.plen > 0 {
        &data[..d.plen as usize]
    } else {
        match df.resolve(d.oid, back, rpos)? {
            Some((v, _, _)) => {
                resolved = v;
                &resolved[..]
            }
            None => return Ok(()),
        }
    };
    if !is_blob_record(data) {
        return Ok(());
    }
    let reachable_pos = pre
        .curpos
        .get(d.oid)
        .filter(|_| reach.marks.is_marked(d.oid));
    let is_dup = match reachable_pos {
        Some(p) => df.record_of(p, d.oid)?.h.tid == d.tid,
        None => false,
    };
    if is_dup {
        return Ok(());
    }
    let res = match reachable_pos {
        None => removed.oid(d.oid),
        Some(_) => removed.revision(d.oid, d.tid),
    };
    res.map_err(|e| StorageError::io(&df.path, None, e))
}

/// `is_blob_record`: the first pickle is the class `ZODB.blob.Blob`.
pub fn is_blob_record(data: &[u8]) -> bool {
    data.windows(9).any(|w| w == b"ZODB.blob")
        && crate::pickle::record_class(data).is_ok_and(|(m, c)| m == "ZODB.blob" && c == "Blob")
}

/// Copy-rest, one transaction (§9.4.4): returns the next position and the tid.
fn copy_one(
    df: &DataFile,
    pos: u64,
    end: u64,
    last: Tid,
    out: &mut PackFile,
    buf: &mut Vec<u8>,
) -> Result<(u64, Tid)> {
    let h = gc::read_txn(df, pos, end, last, buf)?;
    let recs = gc::records(&df.path, pos, &h, buf)?;
    let tpos = out.pos;
    let mut t = Vec::with_capacity(buf.len());
    t.extend_from_slice(&buf[..h.hlen() as usize]);
    // Python updates its index after each transaction: two records of one oid in a
    // transaction both link to the revision before it.
    let mut updates = Vec::with_capacity(recs.len());
    for (rpos, d, back, off) in recs {
        let here = tpos + t.len() as u64;
        let prev = out.index.get(d.oid).unwrap_or(0);
        if d.plen > 0 {
            push_record(
                &mut t,
                d.oid,
                d.tid,
                prev,
                tpos,
                Rec::Data(&buf[off..off + d.plen as usize]),
            );
        } else if back == 0 {
            push_record(&mut t, d.oid, d.tid, prev, tpos, Rec::Back(0));
        } else {
            let prev_txn = df.record_of(back, d.oid)?.h.tid;
            let data = df.resolve(d.oid, back, rpos)?.map(|(v, _, _)| v);
            let target = match out.tids.get(&prev_txn.0).copied() {
                Some(ntpos) => out.data_find(ntpos, d.oid, data.as_deref())?,
                None => 0,
            };
            if target != 0 {
                push_record(&mut t, d.oid, d.tid, prev, tpos, Rec::Back(target));
            } else {
                push_record(&mut t, d.oid, d.tid, prev, tpos, data_or_none(&data));
            }
        }
        updates.push((d.oid, here));
    }
    let tlen = t.len() as u64;
    t[8..16].copy_from_slice(&tlen.to_be_bytes());
    t.extend_from_slice(&tlen.to_be_bytes());
    out.tids.insert(h.tid.0, tpos);
    out.write(&t)?;
    for (oid, p) in updates {
        out.index
            .insert(oid, p)
            .map_err(|e| StorageError::Pack(format!("position {} too large", e.0)))?;
    }
    Ok((h.next_pos(pos), h.tid))
}

#[cfg(test)]
mod tests;
