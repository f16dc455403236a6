//! Hostile input against `zodbctl serve` on 127.0.0.1: malformed frames, bad handshakes,
//! garbage payloads in both encodings, wrong calls, clients that never read, slowloris and a
//! client that sits on the commit lock. Throughout, a well-behaved real Python
//! `ZEO.ClientStorage` under a `ZODB.DB` (`tests/python/zeo_hostile_client.py`) keeps
//! committing and loading, and after every step it must have made progress; at the end the
//! server must still be alive, stop cleanly on SIGTERM and never have panicked. The tests
//! with calls that touch transactions serve a Data.fs, which Python's fstest and FileStorage
//! check afterwards; the others a memory storage.
//!
//! Abusive clients are raw TCP sockets. Well-formed messages they send are written with the
//! crate's wire codec (itself checked against Python in `wire_python.rs`); the garbage is
//! hand-made bytes. Every wait is bounded.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::raw::{Got, Raw, WAIT, b, s, short};
use support::{Serve, Server};

use zodbctl::zeo::wire::{self, Encoding, ServerMessage, Value};

const CLIENT: &str = include_str!("python/zeo_hostile_client.py");
/// fstest, then the counter the Python client committed, read with Python's FileStorage.
const FILE_CHECK: &str = "
import sys
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.scripts import fstest
fstest.check(sys.argv[1])
db = ZODB.DB(FileStorage(sys.argv[1], read_only=True))
n = db.open().root()['n']
assert n == int(sys.argv[2]), (n, sys.argv[2])
db.close()
";
const MAXTID: [u8; 8] = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

// ---------------------------------------------------------------------------------------
// The server under test.

/// Resident memory of process `pid` in kB (VmRSS).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The well-behaved Python client.

struct PyClient {
    child: Child,
    lines: mpsc::Receiver<String>,
    progress: u64,
    big_oid: [u8; 8],
    stopfile: PathBuf,
    stderr: PathBuf,
}

impl PyClient {
    fn start(dir: &Path, port: u16) -> PyClient {
        let stopfile = dir.join("stop-client");
        let stderr = dir.join("client.err");
        let port = port.to_string();
        let mut child = support::python_command(
            CLIENT,
            &[
                "127.0.0.1",
                &port,
                stopfile.to_str().expect("utf-8 path"),
                "240",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr).expect("create client.err"))
        .spawn()
        .expect("spawn the Python client");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = PyClient {
            child,
            lines,
            progress: 0,
            big_oid: [0; 8],
            stopfile,
            stderr,
        };
        let line = c.next_line(Duration::from_secs(60), "client start");
        let hex = line
            .strip_prefix("big ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        for (i, b) in c.big_oid.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex oid");
        }
        c
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    fn next_line(&mut self, within: Duration, step: &str) -> String {
        match self.lines.recv_timeout(within) {
            Ok(l) => l,
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the Python client made no progress ({step}; exit status {status:?}):\n{}",
                    self.stderr_text()
                )
            }
        }
    }

    /// Take in what the client printed so far without waiting.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.note(&line);
        }
    }

    fn note(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("ok ").and_then(|n| n.parse().ok()) {
            self.progress = n;
        }
    }

    /// Wait until the client completes `rounds` more commit+load rounds.
    fn advance(&mut self, rounds: u64, step: &str) {
        self.drain();
        let target = self.progress + rounds;
        let deadline = Instant::now() + WAIT;
        while self.progress < target {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left, step);
            self.note(&line);
        }
    }

    fn finish(mut self) -> u64 {
        File::create(&self.stopfile).expect("create the stop file");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left, "client finish");
            if let Some(n) = line.strip_prefix("done ") {
                let n = n.parse().expect("done count");
                let status = self.child.wait().expect("wait for the Python client");
                assert!(status.success(), "client: {}", self.stderr_text());
                return n;
            }
            self.note(&line);
        }
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Both processes of one test, checked together after every abusive step.
struct Rig {
    _dir: tempfile::TempDir,
    server: Server,
    client: PyClient,
    /// The Data.fs when the server serves a file storage.
    datafs: Option<PathBuf>,
}

impl Rig {
    /// A server with a memory storage "1".
    fn start(extra: &[&str]) -> Rig {
        Rig::start_with(false, extra)
    }

    /// A server with a file storage "1" (a new Data.fs), checked with fstest at the end.
    fn start_file(extra: &[&str]) -> Rig {
        Rig::start_with(true, extra)
    }

    fn start_with(file: bool, extra: &[&str]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let datafs = file.then(|| dir.path().join("Data.fs"));
        let serve = match &datafs {
            Some(p) => Serve::in_dir(dir.path()).file(p),
            None => Serve::in_dir(dir.path()).memory("1"),
        };
        let server = serve.args(extra).start();
        let client = PyClient::start(dir.path(), server.port());
        Rig {
            _dir: dir,
            server,
            client,
            datafs,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// After an abusive step: the well-behaved client still commits and loads, and the
    /// server is alive and has not panicked.
    fn healthy(&mut self, step: &str) {
        self.client.advance(2, step);
        self.server.assert_healthy(step);
    }

    fn finish(self) {
        let Rig {
            _dir,
            mut server,
            client,
            datafs,
        } = self;
        let rounds = client.finish();
        assert!(rounds > 0);
        server.stop();
        // Nothing the abusive clients did damaged the file: Python's fstest accepts it and
        // Python's FileStorage reads the client's last commit.
        if let Some(path) = datafs {
            support::run_python(
                FILE_CHECK,
                &[path.to_str().expect("utf-8 path"), &rounds.to_string()],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw (abusive) connections: `support::raw`.

/// A method name and its arguments.
type Call = (&'static str, Vec<Value>);

fn be32(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

// ---------------------------------------------------------------------------------------

#[test]
fn handshakes_and_frames() {
    let mut rig = Rig::start(&[]);
    let port = rig.server.port();

    // ruok: the announcement, one JSON status frame, then close.
    let mut r = Raw::connect(port);
    r.send_frame(b"ruok");
    assert_eq!(r.frame().as_deref(), Some(&b"Z5"[..]));
    let status = r.frame().expect("the ruok status");
    let json: serde_json::Value = serde_json::from_slice(&status).expect("ruok JSON");
    assert!(json["1"]["connections"].is_u64(), "ruok: {json}");
    r.expect_closed("ruok");
    rig.healthy("ruok");

    // Bad handshakes close.
    for hs in [
        &b"M4"[..],
        b"M55",
        b"Z6",
        b"X5",
        b"5",
        b"",
        b"ruok!",
        &[0xff; 3000][..],
    ] {
        let mut r = Raw::connect(port);
        assert!(r.frame().is_some());
        r.send_frame(hs);
        r.expect_closed(&format!("handshake {hs:?}"));
    }
    // An HTTP request instead of a frame: its first four bytes are a ~1.2 GB length.
    let mut r = Raw::connect(port);
    r.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    r.expect_closed("HTTP request");
    rig.healthy("bad handshakes");

    // Oversized frames (beyond the 256 MiB default) close without allocating them: before
    // and after the handshake, and after registration.
    let rss_before = rss_kb(rig.server.pid());
    for len in [u32::MAX, 300 << 20, (256 << 20) + 1] {
        let mut r = Raw::connect(port);
        r.write(&be32(len));
        r.write(&[0u8; 65536]);
        r.expect_closed("oversized handshake frame");
        let mut r = Raw::handshake(port, b'M');
        r.write(&be32(len));
        r.write(&[0x94; 65536]);
        r.expect_closed("oversized frame");
        let mut r = Raw::registered(port, b'Z');
        r.write(&be32(len));
        r.write(&[0x80; 65536]);
        r.expect_closed("oversized frame after register");
    }
    let rss_after = rss_kb(rig.server.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "oversized frames grew the server from {rss_before} kB to {rss_after} kB"
    );
    rig.healthy("oversized frames");

    // A zero-length frame after the handshake.
    for letter in [b'M', b'Z'] {
        let mut r = Raw::handshake(port, letter);
        r.send_frame(b"");
        r.closed_or_serving(false, "empty frame");
        let mut r = Raw::registered(port, letter);
        r.send_frame(b"");
        r.closed_or_serving(true, "empty frame after register");
    }
    rig.healthy("empty frames");

    // Truncated frames, then close: inside the length prefix and inside the payload, before
    // the handshake, after it, and after registration (with a transaction begun).
    let mut r = Raw::connect(port);
    r.write(&[0, 0]);
    let _ = r.s.shutdown(Shutdown::Both);
    let mut r = Raw::connect(port);
    r.write(&be32(2));
    r.write(b"M");
    let _ = r.s.shutdown(Shutdown::Write);
    r.expect_closed("truncated handshake");
    for letter in [b'M', b'Z'] {
        let mut r = Raw::handshake(port, letter);
        r.write(&be32(1000));
        r.write(&[1u8; 10]);
        let _ = r.s.shutdown(Shutdown::Write);
        r.expect_closed("truncated frame");
        let mut r = Raw::registered(port, letter);
        r.oneway(
            "tpc_begin",
            &[
                Value::Int(7),
                b(b""),
                b(b""),
                Value::Map(vec![]),
                Value::Nil,
                s(" "),
            ],
        );
        let full = wire::encode_request(
            r.enc,
            &Value::Int(0),
            true,
            "storea",
            &[
                b(&[0, 0, 0, 0, 0, 0, 0, 9]),
                b(&[0; 8]),
                b(b"data"),
                Value::Int(7),
            ],
        )
        .expect("encode storea");
        r.write(&be32(full.len() as u32));
        r.write(&full[..full.len() / 2]);
        drop(r);
    }
    rig.healthy("truncated frames");

    rig.finish();
}

/// Payloads that are not messages, in msgpack. Each is sent on a fresh connection, before
/// and after registration.
fn msgpack_garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut deep = vec![0x91u8; 100_000];
    deep.push(0x01);
    let mut deep_map = Vec::new();
    for _ in 0..50_000 {
        deep_map.extend_from_slice(&[0x81, 0xa1, b'k']);
    }
    deep_map.push(0xc0);
    let mut register_trailing = wire::encode_request(
        Encoding::Msgpack,
        &Value::Int(3),
        false,
        "register",
        &[s("1"), Value::Bool(false)],
    )
    .expect("encode");
    register_trailing.extend_from_slice(&[0xc1, 0xc1, 0xc1]);
    vec![
        ("reserved byte", vec![0xc1]),
        ("text", b"hello, world".to_vec()),
        ("an int", vec![0x01]),
        ("a 3-array", vec![0x93, 0x01, 0x02, 0x03]),
        (
            "a 5-array",
            vec![0x95, 0x01, 0xc2, 0xa4, b'p', b'i', b'n', b'g', 0x90, 0x90],
        ),
        ("int name", vec![0x94, 0x01, 0xc2, 0x05, 0x90]),
        (
            "bin name",
            [&[0x94, 0x01, 0xc2, 0xc4, 0x04][..], b"ping", &[0x90]].concat(),
        ),
        (
            "args not an array",
            [&[0x94, 0x01, 0xc2, 0xa8][..], b"register", &[0x05]].concat(),
        ),
        (
            "args a map",
            [
                &[0x94, 0x01, 0xc2, 0xa8][..],
                b"register",
                &[0x81, 0x01, 0x02],
            ]
            .concat(),
        ),
        (
            "invalid UTF-8 name",
            vec![0x94, 0x01, 0xc2, 0xa2, 0xff, 0xfe, 0x90],
        ),
        (
            "map msgid",
            vec![
                0x94, 0x81, 0x01, 0x02, 0xc2, 0xa4, b'p', b'i', b'n', b'g', 0x90,
            ],
        ),
        (
            "nil msgid",
            vec![0x94, 0xc0, 0xc2, 0xa4, b'p', b'i', b'n', b'g', 0x90],
        ),
        (
            "float flag",
            vec![
                0x94, 0x05, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xa4, b'p', b'i', b'n', b'g', 0x90,
            ],
        ),
        (
            "ext type",
            vec![
                0x94, 0xd4, 0x01, 0x00, 0xc2, 0xa4, b'p', b'i', b'n', b'g', 0x90,
            ],
        ),
        ("100k nested arrays", deep),
        ("50k nested maps", deep_map),
        (
            "array32 of 4G elements",
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "map32 of 4G entries",
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("bin32 of 4 GB", vec![0xc6, 0xff, 0xff, 0xff, 0xff, 0x01]),
        (
            "str32 of 4 GB in a message",
            [&[0x94, 0x01, 0xc2, 0xdb, 0xff, 0xff, 0xff, 0xf0][..], b"x"].concat(),
        ),
        ("trailing bytes", register_trailing),
        ("1 MB of 0xff", vec![0xff; 1 << 20]),
    ]
}

/// Payloads that are not messages, in pickle; some try to make the server run code.
fn pickle_garbage(pwned: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let cmd = format!("touch {}", pwned.display());
    let mut global_call = b"\x80\x03cos\nsystem\nX".to_vec();
    global_call.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    global_call.extend_from_slice(cmd.as_bytes());
    global_call.extend_from_slice(b"\x85R.");
    // The same call, placed where a message's args go.
    let mut in_args = b"\x80\x03(K\x01\x89X\x08\x00\x00\x00registercos\nsystem\nX".to_vec();
    in_args.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    in_args.extend_from_slice(cmd.as_bytes());
    in_args.extend_from_slice(b"\x85R\x85t.");
    let mut builtins_eval = b"\x80\x03cbuiltins\neval\nX".to_vec();
    let code = format!("open({:?}, 'w')", pwned.display().to_string());
    builtins_eval.extend_from_slice(&(code.len() as u32).to_le_bytes());
    builtins_eval.extend_from_slice(code.as_bytes());
    builtins_eval.extend_from_slice(b"\x85R.");
    let register = wire::encode_request(
        Encoding::Pickle,
        &Value::Int(3),
        false,
        "register",
        &[s("1"), Value::Bool(false)],
    )
    .expect("encode");
    let truncated = register[..register.len() - 1].to_vec();
    let mut deep_lists = b"\x80\x03".to_vec();
    deep_lists.extend(std::iter::repeat_n(b']', 100_000));
    deep_lists.extend(std::iter::repeat_n(b'a', 99_999));
    deep_lists.push(b'.');
    let mut deep_tuples = b"\x80\x03".to_vec();
    deep_tuples.extend(std::iter::repeat_n(b'(', 100_000));
    deep_tuples.extend(std::iter::repeat_n(b't', 100_000));
    deep_tuples.push(b'.');
    let mut marks = b"\x80\x03".to_vec();
    marks.extend(std::iter::repeat_n(b'(', 1_000_000));
    marks.push(b'.');
    let mut memo = b"\x80\x03N".to_vec();
    for i in 0..50_000u32 {
        memo.push(b'r');
        memo.extend_from_slice(&i.to_le_bytes());
    }
    memo.push(b'.');
    vec![
        ("text", b"hello, world".to_vec()),
        ("STOP only", b".".to_vec()),
        ("an int", b"\x80\x03K\x01.".to_vec()),
        ("a 3-tuple", b"\x80\x03K\x01K\x02K\x03\x87.".to_vec()),
        ("int name", b"\x80\x03(K\x01\x89K\x05)t.".to_vec()),
        (
            "args an int",
            b"\x80\x03(K\x01\x89X\x08\x00\x00\x00registerK\x05t.".to_vec(),
        ),
        ("os.system", global_call),
        ("os.system in args", in_args),
        ("builtins.eval", builtins_eval),
        ("truncated register", truncated),
        ("100k nested lists", deep_lists),
        ("100k nested tuples", deep_tuples),
        ("1M marks", marks),
        ("50k memo puts", memo),
        ("BINBYTES of 4 GB", b"\x80\x03B\xff\xff\xff\xffabc".to_vec()),
        (
            "LONG4 of 2 GB",
            b"\x80\x03\x8b\xff\xff\xff\x7f\x01.".to_vec(),
        ),
        (
            "protocol 5 frame of 2^63",
            b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7fN.".to_vec(),
        ),
        (
            "invalid UTF-8 text",
            b"\x80\x03X\x02\x00\x00\x00\xff\xfe.".to_vec(),
        ),
        ("stack underflow", b"\x80\x03t.".to_vec()),
        ("unknown opcode", b"\x80\x03\xfe.".to_vec()),
        ("protocol 9", b"\x80\x09N.".to_vec()),
        ("1 MB of 0xff", vec![0xff; 1 << 20]),
    ]
}

#[test]
fn garbage_payloads_in_both_encodings() {
    // The server announces M5 here, so the Python client speaks msgpack; raw clients answer
    // either letter (the server accepts both, README decision).
    let mut rig = Rig::start(&["--msgpack"]);
    let port = rig.server.port();
    let pwned = rig.dir().join("PWNED");
    let sets = [(b'M', msgpack_garbage()), (b'Z', pickle_garbage(&pwned))];
    for (letter, set) in &sets {
        for (what, payload) in set {
            let step = format!("{} garbage: {what}", *letter as char);
            let mut r = Raw::handshake(port, *letter);
            r.send_frame(payload);
            r.closed_or_serving(false, &step);
            let mut r = Raw::registered(port, *letter);
            r.send_frame(payload);
            r.closed_or_serving(true, &step);
            rig.server.assert_healthy(&step);
        }
        rig.healthy(&format!("{} garbage", *letter as char));
    }
    assert!(!pwned.exists(), "a pickle made the server run code");
    rig.finish();
}

#[test]
fn wrong_calls() {
    let mut rig = Rig::start_file(&[]);
    let port = rig.server.port();
    let oid = rig.client.big_oid;
    for letter in [b'M', b'Z'] {
        let l = letter as char;
        // Synchronous calls with wrong argument types or arity get an error reply (with
        // their msgid) and the connection keeps serving.
        let mut r = Raw::registered(port, letter);
        let bad: Vec<(&str, Vec<Value>)> = vec![
            ("loadBefore", vec![]),
            ("loadBefore", vec![b(&oid)]),
            ("loadBefore", vec![Value::Int(5), s("x")]),
            ("loadBefore", vec![b(b"short"), b(&MAXTID)]),
            ("loadBefore", vec![Value::List(vec![b(&oid)]), b(&MAXTID)]),
            ("loadSerial", vec![Value::Nil, Value::Nil]),
            ("getTid", vec![Value::Map(vec![])]),
            ("history", vec![b(&oid), s("many")]),
            ("new_oids", vec![s("many")]),
            ("new_oids", vec![Value::Float(1e300)]),
            ("iterator_next", vec![Value::Int(12345)]),
            ("vote", vec![Value::Int(999)]),
        ];
        for (i, (method, args)) in bad.iter().enumerate() {
            let id = 100 + i as i64;
            let step = format!("{l}: {method}{args:?}");
            assert!(r.call(id, method, args), "{step}: send failed");
            match r.reply(id) {
                Some(ServerMessage::Error { class_path, .. }) => {
                    assert!(!class_path.is_empty(), "{step}")
                }
                other => panic!(
                    "{step}: expected an error reply, got {:?}",
                    other.as_ref().map(short)
                ),
            }
        }
        // Arity beyond what a method takes, and odd-but-valid values: any reply, no hang.
        for (i, (method, args)) in [
            (
                "lastTransaction",
                vec![Value::Int(1), Value::Int(2), Value::Int(3)],
            ),
            ("ping", vec![b(&[0; 100])]),
            ("new_oids", vec![Value::Int(-5)]),
            ("new_oids", vec![Value::Int(i64::MAX)]),
            ("history", vec![b(&oid), Value::Int(i64::MAX)]),
            ("history", vec![b(&oid), Value::Int(-1)]),
            ("undoLog", vec![Value::Int(i64::MIN), Value::Int(i64::MAX)]),
            ("undoLog", vec![s("a"), s("b")]),
            (
                "undoInfo",
                vec![
                    Value::Int(0),
                    Value::Int(20),
                    Value::Map(vec![(s("x"), s("y"))]),
                ],
            ),
            ("record_iternext", vec![b(&[0xff; 8])]),
            ("set_client_label", vec![Value::Map(vec![])]),
        ]
        .iter()
        .enumerate()
        {
            let id = 200 + i as i64;
            let step = format!("{l}: {method}{args:?}");
            r.call(id, method, args);
            assert!(r.reply(id).is_some(), "{step}: connection closed");
        }
        r.closed_or_serving(true, "after wrong calls");
        let tid = match r.reply_to_last_transaction() {
            Value::Bytes(t) => t,
            v => panic!("lastTransaction returned {v:?}"),
        };
        assert_eq!(tid.len(), 8);
        rig.server.assert_healthy("wrong calls");

        // register with the wrong arity or an unknown storage: an error reply, and the
        // connection may register properly afterwards (§1.5).
        let mut r = Raw::handshake(port, letter);
        r.call(1, "register", &[]);
        assert!(matches!(r.reply(1), Some(ServerMessage::Error { .. })));
        r.call(2, "register", &[s("nope"), Value::Bool(false)]);
        assert!(matches!(r.reply(2), Some(ServerMessage::Error { .. })));
        r.call(
            3,
            "register",
            &[Value::Int(1), Value::Bool(false), s("extra credentials")],
        );
        assert!(matches!(r.reply(3), Some(ServerMessage::Error { .. })));
        r.call(4, "register", &[s("1"), Value::Bool(false)]);
        assert!(matches!(r.reply(4), Some(ServerMessage::Reply { .. })));

        // A method before registration, an unknown method, a second register: the connection
        // closes (the reference's "Invalid method").
        let mut r = Raw::handshake(port, letter);
        r.call(1, "loadBefore", &[b(&oid), b(&MAXTID)]);
        assert!(r.reply(1).is_none(), "{l}: loadBefore before register");
        for method in ["get_size_info", "os.system", "__init__", "_conn", ""] {
            let mut r = Raw::registered(port, letter);
            r.call(9, method, &[s("x")]);
            assert!(r.reply(9).is_none(), "{l}: method {method:?} was answered");
        }
        let mut r = Raw::registered(port, letter);
        r.call(9, "register", &[s("1"), Value::Bool(false)]);
        assert!(r.reply(9).is_none(), "{l}: second register");
        rig.healthy(&format!("{l}: wrong calls"));

        // One-way calls that fail: never answered; the connection closes (or, where the error
        // can wait for vote, keeps serving).
        let one_way_failures: Vec<(&str, Vec<Call>)> = vec![
            (
                "storea without tpc_begin",
                vec![("storea", vec![b(&oid), b(&[0; 8]), b(b"x"), Value::Int(42)])],
            ),
            (
                "tpc_begin with wrong types",
                vec![(
                    "tpc_begin",
                    vec![s("t"), Value::Int(1), Value::Int(2), Value::Int(3)],
                )],
            ),
            ("tpc_begin without arguments", vec![("tpc_begin", vec![])]),
            (
                "storea with a wrong oid",
                vec![
                    (
                        "tpc_begin",
                        vec![
                            Value::Int(5),
                            b(b""),
                            b(b""),
                            Value::Map(vec![]),
                            Value::Nil,
                            s(" "),
                        ],
                    ),
                    (
                        "storea",
                        vec![Value::Int(1), b(&[0; 8]), b(b"x"), Value::Int(5)],
                    ),
                ],
            ),
            (
                "storea for another transaction",
                vec![
                    (
                        "tpc_begin",
                        vec![
                            Value::Int(5),
                            b(b""),
                            b(b""),
                            Value::Map(vec![]),
                            Value::Nil,
                            s(" "),
                        ],
                    ),
                    ("storea", vec![b(&oid), b(&[0; 8]), b(b"x"), Value::Int(6)]),
                ],
            ),
            ("unknown one-way method", vec![("launch_missiles", vec![])]),
            (
                "one-way loadBefore",
                vec![("loadBefore", vec![b(&oid), b(&MAXTID)])],
            ),
        ];
        for (what, calls) in &one_way_failures {
            let mut r = Raw::registered(port, letter);
            for (method, args) in calls {
                r.oneway(method, args);
            }
            r.closed_or_serving(true, &format!("{l}: one-way {what}"));
            // Whatever happened, the transaction (if any) is gone with the connection.
            drop(r);
            rig.server.assert_healthy(what);
        }
        rig.healthy(&format!("{l}: one-way failures"));
    }
    rig.finish();
}

impl Raw {
    fn reply_to_last_transaction(&mut self) -> Value {
        self.call(77, "lastTransaction", &[]);
        match self.reply(77) {
            Some(ServerMessage::Reply { value, .. }) => value,
            other => panic!("lastTransaction: {:?}", other.as_ref().map(short)),
        }
    }
}

#[test]
fn abusive_clients() {
    abusive_clients_with(&[]);
}

/// The same with the connections spread over several network threads: the Python client's
/// commits then push invalidations to the abusive clients' sockets from another thread,
/// which is where a client that does not read gets dropped.
#[test]
fn abusive_clients_on_several_threads() {
    abusive_clients_with(&["--threads", "3"]);
}

fn abusive_clients_with(extra: &[&str]) {
    // A 3 s transaction timeout, so that a client sitting on the commit lock is dropped.
    let mut args = vec!["-t", "3"];
    args.extend_from_slice(extra);
    let mut rig = Rig::start_file(&args);
    let port = rig.server.port();
    let oid = rig.client.big_oid;

    // A client that sends many loads of a 1 MB object and never reads: the server buffers a
    // bounded amount for it, then closes it, while the Python client keeps being served.
    const LOADS: usize = 300;
    let mut r = Raw::registered(port, b'M');
    for i in 0..LOADS {
        assert!(r.call(1000 + i as i64, "loadBefore", &[b(&oid), b(&MAXTID)]));
    }
    rig.healthy("a client that does not read");
    // Keep not reading until the server gives up on the client: draining the socket earlier
    // would let a server that has not reached its bound yet go on sending.
    let deadline = Instant::now() + WAIT;
    while !rig.server.log().contains("does not read") {
        assert!(
            Instant::now() < deadline,
            "the server kept buffering for a client that does not read"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = r.expect_closed("a client that does not read");
    assert!(
        got < LOADS * (1 << 20) / 2,
        "the server sent {got} bytes to a client that did not read (bound not enforced?)"
    );
    assert!(
        rig.server.log().contains("does not read"),
        "no log line for the dropped reader"
    );
    rig.healthy("after the non-reader");

    // Slowloris: many connections that each dribble a frame one byte at a time (in the
    // length prefix, in the handshake, in a message); meanwhile the client is served.
    let mut slow = Vec::new();
    for i in 0..30 {
        let mut r = match i % 3 {
            0 => Raw::connect(port),
            1 => Raw::handshake(port, b'Z'),
            _ => Raw::registered(port, b'M'),
        };
        r.write(&[0]);
        slow.push(r);
    }
    rig.client.drain();
    let before = rig.client.progress;
    // Dribble for at least 3 s, and until the client has done two rounds meanwhile (a
    // loaded machine may be slow, so no fixed rate is asserted).
    let start = Instant::now();
    let mut sent = 1;
    while start.elapsed() < Duration::from_secs(3) || rig.client.progress < before + 2 {
        assert!(
            start.elapsed() < WAIT,
            "the Python client was starved by slowloris connections ({} → {})",
            before,
            rig.client.progress
        );
        for r in &mut slow {
            // Length prefix 0x00ffffff, then payload bytes: never a complete frame.
            r.write(&[if sent < 4 { 0xff } else { 0x90 }]);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
        rig.client.drain();
    }
    rig.healthy("slowloris");
    drop(slow);
    rig.healthy("slowloris closed");

    // A client that takes the commit lock (vote) and then sits on it: the transaction
    // timeout aborts it, closes it, and the Python client's commits resume.
    let mut r = Raw::registered(port, b'Z');
    r.call(2, "new_oids", &[Value::Int(1)]);
    let new_oid = match r.reply(2) {
        Some(ServerMessage::Reply {
            value: Value::Tuple(v) | Value::List(v),
            ..
        }) if !v.is_empty() => v[0].clone(),
        other => panic!("new_oids: {:?}", other.as_ref().map(short)),
    };
    r.oneway(
        "tpc_begin",
        &[
            Value::Int(1),
            b(b"hog"),
            b(b""),
            Value::Map(vec![]),
            Value::Nil,
            s(" "),
        ],
    );
    r.oneway(
        "storea",
        &[new_oid, b(&[0; 8]), b(b"\x80\x03N."), Value::Int(1)],
    );
    r.call(3, "vote", &[Value::Int(1)]);
    assert!(
        matches!(r.reply(3), Some(ServerMessage::Reply { .. })),
        "vote of the lock holder"
    );
    let held = Instant::now();
    // Meanwhile reads from other clients are served (the lock only orders commits).
    let mut reader = Raw::registered(port, b'M');
    reader.call(5, "loadBefore", &[b(&oid), b(&MAXTID)]);
    assert!(
        matches!(reader.reply(5), Some(ServerMessage::Reply { .. })),
        "a load while another client holds the commit lock"
    );
    // ... while the lock holder is still connected (had the load waited for the lock, the
    // timeout would have closed the holder first).
    assert!(
        matches!(r.read_some(&mut [0u8; 64]), Got::Nothing),
        "the load waited for the commit lock"
    );
    r.expect_closed("a client holding the commit lock");
    assert!(
        held.elapsed() >= Duration::from_secs(2),
        "closed before the timeout"
    );
    assert!(rig.server.log().contains("Transaction timeout"));
    rig.healthy("a client holding the commit lock");

    // Many connections opened and dropped at once.
    let conns: Vec<Raw> = (0..100).map(|_| Raw::connect(port)).collect();
    drop(conns);
    rig.healthy("connection burst");

    rig.finish();
}
