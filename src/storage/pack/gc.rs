//! Phase 1 and 2 of a pack (spec §9.2, §9.3): the index as of the pack time and the
//! reachable set, in bounded memory.
//!
//! # Memory per object
//!
//! * the pre-pack index (`curpos`) is an [`OidIndex`]: about 8 bytes per object;
//! * the marks are a bitmap keyed by a dense oid index ([`Marks`]): with the oids of a
//!   counter (every ZODB storage), the oid itself is the dense index and the bitmap costs
//!   one bit per oid up to the highest one; when the oids are sparse (more than 64 bit
//!   positions per object), the dense index is the rank in a sorted `Vec<u64>` of the
//!   pre-pack oids (8 bytes per object) and the bitmap one bit per object;
//! * the depth-first stack holds the references not yet visited (8 bytes each), at most
//!   the references of the objects on the current frontier.
//!
//! So about 8–16 bytes per object, against Python's dictionaries of `bytes` keys (well over
//! 100 bytes per object).
//!
//! Positions kept in addition to an oid's pack-time revision (pre-pack revisions that a
//! post-pack backpointer targets) are few (one per undo of a pre-pack change) and go in a
//! hash set.

use std::collections::HashSet;
use std::path::Path;

use super::super::datafile::DataFile;
use super::super::error::{Result, StorageError};
use super::super::format::{
    DATA_HDR_LEN, DataHeader, FILE_HDR_LEN, Status, TXN_HDR_LEN, TxnHeader, check_data_header,
    check_txn_header,
};
use super::super::index::OidIndex;
use super::super::types::{Oid, Tid};

/// At most this many dangling references are logged one by one (then only counted).
const MAX_DANGLING_LOGGED: u64 = 20;

/// The pre-pack region and its index (§9.2).
pub(crate) struct PrePack {
    /// oid → position of its current record as of the pack time (deleted objects absent).
    pub curpos: OidIndex,
    /// End of the pre-pack region: the first transaction with tid > stop (or the end).
    pub packpos: u64,
    /// Every pre-pack transaction is `p` and so is the one at `packpos` (or there is none
    /// after): the pack would change nothing (RedundantPackWarning).
    pub redundant: bool,
    /// Number of pre-pack transactions.
    pub transactions: u64,
}

/// Read one whole transaction (header to redundant length) into `buf`, checked like
/// Python's `checkTxn`; returns the header.
pub(crate) fn read_txn(
    df: &DataFile,
    tpos: u64,
    end: u64,
    last_tid: Tid,
    buf: &mut Vec<u8>,
) -> Result<TxnHeader> {
    let path = &df.path;
    let mut hb = [0u8; TXN_HDR_LEN as usize];
    df.read_exact_at(&mut hb, tpos)?;
    let h = TxnHeader::decode(&hb);
    check_txn_header(path, tpos, &h, end)?;
    if h.tid <= last_tid {
        return Err(StorageError::corrupted(path, tpos, "time-stamp reduction"));
    }
    if !matches!(
        h.status,
        Status::Committed | Status::Packed | Status::Undone
    ) {
        return Err(StorageError::corrupted(
            path,
            tpos,
            format!("invalid status {:?}", h.status.byte() as char),
        ));
    }
    let len = usize::try_from(h.tlen + 8)
        .map_err(|_| StorageError::corrupted(path, tpos, "implausible transaction length"))?;
    buf.clear();
    buf.resize(len, 0);
    df.read_exact_at(buf, tpos)?;
    let red = u64::from_be_bytes(buf[len - 8..].try_into().unwrap_or([0; 8]));
    if red != h.tlen {
        return Err(StorageError::corrupted(
            path,
            tpos,
            "redundant transaction length does not match initial transaction length",
        ));
    }
    Ok(h)
}

/// The data records of a transaction read by [`read_txn`]: `(position, header,
/// backpointer or 0, offset of the data in the buffer)`, checked (`checkData`).
pub(crate) fn records(
    path: &Path,
    tpos: u64,
    h: &TxnHeader,
    buf: &[u8],
) -> Result<Vec<(u64, DataHeader, u64, usize)>> {
    let mut out = Vec::new();
    let tend = tpos + h.tlen;
    let mut pos = tpos + h.hlen();
    while pos < tend {
        let off = (pos - tpos) as usize;
        let hb: &[u8; DATA_HDR_LEN as usize] = buf
            .get(off..off + DATA_HDR_LEN as usize)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| StorageError::corrupted(path, pos, "truncated data record"))?;
        let d = DataHeader::decode(hb);
        check_data_header(path, pos, &d, tpos, tend)?;
        if d.prev >= pos {
            return Err(StorageError::corrupted(
                path,
                pos,
                "invalid previous pointer",
            ));
        }
        let back = if d.plen == 0 {
            let b = off + DATA_HDR_LEN as usize;
            let back = u64::from_be_bytes(
                buf.get(b..b + 8)
                    .and_then(|s| s.try_into().ok())
                    .unwrap_or([0; 8]),
            );
            if back >= pos {
                return Err(StorageError::corrupted(path, pos, "invalid backpointer"));
            }
            back
        } else {
            0
        };
        out.push((pos, d, back, off + DATA_HDR_LEN as usize));
        pos += d.record_len();
    }
    Ok(out)
}

/// `buildPackIndex`: scan the committed file up to the first transaction after `stop`.
pub(crate) fn build_pack_index(
    df: &DataFile,
    end: u64,
    stop: Tid,
    mut progress: impl FnMut(u64),
) -> Result<PrePack> {
    let mut curpos = OidIndex::new();
    let mut pos = FILE_HDR_LEN;
    let mut last = Tid::ZERO;
    let mut unpacked = false;
    let mut buf = Vec::new();
    let mut transactions = 0;
    let mut last_status = None;
    while pos < end {
        let mut hb = [0u8; TXN_HDR_LEN as usize];
        df.read_exact_at(&mut hb, pos)?;
        if TxnHeader::decode(&hb).tid > stop {
            break;
        }
        let h = read_txn(df, pos, end, last, &mut buf)?;
        last = h.tid;
        last_status = Some(h.status);
        if h.status != Status::Packed {
            unpacked = true;
        }
        for (rpos, d, back, _) in records(&df.path, pos, &h, &buf)? {
            if d.plen > 0 || back != 0 {
                curpos.insert(d.oid, rpos).map_err(|e| {
                    StorageError::corrupted(&df.path, rpos, format!("position {} too large", e.0))
                })?;
            } else {
                curpos.remove(d.oid);
            }
        }
        transactions += 1;
        pos = h.next_pos(pos);
        progress(pos);
    }
    let packpos = pos;
    let redundant = !unpacked
        && if packpos < end {
            let mut hb = [0u8; TXN_HDR_LEN as usize];
            df.read_exact_at(&mut hb, packpos)?;
            TxnHeader::decode(&hb).status == Status::Packed
        } else {
            last_status == Some(Status::Packed)
        };
    curpos.shrink_to_fit();
    Ok(PrePack {
        curpos,
        packpos,
        redundant,
        transactions,
    })
}

/// The mark bitmap over the pre-pack oids (module documentation).
pub(crate) struct Marks {
    bits: Vec<u64>,
    /// Sorted pre-pack oids when they are too sparse to key the bitmap directly.
    rank: Option<Vec<u64>>,
}

impl Marks {
    pub fn new(curpos: &OidIndex) -> Marks {
        let n = curpos.len() as u64;
        let max = curpos.max_oid().map_or(0, |o| o.0);
        if max / 64 <= n + (1 << 16) {
            Marks {
                bits: vec![0; (max / 64 + 1) as usize],
                rank: None,
            }
        } else {
            let rank: Vec<u64> = curpos.iter().map(|(o, _)| o.0).collect();
            Marks {
                bits: vec![0; rank.len() / 64 + 1],
                rank: Some(rank),
            }
        }
    }

    fn slot(&self, oid: Oid) -> Option<usize> {
        match &self.rank {
            None => usize::try_from(oid.0)
                .ok()
                .filter(|&i| i / 64 < self.bits.len()),
            Some(r) => r.binary_search(&oid.0).ok(),
        }
    }

    pub fn is_marked(&self, oid: Oid) -> bool {
        self.slot(oid)
            .is_some_and(|i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Mark `oid`; false when it was already marked (or is not a pre-pack oid).
    pub fn mark(&mut self, oid: Oid) -> bool {
        let Some(i) = self.slot(oid) else {
            return false;
        };
        let w = &mut self.bits[i / 64];
        let bit = 1u64 << (i % 64);
        let fresh = *w & bit == 0;
        *w |= bit;
        fresh
    }

    pub fn mark_all(&mut self, curpos: &OidIndex) {
        for (oid, _) in curpos.iter() {
            self.mark(oid);
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.bits.len() * 8 + self.rank.as_ref().map_or(0, |r| r.capacity() * 8)
    }
}

/// The reachable set: the marked oids' pack-time revisions plus `extra` positions.
pub(crate) struct Reach {
    pub marks: Marks,
    pub extra: HashSet<u64>,
    pub dangling: u64,
}

impl Reach {
    /// `isReachable(oid, pos)` with `curpos` the pre-pack index.
    pub fn keeps(&self, curpos: &OidIndex, oid: Oid, pos: u64) -> bool {
        (self.marks.is_marked(oid) && curpos.get(oid) == Some(pos)) || self.extra.contains(&pos)
    }
}

/// The strong references of the state at `pos` (resolving backpointers); none for no
/// state or a record the scanner cannot read (logged: the pack keeps going and keeps the
/// record itself, only what it alone refers to may be collected).
fn refs_at(df: &DataFile, oid: Oid, pos: u64) -> Result<Vec<u64>> {
    // One read for header and data in the common case (a small record).
    let (_, data) = df.record_with_state(pos, oid)?;
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    match crate::pickle::reference_oids(&data) {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(target: "ZODB.FileStorage.pack",
                "{}: object {oid} (record at {pos}): cannot scan its references ({e}); \
                 objects only it refers to are not kept", df.path.display());
            Ok(Vec::new())
        }
    }
}

/// Mark everything reachable from `stack` (§9.3 step 1).
fn mark_from(
    df: &DataFile,
    curpos: &OidIndex,
    marks: &mut Marks,
    stack: &mut Vec<u64>,
    dangling: &mut u64,
    progress: &mut impl FnMut(),
) -> Result<()> {
    while let Some(o) = stack.pop() {
        let oid = Oid(o);
        if marks.is_marked(oid) {
            continue;
        }
        let Some(pos) = curpos.get(oid) else {
            // §9.9.3: Python aborts with KeyError; we keep going.
            if o != 0 {
                *dangling += 1;
                if *dangling <= MAX_DANGLING_LOGGED {
                    tracing::warn!(target: "ZODB.FileStorage.pack",
                        "{}: dangling reference to object {oid} (absent or deleted at the pack time); packing on",
                        df.path.display());
                }
            }
            continue;
        };
        marks.mark(oid);
        stack.extend(refs_at(df, oid, pos)?);
        progress();
    }
    Ok(())
}

/// §9.3 with the intended semantics of §9.9: everything reachable from the root at the
/// pack time, plus every pre-pack revision a post-pack backpointer targets with everything
/// reachable from it and its object's pack-time revision, plus everything post-pack data
/// refers to. Without GC: every pack-time revision plus the backpointer targets.
pub(crate) fn reachable(
    df: &DataFile,
    end: u64,
    pre: &PrePack,
    gc: bool,
    mut progress: impl FnMut(),
) -> Result<Reach> {
    let curpos = &pre.curpos;
    let mut marks = Marks::new(curpos);
    let mut extra = HashSet::new();
    let mut dangling = 0;
    let mut stack = Vec::new();
    if gc {
        stack.push(0);
        mark_from(
            df,
            curpos,
            &mut marks,
            &mut stack,
            &mut dangling,
            &mut progress,
        )?;
    } else {
        marks.mark_all(curpos);
    }
    // Reachable from the future: the post-pack region as committed when the pack began
    // (later commits are copied as they are; their backpointers target revisions kept here
    // or are re-targeted / written with data in copy-rest).
    let mut pos = pre.packpos;
    let mut buf = Vec::new();
    let mut last = Tid::ZERO;
    while pos < end {
        let h = read_txn(df, pos, end, last, &mut buf)?;
        last = h.tid;
        for (rpos, d, back, off) in records(&df.path, pos, &h, &buf)? {
            if back != 0 && back < pre.packpos {
                if extra.insert(back) && gc {
                    stack.extend(refs_at(df, d.oid, back)?);
                    stack.push(d.oid.0);
                }
            } else if gc && d.plen > 0 {
                let data = &buf[off..off + d.plen as usize];
                if let Ok(refs) = crate::pickle::reference_oids(data) {
                    stack.extend(refs);
                }
            }
            let _ = rpos;
        }
        if gc {
            mark_from(
                df,
                curpos,
                &mut marks,
                &mut stack,
                &mut dangling,
                &mut progress,
            )?;
        }
        pos = h.next_pos(pos);
    }
    if dangling > MAX_DANGLING_LOGGED {
        tracing::warn!(target: "ZODB.FileStorage.pack",
            "{}: {dangling} dangling references in all", df.path.display());
    }
    Ok(Reach {
        marks,
        extra,
        dangling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_dense_and_sparse() {
        let mut idx = OidIndex::new();
        for o in [0u64, 1, 5, 700] {
            idx.insert(Oid(o), 4 + o).unwrap();
        }
        let mut m = Marks::new(&idx);
        assert!(m.rank.is_none());
        assert!(m.mark(Oid(5)));
        assert!(!m.mark(Oid(5)));
        assert!(m.is_marked(Oid(5)) && !m.is_marked(Oid(1)) && !m.is_marked(Oid(1 << 40)));
        let mut sparse = OidIndex::new();
        for o in [0u64, 1 << 40, 1 << 50] {
            sparse.insert(Oid(o), 4).unwrap();
        }
        let mut m = Marks::new(&sparse);
        assert!(m.rank.is_some());
        assert!(m.mark(Oid(1 << 50)) && m.is_marked(Oid(1 << 50)) && !m.is_marked(Oid(1 << 40)));
        assert!(!m.mark(Oid(3)));
    }
}
