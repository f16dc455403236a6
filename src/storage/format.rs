//! The Data.fs byte layout: header, transaction records, data records, status bytes, and
//! the invariants checked when they are read. This is the one place the format is written
//! down in this code base (spec: `filestorage.md` §2).
//!
//! # File
//!
//! ```text
//! +--------+----------------------+----------------------+-----+
//! | "FS30" | transaction record 1 | transaction record 2 | ... |
//! +--------+----------------------+----------------------+-----+
//!  0      4
//! ```
//!
//! An append-only log; all integers big-endian. New files are written with `FS30`; `FS21`
//! (Python 2 ZODB; identical layout, Python 2 pickles) is read. A zero-length file is an
//! empty storage (a read-write open writes the magic). The only in-place change ever made
//! to existing bytes is the status byte of the last transaction (`c` → ` ` at finish).
//!
//! # Transaction record (at `tpos`), header `>8sQcHHH` = 23 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `tid` |
//! | 8 | 8 | `tlen`: length of the record **minus 8** = `hlen` + data records |
//! | 16 | 1 | `status`: ` ` committed, `p` packed, `c` voted but not finished, `u` legacy undone |
//! | 17 | 2 | `ulen` |
//! | 19 | 2 | `dlen` |
//! | 21 | 2 | `elen` |
//! | 23 | ulen + dlen + elen | user, description, extension (raw bytes) |
//! | `hlen` = 23+ulen+dlen+elen | … | data records, back to back, ending exactly at `tpos + tlen` |
//! | `tlen` | 8 | `tlen` again (the redundant length, used to walk backwards) |
//!
//! The next transaction starts at `tpos + tlen + 8`. An empty transaction has `tlen == hlen`.
//! `user` and `description` are UTF-8 by convention; `extension` is empty or a protocol ≤ 3
//! pickle of a dict (§2.4).
//!
//! # Data record (at `pos`), header `>8s8sQQHQ` = 42 bytes
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `oid` |
//! | 8 | 8 | `tid`: equals the transaction's tid |
//! | 16 | 8 | `prev`: position of the oid's record that was current before this transaction, or 0 |
//! | 24 | 8 | `tloc`: position of the enclosing transaction |
//! | 32 | 2 | `vlen`: always 0 (ZODB 3 versions are refused) |
//! | 34 | 8 | `plen`: length of the pickle |
//! | 42 | plen | the pickle, when `plen > 0` |
//! | 42 | 8 | `back`, when `plen == 0`: backpointer to an earlier record of the same oid whose data this revision shares; `back == 0` means the object has no state (deleted, or its creation undone) |
//!
//! # Invariants (checked on read; §2.7)
//!
//! * tids strictly increase along the file (a reduction is logged, as Python does);
//! * `tlen >= hlen`; the data records exactly fill `[tpos + hlen, tpos + tlen)`; the u64 at
//!   `tpos + tlen` equals `tlen`;
//! * every data record's `tloc` is its transaction's position and `vlen == 0`;
//! * a `c` transaction can only be the last one (open-time recovery removes it, §6);
//! * when followed, `prev`/`back` point backwards (`< pos`) and a backpointer's target
//!   record has the same oid (Python checks neither; a wrong `prev` is only logged at open).
//!
//! Violations are [`StorageError::Corrupted`] naming the file and byte position, with
//! Python's wording where Python has one.

use std::path::Path;

use super::error::{Result, StorageError};
use super::types::{Oid, Tid};

pub const MAGIC_FS30: &[u8; 4] = b"FS30";
pub const MAGIC_FS21: &[u8; 4] = b"FS21";
/// Length of the file header (the magic).
pub const FILE_HDR_LEN: u64 = 4;
/// `TRANS_HDR_LEN`.
pub const TXN_HDR_LEN: u64 = 23;
/// `DATA_HDR_LEN`.
pub const DATA_HDR_LEN: u64 = 42;
/// Length of a data record that carries a backpointer instead of data.
pub const BACKPOINTER_RECORD_LEN: u64 = DATA_HDR_LEN + 8;

/// The status byte of a transaction record (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `' '`: committed.
    Committed,
    /// `'p'`: went through pack; not undoable.
    Packed,
    /// `'c'`: written at vote, not yet finished; only ever the last record.
    Checkpoint,
    /// `'u'`: legacy non-transactional undo; its records are not indexed.
    Undone,
    /// Any other byte: Python warns and treats it as committed.
    Other(u8),
}

impl Status {
    pub fn from_byte(b: u8) -> Status {
        match b {
            b' ' => Status::Committed,
            b'p' => Status::Packed,
            b'c' => Status::Checkpoint,
            b'u' => Status::Undone,
            other => Status::Other(other),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Status::Committed => b' ',
            Status::Packed => b'p',
            Status::Checkpoint => b'c',
            Status::Undone => b'u',
            Status::Other(b) => b,
        }
    }
}

/// The fixed 23-byte part of a transaction record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnHeader {
    pub tid: Tid,
    pub tlen: u64,
    pub status: Status,
    pub ulen: u16,
    pub dlen: u16,
    pub elen: u16,
}

impl TxnHeader {
    pub fn decode(b: &[u8; TXN_HDR_LEN as usize]) -> TxnHeader {
        TxnHeader {
            tid: Tid(be64(&b[0..8])),
            tlen: be64(&b[8..16]),
            status: Status::from_byte(b[16]),
            ulen: be16(&b[17..19]),
            dlen: be16(&b[19..21]),
            elen: be16(&b[21..23]),
        }
    }

    pub fn encode(&self) -> [u8; TXN_HDR_LEN as usize] {
        let mut b = [0u8; TXN_HDR_LEN as usize];
        b[0..8].copy_from_slice(&self.tid.to_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status.byte();
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// `hlen`: header plus the three metadata strings; the first data record starts here.
    pub fn hlen(&self) -> u64 {
        TXN_HDR_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }

    /// Position of the next transaction for a record at `tpos` (saturating: a damaged
    /// `tlen` must not wrap around).
    pub fn next_pos(&self, tpos: u64) -> u64 {
        tpos.saturating_add(self.tlen).saturating_add(8)
    }
}

/// The fixed 42-byte part of a data record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub oid: Oid,
    pub tid: Tid,
    pub prev: u64,
    pub tloc: u64,
    pub vlen: u16,
    pub plen: u64,
}

impl DataHeader {
    pub fn decode(b: &[u8; DATA_HDR_LEN as usize]) -> DataHeader {
        DataHeader {
            oid: Oid(be64(&b[0..8])),
            tid: Tid(be64(&b[8..16])),
            prev: be64(&b[16..24]),
            tloc: be64(&b[24..32]),
            vlen: be16(&b[32..34]),
            plen: be64(&b[34..42]),
        }
    }

    pub fn encode(&self) -> [u8; DATA_HDR_LEN as usize] {
        let mut b = [0u8; DATA_HDR_LEN as usize];
        b[0..8].copy_from_slice(&self.oid.to_bytes());
        b[8..16].copy_from_slice(&self.tid.to_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Length of the whole record: header plus data, or header plus backpointer.
    pub fn record_len(&self) -> u64 {
        if self.plen == 0 {
            BACKPOINTER_RECORD_LEN
        } else {
            DATA_HDR_LEN.saturating_add(self.plen)
        }
    }
}

/// What a data record holds after its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The object's pickle (`plen > 0`; never empty).
    Data(&'a [u8]),
    /// A backpointer (`plen == 0`); 0 means "no state" (a deletion).
    Back(u64),
}

/// Append one data record to `out`. `payload` must not be `Data(&[])`: an empty pickle
/// would be read back as a backpointer (§2.5), so it is refused by the callers.
pub fn encode_data_record(
    out: &mut Vec<u8>,
    oid: Oid,
    tid: Tid,
    prev: u64,
    tloc: u64,
    payload: &Payload<'_>,
) {
    let plen = match payload {
        Payload::Data(d) => d.len() as u64,
        Payload::Back(_) => 0,
    };
    let h = DataHeader {
        oid,
        tid,
        prev,
        tloc,
        vlen: 0,
        plen,
    };
    out.extend_from_slice(&h.encode());
    match payload {
        Payload::Data(d) => out.extend_from_slice(d),
        Payload::Back(b) => out.extend_from_slice(&b.to_be_bytes()),
    }
}

/// The header and metadata of a transaction record, for `records_len` bytes of data
/// records that follow; the caller appends the records and [`encode_txn_trailer`].
pub fn encode_txn_head(
    tid: Tid,
    status: Status,
    user: &[u8],
    description: &[u8],
    extension: &[u8],
    records_len: u64,
) -> Vec<u8> {
    let h = TxnHeader {
        tid,
        tlen: 0,
        status,
        ulen: user.len() as u16,
        dlen: description.len() as u16,
        elen: extension.len() as u16,
    };
    let h = TxnHeader {
        tlen: h.hlen() + records_len,
        ..h
    };
    let mut out = Vec::with_capacity(h.hlen() as usize);
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(user);
    out.extend_from_slice(description);
    out.extend_from_slice(extension);
    out
}

/// The redundant length that closes a transaction record.
pub fn encode_txn_trailer(tlen: u64) -> [u8; 8] {
    tlen.to_be_bytes()
}

/// Checks of a transaction header against the file it was read from (§2.7 item 3, with
/// Python's messages). `file_end` is the end of the readable region.
pub fn check_txn_header(path: &Path, tpos: u64, h: &TxnHeader, file_end: u64) -> Result<()> {
    if h.tlen < h.hlen() {
        return Err(StorageError::corrupted(
            path,
            tpos,
            format!(
                "invalid transaction header: tlen {} < header length {}",
                h.tlen,
                h.hlen()
            ),
        ));
    }
    if h.next_pos(tpos) > file_end {
        return Err(StorageError::corrupted(
            path,
            tpos,
            format!(
                "transaction record of length {} runs past the end of the data at {file_end}",
                h.tlen
            ),
        ));
    }
    Ok(())
}

/// Checks of a data record header inside the transaction `[tpos, tend)` (§2.7 item 4).
pub fn check_data_header(
    path: &Path,
    pos: u64,
    h: &DataHeader,
    tpos: u64,
    tend: u64,
) -> Result<()> {
    if h.vlen != 0 {
        return Err(StorageError::corrupted(
            path,
            pos,
            format!(
                "data record has version length {} (ZODB 3 versions are not supported)",
                h.vlen
            ),
        ));
    }
    if pos.saturating_add(h.record_len()) > tend || h.tloc != tpos {
        return Err(StorageError::corrupted(
            path,
            pos,
            format!(
                "data record exceeds transaction record: tloc {} != tpos {tpos} or record end {} > transaction end {tend}",
                h.tloc,
                pos.saturating_add(h.record_len())
            ),
        ));
    }
    Ok(())
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tiny file of spec §14.1, byte for byte.
    pub const TINY: &str = "\
4653333003f58e0033333333000000000000009a20000000190000696e697469616c2064617461626173652063726561\
74696f6e000000000000000003f58e003333333300000000000000000000000000000004000000000000000000408003\
6370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d71015804\
0000006461746171027d7103732e000000000000009a03f58e00533333330000000000000110200005000500002f2062\
6f626164642061000000000000000003f58e0053333333000000000000003400000000000000a6000000000000000000\
5b80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d71\
0158040000006461746171027d7103580100000061710443080000000000000001710568008671065173732e00000000\
0000000103f58e0053333333000000000000000000000000000000a60000000000000000004080036370657273697374\
656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171\
027d7103732e0000000000000110";

    pub fn tiny() -> Vec<u8> {
        let hex: String = TINY.chars().filter(|c| !c.is_whitespace()).collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn tiny_file_layout() {
        let f = tiny();
        assert_eq!(f.len(), 446);
        assert_eq!(&f[0..4], MAGIC_FS30);
        let h = TxnHeader::decode(f[4..27].try_into().unwrap());
        assert_eq!(h.tid, Tid(0x03f5_8e00_3333_3333));
        assert_eq!(h.tlen, 154);
        assert_eq!(h.status, Status::Committed);
        assert_eq!((h.ulen, h.dlen, h.elen), (0, 25, 0));
        assert_eq!(h.next_pos(4), 166);
        check_txn_header(Path::new("t"), 4, &h, 446).unwrap();
        let d = DataHeader::decode(f[52..94].try_into().unwrap());
        assert_eq!(d.oid, Oid(0));
        assert_eq!((d.prev, d.tloc, d.vlen, d.plen), (0, 4, 0, 64));
        check_data_header(Path::new("t"), 52, &d, 4, 4 + 154).unwrap();
        let h2 = TxnHeader::decode(f[166..189].try_into().unwrap());
        assert_eq!(h2.tlen, 272);
        assert_eq!(&f[189..194], b"/ bob");
        let d = DataHeader::decode(f[199..241].try_into().unwrap());
        assert_eq!((d.prev, d.tloc, d.plen), (52, 166, 91));
        let d = DataHeader::decode(f[332..374].try_into().unwrap());
        assert_eq!((d.oid, d.prev, d.tloc, d.plen), (Oid(1), 0, 166, 64));
    }

    #[test]
    fn tiny_file_re_encodes_identically() {
        let f = tiny();
        // Rebuild transaction 2 from its parts.
        let recs = {
            let mut out = Vec::new();
            encode_data_record(
                &mut out,
                Oid(0),
                Tid(0x03f5_8e00_5333_3333),
                52,
                166,
                &Payload::Data(&f[241..332]),
            );
            encode_data_record(
                &mut out,
                Oid(1),
                Tid(0x03f5_8e00_5333_3333),
                0,
                166,
                &Payload::Data(&f[374..438]),
            );
            out
        };
        let mut t = encode_txn_head(
            Tid(0x03f5_8e00_5333_3333),
            Status::Committed,
            b"/ bob",
            b"add a",
            b"",
            recs.len() as u64,
        );
        t.extend_from_slice(&recs);
        t.extend_from_slice(&encode_txn_trailer(272));
        assert_eq!(t, f[166..446]);
    }

    #[test]
    fn damaged_headers_are_reported_with_position() {
        let h = TxnHeader {
            tid: Tid(1),
            tlen: 10,
            status: Status::Committed,
            ulen: 0,
            dlen: 0,
            elen: 0,
        };
        let e = check_txn_header(Path::new("/d/Data.fs"), 4, &h, 1000).unwrap_err();
        assert!(
            e.to_string().starts_with("/d/Data.fs is damaged at byte 4"),
            "{e}"
        );
        let d = DataHeader {
            oid: Oid(1),
            tid: Tid(1),
            prev: 0,
            tloc: 5,
            vlen: 0,
            plen: 3,
        };
        let e = check_data_header(Path::new("D"), 27, &d, 4, 100).unwrap_err();
        assert!(e.to_string().contains("tloc 5 != tpos 4"), "{e}");
        let d = DataHeader {
            vlen: 1,
            tloc: 4,
            ..d
        };
        assert!(check_data_header(Path::new("D"), 27, &d, 4, 100).is_err());
    }

    fn status_strategy() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Committed),
            Just(Status::Packed),
            Just(Status::Checkpoint),
            Just(Status::Undone),
        ]
    }

    proptest! {
        #[test]
        fn txn_header_round_trips(tid: u64, tlen: u64, status in status_strategy(),
                                  ulen: u16, dlen: u16, elen: u16) {
            let h = TxnHeader { tid: Tid(tid), tlen, status, ulen, dlen, elen };
            prop_assert_eq!(TxnHeader::decode(&h.encode()), h);
        }

        #[test]
        fn data_record_round_trips(oid: u64, tid: u64, prev: u64, tloc: u64,
                                   data in proptest::collection::vec(any::<u8>(), 0..200),
                                   back: u64) {
            let payload = if data.is_empty() { Payload::Back(back) } else { Payload::Data(&data) };
            let mut out = Vec::new();
            encode_data_record(&mut out, Oid(oid), Tid(tid), prev, tloc, &payload);
            let h = DataHeader::decode(out[..42].try_into().unwrap());
            prop_assert_eq!(h.record_len() as usize, out.len());
            prop_assert_eq!((h.oid, h.tid, h.prev, h.tloc, h.vlen), (Oid(oid), Tid(tid), prev, tloc, 0));
            match payload {
                Payload::Data(d) => prop_assert_eq!(&out[42..], d),
                Payload::Back(b) => prop_assert_eq!(&out[42..], &b.to_be_bytes()[..]),
            }
        }

        #[test]
        fn transaction_round_trips(tid: u64,
                                   user in proptest::collection::vec(any::<u8>(), 0..40),
                                   desc in proptest::collection::vec(any::<u8>(), 0..40),
                                   ext in proptest::collection::vec(any::<u8>(), 0..40),
                                   records in proptest::collection::vec(
                                       (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..50)), 0..5)) {
            let tpos = 4u64;
            let hlen = 23 + (user.len() + desc.len() + ext.len()) as u64;
            let mut recs = Vec::new();
            for (oid, data) in &records {
                let p = if data.is_empty() { Payload::Back(0) } else { Payload::Data(data) };
                encode_data_record(&mut recs, Oid(*oid), Tid(tid), 0, tpos, &p);
            }
            let mut t = encode_txn_head(Tid(tid), Status::Committed, &user, &desc, &ext, recs.len() as u64);
            prop_assert_eq!(t.len() as u64, hlen);
            t.extend_from_slice(&recs);
            let tlen = t.len() as u64;
            t.extend_from_slice(&encode_txn_trailer(tlen));
            let h = TxnHeader::decode(t[..23].try_into().unwrap());
            prop_assert_eq!(h.tlen, tlen);
            prop_assert_eq!(h.hlen(), hlen);
            check_txn_header(Path::new("x"), tpos, &h, tpos + t.len() as u64).unwrap();
            let mut p = hlen;
            let mut seen = Vec::new();
            while p < h.tlen {
                let d = DataHeader::decode(t[p as usize..p as usize + 42].try_into().unwrap());
                check_data_header(Path::new("x"), tpos + p, &d, tpos, tpos + h.tlen).unwrap();
                seen.push(d.oid.0);
                p += d.record_len();
            }
            prop_assert_eq!(p, h.tlen);
            prop_assert_eq!(seen, records.iter().map(|r| r.0).collect::<Vec<_>>());
            prop_assert_eq!(&t[t.len() - 8..], &tlen.to_be_bytes()[..]);
        }
    }
}
