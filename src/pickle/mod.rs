//! A pickle codec that executes nothing.
//!
//! ZODB stores objects as pickles and ZEO's default encoding is pickle, so zodbctl must read
//! them; it must never *run* them. The decoder here is a stack machine that interprets every
//! opcode of protocols 0–5 (except the out-of-band buffer opcodes of protocol 5, which no
//! stored pickle can use) and builds a [`Value`] tree: globals stay names, and calls
//! (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`) and `BUILD` stay tree nodes. Nothing is imported,
//! called or constructed.
//!
//! Hostile input is expected (records from damaged files, frames from the network): every
//! length is checked against the remaining input before anything is allocated, the memo is a
//! map (a `LONG_BINPUT 0xffffffff` allocates one entry), shared memo values are expanded under
//! a node and byte budget (so a "billion laughs" pickle is an error, not an OOM), nesting is
//! bounded, and every failure is a [`PickleError`] with the byte offset of the opcode.
//!
//! The encoder writes protocol 3 the way CPython's C pickler (which zodbpickle re-exports)
//! does in "fast" mode (`pickler.fast = 1`, no memo opcodes) — the mode ZEO uses for its
//! messages and ZODB's `fsIndex` for `Data.fs.index`. It covers the plain data types only.
//!
//! Record helpers (filestorage.md §9.6–§9.8): [`decode_record`] splits a data record into its
//! class and state pickles (shared memo), [`references`] is `ZODB.serialize.referencesf`,
//! and [`record_class`] is `ZODB.utils.get_pickle_metadata`.

mod decode;
mod encode;
mod record;

pub(crate) use decode::MESSAGE_CONSTRUCTORS;
pub use decode::{Limits, Unpickler, loads, opcode_name};
pub use encode::{EncodeError, dumps, write_value};
pub use record::{Record, decode_record, record_class, reference_oids, references};

/// Raw opcode writers shared with the ZEO wire codec, which pickles its own value type.
pub mod ops {
    pub use super::encode::{
        APPEND, APPENDS, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, MARK, NEWFALSE, NEWTRUE, NONE,
        PROTO_3, SETITEM, SETITEMS, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3, long_len, write_bigint,
        write_bytes, write_float, write_int, write_str,
    };
    /// Items per `APPENDS`/`SETITEMS` batch, as CPython's pickler.
    pub const BATCHSIZE: usize = 1000;
}

/// A decoded pickle.
///
/// Scalars keep the distinctions Python makes (`bytes` vs `str`, Python 2 8-bit strings);
/// anything the pickle would have constructed by calling code is a node naming what would
/// have been called, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`: little-endian two's complement, minimal length (the payload
    /// of `LONG1`/`LONG4`). Never used for a value that fits `i64`.
    BigInt(Vec<u8>),
    Float(f64),
    Bytes(Vec<u8>),
    /// A protocol ≤ 2 8-bit string (`STRING`, `BINSTRING`, `SHORT_BINSTRING`): Python 2's
    /// `str`, kept as raw bytes (Python 3 would decode it as ASCII and fail on bytes ≥ 0x80).
    String8(Vec<u8>),
    Str(String),
    ByteArray(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Pairs in order of insertion (duplicate keys are kept; nothing is hashed).
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    /// `GLOBAL`/`STACK_GLOBAL`: a name, never resolved.
    Global {
        module: String,
        name: String,
    },
    /// `REDUCE`: `callable(*args)`, not called.
    Reduce {
        callable: Box<Value>,
        args: Box<Value>,
    },
    /// `NEWOBJ` / `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`, not called.
    NewObj {
        cls: Box<Value>,
        args: Box<Value>,
        kwargs: Option<Box<Value>>,
    },
    /// `INST` (protocol 0): `module.name(*args)`.
    Inst {
        module: String,
        name: String,
        args: Vec<Value>,
    },
    /// `OBJ` (protocol 1): `cls(*args)`.
    Obj {
        cls: Box<Value>,
        args: Vec<Value>,
    },
    /// `BUILD`: `obj.__setstate__(state)`.
    Build {
        obj: Box<Value>,
        state: Box<Value>,
    },
    /// `APPEND`/`APPENDS` on something that is not a list (e.g. a list subclass being built).
    Appends {
        obj: Box<Value>,
        items: Vec<Value>,
    },
    /// `SETITEM`/`SETITEMS` on something that is not a dict.
    SetItems {
        obj: Box<Value>,
        items: Vec<(Value, Value)>,
    },
    /// `PERSID`/`BINPERSID`: a reference to another persistent object (in ZODB records:
    /// `(oid, class)`, `oid`, or a list for weak and cross-database references, §9.7).
    PersistentId(Box<Value>),
    /// `EXT1/2/4`: an entry of the copyreg extension registry, by code.
    Extension(u32),
    /// A container met again while it is being expanded (a reference cycle, e.g. an object
    /// whose state refers to itself). The cycle is cut here.
    Recursive,
}

impl Value {
    /// The text if this is a `Str`, or an ASCII `String8` (how Python 3 reads Python 2 strings).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::String8(b) if b.is_ascii() => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// What went wrong while decoding, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct PickleError {
    /// Offset, from the start of the decoded buffer, of the opcode being interpreted.
    pub offset: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("pickle data ends unexpectedly")]
    Truncated,
    #[error("unknown pickle opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("pickle opcode {0} is not allowed here")]
    Forbidden(&'static str),
    #[error("global {0} is not allowed here")]
    ForbiddenGlobal(String),
    #[error("unsupported pickle protocol {0}")]
    UnsupportedProtocol(u8),
    #[error("malformed pickle: {0}")]
    Malformed(String),
    #[error("pickle too large or too deep: {0}")]
    TooLarge(String),
}
