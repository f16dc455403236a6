//! The server's only contact with message bytes: decode a request payload, encode replies,
//! error replies and server→client calls, for the connection's encoding.

use super::wire::{Encoding, Incoming, Request, Value};

/// Decode one payload (without its length prefix).
pub fn decode(enc: Encoding, payload: &[u8]) -> Result<Incoming, String> {
    match enc {
        Encoding::Msgpack => decode_msgpack(payload),
        Encoding::Pickle => Err("pickle encoding is not available in this build".into()),
    }
}

/// `[msgid, 0, ".reply", value]`
pub fn reply(enc: Encoding, msgid: &Value, value: Value) -> Vec<u8> {
    encode(
        enc,
        Value::Tuple(vec![
            msgid.clone(),
            Value::Int(0),
            Value::Str(".reply".into()),
            value,
        ]),
    )
}

/// `[msgid, 2, ".reply", [class_path, state]]`
pub fn error(enc: Encoding, msgid: &Value, class: &str, state: Value) -> Vec<u8> {
    encode(
        enc,
        Value::Tuple(vec![
            msgid.clone(),
            Value::Int(2),
            Value::Str(".reply".into()),
            Value::Tuple(vec![Value::Str(class.into()), state]),
        ]),
    )
}

/// `[0, True, name, args]`
pub fn call(enc: Encoding, name: &str, args: Vec<Value>) -> Vec<u8> {
    encode(
        enc,
        Value::Tuple(vec![
            Value::Int(0),
            Value::Bool(true),
            Value::Str(name.into()),
            Value::Tuple(args),
        ]),
    )
}

fn encode(enc: Encoding, v: Value) -> Vec<u8> {
    match enc {
        Encoding::Msgpack => {
            let mut out = Vec::new();
            // Writing to a Vec cannot fail.
            let _ = rmpv::encode::write_value(&mut out, &to_rmpv(v));
            out
        }
        Encoding::Pickle => Vec::new(),
    }
}

fn to_rmpv(v: Value) -> rmpv::Value {
    match v {
        Value::Nil => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(b),
        Value::Int(i) => rmpv::Value::from(i),
        Value::Float(f) => rmpv::Value::F64(f),
        Value::Bytes(b) => rmpv::Value::Binary(b),
        Value::Str(s) => rmpv::Value::String(s.into()),
        Value::List(l) | Value::Tuple(l) => {
            rmpv::Value::Array(l.into_iter().map(to_rmpv).collect())
        }
        Value::Map(m) => rmpv::Value::Map(
            m.into_iter()
                .map(|(k, v)| (to_rmpv(k), to_rmpv(v)))
                .collect(),
        ),
        Value::Global { .. } => rmpv::Value::Nil,
    }
}

fn from_rmpv(v: rmpv::Value, depth: usize) -> Result<Value, String> {
    if depth > 64 {
        return Err("nesting too deep".into());
    }
    Ok(match v {
        rmpv::Value::Nil => Value::Nil,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => match i.as_i64() {
            Some(i) => Value::Int(i),
            None => return Err("integer out of range".into()),
        },
        rmpv::Value::F32(f) => Value::Float(f64::from(f)),
        rmpv::Value::F64(f) => Value::Float(f),
        rmpv::Value::String(s) => match s.into_str() {
            Some(s) => Value::Str(s),
            None => return Err("invalid UTF-8 in a string".into()),
        },
        rmpv::Value::Binary(b) => Value::Bytes(b),
        rmpv::Value::Array(a) => Value::Tuple(
            a.into_iter()
                .map(|x| from_rmpv(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        rmpv::Value::Map(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| Ok((from_rmpv(k, depth + 1)?, from_rmpv(v, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        rmpv::Value::Ext(..) => return Err("msgpack ext types are not used by ZEO".into()),
    })
}

fn decode_msgpack(payload: &[u8]) -> Result<Incoming, String> {
    let mut rd = payload;
    let v = rmpv::decode::read_value(&mut rd).map_err(|e| e.to_string())?;
    if !rd.is_empty() {
        return Err("trailing bytes after the message".into());
    }
    let Value::Tuple(mut parts) = from_rmpv(v, 0)? else {
        return Err("a message is not an array".into());
    };
    if parts.len() != 4 {
        return Err(format!("a message has {} elements, not 4", parts.len()));
    }
    let args = parts.pop().unwrap_or(Value::Nil);
    let name = parts.pop().unwrap_or(Value::Nil);
    let flag = parts.pop().unwrap_or(Value::Nil);
    let msgid = parts.pop().unwrap_or(Value::Nil);
    if msgid == Value::Int(-1) {
        return Ok(Incoming::Heartbeat);
    }
    let Value::Str(method) = name else {
        return Err("method name is not a string".into());
    };
    let args = match args {
        Value::Tuple(a) | Value::List(a) => a,
        Value::Nil => Vec::new(),
        _ => return Err("arguments are not an array".into()),
    };
    let oneway = match flag {
        Value::Bool(b) => b,
        Value::Int(i) => i != 0,
        Value::Nil => false,
        _ => true,
    };
    Ok(Incoming::Call(Request {
        msgid,
        oneway,
        method,
        args,
    }))
}
