//! The pickle stack machine.
//!
//! Values under construction live in an arena and the stack, memo and containers hold arena
//! ids, because pickle mutates shared values: `EMPTY_LIST BINPUT 1 MARK … APPENDS` memoises
//! the list *before* filling it, and `BUILD` sets the state of an object that the memo may
//! already refer to. A [`Value`] tree is only materialised when a pickle ends (`STOP`), under
//! the node/byte budget of [`Limits`], with cycles cut as [`Value::Recursive`].

use std::collections::{HashMap, HashSet};

use super::{ErrorKind, PickleError, Value};

/// Bounds on what one decoder may build.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of the materialised tree.
    pub max_depth: usize,
    /// Most tree nodes materialised per pickle, in addition to 8 per input byte. Memo sharing
    /// lets a few bytes denote a huge tree; this is what stops it.
    pub extra_nodes: usize,
    /// Most bytes of string/bytes payload materialised per pickle, in addition to 4 times the
    /// input length.
    pub extra_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 200,
            extra_nodes: 1 << 16,
            extra_bytes: 1 << 20,
        }
    }
}

type Id = usize;

/// A string-like value still in the input buffer (copied only if it is materialised).
#[derive(Debug, Clone, Copy)]
enum SliceKind {
    Bytes,
    /// Already checked to be UTF-8.
    Str,
    String8,
    ByteArray,
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(Value),
    Slice(SliceKind, usize, usize),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    FrozenSet(Vec<Id>),
    Reduce(Id, Id),
    NewObj(Id, Id, Option<Id>),
    Inst(String, String, Vec<Id>),
    Obj(Id, Vec<Id>),
    Build(Id, Id),
    Appends(Id, Vec<Id>),
    SetItems(Id, Vec<(Id, Id)>),
    PersId(Id),
}

/// Which opcodes a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything of protocols 0–5 except out-of-band buffers.
    Full,
    /// ZEO messages (zeo-protocol.md §2.5): plain data opcodes only, plus the one global a
    /// client may legitimately send (`ZopeUndo.Prefix.Prefix`) and what instantiating it
    /// takes (`REDUCE`, or `EMPTY_TUPLE NEWOBJ` + `BUILD`).
    Message,
}

/// Decodes one or more consecutive pickles from a buffer, with one memo shared between them
/// (as ZODB's record pickles need, §9.6).
pub struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    limits: Limits,
    mode: Mode,
    nodes: Vec<Node>,
    memo: Memo,
    /// Persistent ids in order of appearance (for `referencesf`).
    pids: Vec<Id>,
    /// Whether `DUP` made a node appear twice (then leaves are copied, not moved).
    dup_used: bool,
    /// Nodes and string bytes that may still be materialised (set on first use).
    budget: Option<(usize, usize)>,
    /// The stack, kept between pickles only for its allocation.
    machine: Machine,
}

/// Allocations of a finished decoder, for a scan that decodes many small pickles in a row
/// (allocation is most of the cost of a record's reference scan).
#[derive(Default)]
pub(crate) struct Scratch {
    nodes: Vec<Node>,
    dense: Vec<Id>,
    pids: Vec<Id>,
    machine: Machine,
}

impl Scratch {
    /// Buffers grown by an unusually large pickle, better freed than kept around.
    pub(crate) fn is_large(&self) -> bool {
        self.nodes.capacity() > 1 << 16 || self.dense.capacity() > 1 << 16
    }
}

/// Decode the pickle at the start of `data` (bytes after its `STOP` are ignored, as Python's
/// `pickle.loads` does).
pub fn loads(data: &[u8]) -> Result<Value, PickleError> {
    Unpickler::new(data).load()
}

const OP_NAMES: &[(u8, &str)] = &[
    (b'(', "MARK"),
    (b'.', "STOP"),
    (b'0', "POP"),
    (b'1', "POP_MARK"),
    (b'2', "DUP"),
    (b'F', "FLOAT"),
    (b'I', "INT"),
    (b'J', "BININT"),
    (b'K', "BININT1"),
    (b'L', "LONG"),
    (b'M', "BININT2"),
    (b'N', "NONE"),
    (b'P', "PERSID"),
    (b'Q', "BINPERSID"),
    (b'R', "REDUCE"),
    (b'S', "STRING"),
    (b'T', "BINSTRING"),
    (b'U', "SHORT_BINSTRING"),
    (b'V', "UNICODE"),
    (b'X', "BINUNICODE"),
    (b'a', "APPEND"),
    (b'b', "BUILD"),
    (b'c', "GLOBAL"),
    (b'd', "DICT"),
    (b'}', "EMPTY_DICT"),
    (b'e', "APPENDS"),
    (b'g', "GET"),
    (b'h', "BINGET"),
    (b'i', "INST"),
    (b'j', "LONG_BINGET"),
    (b'l', "LIST"),
    (b']', "EMPTY_LIST"),
    (b'o', "OBJ"),
    (b'p', "PUT"),
    (b'q', "BINPUT"),
    (b'r', "LONG_BINPUT"),
    (b's', "SETITEM"),
    (b't', "TUPLE"),
    (b')', "EMPTY_TUPLE"),
    (b'u', "SETITEMS"),
    (b'G', "BINFLOAT"),
    (b'B', "BINBYTES"),
    (b'C', "SHORT_BINBYTES"),
    (0x80, "PROTO"),
    (0x81, "NEWOBJ"),
    (0x82, "EXT1"),
    (0x83, "EXT2"),
    (0x84, "EXT4"),
    (0x85, "TUPLE1"),
    (0x86, "TUPLE2"),
    (0x87, "TUPLE3"),
    (0x88, "NEWTRUE"),
    (0x89, "NEWFALSE"),
    (0x8a, "LONG1"),
    (0x8b, "LONG4"),
    (0x8c, "SHORT_BINUNICODE"),
    (0x8d, "BINUNICODE8"),
    (0x8e, "BINBYTES8"),
    (0x8f, "EMPTY_SET"),
    (0x90, "ADDITEMS"),
    (0x91, "FROZENSET"),
    (0x92, "NEWOBJ_EX"),
    (0x93, "STACK_GLOBAL"),
    (0x94, "MEMOIZE"),
    (0x95, "FRAME"),
    (0x96, "BYTEARRAY8"),
    (0x97, "NEXT_BUFFER"),
    (0x98, "READONLY_BUFFER"),
];

fn op_name(op: u8) -> &'static str {
    opcode_name(op).unwrap_or("?")
}

/// The name of a pickle opcode (`None` for a byte that is no opcode).
pub fn opcode_name(op: u8) -> Option<&'static str> {
    OP_NAMES.iter().find(|(b, _)| *b == op).map(|(_, n)| *n)
}

/// Opcodes of zeo-protocol.md §2.5 (what a fast protocol-3 pickler writes for plain data).
fn message_opcode(op: u8) -> bool {
    matches!(
        op,
        0x80 | b'('
            | b't'
            | 0x85
            | 0x86
            | 0x87
            | b')'
            | b']'
            | b'a'
            | b'e'
            | b'}'
            | b's'
            | b'u'
            | b'K'
            | b'M'
            | b'J'
            | 0x8a
            | b'G'
            | b'N'
            | 0x88
            | 0x89
            | b'C'
            | b'B'
            | b'X'
            | b'.'
            // The Prefix instance: GLOBAL, then REDUCE or NEWOBJ + BUILD; checked further below.
            | b'c'
            | b'R'
            | 0x81
            | b'b'
    )
}

/// The global a ZEO client may send as an inert marker (Zope's undoInfo specification).
pub(crate) const MESSAGE_GLOBAL: (&str, &str) = ("ZopeUndo.Prefix", "Prefix");

/// Builtin container types a client may call in a message: a dict subclass whose
/// `__reduce__` returns `(dict, (items,))` arrives as `REDUCE(builtins.dict, ...)`, which the
/// reference server accepts. Their only effect is building plain data, so interpreting them
/// executes nothing.
pub(crate) const MESSAGE_CONSTRUCTORS: [(&str, &str); 6] = [
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("__builtin__", "dict"),
    ("__builtin__", "list"),
    ("__builtin__", "tuple"),
];

/// Whether a message may name this global.
pub(crate) fn message_global_allowed(module: &str, name: &str) -> bool {
    (module, name) == MESSAGE_GLOBAL || MESSAGE_CONSTRUCTORS.contains(&(module, name))
}

impl<'a> Unpickler<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            limits: Limits::default(),
            mode: Mode::Full,
            nodes: Vec::new(),
            memo: Memo::default(),
            pids: Vec::new(),
            dup_used: false,
            budget: None,
            machine: Machine::default(),
        }
    }

    /// A decoder reusing the buffers of an earlier one (see [`Scratch`]).
    pub(crate) fn with_scratch(data: &'a [u8], scratch: Scratch) -> Self {
        let mut u = Unpickler::new(data);
        let Scratch {
            mut nodes,
            mut dense,
            mut pids,
            mut machine,
        } = scratch;
        nodes.clear();
        dense.clear();
        pids.clear();
        machine.stack.clear();
        machine.marks.clear();
        u.nodes = nodes;
        u.memo.dense = dense;
        u.pids = pids;
        u.machine = machine;
        u
    }

    /// Give the buffers back for the next decoder (not worth keeping when [`Scratch::is_large`]).
    pub(crate) fn into_scratch(self) -> Scratch {
        Scratch {
            nodes: self.nodes,
            dense: self.memo.dense,
            pids: self.pids,
            machine: self.machine,
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Accept only what a ZEO message may contain (§2.5); anything else is
    /// [`ErrorKind::Forbidden`] / [`ErrorKind::ForbiddenGlobal`].
    pub fn restrict_to_messages(mut self) -> Self {
        self.mode = Mode::Message;
        self
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether the whole buffer has been consumed.
    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Decode the next pickle (up to and including its `STOP`), keeping the memo.
    pub fn load(&mut self) -> Result<Value, PickleError> {
        let top = self.run()?;
        // Without memo or DUP every node has exactly one parent, so leaves can be moved out
        // instead of copied (a fast pickler's output: ZEO messages, Data.fs.index).
        let moving = self.memo.is_empty() && !self.dup_used;
        self.materialize_root(top, moving)
    }

    /// Decode the next pickle and return the persistent ids it contained, in order, without
    /// materialising the whole value (what `referencesf` needs).
    pub(crate) fn load_pids(&mut self) -> Result<Vec<Value>, PickleError> {
        self.run()?;
        let pids = std::mem::take(&mut self.pids);
        let pos = self.pos;
        let mut m = self.materializer(false);
        pids.into_iter()
            .map(|id| {
                m.go(id, 0)
                    .map_err(|kind| PickleError { offset: pos, kind })
            })
            .collect()
    }

    fn materializer(&mut self, moving: bool) -> Materializer<'_> {
        let len = self.data.len();
        // One budget for the decoder's whole life: a stream of tiny pickles that each fetch
        // a huge memoised value must not multiply it.
        let budget = self.budget.get_or_insert((
            self.limits
                .extra_nodes
                .saturating_add(len.saturating_mul(8)),
            self.limits
                .extra_bytes
                .saturating_add(len.saturating_mul(4)),
        ));
        Materializer {
            data: self.data,
            in_progress: HashSet::new(),
            nodes: &mut self.nodes,
            max_depth: self.limits.max_depth,
            moving,
            nodes_left: &mut budget.0,
            bytes_left: &mut budget.1,
        }
    }

    fn materialize_root(&mut self, id: Id, moving: bool) -> Result<Value, PickleError> {
        let pos = self.pos;
        self.materializer(moving)
            .go(id, 0)
            .map_err(|kind| PickleError { offset: pos, kind })
    }

    /// Interpret opcodes up to `STOP`; returns the id of the pickled value.
    fn run(&mut self) -> Result<Id, PickleError> {
        if self.memo.is_empty() {
            // Nothing can refer to earlier pickles' values: start a fresh arena, so that a
            // long stream of pickles (Data.fs.index) does not accumulate them.
            self.nodes.clear();
        }
        self.pids.clear();
        let mut m = std::mem::take(&mut self.machine);
        m.stack.clear();
        m.marks.clear();
        let result = self.run_with(&mut m);
        self.machine = m;
        result
    }

    fn run_with(&mut self, m: &mut Machine) -> Result<Id, PickleError> {
        if self.at_end() {
            return Err(PickleError {
                offset: self.pos,
                kind: ErrorKind::Truncated,
            });
        }
        loop {
            let start = self.pos;
            let op = self.byte().map_err(|kind| PickleError {
                offset: start,
                kind,
            })?;
            match self.step(op, m) {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(kind) => {
                    return Err(PickleError {
                        offset: start,
                        kind,
                    });
                }
            }
        }
    }

    // ---- input ------------------------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        let end = self.pos.checked_add(n).ok_or(ErrorKind::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(ErrorKind::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, ErrorKind> {
        Ok(self.take(1)?[0])
    }

    fn u16le(&mut self) -> Result<u16, ErrorKind> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32le(&mut self) -> Result<u32, ErrorKind> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64le(&mut self) -> Result<u64, ErrorKind> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length field checked against what is left, so nothing is sized from it blindly.
    fn len_checked(&self, n: u64) -> Result<usize, ErrorKind> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(ErrorKind::Truncated);
        }
        Ok(n as usize)
    }

    /// A text-opcode argument: everything up to the next `\n` (excluded).
    fn line(&mut self) -> Result<&'a [u8], ErrorKind> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(ErrorKind::Truncated)?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn utf8_line(&mut self) -> Result<String, ErrorKind> {
        let l = self.line()?;
        String::from_utf8(l.to_vec()).map_err(|_| ErrorKind::Malformed("name is not UTF-8".into()))
    }

    // ---- arena ----------------------------------------------------------------------

    fn push_node(&mut self, m: &mut Machine, node: Node) {
        let id = self.nodes.len();
        self.nodes.push(node);
        m.stack.push(id);
    }

    fn leaf(&mut self, m: &mut Machine, v: Value) {
        self.push_node(m, Node::Leaf(v));
    }

    /// The next `n` input bytes as a string-like value, left in place.
    fn slice(&mut self, m: &mut Machine, kind: SliceKind, n: usize) -> Result<(), ErrorKind> {
        let start = self.pos;
        self.take(n)?;
        self.push_node(m, Node::Slice(kind, start, start + n));
        Ok(())
    }

    fn memo_get(&self, key: u64) -> Result<Id, ErrorKind> {
        self.memo
            .get(key)
            .ok_or_else(|| ErrorKind::Malformed(format!("memo key {key} was never stored")))
    }

    fn text_of(&self, id: Id) -> Option<String> {
        match &self.nodes[id] {
            Node::Leaf(v) => v.as_text().map(str::to_owned),
            Node::Slice(SliceKind::Str | SliceKind::String8, a, b) => {
                let t = std::str::from_utf8(&self.data[*a..*b]).ok()?;
                (t.is_ascii() || matches!(self.nodes[id], Node::Slice(SliceKind::Str, ..)))
                    .then(|| t.to_owned())
            }
            _ => None,
        }
    }

    fn check_global(&self, module: &str, name: &str) -> Result<(), ErrorKind> {
        if self.mode == Mode::Message && !message_global_allowed(module, name) {
            return Err(ErrorKind::ForbiddenGlobal(format!("{module}.{name}")));
        }
        Ok(())
    }

    /// In message mode, calls and `BUILD` may only instantiate the allowed global.
    fn check_instantiable(&self, cls: Id) -> Result<(), ErrorKind> {
        if self.mode == Mode::Message {
            let ok = matches!(&self.nodes[cls], Node::Leaf(Value::Global { module, name })
                if message_global_allowed(module, name));
            if !ok {
                return Err(ErrorKind::Forbidden("REDUCE/NEWOBJ of a non-global"));
            }
        }
        Ok(())
    }

    // ---- the machine ------------------------------------------------------------------

    /// Interpret one opcode; `Some(id)` at `STOP`.
    fn step(&mut self, op: u8, m: &mut Machine) -> Result<Option<Id>, ErrorKind> {
        if self.mode == Mode::Message && !message_opcode(op) {
            return Err(match op_name(op) {
                "?" => ErrorKind::UnknownOpcode(op),
                name => ErrorKind::Forbidden(name),
            });
        }
        match op {
            b'.' => return m.pop().map(Some),
            0x80 => {
                let p = self.byte()?;
                if p > 5 {
                    return Err(ErrorKind::UnsupportedProtocol(p));
                }
            }
            0x95 => {
                // FRAME: only a read-ahead hint; the data follows inline.
                self.u64le()?;
            }
            b'(' => m.marks.push(m.stack.len()),
            b'0' => {
                if m.stack.len() > m.floor() {
                    m.stack.pop();
                } else if m.marks.pop().is_none() {
                    return Err(underflow());
                }
            }
            b'1' => {
                let items = m.pop_mark()?;
                drop(items);
            }
            b'2' => {
                self.dup_used = true;
                let top = m.top()?;
                m.stack.push(top);
            }
            b'N' => self.leaf(m, Value::None),
            0x88 => self.leaf(m, Value::Bool(true)),
            0x89 => self.leaf(m, Value::Bool(false)),
            b'I' => {
                let l = self.line()?;
                let v = match l {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => parse_decimal(l)?,
                };
                self.leaf(m, v);
            }
            b'L' => {
                let l = self.line()?;
                let l = l.strip_suffix(b"L").unwrap_or(l);
                let v = parse_decimal(l)?;
                self.leaf(m, v);
            }
            b'J' => {
                let v = self.u32le()? as i32;
                self.leaf(m, Value::Int(v.into()));
            }
            b'K' => {
                let v = self.byte()?;
                self.leaf(m, Value::Int(v.into()));
            }
            b'M' => {
                let v = self.u16le()?;
                self.leaf(m, Value::Int(v.into()));
            }
            0x8a => {
                let n = self.byte()? as usize;
                let b = self.take(n)?;
                self.leaf(m, int_from_le(b));
            }
            0x8b => {
                let n = self.u32le()? as i32;
                if n < 0 {
                    return Err(ErrorKind::Malformed("negative LONG4 length".into()));
                }
                let n = self.len_checked(n as u64)?;
                let b = self.take(n)?;
                self.leaf(m, int_from_le(b));
            }
            b'F' => {
                let l = self.line()?;
                let v = std::str::from_utf8(l)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or_else(|| ErrorKind::Malformed("bad FLOAT".into()))?;
                self.leaf(m, Value::Float(v));
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.leaf(m, Value::Float(f64::from_be_bytes(a)));
            }
            b'S' => {
                let l = self.line()?;
                let l = l.trim_ascii_end();
                let inner = match l {
                    [q, inner @ .., q2] if q == q2 && (*q == b'"' || *q == b'\'') => inner,
                    _ => {
                        return Err(ErrorKind::Malformed("STRING argument is not quoted".into()));
                    }
                };
                let v = escape_decode(inner)?;
                self.leaf(m, Value::String8(v));
            }
            b'T' => {
                let n = self.u32le()? as i32;
                if n < 0 {
                    return Err(ErrorKind::Malformed("negative BINSTRING length".into()));
                }
                let n = self.len_checked(n as u64)?;
                self.slice(m, SliceKind::String8, n)?;
            }
            b'U' => {
                let n = self.byte()? as usize;
                self.slice(m, SliceKind::String8, n)?;
            }
            b'V' => {
                let l = self.line()?;
                let s = raw_unicode_escape_decode(l)?;
                self.leaf(m, Value::Str(s));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32le()? as u64,
                    0x8c => self.byte()? as u64,
                    _ => self.u64le()?,
                };
                let n = self.len_checked(n)?;
                let b = self.take(n)?;
                if std::str::from_utf8(b).is_err() {
                    return Err(ErrorKind::Malformed("string is not valid UTF-8".into()));
                }
                self.pos -= n;
                self.slice(m, SliceKind::Str, n)?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32le()? as u64,
                    b'C' => self.byte()? as u64,
                    _ => self.u64le()?,
                };
                let n = self.len_checked(n)?;
                let kind = if op == 0x96 {
                    SliceKind::ByteArray
                } else {
                    SliceKind::Bytes
                };
                self.slice(m, kind, n)?;
            }
            b')' => self.push_node(m, Node::Tuple(Vec::new())),
            b't' => {
                let items = m.pop_mark()?;
                self.push_node(m, Node::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let items = m.pop_n(n)?;
                self.push_node(m, Node::Tuple(items));
            }
            b']' => self.push_node(m, Node::List(Vec::new())),
            b'l' => {
                let items = m.pop_mark()?;
                self.push_node(m, Node::List(items));
            }
            b'}' => self.push_node(m, Node::Dict(Vec::new())),
            b'd' => {
                let items = m.pop_mark()?;
                let pairs = pairs_of(items)?;
                self.push_node(m, Node::Dict(pairs));
            }
            0x8f => self.push_node(m, Node::Set(Vec::new())),
            0x91 => {
                let items = m.pop_mark()?;
                self.push_node(m, Node::FrozenSet(items));
            }
            b'a' => {
                let x = m.pop()?;
                let target = m.top()?;
                self.append(target, vec![x]);
            }
            b'e' => {
                let items = m.pop_mark()?;
                let target = m.top()?;
                self.append(target, items);
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                let target = m.top()?;
                self.set_items(target, vec![(k, v)]);
            }
            b'u' => {
                let items = m.pop_mark()?;
                let pairs = pairs_of(items)?;
                let target = m.top()?;
                self.set_items(target, pairs);
            }
            0x90 => {
                let items = m.pop_mark()?;
                let target = m.top()?;
                match &mut self.nodes[target] {
                    Node::Set(s) => s.extend(items),
                    _ => {
                        let inner = self.detach(target);
                        self.nodes[target] = Node::Appends(inner, items);
                    }
                }
            }
            b'c' => {
                let module = self.utf8_line()?;
                let name = self.utf8_line()?;
                self.check_global(&module, &name)?;
                self.leaf(m, Value::Global { module, name });
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let (Some(module), Some(name)) = (self.text_of(module), self.text_of(name)) else {
                    return Err(ErrorKind::Malformed(
                        "STACK_GLOBAL needs two strings".into(),
                    ));
                };
                self.check_global(&module, &name)?;
                self.leaf(m, Value::Global { module, name });
            }
            b'R' => {
                let args = m.pop()?;
                let callable = m.pop()?;
                self.check_instantiable(callable)?;
                self.push_node(m, Node::Reduce(callable, args));
            }
            0x81 => {
                let args = m.pop()?;
                let cls = m.pop()?;
                self.check_instantiable(cls)?;
                self.push_node(m, Node::NewObj(cls, args, None));
            }
            0x92 => {
                let kwargs = m.pop()?;
                let args = m.pop()?;
                let cls = m.pop()?;
                self.push_node(m, Node::NewObj(cls, args, Some(kwargs)));
            }
            b'i' => {
                let module = self.utf8_line()?;
                let name = self.utf8_line()?;
                let args = m.pop_mark()?;
                self.push_node(m, Node::Inst(module, name, args));
            }
            b'o' => {
                let mut items = m.pop_mark()?.into_iter();
                let cls = items
                    .next()
                    .ok_or_else(|| ErrorKind::Malformed("OBJ without a class".into()))?;
                self.push_node(m, Node::Obj(cls, items.collect()));
            }
            b'b' => {
                let state = m.pop()?;
                let target = m.top()?;
                if self.mode == Mode::Message {
                    let ok = matches!(&self.nodes[target], Node::NewObj(c, _, None)
                        if self.check_instantiable(*c).is_ok());
                    if !ok {
                        return Err(ErrorKind::Forbidden("BUILD"));
                    }
                }
                // In place, so that memo references to the object see its state.
                let inner = self.detach(target);
                self.nodes[target] = Node::Build(inner, state);
            }
            0x82 => {
                let code = self.byte()?;
                self.leaf(m, Value::Extension(code.into()));
            }
            0x83 => {
                let code = self.u16le()?;
                self.leaf(m, Value::Extension(code.into()));
            }
            0x84 => {
                let code = self.u32le()?;
                self.leaf(m, Value::Extension(code));
            }
            b'P' => {
                let l = self.line()?;
                let pid = self.nodes.len();
                self.nodes.push(Node::Leaf(Value::String8(l.to_vec())));
                self.pids.push(pid);
                self.push_node(m, Node::PersId(pid));
            }
            b'Q' => {
                let pid = m.pop()?;
                self.pids.push(pid);
                self.push_node(m, Node::PersId(pid));
            }
            b'p' => {
                let key = parse_memo_key(self.line()?)?;
                let top = m.top()?;
                self.memo.insert(key, top, self.data.len());
            }
            b'q' => {
                let key = self.byte()?.into();
                let top = m.top()?;
                self.memo.insert(key, top, self.data.len());
            }
            b'r' => {
                let key = self.u32le()?.into();
                let top = m.top()?;
                self.memo.insert(key, top, self.data.len());
            }
            0x94 => {
                let key = self.memo.len() as u64;
                let top = m.top()?;
                self.memo.insert(key, top, self.data.len());
            }
            b'g' => {
                let key = parse_memo_key(self.line()?)?;
                let id = self.memo_get(key)?;
                m.stack.push(id);
            }
            b'h' => {
                let key = self.byte()?.into();
                let id = self.memo_get(key)?;
                m.stack.push(id);
            }
            b'j' => {
                let key = self.u32le()?.into();
                let id = self.memo_get(key)?;
                m.stack.push(id);
            }
            0x97 | 0x98 => return Err(ErrorKind::Forbidden(op_name(op))),
            _ => return Err(ErrorKind::UnknownOpcode(op)),
        }
        Ok(None)
    }

    /// Move a node's content to a fresh id, so the old id can become a wrapper of it.
    fn detach(&mut self, id: Id) -> Id {
        let inner = self.nodes.len();
        let node = std::mem::replace(&mut self.nodes[id], Node::Leaf(Value::None));
        self.nodes.push(node);
        inner
    }

    fn append(&mut self, target: Id, items: Vec<Id>) {
        match &mut self.nodes[target] {
            Node::List(l) => l.extend(items),
            Node::Appends(_, l) => l.extend(items),
            _ => {
                let inner = self.detach(target);
                self.nodes[target] = Node::Appends(inner, items);
            }
        }
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>) {
        match &mut self.nodes[target] {
            Node::Dict(d) => d.extend(pairs),
            Node::SetItems(_, d) => d.extend(pairs),
            _ => {
                let inner = self.detach(target);
                self.nodes[target] = Node::SetItems(inner, pairs);
            }
        }
    }
}

/// Turns arena nodes into a [`Value`] tree, under the node/byte budget.
struct Materializer<'n> {
    data: &'n [u8],
    nodes: &'n mut Vec<Node>,
    /// Containers being expanded (to cut cycles); a set, so that each load costs what its
    /// own tree costs, not the size of the whole arena.
    in_progress: HashSet<Id>,
    max_depth: usize,
    moving: bool,
    nodes_left: &'n mut usize,
    bytes_left: &'n mut usize,
}

impl Materializer<'_> {
    fn take_bytes(&mut self, len: usize) -> Result<(), ErrorKind> {
        if len > *self.bytes_left {
            return Err(ErrorKind::TooLarge("too much string data".into()));
        }
        *self.bytes_left -= len;
        Ok(())
    }

    fn go(&mut self, id: Id, depth: usize) -> Result<Value, ErrorKind> {
        if depth > self.max_depth {
            return Err(ErrorKind::TooLarge(format!(
                "nesting deeper than {}",
                self.max_depth
            )));
        }
        if *self.nodes_left == 0 {
            return Err(ErrorKind::TooLarge("too many values".into()));
        }
        *self.nodes_left -= 1;
        if let Node::Slice(kind, a, b) = self.nodes[id] {
            self.take_bytes(b - a)?;
            let raw = self.data[a..b].to_vec();
            return Ok(match kind {
                SliceKind::Bytes => Value::Bytes(raw),
                SliceKind::String8 => Value::String8(raw),
                SliceKind::ByteArray => Value::ByteArray(raw),
                SliceKind::Str => match String::from_utf8(raw) {
                    Ok(s) => Value::Str(s),
                    // Checked when the opcode was read.
                    Err(e) => Value::Bytes(e.into_bytes()),
                },
            });
        }
        if let Node::Leaf(v) = &mut self.nodes[id] {
            let len = match &*v {
                Value::Bytes(x) | Value::String8(x) | Value::ByteArray(x) | Value::BigInt(x) => {
                    x.len()
                }
                Value::Str(s) => s.len(),
                _ => 0,
            };
            if len > *self.bytes_left {
                return Err(ErrorKind::TooLarge("too much string data".into()));
            }
            *self.bytes_left -= len;
            return Ok(if self.moving {
                std::mem::replace(v, Value::None)
            } else {
                v.clone()
            });
        }
        // Without memo or DUP (`moving`) nothing is shared, so there can be no cycle.
        if !self.moving && !self.in_progress.insert(id) {
            return Ok(Value::Recursive);
        }
        let d = depth + 1;
        // Only ids are copied here; the leaves they lead to are moved or cloned above.
        let node = self.nodes[id].clone();
        let v = match node {
            Node::Leaf(_) | Node::Slice(..) => unreachable!("handled above"),
            Node::Tuple(items) => Value::Tuple(self.many(&items, d)?),
            Node::List(items) => Value::List(self.many(&items, d)?),
            Node::Set(items) => Value::Set(self.many(&items, d)?),
            Node::FrozenSet(items) => Value::FrozenSet(self.many(&items, d)?),
            Node::Dict(pairs) => Value::Dict(self.pairs(&pairs, d)?),
            Node::Reduce(c, a) => Value::Reduce {
                callable: self.boxed(c, d)?,
                args: self.boxed(a, d)?,
            },
            Node::NewObj(c, a, k) => Value::NewObj {
                cls: self.boxed(c, d)?,
                args: self.boxed(a, d)?,
                kwargs: match k {
                    Some(k) => Some(self.boxed(k, d)?),
                    None => None,
                },
            },
            Node::Inst(module, name, args) => Value::Inst {
                module,
                name,
                args: self.many(&args, d)?,
            },
            Node::Obj(c, args) => Value::Obj {
                cls: self.boxed(c, d)?,
                args: self.many(&args, d)?,
            },
            Node::Build(o, s) => Value::Build {
                obj: self.boxed(o, d)?,
                state: self.boxed(s, d)?,
            },
            Node::Appends(o, items) => Value::Appends {
                obj: self.boxed(o, d)?,
                items: self.many(&items, d)?,
            },
            Node::SetItems(o, pairs) => Value::SetItems {
                obj: self.boxed(o, d)?,
                items: self.pairs(&pairs, d)?,
            },
            Node::PersId(p) => Value::PersistentId(self.boxed(p, d)?),
        };
        if !self.moving {
            self.in_progress.remove(&id);
        }
        Ok(v)
    }

    fn boxed(&mut self, id: Id, depth: usize) -> Result<Box<Value>, ErrorKind> {
        self.go(id, depth).map(Box::new)
    }

    fn many(&mut self, ids: &[Id], depth: usize) -> Result<Vec<Value>, ErrorKind> {
        ids.iter().map(|&i| self.go(i, depth)).collect()
    }

    fn pairs(&mut self, ids: &[(Id, Id)], depth: usize) -> Result<Vec<(Value, Value)>, ErrorKind> {
        ids.iter()
            .map(|&(k, v)| Ok((self.go(k, depth)?, self.go(v, depth)?)))
            .collect()
    }
}

/// The memo: a vector for the small dense keys picklers use, a map for anything else (so a
/// `LONG_BINPUT 0xffffffff` costs one entry, not four billion).
#[derive(Default)]
struct Memo {
    dense: Vec<Id>,
    sparse: HashMap<u64, Id>,
    count: usize,
}

const NO_ID: Id = Id::MAX;

impl Memo {
    /// `limit`: keys below it go to the vector (the input length bounds legitimate keys).
    fn insert(&mut self, key: u64, id: Id, limit: usize) {
        if key < limit as u64 {
            let k = key as usize;
            if k >= self.dense.len() {
                self.dense.resize(k + 1, NO_ID);
            }
            if self.dense[k] == NO_ID {
                self.count += 1;
            }
            self.dense[k] = id;
        } else if self.sparse.insert(key, id).is_none() {
            self.count += 1;
        }
    }

    fn get(&self, key: u64) -> Option<Id> {
        let dense = usize::try_from(key).ok().and_then(|k| self.dense.get(k));
        match dense {
            Some(&id) if id != NO_ID => Some(id),
            _ => self.sparse.get(&key).copied(),
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The stack with Python 3's mark semantics: after a `MARK`, only values pushed since are
/// visible to popping opcodes.
#[derive(Default)]
struct Machine {
    stack: Vec<Id>,
    marks: Vec<usize>,
}

fn underflow() -> ErrorKind {
    ErrorKind::Malformed("stack underflow".into())
}

impl Machine {
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, ErrorKind> {
        if self.stack.len() <= self.floor() {
            return Err(underflow());
        }
        self.stack.pop().ok_or_else(underflow)
    }

    fn top(&self) -> Result<Id, ErrorKind> {
        if self.stack.len() <= self.floor() {
            return Err(underflow());
        }
        self.stack.last().copied().ok_or_else(underflow)
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Id>, ErrorKind> {
        if self.stack.len() < self.floor() + n {
            return Err(underflow());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, ErrorKind> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| ErrorKind::Malformed("no MARK on the stack".into()))?;
        Ok(self.stack.split_off(mark))
    }
}

fn pairs_of(items: Vec<Id>) -> Result<Vec<(Id, Id)>, ErrorKind> {
    if items.len() % 2 != 0 {
        return Err(ErrorKind::Malformed(
            "odd number of items for a dict".into(),
        ));
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

fn parse_memo_key(l: &[u8]) -> Result<u64, ErrorKind> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| ErrorKind::Malformed("bad memo key".into()))
}

/// An integer from little-endian two's complement bytes (LONG1/LONG4).
fn int_from_le(b: &[u8]) -> Value {
    if b.len() <= 8 {
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    let v = normalize_le(b.to_vec());
    if v.len() <= 8 {
        return int_from_le(&v);
    }
    Value::BigInt(v)
}

/// Drop redundant sign-extension bytes.
pub(crate) fn normalize_le(mut v: Vec<u8>) -> Vec<u8> {
    while v.len() > 1 {
        let last = v[v.len() - 1];
        let prev = v[v.len() - 2];
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            v.pop();
        } else {
            break;
        }
    }
    v
}

/// A decimal integer of any size (INT, LONG).
fn parse_decimal(l: &[u8]) -> Result<Value, ErrorKind> {
    let s = std::str::from_utf8(l)
        .map_err(|_| ErrorKind::Malformed("bad integer".into()))?
        .trim();
    if let Ok(v) = s.parse::<i64>() {
        return Ok(Value::Int(v));
    }
    let (neg, digits) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ErrorKind::Malformed(format!("bad integer {s:?}")));
    }
    // Magnitude as little-endian base-256, by repeated multiply-add.
    let mut mag: Vec<u8> = vec![0];
    for &d in digits {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let x = u32::from(*byte) * 10 + carry;
            *byte = x as u8;
            carry = x >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    mag.push(0); // room for the sign bit
    if neg {
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let x = u16::from(!*byte) + carry;
            *byte = x as u8;
            carry = x >> 8;
        }
    }
    Ok(int_from_le(&normalize_le(mag)))
}

/// Python's `codecs.escape_decode`, for protocol-0 `STRING` arguments.
fn escape_decode(s: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            return Err(ErrorKind::Malformed("trailing backslash in STRING".into()));
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let h = s
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ErrorKind::Malformed("bad \\x escape in STRING".into()))?;
                i += 2;
                out.push(h);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Python's `raw-unicode-escape` decoding, for protocol-0 `UNICODE` arguments.
fn raw_unicode_escape_decode(s: &[u8]) -> Result<String, ErrorKind> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        // Only an odd run of backslashes before u/U starts an escape.
        if c == b'\\' && matches!(s.get(i + 1), Some(b'u' | b'U')) {
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            let hex = s
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| ErrorKind::Malformed("bad \\u escape in UNICODE".into()))?;
            let ch = char::from_u32(hex)
                .ok_or_else(|| ErrorKind::Malformed("UNICODE escape is not a character".into()))?;
            out.push(ch);
            i += 2 + n;
        } else if c == b'\\' && s.get(i + 1) == Some(&b'\\') {
            out.push_str("\\\\");
            i += 2;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_kind(data: &[u8]) -> ErrorKind {
        loads(data).unwrap_err().kind
    }

    #[test]
    fn scalars() {
        assert_eq!(loads(b"\x80\x03N.").unwrap(), Value::None);
        assert_eq!(loads(b"\x80\x03K\x05.").unwrap(), Value::Int(5));
        assert_eq!(loads(b"\x80\x03M\xbe\x01.").unwrap(), Value::Int(446));
        assert_eq!(
            loads(b"\x80\x03J\xff\xff\xff\xff.").unwrap(),
            Value::Int(-1)
        );
        assert_eq!(
            loads(b"\x80\x03\x8a\x05\x00\x00\x00\x80\x00.").unwrap(),
            Value::Int(1 << 31)
        );
        assert_eq!(
            loads(b"\x80\x03\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").unwrap(),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
        );
        assert_eq!(loads(b"I01\n.").unwrap(), Value::Bool(true));
        assert_eq!(loads(b"I-7\n.").unwrap(), Value::Int(-7));
        assert_eq!(
            loads(b"L9223372036854775808L\n.").unwrap(),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
        );
        assert_eq!(
            loads(b"L-9223372036854775809L\n.").unwrap(),
            Value::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
        );
        assert_eq!(
            loads(b"S'a\\x00\\'b'\n.").unwrap(),
            Value::String8(b"a\0'b".to_vec())
        );
        assert_eq!(
            loads(b"Vcaf\\u00e9\n.").unwrap(),
            Value::Str("caf\u{e9}".into())
        );
        assert_eq!(loads(b"F1.5\n.").unwrap(), Value::Float(1.5));
    }

    #[test]
    fn memo_sees_later_appends_and_build() {
        // EMPTY_LIST BINPUT 0, MARK K1 K2 APPENDS, POP, BINGET 0, STOP
        let v = loads(b"\x80\x03]q\x00(K\x01K\x02e0h\x00.").unwrap();
        assert_eq!(v, Value::List(vec![Value::Int(1), Value::Int(2)]));
    }

    #[test]
    fn self_reference_is_cut() {
        // l = []; l.append(l)
        let v = loads(b"\x80\x03]q\x00h\x00a.").unwrap();
        assert_eq!(v, Value::List(vec![Value::Recursive]));
        // The same through DUP, without a memo.
        let v = loads(b"\x80\x03]2a.").unwrap();
        assert_eq!(v, Value::List(vec![Value::Recursive]));
        // A shared leaf without a memo keeps its value in both places.
        let v = loads(b"\x80\x03C\x01x2\x86.").unwrap();
        assert_eq!(v, Value::Tuple(vec![Value::Bytes(b"x".to_vec()); 2]));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut p = b"\x80\x03C\x10aaaaaaaaaaaaaaaaq\x00".to_vec();
        for i in 0..40u8 {
            p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        p.push(b'.');
        assert!(matches!(err_kind(&p), ErrorKind::TooLarge(_)));
    }

    #[test]
    fn malformed_input_reports_offsets() {
        assert_eq!(loads(b"\x80\x03X\xff\xff\xff\x7f").unwrap_err().offset, 2);
        assert_eq!(
            loads(b"\x80\x03h\x05.").unwrap_err().kind,
            ErrorKind::Malformed("memo key 5 was never stored".into())
        );
        assert_eq!(loads(b"\x80\x03t.").unwrap_err().offset, 2);
        assert_eq!(err_kind(b"\x80\x06N."), ErrorKind::UnsupportedProtocol(6));
        assert_eq!(err_kind(b"\xffN."), ErrorKind::UnknownOpcode(0xff));
        assert_eq!(err_kind(b""), ErrorKind::Truncated);
    }

    #[test]
    fn message_mode_refuses_globals_and_memo() {
        let restricted = |d: &[u8]| Unpickler::new(d).restrict_to_messages().load();
        assert!(matches!(
            restricted(b"\x80\x03cos\nsystem\n.").unwrap_err().kind,
            ErrorKind::ForbiddenGlobal(_)
        ));
        assert!(matches!(
            restricted(b"\x80\x03Nq\x00.").unwrap_err().kind,
            ErrorKind::Forbidden("BINPUT")
        ));
        let v = restricted(b"\x80\x03cZopeUndo.Prefix\nPrefix\nX\x01\x00\x00\x00/\x85R.").unwrap();
        assert!(matches!(v, Value::Reduce { .. }));
    }

    #[test]
    fn memo_fetches_share_one_budget_across_pickles() {
        // One pickle memoises a 4 KiB value; then thousands of 3-byte pickles fetch it.
        let mut p = b"\x80\x03B\x00\x10\x00\x00".to_vec();
        p.extend(std::iter::repeat_n(b'a', 4096));
        p.extend_from_slice(b"q\x00.");
        for _ in 0..10_000 {
            p.extend_from_slice(b"h\x00.");
        }
        let limits = Limits {
            extra_bytes: 0,
            ..Limits::default()
        };
        let mut u = Unpickler::new(&p).with_limits(limits);
        let mut loaded = 0;
        let err = loop {
            match u.load() {
                Ok(_) => loaded += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err.kind, ErrorKind::TooLarge(_)), "{err}");
        assert!(loaded < 200, "{loaded}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = b"\x80\x03".to_vec();
        p.extend(std::iter::repeat_n(b']', 10_000));
        p.extend(std::iter::repeat_n(b'a', 9_999));
        p.push(b'.');
        assert!(matches!(err_kind(&p), ErrorKind::TooLarge(_)));
    }
}
