//! ZODB data records: two pickles (class metadata, then state) sharing one memo
//! (filestorage.md §9.6), and the reference scan of `ZODB.serialize.referencesf` (§9.7).

use super::decode::{Scratch, Unpickler};
use super::{ErrorKind, PickleError, Value};

/// A data record, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The first pickle: a `Global`, `(class, newargs)`, `((module, name), args)`, or a
    /// persistent id for a persistent class.
    pub class: Value,
    /// The second pickle: the object's `__getstate__()`.
    pub state: Value,
}

/// Decode both pickles of a data record.
pub fn decode_record(data: &[u8]) -> Result<Record, PickleError> {
    let mut u = Unpickler::new(data);
    let class = u.load()?;
    let state = u.load()?;
    Ok(Record { class, state })
}

/// The oids a record refers to, as `ZODB.serialize.referencesf` returns them: from both
/// pickles, in order of appearance, duplicates kept; weak and cross-database references
/// (persistent ids that are lists) skipped.
///
/// Where Python fails, this fails too (a persistent id that is not a tuple, bytes, str or
/// list), except that Python 2 strings with bytes ≥ 0x80 are taken as raw bytes instead of
/// failing on ASCII decoding (§9.8).
pub fn references(data: &[u8]) -> Result<Vec<Vec<u8>>, PickleError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }
    let scratch = SCRATCH.with(|s| s.take());
    let mut u = Unpickler::with_scratch(data, scratch);
    let scanned = u.load_pids().and_then(|mut pids| {
        pids.extend(u.load_pids()?);
        Ok(pids)
    });
    let scratch = u.into_scratch();
    if !scratch.is_large() {
        SCRATCH.with(|s| s.replace(scratch));
    }
    let pids = scanned?;
    let bad = |what: &str| PickleError {
        offset: 0,
        kind: ErrorKind::Malformed(format!("persistent id {what}")),
    };
    let mut oids = Vec::with_capacity(pids.len());
    for pid in pids {
        let oid = match pid {
            Value::Tuple(items) => match items.into_iter().next() {
                Some(first) => first,
                None => return Err(bad("is an empty tuple")),
            },
            Value::List(_) => continue,
            other => other,
        };
        match oid {
            Value::Bytes(b) | Value::String8(b) => oids.push(b),
            Value::Str(s) if s.is_ascii() => oids.push(s.into_bytes()),
            _ => return Err(bad("does not hold an oid")),
        }
    }
    Ok(oids)
}

/// [`references`] as 64-bit oids; an oid that is not 8 bytes cannot name any object of a
/// FileStorage and is left out (a dangling reference, as far as the storage can tell).
pub fn reference_oids(data: &[u8]) -> Result<Vec<u64>, PickleError> {
    Ok(references(data)?
        .into_iter()
        .filter_map(|oid| <[u8; 8]>::try_from(oid.as_slice()).ok())
        .map(u64::from_be_bytes)
        .collect())
}

/// `(module, class name)` of a record, as `ZODB.utils.get_pickle_metadata` (fsdump, fsrefs):
/// read from the `GLOBAL` opcode at the start when there is one, otherwise from the decoded
/// first pickle (`(class, args)` or `((module, name), args)`).
pub fn record_class(data: &[u8]) -> Result<(String, String), PickleError> {
    let body = if data.first() == Some(&0x80) {
        data.get(2..).unwrap_or_default()
    } else {
        data
    };
    let skip = if body.starts_with(b"(c") {
        2
    } else if body.starts_with(b"c") {
        1
    } else {
        0
    };
    if skip > 0 {
        let mut lines = body[skip..].splitn(3, |&c| c == b'\n');
        if let (Some(m), Some(n), Some(_)) = (lines.next(), lines.next(), lines.next()) {
            return Ok((
                String::from_utf8_lossy(m).into_owned(),
                String::from_utf8_lossy(n).into_owned(),
            ));
        }
    }
    let first = Unpickler::new(data).load()?;
    let names = |v: &Value| match v {
        Value::Global { module, name } => Some((module.clone(), name.clone())),
        Value::Tuple(mn) if mn.len() == 2 => {
            Some((mn[0].as_text()?.to_owned(), mn[1].as_text()?.to_owned()))
        }
        _ => None,
    };
    let found = match &first {
        Value::Tuple(items) if !items.is_empty() => names(&items[0]),
        other => names(other),
    };
    found.ok_or(PickleError {
        offset: 0,
        kind: ErrorKind::Malformed("unrecognised class metadata".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PersistentMapping example of filestorage.md §9.6.
    const MAPPING: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\
        \x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04\
        C\x08\x00\x00\x00\x00\x00\x00\x00\x01q\x05h\x00\x86q\x06Qss.";

    #[test]
    fn mapping_record() {
        let r = decode_record(MAPPING).unwrap();
        let class = Value::Global {
            module: "persistent.mapping".into(),
            name: "PersistentMapping".into(),
        };
        assert_eq!(r.class, class);
        let pid = Value::PersistentId(Box::new(Value::Tuple(vec![
            Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1]),
            class,
        ])));
        let inner = Value::Dict(vec![(Value::Str("a".into()), pid)]);
        assert_eq!(
            r.state,
            Value::Dict(vec![(Value::Str("data".into()), inner)])
        );
        assert_eq!(
            references(MAPPING).unwrap(),
            vec![vec![0u8, 0, 0, 0, 0, 0, 0, 1]]
        );
        assert_eq!(reference_oids(MAPPING).unwrap(), vec![1]);
        assert_eq!(
            record_class(MAPPING).unwrap(),
            ("persistent.mapping".into(), "PersistentMapping".into())
        );
    }

    #[test]
    fn weak_references_are_skipped() {
        // ['w', (oid,)] as a persistent id, then a bare-oid persistent id.
        let rec = b"\x80\x03cx\nY\n.\x80\x03](X\x01\x00\x00\x00wC\x08\x00\x00\x00\x00\x00\x00\x00\x07\x85eQC\x08\x00\x00\x00\x00\x00\x00\x00\x09Q\x86.";
        assert_eq!(reference_oids(rec).unwrap(), vec![9]);
    }

    #[test]
    fn python2_records_with_8bit_string_oids() {
        // Protocol 1, as Python 2 ZODB wrote: the oid as SHORT_BINSTRING with a byte >= 0x80
        // (Python 3's referencesf fails on it; we take the raw bytes).
        let rec =
            b"cfoo\nBar\nq\x01.}q\x02U\x01xq\x03(U\x08\x00\x00\x00\x00\x00\x00\x00\x80h\x01tQs.";
        assert_eq!(reference_oids(rec).unwrap(), vec![0x80]);
        assert_eq!(record_class(rec).unwrap(), ("foo".into(), "Bar".into()));
    }

    #[test]
    fn a_single_pickle_is_not_a_record() {
        assert!(references(b"\x80\x03N.").is_err());
        assert!(decode_record(b"\x80\x03N.").is_err());
    }
}
