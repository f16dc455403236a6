//! `Z5`: messages as fast protocol-3 pickles (zeo-protocol.md §2.5), through crate::pickle.

use super::message::{Body, Flag, Outgoing};
use super::{Value, WireError};
use crate::pickle::{self, ops};

const MAX_DEPTH: usize = 200;

pub(super) fn write_message(buf: &mut Vec<u8>, m: &Outgoing) -> Result<(), WireError> {
    buf.extend_from_slice(&ops::PROTO_3);
    // A 4-tuple: MARK, the elements, TUPLE.
    buf.push(ops::MARK);
    write_value(buf, m.msgid, 0)?;
    match m.flag {
        Flag::Int(i) => ops::write_int(buf, i),
        Flag::Bool(b) => buf.push(if b { ops::NEWTRUE } else { ops::NEWFALSE }),
    }
    ops::write_str(buf, m.name);
    match m.body {
        Body::Value(v) => write_value(buf, v, 0)?,
        Body::Args(args) => write_tuple(buf, args, 0)?,
        Body::Error(class, state) => {
            ops::write_str(buf, class);
            write_value(buf, state, 1)?;
            buf.push(ops::TUPLE2);
        }
    }
    buf.push(ops::TUPLE);
    buf.push(ops::STOP);
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
        Body::Args(args) => tuple_size(args, 0),
        Body::Error(class, state) => str_size(class) + value_size(state, 1) + 1,
    };
    // PROTO 3, MARK, ..., TUPLE, STOP
    2 + 1 + value_size(m.msgid, 0) + flag + str_size(m.name) + body + 2
}

fn value_size(v: &Value, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        // Refused by write_value.
        return 0;
    }
    let d = depth + 1;
    match v {
        Value::Nil | Value::Bool(_) | Value::Global { .. } => 1,
        Value::Int(i) => int_size(*i),
        Value::Float(_) => 9,
        Value::Bytes(b) => {
            let n = b.len();
            n + if n < 256 {
                2
            } else if u32::try_from(n).is_ok() {
                5
            } else {
                9
            }
        }
        Value::Str(s) => str_size(s),
        Value::Tuple(items) => tuple_size(items, depth),
        Value::List(items) => {
            1 + batched_size(items.len()) + items.iter().map(|x| value_size(x, d)).sum::<usize>()
        }
        Value::Map(pairs) => {
            1 + batched_size(pairs.len())
                + pairs
                    .iter()
                    .map(|(k, v)| value_size(k, d) + value_size(v, d))
                    .sum::<usize>()
        }
    }
}

fn tuple_size(items: &[Value], depth: usize) -> usize {
    let framing = match items.len() {
        // EMPTY_TUPLE, or TUPLE1..3 after the items
        0..=3 => 1,
        // MARK ... TUPLE
        _ => 2,
    };
    framing
        + items
            .iter()
            .map(|x| value_size(x, depth + 1))
            .sum::<usize>()
}

/// The opcodes [`write_batched`] adds around `n` items.
fn batched_size(n: usize) -> usize {
    match n {
        0 => 0,
        1 => 1,
        _ => 2 * n.div_ceil(ops::BATCHSIZE),
    }
}

fn str_size(s: &str) -> usize {
    5 + s.len()
}

fn int_size(i: i64) -> usize {
    if (0..=0xff).contains(&i) {
        2
    } else if (0..=0xffff).contains(&i) {
        3
    } else if i32::try_from(i).is_ok() {
        5
    } else {
        2 + ops::long_len(i)
    }
}

/// A value as the encoder writes it (for tests that splice pickles).
#[cfg(test)]
pub(super) fn write_scalar_for_tests(buf: &mut Vec<u8>, v: &Value) {
    write_value(buf, v, 0).expect("plain data");
}

fn write_tuple(buf: &mut Vec<u8>, items: &[Value], depth: usize) -> Result<(), WireError> {
    match items.len() {
        0 => buf.push(ops::EMPTY_TUPLE),
        n @ 1..=3 => {
            for x in items {
                write_value(buf, x, depth + 1)?;
            }
            buf.push(ops::TUPLE1 + (n as u8 - 1));
        }
        _ => {
            buf.push(ops::MARK);
            for x in items {
                write_value(buf, x, depth + 1)?;
            }
            buf.push(ops::TUPLE);
        }
    }
    Ok(())
}

/// Batched container bodies, as `_pickle.c` writes them (see crate::pickle::encode).
fn write_batched<T>(
    buf: &mut Vec<u8>,
    items: &[T],
    one: u8,
    many: u8,
    mut item: impl FnMut(&mut Vec<u8>, &T) -> Result<(), WireError>,
) -> Result<(), WireError> {
    match items.len() {
        0 => {}
        1 => {
            item(buf, &items[0])?;
            buf.push(one);
        }
        _ => {
            for batch in items.chunks(ops::BATCHSIZE) {
                buf.push(ops::MARK);
                for x in batch {
                    item(buf, x)?;
                }
                buf.push(many);
            }
        }
    }
    Ok(())
}

fn write_value(buf: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Unencodable("a value nested too deeply".into()));
    }
    let d = depth + 1;
    match v {
        Value::Nil => buf.push(ops::NONE),
        Value::Bool(b) => buf.push(if *b { ops::NEWTRUE } else { ops::NEWFALSE }),
        Value::Int(i) => ops::write_int(buf, *i),
        Value::Float(f) => ops::write_float(buf, *f),
        Value::Bytes(b) => ops::write_bytes(buf, b),
        Value::Str(s) => ops::write_str(buf, s),
        Value::Tuple(items) => write_tuple(buf, items, depth)?,
        Value::List(items) => {
            buf.push(ops::EMPTY_LIST);
            write_batched(buf, items, ops::APPEND, ops::APPENDS, |buf, x| {
                write_value(buf, x, d)
            })?;
        }
        Value::Map(pairs) => {
            buf.push(ops::EMPTY_DICT);
            write_batched(buf, pairs, ops::SETITEM, ops::SETITEMS, |buf, (k, v)| {
                write_value(buf, k, d)?;
                write_value(buf, v, d)
            })?;
        }
        Value::Global { module, name, .. } => {
            // The reference server never emits globals, and neither do we (§2.5).
            return Err(WireError::Unencodable(format!(
                "the global {module}.{name}"
            )));
        }
    }
    Ok(())
}

/// The same through crate::pickle's general decoder: slower, kept as the reference the
/// message decoder is tested against.
#[cfg(test)]
pub(super) fn decode_via_tree(payload: &[u8]) -> Result<Value, WireError> {
    let v = pickle::Unpickler::new(payload)
        .restrict_to_messages()
        .load()?;
    convert(v)
}

fn unsupported(what: &str) -> WireError {
    WireError::Malformed(format!("{what} in a message"))
}

/// crate::pickle's tree → the protocol value. The restricted decoder has already refused
/// every opcode and global a message may not contain; what remains is plain data and the
/// `ZopeUndo.Prefix` instance. Also used for pickles from the storage (transaction
/// extensions), which may hold Python 2 strings: ASCII ones become text, as Python 3 reads
/// them, others bytes.
pub(super) fn convert(v: pickle::Value) -> Result<Value, WireError> {
    use pickle::Value as P;
    Ok(match v {
        P::None => Value::Nil,
        P::Bool(b) => Value::Bool(b),
        P::Int(i) => Value::Int(i),
        P::BigInt(_) => return Err(unsupported("an integer beyond 64 bits")),
        P::Float(f) => Value::Float(f),
        P::Bytes(b) => Value::Bytes(b),
        P::Str(s) => Value::Str(s),
        P::String8(b) => match String::from_utf8(b) {
            Ok(s) if s.is_ascii() => Value::Str(s),
            Ok(s) => Value::Bytes(s.into_bytes()),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        P::Tuple(items) => Value::Tuple(convert_all(items)?),
        P::List(items) => Value::List(convert_all(items)?),
        P::Dict(pairs) => Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((convert(k)?, convert(v)?)))
                .collect::<Result<_, WireError>>()?,
        ),
        // Prefix(path) pickled through __reduce__: GLOBAL, args tuple, REDUCE; or a builtin
        // container type called on its items.
        P::Reduce { callable, args } => match (*callable, *args) {
            (P::Global { module, name }, P::Tuple(args)) => {
                let args = convert_all(args)?;
                match Constructor::named(&module, &name) {
                    Some(c) => c.call(args)?,
                    None => Value::Global { module, name, args },
                }
            }
            _ => return Err(unsupported("a call")),
        },
        // Prefix(path) pickled the default protocol-2+ way: GLOBAL, (), NEWOBJ, then BUILD with
        // the instance dict {'value': (len(path), path)}; reduced to its constructor argument.
        P::Build { obj, state } => match (*obj, *state) {
            (
                P::NewObj {
                    cls,
                    args,
                    kwargs: None,
                },
                P::Dict(state),
            ) if *args == P::Tuple(vec![]) => {
                let P::Global { module, name } = *cls else {
                    return Err(unsupported("an object"));
                };
                let path = state.into_iter().find_map(|(k, v)| match (k, v) {
                    (P::Str(k), P::Tuple(mut t)) if k == "value" && t.len() == 2 => t.pop(),
                    _ => None,
                });
                let Some(path) = path else {
                    return Err(unsupported("a Prefix without a value"));
                };
                Value::Global {
                    module,
                    name,
                    args: vec![convert(path)?],
                }
            }
            _ => return Err(unsupported("an object")),
        },
        // A bare class (not an instance) means nothing in a message.
        _ => return Err(unsupported("an object")),
    })
}

/// A builtin container type a message may call (`crate::pickle`'s `MESSAGE_CONSTRUCTORS`):
/// calling it only builds plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Constructor {
    Dict,
    List,
    Tuple,
}

impl Constructor {
    pub(super) fn named(module: &str, name: &str) -> Option<Self> {
        if !pickle::MESSAGE_CONSTRUCTORS.contains(&(module, name)) {
            return None;
        }
        match name {
            "dict" => Some(Self::Dict),
            "list" => Some(Self::List),
            "tuple" => Some(Self::Tuple),
            _ => None,
        }
    }

    /// `dict()`, `dict(mapping_or_pairs)`, `list(items)`, `tuple(items)`, as Python does them
    /// for the plain values a message can hold.
    pub(super) fn call(self, args: Vec<Value>) -> Result<Value, WireError> {
        let mut args = args.into_iter();
        let arg = args.next();
        if args.next().is_some() {
            return Err(unsupported("a builtin type called with several arguments"));
        }
        let items = |v: Value| match v {
            Value::List(items) | Value::Tuple(items) => Ok(items),
            Value::Map(pairs) => Ok(pairs.into_iter().map(|(k, _)| k).collect()),
            _ => Err(unsupported("a builtin type called on a non-iterable")),
        };
        Ok(match (self, arg) {
            (Self::Dict, None) => Value::Map(Vec::new()),
            (Self::Dict, Some(Value::Map(pairs))) => Value::Map(pairs),
            (Self::Dict, Some(v)) => Value::Map(
                items(v)?
                    .into_iter()
                    .map(|pair| match pair {
                        Value::List(kv) | Value::Tuple(kv) if kv.len() == 2 => {
                            let mut kv = kv.into_iter();
                            match (kv.next(), kv.next()) {
                                (Some(k), Some(v)) => Ok((k, v)),
                                _ => Err(unsupported("a dict item that is not a pair")),
                            }
                        }
                        _ => Err(unsupported("a dict item that is not a pair")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (Self::List, None) => Value::List(Vec::new()),
            (Self::List, Some(v)) => Value::List(items(v)?),
            (Self::Tuple, None) => Value::Tuple(Vec::new()),
            (Self::Tuple, Some(v)) => Value::Tuple(items(v)?),
        })
    }
}

fn convert_all(items: Vec<pickle::Value>) -> Result<Vec<Value>, WireError> {
    items.into_iter().map(convert).collect()
}

/// The protocol value → crate::pickle's tree (plain data only).
pub(super) fn to_pickle(v: &Value) -> Result<pickle::Value, WireError> {
    use pickle::Value as P;
    Ok(match v {
        Value::Nil => P::None,
        Value::Bool(b) => P::Bool(*b),
        Value::Int(i) => P::Int(*i),
        Value::Float(f) => P::Float(*f),
        Value::Bytes(b) => P::Bytes(b.clone()),
        Value::Str(s) => P::Str(s.clone()),
        Value::Tuple(x) => P::Tuple(x.iter().map(to_pickle).collect::<Result<_, _>>()?),
        Value::List(x) => P::List(x.iter().map(to_pickle).collect::<Result<_, _>>()?),
        Value::Map(m) => P::Dict(
            m.iter()
                .map(|(k, v)| Ok((to_pickle(k)?, to_pickle(v)?)))
                .collect::<Result<_, WireError>>()?,
        ),
        Value::Global { module, name, .. } => {
            return Err(WireError::Unencodable(format!(
                "the global {module}.{name}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn int_sizes_are_what_crate_pickle_writes(i in any::<i64>()) {
            let mut written = Vec::new();
            ops::write_int(&mut written, i);
            prop_assert_eq!(written.len(), int_size(i));
        }
    }

    #[test]
    fn int_edge_sizes_are_what_crate_pickle_writes() {
        let mut edges = vec![i64::MIN, i64::MAX, 0, -1];
        for shift in 0..63 {
            let p = 1i64 << shift;
            edges.extend([p, p - 1, p + 1, -p, -p - 1, -p + 1]);
        }
        for i in edges {
            let mut written = Vec::new();
            ops::write_int(&mut written, i);
            assert_eq!(written.len(), int_size(i), "{i}");
        }
    }

    #[test]
    fn extension_dicts_convert_both_ways() {
        // What ZODB stores for extension={'foo': 'bar', 'n': [1]} (memo and all).
        let stored = b"\x80\x03}q\x00(X\x03\x00\x00\x00fooq\x01X\x03\x00\x00\x00barq\x02X\x01\x00\x00\x00nq\x03]q\x04K\x01au.";
        let v = convert(pickle::loads(stored).unwrap()).unwrap();
        let want = Value::Map(vec![
            (Value::Str("foo".into()), Value::Str("bar".into())),
            (Value::Str("n".into()), Value::List(vec![Value::Int(1)])),
        ]);
        assert_eq!(v, want);
        let back = pickle::dumps(&to_pickle(&want).unwrap()).unwrap();
        assert_eq!(convert(pickle::loads(&back).unwrap()).unwrap(), want);
        // Python 2 strings: ASCII is text, the rest bytes.
        let py2 = b"(dp0\nS'user'\np1\nS'\\xff'\np2\ns.";
        assert_eq!(
            convert(pickle::loads(py2).unwrap()).unwrap(),
            Value::Map(vec![(Value::Str("user".into()), Value::Bytes(vec![0xff]))])
        );
    }
}
