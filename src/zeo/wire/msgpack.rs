//! `M5`: messages as msgpack (zeo-protocol.md §2.2), byte-identical to
//! `msgpack.packb(message, use_bin_type=True)` and read like
//! `msgpack.unpackb(payload, raw=False, use_list=False)`.
//!
//! Both directions are done here, straight between the bytes and [`Value`] (no intermediate
//! tree): writing, because every format choice must be the one Python's packer makes;
//! reading, because it is the server's per-request path. The reader keeps the nesting
//! budget of the `rmpv` reader it replaced (still used by the tests as the reference), and
//! never allocates from an announced length before the bytes are there.

use super::message::{Body, Flag, Name, Outgoing, Parts};
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

/// The exact length [`write_message`] writes (for a message it can write).
pub(super) fn message_size(m: &Outgoing) -> usize {
    let flag = match m.flag {
        Flag::Int(i) => int_size(i),
        Flag::Bool(_) => 1,
    };
    let body = match m.body {
        Body::Value(v) => value_size(v, 0),
        Body::Args(args) => {
            array_len_size(args.len()) + args.iter().map(|a| value_size(a, 1)).sum::<usize>()
        }
        Body::Error(class, state) => 1 + str_size(class) + value_size(state, 1),
    };
    1 + value_size(m.msgid, 0) + flag + str_size(m.name) + body
}

fn value_size(v: &Value, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        // Refused by write_value.
        return 0;
    }
    match v {
        Value::Nil | Value::Bool(_) | Value::Global { .. } => 1,
        Value::Int(i) => int_size(*i),
        Value::Float(_) => 9,
        Value::Bytes(b) => {
            let n = b.len();
            n + if n < 0x100 {
                2
            } else if n < 0x10000 {
                3
            } else {
                5
            }
        }
        Value::Str(s) => str_size(s),
        Value::List(items) | Value::Tuple(items) => {
            array_len_size(items.len())
                + items
                    .iter()
                    .map(|x| value_size(x, depth + 1))
                    .sum::<usize>()
        }
        Value::Map(pairs) => {
            array_len_size(pairs.len())
                + pairs
                    .iter()
                    .map(|(k, v)| value_size(k, depth + 1) + value_size(v, depth + 1))
                    .sum::<usize>()
        }
    }
}

fn int_size(i: i64) -> usize {
    match i {
        -32..=0x7f => 1,
        -0x80..=0xff => 2,
        -0x8000..=0xffff => 3,
        -0x8000_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn str_size(s: &str) -> usize {
    let n = s.len();
    n + if n < 32 {
        1
    } else if n < 0x100 {
        2
    } else if n < 0x10000 {
        3
    } else {
        5
    }
}

/// Arrays and maps have the same length formats.
fn array_len_size(n: usize) -> usize {
    if n < 16 {
        1
    } else if n < 0x10000 {
        3
    } else {
        5
    }
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

/// Decode one msgpack value that must fill the payload.
pub(super) fn decode(payload: &[u8]) -> Result<Value, WireError> {
    let mut r = Reader { data: payload };
    let v = r.value(MAX_DECODE_DEPTH)?;
    r.finish()?;
    Ok(v)
}

/// Decode a message `(msgid, flag, name, body)`. The usual layout, a 4-element fixarray, is
/// read element by element (a known name is interned); anything else is decoded whole and
/// taken apart. Same values, same refusals as [`decode`] followed by that.
pub(super) fn decode_message(payload: &[u8]) -> Result<Parts, WireError> {
    if payload.first() != Some(&0x94) {
        return Parts::of(decode(payload)?);
    }
    let mut r = Reader {
        data: &payload[1..],
    };
    // The budgets rmpv would give the array's elements: one level for the value, one for
    // the array's body.
    let d = MAX_DECODE_DEPTH - 2;
    let msgid = r.value(d)?;
    let flag = r.value(d)?;
    let name = match r.data.first() {
        Some(&m) if m & 0xe0 == 0xa0 => {
            let n = usize::from(m & 0x1f);
            r.data = &r.data[1..];
            let b = r.bytes(n)?;
            match super::Method::known(b) {
                Some(k) => Name::Known(k),
                None => Name::Value(Value::Str(text(b)?.to_owned())),
            }
        }
        _ => Name::Value(r.value(d)?),
    };
    let body = r.value(d)?;
    r.finish()?;
    Ok(Parts {
        msgid,
        flag,
        name,
        body,
    })
}

fn text(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError::Msgpack("text that is not UTF-8".into()))
}

fn truncated() -> WireError {
    WireError::Msgpack("the message ends inside a value".into())
}

fn too_deep() -> WireError {
    WireError::Msgpack("depth limit exceeded".into())
}

/// Containers are read element by element; their vectors are sized from the announced
/// length only up to this many elements (a hostile length must not allocate).
const PREALLOC_MAX: usize = 1024;

/// A msgpack reader straight to [`Value`], as `msgpack.unpackb(raw=False, use_list=False,
/// strict_map_key=True)` reads (every array a tuple, map keys text or bytes, text valid
/// UTF-8, no extension types), with the nesting budget of `rmpv`'s reader, which it
/// replaced: every value costs one level, every array, map, bytes or text body one more,
/// and text one more again (`read_str_data` → `read_bin_data`). 0xc1, which msgpack
/// reserves, reads as nil, as rmpv read it.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn finish(&self) -> Result<(), WireError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            // msgpack.unpackb raises ExtraData.
            Err(WireError::Msgpack(format!(
                "{} bytes after the message",
                self.data.len()
            )))
        }
    }

    #[inline(always)]
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.data.len() < n {
            return Err(truncated());
        }
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(b)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<usize, WireError> {
        Ok(u16::from_be_bytes(self.array()?).into())
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<usize, WireError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| truncated())
    }

    /// A value, given the nesting budget left (`rmpv`'s `read_value_inner(rd, depth)`).
    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        let d = depth.checked_sub(1).ok_or_else(too_deep)?;
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Value::Int(m.into()),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), d)?,
            0x90..=0x9f => self.seq(usize::from(m & 0x0f), d)?,
            0xa0..=0xbf => self.str(usize::from(m & 0x1f), d)?,
            0xc0 | 0xc1 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.u8()?.into();
                self.bin(n, d)?
            }
            0xc5 => {
                let n = self.u16()?;
                self.bin(n, d)?
            }
            0xc6 => {
                let n = self.u32()?;
                self.bin(n, d)?
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(WireError::Msgpack("an extension type".into()));
            }
            0xca => Value::Float(f32::from_be_bytes(self.array()?).into()),
            0xcb => Value::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Value::Int(self.u8()?.into()),
            0xcd => Value::Int(u16::from_be_bytes(self.array()?).into()),
            0xce => Value::Int(u32::from_be_bytes(self.array()?).into()),
            0xcf => {
                let i = u64::from_be_bytes(self.array()?);
                Value::Int(
                    i64::try_from(i).map_err(|_| {
                        WireError::Msgpack(format!("integer {i} beyond 64-bit signed"))
                    })?,
                )
            }
            0xd0 => Value::Int(i8::from_be_bytes(self.array()?).into()),
            0xd1 => Value::Int(i16::from_be_bytes(self.array()?).into()),
            0xd2 => Value::Int(i32::from_be_bytes(self.array()?).into()),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd9 => {
                let n = self.u8()?.into();
                self.str(n, d)?
            }
            0xda => {
                let n = self.u16()?;
                self.str(n, d)?
            }
            0xdb => {
                let n = self.u32()?;
                self.str(n, d)?
            }
            0xdc => {
                let n = self.u16()?;
                self.seq(n, d)?
            }
            0xdd => {
                let n = self.u32()?;
                self.seq(n, d)?
            }
            0xde => {
                let n = self.u16()?;
                self.map(n, d)?
            }
            0xdf => {
                let n = self.u32()?;
                self.map(n, d)?
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
        })
    }

    #[inline(always)]
    fn bin(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        depth.checked_sub(1).ok_or_else(too_deep)?;
        Ok(Value::Bytes(self.bytes(n)?.to_vec()))
    }

    #[inline(always)]
    fn str(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        depth.checked_sub(2).ok_or_else(too_deep)?;
        Ok(Value::Str(text(self.bytes(n)?)?.to_owned()))
    }

    /// use_list=False: every array is a tuple.
    #[inline]
    fn seq(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        let d = depth.checked_sub(1).ok_or_else(too_deep)?;
        let mut items = Vec::with_capacity(n.min(self.data.len()).min(PREALLOC_MAX));
        for _ in 0..n {
            items.push(self.value(d)?);
        }
        Ok(Value::Tuple(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        let d = depth.checked_sub(1).ok_or_else(too_deep)?;
        let mut pairs = Vec::with_capacity(n.min(self.data.len() / 2).min(PREALLOC_MAX));
        for _ in 0..n {
            let k = self.value(d)?;
            if !matches!(k, Value::Str(_) | Value::Bytes(_)) {
                // strict_map_key: Python refuses the whole message.
                return Err(WireError::Msgpack(
                    "a map key that is not text or bytes".into(),
                ));
            }
            let v = self.value(d)?;
            pairs.push((k, v));
        }
        Ok(Value::Map(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reader this one replaced: rmpv's tree, then converted (kept as the reference).
    fn decode_via_rmpv(payload: &[u8]) -> Result<Value, WireError> {
        let mut rd = payload;
        let v = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DECODE_DEPTH)
            .map_err(|e| WireError::Msgpack(e.to_string()))?;
        if !rd.is_empty() {
            return Err(WireError::Msgpack("bytes after the message".into()));
        }
        convert(v)
    }

    fn convert(v: rmpv::Value) -> Result<Value, WireError> {
        use rmpv::Value as M;
        let bad = |what: &str| WireError::Msgpack(what.into());
        Ok(match v {
            M::Nil => Value::Nil,
            M::Boolean(b) => Value::Bool(b),
            M::Integer(i) => Value::Int(i.as_i64().ok_or_else(|| bad("integer"))?),
            M::F32(f) => Value::Float(f.into()),
            M::F64(f) => Value::Float(f),
            M::String(s) => Value::Str(s.into_str().ok_or_else(|| bad("text"))?),
            M::Binary(b) => Value::Bytes(b),
            M::Array(items) => {
                Value::Tuple(items.into_iter().map(convert).collect::<Result<_, _>>()?)
            }
            M::Map(pairs) => Value::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        if !matches!(k, M::String(_) | M::Binary(_)) {
                            return Err(bad("key"));
                        }
                        Ok((convert(k)?, convert(v)?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            M::Ext(..) => return Err(bad("ext")),
        })
    }

    /// Equal, NaN included (compared as printed: NaN payloads do not matter here).
    fn eq(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    fn same(data: &[u8]) {
        match (decode(data), decode_via_rmpv(data)) {
            (Ok(a), Ok(b)) => assert!(eq(&a, &b), "{data:02x?}: {a:?} vs {b:?}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("readers disagree on {data:02x?}: {a:?} vs {b:?}"),
        }
        let want = decode_via_rmpv(data).and_then(Parts::of).map(Parts::whole);
        match (decode_message(data).map(Parts::whole), want) {
            (Ok(a), Ok(b)) => assert!(eq(&a, &b), "{data:02x?}: {a:?} vs {b:?}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("message readers disagree on {data:02x?}: {a:?} vs {b:?}"),
        }
    }

    /// `k` nested arrays around `leaf`, as bytes.
    fn nested(k: usize, leaf: &[u8]) -> Vec<u8> {
        let mut v = vec![0x91; k];
        v.extend_from_slice(leaf);
        v
    }

    #[test]
    fn nesting_budget_is_rmpvs() {
        // Around the limit, with each kind of leaf; and inside a message's fixarray.
        for leaf in [
            &b"\x01"[..],
            b"\xa1x",
            b"\xc4\x01x",
            b"\x90",
            b"\x80",
            b"\x81\xa1k\x01",
            b"\xc1",
            b"\xd4\x01\x00",
        ] {
            for k in 55..70 {
                same(&nested(k, leaf));
                let mut m = b"\x94\x01\xc2\xa4vote".to_vec();
                m.extend(nested(k, leaf));
                same(&m);
                let mut m = b"\x94\x01\xc2".to_vec();
                m.extend(nested(k, leaf));
                m.push(0x90);
                same(&m);
            }
        }
    }

    #[test]
    fn message_layout_is_recognised() {
        let load = [
            &b"\x94\x92\xc4\x08"[..],
            &[0; 8],
            b"\xc4\x08",
            &[1; 8],
            b"\xc2\xaaloadBefore\x92\xc4\x08",
            &[0; 8],
            b"\xc4\x08",
            &[1; 8],
        ]
        .concat();
        let p = decode_message(&load).unwrap();
        assert!(matches!(p.name, Name::Known("loadBefore")));
        same(&load);
        // Unknown, non-text and invalid UTF-8 names; a name in str8 form.
        for m in [
            &b"\x94\x01\xc2\xa3foo\x90"[..],
            b"\x94\x01\xc2\x01\x90",
            b"\x94\x01\xc2\xa2\xff\xfe\x90",
            b"\x94\x01\xc2\xd9\x04vote\x90",
            b"\x94\x01\xc2\xa4vote\x90\x00",
            b"\x94\x01\xc2\xa4vot",
            b"\xdc\x00\x04\x01\xc2\xa4vote\x90",
        ] {
            same(m);
        }
        assert!(matches!(
            decode_message(b"\x94\x01\xc2\xa3foo\x90").unwrap().name,
            Name::Value(Value::Str(s)) if s == "foo"
        ));
    }

    #[test]
    fn announced_lengths_allocate_nothing_before_the_bytes() {
        for m in [
            &b"\xdd\xff\xff\xff\xff\x01"[..],
            b"\xdf\xff\xff\xff\xff\xa1k",
            b"\xc6\xff\xff\xff\xff\x01",
            b"\xdb\xff\xff\xff\xffabc",
        ] {
            assert!(decode(m).is_err());
            same(m);
        }
    }

    fn msgpack_soup() -> impl Strategy<Value = Vec<u8>> {
        let bytes: &'static [u8] = &[
            0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x90, 0x91, 0x92, 0x94, 0xa0, 0xa1, 0xa4, 0xc0,
            0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0,
            0xd3, 0xd4, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, b'v', b'o', b't', b'e',
        ];
        proptest::collection::vec(proptest::sample::select(bytes), 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_rmpv_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            same(&data);
        }

        #[test]
        fn agrees_with_rmpv_on_msgpack_soup(data in msgpack_soup()) {
            same(&data);
            let mut m = vec![0x94];
            m.extend_from_slice(&data);
            same(&m);
        }
    }
}
