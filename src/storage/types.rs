//! Object ids, transaction ids and transaction metadata.
//!
//! Both ids are 8-byte strings in ZODB, compared as raw bytes; that is the order of the
//! big-endian u64, so they are kept as `u64` here and converted at the file and wire edges.

use std::fmt;

use super::error::StorageError;
use super::timestamp::TimeStamp;

/// An object id (ZODB `oid`): 8 bytes, big-endian. Oid 0 is the root object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u64);

/// A transaction id (ZODB `tid`, also an object revision's serial): 8 bytes in
/// [`TimeStamp`] form, big-endian.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

impl Oid {
    /// The root object's id (`z64`).
    pub const ROOT: Oid = Oid(0);

    pub fn from_bytes(b: [u8; 8]) -> Oid {
        Oid(u64::from_be_bytes(b))
    }

    /// From an 8-byte slice; `None` for any other length (wire input).
    pub fn from_slice(b: &[u8]) -> Option<Oid> {
        Some(Oid(u64::from_be_bytes(b.try_into().ok()?)))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl Tid {
    /// `z64`: "no transaction" (also the serial new objects are stored with).
    pub const ZERO: Tid = Tid(0);
    /// `ZODB.utils.maxtid`.
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);

    pub fn from_bytes(b: [u8; 8]) -> Tid {
        Tid(u64::from_be_bytes(b))
    }

    /// From an 8-byte slice; `None` for any other length (wire input).
    pub fn from_slice(b: &[u8]) -> Option<Tid> {
        Some(Tid(u64::from_be_bytes(b.try_into().ok()?)))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The tid read as a [`TimeStamp`] (for display and `timeTime()`).
    pub fn timestamp(self) -> TimeStamp {
        TimeStamp::from_tid(self)
    }

    /// The undo log's transaction id: standard base64 of the 8 bytes, no newline
    /// (`BA0n8oGwF90=`), as `undoLog()` reports it and `undo()` accepts it.
    pub fn to_undo_id(self) -> String {
        base64_encode(&self.to_bytes())
    }

    /// Parse an undo id (base64 of 8 bytes; a trailing newline is tolerated).
    pub fn from_undo_id(id: &[u8]) -> Option<Tid> {
        let bytes = base64_decode(id.strip_suffix(b"\n").unwrap_or(id))?;
        Tid::from_slice(&bytes)
    }
}

/// `ZODB.utils.oid_repr` style: `0x` and 16 hex digits.
impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid(0x{:016x})", self.0)
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tid(0x{:016x})", self.0)
    }
}

/// Transaction metadata as stored in the transaction record (§2.4): raw bytes. Writers put
/// UTF-8 in `user` and `description` and either nothing or a protocol ≤ 3 pickle of a dict
/// in `extension`; the storage copies them opaquely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnMeta {
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
}

impl TxnMeta {
    pub fn new(
        user: impl Into<Vec<u8>>,
        description: impl Into<Vec<u8>>,
        extension: impl Into<Vec<u8>>,
    ) -> TxnMeta {
        TxnMeta {
            user: user.into(),
            description: description.into(),
            extension: extension.into(),
        }
    }

    /// The u16 length limits of the transaction header, with Python's messages.
    pub fn check(&self) -> Result<(), StorageError> {
        for (value, what) in [
            (&self.user, "user name too long"),
            (&self.description, "description too long"),
            (&self.extension, "too much extension data"),
        ] {
            if value.len() > u16::MAX as usize {
                return Err(StorageError::Transaction(format!(
                    "{what} ({} bytes, at most 65535)",
                    value.len()
                )));
            }
        }
        Ok(())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' {
                // Padding only at the end of the last group.
                if i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_id_is_python_base64() {
        // base64.encodebytes(bytes.fromhex('040d27f281b017dd')).rstrip() == b'BA0n8oGwF90='
        let tid = Tid(0x040d_27f2_81b0_17dd);
        assert_eq!(tid.to_undo_id(), "BA0n8oGwF90=");
        assert_eq!(Tid::from_undo_id(b"BA0n8oGwF90=\n"), Some(tid));
        assert_eq!(Tid::from_undo_id(b"BA0n8oGwF9"), None);
        assert_eq!(Tid::from_undo_id(b"QUJD"), None); // 3 bytes, not a tid
    }

    #[test]
    fn base64_round_trip() {
        for len in 0..12 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(base64_decode(base64_encode(&data).as_bytes()), Some(data));
        }
    }

    #[test]
    fn metadata_limits() {
        assert!(TxnMeta::new(vec![b'a'; 65535], "", "").check().is_ok());
        let err = TxnMeta::new("", vec![b'a'; 65536], "").check().unwrap_err();
        assert!(err.to_string().contains("description too long"), "{err}");
    }
}
