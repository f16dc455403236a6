//! What the manager and the control client need to know about one supervised instance.
//!
//! [`Settings`] is deliberately plain: `config` converts the instance configuration (TOML
//! `[runner]` table with zdaemon's `<runner>` keys, supervisor.md §3.2, plus `[environment]`)
//! into it, and the manager needs nothing else.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// zdaemon's defaults (§1.1, §3.2).
pub const DEFAULT_BACKOFF_LIMIT: u64 = 10;
pub const DEFAULT_START_TIMEOUT: u64 = 300;
/// 300 s, also without a configuration file (zdaemon escalates only with one; §9 item 13).
pub const DEFAULT_STOP_TIMEOUT: u64 = 300;
pub const DEFAULT_UMASK: u32 = 0o022;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("no program specified")]
    NoProgram,
    #[error("can't find program '{0}' on PATH")]
    NotOnPath(String),
    #[error("can't stat program '{0}'")]
    CantStat(String),
    #[error("no permission to run program '{0}'")]
    NoPermission(String),
}

/// How the manager decides that a freshly spawned program is ready (zdaemon's
/// `start-test-program`, generalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadyCheck {
    /// The ZEO handshake answers on this address (`HOST:PORT` or a Unix socket path): the
    /// server sends a sized frame `Z5` or `M5` first.
    Zeo(String),
    /// A TCP connection to this `HOST:PORT` (or a Unix socket path) is accepted.
    Connect(String),
    /// An HTTP GET of this `http://HOST:PORT/PATH` URL gets any HTTP response.
    Http(String),
    /// This command exits 0 (retried until it does).
    Command(Vec<String>),
}

/// Serializable: a daemon manager re-executes zodbctl (for a process title that names its
/// instance) and receives its settings as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Name shown by cluster commands and `status --json` (the instance directory's name).
    pub name: String,
    /// The program and its arguments (shell-style quoting when read from a string).
    pub program: Vec<String>,
    /// The control socket (absolute).
    pub socket: PathBuf,
    pub backoff_limit: u64,
    pub forever: bool,
    /// Exit statuses that end the manager instead of a restart.
    pub exit_codes: Vec<i32>,
    /// SIGKILL this long after SIGTERM on stop; zero never escalates.
    pub stop_timeout: Duration,
    /// How long `start` waits for the program to be ready.
    pub start_timeout: Duration,
    /// Working directory of the manager and the program (daemon mode).
    pub directory: Option<PathBuf>,
    pub umask: u32,
    /// Run as this user (name or uid) when started as root.
    pub user: Option<String>,
    /// Where the program's stdout/stderr and the manager's own log go (daemon mode).
    pub transcript: Option<PathBuf>,
    /// The program's own log, shown by `logtail` when set.
    pub logfile: Option<PathBuf>,
    pub environment: Vec<(String, String)>,
    pub ready: Option<ReadyCheck>,
    /// `false` = `daemon off`: `start` runs the manager in the foreground.
    pub daemon: bool,
    /// Set for a Zope client instance: what `start` checks and prepares before it starts it.
    pub zope: Option<ZopeClient>,
    /// The instance directory, when the settings come from an instance (relative paths the
    /// user gives, such as `logtail --file`, start there).
    pub instance_dir: Option<PathBuf>,
}

/// A Zope client instance, as `start` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZopeClient {
    /// The instance directory (`etc/zope.conf`, `inituser`, `var/`).
    pub dir: PathBuf,
    /// A sessions storage is mounted at `/temp_folder`: the mount point must be created once.
    pub sessions: bool,
    /// Its ZEO servers (connectable addresses), which the one-time step needs up.
    pub servers: Vec<String>,
}

impl Settings {
    /// Defaults for `program`, with the socket `socket`.
    pub fn new(name: &str, program: Vec<String>, socket: PathBuf) -> Settings {
        Settings {
            name: name.to_owned(),
            program,
            socket,
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            forever: false,
            exit_codes: vec![0, 2],
            stop_timeout: Duration::from_secs(DEFAULT_STOP_TIMEOUT),
            start_timeout: Duration::from_secs(DEFAULT_START_TIMEOUT),
            directory: None,
            umask: DEFAULT_UMASK,
            user: None,
            transcript: None,
            logfile: None,
            environment: Vec::new(),
            ready: None,
            daemon: true,
            zope: None,
            instance_dir: None,
        }
    }

    /// The `PATH` the program runs with: the instance's `[environment] PATH` when set, else
    /// zodbctl's own.
    pub fn program_path_var(&self) -> OsString {
        self.environment
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| OsString::from("/bin:/usr/bin:/usr/local/bin"))
    }

    /// Find `name` on the program's `PATH` ([`program_path_var`](Self::program_path_var)).
    pub fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.program_path_var())
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }

    /// Resolve the program file as zdaemon does (§2.6): a word with `/` must exist; otherwise
    /// search the `PATH` the program will run with (the instance's `[environment] PATH` when
    /// it sets one: that is where a virtualenv's `runwsgi` is); the result must be executable.
    pub fn resolve_program(&self) -> Result<PathBuf, SettingsError> {
        let first = self.program.first().ok_or(SettingsError::NoProgram)?;
        let path = if first.contains('/') {
            let p = PathBuf::from(first);
            if std::fs::metadata(&p).is_err() {
                return Err(SettingsError::CantStat(first.clone()));
            }
            std::path::absolute(&p).unwrap_or(p)
        } else {
            self.find_on_path(first)
                .ok_or_else(|| SettingsError::NotOnPath(first.clone()))?
        };
        if !is_executable(&path) {
            return Err(SettingsError::NoPermission(first.clone()));
        }
        Ok(path)
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_resolution() {
        let s = Settings::new("t", vec!["sh".into()], "/tmp/x".into());
        assert!(s.resolve_program().unwrap().is_absolute());
        let s = Settings::new("t", vec!["no-such-program-here".into()], "/tmp/x".into());
        assert!(matches!(
            s.resolve_program(),
            Err(SettingsError::NotOnPath(_))
        ));
        let s = Settings::new("t", vec!["/no/such".into()], "/tmp/x".into());
        assert!(matches!(
            s.resolve_program(),
            Err(SettingsError::CantStat(_))
        ));
    }

    #[test]
    fn the_instance_path_finds_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let prog = bin.join("my-runwsgi");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = Settings::new("t", vec!["my-runwsgi".into()], "/tmp/x".into());
        assert!(matches!(
            s.resolve_program(),
            Err(SettingsError::NotOnPath(_))
        ));
        s.environment
            .push(("PATH".into(), format!("/nowhere:{}", bin.display())));
        assert_eq!(s.resolve_program().unwrap(), prog);
    }
}
