//! Actions on the selected instance, through the code of the CLI commands of the same name
//! (`supervisor::commands::control`), on a worker thread each: the screen keeps refreshing and
//! shows their messages as they come.
//!
//! [`ACTIONS`] is the table the keys, the help screen and the footer are made from. Promote
//! sends the server's admin socket the request `zodbctl promote` sends (no `--force`: a
//! refusal comes back in the status line, with what to do). The
//! storage actions, pack and backup, run `zodbctl -i DIR pack` and `zodbctl -i DIR backup` of
//! a server instance through the commands' own functions (`maintenance::pack::run_with`,
//! `maintenance::backup::command::backup_with`), on all its file storages (the dashboard
//! selects instances, not storages): pack goes through the running server when it holds the
//! Data.fs, offline otherwise, as the command does. Their progress comes back as
//! [`ActionEvent::Progress`], at most a few times a second.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

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
    /// `zodbctl pack` of a server instance's file storages.
    Pack,
    /// `zodbctl backup` of a server instance's file storages.
    Backup,
    /// Promote a server instance's replica storages to primary (the admin socket's
    /// `promote`, as `zodbctl promote` sends it).
    Promote,
}

impl ActionKind {
    /// Acts on a server instance's file storages, not on its process.
    pub fn on_storages(self) -> bool {
        matches!(self, ActionKind::Pack | ActionKind::Backup)
    }

    /// Needs a server instance.
    pub fn on_server(self) -> bool {
        self.on_storages() || self == ActionKind::Promote
    }
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
    ActionSpec {
        key: 'P',
        kind: ActionKind::Pack,
        name: "pack",
        help: "pack the server's file storages (through it when it runs)",
        confirm: true,
    },
    ActionSpec {
        key: 'B',
        kind: ActionKind::Backup,
        name: "backup",
        help: "back up the server's file storages to its [backup] repository",
        confirm: true,
    },
    ActionSpec {
        key: 'O',
        kind: ActionKind::Promote,
        name: "promote",
        help: "promote the server's replica storages to primary",
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
        /// The last line it reported (pack, backup: their one-line summary or error), to be
        /// shown with its end.
        summary: Option<String>,
    },
    /// How far a long action is: `text` is its phase, percent and bytes.
    Progress {
        what: String,
        text: String,
    },
}

/// Progress events no more often than this (a phase change always goes through).
const PROGRESS_EVERY: Duration = Duration::from_millis(150);

/// Turns `(step, done, total)` into [`ActionEvent::Progress`], throttled.
struct Throttle {
    what: String,
    report: Arc<dyn Fn(ActionEvent) + Send + Sync>,
    /// The current step, its total, and when the last event went out.
    last: Mutex<(String, u64, Option<Instant>)>,
}

impl Throttle {
    fn step(&self, step: &str, total: u64) {
        if let Ok(mut l) = self.last.lock() {
            *l = (step.to_owned(), total, None);
        }
        self.set(0);
    }

    fn update(&self, step: &str, done: u64, total: u64) {
        let changed = self.last.lock().is_ok_and(|l| l.0 != step || l.1 != total);
        if changed {
            self.step(step, total);
        }
        self.set(done);
    }

    fn set(&self, done: u64) {
        let Ok(mut l) = self.last.lock() else { return };
        if l.2.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        l.2 = Some(Instant::now());
        let text = progress_text(&l.0, done, l.1);
        drop(l);
        (self.report)(ActionEvent::Progress {
            what: self.what.clone(),
            text,
        });
    }
}

/// `copy the rest 42% (1.2 MiB of 3.0 MiB)`; without a total, what is known.
pub fn progress_text(step: &str, done: u64, total: u64) -> String {
    if total > 0 {
        let pct = (done.min(total) as f64 * 100.0 / total as f64).floor();
        format!(
            "{step} {pct:.0}% ({} of {})",
            super::view::bytes(done.min(total)),
            super::view::bytes(total)
        )
    } else if done > 0 {
        format!("{step} ({done})")
    } else {
        step.to_owned()
    }
}

impl crate::maintenance::backup::ops::Progress for Throttle {
    fn start(&self, what: &str, total: u64) {
        self.step(what, total);
    }
    fn set(&self, done: u64) {
        Throttle::set(self, done);
    }
    fn finish(&self) {}
}

/// Run `req` on `member` on a new thread; `report` receives its lines, then `Done`.
pub fn spawn(req: Request, member: &Member, report: impl Fn(ActionEvent) + Send + Sync + 'static) {
    let report: Arc<dyn Fn(ActionEvent) + Send + Sync> = Arc::new(report);
    let what = req.describe();
    let Some(settings) = member.settings.clone() else {
        report(ActionEvent::Done {
            what,
            result: Err("a server given by address has no manager to act through".into()),
            summary: None,
        });
        return;
    };
    let dir = member.dir.clone();
    if req.kind == ActionKind::Promote {
        let Some(socket) = member.admin_socket.clone() else {
            report(ActionEvent::Done {
                what,
                result: Err("no admin socket known for this server".into()),
                summary: None,
            });
            return;
        };
        std::thread::spawn(move || {
            let (result, summary) = match promote(&socket) {
                Ok(message) => (Ok(0), Some(message)),
                Err(e) => (Err(e), None),
            };
            report(ActionEvent::Done {
                what,
                result,
                summary,
            });
        });
        return;
    }
    if req.kind.on_storages() {
        let Some(dir) = dir else {
            report(ActionEvent::Done {
                what,
                result: Err("no instance directory".into()),
                summary: None,
            });
            return;
        };
        std::thread::spawn(move || {
            let last = Arc::new(Mutex::new(None::<String>));
            let (r, l) = (Arc::clone(&report), Arc::clone(&last));
            let remember: Arc<dyn Fn(ActionEvent) + Send + Sync> = Arc::new(move |e| {
                if let (ActionEvent::Line(line), Ok(mut l)) = (&e, l.lock()) {
                    *l = Some(line.clone());
                }
                r(e)
            });
            let result = run_on_storages(req.kind, &dir, &what, remember);
            let summary = last.lock().ok().and_then(|mut l| l.take());
            report(ActionEvent::Done {
                what,
                result,
                summary,
            });
        });
        return;
    }
    std::thread::spawn(move || {
        let control = match req.kind {
            ActionKind::Start => Control::Start,
            ActionKind::Stop => Control::Stop,
            ActionKind::Restart => Control::Restart,
            ActionKind::Logreopen => Control::Logreopen,
            ActionKind::Kill => Control::Kill(req.signal.unwrap_or(Signal::SIGTERM)),
            // Taken apart above.
            ActionKind::Pack | ActionKind::Backup | ActionKind::Promote => return,
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
        report(ActionEvent::Done {
            what,
            result,
            summary: None,
        });
    });
}

/// How long a promotion may take to answer (it waits for the replica's last applies).
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Ask the server on `socket` to promote its replica storages (every replicated storage, no
/// `--force`): its message, or its refusal in words.
pub fn promote(socket: &std::path::Path) -> Result<String, String> {
    let req = serde_json::json!({"cmd": "promote", "storage": null, "force": false});
    let v = crate::replication::admin::call(socket, &req, PROMOTE_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(v.get("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("promoted")
        .to_owned())
}

/// `zodbctl -i DIR pack` or `zodbctl -i DIR backup`, parsed by the CLI's own definitions (so
/// the defaults are the command's) and run by its function, lines and progress to `report`.
pub fn run_on_storages(
    kind: ActionKind,
    dir: &std::path::Path,
    what: &str,
    report: Arc<dyn Fn(ActionEvent) + Send + Sync>,
) -> Result<u8, String> {
    use crate::cli::{Cli, Command as CliCommand};
    let name = match kind {
        ActionKind::Pack => "pack",
        ActionKind::Backup => "backup",
        _ => return Err(format!("{kind:?} is not a storage action")),
    };
    let cli = Cli::try_parse_from([
        std::ffi::OsStr::new("zodbctl"),
        std::ffi::OsStr::new("-i"),
        dir.as_os_str(),
        std::ffi::OsStr::new(name),
    ])
    .map_err(|e| e.to_string())?;
    // The process logs to standard error, which is the dashboard's screen: on this thread,
    // the engines' warnings become the action's lines instead (their info lines repeat the
    // summaries).
    let logs = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_writer({
            let r = Arc::clone(&report);
            move || LineWriter(Arc::clone(&r))
        })
        .finish();
    let _logs = tracing::subscriber::set_default(logs);
    let r = Arc::clone(&report);
    let line = move |l: String| r(ActionEvent::Line(l));
    let throttle = Arc::new(Throttle {
        what: what.to_owned(),
        report,
        last: Mutex::new((String::new(), 0, None)),
    });
    let result = match &cli.command {
        CliCommand::Pack(args) => {
            let t = Arc::clone(&throttle);
            let sink = crate::maintenance::pack::Sink {
                lines: Some(Arc::new(line)),
                progress: Some(Arc::new(move |target: &str, phase: &str, done, total| {
                    // The file's name, not its path: the phase and percent must fit.
                    let short = std::path::Path::new(target)
                        .file_name()
                        .filter(|_| target.ends_with(".fs"))
                        .map_or(target.into(), |n| n.to_string_lossy());
                    t.update(&format!("{short}: {phase}"), done, total)
                })),
            };
            crate::maintenance::pack::run_with(&cli.global, args, &sink)
        }
        CliCommand::Backup(args) => crate::maintenance::backup::command::backup_with(
            &cli.global,
            args,
            throttle.as_ref(),
            Some(&line),
        ),
        _ => return Err("not a pack or backup command line".into()),
    };
    result.map_err(|e| format!("{e:#}"))
}

/// Log output as action lines (one formatted event per write).
struct LineWriter(Arc<dyn Fn(ActionEvent) + Send + Sync>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for l in String::from_utf8_lossy(buf).lines() {
            if !l.trim().is_empty() {
                (self.0)(ActionEvent::Line(l.trim().to_owned()));
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    /// A server instance in a tempdir whose storage "1" has an old revision to pack away.
    fn instance_with_garbage() -> (tempfile::TempDir, PathBuf, PathBuf) {
        use crate::cli::{Cli, Command as CliCommand, CreateCommand};
        use crate::storage::{FileStorage, Oid, Tid, TxnMeta};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("server");
        let cli = Cli::try_parse_from([
            std::ffi::OsStr::new("zodbctl"),
            std::ffi::OsStr::new("create"),
            std::ffi::OsStr::new("server"),
            dir.as_os_str(),
        ])
        .unwrap();
        let CliCommand::Create(CreateCommand::Server(args)) = &cli.command else {
            panic!("not create server");
        };
        crate::instance::scaffold::create_server(args).unwrap();
        let inst = crate::instance::locate_in_dir(&dir).unwrap();
        let mut server = inst.server().unwrap().clone();
        server.resolve_paths(&inst.dir);
        let crate::instance::StorageConfig::File(f) = &server.storages["1"] else {
            panic!("storage 1 is not a file storage");
        };
        let data_fs = f.path.clone();
        let repository = server.backup.repository.join("1");
        std::fs::create_dir_all(data_fs.parent().unwrap()).unwrap();
        // A PersistentMapping-shaped record without references, in three revisions.
        let fs = FileStorage::open(&data_fs).unwrap();
        for tag in ["one", "two", "three"] {
            let mut data = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
            data.extend_from_slice(b"\x80\x03](X");
            data.extend_from_slice(&(tag.len() as u32).to_le_bytes());
            data.extend_from_slice(tag.as_bytes());
            data.extend_from_slice(b"e.");
            let serial = fs.get_tid(Oid(0)).unwrap_or(Tid::ZERO);
            let mut t = fs.begin(TxnMeta::new("/ t", "test", Vec::new())).unwrap();
            t.store(Oid(0), serial, &data).unwrap();
            t.vote().unwrap();
            t.finish().unwrap();
        }
        fs.close().unwrap();
        // The pack time (now) strictly after the last commit.
        std::thread::sleep(Duration::from_millis(20));
        (tmp, data_fs, repository)
    }

    #[test]
    fn pack_and_backup_run_the_commands_with_progress() {
        let (tmp, data_fs, repository) = instance_with_garbage();
        let dir = tmp.path().join("server");
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = Arc::clone(&events);
        let report: Arc<dyn Fn(ActionEvent) + Send + Sync> =
            Arc::new(move |e| e2.lock().unwrap().push(e));

        let r = run_on_storages(ActionKind::Pack, &dir, "pack server", Arc::clone(&report));
        assert_eq!(r, Ok(0), "{:?}", events.lock().unwrap());
        let record = crate::storage::pack::record_path(&data_fs);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
        assert_eq!(v["records_removed"], 2, "{v}");
        assert!(
            v["bytes_after"].as_u64() < v["bytes_before"].as_u64(),
            "{v}"
        );
        {
            let ev = events.lock().unwrap();
            assert!(
                ev.iter().any(
                    |e| matches!(e, ActionEvent::Progress { what, .. } if what == "pack server")
                ),
                "{ev:?}"
            );
            assert!(
                ev.iter()
                    .any(|e| matches!(e, ActionEvent::Line(l) if l.contains("packed to"))),
                "{ev:?}"
            );
            // Nothing went to the terminal's streams instead: every summary came back.
        }

        events.lock().unwrap().clear();
        let r = run_on_storages(ActionKind::Backup, &dir, "backup server", report);
        assert_eq!(r, Ok(0), "{:?}", events.lock().unwrap());
        let files: Vec<String> = std::fs::read_dir(&repository)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files
                .iter()
                .any(|f| f.ends_with(".fs") || f.ends_with(".fsz")),
            "{files:?}"
        );
        assert!(files.iter().any(|f| f == "last-backup.json"), "{files:?}");
        let ev = events.lock().unwrap();
        assert!(
            ev.iter()
                .any(|e| matches!(e, ActionEvent::Line(l) if l.contains("full backup"))),
            "{ev:?}"
        );
        assert!(
            ev.iter().any(
                |e| matches!(e, ActionEvent::Progress { what, .. } if what == "backup server")
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn promote_sends_the_admin_request_and_returns_its_words() {
        use std::io::{BufRead, Write};
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("admin.sock");
        let serve = |answer: &'static str| {
            let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&s).read_line(&mut line).unwrap();
                s.write_all(answer.as_bytes()).unwrap();
                serde_json::from_str::<serde_json::Value>(&line).unwrap()
            })
        };
        let t = serve("{\"ok\": true, \"message\": \"storage '1' promoted: epoch 2\"}\n");
        assert_eq!(promote(&sock).unwrap(), "storage '1' promoted: epoch 2");
        assert_eq!(
            t.join().unwrap(),
            serde_json::json!({"cmd": "promote", "storage": null, "force": false})
        );
        std::fs::remove_file(&sock).unwrap();
        let t = serve("{\"ok\": false, \"error\": \"the primary is still streaming\"}\n");
        assert_eq!(
            promote(&sock).unwrap_err(),
            "the primary is still streaming"
        );
        t.join().unwrap();
        std::fs::remove_file(&sock).unwrap();
        assert!(promote(&sock).unwrap_err().contains("cannot reach"));
    }

    #[test]
    fn log_lines_of_the_worker_become_action_lines() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = Arc::clone(&events);
        let mut w = LineWriter(Arc::new(move |e| e2.lock().unwrap().push(e)));
        std::io::Write::write_all(&mut w, b" WARN cannot write x.pack.json\n").unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            vec![ActionEvent::Line("WARN cannot write x.pack.json".into())]
        );
    }

    #[test]
    fn progress_reads_as_phase_percent_and_bytes() {
        assert_eq!(
            progress_text("copy the rest", 512, 2048),
            "copy the rest 25% (512B of 2.0K)"
        );
        assert_eq!(progress_text("reachability", 7, 0), "reachability (7)");
        assert_eq!(
            progress_text("packing on the server", 0, 0),
            "packing on the server"
        );
    }
}
