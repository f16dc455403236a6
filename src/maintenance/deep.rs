//! `zodbctl verify --deep`: what fstest leaves out (spec §11.1 allows it as separate
//! diagnostics), checked after fstest's own checks have passed.
//!
//! * every data record carries its transaction's tid;
//! * `prev` is the position that was current for the oid before the transaction (the
//!   open-time scan's "incorrect previous pointer", §2.8);
//! * a backpointer points backwards, at a data record of the same oid;
//! * no record has the legacy version layout (ZODB 6.4 cannot read it);
//! * packed (`p`) transactions form a prefix of the file (the undo log relies on it);
//! * the current revision of every object parses, and what it refers to exists and was
//!   not deleted (what fsrefs reports);
//! * a `Data.fs.index` next to the file agrees with the file up to the position it covers.
//!
//! Unlike fstest it does not stop at the first problem: it reports every one (the first
//! [`MAX_REPORTED`] in full) and exits 1 if any is an error. Problems Python only warns
//! about at open (`prev = 0` where a previous record exists, a `p` after a ` `) are
//! warnings and do not change the exit status.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::reader::PosReader;
use crate::storage::format::{
    DATA_HDR_LEN, DataHeader, FILE_HDR_LEN, Status, TXN_HDR_LEN, TxnHeader,
};
use crate::storage::index::OidIndex;
use crate::storage::indexfile::{ReadIndexError, read_index_file};
use crate::storage::types::Oid;

/// Problems printed in full; the rest are only counted.
pub const MAX_REPORTED: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding, already worded for the user (without the file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

/// Everything the deep checks found.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub errors: usize,
    pub warnings: usize,
    /// Current objects whose references were checked.
    pub objects: usize,
}

impl Findings {
    fn add(&mut self, severity: Severity, message: String) {
        match severity {
            Severity::Error => self.errors += 1,
            Severity::Warning => self.warnings += 1,
        }
        if self.problems.len() < MAX_REPORTED {
            self.problems.push(Problem { severity, message });
        }
    }
}

fn hdr<const N: usize>(b: &[u8]) -> Option<&[u8; N]> {
    b.try_into().ok()
}

/// Run the deep checks on a file fstest accepted (so its transaction and record
/// boundaries are sound). `progress` gets the position reached in the first pass, then
/// the file size once the reference pass is done.
pub fn check(
    file: &File,
    index_file: Option<&Path>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Findings> {
    let size = file.metadata()?.len();
    let mut r = PosReader::new(file, size);
    let mut f = Findings::default();
    let mut saved = index_file.and_then(|p| saved_index(p, size, &mut f));
    let mut compare_at = |pos: u64, index: &OidIndex, f: &mut Findings| {
        if let Some((path, ipos, iidx)) = saved.take_if(|s| s.1 == pos) {
            compare_index(&path, ipos, &iidx, index, f);
        }
    };
    let mut index = OidIndex::new();
    let mut seen_unpacked = false;
    let mut pos = FILE_HDR_LEN;
    compare_at(pos, &index, &mut f);
    while let Some(h) = r
        .read(pos, TXN_HDR_LEN as usize)?
        .get(..)
        .and_then(hdr::<23>)
    {
        let th = TxnHeader::decode(h);
        let tpos = pos;
        // fstest checked the structure; saturate anyway in case the file changed since.
        let tend = tpos.saturating_add(th.tlen);
        if tend.saturating_add(8) > size {
            break;
        }
        match th.status {
            Status::Packed if seen_unpacked => f.add(
                Severity::Warning,
                format!("transaction at {tpos} has status 'p' after unpacked transactions"),
            ),
            Status::Packed | Status::Undone => {}
            _ => seen_unpacked = true,
        }
        if th.status != Status::Undone {
            let mut tindex: Vec<(Oid, u64)> = Vec::new();
            let mut p = tpos + th.hlen();
            while p < tend {
                let Some(dh) = r
                    .read(p, DATA_HDR_LEN as usize)?
                    .get(..)
                    .and_then(hdr::<42>)
                else {
                    break; // fstest would have said "truncated"
                };
                let dh = DataHeader::decode(dh);
                let oid = dh.oid;
                let what = || format!("data record at {p} (oid 0x{:016x})", oid.0);
                if dh.vlen != 0 {
                    f.add(
                        Severity::Error,
                        format!(
                            "{} has a version (ZODB 3 layout), which ZODB 6.4 cannot read",
                            what()
                        ),
                    );
                    // Its length follows the legacy layout, as fstest walked it.
                    p = p
                        .saturating_add(DATA_HDR_LEN + 16 + u64::from(dh.vlen))
                        .saturating_add(if dh.plen == 0 { 8 } else { dh.plen });
                    continue;
                }
                if dh.tid != th.tid {
                    f.add(
                        Severity::Error,
                        format!(
                            "{} has tid 0x{:016x}, its transaction 0x{:016x}",
                            what(),
                            dh.tid.0,
                            th.tid.0
                        ),
                    );
                }
                let expected = index.get(oid).unwrap_or(0);
                if dh.prev != expected {
                    let severity = if dh.prev == 0 {
                        Severity::Warning
                    } else {
                        Severity::Error
                    };
                    f.add(
                        severity,
                        format!(
                            "{} has previous-record pointer {}, expected {expected}",
                            what(),
                            dh.prev
                        ),
                    );
                }
                if dh.plen == 0 {
                    let back = match <[u8; 8]>::try_from(r.read(p + DATA_HDR_LEN, 8)?) {
                        Ok(b) => u64::from_be_bytes(b),
                        Err(_) => break,
                    };
                    if back != 0 {
                        if let Some(msg) = check_backpointer(&mut r, oid, p, back)? {
                            f.add(Severity::Error, format!("{} {msg}", what()));
                        }
                    }
                }
                tindex.push((oid, p));
                p = p.saturating_add(dh.record_len());
            }
            for (oid, at) in tindex {
                // Positions beyond 2^48 cannot be indexed by ZODB either.
                if index.insert(oid, at).is_err() {
                    f.add(
                        Severity::Error,
                        format!("data record at {at} lies beyond what an index can hold"),
                    );
                }
            }
        }
        pos = tend + 8;
        compare_at(pos, &index, &mut f);
        progress(pos);
    }
    if let Some((path, ipos, _)) = saved {
        f.add(
            Severity::Warning,
            format!(
                "{}: position {ipos} is not the end of a transaction; ZODB will not use this index",
                path.display()
            ),
        );
    }
    check_references(&mut PosReader::scattered(file, size), &index, &mut f)?;
    progress(size);
    Ok(f)
}

/// The saved index next to the file, when there is a usable one to compare with.
fn saved_index(path: &Path, size: u64, f: &mut Findings) -> Option<(PathBuf, u64, OidIndex)> {
    match read_index_file(path) {
        Ok((ipos, _)) if ipos > size => {
            f.add(
                Severity::Warning,
                format!(
                    "{}: covers the file up to {ipos}, beyond its end ({size}); ZODB will not use it",
                    path.display()
                ),
            );
            None
        }
        // ZODB ignores an index saved this early (§4.1.3).
        Ok((ipos, _)) if ipos < 100 => None,
        Ok((ipos, iidx)) => Some((path.to_path_buf(), ipos, iidx)),
        Err(ReadIndexError::Missing) => None,
        Err(e) => {
            f.add(
                Severity::Warning,
                format!(
                    "{}: {e}; ZODB will rebuild the index by scanning",
                    path.display()
                ),
            );
            None
        }
    }
}

/// A saved index must give, for the file up to its position, what scanning gives: a
/// different entry that passes ZODB's sanity check (which looks only at the last
/// transactions) would make it read the wrong records.
fn compare_index(path: &Path, ipos: u64, saved: &OidIndex, scanned: &OidIndex, f: &mut Findings) {
    let mut a = saved.iter().peekable();
    let mut b = scanned.iter().peekable();
    let report = |f: &mut Findings, msg: String| {
        f.add(
            Severity::Error,
            format!("{} (up to {ipos}): {msg}", path.display()),
        );
    };
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => break,
            (Some((oid, p)), None) => {
                report(
                    f,
                    format!("has oid 0x{:016x} (at {p}), which the file does not", oid.0),
                );
                a.next();
            }
            (None, Some((oid, p))) => {
                report(
                    f,
                    format!("lacks oid 0x{:016x} (current record at {p})", oid.0),
                );
                b.next();
            }
            (Some((oa, pa)), Some((ob, pb))) => {
                if oa < ob {
                    report(
                        f,
                        format!("has oid 0x{:016x} (at {pa}), which the file does not", oa.0),
                    );
                    a.next();
                } else if ob < oa {
                    report(
                        f,
                        format!("lacks oid 0x{:016x} (current record at {pb})", ob.0),
                    );
                    b.next();
                } else {
                    if pa != pb {
                        report(
                            f,
                            format!(
                                "gives oid 0x{:016x} at {pa}, the file's current record is at {pb}",
                                oa.0
                            ),
                        );
                    }
                    a.next();
                    b.next();
                }
            }
        }
    }
}

/// `None` when the backpointer of the record at `p` is sound: before the record, at a data
/// record of the same oid whose `tloc` names a transaction with that record's tid.
fn check_backpointer(
    r: &mut PosReader<'_>,
    oid: Oid,
    p: u64,
    back: u64,
) -> io::Result<Option<String>> {
    if back >= p {
        return Ok(Some(format!(
            "has backpointer {back}, which is not before the record"
        )));
    }
    let Some(h) = r
        .read(back, DATA_HDR_LEN as usize)?
        .get(..)
        .and_then(hdr::<42>)
    else {
        return Ok(Some(format!(
            "has backpointer {back}, past the end of the file"
        )));
    };
    let target = DataHeader::decode(h);
    if target.oid != oid {
        return Ok(Some(format!(
            "has backpointer {back} to a record of oid 0x{:016x}",
            target.oid.0
        )));
    }
    let ok = target.tloc < back
        && r.read(target.tloc, 8)?
            .get(..)
            .and_then(hdr::<8>)
            .is_some_and(|t| u64::from_be_bytes(*t) == target.tid.0);
    if !ok {
        return Ok(Some(format!(
            "has backpointer {back}, which is not the start of a data record"
        )));
    }
    Ok(None)
}

/// The state of the record at `pos`, following backpointers (which the first pass checked
/// point backwards): `None` for a deletion.
fn current_state(r: &mut PosReader<'_>, mut pos: u64) -> io::Result<Option<Vec<u8>>> {
    loop {
        let Some(h) = r
            .read(pos, DATA_HDR_LEN as usize)?
            .get(..)
            .and_then(hdr::<42>)
        else {
            return Ok(None);
        };
        let h = DataHeader::decode(h);
        if h.plen > 0 {
            return Ok(Some(r.read(pos + DATA_HDR_LEN, h.plen as usize)?.to_vec()));
        }
        let back = match <[u8; 8]>::try_from(r.read(pos + DATA_HDR_LEN, 8)?) {
            Ok(b) => u64::from_be_bytes(b),
            Err(_) => return Ok(None),
        };
        if back == 0 || back >= pos {
            return Ok(None);
        }
        pos = back;
    }
}

/// fsrefs: every current object's references must name objects that exist and were not
/// deleted.
fn check_references(r: &mut PosReader<'_>, index: &OidIndex, f: &mut Findings) -> io::Result<()> {
    let mut deleted = HashSet::new();
    for (oid, pos) in index.iter() {
        if current_state(r, pos)?.is_none() {
            deleted.insert(oid.0);
        }
    }
    for (oid, pos) in index.iter() {
        let Some(data) = current_state(r, pos)? else {
            continue;
        };
        f.objects += 1;
        let refs = match crate::pickle::references(&data) {
            Ok(refs) => refs,
            Err(e) => {
                f.add(
                    Severity::Error,
                    format!(
                        "object 0x{:016x} (current record at {pos}) cannot be parsed: {e}",
                        oid.0
                    ),
                );
                continue;
            }
        };
        for raw in refs {
            let target = <[u8; 8]>::try_from(raw.as_slice())
                .ok()
                .map(u64::from_be_bytes);
            let problem = match target {
                None => Some("a malformed oid"),
                Some(t) if !index.contains(Oid(t)) => Some("a missing object"),
                Some(t) if deleted.contains(&t) => {
                    Some("an object whose creation was undone or that was deleted")
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                let (module, class) = crate::pickle::record_class(&data).unwrap_or_default();
                f.add(
                    Severity::Error,
                    format!(
                        "object 0x{:016x} ({module}.{class}) refers to {problem}: 0x{}",
                        oid.0,
                        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::fstest::tests::tiny;
    use std::io::Write as _;

    fn run(bytes: &[u8]) -> Findings {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        check(tmp.as_file(), None, &mut |_| {}).unwrap()
    }

    fn messages(f: &Findings) -> Vec<String> {
        f.problems.iter().map(|p| p.message.clone()).collect()
    }

    #[test]
    fn the_tiny_file_is_sound() {
        let f = run(&tiny());
        assert_eq!(messages(&f), Vec::<String>::new());
        assert_eq!(f.objects, 2);
    }

    #[test]
    fn pointer_and_tid_damage_is_reported() {
        let mut f = tiny();
        f[199 + 23] = 7; // prev of the root's second revision: 52 -> 7
        assert_eq!(
            messages(&run(&f)),
            [
                "data record at 199 (oid 0x0000000000000000) has previous-record pointer 7, expected 52"
            ]
        );
        let mut f = tiny();
        f[199 + 23] = 0;
        let found = run(&f);
        assert_eq!((found.errors, found.warnings), (0, 1));
        let mut f = tiny();
        f[332 + 15] = 0x34; // the record's tid differs from its transaction's
        assert_eq!(
            messages(&run(&f)),
            [
                "data record at 332 (oid 0x0000000000000001) has tid 0x03f58e0053333334, its transaction 0x03f58e0053333333"
            ]
        );
    }

    #[test]
    fn dangling_references_are_reported() {
        let mut f = tiny();
        f[332 + 7] = 2; // the object the root refers to becomes oid 2
        let found = run(&f);
        assert_eq!(
            messages(&found),
            [
                "object 0x0000000000000000 (persistent.mapping.PersistentMapping) refers to a missing object: 0x0000000000000001"
            ]
        );
        assert_eq!(found.errors, 1);
    }

    #[test]
    fn a_saved_index_must_agree_with_the_file() {
        use crate::storage::indexfile::write_index_file;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        std::fs::write(&data, tiny()).unwrap();
        let idx_path = dir.path().join("Data.fs.index");
        let index = |entries: &[(u64, u64)]| {
            let mut ix = OidIndex::new();
            for &(o, p) in entries {
                ix.insert(Oid(o), p).unwrap();
            }
            ix
        };
        let run = |pos: u64, entries: &[(u64, u64)]| {
            write_index_file(&idx_path, pos, &index(entries)).unwrap();
            let file = File::open(&data).unwrap();
            let found = check(&file, Some(&idx_path), &mut |_| {}).unwrap();
            (found.errors, found.warnings, messages(&found))
        };
        assert_eq!(run(446, &[(0, 199), (1, 332)]), (0, 0, vec![]));
        assert_eq!(run(166, &[(0, 52)]), (0, 0, vec![]));
        let (errors, _, msgs) = run(446, &[(0, 199), (1, 52), (5, 60)]);
        assert_eq!(errors, 2, "{msgs:?}");
        assert!(
            msgs[0].ends_with(
                "gives oid 0x0000000000000001 at 52, the file's current record is at 332"
            )
        );
        assert!(msgs[1].ends_with("has oid 0x0000000000000005 (at 60), which the file does not"));
        assert_eq!(run(170, &[(0, 52)]).1, 1);
        assert_eq!(run(9999, &[(0, 52)]).1, 1);
        std::fs::write(&idx_path, b"garbage").unwrap();
        let file = File::open(&data).unwrap();
        assert_eq!(
            check(&file, Some(&idx_path), &mut |_| {}).unwrap().warnings,
            1
        );
    }
}
