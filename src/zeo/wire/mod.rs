//! The ZEO 5 wire: sized-message framing, the handshake, and the message codec for both
//! encodings (`Z5` pickle, `M5` msgpack). See zeo-protocol.md §1–§2.
//!
//! This is the contract between the codec and the server: the server speaks only in terms of
//! [`Value`], [`Incoming`] and the `encode_*` functions, never in pickle or msgpack bytes.
//!
//! - [`frame`]: `u32` big-endian length + payload; [`read_frame`] refuses frames above a
//!   maximum before allocating anything for them.
//! - [`handshake`]: the announcement (`Z5`/`M5`), the client's answer, `ruok`.
//! - Messages are `(msgid, flag, name, args)`. [`decode`] turns a client payload into an
//!   [`Incoming`]; [`encode_reply`] (flag int 0), [`encode_error`] (flag int 2, body
//!   `(class_path, state)`) and [`encode_call`] (msgid 0, flag `True`) write exactly the bytes
//!   of ZEO 6.2's `ZEO.asyncio.marshal` encoders (a fast protocol-3 pickler; `msgpack.packb(…,
//!   use_bin_type=True)`). The msgid is echoed as the [`Value`] it decoded to, which re-encodes
//!   to the same bytes (also for loadBefore's `(oid, tid)` msgid). The `*_frame` variants
//!   return the message as a ready frame (length prefix included) and the `append_*_frame`
//!   ones append it to a buffer (an outbox's): the size is computed first, so the output
//!   grows once by exactly the message, and the payload is never copied into a frame.
//! - Decoding allocates only what the resulting values own: known method names are
//!   interned ([`Method`]), the outer 4-tuple is never built, and the common request shapes
//!   are read without the general machinery (zdecode's fast path; msgpack's reader).
//! - The client side ([`encode_request`], [`decode_server_message`]) is used by `zodbctl
//!   bench` and the tests.
//! - [`from_pickle`] / [`to_pickle`] convert between [`Value`] and crate::pickle's tree for
//!   values the storage keeps as pickles (transaction extensions).
//!
//! Type mapping: `Bytes`/`Str` never mix; `List` and `Tuple` stay distinct in pickle and are
//! both arrays in msgpack (decoded as `Tuple`, like `use_list=False`); ints are `i64` (wider
//! ones are refused, as no ZEO value needs them); msgpack map keys must be text or bytes.
//! Incoming pickles may carry only the opcodes of §2.5 plus `ZopeUndo.Prefix` (as
//! `Value::Global { args: [path] }`); trailing bytes after a pickle's `STOP` are ignored as
//! Python does, after a msgpack message they are an error as in `msgpack.unpackb`.

mod frame;
pub mod handshake;
mod message;
mod msgpack;
mod zdecode;
mod zpickle;

pub use frame::{DEFAULT_MAX_FRAME, frame, push_frame, read_frame, write_frame};
pub use handshake::{
    ClientHandshake, announcement, parse_client_handshake, parse_server_announcement,
};
pub use message::{
    ServerMessage, append_call_frame, append_error_frame, append_reply_frame, decode,
    decode_server_message, encode_call, encode_call_frame, encode_error, encode_error_frame,
    encode_heartbeat, encode_reply, encode_reply_frame, encode_request,
};

/// A value from a pickle that is not a message (e.g. a transaction's extension dict read
/// from the storage) as a protocol value: plain data only, anything else is an error.
pub fn from_pickle(v: crate::pickle::Value) -> Result<Value, WireError> {
    zpickle::convert(v)
}

/// A protocol value as a pickle value, e.g. to store `tpc_begin`'s extension map with
/// [`crate::pickle::dumps`].
pub fn to_pickle(v: &Value) -> Result<crate::pickle::Value, WireError> {
    zpickle::to_pickle(v)
}

/// Why a frame or message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    #[error("bad handshake {0:?}")]
    BadHandshake(String),
    #[error("undecodable pickle message: {0}")]
    Pickle(#[from] crate::pickle::PickleError),
    #[error("undecodable msgpack message: {0}")]
    Msgpack(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("cannot encode {0}")]
    Unencodable(String),
}

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
    pub method: Method,
    pub args: Vec<Value>,
}

/// A method name. The names ZEO clients and servers call are interned (no allocation per
/// request); any other text is kept as sent, so an unknown name still reaches the server's
/// "Invalid method" handling unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(std::borrow::Cow<'static, str>);

impl Method {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The interned name, if `name` is one of the protocol's method names.
    pub fn known(name: &[u8]) -> Option<&'static str> {
        message::known_name(name)
    }

    /// A name [`Method::known`] returned.
    fn interned(name: &'static str) -> Self {
        Method(std::borrow::Cow::Borrowed(name))
    }
}

impl From<&str> for Method {
    fn from(s: &str) -> Self {
        match Method::known(s.as_bytes()) {
            Some(k) => Method::interned(k),
            None => Method(std::borrow::Cow::Owned(s.to_owned())),
        }
    }
}

impl From<String> for Method {
    fn from(s: String) -> Self {
        match Method::known(s.as_bytes()) {
            Some(k) => Method::interned(k),
            None => Method(std::borrow::Cow::Owned(s)),
        }
    }
}

impl std::ops::Deref for Method {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

/// Shown as the text it is (as the `String` it replaced was).
impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
