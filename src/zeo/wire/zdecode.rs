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
//!
//! Per request it allocates only what the resulting values own: the machine's stacks are
//! kept per thread between messages, a message's name is interned when it is a known
//! method, and the outer 4-tuple is handed over as its four elements instead of being built
//! (see [`Step::Message`]).

use std::cell::Cell;

use super::message::{Name, Parts};
use super::zpickle::Constructor;
use super::{Value, WireError};
use crate::pickle::{ErrorKind, PickleError};

/// Deepest container nesting accepted (dropping a deeper tree could exhaust the stack).
const MAX_DEPTH: u32 = 200;

const PREFIX: (&str, &str) = ("ZopeUndo.Prefix", "Prefix");

enum Item {
    V(Value, u32),
    /// Text that is a known method name, at the position of a message's name: kept interned
    /// (see [`Machine::message`]); it becomes a `Value::Str` wherever it is used as data.
    Name(&'static str),
    /// The Prefix class (from `GLOBAL`).
    Class,
    /// A builtin container type (from `GLOBAL`), only to be called by `REDUCE`.
    Constructor(Constructor),
    /// A Prefix instance before its `BUILD`.
    Instance,
}

impl Item {
    /// The item as data, with its nesting depth.
    fn into_value(self) -> Option<(Value, u32)> {
        match self {
            Item::V(v, d) => Some((v, d)),
            Item::Name(s) => Some((Value::Str(s.to_owned()), 0)),
            _ => None,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    /// Stack indices of the open `MARK`s.
    marks: Vec<usize>,
    /// Decoding a whole message: recognise its usual layout (see [`Step::Message`]).
    message: bool,
}

// Boxing the parts would cost an allocation per message; `More`, returned per opcode,
// writes only the tag.
#[allow(clippy::large_enum_variant)]
enum Step {
    More,
    Done(Value),
    /// A message's `MARK msgid flag name body TUPLE STOP`: what `STOP` would return is that
    /// 4-tuple, so its elements are handed over without building it.
    Message(Parts),
}

fn malformed(what: &str) -> ErrorKind {
    ErrorKind::Malformed(what.into())
}

/// Stacks above this many items are not kept for the next message.
const SPARE_MAX: usize = 1024;

thread_local! {
    /// The stacks of the previous decode on this thread, emptied: a request costs no
    /// allocation for the machine itself.
    static SPARE: Cell<(Vec<Item>, Vec<usize>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Decode one pickle to a value (the tests compare it with crate::pickle's decoder; messages
/// go through [`decode_message`], which shares everything but the end).
#[cfg(test)]
pub(super) fn decode(payload: &[u8]) -> Result<Value, WireError> {
    match run(payload, false)? {
        Step::Done(v) => Ok(v),
        // Not produced outside message mode.
        Step::Message(p) => Ok(Value::Tuple(vec![
            p.msgid,
            p.flag,
            match p.name {
                Name::Known(s) => Value::Str(s.to_owned()),
                Name::Value(v) => v,
            },
            p.body,
        ])),
        Step::More => Err(malformed_at(0, "no value")),
    }
}

/// Decode a pickled message `(msgid, flag, name, body)` (a 4-element tuple or list).
pub(super) fn decode_message(payload: &[u8]) -> Result<Parts, WireError> {
    if let Some(parts) = fast_message(payload) {
        return Ok(parts);
    }
    match run(payload, true)? {
        Step::Message(p) => Ok(p),
        Step::Done(v) => Parts::of(v),
        Step::More => Err(malformed_at(0, "no value")),
    }
}

fn malformed_at(offset: usize, what: &str) -> WireError {
    PickleError {
        offset,
        kind: malformed(what),
    }
    .into()
}

fn run(payload: &[u8], message: bool) -> Result<Step, WireError> {
    if payload.is_empty() {
        return Err(PickleError {
            offset: 0,
            kind: ErrorKind::Truncated,
        }
        .into());
    }
    let (stack, marks) = SPARE.with(Cell::take);
    let mut m = Machine {
        data: payload,
        pos: 0,
        stack,
        marks,
        message,
    };
    let result = loop {
        let start = m.pos;
        match m.step() {
            Ok(Step::More) => {}
            Ok(done) => break Ok(done),
            Err(kind) => {
                break Err(PickleError {
                    offset: start,
                    kind,
                }
                .into());
            }
        }
    };
    let Machine {
        mut stack,
        mut marks,
        ..
    } = m;
    if stack.capacity() <= SPARE_MAX && marks.capacity() <= SPARE_MAX {
        stack.clear();
        marks.clear();
        SPARE.with(|s| s.set((stack, marks)));
    }
    result
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        take(self.data, &mut self.pos, n)
    }

    fn u32le(&mut self) -> Result<u32, ErrorKind> {
        u32le(self.data, &mut self.pos)
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
        self.pop()?
            .into_value()
            .ok_or(ErrorKind::Forbidden("a global used as data"))
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
            let (v, d) = item
                .into_value()
                .ok_or(ErrorKind::Forbidden("a Prefix used as data"))?;
            depth = depth.max(d);
            out.push(v);
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

    fn step(&mut self) -> Result<Step, ErrorKind> {
        let op = self.take(1)?[0];
        match op {
            b'.' => {
                let (v, _) = self.pop_value()?;
                return Ok(Step::Done(v));
            }
            0x80 => {
                let p = self.take(1)?[0];
                if p > 5 {
                    return Err(ErrorKind::UnsupportedProtocol(p));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'X' if self.message
                && self.marks.len() == 1
                && self.stack.len() == self.marks[0] + 2 =>
            {
                // A message's name: third after the one MARK.
                let start = self.pos;
                let n = self.u32le()? as usize;
                let b = self.take(n)?;
                if let Some(name) = super::Method::known(b) {
                    self.stack.push(Item::Name(name));
                } else {
                    self.pos = start;
                    let v = scalar(op, self.data, &mut self.pos)?.ok_or(ErrorKind::Truncated)?;
                    self.push(v, 0)?;
                }
            }
            b')' => self.push(Value::Tuple(Vec::new()), 1)?,
            b't' if self.message && self.data.get(self.pos) == Some(&b'.') => {
                if let Some(parts) = self.message_parts()? {
                    return Ok(Step::Message(parts));
                }
                let (items, d) = self.pop_mark()?;
                self.push_container(Value::Tuple(items), d)?;
            }
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
                    let (v, d) = item
                        .into_value()
                        .ok_or(ErrorKind::Forbidden("a Prefix used as data"))?;
                    depth = depth.max(d);
                    items.push(v);
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
                if let Some(v) = scalar(op, self.data, &mut self.pos)? {
                    self.push(v, 0)?;
                    return Ok(Step::More);
                }
                return Err(match crate::pickle::opcode_name(op) {
                    Some(name) => ErrorKind::Forbidden(name),
                    None => ErrorKind::UnknownOpcode(op),
                });
            }
        }
        Ok(Step::More)
    }

    /// At a `TUPLE` followed by `STOP`: if the tuple has four elements, they are the message
    /// that `STOP` returns (the checks are those of `pop_mark` and `push_container`).
    fn message_parts(&mut self) -> Result<Option<Parts>, ErrorKind> {
        let Some(&mark) = self.marks.last() else {
            return Err(malformed("no MARK on the stack"));
        };
        if self.stack.len() != mark + 4 {
            return Ok(None);
        }
        self.marks.pop();
        let mut depth = 0;
        let mut take = |item: Item| -> Result<Value, ErrorKind> {
            let (v, d) = item
                .into_value()
                .ok_or(ErrorKind::Forbidden("a Prefix used as data"))?;
            depth = depth.max(d);
            Ok(v)
        };
        let mut items = self.stack.drain(mark..);
        let (Some(msgid), Some(flag), Some(name), Some(body)) =
            (items.next(), items.next(), items.next(), items.next())
        else {
            return Err(malformed("stack underflow"));
        };
        drop(items);
        let msgid = take(msgid)?;
        let flag = take(flag)?;
        let name = match name {
            Item::Name(s) => Name::Known(s),
            other => Name::Value(take(other)?),
        };
        let body = take(body)?;
        if depth + 1 > MAX_DEPTH {
            return Err(ErrorKind::TooLarge(format!(
                "nesting deeper than {MAX_DEPTH}"
            )));
        }
        Ok(Some(Parts {
            msgid,
            flag,
            name,
            body,
        }))
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

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ErrorKind> {
    let end = pos.checked_add(n).ok_or(ErrorKind::Truncated)?;
    let s = data.get(*pos..end).ok_or(ErrorKind::Truncated)?;
    *pos = end;
    Ok(s)
}

fn u32le(data: &[u8], pos: &mut usize) -> Result<u32, ErrorKind> {
    let b = take(data, pos, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The value of a scalar opcode (`op` already read, its argument at `pos`), or `None` if `op`
/// is not one. Shared by the machine and [`fast_message`], so that both read the same.
#[inline(always)]
fn scalar(op: u8, data: &[u8], pos: &mut usize) -> Result<Option<Value>, ErrorKind> {
    Ok(Some(match op {
        b'N' => Value::Nil,
        0x88 => Value::Bool(true),
        0x89 => Value::Bool(false),
        b'K' => Value::Int(take(data, pos, 1)?[0].into()),
        b'M' => {
            let b = take(data, pos, 2)?;
            Value::Int(u16::from_le_bytes([b[0], b[1]]).into())
        }
        b'J' => Value::Int((u32le(data, pos)? as i32).into()),
        0x8a => {
            let n = take(data, pos, 1)?[0] as usize;
            let b = take(data, pos, n)?;
            Value::Int(long1(b).ok_or_else(|| malformed("an integer beyond 64 bits"))?)
        }
        b'G' => {
            let b = take(data, pos, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Float(f64::from_be_bytes(a))
        }
        b'C' => {
            let n = take(data, pos, 1)?[0] as usize;
            Value::Bytes(take(data, pos, n)?.to_vec())
        }
        b'B' => {
            let n = u32le(data, pos)? as usize;
            Value::Bytes(take(data, pos, n)?.to_vec())
        }
        b'X' => {
            let n = u32le(data, pos)? as usize;
            let b = take(data, pos, n)?;
            let s = std::str::from_utf8(b).map_err(|_| malformed("string is not valid UTF-8"))?;
            Value::Str(s.to_owned())
        }
        _ => return Ok(None),
    }))
}

/// Elements the fast path holds at most (a `storea` needs 7).
const FAST_STACK: usize = 12;

/// An element the fast path has read but not placed yet. Scalars are only checked when read
/// and decoded where they end up (in a tuple's vector or the parts), so each 72-byte value
/// is written once instead of being moved through a stack.
#[derive(Clone, Copy)]
enum Pending {
    /// A scalar opcode, with the offset of its argument.
    Scalar(u8, usize),
    /// A tuple of scalars: its items' positions in `items`.
    Tuple(usize, usize),
    /// The message's name, interned.
    Name(&'static str),
}

/// Check the scalar opcode `op` whose argument is at `pos`, and step over it: exactly the
/// checks [`scalar`] makes, without building the value.
fn skip_scalar(op: u8, data: &[u8], pos: &mut usize) -> Option<()> {
    match op {
        b'N' | 0x88 | 0x89 => {}
        b'K' => {
            take(data, pos, 1).ok()?;
        }
        b'M' => {
            take(data, pos, 2).ok()?;
        }
        b'J' => {
            take(data, pos, 4).ok()?;
        }
        0x8a => {
            let n = take(data, pos, 1).ok()?[0] as usize;
            long1(take(data, pos, n).ok()?)?;
        }
        b'G' => {
            take(data, pos, 8).ok()?;
        }
        b'C' => {
            let n = take(data, pos, 1).ok()?[0] as usize;
            take(data, pos, n).ok()?;
        }
        b'B' => {
            let n = u32le(data, pos).ok()? as usize;
            take(data, pos, n).ok()?;
        }
        b'X' => {
            let n = u32le(data, pos).ok()? as usize;
            std::str::from_utf8(take(data, pos, n).ok()?).ok()?;
        }
        _ => return None,
    }
    Some(())
}

/// The usual message, read without the machine: `PROTO, MARK, msgid, flag, name, args,
/// TUPLE, STOP`, where every element is a scalar or a tuple of scalars (`EMPTY_TUPLE`,
/// `TUPLE1..3`, or one inner `MARK … TUPLE`) — every request of the load and commit paths
/// but `tpc_begin`. `None` for anything else, errors included: the machine then decodes the
/// payload from the start and decides. Whatever this accepts, the machine decodes to the
/// same parts (tested below), so the fast path changes only the cost.
fn fast_message(data: &[u8]) -> Option<Parts> {
    let (&[0x80, proto, b'('], rest) = data.split_first_chunk::<3>()? else {
        return None;
    };
    if proto > 5 {
        return None;
    }
    let mut pos = data.len() - rest.len();
    let mut st = [Pending::Name(""); FAST_STACK];
    let mut len = 0;
    // The scalars of the tuples built so far, in order (a tuple refers to a range).
    let mut items = [Pending::Name(""); 2 * FAST_STACK];
    let mut n_items = 0;
    // Where an inner MARK is open.
    let mut inner: Option<usize> = None;
    loop {
        let op = *data.get(pos)?;
        pos += 1;
        let p = match op {
            b'(' if inner.is_none() => {
                inner = Some(len);
                continue;
            }
            b't' if inner.is_none() => {
                if len != 4 || data.get(pos) != Some(&b'.') {
                    return None;
                }
                let items = &items[..n_items];
                return Some(Parts {
                    msgid: value(st[0], data, items)?,
                    flag: value(st[1], data, items)?,
                    name: match st[2] {
                        Pending::Name(k) => Name::Known(k),
                        p => Name::Value(value(p, data, items)?),
                    },
                    body: value(st[3], data, items)?,
                });
            }
            b't' | 0x85..=0x87 => {
                let from = match (op, inner) {
                    (b't', Some(mark)) => {
                        inner = None;
                        mark
                    }
                    _ => {
                        let n = usize::from(op - 0x84);
                        if len < inner.unwrap_or(0) + n {
                            return None;
                        }
                        len - n
                    }
                };
                // Tuples of scalars only: nesting stays far below MAX_DEPTH. A name that
                // ends up inside one is plain text after all (as `Item::Name` in the
                // machine): the offset of its text is where it was read.
                let first = n_items;
                for p in &st[from..len] {
                    if matches!(p, Pending::Tuple(..)) || n_items == items.len() {
                        return None;
                    }
                    items[n_items] = *p;
                    n_items += 1;
                }
                len = from;
                Pending::Tuple(first, n_items)
            }
            b')' => Pending::Tuple(n_items, n_items),
            b'X' if inner.is_none() && len == 2 => {
                let start = pos;
                let n = u32le(data, &mut pos).ok()? as usize;
                let b = take(data, &mut pos, n).ok()?;
                match super::Method::known(b) {
                    Some(k) => Pending::Name(k),
                    None => {
                        std::str::from_utf8(b).ok()?;
                        Pending::Scalar(op, start)
                    }
                }
            }
            _ => {
                let start = pos;
                skip_scalar(op, data, &mut pos)?;
                Pending::Scalar(op, start)
            }
        };
        if len == FAST_STACK {
            return None;
        }
        st[len] = p;
        len += 1;
    }
}

/// A pending element's value (`items`: the scalars of tuples).
fn value(p: Pending, data: &[u8], items: &[Pending]) -> Option<Value> {
    Some(match p {
        Pending::Scalar(op, mut at) => scalar(op, data, &mut at).ok()??,
        Pending::Name(k) => Value::Str(k.to_owned()),
        Pending::Tuple(from, to) => {
            let mut v = Vec::with_capacity(to - from);
            for p in items.get(from..to)? {
                v.push(value(*p, data, &[])?);
            }
            Value::Tuple(v)
        }
    })
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
    let mut v = b;
    // Drop redundant sign bytes first, as a 9-byte encoding can still fit.
    while let [.., prev, last] = *v {
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            v = &v[..v.len() - 1];
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
    a[..v.len()].copy_from_slice(v);
    Some(i64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::super::Encoding;
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
    fn message_layout_is_recognised() {
        // loadBefore as ZEO's client pickles it: the parts come out without an outer tuple,
        // the name interned.
        let load = b"\x80\x03(C\x08\x00\x00\x00\x00\x00\x00\x00\x01C\x08\x7f\xff\xff\xff\xff\xff\xff\xff\x86\x89X\n\x00\x00\x00loadBeforeC\x08\x00\x00\x00\x00\x00\x00\x00\x01C\x08\x7f\xff\xff\xff\xff\xff\xff\xff\x86t.";
        let p = decode_message(load).unwrap();
        assert!(matches!(p.name, Name::Known("loadBefore")));
        assert_eq!(p.whole(), decode(load).unwrap());
        // Unknown names stay text; a name that is not third is plain data.
        let odd = b"\x80\x03(K\x01\x89X\x03\x00\x00\x00fooX\x04\x00\x00\x00votet.";
        let p = decode_message(odd).unwrap();
        assert!(matches!(&p.name, Name::Value(Value::Str(s)) if s == "foo"));
        assert_eq!(p.body, Value::Str("vote".into()));
        // An interned name used as data elsewhere (here: a 5-tuple) is ordinary text.
        let five = b"\x80\x03(K\x01\x89X\x04\x00\x00\x00vote)K\x00t.";
        assert!(decode_message(five).is_err());
        assert_eq!(
            decode(five).unwrap(),
            Value::Tuple(vec![
                Value::Int(1),
                Value::Bool(false),
                Value::Str("vote".into()),
                Value::Tuple(vec![]),
                Value::Int(0)
            ])
        );
        let listed = b"\x80\x03(K\x01\x89X\x04\x00\x00\x00vote)]K\x01at.";
        assert!(decode_message(listed).is_err());
    }

    /// decode_message accepts exactly the payloads whose value is a 4-element sequence, with
    /// the same elements.
    fn same_message(data: &[u8]) {
        let want = decode(data).and_then(Parts::of).map(Parts::whole);
        let got = decode_message(data).map(Parts::whole);
        match (got, want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{data:?}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("message decoding disagrees on {data:?}: {a:?} vs {b:?}"),
        }
    }

    /// The machine's reading of a message (without the fast path).
    fn by_machine(data: &[u8]) -> Result<Value, WireError> {
        match run(data, true)? {
            Step::Message(p) => Ok(p.whole()),
            Step::Done(v) => Parts::of(v).map(Parts::whole),
            Step::More => unreachable!(),
        }
    }

    fn scalar_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN", |f| !f.is_nan())
                .prop_map(Value::Float),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            "[a-z_]{0,12}".prop_map(Value::Str),
            proptest::sample::select(&["vote", "loadBefore"][..])
                .prop_map(|s| Value::Str(s.into())),
        ]
    }

    fn flat_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            scalar_value(),
            proptest::collection::vec(scalar_value(), 0..6).prop_map(Value::Tuple),
        ]
    }

    #[test]
    fn requests_take_the_fast_path() {
        let z = Value::Bytes(vec![0; 8]);
        let txn = Value::Int((1 << 47) + 5);
        for (id, oneway, method, args) in [
            (
                Value::Tuple(vec![z.clone(), z.clone()]),
                false,
                "loadBefore",
                vec![z.clone(), z.clone()],
            ),
            (
                Value::Int(0),
                true,
                "storea",
                vec![
                    z.clone(),
                    z.clone(),
                    Value::Bytes(vec![7; 300]),
                    txn.clone(),
                ],
            ),
            (Value::Int(7), false, "vote", vec![txn.clone()]),
            (Value::Int(8), false, "tpc_finish", vec![txn.clone()]),
            (Value::Int(9), false, "lastTransaction", vec![]),
            (Value::Int(-1), false, ".reply", vec![]),
        ] {
            let p =
                super::super::encode_request(Encoding::Pickle, &id, oneway, method, &args).unwrap();
            let fast = fast_message(&p).expect(method);
            assert!(matches!(fast.name, Name::Known(m) if m == method));
            assert_eq!(fast.whole(), by_machine(&p).unwrap());
        }
    }

    /// The `long1` before it stopped copying its bytes.
    fn long1_copying(b: &[u8]) -> Option<i64> {
        let mut v = b.to_vec();
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

    #[test]
    fn wide_flat_messages_stay_in_bounds() {
        for (id_len, n_args) in [(12, 0), (11, 9), (9, 9), (1, 12), (12, 12)] {
            let id = Value::Tuple((0..id_len).map(Value::Int).collect());
            let args: Vec<Value> = (0..n_args).map(Value::Int).collect();
            let p =
                super::super::encode_request(Encoding::Pickle, &id, false, "vote", &args).unwrap();
            if let Some(fast) = fast_message(&p) {
                assert_eq!(fast.whole(), by_machine(&p).unwrap());
            }
            assert_eq!(
                decode_message(&p).map(Parts::whole).unwrap(),
                by_machine(&p).unwrap()
            );
        }
    }

    proptest! {
        #[test]
        fn long1_as_before(b in proptest::collection::vec(
            proptest::sample::select(&[0u8, 1, 0x7f, 0x80, 0xfe, 0xff][..]), 0..12)) {
            prop_assert_eq!(long1(&b), long1_copying(&b));
        }

        #[test]
        fn the_fast_path_reads_as_the_machine(
            id in flat_value(),
            flag in scalar_value(),
            name in "[a-zA-Z_.]{0,16}",
            args in proptest::collection::vec(flat_value(), 0..8),
            cut in any::<usize>(),
        ) {
            let p = super::super::encode_request(Encoding::Pickle, &id, false, &name, &args).unwrap();
            // Replace the flag (encode_request writes a bool) by arbitrary scalar bytes.
            let mut flag_bytes = Vec::new();
            super::super::zpickle::write_scalar_for_tests(&mut flag_bytes, &flag);
            let at = 3 + {
                let mut m = Vec::new();
                super::super::zpickle::write_scalar_for_tests(&mut m, &id);
                m.len()
            };
            let mut q = p[..at].to_vec();
            q.extend_from_slice(&flag_bytes);
            q.extend_from_slice(&p[at + 1..]);
            for data in [&p[..], &q[..], &q[..cut % (q.len() + 1)]] {
                if let Some(fast) = fast_message(data) {
                    prop_assert_eq!(fast.whole(), by_machine(data).unwrap());
                }
                let a = decode_message(data).map(Parts::whole);
                let b = by_machine(data);
                match (a, b) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
                }
            }
            // Scalar arguments (and any flat msgid) always take it.
            let flat_args = args.iter().all(|a| !matches!(a, Value::Tuple(_)));
            let id_len = match &id { Value::Tuple(t) => t.len(), _ => 1 };
            if flat_args && args.len() + 3 <= FAST_STACK && id_len + 3 <= FAST_STACK {
                prop_assert!(fast_message(&p).is_some());
            }
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

    const TAILS: &[&[u8]] = &[b"t.", b"t", b"tt.", b"l.", b"."];

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
            same_message(&data);
            let mut with_proto = vec![0x80, 3];
            with_proto.extend_from_slice(&data);
            same(&with_proto);
            same_message(&with_proto);
        }

        #[test]
        fn messages_agree(body in soup(), name in proptest::sample::select(
            &["loadBefore", "vote", "storea", "nope", ".reply", ""][..]),
            tail in proptest::sample::select(TAILS)) {
            // A message's frame around arbitrary middle opcodes.
            let mut data = b"\x80\x03(K\x05\x89X".to_vec();
            data.extend_from_slice(&(name.len() as u32).to_le_bytes());
            data.extend_from_slice(name.as_bytes());
            data.extend_from_slice(&body);
            data.extend_from_slice(tail);
            same(&data);
            same_message(&data);
        }

        #[test]
        fn agrees_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            same(&data);
            same_message(&data);
        }
    }
}
