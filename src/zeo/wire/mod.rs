//! The ZEO 5 wire: sized-message framing, the handshake, and the message codec for both
//! encodings (`Z5` pickle, `M5` msgpack). See zeo-protocol.md §1–§2.
//!
//! This is the contract between the codec and the server: the server speaks only in terms of
//! [`Value`], [`Incoming`] and the `encode_*` functions, never in pickle or msgpack bytes.

/// The encoding a server announces in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `Z5`: protocol-3 pickles, the default (clients need no extra package).
    Pickle,
    /// `M5`: msgpack, announced only when configured.
    Msgpack,
}

/// A protocol value, with the distinctions the Python client can observe.
///
/// `Bytes` and `Str` are never interchangeable on the wire; `List` and `Tuple` differ only in
/// pickle (msgpack has arrays only, and decodes every array as `Tuple`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Keys in order of appearance.
    Map(Vec<(Value, Value)>),
    /// An inert reference to a global that the decoder allows (only `ZopeUndo.Prefix` with its
    /// argument, from Zope's undoInfo): never resolved, never executed, never emitted.
    Global {
        module: String,
        name: String,
        args: Vec<Value>,
    },
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// msgid -1: ignored, never answered.
    Heartbeat,
    Call(Request),
}

/// A call from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed exactly in the reply (an int, or `[oid, tid]` for loadBefore).
    pub msgid: Value,
    /// Truthy flag: a one-way call that must never be answered.
    pub oneway: bool,
    pub method: String,
    pub args: Vec<Value>,
}
