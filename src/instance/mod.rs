//! Instance configuration (TOML, and ZConfig zeo.conf as a drop-in) and scaffolding.
//!
//! An *instance* is a directory: a server has `etc/zeo.toml` (or a legacy `etc/zeo.conf`), a
//! client `etc/client.toml`, a cluster `cluster.toml` naming its member instances. [`locate`]
//! finds the one a command acts on from `-C`/`-i`/`$ZODBCTL_INSTANCE`/the current directory;
//! [`load`] reads one file. Relative paths inside a configuration are relative to the instance
//! directory ([`Instance::resolve`]).

pub mod address;
pub mod commands;
pub mod config;
pub mod error;
pub mod scaffold;

pub mod units;
pub mod zconfig;
pub mod zeoconf;

use std::path::{Path, PathBuf};

pub use address::{Address, AddressError};
pub use config::{
    BackupConfig, ClientConfig, ClusterConfig, ClusterMember, EventLogConfig, FileStorageConfig,
    MemberKind, MemoryStorageConfig, OnTimeout, ReadyCheck, ReplicationConfig, ReplicationMode,
    RunnerConfig, ServerConfig, StorageConfig, TlsConfig, ZeoClientConfig, ZeoConfig, ZopeConfig,
};
pub use error::{ConfigError, Notice};
pub use units::{ByteSize, CommandLine, ExitCodes, LogLevel, Seconds, Umask};

use crate::cli::GlobalArgs;

/// Server configuration file, relative to the instance directory.
pub const SERVER_TOML: &str = "etc/zeo.toml";
/// Client configuration file, relative to the instance directory.
pub const CLIENT_TOML: &str = "etc/client.toml";
/// A legacy ZConfig server configuration, accepted in place of `etc/zeo.toml`.
pub const SERVER_ZCONFIG: &str = "etc/zeo.conf";
/// Cluster file, relative to the cluster directory.
pub const CLUSTER_TOML: &str = "cluster.toml";

/// What a configuration file describes.
// A server's configuration is the largest (with [replication]); one or a few of these live
// per command, so boxing it would buy nothing but indirection at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceConfig {
    Server(ServerConfig),
    Client(ClientConfig),
    Cluster(ClusterConfig),
}

impl InstanceConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            InstanceConfig::Server(_) => "server",
            InstanceConfig::Client(_) => "client",
            InstanceConfig::Cluster(_) => "cluster",
        }
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The instance (or cluster) directory; relative paths in the configuration start here.
    pub dir: PathBuf,
    /// The file read.
    pub file: PathBuf,
    pub config: InstanceConfig,
    /// Keys read but not acted on (from a zeo.conf); show them to the user.
    pub notices: Vec<Notice>,
}

impl Instance {
    /// A path from the configuration, made absolute against the instance directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_in(&self.dir, p)
    }

    pub fn server(&self) -> Option<&ServerConfig> {
        match &self.config {
            InstanceConfig::Server(s) => Some(s),
            _ => None,
        }
    }
    pub fn client(&self) -> Option<&ClientConfig> {
        match &self.config {
            InstanceConfig::Client(c) => Some(c),
            _ => None,
        }
    }
    pub fn cluster(&self) -> Option<&ClusterConfig> {
        match &self.config {
            InstanceConfig::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// The members of a cluster, each loaded, in start order.
    pub fn members(&self) -> Result<Vec<(ClusterMember, Instance)>, ConfigError> {
        let Some(cluster) = self.cluster() else {
            return Ok(Vec::new());
        };
        cluster
            .start_order()
            .into_iter()
            .map(|m| {
                let dir = self.resolve(&m.path);
                let inst = locate_in_dir(&dir)?;
                let actual = inst.config.kind_name();
                let declared = match m.kind {
                    MemberKind::Server => "server",
                    MemberKind::Client => "client",
                };
                if actual != declared {
                    return Err(ConfigError::invalid(
                        &self.file,
                        None,
                        Some(&format!("members.{}", m.display_name())),
                        format!(
                            "kind = \"{declared}\", but {} is a {actual} instance",
                            dir.display()
                        ),
                    ));
                }
                Ok((m.clone(), inst))
            })
            .collect()
    }
}

/// `p` made absolute against `dir` (absolute paths and `STDERR`/`STDOUT` pass through).
pub fn resolve_in(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p == Path::new("STDERR") || p == Path::new("STDOUT") {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The instance directory a configuration file belongs to: the parent of `etc/` for a file in
/// an `etc` directory, else the file's own directory.
pub fn instance_dir_of(file: &Path) -> PathBuf {
    let abs = absolute(file);
    let parent = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if parent.file_name().is_some_and(|n| n == "etc") {
        parent.parent().map(Path::to_path_buf).unwrap_or(parent)
    } else {
        parent
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// True when the text looks like ZConfig (first meaningful line is a section or directive).
fn looks_like_zconfig(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with('<') || l.starts_with('%'))
}

/// Read one configuration file: zodbctl TOML (server, client or cluster) or a ZConfig
/// zeo.conf (by extension `.conf` or by content).
pub fn load(path: &Path) -> Result<Instance, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let dir = instance_dir_of(path);
    let is_conf = path.extension().is_some_and(|e| e == "conf");
    if is_conf || looks_like_zconfig(&text) {
        let (config, notices) = zeoconf::server_from_zconfig(path)?;
        return Ok(Instance {
            dir,
            file: path.to_path_buf(),
            config: InstanceConfig::Server(config),
            notices,
        });
    }
    let config = parse_toml(path, &text)?;
    if let InstanceConfig::Cluster(_) = config {
        // A cluster's members are relative to the file's own directory, etc/ or not.
        let dir = absolute(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        return Ok(Instance {
            dir,
            file: path.to_path_buf(),
            config,
            notices: Vec::new(),
        });
    }
    let notices = match &config {
        InstanceConfig::Server(s) => server_warnings(path, &text, s),
        _ => Vec::new(),
    };
    Ok(Instance {
        dir,
        file: path.to_path_buf(),
        config,
        notices,
    })
}

/// [`ServerConfig::warnings`] as notices placed on the key's line of `text`.
pub fn server_warnings(file: &Path, text: &str, config: &ServerConfig) -> Vec<Notice> {
    config
        .warnings()
        .into_iter()
        .map(|p| Notice {
            file: file.to_path_buf(),
            line: line_of_key(text, &p.key).unwrap_or(1),
            key: p.key,
            message: p.message,
        })
        .collect()
}

/// Parse TOML text; the kind comes from the top-level tables (`[zeoclient]` → client,
/// `[[members]]` → cluster, otherwise server), or from the file name when the text is empty.
pub fn parse_toml(file: &Path, text: &str) -> Result<InstanceConfig, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let kind = if table.contains_key("members") {
        "cluster"
    } else if table.contains_key("zeoclient") || table.contains_key("zope") {
        "client"
    } else if table.contains_key("zeo") || table.contains_key("storages") {
        "server"
    } else if name == "client.toml" {
        "client"
    } else if name == "cluster.toml" {
        "cluster"
    } else {
        "server"
    };
    let (config, problems) = match kind {
        "cluster" => {
            let c: ClusterConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
            let p = c.problems();
            (InstanceConfig::Cluster(c), p)
        }
        "client" => {
            let c: ClientConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
            let p = c.problems();
            (InstanceConfig::Client(c), p)
        }
        _ => {
            let c: ServerConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
            let p = c.problems();
            (InstanceConfig::Server(c), p)
        }
    };
    if let Some(p) = problems.into_iter().next() {
        let line = line_of_key(text, &p.key);
        return Err(ConfigError::invalid(file, line, Some(&p.key), p.message));
    }
    Ok(config)
}

/// A TOML error as one line: file, line, the dotted key, toml's message (which names the
/// key and, for unknown keys, what is allowed).
fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return ConfigError::invalid(file, None, None, message);
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let key = key_at(text, line);
    ConfigError::invalid(file, Some(line), key.as_deref(), message)
}

/// The dotted key defined on `line` (1-based): the innermost `[table]` above it plus the
/// key before `=` on the line, or the table header itself.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?.trim();
    let header = |l: &str| {
        let l = l.trim();
        if l.starts_with('[') {
            let inner = l.trim_start_matches('[');
            let end = inner.find(']')?;
            Some(inner[..end].trim().to_owned())
        } else {
            None
        }
    };
    if let Some(h) = header(this) {
        return Some(h);
    }
    let key = this
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned());
    let table = lines[..line - 1].iter().rev().find_map(|l| header(l));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// The line where a dotted key (`runner.backoff-limit`, `storages.x`) is written, if found.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = match dotted.rsplit_once('.') {
        Some((t, k)) => (Some(t), k),
        None => (None, dotted),
    };
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            if name == dotted {
                return Some(i + 1);
            }
            current = Some(name);
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            if k.trim() == key && current.as_deref() == table {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Find the configuration a command acts on: `-C FILE` when given, else the instance
/// directory from `-i DIR` / `$ZODBCTL_INSTANCE` / the current directory.
pub fn locate(g: &GlobalArgs) -> Result<Instance, ConfigError> {
    if let Some(file) = &g.config {
        return load(file);
    }
    let dir = match &g.instance {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| ConfigError::io(Path::new("."), e))?,
    };
    locate_in_dir(&dir)
}

/// The configuration of the instance or cluster in `dir`: `etc/zeo.toml`, `etc/client.toml`,
/// `etc/zeo.conf` or `cluster.toml`, whichever exists (exactly one of the TOML ones).
pub fn locate_in_dir(dir: &Path) -> Result<Instance, ConfigError> {
    let candidates = [SERVER_TOML, CLIENT_TOML, CLUSTER_TOML];
    let found: Vec<PathBuf> = candidates
        .iter()
        .map(|c| dir.join(c))
        .filter(|p| p.is_file())
        .collect();
    match found.as_slice() {
        [one] => load(one),
        [] => {
            let conf = dir.join(SERVER_ZCONFIG);
            if conf.is_file() {
                return load(&conf);
            }
            Err(ConfigError::NotFound {
                message: format!(
                    "{}: not an instance (no {SERVER_TOML}, {CLIENT_TOML}, {SERVER_ZCONFIG} or {CLUSTER_TOML}); \
                     use -i DIR, -C FILE or $ZODBCTL_INSTANCE, or create one with `zodbctl create`",
                    dir.display()
                ),
            })
        }
        many => Err(ConfigError::NotFound {
            message: format!(
                "{}: more than one configuration ({}); use -C FILE to choose",
                dir.display(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_key() {
        let text = "[zeo]\naddress = \"nonsense\"\n";
        let e = parse_toml(Path::new("etc/zeo.toml"), text).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("etc/zeo.toml:2: zeo.address: bad address"),
            "{s}"
        );
        let e = parse_toml(Path::new("etc/zeo.toml"), "[runner]\nbackof-limit = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("etc/zeo.toml:2: runner.backof-limit: unknown field"),
            "{e}"
        );
        let e = parse_toml(Path::new("etc/zeo.toml"), "[runner]\nbackoff-limit = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "etc/zeo.toml:2: runner.backoff-limit: must be at least 1 (seconds)"
        );
        let e = parse_toml(Path::new("x.toml"), "[zeo\n").unwrap_err();
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn kind_from_tables_or_name() {
        let c = parse_toml(Path::new("a.toml"), "[zeoclient]\nservers = [\"1\"]\n").unwrap();
        assert_eq!(c.kind_name(), "client");
        assert_eq!(
            parse_toml(Path::new("zeo.toml"), "").unwrap().kind_name(),
            "server"
        );
    }

    #[test]
    fn instance_dir_is_parent_of_etc() {
        assert_eq!(
            instance_dir_of(Path::new("/srv/zeo/etc/zeo.toml")),
            Path::new("/srv/zeo")
        );
        assert_eq!(
            instance_dir_of(Path::new("/srv/zeo/zeo.toml")),
            Path::new("/srv/zeo")
        );
    }
}
