//! crate::zeo::wire against ZEO 6.2's own marshal functions (`ZEO.asyncio.marshal`): our
//! server-side encoders produce exactly the bytes of the reference server's encoders in both
//! encodings, and we decode exactly what the reference client encodes.

mod support;

use zodbctl::zeo::wire::{self, Encoding, Incoming, Request, Value};

const PY: &str = r#"
import os, sys, tempfile
from ZEO.asyncio.marshal import encoder

# Zope's undoInfo specification object, as Zope defines it (ZopeUndo is not installed here).
d = tempfile.mkdtemp()
os.makedirs(os.path.join(d, 'ZopeUndo'))
open(os.path.join(d, 'ZopeUndo', '__init__.py'), 'w').close()
with open(os.path.join(d, 'ZopeUndo', 'Prefix.py'), 'w') as f:
    f.write('''
class Prefix:
    __no_side_effects__ = 1
    def __init__(self, path):
        self.value = len(path), path
''')
sys.path.insert(0, d)
from ZopeUndo.Prefix import Prefix

z64 = b'\0' * 8
one = b'\0' * 7 + b'\1'
values = [
    None, True, False, 0, -1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
    2**47 + 12345, -32, -33, -128, -129, -2**31, -2**31 - 1, -2**63, 2**63 - 1,
    1.5, 1795229974.0123,
    b'', b'x' * 255, b'x' * 256, b'y' * 65536, z64,
    '', 'a' * 31, 'a' * 32, '\u00e9' * 200, 'z' * 70000,
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1], list(range(17)), list(range(1001)),
    {}, {'a': 1}, {'k%02d' % i: i for i in range(17)}, {b'bin': 'str'},
    ([z64] * 3, {'x': [None, (True,)]}),
]
server = {'Z': encoder(b'Z', True), 'M': encoder(b'M', True)}
client = {'Z': encoder(b'Z'), 'M': encoder(b'M')}

def emit(kind, enc, *msg):
    try:
        print(kind, enc(*msg).hex())
    except Exception:
        print(kind, '-')

for v in values:
    for e in 'ZM':
        emit('reply', server[e], 1, 0, '.reply', v)
for e in 'ZM':
    emit('reply', server[e], (z64, one), 0, '.reply', (b'data', one, None))
    emit('error', server[e], (z64, one), 2, '.reply',
         ('ZODB.POSException.POSKeyError', (z64,)))
    emit('error', server[e], 9, 2, '.reply',
         ('ZODB.POSException.ConflictError',
          {'message': 'database conflict error', 'oid': one, 'class_name': None,
           'serials': (one, z64)}))
    emit('call', server[e], 0, True, 'invalidateTransaction', (one, [z64, one]))
    emit('call', server[e], 0, True, 'info', ({'length': 1, 'size': 166},))
    emit('call', server[e], 0, True, 'receiveBlobChunk', (one, one, b'c' * 59000))

requests = [
    (1, False, 'register', ('1', 0)),
    ((z64, one), False, 'loadBefore', (z64, one)),
    (0, True, 'tpc_begin', (2**47 + 5, b'', b'initial database creation', {}, None, ' ')),
    (0, True, 'storea', (z64, z64, b'\x80\x03' + b'r' * 300, 2**47 + 5)),
    (5, False, 'pack', (1795229935.68, 1)),
    (6, False, 'iterator_gc', ([1, 2, 3],)),
    (-1, 0, '.reply', None),
    (7, False, 'undoInfo', (0, -20, {'description': Prefix('/a/b')})),
]
for r in requests:
    for e in 'ZM':
        emit('request', client[e], *r)
"#;

fn s(x: &str) -> Value {
    Value::Str(x.into())
}
fn b(x: &[u8]) -> Value {
    Value::Bytes(x.to_vec())
}
fn i(x: i64) -> Value {
    Value::Int(x)
}

const Z64: &[u8] = &[0; 8];
const ONE: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 1];

fn values() -> Vec<Value> {
    use Value::*;
    vec![
        Nil,
        Bool(true),
        Bool(false),
        i(0),
        i(-1),
        i(127),
        i(128),
        i(255),
        i(256),
        i(65535),
        i(65536),
        i((1 << 32) - 1),
        i(1 << 32),
        i((1 << 47) + 12345),
        i(-32),
        i(-33),
        i(-128),
        i(-129),
        i(-(1 << 31)),
        i(-(1 << 31) - 1),
        i(i64::MIN),
        i(i64::MAX),
        Float(1.5),
        Float(1795229974.0123),
        b(b""),
        Bytes(vec![b'x'; 255]),
        Bytes(vec![b'x'; 256]),
        Bytes(vec![b'y'; 65536]),
        b(Z64),
        s(""),
        s(&"a".repeat(31)),
        s(&"a".repeat(32)),
        s(&"\u{e9}".repeat(200)),
        s(&"z".repeat(70000)),
        Tuple(vec![]),
        Tuple(vec![i(1)]),
        Tuple(vec![i(1), i(2)]),
        Tuple(vec![i(1), i(2), i(3)]),
        Tuple(vec![i(1), i(2), i(3), i(4)]),
        List(vec![]),
        List(vec![i(1)]),
        List((0..17).map(i).collect()),
        List((0..1001).map(i).collect()),
        Map(vec![]),
        Map(vec![(s("a"), i(1))]),
        Map((0..17).map(|n| (s(&format!("k{n:02}")), i(n))).collect()),
        Map(vec![(b(b"bin"), s("str"))]),
        Tuple(vec![
            List(vec![b(Z64), b(Z64), b(Z64)]),
            Map(vec![(s("x"), List(vec![Nil, Tuple(vec![Bool(true)])]))]),
        ]),
    ]
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn byte_identical_to_the_reference_marshal() {
    let out = support::run_python(PY, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(|l| {
        let (kind, hex) = l.split_once(' ').unwrap();
        (kind.to_owned(), hex.to_owned())
    });
    let mut next = |want_kind: &str| {
        let (kind, hex) = lines.next().expect("python printed fewer lines");
        assert_eq!(kind, want_kind);
        (hex != "-").then(|| unhex(&hex))
    };
    let encs = [Encoding::Pickle, Encoding::Msgpack];

    for (n, v) in values().iter().enumerate() {
        for enc in encs {
            let py = next("reply").unwrap();
            let ours = wire::encode_reply(enc, &i(1), v).unwrap();
            assert!(ours == py, "reply #{n} in {enc:?} differs");
            // And a client reads back the same value (lists become tuples in msgpack).
            let back = wire::decode_server_message(enc, &ours).unwrap();
            let wire::ServerMessage::Reply { msgid, .. } = back else {
                panic!("{back:?}")
            };
            assert_eq!(msgid, i(1));
        }
    }
    let load_id = Value::Tuple(vec![b(Z64), b(ONE)]);
    let conflict = Value::Map(vec![
        (s("message"), s("database conflict error")),
        (s("oid"), b(ONE)),
        (s("class_name"), Value::Nil),
        (s("serials"), Value::Tuple(vec![b(ONE), b(Z64)])),
    ]);
    for enc in encs {
        let reply = Value::Tuple(vec![b(b"data"), b(ONE), Value::Nil]);
        assert_eq!(
            wire::encode_reply(enc, &load_id, &reply).unwrap(),
            next("reply").unwrap()
        );
        let state = Value::Tuple(vec![b(Z64)]);
        assert_eq!(
            wire::encode_error(enc, &load_id, "ZODB.POSException.POSKeyError", &state).unwrap(),
            next("error").unwrap()
        );
        assert_eq!(
            wire::encode_error(enc, &i(9), "ZODB.POSException.ConflictError", &conflict).unwrap(),
            next("error").unwrap()
        );
        let oids = Value::List(vec![b(Z64), b(ONE)]);
        assert_eq!(
            wire::encode_call(enc, "invalidateTransaction", &[b(ONE), oids]).unwrap(),
            next("call").unwrap()
        );
        let info = Value::Map(vec![(s("length"), i(1)), (s("size"), i(166))]);
        assert_eq!(
            wire::encode_call(enc, "info", &[info]).unwrap(),
            next("call").unwrap()
        );
        let chunk = [b(ONE), b(ONE), Value::Bytes(vec![b'c'; 59000])];
        assert_eq!(
            wire::encode_call(enc, "receiveBlobChunk", &chunk).unwrap(),
            next("call").unwrap()
        );
    }

    // Requests as the reference client writes them.
    let txn = i((1 << 47) + 5);
    let mut record = b"\x80\x03".to_vec();
    record.extend(vec![b'r'; 300]);
    let prefix = Value::Global {
        module: "ZopeUndo.Prefix".into(),
        name: "Prefix".into(),
        args: vec![s("/a/b")],
    };
    let requests: Vec<(Value, bool, &str, Vec<Value>)> = vec![
        (i(1), false, "register", vec![s("1"), i(0)]),
        (load_id.clone(), false, "loadBefore", vec![b(Z64), b(ONE)]),
        (
            i(0),
            true,
            "tpc_begin",
            vec![
                txn.clone(),
                b(b""),
                b(b"initial database creation"),
                Value::Map(vec![]),
                Value::Nil,
                s(" "),
            ],
        ),
        (
            i(0),
            true,
            "storea",
            vec![b(Z64), b(Z64), b(&record), txn.clone()],
        ),
        (i(5), false, "pack", vec![Value::Float(1795229935.68), i(1)]),
        (
            i(6),
            false,
            "iterator_gc",
            vec![Value::List(vec![i(1), i(2), i(3)])],
        ),
    ];
    for (msgid, oneway, method, args) in &requests {
        for enc in encs {
            let py = next("request").unwrap();
            let want_args = match enc {
                // msgpack has no lists: everything arrives as a tuple.
                Encoding::Msgpack => args.iter().map(lists_to_tuples).collect(),
                Encoding::Pickle => args.clone(),
            };
            assert_eq!(
                wire::decode(enc, &py).unwrap(),
                Incoming::Call(Request {
                    msgid: msgid.clone(),
                    oneway: *oneway,
                    method: (*method).into(),
                    args: want_args,
                }),
                "{method} in {enc:?}"
            );
            assert_eq!(
                wire::encode_request(enc, msgid, *oneway, method, args).unwrap(),
                py,
                "{method} in {enc:?}"
            );
        }
    }
    for enc in encs {
        let hb = next("request").unwrap();
        assert_eq!(wire::decode(enc, &hb).unwrap(), Incoming::Heartbeat);
        assert_eq!(wire::encode_heartbeat(enc), hb);
    }
    // undoInfo with a ZopeUndo.Prefix: pickle only (msgpack cannot carry it).
    let py = next("request").unwrap();
    assert_eq!(
        wire::decode(Encoding::Pickle, &py).unwrap(),
        Incoming::Call(Request {
            msgid: i(7),
            oneway: false,
            method: "undoInfo".into(),
            args: vec![i(0), i(-20), Value::Map(vec![(s("description"), prefix)])],
        })
    );
    assert_eq!(next("request"), None);
    assert!(lines.next().is_none());
}

fn lists_to_tuples(v: &Value) -> Value {
    match v {
        Value::List(x) | Value::Tuple(x) => Value::Tuple(x.iter().map(lists_to_tuples).collect()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (lists_to_tuples(k), lists_to_tuples(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A real ZEO client decodes what we encode (its own decoder, not a byte comparison).
#[test]
fn reference_client_decodes_our_messages() {
    let msgs = [
        wire::encode_reply(
            Encoding::Pickle,
            &Value::Tuple(vec![b(Z64), b(ONE)]),
            &Value::List(vec![]),
        )
        .unwrap(),
        wire::encode_error(
            Encoding::Msgpack,
            &i(3),
            "builtins.ValueError",
            &Value::Tuple(vec![s("empty tree")]),
        )
        .unwrap(),
        wire::encode_call(
            Encoding::Pickle,
            "info",
            &[Value::Map(vec![(s("size"), i(1 << 40))])],
        )
        .unwrap(),
    ];
    let hex: Vec<String> = msgs
        .iter()
        .map(|m| m.iter().map(|x| format!("{x:02x}")).collect())
        .collect();
    let script = r#"
import sys
from ZEO.asyncio.marshal import decoder
print(repr(decoder(b'Z')(bytes.fromhex(sys.argv[1]))))
print(repr(decoder(b'M')(bytes.fromhex(sys.argv[2]))))
print(repr(decoder(b'Z')(bytes.fromhex(sys.argv[3]))))
"#;
    let out = support::run_python(script, &[&hex[0], &hex[1], &hex[2]]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            r"((b'\x00\x00\x00\x00\x00\x00\x00\x00', b'\x00\x00\x00\x00\x00\x00\x00\x01'), 0, '.reply', [])",
            "(3, 2, '.reply', ('builtins.ValueError', ('empty tree',)))",
            "(0, True, 'info', ({'size': 1099511627776},))",
        ]
    );
}
