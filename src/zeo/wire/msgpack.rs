//! `M5`: messages as msgpack (zeo-protocol.md §2.2), byte-identical to
//! `msgpack.packb(message, use_bin_type=True)` and read like
//! `msgpack.unpackb(payload, raw=False, use_list=False)`.
//!
//! Parsing goes through `rmpv` (bounded depth, no preallocation from announced lengths);
//! writing is done here, because every format choice must be the one Python's packer makes
//! and the values are written straight from [`Value`] without an intermediate copy.

use super::message::{Body, Flag, Outgoing};
use super::{Value, WireError};

/// rmpv counts about two levels per container; ZEO messages nest a handful of levels.
const MAX_DECODE_DEPTH: usize = 128;
const MAX_DEPTH: usize = 200;

pub(super) fn write_message(buf: &mut Vec<u8>, m: &Outgoing) -> Result<(), WireError> {
    write_array_len(buf, 4);
    write_value(buf, m.msgid, 0)?;
    match m.flag {
        Flag::Int(i) => write_int(buf, i),
        Flag::Bool(b) => buf.push(if b { 0xc3 } else { 0xc2 }),
    }
    write_str(buf, m.name);
    match m.body {
        Body::Value(v) => write_value(buf, v, 0)?,
        Body::Args(args) => {
            write_array_len(buf, args.len());
            for a in args {
                write_value(buf, a, 1)?;
            }
        }
        Body::Error(class, state) => {
            write_array_len(buf, 2);
            write_str(buf, class);
            write_value(buf, state, 1)?;
        }
    }
    Ok(())
}

fn write_value(buf: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Unencodable("a value nested too deeply".into()));
    }
    match v {
        Value::Nil => buf.push(0xc0),
        Value::Bool(b) => buf.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(buf, *i),
        Value::Float(f) => {
            buf.push(0xcb);
            buf.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            let n = b.len();
            if n < 0x100 {
                buf.extend_from_slice(&[0xc4, n as u8]);
            } else if n < 0x10000 {
                buf.push(0xc5);
                buf.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                buf.push(0xc6);
                buf.extend_from_slice(&len32(n)?.to_be_bytes());
            }
            buf.extend_from_slice(b);
        }
        Value::Str(s) => write_str(buf, s),
        Value::List(items) | Value::Tuple(items) => {
            write_array_len(buf, items.len());
            for x in items {
                write_value(buf, x, depth + 1)?;
            }
        }
        Value::Map(pairs) => {
            let n = pairs.len();
            if n < 16 {
                buf.push(0x80 | n as u8);
            } else if n < 0x10000 {
                buf.push(0xde);
                buf.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                buf.push(0xdf);
                buf.extend_from_slice(&len32(n)?.to_be_bytes());
            }
            for (k, v) in pairs {
                // msgpack ≥ 1.0 clients refuse other keys (strict_map_key) and with them the
                // whole message, which would leave the call waiting forever.
                if !matches!(k, Value::Str(_) | Value::Bytes(_)) {
                    return Err(WireError::Unencodable(format!(
                        "a map key that is not text or bytes ({k:?})"
                    )));
                }
                write_value(buf, k, depth + 1)?;
                write_value(buf, v, depth + 1)?;
            }
        }
        Value::Global { module, name, .. } => {
            return Err(WireError::Unencodable(format!(
                "the global {module}.{name}"
            )));
        }
    }
    Ok(())
}

fn len32(n: usize) -> Result<u32, WireError> {
    u32::try_from(n).map_err(|_| WireError::Unencodable("a value of 4 GiB or more".into()))
}

fn write_int(buf: &mut Vec<u8>, i: i64) {
    match i {
        0..=0x7f => buf.push(i as u8),
        -32..=-1 => buf.push(i as i8 as u8),
        0x80..=0xff => buf.extend_from_slice(&[0xcc, i as u8]),
        0x100..=0xffff => {
            buf.push(0xcd);
            buf.extend_from_slice(&(i as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            buf.push(0xce);
            buf.extend_from_slice(&(i as u32).to_be_bytes());
        }
        0x1_0000_0000.. => {
            buf.push(0xcf);
            buf.extend_from_slice(&(i as u64).to_be_bytes());
        }
        -0x80..=-33 => buf.extend_from_slice(&[0xd0, i as i8 as u8]),
        -0x8000..=-0x81 => {
            buf.push(0xd1);
            buf.extend_from_slice(&(i as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            buf.push(0xd2);
            buf.extend_from_slice(&(i as i32).to_be_bytes());
        }
        _ => {
            buf.push(0xd3);
            buf.extend_from_slice(&i.to_be_bytes());
        }
    }
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        buf.push(0xa0 | n as u8);
    } else if n < 0x100 {
        buf.extend_from_slice(&[0xd9, n as u8]);
    } else if n < 0x10000 {
        buf.push(0xda);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xdb);
        // Text values are short (names, messages); clamp rather than wrap if one is not.
        buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }
    buf.extend_from_slice(s.as_bytes());
}

fn write_array_len(buf: &mut Vec<u8>, n: usize) {
    if n < 16 {
        buf.push(0x90 | n as u8);
    } else if n < 0x10000 {
        buf.push(0xdc);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xdd);
        buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }
}

pub(super) fn decode(payload: &[u8]) -> Result<Value, WireError> {
    let mut rd = payload;
    let v = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DECODE_DEPTH)
        .map_err(|e| WireError::Msgpack(e.to_string()))?;
    if !rd.is_empty() {
        // msgpack.unpackb raises ExtraData.
        return Err(WireError::Msgpack(format!(
            "{} bytes after the message",
            rd.len()
        )));
    }
    convert(v)
}

fn convert(v: rmpv::Value) -> Result<Value, WireError> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Nil,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => Value::Int(
            i.as_i64()
                .ok_or_else(|| WireError::Msgpack(format!("integer {i} beyond 64-bit signed")))?,
        ),
        M::F32(f) => Value::Float(f.into()),
        M::F64(f) => Value::Float(f),
        M::String(s) => Value::Str(
            s.into_str()
                .ok_or_else(|| WireError::Msgpack("text that is not UTF-8".into()))?,
        ),
        M::Binary(b) => Value::Bytes(b),
        // use_list=False: every array is a tuple.
        M::Array(items) => Value::Tuple(items.into_iter().map(convert).collect::<Result<_, _>>()?),
        M::Map(pairs) => Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    if !matches!(k, M::String(_) | M::Binary(_)) {
                        // strict_map_key: Python refuses the whole message.
                        return Err(WireError::Msgpack(
                            "a map key that is not text or bytes".into(),
                        ));
                    }
                    Ok((convert(k)?, convert(v)?))
                })
                .collect::<Result<_, _>>()?,
        ),
        M::Ext(..) => return Err(WireError::Msgpack("an extension type".into())),
    })
}
