//! The message tuple `(msgid, flag, name, args)` (zeo-protocol.md §2.1), over either encoding.

use super::{Encoding, Incoming, Method, Request, Value, WireError, msgpack, zdecode, zpickle};

/// The flag of an outgoing message: the reference writes int `0`/`2` for replies and `True`
/// for calls, and clients only test truthiness, but the bytes are kept identical.
#[derive(Debug, Clone, Copy)]
pub(super) enum Flag {
    Int(i64),
    Bool(bool),
}

/// The fourth element of an outgoing message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Body<'a> {
    /// A reply's return value.
    Value(&'a Value),
    /// A call's positional arguments, written as a tuple (an array in msgpack).
    Args(&'a [Value]),
    /// An error reply's `(class_path, state)`.
    Error(&'a str, &'a Value),
}

pub(super) struct Outgoing<'a> {
    pub msgid: &'a Value,
    pub flag: Flag,
    pub name: &'a str,
    pub body: Body<'a>,
}

const REPLY: &str = ".reply";

/// Names interned when decoding: the methods of zeo-protocol.md §3 (what a client calls),
/// §4 (what a server calls) and `.reply`, so that a request's name costs no allocation.
pub(super) fn known_name(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b".reply" => REPLY,
        b"loadBefore" => "loadBefore",
        b"storea" => "storea",
        b"tpc_begin" => "tpc_begin",
        b"vote" => "vote",
        b"tpc_finish" => "tpc_finish",
        b"tpc_abort" => "tpc_abort",
        b"invalidateTransaction" => "invalidateTransaction",
        b"info" => "info",
        b"register" => "register",
        b"get_info" => "get_info",
        b"lastTransaction" => "lastTransaction",
        b"getInvalidations" => "getInvalidations",
        b"loadSerial" => "loadSerial",
        b"getTid" => "getTid",
        b"history" => "history",
        b"record_iternext" => "record_iternext",
        b"new_oids" => "new_oids",
        b"new_oid" => "new_oid",
        b"ping" => "ping",
        b"server_status" => "server_status",
        b"pack" => "pack",
        b"undoLog" => "undoLog",
        b"undoInfo" => "undoInfo",
        b"iterator_start" => "iterator_start",
        b"iterator_next" => "iterator_next",
        b"iterator_record_start" => "iterator_record_start",
        b"iterator_record_next" => "iterator_record_next",
        b"iterator_gc" => "iterator_gc",
        b"set_client_label" => "set_client_label",
        b"checkCurrentSerialInTransaction" => "checkCurrentSerialInTransaction",
        b"deleteObject" => "deleteObject",
        b"restorea" => "restorea",
        b"undoa" => "undoa",
        b"storeBlobStart" => "storeBlobStart",
        b"storeBlobChunk" => "storeBlobChunk",
        b"storeBlobEnd" => "storeBlobEnd",
        b"storeBlobShared" => "storeBlobShared",
        b"sendBlob" => "sendBlob",
        b"receiveBlobStart" => "receiveBlobStart",
        b"receiveBlobChunk" => "receiveBlobChunk",
        b"receiveBlobStop" => "receiveBlobStop",
        _ => return None,
    })
}

/// The length of the frame prefix ([`super::frame`]).
const PREFIX: usize = 4;

/// Append the message to `buf`, as a whole frame (`u32` big-endian length, then the
/// payload) if `framed`. The encoders compute the size first, so `buf` grows at most once,
/// and nothing is copied afterwards; on failure `buf` is left as it was.
fn append(enc: Encoding, m: &Outgoing, buf: &mut Vec<u8>, framed: bool) -> Result<(), WireError> {
    let start = buf.len();
    let size = match enc {
        Encoding::Pickle => zpickle::message_size(m),
        Encoding::Msgpack => msgpack::message_size(m),
    };
    let prefix = if framed { PREFIX } else { 0 };
    if buf.is_empty() {
        // A buffer for this message alone: exactly its size.
        buf.reserve_exact(prefix + size);
    } else {
        // An output buffer collecting frames: amortised growth.
        buf.reserve(prefix + size);
    }
    buf.resize(start + prefix, 0);
    let written = match enc {
        Encoding::Pickle => zpickle::write_message(buf, m),
        Encoding::Msgpack => msgpack::write_message(buf, m),
    };
    let len = buf.len() - start - prefix;
    let written = written.and_then(|()| {
        u32::try_from(len).map_err(|_| WireError::Unencodable("a message of 4 GiB or more".into()))
    });
    match written {
        Ok(len) => {
            debug_assert_eq!(len as usize, size, "encoded size mispredicted");
            if framed {
                buf[start..start + PREFIX].copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// The payload alone, in a buffer of exactly its size.
fn encode(enc: Encoding, m: &Outgoing) -> Result<Vec<u8>, WireError> {
    let mut buf = Vec::new();
    append(enc, m, &mut buf, false)?;
    Ok(buf)
}

/// The message as a ready frame, in a buffer of exactly its size.
fn encode_frame(enc: Encoding, m: &Outgoing) -> Result<Vec<u8>, WireError> {
    let mut buf = Vec::new();
    append(enc, m, &mut buf, true)?;
    Ok(buf)
}

fn reply_msg<'a>(msgid: &'a Value, value: &'a Value) -> Outgoing<'a> {
    Outgoing {
        msgid,
        flag: Flag::Int(0),
        name: REPLY,
        body: Body::Value(value),
    }
}

fn error_msg<'a>(msgid: &'a Value, class_path: &'a str, state: &'a Value) -> Outgoing<'a> {
    Outgoing {
        msgid,
        flag: Flag::Int(2),
        name: REPLY,
        body: Body::Error(class_path, state),
    }
}

fn call_msg<'a>(method: &'a str, args: &'a [Value]) -> Outgoing<'a> {
    Outgoing {
        msgid: &Value::Int(0),
        flag: Flag::Bool(true),
        name: method,
        body: Body::Args(args),
    }
}

/// A reply: `(msgid, 0, ".reply", value)`. Fails only for values the encoding cannot carry
/// (a [`Value::Global`], or in msgpack a map key that is not a string or bytes).
pub fn encode_reply(enc: Encoding, msgid: &Value, value: &Value) -> Result<Vec<u8>, WireError> {
    encode(enc, &reply_msg(msgid, value))
}

/// [`encode_reply`] as a ready frame (length prefix included), in one exact-size buffer.
pub fn encode_reply_frame(
    enc: Encoding,
    msgid: &Value,
    value: &Value,
) -> Result<Vec<u8>, WireError> {
    encode_frame(enc, &reply_msg(msgid, value))
}

/// [`encode_reply`] appended to `buf` as a whole frame (length prefix included), e.g. straight
/// into a connection's output buffer; on failure nothing is appended.
pub fn append_reply_frame(
    enc: Encoding,
    msgid: &Value,
    value: &Value,
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    append(enc, &reply_msg(msgid, value), buf, true)
}

/// An error reply: `(msgid, 2, ".reply", (class_path, state))` (§2.4).
pub fn encode_error(
    enc: Encoding,
    msgid: &Value,
    class_path: &str,
    state: &Value,
) -> Result<Vec<u8>, WireError> {
    encode(enc, &error_msg(msgid, class_path, state))
}

/// [`encode_error`] as a ready frame (length prefix included).
pub fn encode_error_frame(
    enc: Encoding,
    msgid: &Value,
    class_path: &str,
    state: &Value,
) -> Result<Vec<u8>, WireError> {
    encode_frame(enc, &error_msg(msgid, class_path, state))
}

/// [`encode_error`] appended to `buf` as a whole frame; on failure nothing is appended.
pub fn append_error_frame(
    enc: Encoding,
    msgid: &Value,
    class_path: &str,
    state: &Value,
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    append(enc, &error_msg(msgid, class_path, state), buf, true)
}

/// A server→client call: `(0, True, method, args)` (§4).
pub fn encode_call(enc: Encoding, method: &str, args: &[Value]) -> Result<Vec<u8>, WireError> {
    encode(enc, &call_msg(method, args))
}

/// [`encode_call`] as a ready frame (length prefix included).
pub fn encode_call_frame(
    enc: Encoding,
    method: &str,
    args: &[Value],
) -> Result<Vec<u8>, WireError> {
    encode_frame(enc, &call_msg(method, args))
}

/// [`encode_call`] appended to `buf` as a whole frame; on failure nothing is appended.
pub fn append_call_frame(
    enc: Encoding,
    method: &str,
    args: &[Value],
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    append(enc, &call_msg(method, args), buf, true)
}

/// Client side: a call `(msgid, oneway, method, args)` as ZEO's client writes it (msgid `0`
/// for one-way calls by convention).
pub fn encode_request(
    enc: Encoding,
    msgid: &Value,
    oneway: bool,
    method: &str,
    args: &[Value],
) -> Result<Vec<u8>, WireError> {
    encode(
        enc,
        &Outgoing {
            msgid,
            flag: Flag::Bool(oneway),
            name: method,
            body: Body::Args(args),
        },
    )
}

/// Client side: the keep-alive `(-1, 0, ".reply", None)`.
pub fn encode_heartbeat(enc: Encoding) -> Vec<u8> {
    // Plain scalars always encode.
    encode(enc, &reply_msg(&Value::Int(-1), &Value::Nil)).unwrap_or_default()
}

/// A message's third element: a name the decoders recognised (interned, nothing allocated)
/// or whatever value was there.
#[derive(Debug)]
pub(super) enum Name {
    Known(&'static str),
    Value(Value),
}

/// The four elements of a decoded message.
#[derive(Debug)]
pub(super) struct Parts {
    pub msgid: Value,
    pub flag: Value,
    pub name: Name,
    pub body: Value,
}

impl Parts {
    /// A whole decoded value as a message: a sequence of exactly four elements.
    pub(super) fn of(v: Value) -> Result<Parts, WireError> {
        let items = match v {
            Value::Tuple(items) | Value::List(items) => items,
            _ => return Err(WireError::Malformed("a message is not a sequence".into())),
        };
        let [msgid, flag, name, body] = <[Value; 4]>::try_from(items).map_err(|items| {
            WireError::Malformed(format!("a message has {} parts, not 4", items.len()))
        })?;
        Ok(Parts {
            msgid,
            flag,
            name: Name::Value(name),
            body,
        })
    }

    /// The parts as the tuple they came from (tests compare the decoders through it).
    #[cfg(test)]
    pub(super) fn whole(self) -> Value {
        Value::Tuple(vec![
            self.msgid,
            self.flag,
            match self.name {
                Name::Known(s) => Value::Str(s.into()),
                Name::Value(v) => v,
            },
            self.body,
        ])
    }
}

impl Name {
    /// The name as text, if it is text.
    fn as_str(&self) -> Option<&str> {
        match self {
            Name::Known(s) => Some(s),
            Name::Value(Value::Str(s)) => Some(s),
            Name::Value(_) => None,
        }
    }

    fn into_method(self) -> Option<Method> {
        match self {
            Name::Known(s) => Some(Method::interned(s)),
            Name::Value(Value::Str(s)) => Some(Method::from(s)),
            Name::Value(_) => None,
        }
    }
}

/// The four elements of a decoded message. The decoders recognise the usual layout (a
/// 4-tuple, or a 4-element array) without building the outer sequence; anything else is
/// decoded whole and then taken apart, with the same outcome.
fn decode_parts(enc: Encoding, payload: &[u8]) -> Result<Parts, WireError> {
    match enc {
        Encoding::Pickle => zdecode::decode_message(payload),
        Encoding::Msgpack => msgpack::decode_message(payload),
    }
}

/// Decode a client's message. A msgid of `-1` is a heartbeat whatever the rest says.
pub fn decode(enc: Encoding, payload: &[u8]) -> Result<Incoming, WireError> {
    let Parts {
        msgid,
        flag,
        name,
        body: args,
    } = decode_parts(enc, payload)?;
    if matches!(msgid, Value::Int(-1)) {
        return Ok(Incoming::Heartbeat);
    }
    let Some(method) = name.into_method() else {
        return Err(WireError::Malformed(
            "the method name is not a string".into(),
        ));
    };
    let args = match args {
        Value::Tuple(a) | Value::List(a) => a,
        _ => {
            return Err(WireError::Malformed(format!(
                "the arguments of {method} are not a sequence"
            )));
        }
    };
    Ok(Incoming::Call(Request {
        msgid,
        oneway: truthy(&flag),
        method,
        args,
    }))
}

/// Python truthiness, as the reference tests the flag.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Bytes(b) => !b.is_empty(),
        Value::Str(s) => !s.is_empty(),
        Value::List(x) | Value::Tuple(x) => !x.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Global { .. } => true,
    }
}

/// A message from the server, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// A normal reply to the call with this msgid.
    Reply { msgid: Value, value: Value },
    /// An error reply: the exception's class path and state.
    Error {
        msgid: Value,
        class_path: String,
        state: Value,
    },
    /// A one-way call from the server (`invalidateTransaction`, `info`, `receiveBlob*`).
    Call { method: String, args: Vec<Value> },
}

/// Client side: decode a server message.
pub fn decode_server_message(enc: Encoding, payload: &[u8]) -> Result<ServerMessage, WireError> {
    let Parts {
        msgid,
        flag,
        name,
        body,
    } = decode_parts(enc, payload)?;
    let Some(text) = name.as_str() else {
        return Err(WireError::Malformed(
            "the message name is not a string".into(),
        ));
    };
    if text != REPLY {
        let args = match body {
            Value::Tuple(a) | Value::List(a) => a,
            _ => return Err(WireError::Malformed(format!("the arguments of {text}"))),
        };
        let method = match name {
            Name::Value(Value::Str(s)) => s,
            Name::Known(s) => s.to_owned(),
            // Not text: refused above.
            Name::Value(_) => String::new(),
        };
        return Ok(ServerMessage::Call { method, args });
    }
    if !truthy(&flag) {
        return Ok(ServerMessage::Reply { msgid, value: body });
    }
    match body {
        Value::Tuple(pair) | Value::List(pair) if pair.len() == 2 => {
            let [class, state] = <[Value; 2]>::try_from(pair)
                .map_err(|_| WireError::Malformed("error reply".into()))?;
            let Value::Str(class_path) = class else {
                return Err(WireError::Malformed("error class is not a string".into()));
            };
            Ok(ServerMessage::Error {
                msgid,
                class_path,
                state,
            })
        }
        _ => Err(WireError::Malformed(
            "error reply is not (class, state)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn b(x: &[u8]) -> Value {
        Value::Bytes(x.to_vec())
    }

    const Z64: &[u8] = &[0; 8];
    const ONE: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 1];

    /// The captured frames of zeo-protocol.md §11.1–§11.2.
    #[test]
    fn captured_msgpack_frames() {
        let register = unhex("94 01 c2 a8 72 65 67 69 73 74 65 72 92 a1 31 00");
        assert_eq!(
            decode(Encoding::Msgpack, &register).unwrap(),
            Incoming::Call(Request {
                msgid: Value::Int(1),
                oneway: false,
                method: "register".into(),
                args: vec![Value::Str("1".into()), Value::Int(0)],
            })
        );
        assert_eq!(
            encode_reply(Encoding::Msgpack, &Value::Int(1), &b(Z64)).unwrap(),
            unhex("94 01 00 a6 2e 72 65 70 6c 79 c4 08 00 00 00 00 00 00 00 00")
        );
        let load = unhex(
            "94 92 c4 08 00 00 00 00 00 00 00 00 c4 08 00 00 00 00 00 00 00 01
             c2 aa 6c 6f 61 64 42 65 66 6f 72 65
             92 c4 08 00 00 00 00 00 00 00 00 c4 08 00 00 00 00 00 00 00 01",
        );
        let Incoming::Call(req) = decode(Encoding::Msgpack, &load).unwrap() else {
            panic!()
        };
        assert_eq!(req.msgid, Value::Tuple(vec![b(Z64), b(ONE)]));
        let mut want = unhex(
            "94 92 c4 08 00 00 00 00 00 00 00 00 c4 08 00 00 00 00 00 00 00 01 02 a6 2e 72 65 70 6c 79 92 bd",
        );
        want.extend_from_slice(b"ZODB.POSException.POSKeyError");
        want.extend(unhex("91 c4 08 00 00 00 00 00 00 00 00"));
        let got = encode_error(
            Encoding::Msgpack,
            &req.msgid,
            "ZODB.POSException.POSKeyError",
            &Value::Tuple(vec![b(Z64)]),
        )
        .unwrap();
        assert_eq!(got, want);
        let info = Value::Map(vec![
            (Value::Str("length".into()), Value::Int(1)),
            (Value::Str("size".into()), Value::Int(166)),
        ]);
        assert_eq!(
            encode_call(Encoding::Msgpack, "info", &[info]).unwrap(),
            unhex("94 00 c3 a4 69 6e 66 6f 91 82 a6 6c 65 6e 67 74 68 01 a4 73 69 7a 65 cc a6")
        );
        assert_eq!(
            encode_reply(Encoding::Msgpack, &Value::Int(3), &Value::Tuple(vec![])).unwrap(),
            unhex("94 03 00 a6 2e 72 65 70 6c 79 90")
        );
    }

    #[test]
    fn captured_pickle_frames_and_heartbeats() {
        let register = unhex(
            "80 03 28 4b 01 89 58 08 00 00 00 72 65 67 69 73 74 65 72 58 01 00 00 00 31 4b 00 86 74 2e",
        );
        let req = Request {
            msgid: Value::Int(1),
            oneway: false,
            method: "register".into(),
            args: vec![Value::Str("1".into()), Value::Int(0)],
        };
        assert_eq!(
            decode(Encoding::Pickle, &register).unwrap(),
            Incoming::Call(req.clone())
        );
        assert_eq!(
            encode_request(Encoding::Pickle, &req.msgid, false, "register", &req.args).unwrap(),
            register
        );
        let hb_pickle =
            unhex("80 03 28 4a ff ff ff ff 4b 00 58 06 00 00 00 2e 72 65 70 6c 79 4e 74 2e");
        let hb_msgpack = unhex("94 ff 00 a6 2e 72 65 70 6c 79 c0");
        assert_eq!(encode_heartbeat(Encoding::Pickle), hb_pickle);
        assert_eq!(encode_heartbeat(Encoding::Msgpack), hb_msgpack);
        assert_eq!(
            decode(Encoding::Pickle, &hb_pickle).unwrap(),
            Incoming::Heartbeat
        );
        assert_eq!(
            decode(Encoding::Msgpack, &hb_msgpack).unwrap(),
            Incoming::Heartbeat
        );
    }

    #[test]
    fn server_messages_decode_for_clients() {
        for enc in [Encoding::Pickle, Encoding::Msgpack] {
            let e = encode_error(
                enc,
                &Value::Int(5),
                "builtins.ValueError",
                &Value::Tuple(vec![]),
            )
            .unwrap();
            assert_eq!(
                decode_server_message(enc, &e).unwrap(),
                ServerMessage::Error {
                    msgid: Value::Int(5),
                    class_path: "builtins.ValueError".into(),
                    state: Value::Tuple(vec![]),
                }
            );
            let c = encode_call(
                enc,
                "invalidateTransaction",
                &[b(ONE), Value::Tuple(vec![])],
            )
            .unwrap();
            assert!(matches!(decode_server_message(enc, &c).unwrap(),
                ServerMessage::Call { method, args } if method == "invalidateTransaction" && args.len() == 2));
        }
    }

    #[test]
    fn refusals() {
        let g = Value::Global {
            module: "ZopeUndo.Prefix".into(),
            name: "Prefix".into(),
            args: vec![],
        };
        for enc in [Encoding::Pickle, Encoding::Msgpack] {
            assert!(encode_reply(enc, &Value::Int(1), &g).is_err());
        }
        let int_key = Value::Map(vec![(Value::Int(1), Value::Nil)]);
        assert!(encode_reply(Encoding::Msgpack, &Value::Int(1), &int_key).is_err());
        assert!(encode_reply(Encoding::Pickle, &Value::Int(1), &int_key).is_ok());
        // Not a 4-tuple; trailing msgpack bytes; a forbidden global.
        assert!(decode(Encoding::Msgpack, &unhex("93 01 c2 a0")).is_err());
        assert!(decode(Encoding::Msgpack, &unhex("94 01 c2 a1 78 90 00")).is_err());
        assert!(decode(Encoding::Pickle, b"\x80\x03cos\nsystem\n)R.").is_err());
        assert!(decode(Encoding::Pickle, b"").is_err());
    }
}
