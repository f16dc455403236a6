//! `zodbctl dump [PATH]`: what `fsdump` (`ZODB.FileStorage.fsdump.fsdump`) prints;
//! `--verbose`: what the same module's field-by-field `Dumper` prints. Without PATH, the
//! server instance's FileStorage (`--storage NAME` when it has several).
//!
//! fsdump walks the file with `FileIterator`, which is lenient in its own way: it warns and
//! stops at a `c` transaction, at a transaction running past the end of the file, at a bad
//! header or redundant length, and ends a transaction's records early at a record that does
//! not fit. Those warnings reach standard error through Python's last-resort log handler
//! (the bare message). The dump follows that walk step for step so its output on a damaged
//! file is fsdump's; where fsdump dies with a traceback (a partial header, a non-zero
//! version length, a `u` transaction, a backpointer to another oid), `dump` prints the
//! same lines up to that point and exits 1 with a message naming the position.
//! Backpointer chains are followed only towards the start of the file, so a looping chain
//! (which makes fsdump hang) is reported as damage too.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result, bail};

use super::pyrepr::{ascii_str_repr, bytes_repr};
use super::reader::PosReader;
use super::target;
use crate::cli::{DumpArgs, GlobalArgs};
use crate::error::usage;
use crate::storage::TimeStamp;
use crate::storage::format::{self, DATA_HDR_LEN, MAGIC_FS30, TXN_HDR_LEN, TxnHeader};
use crate::storage::types::Tid;

pub fn run(g: &GlobalArgs, args: &DumpArgs) -> Result<u8> {
    let targets = target::targets(g, args.path.as_deref(), args.storage.as_deref())?;
    let [t] = targets.as_slice() else {
        let names: Vec<&str> = targets.iter().filter_map(|t| t.name.as_deref()).collect();
        return Err(usage(anyhow::anyhow!(
            "the instance has several file storages ({}); choose one with --storage NAME",
            names.join(", ")
        )));
    };
    let label = t.path.display().to_string();
    let file = File::open(&t.path)
        .with_context(|| format!("cannot open {label}"))
        .map_err(usage)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = if args.verbose {
        dump_fields(&file, &label, &mut out)
    } else {
        dump(&file, &label, &mut out, &mut |w| eprintln!("{w}"))
    };
    let flushed = out.flush();
    match result.and_then(|()| flushed.map_err(anyhow::Error::from)) {
        Ok(()) => Ok(0),
        // `zodbctl dump | head` is a normal way to look at a file.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// A data record header as `_read_data_header` returns it.
struct DataHeader {
    oid: u64,
    tid: u64,
    tloc: u64,
    plen: u64,
    back: u64,
}

/// Read a data record header; errors where Python raises.
fn read_data_header(r: &mut PosReader<'_>, label: &str, pos: u64) -> Result<DataHeader> {
    let h = r.read(pos, DATA_HDR_LEN as usize)?;
    let Ok(h) = <&[u8; DATA_HDR_LEN as usize]>::try_from(h) else {
        bail!("{label}: data record at {pos} is cut off by the end of the file");
    };
    let h = format::DataHeader::decode(h);
    let vlen = h.vlen;
    let mut dh = DataHeader {
        oid: h.oid.0,
        tid: h.tid.0,
        tloc: h.tloc,
        plen: h.plen,
        back: 0,
    };
    if vlen != 0 {
        bail!(
            "{label}: data record at {pos} has a non-zero version length ({vlen}); versions aren't supported"
        );
    }
    if dh.plen == 0 {
        let b = r.read(pos + DATA_HDR_LEN, 8)?;
        let Ok(b) = <[u8; 8]>::try_from(b) else {
            bail!(
                "{label}: backpointer of the data record at {pos} is cut off by the end of the file"
            );
        };
        dh.back = u64::from_be_bytes(b);
    }
    Ok(dh)
}

/// Write fsdump's lines for the file to `out`; `warn` gets FileIterator's log warnings.
pub fn dump(
    file: &File,
    label: &str,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> Result<()> {
    let file_size = file.metadata()?.len();
    let mut r = PosReader::new(file, file_size);
    if r.read(0, 4)? != MAGIC_FS30 {
        return Err(usage(anyhow::anyhow!(
            "{label} is not a FileStorage file (bad magic)"
        )));
    }
    let mut pos: u64 = 4;
    let mut ltid = 0u64;
    let mut i = 0u64;
    loop {
        let h = r.read(pos, TXN_HDR_LEN as usize)?;
        if h.is_empty() {
            break;
        }
        let Ok(h) = <&[u8; TXN_HDR_LEN as usize]>::try_from(h) else {
            bail!("{label}: transaction header at {pos} is cut off by the end of the file");
        };
        let h = TxnHeader::decode(h);
        let (tid, tlen, status) = (h.tid.0, h.tlen, h.status.byte());
        let (ul, dl) = (h.ulen, h.dlen);
        let hlen = h.hlen();
        if !status.is_ascii() {
            bail!("{label}: transaction at {pos} has a non-ASCII status byte 0x{status:02x}");
        }
        if tid <= ltid {
            warn(format!("{label} time-stamp reduction at {pos}"));
        }
        ltid = tid;
        if status == b'c' {
            break;
        }
        if u128::from(pos) + u128::from(tlen) + 8 > u128::from(file_size) {
            warn(format!(
                "{label} truncated, possibly due to damaged records at {pos}"
            ));
            break;
        }
        let status_str = char::from(status).to_string();
        if !b" up".contains(&status) {
            warn(format!(
                "{label} has invalid status, {status_str}, at {pos}"
            ));
        }
        if tlen < hlen {
            let last = r.read(file_size.saturating_sub(8), 8)?;
            let rtl = <[u8; 8]>::try_from(last).map_or(0, u64::from_be_bytes);
            if i128::from(file_size) - i128::from(rtl) < i128::from(pos) || rtl < TXN_HDR_LEN {
                warn(format!("{label} has invalid transaction header at {pos}"));
                warn(format!(
                    "It appears that there is invalid data at the end of the file, possibly due to a system crash.  {label} truncated to recover from bad data at end."
                ));
            } else {
                warn(format!("{label} has invalid transaction header at {pos}"));
            }
            break;
        }
        let tpos = pos;
        let tend = tpos + tlen; // fits: checked against the file size above
        let meta = r
            .read(tpos + TXN_HDR_LEN, (hlen - TXN_HDR_LEN) as usize)?
            .to_vec();
        let (ul, dl) = (usize::from(ul), usize::from(dl));
        let user = meta.get(..ul).unwrap_or(&[]);
        let descr = meta.get(ul..ul + dl).unwrap_or(&[]);
        let rtl = r.read(tend, 8)?;
        if rtl != tlen.to_be_bytes() {
            warn(format!(
                "{label} redundant transaction length check failed at {tend}"
            ));
            break;
        }
        if status == b'u' {
            // FileIterator has no record to return for an undone transaction and fails.
            bail!("{label}: transaction at {tpos} has status 'u', which fsdump cannot show");
        }

        writeln!(
            out,
            "Trans #{i:05} tid={tid:016x} size={tlen} time={} offset={}",
            TimeStamp::from_tid(Tid(tid)),
            tpos + hlen
        )?;
        writeln!(
            out,
            "    status={} user={} description={}",
            ascii_str_repr(&status_str),
            bytes_repr(user),
            bytes_repr(descr)
        )?;
        dump_records(&mut r, label, tpos, tpos + hlen, tend, out, warn)?;
        pos = tend + 8;
        i += 1;
    }
    Ok(())
}

/// `fsdump.Dumper(path).dump()`: every header field, walking the file by its lengths
/// alone (no iterator checks). Where `Dumper` fails an assertion or reads past the end,
/// this stops with an error naming the position.
pub fn dump_fields(file: &File, label: &str, out: &mut dyn Write) -> Result<()> {
    let size = file.metadata()?.len();
    let mut r = PosReader::new(file, size);
    let rule = |c: char| c.to_string().repeat(60);
    writeln!(out, "{}", rule('*'))?;
    writeln!(out, "file identifier: {}", bytes_repr(r.read(0, 4)?))?;
    let mut pos = r.read(0, 4)?.len() as u64;
    loop {
        let h = r.read(pos, TXN_HDR_LEN as usize)?;
        if h.is_empty() {
            return Ok(());
        }
        let Ok(h) = <&[u8; TXN_HDR_LEN as usize]>::try_from(h) else {
            bail!("{label}: transaction header at {pos} is cut off by the end of the file");
        };
        let h = TxnHeader::decode(h);
        let end = u128::from(pos) + u128::from(h.tlen);
        writeln!(out, "{}", rule('='))?;
        writeln!(out, "offset: {pos}")?;
        writeln!(out, "end pos: {end}")?;
        writeln!(out, "transaction id: {:016x}", h.tid.0)?;
        writeln!(out, "trec len: {}", h.tlen)?;
        writeln!(out, "status: {}", bytes_repr(&[h.status.byte()]))?;
        let mut at = pos + TXN_HDR_LEN;
        // Dumper starts user and description as '' (a str) and reads bytes only when the
        // length is non-zero, hence `''` or `b'...'`.
        for (what, len) in [("user", h.ulen), ("description", h.dlen)] {
            let text = if len > 0 {
                bytes_repr(r.read(at, usize::from(len))?)
            } else {
                "''".to_owned()
            };
            writeln!(out, "{what}: {text}")?;
            at += u64::from(len);
        }
        at += u64::from(h.elen);
        writeln!(out, "len(extra): {}", h.elen)?;
        while u128::from(at) < end {
            let dpos = at;
            let Some(b) = r
                .read(dpos, DATA_HDR_LEN as usize)?
                .get(..)
                .and_then(|b| <&[u8; 42]>::try_from(b).ok())
            else {
                bail!("{label}: data record at {dpos} is cut off by the end of the file");
            };
            let d = format::DataHeader::decode(b);
            writeln!(out, "{}", rule('-'))?;
            writeln!(out, "offset: {dpos}")?;
            writeln!(out, "oid: {:016x}", d.oid.0)?;
            writeln!(out, "revid: {:016x}", d.tid.0)?;
            writeln!(out, "previous record offset: {}", d.prev)?;
            writeln!(out, "transaction offset: {}", d.tloc)?;
            if d.vlen != 0 {
                bail!(
                    "{label}: data record at {dpos} has a non-zero version length ({})",
                    d.vlen
                );
            }
            writeln!(out, "len(data): {}", d.plen)?;
            at = dpos
                .saturating_add(DATA_HDR_LEN)
                .saturating_add(d.plen)
                .min(size);
            if d.plen == 0 {
                let b = r.read(at, 8)?;
                let Ok(b) = <[u8; 8]>::try_from(b) else {
                    bail!(
                        "{label}: backpointer of the data record at {dpos} is cut off by the end of the file"
                    );
                };
                writeln!(out, "backpointer: {}", u64::from_be_bytes(b))?;
                at += 8;
            }
        }
        let Ok(b) = <[u8; 8]>::try_from(r.read(at, 8)?) else {
            bail!(
                "{label}: redundant length of the transaction at {pos} is cut off by the end of the file"
            );
        };
        writeln!(out, "redundant trec len: {}", u64::from_be_bytes(b))?;
        pos = at + 8;
    }
}

/// The data records of one transaction, as `TransactionRecordIterator` yields them.
fn dump_records(
    r: &mut PosReader<'_>,
    label: &str,
    tpos: u64,
    mut pos: u64,
    tend: u64,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> Result<()> {
    let mut j = 0u64;
    while pos < tend {
        let h = read_data_header(r, label, pos)?;
        let reclen = u128::from(DATA_HDR_LEN) + u128::from(if h.plen == 0 { 8 } else { h.plen });
        if u128::from(pos) + reclen > u128::from(tend) || h.tloc != tpos {
            warn(format!(
                "{label} data record exceeds transaction record at {pos}"
            ));
            break;
        }
        let (data, data_txn) = if h.plen > 0 {
            (
                Some(r.read(pos + DATA_HDR_LEN, h.plen as usize)?.to_vec()),
                None,
            )
        } else if h.back == 0 {
            (None, None)
        } else {
            let data = load_back(r, label, pos, h.back)?;
            let at_back = read_data_header(r, label, h.back)?;
            if at_back.oid != h.oid {
                bail!(
                    "{label}: backpointer of the data record at {pos} points at a record of oid 0x{:016x}, not 0x{:016x}",
                    at_back.oid,
                    h.oid
                );
            }
            (data, Some(at_back.tid))
        };
        let (size, class) = match &data {
            None => (String::new(), "undo or abort of object creation".to_owned()),
            Some(d) => {
                let (module, name) = pickle_class(d);
                (format!(" size={}", d.len()), format!("{module}.{name}"))
            }
        };
        let bp = data_txn
            .map(|t| format!(" bp={t:016x}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  data #{j:05} oid={:016x}{size} class={class}{bp}",
            h.oid
        )?;
        pos += reclen as u64; // within the transaction, checked above
        j += 1;
    }
    Ok(())
}

/// Follow a backpointer chain to the data (`_loadBackTxn(..., fail=False)`); `None` when
/// the chain ends in a deletion record.
fn load_back(
    r: &mut PosReader<'_>,
    label: &str,
    from: u64,
    mut back: u64,
) -> Result<Option<Vec<u8>>> {
    let mut here = from;
    loop {
        if back >= here {
            bail!(
                "{label}: backpointer chain from the data record at {from} does not lead backwards (at {here}: {back})"
            );
        }
        let h = read_data_header(r, label, back)?;
        if h.plen > i64::MAX as u64 {
            // Python cannot even ask for that many bytes (fsdump dies here); a smaller
            // overrun yields whatever the file still holds, as with Python's read().
            bail!(
                "{label}: data record at {back} claims {} bytes of data",
                h.plen
            );
        }
        if h.plen > 0 {
            return Ok(Some(r.read(back + DATA_HDR_LEN, h.plen as usize)?.to_vec()));
        }
        if h.back == 0 {
            return Ok(None);
        }
        here = back;
        back = h.back;
    }
}

/// `ZODB.utils.get_pickle_metadata`; empty names when the class pickle cannot be read, as
/// Python gives when its unpickling fails.
fn pickle_class(data: &[u8]) -> (String, String) {
    crate::pickle::record_class(data).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_display_like_persistent() {
        let tid_display = |t: u64| TimeStamp::from_tid(Tid(t)).to_string();
        assert_eq!(tid_display(0), "1900-01-01 00:00:00.000000");
        assert_eq!(
            tid_display(0x03f58e0033333333),
            "2024-01-01 00:00:12.000000"
        );
        assert_eq!(
            tid_display(0x03f6df7fffffffb8),
            "2024-02-29 23:59:59.999999"
        );
        assert_eq!(
            tid_display(0x03fdba7f02222222),
            "2024-12-31 23:59:00.500000"
        );
        // Ties and the top of the range, as checked against Python.
        assert_eq!(
            tid_display(0x03f58e0000800000),
            "2024-01-01 00:00:00.117188"
        );
        assert_eq!(
            tid_display(0x03f58e0001800000),
            "2024-01-01 00:00:00.351562"
        );
        assert_eq!(
            tid_display(0x03f58e00ffffffff),
            "2024-01-01 00:00:60.000000"
        );
    }

    #[test]
    fn class_names_from_record_pickles() {
        let p = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01.";
        assert_eq!(
            pickle_class(p),
            ("persistent.mapping".into(), "PersistentMapping".into())
        );
        let with_args = b"\x80\x03(cBTrees.OOBTree\nOOBTree\nq\x00N\x86q\x01.";
        assert_eq!(
            pickle_class(with_args),
            ("BTrees.OOBTree".into(), "OOBTree".into())
        );
        let p4 =
            b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x03foo\x94\x8c\x03Bar\x94\x93\x94.";
        assert_eq!(pickle_class(p4), ("foo".into(), "Bar".into()));
        assert_eq!(
            pickle_class(b"\x80\x03K\x01."),
            (String::new(), String::new())
        );
        assert_eq!(pickle_class(b""), (String::new(), String::new()));
    }
}
