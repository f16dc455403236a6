//! A raw ZEO connection for tests that speak the protocol frame by frame: handshakes, calls
//! and replies as bytes on a blocking socket, with bounded waits. The hostile-input tests
//! send it garbage; the ordering tests watch what arrives where, and when.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zodbctl::zeo::wire::{self, Encoding, ServerMessage, Value};

/// How long any single expected event (a reply, a close) may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub enum Got {
    Data(usize),
    Closed,
    Nothing,
}

/// Where the server listens: a port on 127.0.0.1, or a Unix socket.
pub enum Target {
    Port(u16),
    Unix(PathBuf),
}

impl From<u16> for Target {
    fn from(port: u16) -> Target {
        Target::Port(port)
    }
}

impl From<&Path> for Target {
    fn from(path: &Path) -> Target {
        Target::Unix(path.to_path_buf())
    }
}

/// The connection's socket.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(d),
            Sock::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(d),
            Sock::Unix(s) => s.set_write_timeout(d),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }

    /// Whether bytes are waiting to be read right now, without reading them.
    pub fn readable_now(&self) -> bool {
        let fd = match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local, on a socket this connection owns.
        let n = unsafe {
            libc::recv(
                fd,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Raw {
    pub s: Sock,
    pub enc: Encoding,
}

impl Raw {
    pub fn connect(to: impl Into<Target>) -> Raw {
        let s = match to.into() {
            Target::Port(port) => {
                Sock::Tcp(TcpStream::connect(("127.0.0.1", port)).expect("connect to the server"))
            }
            Target::Unix(path) => {
                Sock::Unix(UnixStream::connect(path).expect("connect to the server"))
            }
        };
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        s.set_write_timeout(Some(WAIT)).expect("write timeout");
        Raw {
            s,
            enc: Encoding::Pickle,
        }
    }

    /// Connect, read the announcement, answer `letter` + `5`.
    pub fn handshake(to: impl Into<Target>, letter: u8) -> Raw {
        let mut r = Raw::connect(to);
        let ann = r.frame().expect("announcement");
        assert!(ann == b"Z5" || ann == b"M5", "announcement {ann:?}");
        r.send_frame(&[letter, b'5']);
        r.enc = if letter == b'M' {
            Encoding::Msgpack
        } else {
            Encoding::Pickle
        };
        r
    }

    /// Handshake and a successful `register('1', False)`.
    pub fn registered(to: impl Into<Target>, letter: u8) -> Raw {
        let mut r = Raw::handshake(to, letter);
        r.call(1, "register", &[s("1"), Value::Bool(false)]);
        match r.reply(1) {
            Some(ServerMessage::Reply { .. }) => r,
            other => panic!("register failed: {:?}", other.as_ref().map(short)),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    pub fn send_frame(&mut self, payload: &[u8]) -> bool {
        self.write(&wire::frame(payload))
    }

    pub fn call(&mut self, msgid: i64, method: &str, args: &[Value]) -> bool {
        let p = wire::encode_request(self.enc, &Value::Int(msgid), false, method, args)
            .expect("encode a call");
        self.send_frame(&p)
    }

    pub fn oneway(&mut self, method: &str, args: &[Value]) -> bool {
        let p = wire::encode_request(self.enc, &Value::Int(0), true, method, args)
            .expect("encode a one-way call");
        self.send_frame(&p)
    }

    pub fn read_some(&mut self, buf: &mut [u8]) -> Got {
        match self.s.read(buf) {
            Ok(0) => Got::Closed,
            Ok(n) => Got::Data(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Got::Nothing
            }
            Err(_) => Got::Closed,
        }
    }

    /// Fill `buf`; false if the connection closed first. Panics after `WAIT`.
    pub fn fill(&mut self, buf: &mut [u8]) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut got = 0;
        while got < buf.len() {
            match self.read_some(&mut buf[got..]) {
                Got::Data(n) => got += n,
                Got::Closed => return false,
                Got::Nothing => assert!(Instant::now() < deadline, "server stuck: no data"),
            }
        }
        true
    }

    /// One frame's payload, or None when the server closed the connection.
    pub fn frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        if !self.fill(&mut len) {
            return None;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.fill(&mut payload).then_some(payload)
    }

    /// The answer to call `msgid` (skipping server→client calls), or None if the server
    /// closed the connection first. A reply to a one-way call (msgid 0) is a failure.
    pub fn reply(&mut self, msgid: i64) -> Option<ServerMessage> {
        loop {
            let payload = self.frame()?;
            let m = wire::decode_server_message(self.enc, &payload)
                .unwrap_or_else(|e| panic!("undecodable server message: {e}"));
            let id = match &m {
                ServerMessage::Reply { msgid, .. } | ServerMessage::Error { msgid, .. } => msgid,
                ServerMessage::Call { .. } => continue,
            };
            assert_ne!(
                id,
                &Value::Int(0),
                "a one-way call was answered: {}",
                short(&m)
            );
            if id == &Value::Int(msgid) {
                return Some(m);
            }
        }
    }

    /// Read until the server closes the connection; returns how many bytes came first.
    pub fn expect_closed(&mut self, step: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match self.read_some(&mut buf) {
                Got::Data(n) => total += n,
                Got::Closed => return total,
                Got::Nothing => {
                    assert!(
                        Instant::now() < deadline,
                        "the server did not close the connection ({step})"
                    )
                }
            }
        }
    }

    /// After something odd was sent: the server either closed the connection or still
    /// answers a well-formed call (`register` before registration, `lastTransaction` after).
    /// Never stuck, never silent.
    pub fn closed_or_serving(&mut self, registered: bool, step: &str) {
        let sent = if registered {
            self.call(4242, "lastTransaction", &[])
        } else {
            self.call(4242, "register", &[s("1"), Value::Bool(false)])
        };
        if !sent {
            return; // already closed (reset)
        }
        match self.reply(4242) {
            None => {}
            Some(ServerMessage::Reply { .. }) => {}
            Some(m) => panic!("{step}: the probe call failed: {}", short(&m)),
        }
    }
}

/// A server message for a failure report, without megabytes of payload.
pub fn short(m: &ServerMessage) -> String {
    let text = format!("{m:?}");
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

pub fn s(x: &str) -> Value {
    Value::Str(x.into())
}

pub fn b(x: &[u8]) -> Value {
    Value::Bytes(x.to_vec())
}
