//! Turning an instance's configuration (`crate::instance`) into what the supervisor needs.
//!
//! The instance module finds and parses `etc/zeo.toml`, `etc/client.toml`, a legacy
//! `etc/zeo.conf` or a `cluster.toml`; this module maps its `[runner]` table (zdaemon's
//! `<runner>` keys, supervisor.md §3.2), `[environment]` and the readiness rules onto
//! [`Settings`]:
//!
//! * a server's program defaults to `zodbctl serve -C <its config>`, and it is ready when the
//!   ZEO handshake answers on its address;
//! * a client's program defaults to `runwsgi -v etc/zope.ini` (looked up on the instance's
//!   `[environment] PATH`), ready when its HTTP address accepts connections, whatever the
//!   program is, as long as the file has a `[zope]` table; `ready-check = "none"` or another
//!   check says otherwise (a client.toml without `[zope]` running a program of its own has no
//!   readiness check: nothing says that program listens on the HTTP address);
//! * zdaemon's `start-test-program` is the readiness check when `ready-check` is unset.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

use super::settings::{ReadyCheck, Settings, ZopeClient};
use crate::cli::GlobalArgs;
use crate::error::usage;
use crate::instance::{self, Instance, InstanceConfig, RunnerConfig};

/// What a command acts on: one instance, or the members of a cluster in start order.
#[derive(Debug)]
pub struct Target {
    members: Vec<Settings>,
    cluster: bool,
}

impl Target {
    pub fn one(s: Settings) -> Target {
        Target {
            members: vec![s],
            cluster: false,
        }
    }

    /// Start order; stop in the reverse.
    pub fn members(&self) -> &[Settings] {
        &self.members
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The single instance, or a usage error for a cluster (`what` names the command).
    pub fn single(self, what: &str) -> Result<Settings> {
        match (self.cluster, self.members.into_iter().next()) {
            (false, Some(s)) => Ok(s),
            _ => Err(usage(anyhow!("{what} runs one instance; give -i INSTANCE"))),
        }
    }
}

/// The instance directory named by `-i`, else `$ZODBCTL_INSTANCE` (clap), else the current
/// directory.
pub fn instance_dir(g: &GlobalArgs) -> Result<PathBuf> {
    let dir = match &g.instance {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("current directory")?,
    };
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

/// Locate and load the target of a command (`-C`, `-i`, `$ZODBCTL_INSTANCE`, the current
/// directory). Notices about a legacy zeo.conf are left to `start` and `show`, so that
/// `status` in a monitoring script prints nothing on stderr.
pub fn load(g: &GlobalArgs) -> Result<Target> {
    let inst = instance::locate(g).map_err(usage)?;
    target_of(&inst)
}

/// [`load`], telling the user about configuration keys read but not acted on.
pub fn load_noting(g: &GlobalArgs) -> Result<Target> {
    let inst = instance::locate(g).map_err(usage)?;
    instance::commands::report_notices(&inst.notices);
    target_of(&inst)
}

pub fn target_of(inst: &Instance) -> Result<Target> {
    if inst.cluster().is_some() {
        let members = inst
            .members()
            .map_err(usage)?
            .iter()
            .map(|(m, i)| settings_of(i, Some(m.display_name())))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Target {
            members,
            cluster: true,
        });
    }
    Ok(Target::one(settings_of(inst, None)?))
}

/// The settings of one (server or client) instance.
pub fn settings_of(inst: &Instance, name: Option<String>) -> Result<Settings> {
    let name = name.unwrap_or_else(|| {
        inst.dir.file_name().map_or_else(
            || "instance".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let (runner, environment, program, ready) = match &inst.config {
        InstanceConfig::Server(c) => {
            let exe = std::env::current_exe().context("locating the zodbctl executable")?;
            let file = std::path::absolute(&inst.file).unwrap_or_else(|_| inst.file.clone());
            let ready = match (&c.runner.ready_check, &c.runner.start_test_program) {
                (None, Some(test)) => Some(ReadyCheck::Command(test.0.clone())),
                (Some(check), _) => convert_check(check, true),
                (None, None) => convert_check(&c.ready_check(), true),
            };
            (&c.runner, &c.environment, c.program(&exe, &file).0, ready)
        }
        InstanceConfig::Client(c) => {
            let ready = match (&c.runner.ready_check, &c.runner.start_test_program) {
                (Some(check), _) => convert_check(check, false),
                (None, Some(test)) => Some(ReadyCheck::Command(test.0.clone())),
                // A Zope client is ready when its HTTP address answers, whatever runs it
                // (runwsgi from a virtualenv, a wrapper script): "started" is not "serving".
                (None, None) if c.runner.program.is_none() || has_zope_table(inst) => {
                    convert_check(&c.ready_check(), false)
                }
                // A client.toml with neither a [zope] table nor the default program runs
                // something that need not listen on the default HTTP address.
                (None, None) => None,
            };
            (&c.runner, &c.environment, c.program().0, ready)
        }
        InstanceConfig::Cluster(_) => {
            return Err(usage(anyhow!(
                "{}: a cluster cannot be a member of a cluster",
                inst.file.display()
            )));
        }
    };
    if program.is_empty() {
        return Err(usage(anyhow!(
            "{}: runner.program is empty",
            inst.file.display()
        )));
    }
    let mut s = Settings::new(&name, program, inst.resolve(&runner.socket));
    apply_runner(&mut s, inst, runner);
    s.environment = environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    s.ready = ready;
    s.instance_dir = Some(inst.dir.clone());
    if let Some(c) = inst.server() {
        // zeoctl's logtail showed the ZEO log; so does ours unless `[runner] logfile` says.
        if s.logfile.is_none() && c.eventlog.stream().is_none() {
            s.logfile = Some(inst.resolve(&c.eventlog.path));
        }
    }
    if let Some(c) = inst.client() {
        s.zope = Some(ZopeClient {
            dir: inst.dir.clone(),
            sessions: c.zope.sessions.is_some(),
            servers: c
                .zeoclient
                .servers
                .iter()
                .map(|a| match a {
                    instance::Address::Unix(p) => inst.resolve(p).display().to_string(),
                    a => a.connectable().to_string(),
                })
                .collect(),
        });
    }
    Ok(s)
}

/// Whether the client configuration file has a `[zope]` table (every client `zodbctl create`
/// writes has one; the serde model fills in defaults, so only the text can tell).
fn has_zope_table(inst: &Instance) -> bool {
    std::fs::read_to_string(&inst.file)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("zope"))
}

fn apply_runner(s: &mut Settings, inst: &Instance, r: &RunnerConfig) {
    s.daemon = r.daemon;
    s.backoff_limit = u64::from(r.backoff_limit);
    s.forever = r.forever;
    s.exit_codes = r.exit_codes.0.clone();
    s.start_timeout = r.start_timeout.duration();
    s.stop_timeout = r.stop_timeout.duration();
    s.directory = Some(
        r.directory
            .as_ref()
            .map_or_else(|| inst.dir.clone(), |d| inst.resolve(d)),
    );
    s.umask = r.umask.0;
    s.user = r.user.clone();
    s.transcript = Some(inst.resolve(&r.transcript));
    s.logfile = r.logfile.as_ref().map(|p| inst.resolve(p));
}

/// The instance module's check in the manager's terms: an address is probed with the ZEO
/// handshake for a server, with a plain connection for a client.
fn convert_check(c: &instance::ReadyCheck, server: bool) -> Option<ReadyCheck> {
    Some(match c {
        instance::ReadyCheck::Address(a) => {
            let addr = a.connectable().to_string();
            if server {
                ReadyCheck::Zeo(addr)
            } else {
                ReadyCheck::Connect(addr)
            }
        }
        instance::ReadyCheck::Http(url) => ReadyCheck::Http(url.clone()),
        instance::ReadyCheck::Command(cmd) => ReadyCheck::Command(cmd.0.clone()),
        instance::ReadyCheck::None => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn instance_from(dir: &std::path::Path, file: &str, text: &str) -> Instance {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        instance::load(&path).unwrap()
    }

    #[test]
    fn server_defaults_run_serve_and_wait_for_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let inst = instance_from(
            dir.path(),
            "etc/zeo.toml",
            "[zeo]\naddress = \"0.0.0.0:8200\"\n",
        );
        let s = settings_of(&inst, None).unwrap();
        assert_eq!(
            s.program[1..],
            ["serve", "-C", &inst.file.display().to_string()]
        );
        assert_eq!(s.ready, Some(ReadyCheck::Zeo("127.0.0.1:8200".into())));
        assert_eq!(s.socket, dir.path().join("var/zodbctl.sock"));
        assert_eq!(s.transcript, Some(dir.path().join("log/transcript.log")));
        assert_eq!(s.stop_timeout, Duration::from_secs(300));
        assert_eq!(s.exit_codes, vec![0, 2]);
        assert_eq!(s.directory.as_deref(), Some(dir.path()));
    }

    #[test]
    fn client_program_of_its_own_has_no_implicit_check() {
        let dir = tempfile::tempdir().unwrap();
        let inst = instance_from(
            dir.path(),
            "etc/client.toml",
            "[zeoclient]\nservers = [\"127.0.0.1:8100\"]\n[runner]\nprogram = \"sleep 1\"\n\
             backoff-limit = 3\nstop-timeout = 2\n[environment]\nTZ = \"UTC\"\n",
        );
        let s = settings_of(&inst, None).unwrap();
        assert_eq!(s.program, ["sleep", "1"]);
        assert_eq!(s.ready, None);
        assert_eq!(s.backoff_limit, 3);
        assert_eq!(s.environment, vec![("TZ".to_owned(), "UTC".to_owned())]);
        let inst = instance_from(
            dir.path(),
            "etc/client.toml",
            "[zeoclient]\nservers = [\"127.0.0.1:8100\"]\n",
        );
        let s = settings_of(&inst, None).unwrap();
        assert_eq!(s.ready, Some(ReadyCheck::Connect("127.0.0.1:8080".into())));
    }

    #[test]
    fn a_zope_client_is_ready_on_its_http_address_whatever_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let inst = instance_from(
            dir.path(),
            "etc/client.toml",
            "[zeoclient]\nservers = [\"127.0.0.1:8100\"]\n[zope]\nhttp-address = \"127.0.0.1:8181\"\n\
             [runner]\nprogram = \"/venv/bin/runwsgi -v etc/zope.ini\"\n",
        );
        let s = settings_of(&inst, None).unwrap();
        assert_eq!(s.ready, Some(ReadyCheck::Connect("127.0.0.1:8181".into())));
        assert_eq!(s.zope.as_ref().map(|z| z.sessions), Some(false));
        // The configuration may say otherwise.
        let inst = instance_from(
            dir.path(),
            "etc/client.toml",
            "[zeoclient]\nservers = [\"127.0.0.1:8100\"]\n[zope]\n[runner]\nprogram = \"sleep 9\"\n\
             ready-check = \"none\"\n",
        );
        assert_eq!(settings_of(&inst, None).unwrap().ready, None);
    }
}
