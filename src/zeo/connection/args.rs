//! Argument helpers: a request's arguments as typed values. Wrong types become TypeError
//! replies, never panics.

use super::*;

/// Python's repr of a bytes value, for log lines administrators know.
pub(super) fn py_repr(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for &c in b.iter().take(64) {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('\'');
    s
}

// ---------------------------------------------------------------------------------------
// Argument helpers: wrong types become TypeError replies, never panics.

pub(super) fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i)
}

pub(super) fn need<'a>(args: &'a [Value], i: usize, what: &str) -> Result<&'a Value, Fail> {
    args.get(i)
        .ok_or_else(|| Fail::type_error(format!("missing argument {what}")))
}

pub(super) fn id8(v: &Value, what: &str) -> Result<[u8; 8], Fail> {
    match v {
        Value::Bytes(b) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(a)
        }
        // Old test code passes '\0' * 8 as a text serial; Python storages accept it.
        Value::Str(s) if s.chars().count() == 8 && s.chars().all(|c| (c as u32) < 256) => {
            let mut a = [0u8; 8];
            for (slot, c) in a.iter_mut().zip(s.chars()) {
                *slot = c as u32 as u8;
            }
            Ok(a)
        }
        _ => Err(Fail::type_error(format!("{what} must be 8 bytes"))),
    }
}

pub(super) fn oid_at(args: &[Value], i: usize, what: &str) -> Result<Oid, Fail> {
    id8(need(args, i, what)?, what)
}

/// A store's serial: None means "new object" (z64), as Python storages take it.
pub(super) fn serial_at(args: &[Value], i: usize) -> Result<Tid, Fail> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok([0; 8]),
        Some(v) => id8(v, "serial"),
    }
}

pub(super) fn opt_tid_at(args: &[Value], i: usize, what: &str) -> Result<Option<Tid>, Fail> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => id8(v, what).map(Some),
    }
}

pub(super) fn bytes_of(v: &Value, what: &str) -> Result<Vec<u8>, Fail> {
    match v {
        Value::Bytes(b) => Ok(b.clone()),
        Value::Str(s) => Ok(s.as_bytes().to_vec()),
        Value::Nil => Ok(Vec::new()),
        _ => Err(Fail::type_error(format!("{what} must be bytes"))),
    }
}

pub(super) fn str_of(v: &Value, what: &str) -> Result<String, Fail> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        _ => Err(Fail::type_error(format!("{what} must be a string"))),
    }
}

pub(super) fn int_at(args: &[Value], i: usize, default: i64, what: &str) -> Result<i64, Fail> {
    match args.get(i) {
        None => Ok(default),
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Bool(b)) => Ok(i64::from(*b)),
        Some(_) => Err(Fail::type_error(format!("{what} must be an integer"))),
    }
}

pub(super) fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Nil) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        Some(Value::Float(f)) => *f != 0.0,
        Some(Value::Bytes(b)) => !b.is_empty(),
        Some(Value::Str(s)) => !s.is_empty(),
        Some(Value::List(l) | Value::Tuple(l)) => !l.is_empty(),
        Some(Value::Map(m)) => !m.is_empty(),
        Some(Value::Global { .. }) => true,
    }
}

pub(super) fn bv(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

pub(super) fn sv(s: &str) -> Value {
    Value::Str(s.to_string())
}

pub(super) fn oid_list(oids: &[Oid]) -> Value {
    Value::Tuple(oids.iter().map(|o| bv(o)).collect())
}

pub(super) fn tid_time(tid: &Tid) -> f64 {
    crate::storage::timestamp::tid_time(tid)
}

/// `oid_repr`/`tid_repr`: 0x + hex without leading zero bytes.
pub(super) fn repr_id(id: &[u8; 8]) -> String {
    let v = u64::from_be_bytes(*id);
    let s = format!("{v:x}");
    if s.len() % 2 == 1 {
        format!("0x0{s}")
    } else {
        format!("0x{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs() {
        assert_eq!(repr_id(&[0; 8]), "0x00");
        assert_eq!(repr_id(&[0, 0, 0, 0, 0, 0, 0, 0xcb]), "0xcb");
        assert_eq!(repr_id(&[0, 0, 0, 0, 0, 0, 1, 0]), "0x0100");
    }
}
