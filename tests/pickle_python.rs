//! crate::pickle against the real Python picklers: zodbpickle's fast protocol-3 pickler (as
//! ZEO and fsIndex use it), ZODB data records from a real Data.fs with `referencesf`, and
//! Python's `Data.fs.index`.

mod support;

use zodbctl::pickle::{self, Unpickler, Value};

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

fn b(x: &[u8]) -> Value {
    Value::Bytes(x.to_vec())
}

/// The values of `PY_VALUES`, in the same order.
fn rust_values() -> Vec<Value> {
    use Value::*;
    vec![
        None,
        Bool(true),
        Bool(false),
        Int(0),
        Int(255),
        Int(256),
        Int(65535),
        Int(65536),
        Int(-1),
        Int(i32::MAX as i64),
        Int(i32::MIN as i64),
        Int(1 << 31),
        Int(-(1 << 31) - 1),
        Int(i64::MAX),
        Int(i64::MIN),
        BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
        BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]),
        Float(1.5),
        Float(-0.0),
        Float(1e300),
        b(b""),
        b(b"\x00\x01"),
        Bytes(vec![7; 255]),
        Bytes(vec![7; 256]),
        Bytes(vec![9; 70000]),
        s(""),
        s("caf\u{e9} \u{1F600}"),
        s(&"x".repeat(300)),
        Tuple(vec![]),
        Tuple(vec![Int(1)]),
        Tuple(vec![Int(1), s("a")]),
        Tuple(vec![Int(1), s("a"), b(b"b")]),
        Tuple(vec![Int(1), Int(2), Int(3), Int(4)]),
        List(vec![]),
        List(vec![Int(1)]),
        List(vec![Int(1), List(vec![])]),
        List((0..2001).map(Int).collect()),
        List((0..1001).map(Int).collect()),
        Dict(vec![]),
        Dict(vec![(s("a"), Int(1))]),
        Dict(vec![(s("a"), Int(1)), (b(b"k"), Tuple(vec![None]))]),
        Dict((0..1001).map(|i| (Int(i), Int(i))).collect()),
        // A ZEO message: (msgid, flag, name, args), register.
        Tuple(vec![
            Int(1),
            Bool(false),
            s("register"),
            Tuple(vec![s("1"), Int(0)]),
        ]),
    ]
}

const PY_VALUES: &str = r#"
import sys
from zodbpickle.pickle import Pickler
from io import BytesIO
values = [
    None, True, False, 0, 255, 256, 65535, 65536, -1, 2**31-1, -2**31, 2**31, -2**31-1,
    2**63-1, -2**63, 2**63, -2**63-1, 1.5, -0.0, 1e300,
    b'', b'\x00\x01', b'\x07'*255, b'\x07'*256, b'\x09'*70000,
    '', 'caf\u00e9 \U0001F600', 'x'*300,
    (), (1,), (1, 'a'), (1, 'a', b'b'), (1, 2, 3, 4),
    [], [1], [1, []], list(range(2001)), list(range(1001)),
    {}, {'a': 1}, {'a': 1, b'k': (None,)}, {i: i for i in range(1001)},
    (1, False, 'register', ('1', 0)),
]
for v in values:
    f = BytesIO()
    p = Pickler(f, 3)
    p.fast = 1
    p.dump(v)
    print(f.getvalue().hex())
"#;

#[test]
fn fast_protocol_3_matches_zodbpickle_both_ways() {
    let out = support::run_python(PY_VALUES, &[]);
    let lines: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(hex)
        .collect();
    let values = rust_values();
    assert_eq!(lines.len(), values.len());
    for (i, (py, v)) in lines.iter().zip(&values).enumerate() {
        assert_eq!(&pickle::loads(py).unwrap(), v, "decoding value #{i}");
        assert_eq!(&pickle::dumps(v).unwrap(), py, "encoding value #{i}");
    }
}

/// Every opcode family of protocols 0–5 as Python writes it, decoded to the expected tree.
#[test]
fn other_protocols_decode() {
    let script = r#"
import pickle, sys, collections
class C:
    def __init__(self): self.x = 1
vals = [
    (0, [1, 'a', b'b', 2**70, 1.5, (1, 2), {'k': None}]),
    (1, [1, 'a', (1, 2), {'k': None}]),
    (2, {1, 2}),
    (4, [frozenset(['a']), {3}, 'short', b'x' * 10]),
    (5, bytearray(b'ab')),
    (2, collections.OrderedDict([('a', 1)])),
]
for proto, v in vals:
    print(pickle.dumps(v, proto).hex())
"#;
    let out = support::run_python(script, &[]);
    let lines: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(hex)
        .collect();
    use Value::*;
    let proto0 = pickle::loads(&lines[0]).unwrap();
    // Protocol 0 pickles bytes as a call to codecs.encode; everything else is plain.
    let List(items) = proto0 else {
        panic!("{proto0:?}")
    };
    assert_eq!(items[0], Int(1));
    assert_eq!(items[1], s("a"));
    assert!(matches!(&items[2], Reduce { .. }));
    assert_eq!(items[3], BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]));
    assert_eq!(items[4], Float(1.5));
    assert_eq!(items[5], Tuple(vec![Int(1), Int(2)]));
    assert_eq!(items[6], Dict(vec![(s("k"), None)]));
    assert_eq!(
        pickle::loads(&lines[1]).unwrap(),
        List(vec![
            Int(1),
            s("a"),
            Tuple(vec![Int(1), Int(2)]),
            Dict(vec![(s("k"), None)])
        ])
    );
    // Protocol 2 sets are calls of set([...]), spelled the Python 2 way.
    let set2 = pickle::loads(&lines[2]).unwrap();
    assert!(matches!(&set2, Reduce { callable, .. }
        if **callable == Global { module: "__builtin__".into(), name: "set".into() }));
    assert_eq!(
        pickle::loads(&lines[3]).unwrap(),
        List(vec![
            FrozenSet(vec![s("a")]),
            Set(vec![Int(3)]),
            s("short"),
            b(b"xxxxxxxxxx")
        ])
    );
    assert_eq!(pickle::loads(&lines[4]).unwrap(), ByteArray(b"ab".to_vec()));
    assert!(matches!(pickle::loads(&lines[5]).unwrap(), SetItems { .. }));
}

/// Every data record of a realistic Data.fs decodes, and its references equal Python's
/// `referencesf`, its class equals `get_pickle_metadata`.
#[test]
fn datafs_records_match_referencesf() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    support::make_datafs(&fs, "0.3", None);
    let fs = fs.to_str().unwrap();
    let script = r#"
import sys
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import get_pickle_metadata
st = FileStorage(sys.argv[1], read_only=True)
out = open(sys.argv[2], 'w')
for txn in st.iterator():
    for r in txn:
        if not r.data:
            continue
        m, c = get_pickle_metadata(r.data)
        refs = ','.join(o.hex() for o in referencesf(r.data))
        out.write('%s %s %s %s\n' % (r.data.hex(), m, c, refs or '-'))
st.close()
"#;
    let listing = dir.path().join("records.txt");
    support::run_python(script, &[fs, listing.to_str().unwrap()]);
    let text = std::fs::read_to_string(&listing).unwrap();
    let mut n = 0;
    let mut with_refs = 0;
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let data = hex(parts[0]);
        let record = pickle::decode_record(&data).unwrap();
        assert!(!matches!(record.state, Value::Recursive));
        let class = pickle::record_class(&data).unwrap();
        assert_eq!((class.0.as_str(), class.1.as_str()), (parts[1], parts[2]));
        let want: Vec<Vec<u8>> = if parts[3] == "-" {
            vec![]
        } else {
            parts[3].split(',').map(hex).collect()
        };
        if !want.is_empty() {
            with_refs += 1;
        }
        assert_eq!(pickle::references(&data).unwrap(), want, "record {line}");
        n += 1;
    }
    assert!(
        n > 100 && with_refs > 10,
        "{n} records, {with_refs} with refs"
    );

    // Python's Data.fs.index: pos, then (prefix, bucket) pairs, then None.
    let script = r#"
import sys
from ZODB.fsIndex import fsIndex
d = fsIndex.load(sys.argv[1])
print(d['pos'])
for oid, pos in d['index'].items():
    print(oid.hex(), pos)
"#;
    let out = support::run_python(script, &[&format!("{fs}.index")]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let pos: i64 = lines.next().unwrap().parse().unwrap();
    let want: Vec<(Vec<u8>, u64)> = lines
        .map(|l| {
            let (o, p) = l.split_once(' ').unwrap();
            (hex(o), p.parse().unwrap())
        })
        .collect();
    let index = std::fs::read(format!("{fs}.index")).unwrap();
    let mut u = Unpickler::new(&index);
    assert_eq!(u.load().unwrap(), Value::Int(pos));
    let mut got = Vec::new();
    loop {
        match u.load().unwrap() {
            Value::None => break,
            Value::Tuple(t) => {
                let (Value::Bytes(prefix), Value::Bytes(bucket)) = (&t[0], &t[1]) else {
                    panic!("{t:?}")
                };
                let n = bucket.len() / 8;
                for i in 0..n {
                    let mut oid = prefix.clone();
                    oid.extend_from_slice(&bucket[2 * i..2 * i + 2]);
                    let mut p = [0u8; 8];
                    p[2..].copy_from_slice(&bucket[2 * n + 6 * i..2 * n + 6 * i + 6]);
                    got.push((oid, u64::from_be_bytes(p)));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(u.at_end());
    assert_eq!(got, want);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Not a test: the figure for docs/benchmarks.md. `references()` against ZODB's
/// `referencesf` on every record of a 20 MB Data.fs from tools/make_datafs.py, in CPU time:
///
/// `cargo test --release --test pickle_python -- --ignored --nocapture references_throughput`
#[test]
#[ignore]
fn references_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    support::make_datafs(&fs, "20", None);
    let fs = fs.to_str().unwrap();
    let records = dir.path().join("records.bin");
    let script = r#"
import struct, sys, time
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
st = FileStorage(sys.argv[1], read_only=True)
recs = [r.data for t in st.iterator() for r in t if r.data]
st.close()
with open(sys.argv[2], 'wb') as out:
    for d in recs:
        out.write(struct.pack('>I', len(d)) + d)
best = None
for _ in range(3):
    t = time.process_time()
    n = sum(len(referencesf(d)) for d in recs)
    e = time.process_time() - t
    best = e if best is None else min(best, e)
print(len(recs), n, best)
"#;
    let out = support::run_python(script, &[fs, records.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut f = text.split_whitespace();
    let (n, py_refs, py_cpu): (usize, usize, f64) = (
        f.next().unwrap().parse().unwrap(),
        f.next().unwrap().parse().unwrap(),
        f.next().unwrap().parse().unwrap(),
    );
    let data = std::fs::read(&records).unwrap();
    let mut recs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let len = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
        recs.push(&data[i + 4..i + 4 + len]);
        i += 4 + len;
    }
    assert_eq!(recs.len(), n);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = thread_cpu();
        let refs: usize = recs
            .iter()
            .map(|r| pickle::references(r).unwrap().len())
            .sum();
        best = best.min(thread_cpu() - t);
        assert_eq!(refs, py_refs);
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "{n} records ({mb:.1} MB), {py_refs} references: zodbctl {:.0} records/s ({:.0} MB/s), \
         ZODB referencesf {:.0} records/s; ratio {:.1}x",
        n as f64 / best,
        mb / best,
        n as f64 / py_cpu,
        py_cpu / best
    );
}

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
