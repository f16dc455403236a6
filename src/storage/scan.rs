//! Opening a Data.fs: the index scan of spec §2.8 with Python's trailing-transaction
//! recovery (§6), and the sanity check that decides whether a saved `Data.fs.index` may be
//! used (§4.1.3).
//!
//! Recovery is exactly Python's and nothing more: a partial header at the end is cut off; a
//! trailing transaction that runs past the end of the file or still has status `c` is cut
//! off and its bytes saved to `Data.fs.trN`; every other inconsistency is fatal
//! ([`StorageError::Corrupted`]) or, where Python only logs, logged. A read-only open
//! changes nothing and stops before the damage.

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::datafile::DataFile;
use super::error::{Result, StorageError};
use super::format::{DATA_HDR_LEN, DataHeader, FILE_HDR_LEN, Status, TXN_HDR_LEN, TxnHeader};
use super::index::OidIndex;
use super::indexfile::suffixed;
use super::types::{Oid, Tid};

/// What the scan found.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    /// End of the last good transaction: where the next one is written.
    pub pos: u64,
    /// Tid of the last good transaction (`Tid::ZERO` for an empty file).
    pub last_tid: Tid,
    /// The largest tid seen in a header, including a removed `c` transaction: new tids are
    /// generated after it so a tid with orphan blob files is never reused.
    pub tid_floor: Tid,
    /// Where the tail was cut, and the file the bytes went to (if any).
    pub truncated: Option<(u64, Option<PathBuf>)>,
}

/// Reads forward through the file with a large buffer (the open-time scan touches every
/// record header once).
struct SeqReader<'a> {
    df: &'a DataFile,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

const SEQ_BUF: usize = 4 << 20;

impl<'a> SeqReader<'a> {
    fn new(df: &'a DataFile) -> Self {
        SeqReader {
            df,
            buf: vec![0; SEQ_BUF],
            start: 0,
            len: 0,
        }
    }

    /// Up to `n` bytes at `pos` (fewer only at the end of the file).
    fn get(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let in_buf = pos >= self.start && pos + n as u64 <= self.start + self.len as u64;
        if !in_buf {
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            self.start = pos;
            self.len = self.df.read_at_most(&mut self.buf, pos)?;
        }
        let off = (pos - self.start) as usize;
        let end = (off + n).min(self.len);
        Ok(&self.buf[off.min(end)..end])
    }
}

/// Options of a scan.
pub struct ScanParams {
    pub start: u64,
    /// The tid of the transaction that ends at `start` (from the index sanity check).
    pub start_tid: Tid,
    pub read_only: bool,
    /// Read-only time travel: stop at the first transaction with tid ≥ stop.
    pub stop: Option<Tid>,
    pub progress: bool,
}

/// Scan from `params.start` to the end, adding every transaction's records to `index`.
pub fn scan(df: &DataFile, index: &mut OidIndex, params: &ScanParams) -> Result<ScanOutcome> {
    let path = &df.path;
    let file_size = df
        .file
        .metadata()
        .map_err(|e| StorageError::io(path, None, e))?
        .len();
    let bar = progress_bar(params.progress, file_size, params.start);
    let mut rd = SeqReader::new(df);
    let mut pos = params.start;
    let mut ltid = params.start_tid;
    let mut last_tid = params.start_tid;
    let mut tid_floor = params.start_tid;
    let mut truncated = None;
    let mut tindex: Vec<(Oid, u64)> = Vec::new();
    let mut next_tick = pos + (8 << 20);
    loop {
        if pos >= next_tick {
            bar.set_position(pos);
            next_tick = pos + (8 << 20);
        }
        let hb = rd.get(pos, TXN_HDR_LEN as usize)?;
        if hb.is_empty() {
            break;
        }
        if hb.len() < TXN_HDR_LEN as usize {
            if params.read_only {
                tracing::warn!(target: "ZODB.FileStorage",
                    "{} has {} trailing bytes at {pos}; ignoring them",
                    path.display(),
                    hb.len()
                );
            } else {
                tracing::warn!(target: "ZODB.FileStorage", "{} truncated at {pos}", path.display());
                truncate(df, pos, None)?;
                truncated = Some((pos, None));
            }
            break;
        }
        let th = TxnHeader::decode(
            hb.try_into()
                .map_err(|_| StorageError::corrupted(path, pos, "short transaction header"))?,
        );
        if th.tid <= ltid {
            tracing::warn!(target: "ZODB.FileStorage",
                "{} time-stamp reduction at {pos}: {} <= {}",
                path.display(),
                th.tid,
                ltid
            );
        }
        ltid = th.tid;
        let tend = pos.saturating_add(th.tlen);
        if th.next_pos(pos) > file_size || th.status == Status::Checkpoint {
            if th.status == Status::Checkpoint {
                tid_floor = tid_floor.max(th.tid);
            }
            if params.read_only {
                tracing::warn!(target: "ZODB.FileStorage",
                    "{} has an incomplete or unfinished transaction at {pos}; ignoring it",
                    path.display()
                );
            } else {
                tracing::warn!(target: "ZODB.FileStorage",
                    "{} truncated, possibly due to damaged records at {pos}",
                    path.display()
                );
                let saved = save_tail(df, pos, file_size)?;
                truncate(df, pos, saved.as_deref())?;
                truncated = Some((pos, saved));
            }
            break;
        }
        if !matches!(
            th.status,
            Status::Committed | Status::Undone | Status::Packed
        ) {
            tracing::warn!(target: "ZODB.FileStorage",
                "{} has invalid status, {:?}, at {pos}",
                path.display(),
                th.status.byte() as char
            );
        }
        if th.tlen < th.hlen() {
            let rtl = df.read_u64(file_size - 8)?;
            if file_size.saturating_sub(rtl) < pos || rtl < TXN_HDR_LEN {
                tracing::error!(target: "ZODB.FileStorage",
                    "{} has an invalid transaction header at {pos}: the file looks truncated",
                    path.display()
                );
                if !params.read_only {
                    let saved = save_tail(df, pos, file_size)?;
                    truncate(df, pos, saved.as_deref())?;
                    truncated = Some((pos, saved));
                }
                break;
            }
            return Err(StorageError::corrupted(
                path,
                pos,
                format!(
                    "invalid transaction header: tlen {} < header length {}",
                    th.tlen,
                    th.hlen()
                ),
            ));
        }
        if params.stop.is_some_and(|stop| th.tid >= stop) {
            break;
        }
        if th.status == Status::Undone {
            let red = df.read_u64(tend)?;
            if red != th.tlen {
                return Err(StorageError::corrupted(
                    path,
                    pos,
                    format!(
                        "inconsistent transaction length for undone transaction ({red} != {})",
                        th.tlen
                    ),
                ));
            }
            pos = th.next_pos(pos);
            continue;
        }
        let tpos = pos;
        let mut p = tpos + th.hlen();
        tindex.clear();
        while p < tend {
            let b = rd.get(p, DATA_HDR_LEN as usize + 8)?;
            if b.len() < DATA_HDR_LEN as usize {
                return Err(StorageError::corrupted(
                    path,
                    p,
                    "data record header runs past the end of the file",
                ));
            }
            let dh = DataHeader::decode(
                b[..DATA_HDR_LEN as usize]
                    .try_into()
                    .map_err(|_| StorageError::corrupted(path, p, "short data record header"))?,
            );
            if dh.vlen != 0 {
                return Err(StorageError::corrupted(
                    path,
                    p,
                    format!(
                        "data record has version length {} (versions are not supported)",
                        dh.vlen
                    ),
                ));
            }
            let reclen = dh.record_len();
            if p.saturating_add(reclen) > tend || dh.tloc != tpos {
                return Err(StorageError::corrupted(
                    path,
                    p,
                    format!(
                        "data record exceeds transaction record: tloc {} != tpos {tpos} or end {} > {tend}",
                        dh.tloc,
                        p.saturating_add(reclen)
                    ),
                ));
            }
            let committed = index.get(dh.oid).unwrap_or(0);
            if committed != dh.prev {
                if dh.prev != 0 {
                    tracing::error!(target: "ZODB.FileStorage",
                        "{} has an incorrect previous pointer at {p}",
                        path.display()
                    );
                } else {
                    tracing::warn!(target: "ZODB.FileStorage",
                        "{} has an incorrect previous pointer at {p}",
                        path.display()
                    );
                }
            }
            tindex.push((dh.oid, p));
            p += reclen;
        }
        if p != tend {
            return Err(StorageError::corrupted(
                path,
                tpos,
                "data records don't add up",
            ));
        }
        let red = {
            let b = rd.get(tend, 8)?;
            if b.len() < 8 {
                return Err(StorageError::corrupted(
                    path,
                    tend,
                    "redundant transaction length missing",
                ));
            }
            u64::from_be_bytes(
                b.try_into()
                    .map_err(|_| StorageError::corrupted(path, tend, "short redundant length"))?,
            )
        };
        if red != th.tlen {
            return Err(StorageError::corrupted(
                path,
                tpos,
                format!(
                    "redundant transaction length check failed ({red} != {})",
                    th.tlen
                ),
            ));
        }
        for &(oid, rp) in &tindex {
            index.insert(oid, rp).map_err(|_| {
                StorageError::corrupted(path, rp, "position beyond 2^48 (Python's index limit)")
            })?;
        }
        last_tid = th.tid;
        tid_floor = tid_floor.max(th.tid);
        pos = th.next_pos(pos);
    }
    bar.finish_and_clear();
    if pos == FILE_HDR_LEN && last_tid == Tid::ZERO {
        tid_floor = tid_floor.max(Tid::ZERO);
    }
    Ok(ScanOutcome {
        pos,
        last_tid,
        tid_floor,
        truncated,
    })
}

fn progress_bar(wanted: bool, size: u64, start: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() || size.saturating_sub(start) < (64 << 20) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("scanning {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(start);
    bar
}

/// Copy `[pos, size)` to the first free `Data.fs.trN`, unless it is shorter than a header.
fn save_tail(df: &DataFile, pos: u64, size: u64) -> Result<Option<PathBuf>> {
    if size - pos < TXN_HDR_LEN {
        return Ok(None);
    }
    let mut n = 0;
    let (mut out, tr) = loop {
        let tr = suffixed(&df.path, &format!(".tr{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tr) {
            Ok(f) => break (f, tr),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(StorageError::io(&tr, None, e)),
        }
    };
    let mut p = pos;
    let mut buf = vec![0u8; 1 << 20];
    while p < size {
        let want = ((size - p) as usize).min(buf.len());
        let got = df.read_at_most(&mut buf[..want], p)?;
        if got == 0 {
            break;
        }
        out.write_all(&buf[..got])
            .map_err(|e| StorageError::io(&tr, None, e))?;
        p += got as u64;
    }
    out.sync_all().map_err(|e| StorageError::io(&tr, None, e))?;
    Ok(Some(tr))
}

fn truncate(df: &DataFile, pos: u64, saved: Option<&Path>) -> Result<()> {
    match saved {
        Some(tr) => tracing::warn!(target: "ZODB.FileStorage",
            "{}: removed the incomplete transaction at {pos}; its bytes are in {}",
            df.path.display(),
            tr.display()
        ),
        None => {
            tracing::warn!(target: "ZODB.FileStorage", "{}: removed trailing bytes at {pos}", df.path.display())
        }
    }
    df.file
        .set_len(pos)
        .and_then(|()| df.file.sync_all())
        .map_err(|e| StorageError::io(&df.path, Some(pos), e))
}

/// Python's `_check_sanity` of a saved index against the file (§4.1.3): `Some(tid of the
/// transaction ending at pos)` when the index may be used.
pub fn index_is_sane(
    df: &DataFile,
    index: &OidIndex,
    pos: u64,
    file_size: u64,
) -> Result<Option<Tid>> {
    if pos < 100 || pos > file_size {
        return Ok(None);
    }
    let mut ltid = None;
    let mut checked = 0;
    let mut end = pos;
    while checked < 5 {
        if end < FILE_HDR_LEN + 8 {
            return Ok(None);
        }
        let l = df.read_u64(end - 8)?;
        let Some(tpos) = end.checked_sub(8).and_then(|x| x.checked_sub(l)) else {
            return Ok(None);
        };
        if tpos < FILE_HDR_LEN {
            return Ok(None);
        }
        let mut hb = [0u8; TXN_HDR_LEN as usize];
        df.read_exact_at(&mut hb, tpos)?;
        let th = TxnHeader::decode(&hb);
        ltid.get_or_insert(th.tid);
        if th.tlen != l {
            return Ok(None);
        }
        end = tpos;
        match th.status {
            Status::Undone => continue,
            Status::Committed | Status::Packed => {}
            _ => return Ok(None),
        }
        if th.tlen < th.hlen() {
            return Ok(None);
        }
        let tend = tpos + th.tlen;
        let mut p = tpos + th.hlen();
        if p == tend {
            continue;
        }
        while p < tend && checked < 5 {
            let r = df.record_header(p)?;
            if p + r.h.record_len() > tend || r.h.tloc != tpos {
                return Ok(None);
            }
            if index.get(r.h.oid) != Some(p) {
                return Ok(None);
            }
            checked += 1;
            p += r.h.record_len();
        }
        return Ok(ltid);
    }
    Ok(ltid)
}

/// Write the magic into an empty file.
pub fn init_empty(df: &DataFile) -> Result<()> {
    df.file
        .write_all_at(super::format::MAGIC_FS30, 0)
        .and_then(|()| df.file.sync_all())
        .map_err(|e| StorageError::io(&df.path, Some(0), e))
}

/// Remove a file, ignoring "not found".
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, None, e)),
    }
}
