//! The server's only contact with message bytes: decode a request payload, encode replies,
//! error replies and server→client calls, for the connection's encoding (`wire` does the
//! work; this adapts its results to what the server can do about a failure).

use super::wire::{self, Encoding, Incoming, Value};

/// Decode one payload (without its length prefix).
pub fn decode(enc: Encoding, payload: &[u8]) -> Result<Incoming, String> {
    wire::decode(enc, payload).map_err(|e| e.to_string())
}

/// `(msgid, 0, ".reply", value)`; a value the encoding cannot carry becomes an error reply,
/// so the client's call still completes.
pub fn reply(enc: Encoding, msgid: &Value, value: Value) -> Vec<u8> {
    match wire::encode_reply(enc, msgid, &value) {
        Ok(b) => b,
        Err(e) => error(
            enc,
            msgid,
            "builtins.ValueError",
            Value::Tuple(vec![Value::Str(format!("unencodable reply: {e}"))]),
        ),
    }
}

/// `(msgid, 2, ".reply", (class_path, state))`
pub fn error(enc: Encoding, msgid: &Value, class: &str, state: Value) -> Vec<u8> {
    wire::encode_error(enc, msgid, class, &state)
        .or_else(|_| wire::encode_error(enc, msgid, class, &Value::Tuple(vec![])))
        .unwrap_or_default()
}

/// `(0, True, name, args)`; empty when unencodable (the outbox skips empty payloads; the
/// server only sends calls made of bytes, ints and strings).
pub fn call(enc: Encoding, name: &str, args: Vec<Value>) -> Vec<u8> {
    wire::encode_call(enc, name, &args).unwrap_or_default()
}
