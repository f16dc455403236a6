//! `Data.fs.index`: Python's saved index (spec §4.1), read and written byte-compatibly.
//!
//! The file is a concatenation of pickles written by `fsIndex.save(pos, name)` (protocol 3,
//! "fast" mode, so no memo):
//!
//! 1. the int `pos`: the end of the last committed transaction covered;
//! 2. per 6-byte oid prefix, ascending, the tuple `(prefix, bucket)` where `bucket` is
//!    `8·n` bytes: the n 2-byte oid suffixes (ascending), then the n 6-byte big-endian
//!    positions (`fsBucket.toString()`);
//! 3. `None`.
//!
//! Opcodes: `80 03` PROTO, the int as `K`/`M`/`J`/`8a` LONG1, `C`/`B` (SHORT_)BINBYTES,
//! `86` TUPLE2, `4e` NONE, `2e` STOP. Reading also accepts what Python 2 ZODB wrote
//! (protocol 1: no PROTO, `U`/`T` strings, `(`…`t` tuples, text ints) and ignores memo puts.
//! The legacy single-dict format is not parsed: such a file is ignored and the storage is
//! rescanned (a full scan is always correct, §4.1.4), then a new-format index is written.
//!
//! The pickles are produced and parsed here directly: the shapes are fixed and tiny, and
//! a strict parser turns anything unexpected into "ignore the index", never into a
//! wrong index.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::index::{OidIndex, SortedBuilder};
use super::types::Oid;

/// `Data.fs` → `Data.fs.index`.
pub fn index_path(data_fs: &Path) -> PathBuf {
    suffixed(data_fs, ".index")
}

pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Write `index` and `pos` in Python's format to `<index>.index_tmp`, then rename it over
/// `index_path` (what `fsIndex.save` does, plus an fsync so a crash leaves either the old
/// or the new file).
pub fn write_index_file(index_path: &Path, pos: u64, index: &OidIndex) -> io::Result<()> {
    let tmp = suffixed(index_path, ".index_tmp");
    let file = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_index(&mut w, pos, index)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, index_path)
}

/// The index pickles, as bytes (see the module docs).
pub fn write_index(w: &mut impl Write, pos: u64, index: &OidIndex) -> io::Result<()> {
    w.write_all(b"\x80\x03")?;
    write_int(w, pos)?;
    w.write_all(b".")?;
    let mut prefix: Option<u64> = None;
    let mut suffixes: Vec<u8> = Vec::new();
    let mut positions: Vec<u8> = Vec::new();
    for (oid, p) in index.iter() {
        let pre = oid.0 >> 16;
        if prefix != Some(pre) {
            if let Some(done) = prefix {
                write_group(w, done, &suffixes, &positions)?;
            }
            prefix = Some(pre);
            suffixes.clear();
            positions.clear();
        }
        suffixes.extend_from_slice(&(oid.0 as u16).to_be_bytes());
        positions.extend_from_slice(&p.to_be_bytes()[2..]);
    }
    if let Some(done) = prefix {
        write_group(w, done, &suffixes, &positions)?;
    }
    w.write_all(b"\x80\x03N.")
}

fn write_group(
    w: &mut impl Write,
    prefix: u64,
    suffixes: &[u8],
    positions: &[u8],
) -> io::Result<()> {
    w.write_all(b"\x80\x03")?;
    write_bytes(w, &[&prefix.to_be_bytes()[2..]])?;
    write_bytes(w, &[suffixes, positions])?;
    w.write_all(b"\x86.")
}

fn write_bytes(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < 256 {
        w.write_all(&[b'C', len as u8])?;
    } else {
        w.write_all(b"B")?;
        w.write_all(&(len as u32).to_le_bytes())?;
    }
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

/// A non-negative int as CPython's pickler writes it.
fn write_int(w: &mut impl Write, n: u64) -> io::Result<()> {
    if n < 256 {
        w.write_all(&[b'K', n as u8])
    } else if n < 65536 {
        w.write_all(&[b'M', n as u8, (n >> 8) as u8])
    } else if n < (1 << 31) {
        w.write_all(b"J")?;
        w.write_all(&(n as u32).to_le_bytes())
    } else {
        // LONG1: minimal little-endian two's complement (a sign byte when the top bit is set).
        let nbytes = (64 - n.leading_zeros()) as usize / 8 + 1;
        let le = n.to_le_bytes();
        w.write_all(&[0x8a, nbytes as u8])?;
        w.write_all(&le[..nbytes.min(8)])?;
        if nbytes > 8 {
            w.write_all(&[0])?;
        }
        Ok(())
    }
}

/// Why an index file was not used (logged; the storage is then scanned).
#[derive(Debug)]
pub enum ReadIndexError {
    Missing,
    Io(io::Error),
    Invalid(String),
}

impl std::fmt::Display for ReadIndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadIndexError::Missing => write!(f, "no index file"),
            ReadIndexError::Io(e) => write!(f, "{e}"),
            ReadIndexError::Invalid(m) => write!(f, "not a usable index file: {m}"),
        }
    }
}

/// Read an index file: `(pos, index)`.
pub fn read_index_file(index_path: &Path) -> Result<(u64, OidIndex), ReadIndexError> {
    let file = match File::open(index_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadIndexError::Missing),
        Err(e) => return Err(ReadIndexError::Io(e)),
    };
    read_index(&mut BufReader::with_capacity(1 << 20, file))
}

/// Parse the index pickles from a reader.
pub fn read_index(r: &mut impl Read) -> Result<(u64, OidIndex), ReadIndexError> {
    let mut p = Parser { r, buf: Vec::new() };
    let pos = match p.pickle()? {
        Value::Int(n) => n,
        other => {
            return Err(invalid(format!(
                "first pickle is {other:?}, not the position"
            )));
        }
    };
    let mut index = SortedBuilder::new();
    let mut last_prefix: Option<u64> = None;
    loop {
        match p.pickle()? {
            Value::None => break,
            Value::Pair(prefix, bucket) => {
                if prefix.len() != 6 {
                    return Err(invalid(format!("oid prefix of {} bytes", prefix.len())));
                }
                if bucket.len() % 8 != 0 {
                    return Err(invalid(format!("bucket of {} bytes", bucket.len())));
                }
                let pre = prefix.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
                if last_prefix.is_some_and(|l| l >= pre) {
                    return Err(invalid("oid prefixes out of order".into()));
                }
                last_prefix = Some(pre);
                let n = bucket.len() / 8;
                let (suffixes, positions) = bucket.split_at(2 * n);
                let mut last_suffix: Option<u16> = None;
                for i in 0..n {
                    let suffix = u16::from_be_bytes([suffixes[2 * i], suffixes[2 * i + 1]]);
                    if last_suffix.is_some_and(|l| l >= suffix) {
                        return Err(invalid("oid suffixes out of order".into()));
                    }
                    last_suffix = Some(suffix);
                    let pos = positions[6 * i..6 * i + 6]
                        .iter()
                        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
                    let oid = Oid((pre << 16) | u64::from(suffix));
                    index
                        .push(oid, pos)
                        .map_err(|_| invalid("position too large".into()))?;
                }
            }
            other => return Err(invalid(format!("unexpected pickle {other:?}"))),
        }
    }
    Ok((pos, index.finish()))
}

fn invalid(msg: String) -> ReadIndexError {
    ReadIndexError::Invalid(msg)
}

#[derive(Debug)]
enum Value {
    Int(u64),
    Bytes(Vec<u8>),
    None,
    Mark,
    Pair(Vec<u8>, Vec<u8>),
}

struct Parser<'a, R: Read> {
    r: &'a mut R,
    buf: Vec<u8>,
}

impl<R: Read> Parser<'_, R> {
    fn byte(&mut self) -> Result<u8, ReadIndexError> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b).map_err(eof)?;
        Ok(b[0])
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, ReadIndexError> {
        if n > 1 << 30 {
            return Err(invalid(format!("implausible length {n}")));
        }
        let mut v = vec![0u8; n];
        self.r.read_exact(&mut v).map_err(eof)?;
        Ok(v)
    }

    fn u32le(&mut self) -> Result<usize, ReadIndexError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn line(&mut self) -> Result<String, ReadIndexError> {
        self.buf.clear();
        loop {
            let b = self.byte()?;
            if b == b'\n' {
                break;
            }
            if self.buf.len() > 40 {
                return Err(invalid("text int too long".into()));
            }
            self.buf.push(b);
        }
        String::from_utf8(self.buf.clone()).map_err(|_| invalid("text int not ASCII".into()))
    }

    /// One pickle, up to and including STOP.
    fn pickle(&mut self) -> Result<Value, ReadIndexError> {
        let mut stack: Vec<Value> = Vec::new();
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return Err(invalid(format!("pickle protocol {proto}")));
                    }
                }
                b'K' => stack.push(Value::Int(u64::from(self.byte()?))),
                b'M' => {
                    let b = self.bytes(2)?;
                    stack.push(Value::Int(u64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                b'J' => {
                    let b = self.bytes(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let v = u64::try_from(v).map_err(|_| invalid("negative int".into()))?;
                    stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.byte()?)
                    } else {
                        self.u32le()?
                    };
                    let b = self.bytes(n)?;
                    stack.push(Value::Int(le_long(&b)?));
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let text = text.trim_end_matches('L');
                    let v = text
                        .parse::<u64>()
                        .map_err(|_| invalid(format!("int {text:?}")))?;
                    stack.push(Value::Int(v));
                }
                b'C' | b'U' => {
                    let n = usize::from(self.byte()?);
                    stack.push(Value::Bytes(self.bytes(n)?));
                }
                b'B' | b'T' => {
                    let n = self.u32le()?;
                    stack.push(Value::Bytes(self.bytes(n)?));
                }
                0x8e => {
                    let b = self.bytes(8)?;
                    let n = u64::from_le_bytes(b.try_into().map_err(|_| invalid("len".into()))?);
                    let n = usize::try_from(n).map_err(|_| invalid("length".into()))?;
                    stack.push(Value::Bytes(self.bytes(n)?));
                }
                b'N' => stack.push(Value::None),
                b'(' => stack.push(Value::Mark),
                0x86 | b't' => {
                    if op == b't' {
                        // MARK a b TUPLE
                        let b = stack.pop();
                        let a = stack.pop();
                        let mark = stack.pop();
                        match (mark, a, b) {
                            (Some(Value::Mark), Some(Value::Bytes(a)), Some(Value::Bytes(b))) => {
                                stack.push(Value::Pair(a, b))
                            }
                            _ => return Err(invalid("unexpected tuple".into())),
                        }
                    } else {
                        let b = stack.pop();
                        let a = stack.pop();
                        match (a, b) {
                            (Some(Value::Bytes(a)), Some(Value::Bytes(b))) => {
                                stack.push(Value::Pair(a, b))
                            }
                            _ => return Err(invalid("unexpected tuple".into())),
                        }
                    }
                }
                // Memo puts are harmless: nothing in these pickles is fetched back.
                b'q' => {
                    self.byte()?;
                }
                b'r' => {
                    self.bytes(4)?;
                }
                0x94 => {}
                b'p' => {
                    self.line()?;
                }
                b'.' => {
                    return match (stack.pop(), stack.is_empty()) {
                        (Some(v), true) => Ok(v),
                        _ => Err(invalid("malformed pickle".into())),
                    };
                }
                other => return Err(invalid(format!("unexpected opcode 0x{other:02x}"))),
            }
            if stack.len() > 4 {
                return Err(invalid("unexpected pickle structure".into()));
            }
        }
    }
}

fn le_long(b: &[u8]) -> Result<u64, ReadIndexError> {
    if b.is_empty() {
        return Ok(0);
    }
    if b[b.len() - 1] & 0x80 != 0 {
        return Err(invalid("negative int".into()));
    }
    let significant = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    if significant > 8 {
        return Err(invalid("int too large".into()));
    }
    Ok(b[..significant]
        .iter()
        .rev()
        .fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

fn eof(e: io::Error) -> ReadIndexError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        invalid("truncated".into())
    } else {
        ReadIndexError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn tiny_index_is_byte_identical_to_python() {
        let want = unhex(
            "80 03 4d be 01 2e 80 03 43 06 000000000000 43 10 0000 0001 \
             0000000000c7 00000000014c 86 2e 80 03 4e 2e",
        );
        let mut ix = OidIndex::new();
        ix.insert(Oid(0), 199).unwrap();
        ix.insert(Oid(1), 332).unwrap();
        let mut out = Vec::new();
        write_index(&mut out, 446, &ix).unwrap();
        assert_eq!(out, want);
        let (pos, back) = read_index(&mut &want[..]).unwrap();
        assert_eq!(pos, 446);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![(Oid(0), 199), (Oid(1), 332)]
        );
    }

    #[test]
    fn int_encodings_match_cpython() {
        let enc = |n: u64| {
            let mut v = Vec::new();
            write_int(&mut v, n).unwrap();
            v
        };
        assert_eq!(enc(255), vec![b'K', 255]);
        assert_eq!(enc(446), vec![b'M', 0xbe, 0x01]);
        assert_eq!(enc(70000), vec![b'J', 0x70, 0x11, 0x01, 0]);
        // pickle.dumps(2**31, 3)[2:-1] == b'\x8a\x05\x00\x00\x00\x80\x00'
        assert_eq!(enc(1 << 31), vec![0x8a, 5, 0, 0, 0, 0x80, 0]);
        // pickle.dumps(2**32, 3)[2:-1] == b'\x8a\x05\x00\x00\x00\x00\x01'
        assert_eq!(enc(1 << 32), vec![0x8a, 5, 0, 0, 0, 0, 1]);
        assert_eq!(enc(u64::MAX)[..2], [0x8a, 9]);
    }

    #[test]
    fn python2_protocol1_shapes_are_read() {
        // pos as text long, (U prefix, U bucket) tuple via MARK, memo puts, None.
        let mut data = b"L1000L\n.".to_vec();
        data.extend_from_slice(
            b"(U\x06\x00\x00\x00\x00\x00\x00q\x01U\x08\x00\x07\x00\x00\x00\x00\x01\x00q\x02t.",
        );
        data.extend_from_slice(b"N.");
        let (pos, ix) = read_index(&mut &data[..]).unwrap();
        assert_eq!(pos, 1000);
        assert_eq!(ix.get(Oid(7)), Some(256));
    }

    #[test]
    fn garbage_and_legacy_are_refused() {
        assert!(read_index(&mut &b"garbage"[..]).is_err());
        // The legacy dict format: {'index': ..., 'pos': ...}
        assert!(
            read_index(&mut &b"\x80\x03}q\x00(X\x03\x00\x00\x00posq\x01M\xbe\x01u."[..]).is_err()
        );
        // Truncated after the position.
        assert!(read_index(&mut &b"\x80\x03M\xbe\x01."[..]).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(entries in proptest::collection::btree_map(any::<u64>(), 0u64..(1 << 48), 0..300),
                       pos in any::<u64>()) {
            let mut ix = OidIndex::new();
            for (&o, &p) in &entries {
                ix.insert(Oid(o), p).unwrap();
            }
            let mut out = Vec::new();
            write_index(&mut out, pos, &ix).unwrap();
            let (p2, back) = read_index(&mut &out[..]).unwrap();
            prop_assert_eq!(p2, pos);
            prop_assert_eq!(back.iter().collect::<Vec<_>>(), ix.iter().collect::<Vec<_>>());
        }
    }
}
