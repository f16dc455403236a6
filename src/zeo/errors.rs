//! Error replies: which exception class path and state a Python client rebuilds from each
//! failure (zeo-protocol.md §2.4).

use super::backend::StoreError;
use super::wire::Value;

/// Why a request failed.
#[derive(Debug)]
pub enum Fail {
    /// An error reply `[class_path, state]` (or, for a one-way call, a logged close).
    Error(String, Value),
    /// Close the connection without a reply (protocol violations).
    Close(String),
}

impl Fail {
    pub fn new(class: &str, state: Value) -> Fail {
        Fail::Error(class.to_string(), state)
    }

    pub fn args(class: &str, msg: impl Into<String>) -> Fail {
        Fail::new(class, Value::Tuple(vec![Value::Str(msg.into())]))
    }

    pub fn type_error(msg: impl Into<String>) -> Fail {
        Fail::args("builtins.TypeError", msg)
    }

    pub fn txn_error(current: Option<&Value>, given: &Value) -> Fail {
        Fail::new(
            "ZODB.POSException.StorageTransactionError",
            Value::Tuple(vec![current.cloned().unwrap_or(Value::Nil), given.clone()]),
        )
    }

    pub fn read_only() -> Fail {
        Fail::new("ZODB.POSException.ReadOnlyError", Value::Tuple(vec![]))
    }

    /// Log severity: the classes the reference server does not log with a traceback.
    pub fn is_routine(&self) -> bool {
        match self {
            Fail::Error(c, _) => matches!(
                c.as_str(),
                "ZODB.POSException.POSKeyError"
                    | "ZODB.POSException.ConflictError"
                    | "ZODB.POSException.ReadConflictError"
            ),
            Fail::Close(_) => false,
        }
    }
}

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

fn b(x: &[u8]) -> Value {
    Value::Bytes(x.to_vec())
}

fn conflict_state(message: &str, oid: &[u8], serials: Option<(&[u8], &[u8])>) -> Value {
    Value::Map(vec![
        (s("message"), s(message)),
        (s("oid"), b(oid)),
        (s("class_name"), Value::Nil),
        (
            s("serials"),
            serials.map_or(Value::Nil, |(c, r)| Value::Tuple(vec![b(c), b(r)])),
        ),
    ])
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        let msg = e.to_string();
        match e {
            StoreError::PosKey(oid) => {
                Fail::new("ZODB.POSException.POSKeyError", Value::Tuple(vec![b(&oid)]))
            }
            StoreError::PosKeySerial(oid, _) => {
                Fail::new("ZODB.POSException.POSKeyError", Value::Tuple(vec![b(&oid)]))
            }
            StoreError::BlobMissing { path, oid, serial } => Fail::new(
                "ZODB.POSException.POSKeyError",
                Value::Tuple(vec![
                    Value::Str(format!("No blob file at {path}")),
                    b(&oid),
                    b(&serial),
                ]),
            ),
            StoreError::Conflict { oid, serials } => Fail::new(
                "ZODB.POSException.ConflictError",
                conflict_state(
                    "database conflict error",
                    &oid,
                    Some((&serials.0, &serials.1)),
                ),
            ),
            StoreError::ReadConflict { oid, serials } => Fail::new(
                "ZODB.POSException.ReadConflictError",
                conflict_state(
                    "database read conflict error",
                    &oid,
                    serials.as_ref().map(|(c, r)| (&c[..], &r[..])),
                ),
            ),
            StoreError::ReadOnly => Fail::read_only(),
            StoreError::Undo { reason, oid } => Fail::new(
                "ZODB.POSException.UndoError",
                Value::Map(vec![
                    (s("_reason"), Value::Str(reason)),
                    (s("_oid"), oid.map_or(Value::Nil, |o| b(&o))),
                ]),
            ),
            StoreError::Transaction(m) => {
                Fail::args("ZODB.POSException.StorageTransactionError", m)
            }
            StoreError::Value(m) => Fail::args("builtins.ValueError", m),
            StoreError::Type(m) => Fail::args("builtins.TypeError", m),
            StoreError::Unsupported(m) => Fail::args("builtins.AttributeError", m),
            StoreError::Io(_) => Fail::args("ZODB.POSException.StorageSystemError", msg),
        }
    }
}
