//! Well-framed messages with random method names and randomly typed arguments, in both
//! encodings, against `zodbctl serve` (a file storage with blobs and a memory storage): the
//! server must answer or close each connection, never panic, and keep serving a well-behaved
//! client afterwards. Deterministic (a fixed-seed generator); every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use zodbctl::zeo::wire::{self, Encoding, ServerMessage, Value};

const METHODS: &[&str] = &[
    "register",
    "get_info",
    "lastTransaction",
    "getInvalidations",
    "loadBefore",
    "loadSerial",
    "getTid",
    "history",
    "record_iternext",
    "new_oids",
    "new_oid",
    "ping",
    "server_status",
    "pack",
    "undoLog",
    "undoInfo",
    "iterator_start",
    "iterator_next",
    "iterator_record_start",
    "iterator_record_next",
    "iterator_gc",
    "set_client_label",
    "tpc_begin",
    "storea",
    "checkCurrentSerialInTransaction",
    "deleteObject",
    "restorea",
    "undoa",
    "storeBlobStart",
    "storeBlobChunk",
    "storeBlobEnd",
    "storeBlobShared",
    "vote",
    "tpc_finish",
    "tpc_abort",
    "sendBlob",
    "get_size_info",
    "no_such_method",
];

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn value(rng: &mut Rng, depth: u32) -> Value {
    let pick = if depth > 2 {
        rng.below(8)
    } else {
        rng.below(12)
    };
    match pick {
        0 => Value::Nil,
        1 => Value::Bool(rng.below(2) == 1),
        2 => Value::Int(match rng.below(4) {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            _ => rng.next() as i64 % 1000,
        }),
        3 => Value::Float(rng.below(1000) as f64 / 7.0),
        // 8-byte ids (small values, so they hit real objects and transactions) are common.
        4 | 5 => Value::Bytes(rng.below(4).to_be_bytes().to_vec()),
        6 => Value::Bytes((0..rng.below(20)).map(|_| rng.next() as u8).collect()),
        7 => Value::Str(
            [
                "",
                "1",
                "sessions",
                "nope",
                "x.tmp-",
                "../../etc/passwd.tmp",
                " ",
            ][rng.below(7) as usize]
                .into(),
        ),
        8 | 9 => Value::Tuple((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
        10 => Value::List((0..rng.below(3)).map(|_| value(rng, depth + 1)).collect()),
        _ => Value::Map(
            (0..rng.below(3))
                .map(|_| (Value::Str("k".into()), value(rng, depth + 1)))
                .collect(),
        ),
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Connect, handshake, and (usually) register first so the registered methods are reached.
fn session(port: u16, enc: Encoding, rng: &mut Rng, calls: usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if read_frame(&mut s).is_none() {
        return;
    }
    let hs: &[u8] = if enc == Encoding::Msgpack {
        b"M5"
    } else {
        b"Z5"
    };
    if s.write_all(&frame(hs)).is_err() {
        return;
    }
    let mut msgid = 1i64;
    if rng.below(5) > 0 {
        let storage = if rng.below(3) == 0 { "sessions" } else { "1" };
        let p = wire::encode_request(
            enc,
            &Value::Int(msgid),
            false,
            "register",
            &[Value::Str(storage.into()), Value::Bool(false)],
        )
        .unwrap();
        msgid += 1;
        if s.write_all(&frame(&p)).is_err() || read_frame(&mut s).is_none() {
            return;
        }
    }
    for _ in 0..calls {
        let method = METHODS[rng.below(METHODS.len() as u64) as usize];
        let args: Vec<Value> = (0..rng.below(6)).map(|_| value(rng, 0)).collect();
        let oneway = rng.below(3) == 0;
        let p = match wire::encode_request(enc, &Value::Int(msgid), oneway, method, &args) {
            Ok(p) => p,
            Err(_) => continue,
        };
        msgid += 1;
        if s.write_all(&frame(&p)).is_err() {
            return;
        }
        if !oneway && method != "vote" {
            // Read until our reply (skipping server calls); a close ends the session.
            loop {
                let Some(f) = read_frame(&mut s) else {
                    return;
                };
                match wire::decode_server_message(enc, &f) {
                    Ok(ServerMessage::Reply { .. } | ServerMessage::Error { .. }) => break,
                    Ok(ServerMessage::Call { .. }) => continue,
                    Err(e) => panic!("undecodable server message: {e}"),
                }
            }
        }
    }
}

/// A well-behaved exchange: register, new_oids, a commit, a load.
fn good_client(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    read_frame(&mut s).expect("announcement");
    s.write_all(&frame(b"M5")).unwrap();
    let enc = Encoding::Msgpack;
    let call = |s: &mut TcpStream, id: i64, m: &str, a: Vec<Value>| -> Value {
        let p = wire::encode_request(enc, &Value::Int(id), false, m, &a).unwrap();
        s.write_all(&frame(&p)).unwrap();
        loop {
            let f = read_frame(s).expect("reply");
            match wire::decode_server_message(enc, &f).unwrap() {
                ServerMessage::Reply { value, .. } => return value,
                ServerMessage::Error {
                    class_path, state, ..
                } => panic!("{m}: {class_path} {state:?}"),
                ServerMessage::Call { .. } => continue,
            }
        }
    };
    call(
        &mut s,
        1,
        "register",
        vec![Value::Str("1".into()), Value::Int(0)],
    );
    call(&mut s, 2, "ping", vec![]);
    let Value::Tuple(oids) = call(&mut s, 3, "new_oids", vec![Value::Int(1)]) else {
        panic!("new_oids");
    };
    let txn = Value::Int(4242);
    let oneway = |s: &mut TcpStream, m: &str, a: Vec<Value>| {
        let p = wire::encode_request(enc, &Value::Int(0), true, m, &a).unwrap();
        s.write_all(&frame(&p)).unwrap();
    };
    oneway(
        &mut s,
        "tpc_begin",
        vec![
            txn.clone(),
            Value::Bytes(vec![]),
            Value::Bytes(vec![]),
            Value::Map(vec![]),
            Value::Nil,
            Value::Str(" ".into()),
        ],
    );
    oneway(
        &mut s,
        "storea",
        vec![
            oids[0].clone(),
            Value::Bytes(vec![0; 8]),
            Value::Bytes(b"good data".to_vec()),
            txn.clone(),
        ],
    );
    call(&mut s, 5, "vote", vec![txn.clone()]);
    let tid = call(&mut s, 6, "tpc_finish", vec![txn]);
    let p = wire::encode_request(
        enc,
        &Value::Tuple(vec![
            oids[0].clone(),
            Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ]),
        false,
        "loadBefore",
        &[
            oids[0].clone(),
            Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ],
    )
    .unwrap();
    s.write_all(&frame(&p)).unwrap();
    loop {
        let f = read_frame(&mut s).expect("load reply");
        if let ServerMessage::Reply { value, .. } = wire::decode_server_message(enc, &f).unwrap() {
            assert_eq!(
                value,
                Value::Tuple(vec![Value::Bytes(b"good data".to_vec()), tid, Value::Nil])
            );
            break;
        }
    }
}

#[test]
fn random_calls_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::Serve::in_dir(dir.path())
        .memory("sessions")
        .file(&dir.path().join("Data.fs"))
        .blob_dir(&dir.path().join("blobs"))
        .start();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..120 {
        let enc = if round % 2 == 0 {
            Encoding::Msgpack
        } else {
            Encoding::Pickle
        };
        session(server.port(), enc, &mut rng, 25);
        if round % 40 == 39 {
            good_client(server.port());
        }
        if Instant::now() > deadline {
            break;
        }
    }
    good_client(server.port());
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    assert_eq!(server.terminate(), 0);
}
