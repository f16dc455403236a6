//! Finding the instance (or cluster) a command acts on and turning its configuration into
//! [`Settings`].
//!
//! An instance directory holds `etc/zeo.toml` (a server) or `etc/client.toml` (a client); a
//! cluster directory holds `cluster.toml` naming its server and clients. The supervisor reads
//! the `[runner]` table (zdaemon's `<runner>` keys, supervisor.md §3.2) and `[environment]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use toml::{Table, Value};

use super::settings::{self, ReadyCheck, Settings};
use crate::cli::GlobalArgs;
use crate::error::usage;

/// What a command acts on.
#[derive(Debug)]
pub struct Target {
    /// For a cluster, server(s) first, then clients: the start order (stop is the reverse).
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

/// Locate and load the target of a command.
pub fn load(g: &GlobalArgs) -> Result<Target> {
    if let Some(file) = &g.config {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        if file.file_name().is_some_and(|n| n == "cluster.toml") {
            return load_cluster(&file);
        }
        let home = home_of(&file);
        return Ok(Target::one(load_instance(&home, &file)?));
    }
    let dir = instance_dir(g)?;
    let cluster = dir.join("cluster.toml");
    if cluster.is_file() {
        return load_cluster(&cluster);
    }
    match find_config(&dir) {
        Some(file) => Ok(Target::one(load_instance(&dir, &file)?)),
        None => Err(usage(anyhow!(
            "no instance in {} (expected etc/zeo.toml, etc/client.toml or cluster.toml; \
             create one with `zodbctl create server {}`)",
            dir.display(),
            dir.display()
        ))),
    }
}

/// The configuration file of the instance in `dir`, if it has one.
pub fn find_config(dir: &Path) -> Option<PathBuf> {
    ["etc/zeo.toml", "etc/client.toml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// `HOME/etc/x.toml` → `HOME`; any other file → its directory.
fn home_of(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("/"));
    if parent.file_name().is_some_and(|n| n == "etc") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

fn read_table(file: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading {}", file.display()))
        .map_err(usage)?;
    text.parse::<Table>()
        .with_context(|| format!("parsing {}", file.display()))
        .map_err(usage)
}

fn load_cluster(file: &Path) -> Result<Target> {
    let t = read_table(file)?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let c = t.get("cluster").and_then(Value::as_table).unwrap_or(&t);
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut push = |v: &Value| -> Result<()> {
        let s = v.as_str().ok_or_else(|| {
            usage(anyhow!(
                "{}: instance names must be strings",
                file.display()
            ))
        })?;
        dirs.push(base.join(s));
        Ok(())
    };
    match c.get("server") {
        Some(Value::Array(a)) => a.iter().try_for_each(&mut push)?,
        Some(v) => push(v)?,
        None => {}
    }
    if let Some(Value::Array(a)) = c.get("clients") {
        a.iter().try_for_each(&mut push)?;
    }
    if dirs.is_empty() {
        bail!(usage(anyhow!(
            "{}: no instances (expected server = \"DIR\" and clients = [\"DIR\", ...])",
            file.display()
        )));
    }
    let members = dirs
        .iter()
        .map(|d| {
            let cfg = find_config(d).ok_or_else(|| {
                usage(anyhow!(
                    "{}: no etc/zeo.toml or etc/client.toml in {}",
                    file.display(),
                    d.display()
                ))
            })?;
            load_instance(d, &cfg)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Target {
        members,
        cluster: true,
    })
}

fn bad(file: &Path, key: &str, why: impl std::fmt::Display) -> anyhow::Error {
    usage(anyhow!("{}: [runner] {key}: {why}", file.display()))
}

/// Build the settings of the instance at `home` from its configuration `file`.
pub fn load_instance(home: &Path, file: &Path) -> Result<Settings> {
    let t = read_table(file)?;
    let empty = Table::new();
    let r = t.get("runner").and_then(Value::as_table).unwrap_or(&empty);
    let is_server = file.file_name().is_some_and(|n| n == "zeo.toml");
    let name = home.file_name().map_or_else(
        || "instance".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let path = |v: &str| -> PathBuf {
        let p = Path::new(v);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            home.join(p)
        }
    };
    let string = |key: &str| -> Result<Option<String>> {
        match r.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(bad(file, key, format!("expected a string, got {v}"))),
        }
    };
    let int = |key: &str| -> Result<Option<u64>> {
        match r.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(v) => Err(bad(
                file,
                key,
                format!("expected a whole number ≥ 0, got {v}"),
            )),
        }
    };
    let program = match r.get("program") {
        Some(Value::String(s)) => {
            settings::split_program(s).map_err(|e| bad(file, "program", e))?
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(file, "program", "expected a list of strings"))?,
        Some(v) => return Err(bad(file, "program", format!("expected a string, got {v}"))),
        None if is_server => {
            let exe = std::env::current_exe().context("locating the zodbctl executable")?;
            vec![
                exe.to_string_lossy().into_owned(),
                "-C".into(),
                file.to_string_lossy().into_owned(),
                "serve".into(),
            ]
        }
        None => {
            return Err(bad(
                file,
                "program",
                "missing (the command the instance runs)",
            ));
        }
    };
    let default_sock = if is_server {
        "var/zeo.zdsock"
    } else {
        "var/client.zdsock"
    };
    let socket = path(&string("socket-name")?.unwrap_or_else(|| default_sock.into()));
    let mut s = Settings::new(&name, program, socket);
    if let Some(v) = int("backoff-limit")? {
        s.backoff_limit = v;
    }
    if let Some(v) = r.get("forever") {
        s.forever = v
            .as_bool()
            .ok_or_else(|| bad(file, "forever", "expected true or false"))?;
    }
    if let Some(v) = r.get("daemon") {
        s.daemon = v
            .as_bool()
            .ok_or_else(|| bad(file, "daemon", "expected true or false"))?;
    }
    match r.get("exit-codes") {
        None => {}
        Some(Value::String(v)) => {
            s.exit_codes = settings::parse_exit_codes(v).map_err(|e| bad(file, "exit-codes", e))?
        }
        Some(Value::Array(a)) => {
            s.exit_codes = a
                .iter()
                .map(|v| v.as_integer().and_then(|i| i32::try_from(i).ok()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(file, "exit-codes", "expected a list of integers"))?
        }
        Some(v) => return Err(bad(file, "exit-codes", format!("expected a list, got {v}"))),
    }
    if let Some(v) = int("stop-timeout")? {
        s.stop_timeout = Duration::from_secs(v);
    }
    if let Some(v) = int("start-timeout")? {
        s.start_timeout = Duration::from_secs(v);
    }
    s.directory = Some(string("directory")?.map_or_else(|| home.to_path_buf(), |d| path(&d)));
    match r.get("umask") {
        None => {}
        Some(Value::String(v)) => {
            s.umask = settings::parse_umask(v).map_err(|e| bad(file, "umask", e))?
        }
        // A TOML integer written as 0o22 or 22 (read as octal digits, like zdaemon).
        Some(Value::Integer(i)) => {
            s.umask = settings::parse_umask(&format!("{i:o}"))
                .or_else(|_| settings::parse_umask(&i.to_string()))
                .map_err(|e| bad(file, "umask", e))?
        }
        Some(v) => return Err(bad(file, "umask", format!("expected a string, got {v}"))),
    }
    s.user = match r.get("user") {
        None => None,
        Some(Value::Integer(i)) => Some(i.to_string()),
        Some(Value::String(u)) => Some(u.clone()),
        Some(v) => return Err(bad(file, "user", format!("expected a name, got {v}"))),
    };
    s.transcript = string("transcript")?.map(|p| path(&p));
    s.logfile = string("logfile")?.map(|p| path(&p));
    s.ready = match string("ready-check")? {
        Some(c) => Some(settings::parse_ready_check(&c).map_err(|e| bad(file, "ready-check", e))?),
        None if is_server => server_address(&t).map(ReadyCheck::Zeo),
        None => None,
    };
    if let Some(env) = t.get("environment").and_then(Value::as_table) {
        for (k, v) in env {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.environment.push((k.clone(), v));
        }
    }
    Ok(s)
}

/// The server's listening address from its configuration (`[server]` or `[zeo]` `address`).
pub fn server_address(t: &Table) -> Option<String> {
    ["server", "zeo"]
        .iter()
        .filter_map(|k| t.get(*k).and_then(Value::as_table))
        .find_map(|s| s.get("address").and_then(Value::as_str).map(str::to_owned))
}
