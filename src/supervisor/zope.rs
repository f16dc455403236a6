//! What `start` checks and prepares for a Zope client before its manager starts it.
//!
//! * **Pre-checks** ([`precheck`]): the program is found (on the instance's `PATH`), and when
//!   it is `runwsgi`, its Python can import what the generated `etc/zope.ini` and
//!   `etc/zope.conf` name (Zope with waitress and Paste; Products.Sessions and
//!   Products.TemporaryFolder for sessions). A failure says what to `pip install`, before
//!   anything of a cluster is started.
//! * **Sessions** ([`prepare`]): the `/temp_folder` mount point lives in the main database;
//!   Zope creates it only through the ZMI. It is created once, by a short script run with
//!   the client's own Python on the client's own `etc/zope.conf` (so Zope's own code writes
//!   it), and recorded as done in `var/zodbctl-sessions.done`. Zope's session data manager
//!   creates `/temp_folder/session_data` itself whenever the mounted storage lacks it
//!   (after a crash of the server); the script creates it too, so the first request finds it.
//!
//! The client's Python is the interpreter named by the program's `#!` line (a virtualenv's
//! `bin/runwsgi` names its `bin/python`), else a `python3` beside the program.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::settings::{Settings, ZopeClient};

/// The marker of a done sessions initialisation, relative to the client instance.
pub const SESSIONS_DONE: &str = "var/zodbctl-sessions.done";
/// The module check imports nothing heavy; Python's start-up is the bulk of it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Zope's start-up (ZCML, products, opening the databases over ZEO) on a busy machine.
const INIT_TIMEOUT: Duration = Duration::from_secs(240);

/// What the generated configuration needs: (module to import, package to pip install).
const ZOPE_MODULES: &[(&str, &str)] = &[
    ("Zope2", "Zope[wsgi]"),
    ("waitress", "Zope[wsgi]"),
    ("paste.translogger", "Zope[wsgi]"),
    ("ZEO", "ZEO"),
];
const SESSION_MODULES: &[(&str, &str)] = &[
    ("Products.Sessions", "Products.Sessions"),
    ("Products.TemporaryFolder", "Products.TemporaryFolder"),
    ("Products.ZODBMountPoint", "Products.TemporaryFolder"),
];

/// What a Zope user installs in the client's virtualenv, for messages.
pub fn pip_hint(sessions: bool) -> String {
    let mut pkgs = vec!["'Zope[wsgi]'", "ZEO"];
    if sessions {
        pkgs.extend(["Products.Sessions", "Products.TemporaryFolder"]);
    }
    format!("pip install {}", pkgs.join(" "))
}

/// The Python that runs `program`: its `#!` interpreter (through `env` on the instance's
/// `PATH`), else a `python3`/`python` in the program's directory.
pub fn client_python(s: &Settings, program: &Path) -> Option<PathBuf> {
    if let Some(interp) = shebang(program) {
        let mut words = interp.split_whitespace();
        let first = words.next()?;
        if Path::new(first).file_name().is_some_and(|n| n == "env") {
            let name = words.find(|w| !w.starts_with('-'))?;
            return s.find_on_path(name);
        }
        if Path::new(first)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        {
            return Some(PathBuf::from(first));
        }
    }
    if program
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"))
    {
        return Some(program.to_path_buf());
    }
    let dir = program.parent()?;
    ["python3", "python"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The interpreter line of a script, without `#!`.
fn shebang(program: &Path) -> Option<String> {
    let mut f = std::fs::File::open(program).ok()?;
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let head = &head[..n];
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).trim().to_owned())
}

/// Whether the program is Zope's WSGI runner (the only program whose needs are known).
fn is_runwsgi(program: &Path) -> bool {
    program.file_name().is_some_and(|n| n == "runwsgi")
}

/// Run `cmd` to completion or until `limit`; its output. Killed when it takes too long.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("can't run {:?}: {e}", cmd.get_program()))?;
    // Drain the pipes while waiting, so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} took more than {} s and was stopped",
                    cmd.get_program(),
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {:?}: {e}", cmd.get_program())),
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// A command in the client's environment and directory.
fn python_cmd(s: &Settings, z: &ZopeClient, python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.envs(s.environment.iter().cloned()).current_dir(&z.dir);
    cmd
}

/// The last lines of a failed step's output.
fn tail(out: &Output, n: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("\n  {l}"))
        .collect()
}

/// Everything `start` can check about a member before starting anything: the program can be
/// found, and a Zope client's Python has what its configuration needs. The message says
/// what to do.
pub fn precheck(s: &Settings) -> Result<(), String> {
    let program = s.resolve_program().map_err(|e| match &s.zope {
        Some(z) => format!(
            "{e}; install Zope in a virtualenv ({}) and point the client at it: \
             `[runner] program` (an absolute path) or `[environment] PATH` in etc/client.toml \
             (`zodbctl create client|cluster --python VENV` writes both)",
            pip_hint(z.sessions)
        ),
        None => e.to_string(),
    })?;
    let Some(z) = &s.zope else {
        return Ok(());
    };
    if !is_runwsgi(&program) {
        return Ok(());
    }
    let python = client_python(s, &program).ok_or_else(|| {
        format!(
            "can't tell which Python runs {}; nothing was checked",
            program.display()
        )
    })?;
    let mut wanted: Vec<(&str, &str)> = ZOPE_MODULES.to_vec();
    if z.sessions {
        wanted.extend_from_slice(SESSION_MODULES);
    }
    let script = "import importlib.util, sys\n\
                  for m in sys.argv[1:]:\n\
                  \x20   try:\n\
                  \x20       ok = importlib.util.find_spec(m) is not None\n\
                  \x20   except Exception:\n\
                  \x20       ok = False\n\
                  \x20   if not ok:\n\
                  \x20       print(m)\n";
    let out = run_bounded(
        python_cmd(s, z, &python)
            .arg("-c")
            .arg(script)
            .args(wanted.iter().map(|(m, _)| *m)),
        CHECK_TIMEOUT,
    )?;
    if !out.status.success() {
        return Err(format!(
            "{} does not run ({}):{}",
            python.display(),
            out.status,
            tail(&out, 5)
        ));
    }
    let missing: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = wanted
        .iter()
        .filter(|(m, _)| missing.iter().any(|x| x == m))
        .map(|(_, p)| *p)
        .collect();
    pkgs.dedup();
    let quoted: Vec<String> = pkgs
        .iter()
        .map(|p| {
            if p.contains('[') {
                format!("'{p}'")
            } else {
                (*p).to_owned()
            }
        })
        .collect();
    Err(format!(
        "{} (the Python of {}) cannot import {}, which etc/zope.ini and etc/zope.conf need; \
         install with: {} -m pip install {}",
        python.display(),
        program.display(),
        missing.join(", "),
        python.display(),
        quoted.join(" ")
    ))
}

/// Creates the `/temp_folder` mount point (and the session data container in it) with
/// Zope's own code, retrying on conflicts (another client may be initialising too).
const INIT_SCRIPT: &str = r#"
import sys
import transaction
from ZODB.POSException import ConflictError
from Zope2.Startup.run import make_wsgi_app
make_wsgi_app({}, sys.argv[1])
import Zope2
from Products.ZODBMountPoint.MountedObject import manage_addMounts
app = Zope2.app()
try:
    for attempt in range(10):
        try:
            if 'temp_folder' not in app.objectIds():
                manage_addMounts(app, ('/temp_folder',), create_mount_points=True)
                transaction.get().note('zodbctl: /temp_folder mount point for sessions')
                transaction.commit()
            sdm = getattr(app, 'session_data_manager', None)
            if sdm is not None and sdm._getSessionDataContainer() is not None:
                transaction.commit()
            break
        except ConflictError:
            transaction.abort()
            app._p_jar.sync()
    else:
        sys.exit('conflicts kept the mount point from being created')
    print('temp_folder:', app.temp_folder.meta_type,
          'session_data' in app.temp_folder.objectIds())
finally:
    transaction.abort()
    app._p_jar.close()
"#;

/// The one-time preparation of a Zope client with sessions (see the module comment): a no-op
/// once recorded as done, or for a client without sessions or not run by `runwsgi`.
/// Returns whether it ran.
pub fn prepare(s: &Settings) -> Result<bool, String> {
    let Some(z) = s.zope.as_ref().filter(|z| z.sessions) else {
        return Ok(false);
    };
    let done = z.dir.join(SESSIONS_DONE);
    if done.exists() {
        return Ok(false);
    }
    let program = s.resolve_program().map_err(|e| e.to_string())?;
    if !is_runwsgi(&program) {
        return Ok(false);
    }
    let python = client_python(s, &program)
        .ok_or_else(|| format!("can't tell which Python runs {}", program.display()))?;
    // Zope would wait for a server that is down until the step times out: say so at once.
    if !z.servers.is_empty()
        && !z
            .servers
            .iter()
            .any(|a| super::ready::zeo_handshake(a).is_ok())
    {
        return Err(format!(
            "the sessions mount point is created on the first start, which needs the ZEO server, \
             but none answers at {}; start the server first (or the whole cluster)",
            z.servers.join(", ")
        ));
    }
    let conf = z.dir.join("etc/zope.conf");
    let out = run_bounded(
        python_cmd(s, z, &python)
            .arg("-c")
            .arg(INIT_SCRIPT)
            .arg(&conf),
        INIT_TIMEOUT,
    )
    .map_err(|e| format!("{e} (is the ZEO server running?)"))?;
    if !out.status.success() {
        return Err(format!(
            "creating the /temp_folder mount point for sessions failed ({}); is the ZEO server \
             running?{}",
            out.status,
            tail(&out, 12)
        ));
    }
    let note = format!(
        "The /temp_folder mount point (sessions) was created in the main database by zodbctl \
         at {}.\nRemove this file to have `zodbctl start` check it again.\n",
        super::manager::timestamp(std::time::SystemTime::now())
    );
    std::fs::write(&done, note).map_err(|e| format!("{}: {e}", done.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_python_comes_from_the_shebang_or_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let python = bin.join("python");
        script(&python, "");
        let runwsgi = bin.join("runwsgi");
        script(&runwsgi, &format!("#!{}\nimport sys\n", python.display()));
        let s = Settings::new("c", vec!["runwsgi".into()], "/tmp/x".into());
        assert_eq!(client_python(&s, &runwsgi), Some(python.clone()));
        // `#!/usr/bin/env python3` is looked up on the instance's PATH.
        script(&runwsgi, "#!/usr/bin/env python3\n");
        let py3 = bin.join("python3");
        script(&py3, "");
        let mut s = s;
        s.environment
            .push(("PATH".into(), bin.display().to_string()));
        assert_eq!(client_python(&s, &runwsgi), Some(py3.clone()));
        // No shebang: the python beside it.
        script(&runwsgi, "binary");
        assert_eq!(client_python(&s, &runwsgi), Some(py3));
    }

    #[test]
    fn a_missing_program_names_what_to_install() {
        let mut s = Settings::new("client1", vec!["runwsgi".into()], "/tmp/x".into());
        s.environment.push(("PATH".into(), "/nonexistent".into()));
        s.zope = Some(ZopeClient {
            dir: PathBuf::from("/tmp"),
            sessions: true,
            servers: Vec::new(),
        });
        let e = precheck(&s).unwrap_err();
        assert!(e.contains("can't find program 'runwsgi' on PATH"), "{e}");
        assert!(
            e.contains("pip install 'Zope[wsgi]' ZEO Products.Sessions Products.TemporaryFolder"),
            "{e}"
        );
    }

    #[test]
    fn a_python_without_zope_is_found_out() {
        // A "virtualenv" whose runwsgi runs the system's python3, which has no Zope.
        let Some(sys_python) = Settings::new("x", vec![], "/tmp/x".into()).find_on_path("python3")
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let runwsgi = dir.path().join("runwsgi");
        script(&runwsgi, &format!("#!{}\n", sys_python.display()));
        let mut s = Settings::new(
            "client1",
            vec![runwsgi.display().to_string()],
            "/tmp/x".into(),
        );
        s.zope = Some(ZopeClient {
            dir: dir.path().to_path_buf(),
            sessions: false,
            servers: Vec::new(),
        });
        let e = precheck(&s).unwrap_err();
        assert!(e.contains("cannot import Zope2"), "{e}");
        assert!(e.contains("-m pip install 'Zope[wsgi]'"), "{e}");
    }

    #[test]
    fn bounded_runs_end() {
        let out = run_bounded(Command::new("sh").args(["-c", "echo hi"]), CHECK_TIMEOUT).unwrap();
        assert_eq!(out.stdout, b"hi\n");
        let e =
            run_bounded(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("was stopped"), "{e}");
    }
}
