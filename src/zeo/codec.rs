//! The server's only contact with message bytes: decode a request payload, encode replies,
//! error replies and server→client calls, for the connection's encoding (`wire` does the
//! work; this adapts its results to what the server can do about a failure).
//!
//! The `*_frame` functions return the message as a ready frame (the `u32` big-endian length
//! prefix, then the payload) in one buffer of exactly its size, for a writer that queues
//! frames as they are; the `*_into` ones append that frame to a buffer the caller owns (a
//! connection's output buffer: no allocation at all); the others return the payload alone.
//! All encode the same bytes.

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
        Err(e) => error(enc, msgid, "builtins.ValueError", unencodable(e)),
    }
}

/// [`reply`] as a ready frame.
pub fn reply_frame(enc: Encoding, msgid: &Value, value: Value) -> Vec<u8> {
    match wire::encode_reply_frame(enc, msgid, &value) {
        Ok(b) => b,
        Err(e) => error_frame(enc, msgid, "builtins.ValueError", unencodable(e)),
    }
}

/// [`reply`] appended to `out` as a whole frame.
pub fn reply_into(enc: Encoding, msgid: &Value, value: Value, out: &mut Vec<u8>) {
    if let Err(e) = wire::append_reply_frame(enc, msgid, &value, out) {
        error_into(enc, msgid, "builtins.ValueError", unencodable(e), out);
    }
}

fn unencodable(e: wire::WireError) -> Value {
    Value::Tuple(vec![Value::Str(format!("unencodable reply: {e}"))])
}

/// `(msgid, 2, ".reply", (class_path, state))`
pub fn error(enc: Encoding, msgid: &Value, class: &str, state: Value) -> Vec<u8> {
    wire::encode_error(enc, msgid, class, &state)
        .or_else(|_| wire::encode_error(enc, msgid, class, &Value::Tuple(vec![])))
        .unwrap_or_default()
}

/// [`error`] as a ready frame (empty in the same cases: never for a class path and an
/// integer or `(oid, tid)` msgid).
pub fn error_frame(enc: Encoding, msgid: &Value, class: &str, state: Value) -> Vec<u8> {
    wire::encode_error_frame(enc, msgid, class, &state)
        .or_else(|_| wire::encode_error_frame(enc, msgid, class, &Value::Tuple(vec![])))
        .unwrap_or_default()
}

/// [`error`] appended to `out` as a whole frame (nothing in the cases [`error`] is empty).
pub fn error_into(enc: Encoding, msgid: &Value, class: &str, state: Value, out: &mut Vec<u8>) {
    if wire::append_error_frame(enc, msgid, class, &state, out).is_err() {
        let _ = wire::append_error_frame(enc, msgid, class, &Value::Tuple(vec![]), out);
    }
}

/// `(0, True, name, args)`; empty when unencodable (the outbox skips empty payloads; the
/// server only sends calls made of bytes, ints and strings).
pub fn call(enc: Encoding, name: &str, args: Vec<Value>) -> Vec<u8> {
    wire::encode_call(enc, name, &args).unwrap_or_default()
}

/// [`call`] as a ready frame; empty (no frame at all) when unencodable.
pub fn call_frame(enc: Encoding, name: &str, args: Vec<Value>) -> Vec<u8> {
    wire::encode_call_frame(enc, name, &args).unwrap_or_default()
}

/// [`call`] appended to `out` as a whole frame; false (nothing appended) when unencodable.
pub fn call_into(enc: Encoding, name: &str, args: Vec<Value>, out: &mut Vec<u8>) -> bool {
    wire::append_call_frame(enc, name, &args, out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_payloads_with_their_length() {
        let id = Value::Tuple(vec![Value::Bytes(vec![0; 8]), Value::Bytes(vec![1; 8])]);
        let global = Value::Global {
            module: "ZopeUndo.Prefix".into(),
            name: "Prefix".into(),
            args: vec![],
        };
        for enc in [Encoding::Pickle, Encoding::Msgpack] {
            let v = Value::Tuple(vec![Value::Bytes(vec![7; 300]), Value::Nil]);
            for (frame, payload) in [
                (reply_frame(enc, &id, v.clone()), reply(enc, &id, v.clone())),
                // An unencodable reply becomes an error reply, framed the same way.
                (
                    reply_frame(enc, &id, global.clone()),
                    reply(enc, &id, global.clone()),
                ),
                (
                    error_frame(enc, &id, "builtins.KeyError", v.clone()),
                    error(enc, &id, "builtins.KeyError", v.clone()),
                ),
                (
                    call_frame(enc, "info", vec![v.clone()]),
                    call(enc, "info", vec![v.clone()]),
                ),
            ] {
                assert_eq!(frame, wire::frame(&payload));
                assert_eq!(frame.capacity(), frame.len());
            }
            assert!(call_frame(enc, "info", vec![global.clone()]).is_empty());

            // Appended to an output buffer: the same frames, one after the other.
            let mut out = b"queued".to_vec();
            reply_into(enc, &id, v.clone(), &mut out);
            reply_into(enc, &id, global.clone(), &mut out);
            error_into(enc, &id, "builtins.KeyError", v.clone(), &mut out);
            assert!(call_into(enc, "info", vec![v.clone()], &mut out));
            assert!(!call_into(
                enc,
                "info",
                vec![v.clone(), global.clone()],
                &mut out
            ));
            let mut want = b"queued".to_vec();
            want.extend(reply_frame(enc, &id, v.clone()));
            want.extend(reply_frame(enc, &id, global.clone()));
            want.extend(error_frame(enc, &id, "builtins.KeyError", v.clone()));
            want.extend(call_frame(enc, "info", vec![v.clone()]));
            assert_eq!(out, want);
        }
    }
}
