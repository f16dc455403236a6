//! Positional reads of Data.fs records. Every read is a `pread` (`FileExt::read_at`), so
//! any number of threads read at once, also while a commit appends past the committed end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::format::{DATA_HDR_LEN, DataHeader, TXN_HDR_LEN, TxnHeader, check_txn_header};
use super::types::{Oid, Tid};

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

/// The data file and its name (for error messages).
#[derive(Debug)]
pub struct DataFile {
    pub file: File,
    pub path: PathBuf,
}

impl DataFile {
    pub fn new(file: File, path: &Path) -> DataFile {
        DataFile {
            file,
            path: path.to_path_buf(),
        }
    }

    /// Read exactly `buf.len()` bytes at `pos`; running into the end of the file means the
    /// record that pointed here is damaged.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
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
    /// and data with one `pread` when the record is small (the common load).
    pub fn record_with_state(&self, pos: u64, oid: Oid) -> Result<(RecordHeader, Option<Vec<u8>>)> {
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
