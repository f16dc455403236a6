//! Protocol-3 pickling in CPython's "fast" mode (no memo), byte for byte.
//!
//! The choices mirror `_pickle.c` (which `zodbpickle.pickle.Pickler` is): the smallest of
//! `BININT1`/`BININT2`/`BININT` for ints in the i32 range and `LONG1` (minimal two's
//! complement) beyond; `SHORT_BINBYTES` below 256 bytes; `TUPLE1..3` for short tuples; lists
//! and dicts as `EMPTY_*` followed by a lone `APPEND`/`SETITEM` for one item, or batches of
//! at most 1000 items between `MARK` and `APPENDS`/`SETITEMS`.

use super::Value;

pub const MARK: u8 = b'(';
pub const STOP: u8 = b'.';
pub const NONE: u8 = b'N';
pub const NEWTRUE: u8 = 0x88;
pub const NEWFALSE: u8 = 0x89;
pub const EMPTY_TUPLE: u8 = b')';
pub const TUPLE: u8 = b't';
pub const TUPLE1: u8 = 0x85;
pub const TUPLE2: u8 = 0x86;
pub const TUPLE3: u8 = 0x87;
pub const EMPTY_LIST: u8 = b']';
pub const APPEND: u8 = b'a';
pub const APPENDS: u8 = b'e';
pub const EMPTY_DICT: u8 = b'}';
pub const SETITEM: u8 = b's';
pub const SETITEMS: u8 = b'u';
/// `PROTO 3`, the first two bytes of every pickle written here.
pub const PROTO_3: [u8; 2] = [0x80, 3];

const BATCHSIZE: usize = 1000;
const MAX_DEPTH: usize = 400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot pickle {0} with the plain-data encoder")]
    Unsupported(&'static str),
    #[error("value nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Pickle a plain-data value: `PROTO 3`, the value, `STOP`.
pub fn dumps(v: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&PROTO_3);
    write_value(&mut buf, v)?;
    buf.push(STOP);
    Ok(buf)
}

/// Append the opcodes of a plain-data value (no `PROTO`, no `STOP`).
///
/// Supported: `None`, `Bool`, `Int`, `BigInt`, `Float`, `Bytes`, `Str`, `Tuple`, `List`,
/// `Dict`; anything else is [`EncodeError::Unsupported`].
pub fn write_value(buf: &mut Vec<u8>, v: &Value) -> Result<(), EncodeError> {
    write_at(buf, v, 0)
}

fn write_at(buf: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    let d = depth + 1;
    match v {
        Value::None => buf.push(NONE),
        Value::Bool(b) => buf.push(if *b { NEWTRUE } else { NEWFALSE }),
        Value::Int(i) => write_int(buf, *i),
        Value::BigInt(b) => write_bigint(buf, b),
        Value::Float(f) => write_float(buf, *f),
        Value::Bytes(b) => write_bytes(buf, b),
        Value::Str(s) => write_str(buf, s),
        Value::Tuple(items) => {
            if items.is_empty() {
                buf.push(EMPTY_TUPLE);
            } else if items.len() <= 3 {
                for x in items {
                    write_at(buf, x, d)?;
                }
                buf.push(TUPLE1 + (items.len() as u8 - 1));
            } else {
                buf.push(MARK);
                for x in items {
                    write_at(buf, x, d)?;
                }
                buf.push(TUPLE);
            }
        }
        Value::List(items) => {
            buf.push(EMPTY_LIST);
            write_batched(buf, items, APPEND, APPENDS, |buf, x| write_at(buf, x, d))?;
        }
        Value::Dict(pairs) => {
            buf.push(EMPTY_DICT);
            write_batched(buf, pairs, SETITEM, SETITEMS, |buf, (k, v)| {
                write_at(buf, k, d)?;
                write_at(buf, v, d)
            })?;
        }
        Value::String8(_) => return Err(EncodeError::Unsupported("a Python 2 string")),
        Value::ByteArray(_) => return Err(EncodeError::Unsupported("a bytearray")),
        Value::Set(_) | Value::FrozenSet(_) => return Err(EncodeError::Unsupported("a set")),
        Value::Global { .. } => return Err(EncodeError::Unsupported("a global")),
        Value::PersistentId(_) => return Err(EncodeError::Unsupported("a persistent id")),
        Value::Recursive => return Err(EncodeError::Unsupported("a recursive reference")),
        _ => return Err(EncodeError::Unsupported("an object construction")),
    }
    Ok(())
}

/// The container body of `_pickle.c`'s `batch_list_exact`/`batch_dict_exact`.
pub(crate) fn write_batched<T, E>(
    buf: &mut Vec<u8>,
    items: &[T],
    one_op: u8,
    many_op: u8,
    mut item: impl FnMut(&mut Vec<u8>, &T) -> Result<(), E>,
) -> Result<(), E> {
    match items.len() {
        0 => {}
        1 => {
            item(buf, &items[0])?;
            buf.push(one_op);
        }
        _ => {
            for batch in items.chunks(BATCHSIZE) {
                buf.push(MARK);
                for x in batch {
                    item(buf, x)?;
                }
                buf.push(many_op);
            }
        }
    }
    Ok(())
}

/// An int: `BININT1`, `BININT2`, `BININT` or `LONG1`, whichever Python picks.
pub fn write_int(buf: &mut Vec<u8>, i: i64) {
    if (0..=0xff).contains(&i) {
        buf.extend_from_slice(&[b'K', i as u8]);
    } else if (0..=0xffff).contains(&i) {
        buf.push(b'M');
        buf.extend_from_slice(&(i as u16).to_le_bytes());
    } else if let Ok(v) = i32::try_from(i) {
        buf.push(b'J');
        buf.extend_from_slice(&v.to_le_bytes());
    } else {
        // Written in place: transaction ids (about 2^47) take this branch on every message.
        let n = long_len(i);
        buf.extend_from_slice(&[0x8a, n as u8]);
        buf.extend_from_slice(&i.to_le_bytes()[..n]);
    }
}

/// The length of `i` as minimal little-endian two's complement (what `LONG1` carries).
pub fn long_len(i: i64) -> usize {
    let b = i.to_le_bytes();
    let mut n = 8;
    while n > 1 {
        let (last, prev) = (b[n - 1], b[n - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    n
}

/// An int given as minimal little-endian two's complement: `LONG1`, or `LONG4` from 256 bytes.
pub fn write_bigint(buf: &mut Vec<u8>, le: &[u8]) {
    if le.len() < 256 {
        buf.extend_from_slice(&[0x8a, le.len() as u8]);
    } else {
        buf.push(0x8b);
        buf.extend_from_slice(&(le.len() as u32).to_le_bytes());
    }
    buf.extend_from_slice(le);
}

/// `BINFLOAT`: big-endian IEEE 754 double.
pub fn write_float(buf: &mut Vec<u8>, f: f64) {
    buf.push(b'G');
    buf.extend_from_slice(&f.to_be_bytes());
}

/// `SHORT_BINBYTES` or `BINBYTES` (or `BINBYTES8` past 4 GiB, which protocol 3 cannot express;
/// frames are far smaller than that).
pub fn write_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 256 {
        buf.extend_from_slice(&[b'C', b.len() as u8]);
    } else if let Ok(n) = u32::try_from(b.len()) {
        buf.push(b'B');
        buf.extend_from_slice(&n.to_le_bytes());
    } else {
        buf.push(0x8e);
        buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    buf.extend_from_slice(b);
}

/// `BINUNICODE`: UTF-8 with a 4-byte length.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'X');
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_pick_the_smallest_opcode() {
        let enc = |i| dumps(&Value::Int(i)).unwrap();
        assert_eq!(enc(5), b"\x80\x03K\x05.");
        assert_eq!(enc(446), b"\x80\x03M\xbe\x01.");
        assert_eq!(enc(65536), b"\x80\x03J\x00\x00\x01\x00.");
        assert_eq!(enc(-1), b"\x80\x03J\xff\xff\xff\xff.");
        assert_eq!(enc(1 << 31), b"\x80\x03\x8a\x05\x00\x00\x00\x80\x00.");
        assert_eq!(
            enc(-(1 << 31) - 1),
            b"\x80\x03\x8a\x05\xff\xff\xff\x7f\xff."
        );
    }

    #[test]
    fn containers() {
        let v = Value::Tuple(vec![Value::Tuple(vec![])]);
        assert_eq!(dumps(&v).unwrap(), b"\x80\x03)\x85.");
        let v = Value::List(vec![Value::Int(1)]);
        assert_eq!(dumps(&v).unwrap(), b"\x80\x03]K\x01a.");
        let v = Value::Dict(vec![(Value::Str("a".into()), Value::Int(1))]);
        assert_eq!(dumps(&v).unwrap(), b"\x80\x03}X\x01\x00\x00\x00aK\x01s.");
        let v = Value::List(vec![Value::Int(0); 1001]);
        let p = dumps(&v).unwrap();
        assert_eq!(&p[p.len() - 5..], b"(K\x00e.");
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        let g = Value::Global {
            module: "os".into(),
            name: "system".into(),
        };
        assert!(dumps(&g).is_err());
    }
}
