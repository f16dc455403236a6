//! What a commit's messages look like on the wire to each client, and in which order
//! (zeo-protocol.md §4.5), with a second client waiting for the commit lock, which is where
//! the server hands the invalidation over with that client's vote reply.
//!
//! Three raw connections to one `zodbctl serve` on a Unix socket: X commits, Y votes while X
//! holds the lock (so it waits), Z only watches. A `send` on a Unix stream socket has put
//! its bytes in the peer's receive queue when it returns (no network stack in between, unlike
//! loopback TCP, where a busy machine may defer delivery), so "Z can read the invalidation as
//! soon as X has its reply" checks that the server wrote to Z before it answered X.

mod support;

use std::time::{Duration, Instant};

use support::Serve;
use support::raw::{Got, Raw, b, s, short};
use zodbctl::zeo::wire::{self, ServerMessage, Value};

const Z64: [u8; 8] = [0; 8];

/// A server message, decoded.
fn next(r: &mut Raw) -> ServerMessage {
    let payload = r.frame().expect("the server closed the connection");
    wire::decode_server_message(r.enc, &payload).expect("a decodable server message")
}

/// The next message that is not `info` (the committer's size report, which ZEO sends
/// alongside `tpc_finish` and which carries no ordering rule of its own).
fn next_but_info(r: &mut Raw) -> ServerMessage {
    loop {
        let m = next(r);
        if !matches!(&m, ServerMessage::Call { method, .. } if method == "info") {
            return m;
        }
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

/// `invalidateTransaction(tid, oids)`'s arguments, or a failure naming what came instead.
fn invalidation(m: &ServerMessage) -> (Vec<u8>, Vec<Vec<u8>>) {
    match m {
        ServerMessage::Call { method, args } if method == "invalidateTransaction" => {
            let oids = match &args[1] {
                Value::List(v) | Value::Tuple(v) => v.iter().map(bytes).collect(),
                other => panic!("oids: {other:?}"),
            };
            (bytes(&args[0]), oids)
        }
        other => panic!("expected invalidateTransaction, got {}", short(other)),
    }
}

/// The value of the reply to `msgid`, with nothing else before it but `info`.
fn reply_value(m: ServerMessage, msgid: i64) -> Value {
    match m {
        ServerMessage::Reply { msgid: id, value } if id == Value::Int(msgid) => value,
        other => panic!("expected the reply to call {msgid}, got {}", short(&other)),
    }
}

/// Nothing arrives on `r` within `d`.
fn silent_for(r: &mut Raw, d: Duration) -> bool {
    let until = Instant::now() + d;
    let mut buf = [0u8; 1];
    // Short polls, so the wait ends close to `until`.
    r.s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    while Instant::now() < until {
        match r.read_some(&mut buf) {
            Got::Nothing => {}
            Got::Data(_) | Got::Closed => return false,
        }
    }
    true
}

/// Begin transaction `txn` on `r` and store one new object in it; returns its oid.
fn begin_and_store(r: &mut Raw, msgid: i64, txn: i64) -> Vec<u8> {
    r.call(msgid, "new_oids", &[Value::Int(1)]);
    let oid = match reply_value(next_but_info(r), msgid) {
        Value::List(v) | Value::Tuple(v) => bytes(&v[0]),
        other => panic!("new_oids: {other:?}"),
    };
    let t = Value::Int(txn);
    r.oneway(
        "tpc_begin",
        &[
            t.clone(),
            b(b""),
            b(b"ordering"),
            Value::Map(vec![]),
            Value::Nil,
            s(" "),
        ],
    );
    // A minimal pickle (None, then None): the server stores records as they come.
    r.oneway("storea", &[b(&oid), b(&Z64), b(b"N.N."), t]);
    oid
}

fn commit_order(threads: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = dir.path().join("Data.fs");
    let sock = dir.path().join("zeo.sock");
    let mut server = Serve::in_dir(dir.path())
        .unix(&sock)
        .file(&fs)
        .args(["--threads", threads])
        .start();
    let mut x = Raw::registered(sock.as_path(), b'Z');
    let mut y = Raw::registered(sock.as_path(), b'Z');
    let mut z = Raw::registered(sock.as_path(), b'Z');
    // What registration left behind (nothing expected) is not mistaken for a commit's.
    assert!(silent_for(&mut z, Duration::from_millis(50)));

    // X votes and holds the commit lock.
    let ox = begin_and_store(&mut x, 10, 1);
    x.call(11, "vote", &[Value::Int(1)]);
    reply_value(next_but_info(&mut x), 11);

    // Y votes while X holds the lock: no answer until X is done.
    let oy = begin_and_store(&mut y, 20, 2);
    y.call(21, "vote", &[Value::Int(2)]);
    assert!(
        silent_for(&mut y, Duration::from_millis(200)),
        "Y's vote was answered while X held the commit lock"
    );

    // X finishes. By the time X has its reply, Z's invalidation is already on Z's socket.
    x.call(12, "tpc_finish", &[Value::Int(1)]);
    let t1 = bytes(&reply_value(next_but_info(&mut x), 12));
    assert!(
        z.s.readable_now(),
        "X had its tpc_finish reply before Z's invalidation was written"
    );
    assert_eq!(invalidation(&next(&mut z)), (t1.clone(), vec![ox.clone()]));

    // Y hears of X's commit first, then gets the lock: its vote's answer follows.
    assert_eq!(invalidation(&next(&mut y)), (t1.clone(), vec![ox.clone()]));
    reply_value(next_but_info(&mut y), 21);
    y.call(22, "tpc_finish", &[Value::Int(2)]);
    let t2 = bytes(&reply_value(next_but_info(&mut y), 22));
    assert!(t2 > t1, "tids out of order");

    // X (after its own reply, §4.5 rule 3) and Z hear of Y's commit.
    assert_eq!(
        invalidation(&next_but_info(&mut x)),
        (t2.clone(), vec![oy.clone()])
    );
    assert_eq!(invalidation(&next(&mut z)), (t2, vec![oy]));
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_commit_with_a_client_waiting_for_the_lock() {
    commit_order("1");
}

#[test]
fn a_commit_with_a_client_waiting_for_the_lock_on_several_threads() {
    commit_order("3");
}
