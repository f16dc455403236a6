//! The control-socket protocol shared by the manager and the control client.
//!
//! It is zdaemon's line protocol (supervisor.md §2.17), so zdaemon's own controller
//! (`zdaemon -s SOCKET -p PROGRAM status`) can read a zodbctl manager:
//!
//! * Unix stream socket, mode 0700; one request per connection.
//! * The request is the first line (up to `\n`) of what the client sends; anything after the
//!   newline is ignored. EOF before a newline → `Command not terminated by newline`; more than
//!   [`MAX_REQUEST`] bytes without a newline → `Command exceeds 10 KB`.
//! * The line is split on ASCII whitespace; the first word is the command. A blank line →
//!   `Empty command`; an unknown word → `Unknown command '<word>'; 'help' for a list`.
//!   Bytes that are not UTF-8 are answered like any unknown command (zdaemon dies on them).
//! * Every reply ends with exactly one `\n`, except `reopen_transcript`, which replies nothing.
//!
//! zdaemon's commands: `status` (the twelve-line block, [`StatusBlock`]), `start`, `stop`,
//! `restart`, `kill [N]`, `reopen_transcript`. Ours, added without changing theirs: `json`
//! (one JSON [`InstanceStatus`] record for `status --json` and the dashboard), `help`,
//! `version`.

use serde::{Deserialize, Serialize};

/// Longest request line accepted (zdaemon's limit).
pub const MAX_REQUEST: usize = 10_000;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Json,
    Start,
    Stop,
    Restart,
    /// `kill [N]`: the signal number, 15 when absent; `Err` holds the bad argument.
    Kill(Result<i32, String>),
    ReopenTranscript,
    Help,
    Version,
    Empty,
    Unknown(String),
}

/// What the manager does with the bytes received so far on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// A complete first line is there.
    Line(Request),
    /// Answer with this error and close.
    Error(&'static str),
    /// Keep reading.
    Incomplete,
}

/// Decide what to do with `buf` (everything received so far); `eof` when the peer half-closed.
pub fn frame(buf: &[u8], eof: bool) -> Framing {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Framing::Line(parse_request(&buf[..end])),
        None if buf.len() > MAX_REQUEST => Framing::Error("Command exceeds 10 KB"),
        None if eof => Framing::Error("Command not terminated by newline"),
        None => Framing::Incomplete,
    }
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Request {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    let Some(command) = words.next() else {
        return Request::Empty;
    };
    match command {
        "status" => Request::Status,
        "json" => Request::Json,
        "start" => Request::Start,
        "stop" => Request::Stop,
        "restart" => Request::Restart,
        "kill" => Request::Kill(match words.next() {
            None => Ok(15),
            Some(arg) => arg.parse::<i32>().map_err(|_| arg.to_owned()),
        }),
        "reopen_transcript" => Request::ReopenTranscript,
        "help" => Request::Help,
        "version" => Request::Version,
        other => Request::Unknown(other.to_owned()),
    }
}

/// The reply to a request that needs no manager state.
pub fn static_reply(req: &Request) -> Option<String> {
    match req {
        Request::Empty => Some("Empty command".into()),
        Request::Unknown(word) => Some(format!("Unknown command '{word}'; 'help' for a list")),
        Request::Kill(Err(arg)) => Some(format!("Bad signal '{arg}'")),
        Request::Help => Some(
            "Commands: status, json, start, stop, restart, kill [SIGNUM], reopen_transcript, \
             help, version"
                .into(),
        ),
        Request::Version => Some(format!("zodbctl {}", env!("CARGO_PKG_VERSION"))),
        _ => None,
    }
}

/// Add the single trailing newline every reply ends with.
pub fn terminate(mut reply: String) -> String {
    if !reply.ends_with('\n') {
        reply.push('\n');
    }
    reply
}

/// zdaemon's status block, byte for byte (§2.17). Wall-clock values are seconds since the
/// epoch; `None` prints as the integer `0`, as zdaemon does before the first spawn.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusBlock {
    pub now: f64,
    pub should_be_up: bool,
    pub delay: Option<f64>,
    pub backoff: u64,
    pub lasttime: Option<f64>,
    pub application: u32,
    pub testing: bool,
    pub manager: u32,
    pub backofflimit: u64,
    pub filename: String,
    pub args: Vec<String>,
}

impl StatusBlock {
    pub fn render(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "0".to_owned(), py_float);
        let args: Vec<String> = self.args.iter().map(|a| py_str(a)).collect();
        format!(
            "status={}\nnow={}\nshould_be_up={}\ndelay={}\nbackoff={}\nlasttime={}\n\
             application={}\ntesting={}\nmanager={}\nbackofflimit={}\nfilename={}\nargs=[{}]\n",
            if self.application != 0 {
                "running"
            } else {
                "stopped"
            },
            py_float(self.now),
            u8::from(self.should_be_up),
            opt(self.delay),
            self.backoff,
            opt(self.lasttime),
            self.application,
            u8::from(self.testing),
            self.manager,
            self.backofflimit,
            py_str(&self.filename),
            args.join(", "),
        )
    }
}

/// What the client needs from a status reply, read the way zdaemon's controller reads it:
/// the manager is up only if there is an `application=<digits>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedStatus {
    pub pid: u32,
    pub should_be_up: bool,
    pub testing: bool,
    pub manager: u32,
}

pub fn parse_status(reply: &str) -> Option<ParsedStatus> {
    let mut pid = None;
    let mut should_be_up = true;
    let mut testing = false;
    let mut manager = 0;
    for line in reply.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "application" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                pid = value.parse().ok();
            }
            "should_be_up" => should_be_up = value != "0",
            "testing" => testing = value != "0",
            "manager" => manager = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(ParsedStatus {
        pid: pid?,
        should_be_up,
        testing,
        manager,
    })
}

/// The machine-readable record behind `status --json` (one per instance).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    /// Instance name (its directory's name); filled in by the client.
    #[serde(default)]
    pub name: String,
    /// `running`, `starting` (ready check pending), `backoff` (waiting to restart),
    /// `stopping`, `stopped` (manager up, program down) or `not running` (no manager).
    pub state: String,
    pub manager_pid: Option<u32>,
    pub pid: Option<u32>,
    /// Seconds the current program has been running.
    pub uptime: Option<f64>,
    /// Seconds the manager has been running.
    pub manager_uptime: Option<f64>,
    /// Restarts of the program since the manager started (not counting the first spawn).
    pub restarts: u64,
    /// Current back-off step in seconds (zdaemon's `backoff`).
    pub backoff: u64,
    /// Seconds until the next restart (or SIGKILL, while stopping), if one is pending.
    pub delay: Option<f64>,
    /// How the previous program ended, e.g. `exit status 1`, `terminated by SIGKILL`.
    pub last_exit: Option<String>,
    pub ready: bool,
    pub should_be_up: bool,
    pub program: Vec<String>,
    pub socket: String,
}

impl InstanceStatus {
    pub fn not_running(name: &str, socket: &str, program: &[String]) -> Self {
        InstanceStatus {
            name: name.to_owned(),
            state: "not running".into(),
            program: program.to_vec(),
            socket: socket.to_owned(),
            ..Default::default()
        }
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, always with a decimal point.
pub fn py_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'E', 'n', 'i']) {
        s
    } else {
        s + ".0"
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; backslash, the
/// quote and control characters escaped; printable non-ASCII kept.
pub fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable` for one character, for the characters a program path or
/// argument may realistically hold: controls, format characters and separators other than
/// the space are escaped by `repr` (Unicode categories Cc, Cf, Zs, Zl, Zp, Co, Cn).
fn py_printable(c: char) -> bool {
    let n = c as u32;
    !(n < 0x20
        || (0x7f..=0xa0).contains(&n)
        || n == 0xad
        || (0x600..=0x605).contains(&n)
        || n == 0x61c
        || n == 0x6dd
        || n == 0x70f
        || n == 0x1680
        || n == 0x180e
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x206f).contains(&n)
        || n == 0x3000
        || (0xd800..=0xf8ff).contains(&n)
        || n == 0xfeff
        || (0xfff0..=0xfffb).contains(&n)
        || (0xfffe..=0xffff).contains(&n)
        || (0xe0000..=0xe007f).contains(&n)
        || n >= 0xf0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_zdaemon() {
        assert_eq!(
            frame(b"status\nrest", false),
            Framing::Line(Request::Status)
        );
        assert_eq!(frame(b"stat", false), Framing::Incomplete);
        assert_eq!(
            frame(b"stat", true),
            Framing::Error("Command not terminated by newline")
        );
        assert_eq!(
            frame(&[b'x'; MAX_REQUEST + 1], false),
            Framing::Error("Command exceeds 10 KB")
        );
        assert_eq!(frame(b"  \n", false), Framing::Line(Request::Empty));
        assert_eq!(
            frame(b"\xff\n", false),
            Framing::Line(Request::Unknown("\u{fffd}".into()))
        );
        assert_eq!(parse_request(b"kill"), Request::Kill(Ok(15)));
        assert_eq!(parse_request(b"kill 9"), Request::Kill(Ok(9)));
        assert_eq!(parse_request(b"kill x"), Request::Kill(Err("x".into())));
        assert_eq!(
            static_reply(&parse_request(b"bogus a")).as_deref(),
            Some("Unknown command 'bogus'; 'help' for a list")
        );
    }

    #[test]
    fn python_literals() {
        assert_eq!(py_float(1795229918.0), "1795229918.0");
        assert_eq!(py_float(1795229918.3172953), "1795229918.3172953");
        assert_eq!(py_str("sleep"), "'sleep'");
        assert_eq!(py_str("it's"), "\"it's\"");
        assert_eq!(py_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_str("a\\b\n\x01é"), "'a\\\\b\\n\\x01é'");
    }

    proptest::proptest! {
        #[test]
        fn any_input_gets_one_terminated_reply(buf in proptest::collection::vec(0u8..=255, 0..12_000), eof: bool) {
            match frame(&buf, eof) {
                Framing::Line(req) => {
                    if let Some(reply) = static_reply(&req) {
                        let reply = terminate(reply);
                        proptest::prop_assert!(reply.ends_with('\n'));
                        proptest::prop_assert!(!reply[..reply.len() - 1].ends_with('\n'));
                    }
                }
                Framing::Error(msg) => proptest::prop_assert!(!msg.is_empty()),
                Framing::Incomplete => {
                    proptest::prop_assert!(!eof && buf.len() <= MAX_REQUEST && !buf.contains(&b'\n'))
                }
            }
        }

        #[test]
        fn status_blocks_parse_back(pid in 0u32..4_000_000, manager in 1u32..4_000_000,
                                    testing: bool, up: bool, args in proptest::collection::vec(".*", 1..4)) {
            let block = StatusBlock {
                now: 1.5, should_be_up: up, delay: None, backoff: 0, lasttime: None,
                application: pid, testing, manager, backofflimit: 10,
                filename: "/bin/x".into(), args,
            };
            let text = block.render();
            proptest::prop_assert_eq!(text.lines().count(), 12);
            let p = parse_status(&text).unwrap();
            proptest::prop_assert_eq!((p.pid, p.manager, p.testing, p.should_be_up), (pid, manager, testing, up));
        }
    }

    #[test]
    fn status_block_round_trip() {
        let block = StatusBlock {
            now: 1795229918.3172953,
            should_be_up: true,
            delay: None,
            backoff: 0,
            lasttime: Some(1795229917.1599178),
            application: 8008,
            testing: false,
            manager: 8006,
            backofflimit: 10,
            filename: "/usr/bin/sleep".into(),
            args: vec!["sleep".into(), "100".into()],
        };
        let text = block.render();
        assert_eq!(
            text,
            "status=running\nnow=1795229918.3172953\nshould_be_up=1\ndelay=0\nbackoff=0\n\
             lasttime=1795229917.1599178\napplication=8008\ntesting=0\nmanager=8006\n\
             backofflimit=10\nfilename='/usr/bin/sleep'\nargs=['sleep', '100']\n"
        );
        let parsed = parse_status(&text).expect("parsed");
        assert_eq!(parsed.pid, 8008);
        assert_eq!(parsed.manager, 8006);
        assert!(parsed.should_be_up && !parsed.testing);
        assert_eq!(parse_status("Unknown command"), None);
    }
}
