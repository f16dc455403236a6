//! Actions on the selected instance, through the code of the CLI commands of the same name
//! (`supervisor::commands::control`), on a worker thread each: the screen keeps refreshing and
//! shows their messages as they come.
//!
//! [`ACTIONS`] is the table the keys, the help screen and the footer are made from. An action
//! on a storage (pack, backup: not on this branch yet) is one more row with its own
//! [`ActionKind`] and a match arm in [`spawn`]; its progress lines flow through the same
//! [`ActionEvent`]s.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;

use super::state::Member;
use crate::supervisor::commands::{self, Control, Sink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Start,
    Stop,
    Restart,
    Logreopen,
    /// Asks for a signal first (default TERM).
    Kill,
}

/// One row of the action table.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub key: char,
    pub kind: ActionKind,
    /// The CLI command it runs.
    pub name: &'static str,
    pub help: &'static str,
    /// Destructive: asks `y` before it runs.
    pub confirm: bool,
}

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        key: 'u',
        kind: ActionKind::Start,
        name: "start",
        help: "start the instance (its manager too, if needed)",
        confirm: false,
    },
    ActionSpec {
        key: 'x',
        kind: ActionKind::Stop,
        name: "stop",
        help: "stop the program and its manager",
        confirm: true,
    },
    ActionSpec {
        key: 'R',
        kind: ActionKind::Restart,
        name: "restart",
        help: "restart the program and wait until it is ready",
        confirm: true,
    },
    ActionSpec {
        key: 'o',
        kind: ActionKind::Logreopen,
        name: "logreopen",
        help: "reopen the transcript and the program's logs (SIGUSR2)",
        confirm: false,
    },
    ActionSpec {
        key: 'K',
        kind: ActionKind::Kill,
        name: "kill",
        help: "send a signal to the program (asks which; default TERM)",
        confirm: true,
    },
];

pub fn spec_for_key(c: char) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.key == c)
}

/// An action the user asked for and confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub instance: String,
    pub kind: ActionKind,
    pub signal: Option<Signal>,
}

impl Request {
    /// As the user reads it: `restart server`, `kill -HUP client1`.
    pub fn describe(&self) -> String {
        let name = ACTIONS
            .iter()
            .find(|a| a.kind == self.kind)
            .map_or("?", |a| a.name);
        match self.signal {
            Some(sig) => format!("{name} {} {}", sig.as_str(), self.instance),
            None => format!("{name} {}", self.instance),
        }
    }
}

/// What a running action reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionEvent {
    Line(String),
    /// It ended: the command's exit status, or why it could not run.
    Done {
        what: String,
        result: Result<u8, String>,
    },
}

/// Run `req` on `member` on a new thread; `report` receives its lines, then `Done`.
pub fn spawn(req: Request, member: &Member, report: impl Fn(ActionEvent) + Send + Sync + 'static) {
    let report = Arc::new(report);
    let what = req.describe();
    let Some(settings) = member.settings.clone() else {
        report(ActionEvent::Done {
            what,
            result: Err("a server given by address has no manager to act through".into()),
        });
        return;
    };
    let dir = member.dir.clone();
    std::thread::spawn(move || {
        let control = match req.kind {
            ActionKind::Start => Control::Start,
            ActionKind::Stop => Control::Stop,
            ActionKind::Restart => Control::Restart,
            ActionKind::Logreopen => Control::Logreopen,
            ActionKind::Kill => Control::Kill(req.signal.unwrap_or(Signal::SIGTERM)),
        };
        let result = if matches!(control, Control::Start | Control::Restart)
            && crate::supervisor::client::status(&settings.socket).is_none()
        {
            // No manager: `start` (and `restart`, which then starts) forks a new one, which is
            // only safe in a single-threaded process: run that same command as a child.
            match dir {
                Some(d) => start_in_child(&d, report.as_ref()),
                None => Err("no instance directory".into()),
            }
        } else {
            let r = Arc::clone(&report);
            let sink = Sink::Lines(Arc::new(move |l| r(ActionEvent::Line(l))));
            commands::control(&settings, control, sink).map_err(|e| format!("{e:#}"))
        };
        report(ActionEvent::Done { what, result });
    });
}

/// `zodbctl -i DIR start`, its output lines reported as they come.
fn start_in_child(
    dir: &std::path::Path,
    report: &(dyn Fn(ActionEvent) + Send + Sync),
) -> Result<u8, String> {
    let exe: PathBuf = std::env::current_exe().map_err(|e| format!("locating zodbctl: {e}"))?;
    let mut child = Command::new(exe)
        .arg("-i")
        .arg(dir)
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running zodbctl start: {e}"))?;
    // The manager this forks detaches from the pipes; read them on threads anyway, so that
    // the exit status is reported even if a descendant kept one open.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let status = child.wait().map_err(|e| e.to_string())?;
    // Lines written before the exit are in the pipes now; take what arrives promptly.
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
        report(ActionEvent::Line(line));
    }
    drop(readers);
    Ok(status.code().map_or(1, |c| (c & 0xff) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_described() {
        for (i, a) in ACTIONS.iter().enumerate() {
            assert!(ACTIONS[i + 1..].iter().all(|b| b.key != a.key), "{}", a.key);
            assert_eq!(spec_for_key(a.key).map(|s| s.kind), Some(a.kind));
        }
        let r = Request {
            instance: "server".into(),
            kind: ActionKind::Kill,
            signal: Some(Signal::SIGHUP),
        };
        assert_eq!(r.describe(), "kill SIGHUP server");
    }
}
