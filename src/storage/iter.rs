//! Walking transactions: the forward iterator (`FileIterator`), its data records, the undo
//! log, and the backward walks used by undo, restore and the server's invalidation queue.

use std::sync::Arc;

use super::datafile::DataFile;
use super::error::{Result, StorageError};
use super::filestorage::FileStorage;
use super::format::{FILE_HDR_LEN, Status, TXN_HDR_LEN, TxnHeader};
use super::types::{Oid, Tid};

/// One transaction, as the iterator yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    pub tid: Tid,
    pub status: Status,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The raw extension pickle (empty when there is none).
    pub extension: Vec<u8>,
    /// Position of the transaction record.
    pub pos: u64,
    /// `tlen`.
    pub tlen: u64,
    hlen: u64,
}

/// One data record, as the iterator yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecord {
    pub oid: Oid,
    pub tid: Tid,
    /// The object's state: the record's data, or the data its backpointer chain resolves
    /// to; `None` for a deletion.
    pub data: Option<Vec<u8>>,
    /// For a backpointer record: the tid of the record it points at directly (one link);
    /// `None` otherwise.
    pub data_txn: Option<Tid>,
    /// Position of the record.
    pub pos: u64,
    /// `prev` and the raw backpointer (0 when the record has data).
    pub prev: u64,
    pub back: u64,
    /// `plen`: 0 for a backpointer record.
    pub plen: u64,
}

/// Forward iterator over committed transactions (`storage.iterator(start, stop)`): from
/// the first tid ≥ `start` through the last tid ≤ `stop`. Like Python it stops silently at
/// damage; unlike Python it also ends at the committed end, so it never shows a
/// transaction that is being committed. It holds a shared read handle and no lock: keep
/// it as long as you like (a server keeps one per client iterator).
#[derive(Debug)]
pub struct TransactionIter {
    df: Arc<DataFile>,
    pos: u64,
    end: u64,
    stop: Option<Tid>,
    done: bool,
}

impl TransactionIter {
    /// The data records of a transaction this iterator (or another one) returned.
    pub fn records(&self, txn: &TransactionInfo) -> RecordIter {
        RecordIter {
            df: Some(self.df.clone()),
            pos: txn.pos + txn.hlen,
            tend: txn.pos + txn.tlen,
        }
    }
}

impl Iterator for TransactionIter {
    type Item = Result<TransactionInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.end {
            return None;
        }
        let tpos = self.pos;
        let mut hb = [0u8; TXN_HDR_LEN as usize];
        if let Err(e) = self.df.read_exact_at(&mut hb, tpos) {
            self.done = true;
            return Some(Err(e));
        }
        let h = TxnHeader::decode(&hb);
        if h.status == Status::Checkpoint || h.next_pos(tpos) > self.end || h.tlen < h.hlen() {
            self.done = true;
            return None;
        }
        match self.df.read_u64(tpos + h.tlen) {
            Ok(red) if red == h.tlen => {}
            Ok(_) => {
                tracing::warn!(target: "ZODB.FileStorage",
                    "{}: redundant transaction length does not match at {tpos}; iteration ends",
                    self.df.path.display()
                );
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        }
        if self.stop.is_some_and(|s| h.tid > s) {
            self.done = true;
            return None;
        }
        self.pos = h.next_pos(tpos);
        let (user, description, extension) = match self.df.txn_meta(tpos, &h) {
            Ok(m) => m,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        Some(Ok(TransactionInfo {
            tid: h.tid,
            status: h.status,
            user,
            description,
            extension,
            pos: tpos,
            tlen: h.tlen,
            hlen: h.hlen(),
        }))
    }
}

/// The data records of one transaction.
#[derive(Debug)]
pub struct RecordIter {
    df: Option<Arc<DataFile>>,
    pos: u64,
    tend: u64,
}

impl Iterator for RecordIter {
    type Item = Result<DataRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let df = self.df.as_ref()?;
        if self.pos >= self.tend {
            return None;
        }
        let result = (|| {
            let r = df.record_header(self.pos)?;
            if self.pos + r.h.record_len() > self.tend {
                return Err(StorageError::corrupted(
                    &df.path,
                    self.pos,
                    "data record exceeds transaction record",
                ));
            }
            let (data, data_txn) = if r.has_data() {
                (Some(df.record_data(&r)?), None)
            } else if r.back == 0 {
                (None, None)
            } else {
                let target = df.record_of(r.back, r.h.oid)?;
                (df.record_state(&r)?, Some(target.h.tid))
            };
            Ok(DataRecord {
                oid: r.h.oid,
                tid: r.h.tid,
                data,
                data_txn,
                pos: r.pos,
                prev: r.h.prev,
                back: r.back,
                plen: r.h.plen,
            })
        })();
        match &result {
            Ok(rec) => {
                self.pos = rec.pos + if rec.plen == 0 { 50 } else { 42 + rec.plen };
            }
            Err(_) => self.df = None,
        }
        Some(result)
    }
}

/// One entry of the undo log (`undoLog` / `undoInfo`).
#[derive(Clone, Debug, PartialEq)]
pub struct UndoInfo {
    pub tid: Tid,
    /// `TimeStamp(tid).timeTime()`.
    pub time: f64,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The raw extension pickle; Python merges its keys into the result dict.
    pub extension: Vec<u8>,
    /// `tlen`.
    pub size: u64,
}

impl UndoInfo {
    /// The id `undo()` takes: base64 of the tid.
    pub fn id(&self) -> String {
        self.tid.to_undo_id()
    }
}

impl FileStorage {
    /// `iterator(start, stop)`.
    pub fn iter_transactions(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<TransactionIter> {
        let (df, end) = self.scan_view();
        let pos = match start {
            Some(s) => self.first_at_or_after(&df, s, end)?,
            None => FILE_HDR_LEN,
        };
        Ok(TransactionIter {
            df,
            pos,
            end,
            stop,
            done: false,
        })
    }

    /// The data records of a transaction returned by an iterator.
    pub fn transaction_records(&self, txn: &TransactionInfo) -> Result<RecordIter> {
        Ok(RecordIter {
            df: Some(self.scan_view().0),
            pos: txn.pos + txn.hlen,
            tend: txn.pos + txn.tlen,
        })
    }

    /// Position of the first transaction with tid ≥ `start` (or `end`). Walks from whichever
    /// end the tids suggest is closer, as Python's iterator does.
    fn first_at_or_after(&self, df: &DataFile, start: Tid, end: u64) -> Result<u64> {
        if end <= FILE_HDR_LEN {
            return Ok(end);
        }
        let first = df.txn_header(FILE_HDR_LEN, end)?.tid;
        let last = self.last_transaction();
        if start <= first {
            return Ok(FILE_HDR_LEN);
        }
        if start > last {
            return Ok(end);
        }
        if start.0 - first.0 > last.0 - start.0 {
            // Backwards: find the last transaction with tid < start; answer the next one.
            let mut pos = end;
            while pos > FILE_HDR_LEN {
                let tpos = prev_txn_pos(df, pos)?;
                let h = df.txn_header(tpos, end)?;
                if h.tid < start {
                    return Ok(pos);
                }
                pos = tpos;
            }
            return Ok(FILE_HDR_LEN);
        }
        let mut pos = FILE_HDR_LEN;
        while pos < end {
            let h = df.txn_header(pos, end)?;
            if h.tid >= start {
                return Ok(pos);
            }
            pos = h.next_pos(pos);
        }
        Ok(end)
    }

    /// Walk committed transactions backwards from the end: `f(tpos, header)` returns false
    /// to stop. The walk reads one snapshot of the file (a pack's swap does not move it).
    pub(crate) fn walk_back(
        &self,
        mut f: impl FnMut(&DataFile, u64, &TxnHeader) -> Result<bool>,
    ) -> Result<()> {
        let (df, end) = self.scan_view();
        let df = &*df;
        let mut pos = end;
        while pos > FILE_HDR_LEN {
            let tpos = prev_txn_pos(df, pos)?;
            let h = df.txn_header(tpos, end)?;
            if h.next_pos(tpos) != pos {
                return Err(StorageError::corrupted(
                    &df.path,
                    tpos,
                    "transaction length does not match the redundant length that follows it",
                ));
            }
            if !f(df, tpos, &h)? {
                break;
            }
            pos = tpos;
        }
        Ok(())
    }

    /// Position of the committed transaction `tid` (`_txn_find`), if any.
    pub(crate) fn find_transaction(&self, tid: Tid) -> Result<Option<u64>> {
        let mut found = None;
        self.walk_back(|_, tpos, h| {
            if h.tid == tid {
                found = Some(tpos);
                return Ok(false);
            }
            Ok(h.tid > tid)
        })?;
        Ok(found)
    }

    /// `_data_find`: the position of `oid`'s last record in the transaction at `tpos` when
    /// it is a backpointer record or holds exactly `data`; else 0.
    pub(crate) fn data_find(&self, tpos: u64, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let (df, end) = self.scan_view();
        let h = df.txn_header(tpos, end)?;
        let tend = tpos + h.tlen;
        let mut pos = tpos + h.hlen();
        let mut found = None;
        while pos < tend {
            let r = df.record_header(pos)?;
            if r.h.oid == oid {
                found = Some(r);
            }
            pos += r.h.record_len();
        }
        let Some(r) = found else {
            return Ok(0);
        };
        if !r.has_data() {
            return Ok(r.pos);
        }
        match data {
            Some(d) if d.len() as u64 == r.h.plen && df.record_data(&r)? == d => Ok(r.pos),
            _ => Ok(0),
        }
    }

    /// `undoLog(first, last, filter)`: undoable transactions, newest first; entries
    /// `first..last` of those that pass `filter` (a negative `last` means `first - last`
    /// entries, as in Python). Stops at the first packed transaction.
    pub fn undo_log(
        &self,
        first: usize,
        last: i64,
        mut filter: impl FnMut(&UndoInfo) -> bool,
    ) -> Result<Vec<UndoInfo>> {
        let last = if last < 0 { first as i64 - last } else { last };
        let last = usize::try_from(last).unwrap_or(0);
        let mut i = 0usize;
        let mut out = Vec::new();
        self.walk_back(|df, tpos, h| {
            if i >= last {
                return Ok(false);
            }
            match h.status {
                Status::Packed => return Ok(false),
                Status::Committed => {}
                _ => return Ok(true),
            }
            let (user, description, extension) = df.txn_meta(tpos, h)?;
            let info = UndoInfo {
                tid: h.tid,
                time: h.tid.timestamp().time_time(),
                user,
                description,
                extension,
                size: h.tlen,
            };
            if filter(&info) {
                if i >= first {
                    out.push(info);
                }
                i += 1;
            }
            Ok(i < last)
        })?;
        Ok(out)
    }

    /// The last `n` committed transactions as (tid, oids written), oldest first: what a
    /// server needs to pre-fill its invalidation queue at start.
    pub fn recent_transactions(&self, n: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        self.walk_back(|df, tpos, h| {
            if h.status != Status::Undone {
                let mut oids = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let tend = tpos + h.tlen;
                let mut p = tpos + h.hlen();
                while p < tend {
                    let r = df.record_header(p)?;
                    if seen.insert(r.h.oid) {
                        oids.push(r.h.oid);
                    }
                    p += r.h.record_len();
                }
                out.push((h.tid, oids));
            }
            Ok(out.len() < n)
        })?;
        out.reverse();
        Ok(out)
    }
}

/// The start of the transaction that ends just before `pos` (via the redundant length).
fn prev_txn_pos(df: &DataFile, pos: u64) -> Result<u64> {
    if pos < FILE_HDR_LEN + 8 {
        return Err(StorageError::corrupted(
            &df.path,
            pos,
            "no transaction can end here",
        ));
    }
    let l = df.read_u64(pos - 8)?;
    pos.checked_sub(8)
        .and_then(|p| p.checked_sub(l))
        .filter(|&p| p >= FILE_HDR_LEN)
        .ok_or_else(|| {
            StorageError::corrupted(
                &df.path,
                pos - 8,
                format!("redundant transaction length {l} points before the start of the file"),
            )
        })
}
