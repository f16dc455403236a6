//! The `Z5` message decoder: the opcodes of zeo-protocol.md §2.5 straight to [`Value`].
//!
//! Messages never contain memo opcodes, so nothing is shared and no arena is needed (unlike
//! crate::pickle's general decoder, which this one must agree with: see the property test
//! in tests/wire_props.rs). This is the server's per-request path, hence its own code.
//!
//! Allowed beyond plain data: the one global a client may send, `ZopeUndo.Prefix.Prefix`,
//! instantiated either through `REDUCE` with an argument tuple or the protocol-2 way
//! (`EMPTY_TUPLE NEWOBJ`, then `BUILD` with `{'value': (len(path), path)}`); both become
//! `Value::Global { args: [path] }` (with `REDUCE`: its arguments).

use super::zpickle::Constructor;
use super::{Value, WireError};
use crate::pickle::{ErrorKind, PickleError};

/// Deepest container nesting accepted (dropping a deeper tree could exhaust the stack).
const MAX_DEPTH: u32 = 200;

const PREFIX: (&str, &str) = ("ZopeUndo.Prefix", "Prefix");

enum Item {
    V(Value, u32),
    /// The Prefix class (from `GLOBAL`).
    Class,
    /// A builtin container type (from `GLOBAL`), only to be called by `REDUCE`.
    Constructor(Constructor),
    /// A Prefix instance before its `BUILD`.
    Instance,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
}

fn malformed(what: &str) -> ErrorKind {
    ErrorKind::Malformed(what.into())
}

pub(super) fn decode(payload: &[u8]) -> Result<Value, WireError> {
    let mut m = Machine {
        data: payload,
        pos: 0,
        stack: Vec::with_capacity(16),
        marks: Vec::with_capacity(4),
    };
    if payload.is_empty() {
        return Err(PickleError {
            offset: 0,
            kind: ErrorKind::Truncated,
        }
        .into());
    }
    loop {
        let start = m.pos;
        match m.step() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(kind) => {
                return Err(PickleError {
                    offset: start,
                    kind,
                }
                .into());
            }
        }
    }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        let end = self.pos.checked_add(n).ok_or(ErrorKind::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(ErrorKind::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u32le(&mut self) -> Result<u32, ErrorKind> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Item, ErrorKind> {
        if self.stack.len() <= self.floor() {
            return Err(malformed("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| malformed("stack underflow"))
    }

    fn pop_value(&mut self) -> Result<(Value, u32), ErrorKind> {
        match self.pop()? {
            Item::V(v, d) => Ok((v, d)),
            _ => Err(ErrorKind::Forbidden("a global used as data")),
        }
    }

    fn top_mut(&mut self) -> Result<&mut Item, ErrorKind> {
        if self.stack.len() <= self.floor() {
            return Err(malformed("stack underflow"));
        }
        self.stack
            .last_mut()
            .ok_or_else(|| malformed("stack underflow"))
    }

    /// The values above the topmost mark, and their greatest depth.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, u32), ErrorKind> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| malformed("no MARK on the stack"))?;
        let mut depth = 0;
        let mut out = Vec::with_capacity(self.stack.len() - mark);
        for item in self.stack.drain(mark..) {
            match item {
                Item::V(v, d) => {
                    depth = depth.max(d);
                    out.push(v);
                }
                _ => return Err(ErrorKind::Forbidden("a Prefix used as data")),
            }
        }
        Ok((out, depth))
    }

    fn push(&mut self, v: Value, depth: u32) -> Result<(), ErrorKind> {
        if depth > MAX_DEPTH {
            return Err(ErrorKind::TooLarge(format!(
                "nesting deeper than {MAX_DEPTH}"
            )));
        }
        self.stack.push(Item::V(v, depth));
        Ok(())
    }

    fn push_container(&mut self, v: Value, child_depth: u32) -> Result<(), ErrorKind> {
        self.push(v, child_depth + 1)
    }

    fn step(&mut self) -> Result<Option<Value>, ErrorKind> {
        let op = self.take(1)?[0];
        match op {
            b'.' => {
                let (v, _) = self.pop_value()?;
                return Ok(Some(v));
            }
            0x80 => {
                let p = self.take(1)?[0];
                if p > 5 {
                    return Err(ErrorKind::UnsupportedProtocol(p));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.push(Value::Nil, 0)?,
            0x88 => self.push(Value::Bool(true), 0)?,
            0x89 => self.push(Value::Bool(false), 0)?,
            b'K' => {
                let v = self.take(1)?[0];
                self.push(Value::Int(v.into()), 0)?;
            }
            b'M' => {
                let b = self.take(2)?;
                self.push(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()), 0)?;
            }
            b'J' => {
                let v = self.u32le()? as i32;
                self.push(Value::Int(v.into()), 0)?;
            }
            0x8a => {
                let n = self.take(1)?[0] as usize;
                let b = self.take(n)?;
                let v = long1(b).ok_or_else(|| malformed("an integer beyond 64 bits"))?;
                self.push(Value::Int(v), 0)?;
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push(Value::Float(f64::from_be_bytes(a)), 0)?;
            }
            b'C' => {
                let n = self.take(1)?[0] as usize;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b), 0)?;
            }
            b'B' => {
                let n = self.u32le()? as usize;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b), 0)?;
            }
            b'X' => {
                let n = self.u32le()? as usize;
                let b = self.take(n)?;
                let s =
                    std::str::from_utf8(b).map_err(|_| malformed("string is not valid UTF-8"))?;
                self.push(Value::Str(s.to_owned()), 0)?;
            }
            b')' => self.push(Value::Tuple(Vec::new()), 1)?,
            b't' => {
                let (items, d) = self.pop_mark()?;
                self.push_container(Value::Tuple(items), d)?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < self.floor() + n {
                    return Err(malformed("stack underflow"));
                }
                let mut items = Vec::with_capacity(n);
                let mut depth = 0;
                for item in self.stack.drain(self.stack.len() - n..) {
                    match item {
                        Item::V(v, d) => {
                            depth = depth.max(d);
                            items.push(v);
                        }
                        _ => return Err(ErrorKind::Forbidden("a Prefix used as data")),
                    }
                }
                self.push_container(Value::Tuple(items), depth)?;
            }
            b']' => self.push(Value::List(Vec::new()), 1)?,
            b'}' => self.push(Value::Map(Vec::new()), 1)?,
            b'a' => {
                let (x, d) = self.pop_value()?;
                self.extend_list(vec![x], d)?;
            }
            b'e' => {
                let (items, d) = self.pop_mark()?;
                self.extend_list(items, d)?;
            }
            b's' => {
                let (v, dv) = self.pop_value()?;
                let (k, dk) = self.pop_value()?;
                self.extend_map(vec![(k, v)], dk.max(dv))?;
            }
            b'u' => {
                let (items, d) = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(malformed("odd number of items for a dict"));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                self.extend_map(pairs, d)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                if (module, name) == (PREFIX.0.as_bytes(), PREFIX.1.as_bytes()) {
                    self.stack.push(Item::Class);
                } else {
                    let (module, name) = (
                        String::from_utf8_lossy(module),
                        String::from_utf8_lossy(name),
                    );
                    let Some(c) = Constructor::named(&module, &name) else {
                        return Err(ErrorKind::ForbiddenGlobal(format!("{module}.{name}")));
                    };
                    self.stack.push(Item::Constructor(c));
                }
            }
            b'R' => {
                let (args, d) = self.pop_value()?;
                let Value::Tuple(args) = args else {
                    return Err(malformed("REDUCE arguments are not a tuple"));
                };
                let value = match self.pop()? {
                    Item::Class => prefix(args),
                    Item::Constructor(c) => c.call(args).map_err(|e| malformed(&e.to_string()))?,
                    _ => return Err(ErrorKind::Forbidden("REDUCE/NEWOBJ of a non-global")),
                };
                self.push(value, d)?;
            }
            0x81 => {
                let (args, _) = self.pop_value()?;
                if !matches!(self.pop()?, Item::Class) {
                    return Err(ErrorKind::Forbidden("REDUCE/NEWOBJ of a non-global"));
                }
                if args != Value::Tuple(Vec::new()) {
                    return Err(malformed("Prefix created with arguments"));
                }
                self.stack.push(Item::Instance);
            }
            b'b' => {
                let (state, d) = self.pop_value()?;
                let top = self.top_mut()?;
                if !matches!(top, Item::Instance) {
                    return Err(ErrorKind::Forbidden("BUILD"));
                }
                let Value::Map(state) = state else {
                    return Err(malformed("a Prefix state that is not a dict"));
                };
                let path = state.into_iter().find_map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Tuple(mut t)) if k == "value" && t.len() == 2 => t.pop(),
                    _ => None,
                });
                let Some(path) = path else {
                    return Err(malformed("a Prefix without a value"));
                };
                *top = Item::V(prefix(vec![path]), d);
            }
            _ => {
                return Err(match crate::pickle::opcode_name(op) {
                    Some(name) => ErrorKind::Forbidden(name),
                    None => ErrorKind::UnknownOpcode(op),
                });
            }
        }
        Ok(None)
    }

    fn line(&mut self) -> Result<&'a [u8], ErrorKind> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(ErrorKind::Truncated)?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn extend_list(&mut self, items: Vec<Value>, d: u32) -> Result<(), ErrorKind> {
        match self.top_mut()? {
            Item::V(Value::List(l), depth) => {
                l.extend(items);
                *depth = (*depth).max(d + 1);
                if *depth > MAX_DEPTH {
                    return Err(ErrorKind::TooLarge(format!(
                        "nesting deeper than {MAX_DEPTH}"
                    )));
                }
                Ok(())
            }
            _ => Err(malformed("APPEND to something that is not a list")),
        }
    }

    fn extend_map(&mut self, pairs: Vec<(Value, Value)>, d: u32) -> Result<(), ErrorKind> {
        match self.top_mut()? {
            Item::V(Value::Map(m), depth) => {
                m.extend(pairs);
                *depth = (*depth).max(d + 1);
                if *depth > MAX_DEPTH {
                    return Err(ErrorKind::TooLarge(format!(
                        "nesting deeper than {MAX_DEPTH}"
                    )));
                }
                Ok(())
            }
            _ => Err(malformed("SETITEM on something that is not a dict")),
        }
    }
}

fn prefix(args: Vec<Value>) -> Value {
    Value::Global {
        module: PREFIX.0.into(),
        name: PREFIX.1.into(),
        args,
    }
}

/// A `LONG1` payload (little-endian two's complement) that fits `i64`.
fn long1(b: &[u8]) -> Option<i64> {
    let mut v = b.to_vec();
    // Drop redundant sign bytes first, as a 9-byte encoding can still fit.
    while v.len() > 1 {
        let (last, prev) = (v[v.len() - 1], v[v.len() - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            v.pop();
        } else {
            break;
        }
    }
    if v.len() > 8 {
        return None;
    }
    let fill = if v.last().is_some_and(|&x| x & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut a = [fill; 8];
    a[..v.len()].copy_from_slice(&v);
    Some(i64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::super::zpickle::decode_via_tree;
    use super::*;
    use proptest::prelude::*;

    /// Whatever this decoder accepts, the general one accepts too, with the same value. It
    /// may refuse more: `APPEND`/`SETITEM` on something that is not a list/dict is an error
    /// here (as in Python, which fails on the missing method), while the general decoder
    /// records it as a node and only fails if that node ends up in the value.
    fn same(data: &[u8]) {
        match (decode(data), decode_via_tree(data)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{data:?}"),
            (Err(_), _) => {}
            (a, b) => panic!("decoders disagree on {data:?}: {a:?} vs {b:?}"),
        }
    }

    #[test]
    fn builtin_container_types_build_plain_data() {
        // ZEO's client encoder on a tpc_begin whose extension is a dict subclass reducing to
        // `(dict, (items,))`, as ZODB's testTransactionExtensionFromIterator sends it.
        let tpc_begin = b"\x80\x03(K\x01\x89X\t\x00\x00\x00tpc_begin(K\x07C\x00C\x00cbuiltins\ndict\nX\x03\x00\x00\x00fooK\x01\x86\x85\x85RNX\x01\x00\x00\x00 tt.";
        let ext = Value::Map(vec![(Value::Str("foo".into()), Value::Int(1))]);
        let Value::Tuple(message) = decode(tpc_begin).unwrap() else {
            panic!("not a tuple");
        };
        assert_eq!(
            message[3],
            Value::Tuple(vec![
                Value::Int(7),
                Value::Bytes(vec![]),
                Value::Bytes(vec![]),
                ext,
                Value::Nil,
                Value::Str(" ".into()),
            ])
        );
        same(tpc_begin);
        for (data, want) in [
            (&b"\x80\x03cbuiltins\ndict\n)R."[..], Value::Map(vec![])),
            (
                b"\x80\x03c__builtin__\nlist\nK\x01K\x02\x86\x85R.",
                Value::List(vec![Value::Int(1), Value::Int(2)]),
            ),
            (
                b"\x80\x03cbuiltins\ntuple\n]K\x01a\x85R.",
                Value::Tuple(vec![Value::Int(1)]),
            ),
        ] {
            assert_eq!(decode(data).unwrap(), want, "{data:?}");
            same(data);
        }
        for bad in [
            // Anything but a call of the type, and anything that is not a plain container.
            &b"\x80\x03cbuiltins\ndict\n."[..],
            b"\x80\x03cbuiltins\ndict\n)\x81.",
            b"\x80\x03cbuiltins\ndict\nK\x01\x85R.",
            b"\x80\x03cbuiltins\ndict\nK\x01K\x02\x86R.",
            b"\x80\x03cbuiltins\nset\n)R.",
            b"\x80\x03cbuiltins\ngetattr\n)R.",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
            same(bad);
        }
    }

    #[test]
    fn prefix_both_ways() {
        // As Zope's client sends it (NEWOBJ + BUILD), and through REDUCE.
        let newobj = b"\x80\x03}X\x0b\x00\x00\x00descriptioncZopeUndo.Prefix\nPrefix\n)\x81}X\x05\x00\x00\x00valueK\x02X\x02\x00\x00\x00/a\x86sbs.";
        let want = Value::Map(vec![(
            Value::Str("description".into()),
            prefix(vec![Value::Str("/a".into())]),
        )]);
        assert_eq!(decode(newobj).unwrap(), want);
        same(newobj);
        let reduce = b"\x80\x03cZopeUndo.Prefix\nPrefix\nX\x02\x00\x00\x00/a\x85R.";
        assert_eq!(
            decode(reduce).unwrap(),
            prefix(vec![Value::Str("/a".into())])
        );
        same(reduce);
        for bad in [
            &b"\x80\x03cZopeUndo.Prefix\nPrefix\n."[..],
            b"\x80\x03cZopeUndo.Prefix\nPrefix\n)\x81.",
            b"\x80\x03cZopeUndo.Prefix\nPrefix\nK\x01\x85\x81.",
            b"\x80\x03cbuiltins\neval\nX\x01\x00\x00\x001\x85R.",
            b"\x80\x03N}b.",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
            same(bad);
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = b"\x80\x03".to_vec();
        p.extend(std::iter::repeat_n(b']', 100_000));
        p.extend(std::iter::repeat_n(b'a', 99_999));
        p.push(b'.');
        assert!(decode(&p).is_err());
    }

    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let ops: &'static [u8] =
            b"(.)]}taesuNKMJCBXGcRb\x80\x81\x85\x86\x87\x88\x89\x8a\x00\x01\x02\x03";
        proptest::collection::vec(proptest::sample::select(ops), 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_the_general_decoder(data in soup()) {
            same(&data);
            let mut with_proto = vec![0x80, 3];
            with_proto.extend_from_slice(&data);
            same(&with_proto);
        }

        #[test]
        fn agrees_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            same(&data);
        }
    }
}
