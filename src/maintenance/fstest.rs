//! The structural checker of `ZODB.scripts.fstest`, reimplemented check for check.
//!
//! fstest is deliberately independent of the storage's own reader: it walks the file with its
//! own, looser rules (it does not look at `prev` or `back`, accepts `u` transactions without
//! looking inside them, and knows the legacy "version" data record layout), stops at the
//! first problem and reports it with a fixed message. `zodbctl verify` must give the same
//! verdict and the same text, so this module follows `fstest.check()` step by step instead of
//! reusing the engine's scan; only the record layouts come from [`crate::storage::format`].
//!
//! Arithmetic on lengths read from the file is done in `u128`: a damaged `tlen` or `plen` may
//! be close to `u64::MAX`, Python's integers do not overflow, and the messages print the
//! (possibly huge) resulting position.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};

use super::pyrepr::bytes_repr;
use super::reader::PosReader;
use crate::storage::format::{DATA_HDR_LEN, DataHeader, MAGIC_FS30, TXN_HDR_LEN, TxnHeader};

/// The first structural problem found, with fstest's message (without the trailing newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    /// The text fstest prints on standard error.
    pub message: String,
    /// The damage is a last transaction that is incomplete or still has its checkpoint
    /// status: what a commit in progress looks like to a reader of a live file.
    pub trailing: bool,
}

/// Why a check did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file is damaged; fstest exits with status 1 and this message.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Reading the file (or writing the verbose output) failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a successful check saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub transactions: u64,
    pub data_records: u64,
    pub file_size: u64,
}

/// Options of one check.
pub struct Options<'a> {
    /// The file name as the user gave it; every message starts with it.
    pub label: &'a str,
    /// fstest's `-v` count: 1 prints a line per transaction, 2 also one per data record.
    pub verbosity: u8,
    /// Called with the position of each transaction, for a progress display.
    pub progress: &'a mut dyn FnMut(u64),
}

/// Check `file` as `fstest.check(path)` does. Verbose lines go to `out` as they are produced
/// (so a failure leaves the lines before it in place, as with fstest); `no errors detected`
/// is left to the caller.
pub fn check(file: &File, out: &mut dyn Write, opts: Options<'_>) -> Result<Summary, CheckError> {
    let file_size = file.metadata()?.len();
    let mut r = PosReader::new(file, file_size);
    if file_size == 0 {
        return Err(fail("empty file".to_owned()));
    }
    // fstest accepts only FS30 (ZODB 6.4 on Python 3).
    if r.read(0, 4)? != MAGIC_FS30 {
        return Err(fail("invalid file header".to_owned()));
    }
    let mut summary = Summary {
        file_size,
        ..Summary::default()
    };
    let mut pos: u64 = 4;
    let mut ltid = [0u8; 8];
    let path = opts.label;
    while let Some((next, tid)) = check_trec(
        &mut r,
        path,
        pos,
        ltid,
        file_size,
        &mut summary,
        out,
        opts.verbosity,
    )? {
        if opts.verbosity >= 1 {
            writeln!(
                out,
                "{pos:10}: transaction tid {} #{} ",
                hexify(&tid),
                summary.transactions
            )?;
        }
        summary.transactions += 1;
        (opts.progress)(next);
        ltid = tid;
        pos = next;
    }
    Ok(summary)
}

fn fail(message: String) -> CheckError {
    CheckError::Format(FormatError {
        message,
        trailing: false,
    })
}

fn fail_trailing(message: String) -> CheckError {
    CheckError::Format(FormatError {
        message,
        trailing: true,
    })
}

/// `'0x' + hexlify(s)`.
pub fn hexify(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// One transaction record; `None` at a clean end of file, else the next position and the tid.
#[allow(clippy::too_many_arguments)]
fn check_trec(
    r: &mut PosReader<'_>,
    path: &str,
    pos: u64,
    ltid: [u8; 8],
    file_size: u64,
    summary: &mut Summary,
    out: &mut dyn Write,
    verbosity: u8,
) -> Result<Option<(u64, [u8; 8])>, CheckError> {
    let h = r.read(pos, TXN_HDR_LEN as usize)?;
    if h.is_empty() {
        return Ok(None);
    }
    let Ok(h) = <&[u8; TXN_HDR_LEN as usize]>::try_from(h) else {
        return Err(fail_trailing(format!("{path} truncated at {pos}")));
    };
    let h = TxnHeader::decode(h);
    let tid = h.tid.to_bytes();
    let stl = h.tlen;
    let status = h.status.byte();
    let tmeta_len = h.hlen();

    if tid <= ltid {
        return Err(fail(format!(
            "{path} time-stamp reduction at {pos}: {} <= {}",
            hexify(&tid),
            hexify(&ltid)
        )));
    }
    let tl = stl;
    if u128::from(pos) + u128::from(tl) + 8 > u128::from(file_size) {
        return Err(fail_trailing(format!(
            "{path} truncated possibly because of damaged records at {pos}"
        )));
    }
    if status == b'c' {
        return Err(fail_trailing(format!(
            "{path} checkpoint flag was not cleared at {pos}"
        )));
    }
    if !b" up".contains(&status) {
        // Python formats the one-byte bytes object with %s: `'b'x''`.
        return Err(fail(format!(
            "{path} has invalid status '{}' at {pos}",
            bytes_repr(&[status])
        )));
    }
    if tmeta_len > tl {
        return Err(fail(format!(
            "{path} has an invalid transaction header at {pos}"
        )));
    }

    // From here on `tpos + tl + 8 <= file_size`, so these sums fit in u64.
    let tpos = pos;
    let tend = tpos + tl;
    // fstest reports the redundant-length failure at the position its record walk ended on:
    // `tend` for a normal transaction, `tpos` for an undone one it did not walk.
    let mut walked = u128::from(tpos);
    if status != b'u' {
        let mut p = u128::from(tpos + tmeta_len);
        let mut i = 0u64;
        while p < u128::from(tend) {
            let here = p as u64; // p < tend <= u64::MAX
            let (next, oid) = check_drec(r, path, here, tpos)?;
            if next > u128::from(tend) {
                return Err(fail(format!(
                    "{path} has data records that extend beyond the transaction record; end at {next}"
                )));
            }
            if verbosity >= 2 {
                writeln!(out, "{here:10}: object oid {} #{i}", hexify(&oid))?;
            }
            i += 1;
            summary.data_records += 1;
            p = next;
        }
        walked = p;
    }
    let rtl = r.read(tend, 8)?;
    if rtl != stl.to_be_bytes() {
        return Err(fail(format!(
            "{path} has inconsistent transaction length for undone transaction at {walked}"
        )));
    }
    Ok(Some((tend + 8, tid)))
}

/// One data record at `pos`; returns the position after it (which may lie past the
/// transaction, or even past the file, when lengths are damaged) and its oid.
fn check_drec(
    r: &mut PosReader<'_>,
    path: &str,
    pos: u64,
    tpos: u64,
) -> Result<(u128, [u8; 8]), CheckError> {
    let h = r.read(pos, DATA_HDR_LEN as usize)?;
    let Ok(h) = <&[u8; DATA_HDR_LEN as usize]>::try_from(h) else {
        return Err(fail(format!("{path} truncated at {pos}")));
    };
    let DataHeader {
        oid,
        tloc,
        vlen,
        plen,
        ..
    } = DataHeader::decode(h);
    let oid = oid.to_bytes();
    let mut dlen = u128::from(DATA_HDR_LEN) + u128::from(if plen == 0 { 8 } else { plen });
    if vlen != 0 {
        // Legacy ZODB 3 layout: a version-pointer pair (16 bytes) and the version string.
        dlen += 16 + u128::from(vlen);
    }
    if tloc != tpos {
        return Err(fail(format!(
            "{path} data record exceeds transaction record at {pos}: tloc {tloc} != tpos {tpos}"
        )));
    }
    Ok((u128::from(pos) + dlen, oid))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type Damage = Box<dyn Fn(&mut Vec<u8>)>;

    /// The two-transaction file of spec §14.1 (root, then `root['a'] = PersistentMapping()`).
    pub(crate) fn tiny() -> Vec<u8> {
        let mut f = b"FS30".to_vec();
        let pickle = {
            let mut p = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
            p.extend_from_slice(b"\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.");
            p
        };
        let t1 = *b"\x03\xf5\x8e\x00\x33\x33\x33\x33";
        let t2 = *b"\x03\xf5\x8e\x00\x53\x33\x33\x33";
        push_txn(
            &mut f,
            t1,
            b"",
            b"initial database creation",
            &[([0; 8], 0, pickle.clone())],
        );
        let mut oid1 = [0u8; 8];
        oid1[7] = 1;
        let mut root2 = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
        root2.extend_from_slice(
            b"\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04",
        );
        root2.extend_from_slice(b"C\x08\x00\x00\x00\x00\x00\x00\x00\x01q\x05h\x00\x86q\x06Qss.");
        push_txn(
            &mut f,
            t2,
            b"/ bob",
            b"add a",
            &[([0; 8], 52, root2), (oid1, 0, pickle)],
        );
        f
    }

    fn push_txn(
        f: &mut Vec<u8>,
        tid: [u8; 8],
        user: &[u8],
        desc: &[u8],
        recs: &[([u8; 8], u64, Vec<u8>)],
    ) {
        let tpos = f.len() as u64;
        let hlen = 23 + user.len() + desc.len();
        let dl: usize = recs.iter().map(|r| 42 + r.2.len()).sum();
        let tlen = (hlen + dl) as u64;
        f.extend_from_slice(&tid);
        f.extend_from_slice(&tlen.to_be_bytes());
        f.push(b' ');
        f.extend_from_slice(&(user.len() as u16).to_be_bytes());
        f.extend_from_slice(&(desc.len() as u16).to_be_bytes());
        f.extend_from_slice(&0u16.to_be_bytes());
        f.extend_from_slice(user);
        f.extend_from_slice(desc);
        for (oid, prev, data) in recs {
            f.extend_from_slice(oid);
            f.extend_from_slice(&tid);
            f.extend_from_slice(&prev.to_be_bytes());
            f.extend_from_slice(&tpos.to_be_bytes());
            f.extend_from_slice(&0u16.to_be_bytes());
            f.extend_from_slice(&(data.len() as u64).to_be_bytes());
            f.extend_from_slice(data);
        }
        f.extend_from_slice(&tlen.to_be_bytes());
    }

    fn run(bytes: &[u8], verbosity: u8) -> (Result<Summary, String>, String) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let res = check(
            tmp.as_file(),
            &mut out,
            Options {
                label: "Data.fs",
                verbosity,
                progress: &mut |_| {},
            },
        )
        .map_err(|e| e.to_string());
        (res, String::from_utf8(out).unwrap())
    }

    #[test]
    fn tiny_file_is_healthy_and_matches_the_spec_layout() {
        let f = tiny();
        assert_eq!(f.len(), 446);
        let (res, out) = run(&f, 2);
        let s = res.unwrap();
        assert_eq!((s.transactions, s.data_records), (2, 3));
        assert_eq!(
            out,
            "        52: object oid 0x0000000000000000 #0\n         4: transaction tid 0x03f58e0033333333 #0 \n       199: object oid 0x0000000000000000 #0\n       332: object oid 0x0000000000000001 #1\n       166: transaction tid 0x03f58e0053333333 #1 \n"
        );
    }

    #[test]
    fn single_field_damage_gives_fstest_messages() {
        let base = tiny();
        let cases: Vec<(Damage, &str)> = vec![
            (Box::new(|f| f.clear()), "empty file"),
            (Box::new(|f| f[3] = b'1'), "invalid file header"),
            (
                Box::new(|f| f.extend_from_slice(&[0; 5])),
                "Data.fs truncated at 446",
            ),
            (
                Box::new(|f| f[166 + 16] = b'c'),
                "Data.fs checkpoint flag was not cleared at 166",
            ),
            (
                Box::new(|f| f[166 + 16] = b'x'),
                "Data.fs has invalid status 'b'x'' at 166",
            ),
            (
                Box::new(|f| f[166 + 16] = b'\''),
                "Data.fs has invalid status 'b\"'\"' at 166",
            ),
            (
                Box::new(|f| f[166 + 4] = 0x23),
                "Data.fs time-stamp reduction at 166: 0x03f58e0023333333 <= 0x03f58e0033333333",
            ),
            (
                Box::new(|f| f[445] = 0x11),
                "Data.fs has inconsistent transaction length for undone transaction at 438",
            ),
            (
                Box::new(|f| f[199 + 31] = 0xa7),
                "Data.fs data record exceeds transaction record at 199: tloc 167 != tpos 166",
            ),
            (
                Box::new(|f| f[332 + 41] = 0x41),
                "Data.fs has data records that extend beyond the transaction record; end at 439",
            ),
            (
                Box::new(|f| f[166 + 14] = 0x02),
                "Data.fs truncated possibly because of damaged records at 166",
            ),
            (
                Box::new(|f| {
                    f[183..185].copy_from_slice(&[0x01, 0x00]);
                }),
                "Data.fs has an invalid transaction header at 166",
            ),
            (
                Box::new(|f| f[4 + 8..4 + 16].copy_from_slice(&[0xff; 8])),
                "Data.fs truncated possibly because of damaged records at 4",
            ),
            (
                Box::new(|f| f[332 + 34..332 + 42].copy_from_slice(&[0xff; 8])),
                "Data.fs has data records that extend beyond the transaction record; end at 18446744073709551989",
            ),
        ];
        for (damage, want) in cases {
            let mut f = base.clone();
            damage(&mut f);
            let (res, _) = run(&f, 0);
            assert_eq!(res.unwrap_err(), want);
        }
    }

    #[test]
    fn undone_transactions_are_not_walked() {
        let mut f = tiny();
        f[166 + 16] = b'u';
        f[199 + 31] = 0xa7; // would be a tloc error if walked
        assert_eq!(run(&f, 0).0.unwrap().data_records, 1);
        f[445] = 0x11;
        assert_eq!(
            run(&f, 0).0.unwrap_err(),
            "Data.fs has inconsistent transaction length for undone transaction at 166"
        );
    }

    #[test]
    fn legacy_version_records_use_the_old_layout() {
        let mut f = tiny();
        // vlen = 1 on the last record: 16 + 1 extra bytes run past the transaction.
        f[332 + 33] = 1;
        assert_eq!(
            run(&f, 0).0.unwrap_err(),
            "Data.fs has data records that extend beyond the transaction record; end at 455"
        );
    }
}
