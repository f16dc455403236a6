//! The damage rig of the verify/dump tests: a small Python-written Data.fs with every kind
//! of record, its layout, single-field damaged copies of it (spec §14.6), and the means to
//! ask Python and zodbctl about hundreds of such files at once.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Builds the base file (§14.1-style history plus undo, deletion, empty transaction).
pub const MAKE_BASE: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
from persistent.mapping import PersistentMapping
from BTrees.OOBTree import OOBTree
from ZODB.Connection import TransactionMetaData
st = ZODB.FileStorage.FileStorage(sys.argv[1])
db = ZODB.DB(st)
r = db.open().root()
r['a'] = PersistentMapping()
t = transaction.get(); t.setUser('bob'); t.note('add a'); transaction.commit()
r['a']['x'] = 1; transaction.commit()
r['b'] = PersistentMapping(); r['t'] = OOBTree(); r['t']['k'] = 'v'
t = transaction.get(); t.setExtendedInfo('foo', 'bar'); t.setUser('jürgen'); t.note('café ☕')
transaction.commit()
db.undo(db.undoLog(0, 10)[1]['id']); transaction.get().note('undo x'); transaction.commit()
db.undo(db.undoLog(0, 10)[1]['id']); transaction.get().note('undo creation'); transaction.commit()
t = TransactionMetaData(); st.tpc_begin(t); st.tpc_vote(t); st.tpc_finish(t)
r['a']['y'] = 'é'; transaction.commit()
db.close()
"#;

pub struct Txn {
    pub pos: usize,
    pub tlen: usize,
    pub hlen: usize,
    pub records: Vec<usize>,
}

/// The layout of a healthy file (only to find the fields to damage).
pub fn layout(f: &[u8]) -> Vec<Txn> {
    let u64_at = |p: usize| u64::from_be_bytes(f[p..p + 8].try_into().unwrap()) as usize;
    let u16_at = |p: usize| u16::from_be_bytes(f[p..p + 2].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < f.len() {
        let tlen = u64_at(pos + 8);
        let hlen = 23 + u16_at(pos + 17) + u16_at(pos + 19) + u16_at(pos + 21);
        let mut records = Vec::new();
        let mut p = pos + hlen;
        while p < pos + tlen {
            records.push(p);
            let plen = u64_at(p + 34);
            p += 42 + if plen == 0 { 8 } else { plen };
        }
        out.push(Txn {
            pos,
            tlen,
            hlen,
            records,
        });
        pos += tlen + 8;
    }
    out
}

pub fn put_u64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

pub fn put_u16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// A copy of `base` with the `width`-byte (8 or 2) big-endian field at `at` set to `val`.
fn with_field(base: &[u8], at: usize, val: u64, width: usize) -> Vec<u8> {
    let mut f = base.to_vec();
    if width == 8 {
        put_u64(&mut f, at, val);
    } else {
        put_u16(&mut f, at, val as u16);
    }
    f
}

pub fn get_u64(f: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(f[at..at + 8].try_into().unwrap())
}

/// Every damaged variant: (name, bytes).
pub fn damaged_variants(base: &[u8]) -> Vec<(String, Vec<u8>)> {
    let txns = layout(base);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: String, f: Vec<u8>| v.push((name, f));

    add("empty".into(), Vec::new());
    add(
        "magic".into(),
        b"FS21".iter().chain(&base[4..]).copied().collect(),
    );
    let mut short = base.to_vec();
    short.truncate(3);
    add("short-magic".into(), short);

    // Truncations: near the start, around every record boundary, and all through the last
    // transaction.
    let last = txns.last().unwrap();
    let mut cuts: Vec<usize> = (0..40).collect();
    for t in &txns {
        cuts.extend([t.pos - 1, t.pos + 1, t.pos + 22, t.pos + t.tlen + 3]);
        for &r in &t.records {
            cuts.extend([r + 1, r + 41, r + 43]);
        }
    }
    cuts.extend(last.pos..base.len());
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c < base.len()) {
        add(format!("cut-{cut}"), base[..cut].to_vec());
    }

    // Trailing garbage and trailing transactions.
    for n in [1usize, 5, 22] {
        let mut f = base.to_vec();
        f.extend(std::iter::repeat_n(0u8, n));
        add(format!("trailing-zeros-{n}"), f);
    }
    let last_bytes = &base[last.pos..];
    let last_tid = get_u64(base, last.pos);
    for (name, tid, status, keep) in [
        ("trailing-header", last_tid + 1, b' ', 23usize),
        ("trailing-checkpoint", last_tid + 1, b'c', last_bytes.len()),
        ("trailing-same-tid", last_tid, b' ', last_bytes.len()),
    ] {
        let mut t = last_bytes.to_vec();
        put_u64(&mut t, 0, tid);
        t[16] = status;
        // The copy's data records must point at the copy.
        let newpos = base.len() as u64;
        for &r in &last.records {
            put_u64(&mut t, r - last.pos + 24, newpos);
        }
        let mut f = base.to_vec();
        f.extend_from_slice(&t[..keep]);
        add(name.into(), f);
    }

    for (i, t) in txns.iter().enumerate() {
        let tp = t.pos;
        let tid = get_u64(base, tp);
        let prev_tid = if i > 0 {
            get_u64(base, txns[i - 1].pos)
        } else {
            0
        };
        let mut field = |name: &str, at: usize, vals: Vec<u64>, width: usize| {
            for val in vals {
                add(
                    format!("t{i}-{name}-{val:x}"),
                    with_field(base, at, val, width),
                );
            }
        };
        field(
            "tid",
            tp,
            vec![prev_tid, prev_tid.saturating_sub(1), tid + 1, 0, u64::MAX],
            8,
        );
        let tl = t.tlen as u64;
        let hl = t.hlen as u64;
        field(
            "tlen",
            tp + 8,
            vec![
                tl + 1,
                tl - 1,
                tl + 8,
                tl + 50,
                hl - 1,
                0,
                u64::MAX,
                u64::MAX - 100,
                tl * 2,
            ],
            8,
        );
        for (k, at) in [("ulen", 17), ("dlen", 19), ("elen", 21)] {
            let cur = u16::from_be_bytes(base[tp + at..tp + at + 2].try_into().unwrap()) as u64;
            let mut vals = vec![cur + 1, 0xffff];
            if cur > 0 {
                vals.push(cur - 1);
            }
            field(k, tp + at, vals, 2);
        }
        field("rtlen", tp + t.tlen, vec![tl + 1, tl - 1, 0], 8);
        let statuses: Vec<u8> = if i + 1 == txns.len() {
            (0..=255).collect()
        } else {
            b" cpux\x00".to_vec()
        };
        for s in statuses {
            let mut f = base.to_vec();
            f[tp + 16] = s;
            add(format!("t{i}-status-{s:02x}"), f);
        }
        for (j, &r) in t.records.iter().enumerate() {
            let plen = get_u64(base, r + 34);
            let mut rec = |name: &str, at: usize, vals: Vec<u64>, width: usize| {
                for val in vals {
                    add(
                        format!("t{i}-r{j}-{name}-{val:x}"),
                        with_field(base, at, val, width),
                    );
                }
            };
            rec("oid", r, vec![0x77, u64::MAX], 8);
            rec("tid", r + 8, vec![0, tid + 1], 8);
            rec("prev", r + 16, vec![1, r as u64 + 5, u64::MAX], 8);
            rec(
                "tloc",
                r + 24,
                vec![tp as u64 + 1, tp as u64 - 1, 0, u64::MAX],
                8,
            );
            rec("vlen", r + 32, vec![1, 7, 0xffff], 2);
            let mut plens = vec![plen + 1, plen + 8, 0, u64::MAX, u64::MAX - 41];
            if plen > 1 {
                plens.push(plen - 1);
            }
            if plen == 0 {
                rec("back", r + 42, vec![1, r as u64 + 100, u64::MAX], 8);
                plens.push(8);
            }
            rec("plen", r + 34, plens, 8);
        }
    }
    v
}

pub fn make_base(dir: &Path) -> Vec<u8> {
    let path = dir.join("base.fs");
    super::run_python(MAKE_BASE, &[path.to_str().unwrap()]);
    fs::read(&path).unwrap()
}

/// Write each variant to `DIR/NAME.fs`; their paths, in order.
pub fn write_variants<'a>(
    dir: &Path,
    variants: impl IntoIterator<Item = &'a (String, Vec<u8>)>,
) -> Vec<PathBuf> {
    variants
        .into_iter()
        .map(|(name, bytes)| {
            let p = dir.join(format!("{name}.fs"));
            fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

/// Run a Python `script` over many files (`args` then the paths, 400 to a process to keep
/// command lines short) that prints one JSON object with a "path" key per file; the objects
/// by path.
pub fn python_json_by_path(
    script: &str,
    args: &[&str],
    paths: &[PathBuf],
) -> BTreeMap<String, serde_json::Value> {
    let mut res = BTreeMap::new();
    for chunk in paths.chunks(400) {
        let mut argv = args.to_vec();
        argv.extend(chunk.iter().map(|p| p.to_str().unwrap()));
        let out = super::run_python(script, &argv);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            res.insert(v["path"].as_str().unwrap().to_owned(), v);
        }
    }
    res
}

/// `zodbctl ARGS PATH` on every path, three at a time; (path, output) in order.
pub fn zodbctl_on_each(args: &[&str], paths: &[PathBuf]) -> Vec<(PathBuf, Output)> {
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(paths.len().div_ceil(3).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| {
                            let out = super::zodbctl().args(args).arg(p).output().unwrap();
                            (p.clone(), out)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}
