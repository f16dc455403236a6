//! `zodbctl create server|client|cluster`: new instances from the templates in `templates/`.
//!
//! Like mkzeoinstance, nothing that exists is ever overwritten, but stricter: the target
//! directory must be new or empty, and everything (arguments, rendered configuration) is
//! checked before the first directory is created, so a refused command writes nothing.
//! Progress lines are mkzeoinstance's ("Created directory", "Wrote file", "Changed mode for
//! ... to 755", "All done.").
//!
//! The templates are compiled in (`include_str!`), so the binary is self-contained. They use
//! `{{NAME}}` placeholders; values are escaped for the syntax of the file they land in (TOML
//! strings, ZConfig values, shell words, Python literals).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::address::Address;
use super::config::{
    ClientConfig, ClusterConfig, ClusterMember, DEFAULT_CLIENT_PROGRAM, FileStorageConfig,
    MemberKind, MemoryStorageConfig, ServerConfig, StorageConfig,
};
use super::units::{ByteSize, CommandLine};
use super::{CLIENT_TOML, CLUSTER_TOML, InstanceConfig, SERVER_TOML, parse_toml};
use crate::cli::{CreateClientArgs, CreateClusterArgs, CreateServerArgs};
use crate::error::usage;

mod tpl {
    pub const SERVER_TOML: &str = include_str!("../../templates/server/zeo.toml");
    pub const ZEOCTL: &str = include_str!("../../templates/server/zeoctl");
    pub const RUNZEO: &str = include_str!("../../templates/server/runzeo");
    pub const REPOZO: &str = include_str!("../../templates/server/repozo");
    pub const ZEOUP: &str = include_str!("../../templates/server/zeoup");
    pub const ZEO_NAGIOS: &str = include_str!("../../templates/server/zeo-nagios");
    pub const SERVER_LOGROTATE: &str = include_str!("../../templates/server/logrotate.conf");
    pub const CRONTAB: &str = include_str!("../../templates/server/crontab");
    pub const SERVER_UNIT: &str = include_str!("../../templates/server/zodbctl.service");
    pub const CLIENT_TOML: &str = include_str!("../../templates/client/client.toml");
    pub const ZOPE_CONF: &str = include_str!("../../templates/client/zope.conf");
    pub const ZOPE_INI: &str = include_str!("../../templates/client/zope.ini");
    pub const SITE_ZCML: &str = include_str!("../../templates/client/site.zcml");
    pub const CLIENT_LOGROTATE: &str = include_str!("../../templates/client/logrotate.conf");
    pub const CLIENT_UNIT: &str = include_str!("../../templates/client/zodbctl.service");
    pub const CLUSTER_TOML: &str = include_str!("../../templates/cluster/cluster.toml");
}

// ---------------------------------------------------------------------------------------------
// Plans: everything to create, computed and checked before anything is written
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct PlannedFile {
    path: PathBuf,
    content: String,
    executable: bool,
}

/// Directories and files of one `create` command.
#[derive(Debug, Default)]
pub struct Plan {
    dirs: Vec<(PathBuf, Option<u32>)>,
    files: Vec<PlannedFile>,
    /// Files made mode 0600 once written.
    private: Vec<PathBuf>,
}

impl Plan {
    fn dir(&mut self, path: PathBuf) {
        self.dirs.push((path, None));
    }
    fn private_dir(&mut self, path: PathBuf) {
        self.dirs.push((path, Some(0o700)));
    }
    fn file(&mut self, path: PathBuf, content: String) {
        self.files.push(PlannedFile {
            path,
            content,
            executable: false,
        });
    }
    fn script(&mut self, path: PathBuf, content: String) {
        self.files.push(PlannedFile {
            path,
            content,
            executable: true,
        });
    }
    /// A file only its owner reads (credentials).
    fn private_file(&mut self, path: PathBuf, content: String) {
        self.private.push(path.clone());
        self.file(path, content);
    }

    /// Paths of the files this plan writes.
    pub fn file_paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Create everything, reporting each step on `out`.
    fn execute(&self, out: &mut dyn std::io::Write) -> Result<()> {
        for (dir, mode) in &self.dirs {
            let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
            for d in missing.into_iter().rev() {
                std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
                writeln!(out, "Created directory {}", d.display())?;
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("setting the mode of {}", dir.display()))?;
            }
        }
        for f in &self.files {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&f.path)
                .with_context(|| format!("creating {}", f.path.display()))?;
            std::io::Write::write_all(&mut file, f.content.as_bytes())
                .with_context(|| format!("writing {}", f.path.display()))?;
            writeln!(out, "Wrote file {}", f.path.display())?;
            if f.executable {
                std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("setting the mode of {}", f.path.display()))?;
                writeln!(out, "Changed mode for {} to 755", f.path.display())?;
            }
            if self.private.contains(&f.path) {
                std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("setting the mode of {}", f.path.display()))?;
            }
        }
        writeln!(out, "All done.")?;
        Ok(())
    }
}

/// The target must be a new or empty directory (exit status 2 otherwise).
fn check_target(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(usage(anyhow!(
                    "{}: the directory already has files; zodbctl create never overwrites (choose a new or empty directory)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The nearest existing ancestor must be a directory we can write into.
            if let Some(parent) = dir.ancestors().skip(1).find(|a| a.exists()) {
                if !parent.is_dir() {
                    return Err(usage(anyhow!("{}: not a directory", parent.display())));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(usage(anyhow!(
            "{}: exists and is not a directory",
            dir.display()
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    }
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("making {} absolute", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// Escaping for each target syntax
// ---------------------------------------------------------------------------------------------

/// Replace every `{{KEY}}`; a placeholder left over is a bug in the templates.
fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(i) = out.find("{{") {
        let end = out[i..].find("}}").map_or(out.len(), |j| i + j + 2);
        bail!("template placeholder {} has no value", &out[i..end]);
    }
    Ok(out)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// A ZConfig value: `$` doubled so that it is not substituted.
fn zc(s: &str) -> String {
    s.replace('$', "$$")
}

/// A configuration path in a ZConfig file: relative paths hang off `$INSTANCE`.
fn zc_path(p: &Path) -> String {
    if p.is_absolute() {
        zc(&p.display().to_string())
    } else {
        format!("$INSTANCE/{}", zc(&p.display().to_string()))
    }
}

/// A byte size as ZConfig's `byte-size` reads it (KB/MB/GB only).
fn zc_size(s: ByteSize) -> String {
    let n = s.bytes();
    for (unit, mult) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if n != 0 && n % mult == 0 {
            return format!("{}{unit}", n / mult);
        }
    }
    n.to_string()
}

/// A Python string literal for logging's fileConfig `args` (which %-interpolates).
fn py_str(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('\'', "\\'")
        .replace('%', "%%");
    format!("'{escaped}'")
}

fn sh(p: &Path) -> String {
    shell_words::quote(&p.display().to_string()).into_owned()
}

fn instance_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "instance".into());
    // systemd unit names: letters, digits and ":-_.\" only.
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn zodbctl_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("zodbctl"))
}

/// Check that a rendered configuration reads back as the intended model.
fn check_rendered(file: &Path, text: &str, expected: &InstanceConfig) -> Result<()> {
    let got = parse_toml(file, text).map_err(|e| anyhow!("internal error: rendered {e}"))?;
    if &got != expected {
        bail!(
            "internal error: {} does not read back as intended:\n{got:?}\n!=\n{expected:?}",
            file.display()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// What `create server` needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub address: Address,
    pub storages: Vec<(String, StorageKindArg)>,
    pub blobs: bool,
    pub user: Option<String>,
    /// `[metrics] address`, when the instance serves Prometheus metrics.
    pub metrics: Option<String>,
    /// A server of a replicated cluster (`create cluster --replicas`).
    pub replication: Option<ServerReplication>,
}

/// How a server of a replicated cluster replicates.
#[derive(Debug, Clone)]
pub struct ServerReplication {
    /// `[replication] address`: where replicas of this server connect (once promoted, for
    /// a replica).
    pub listen: Address,
    /// `[replication] peers`: the other servers' replication addresses.
    pub peers: Vec<Address>,
    /// For a replica: the primary's replication address (`replicate-from` of each file
    /// storage).
    pub replicate_from: Option<Address>,
    /// For a replica: `[zeo] read-only-address`.
    pub read_only_address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKindArg {
    File,
    Memory,
}

fn parse_storage_arg(s: &str) -> Result<(String, StorageKindArg)> {
    let (name, kind) = match s.split_once('=') {
        Some((n, "file")) => (n, StorageKindArg::File),
        Some((n, "memory")) => (n, StorageKindArg::Memory),
        Some((_, t)) => {
            return Err(usage(anyhow!(
                "--storage {s}: unknown type {t:?} (allowed: file, memory)"
            )));
        }
        None => (s, StorageKindArg::File),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(usage(anyhow!(
            "--storage {s}: a storage name is letters, digits, '-', '_' or '.'"
        )));
    }
    Ok((name.to_owned(), kind))
}

impl ServerSpec {
    fn from_args(args: &CreateServerArgs) -> Result<ServerSpec> {
        let address: Address = args
            .address
            .parse()
            .map_err(|e| usage(anyhow!("--address: {e}")))?;
        let mut storages = Vec::new();
        for s in &args.storages {
            let (name, kind) = parse_storage_arg(s)?;
            if storages.iter().any(|(n, _)| *n == name) {
                return Err(usage(anyhow!("--storage {name}: given twice")));
            }
            storages.push((name, kind));
        }
        if storages.is_empty() {
            storages.push(("1".to_owned(), StorageKindArg::File));
        }
        Ok(ServerSpec {
            address,
            storages,
            blobs: args.blobs,
            user: args.user.clone(),
            metrics: match &args.metrics {
                Some(m) => {
                    use std::net::ToSocketAddrs;
                    if m.to_socket_addrs().map_or(true, |mut a| a.next().is_none()) {
                        return Err(usage(anyhow!("--metrics {m}: not a HOST:PORT address")));
                    }
                    Some(m.clone())
                }
                None => None,
            },
            replication: None,
        })
    }

    fn storage_config(&self, name: &str, kind: StorageKindArg) -> StorageConfig {
        match kind {
            // Written on a clean stop and at checkpoints, read on start: sessions survive a
            // server restart.
            StorageKindArg::Memory => StorageConfig::Memory(MemoryStorageConfig {
                path: Some(PathBuf::from(format!("var/{name}.snapshot"))),
                ..MemoryStorageConfig::default()
            }),
            StorageKindArg::File => {
                let (path, blobs) = if name == "1" {
                    ("var/Data.fs".to_owned(), "var/blobs".to_owned())
                } else {
                    (format!("var/{name}.fs"), format!("var/blobs-{name}"))
                };
                let mut f = FileStorageConfig::new(path);
                if self.blobs {
                    f.blob_dir = Some(PathBuf::from(blobs));
                }
                f.replicate_from = self
                    .replication
                    .as_ref()
                    .and_then(|r| r.replicate_from.clone());
                StorageConfig::File(f)
            }
        }
    }

    /// The configuration `etc/zeo.toml` will hold.
    pub fn config(&self) -> ServerConfig {
        let mut c = ServerConfig {
            storages: self
                .storages
                .iter()
                .map(|(n, k)| (n.clone(), self.storage_config(n, *k)))
                .collect(),
            ..ServerConfig::default()
        };
        c.zeo.address = self.address.clone();
        c.runner.user = self.user.clone();
        c.metrics = self
            .metrics
            .as_ref()
            .map(|a| super::config::MetricsConfig { address: a.clone() });
        if let Some(r) = &self.replication {
            c.zeo.read_only_address = r.read_only_address.clone();
            c.replication = super::config::ReplicationConfig {
                address: Some(r.listen.clone()),
                mode: super::config::ReplicationMode::Sync,
                on_timeout: super::config::OnTimeout::Degrade,
                peers: r.peers.clone(),
                ..Default::default()
            };
        }
        c
    }

    /// The `[zeo]` lines of a replica, and the `[replication]` section of a replicated
    /// server (both empty otherwise).
    fn replication_lines(&self, config: &ServerConfig) -> (String, String) {
        let Some(r) = &self.replication else {
            return (String::new(), String::new());
        };
        let zeo = match &r.read_only_address {
            Some(ro) => format!(
                "# A replica: clients are served read-only here; `address` above opens only once\n\
                 # this server is promoted (`zodbctl promote`).\nread-only-address = {}\n",
                toml_str(&ro.to_string())
            ),
            None => String::new(),
        };
        let rc = &config.replication;
        let peers = rc
            .peers
            .iter()
            .map(|p| toml_str(&p.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let role = if r.replicate_from.is_some() {
            "# Replicas connect here once this replica is promoted (or to chain from it)."
        } else {
            "# Replicas of this server's file storages connect here."
        };
        let section = format!(
            "\n[replication]\n{role}\naddress = {}\n\
             # A commit is acknowledged once a replica has it durable; when none has answered\n\
             # within sync-timeout seconds, commits go on asynchronously (on-timeout = \"degrade\",\n\
             # logged and shown by `zodbctl status`) rather than wait (\"block\").\n\
             mode = \"{}\"\nsync-timeout = {}\non-timeout = \"{}\"\nkeep-alive-delay = {}\n\
             # The other servers' replication addresses: asked at start whether a newer primary\n\
             # exists, so that a former primary never comes back writable.\npeers = [{peers}]\n",
            toml_str(&r.listen.to_string()),
            match rc.mode {
                super::config::ReplicationMode::Async => "async",
                super::config::ReplicationMode::Sync => "sync",
            },
            rc.sync_timeout,
            match rc.on_timeout {
                super::config::OnTimeout::Degrade => "degrade",
                super::config::OnTimeout::Block => "block",
            },
            rc.keep_alive_delay,
        );
        (zeo, section)
    }
}

fn render_storages(config: &ServerConfig) -> String {
    let mut out = String::new();
    for (name, storage) in &config.storages {
        let key = if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            name.clone()
        } else {
            toml_str(name)
        };
        let _ = writeln!(out, "[storages.{key}]");
        match storage {
            StorageConfig::File(f) => {
                let _ = writeln!(out, "type = \"file\"\npath = {}", toml_path(&f.path));
                match &f.blob_dir {
                    Some(b) => {
                        let _ = writeln!(out, "blob-dir = {}", toml_path(b));
                    }
                    None => {
                        let _ = writeln!(out, "# blob-dir = \"var/blobs\"");
                    }
                }
                if let Some(from) = &f.replicate_from {
                    let _ = writeln!(
                        out,
                        "# A replica of storage {name:?} of the primary: kept a byte-identical copy.\n\
                         replicate-from = {}",
                        toml_str(&from.to_string())
                    );
                }
            }
            StorageConfig::Memory(m) => {
                if config.replication.address.is_some() {
                    let _ = writeln!(
                        out,
                        "# Not replicated (memory storages never are): each server has its own, and a\n\
                         # promoted replica starts with an empty one (sessions are lost on failover)."
                    );
                }
                let _ = writeln!(
                    out,
                    "# In memory, not historical: sessions and other short-lived data.\n\
                     type = \"memory\"\nhistory-seconds = {}",
                    m.history_seconds
                );
                if let Some(p) = &m.path {
                    let _ = writeln!(
                        out,
                        "# Saved here on a clean stop and every checkpoint-seconds while it changes,\n\
                         # read on start: a crash loses at most the last checkpoint-seconds.\n\
                         path = {}\ncheckpoint-seconds = {}",
                        toml_path(p),
                        m.checkpoint_seconds
                    );
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Plan a server instance in `dir` (absolute).
pub fn plan_server(dir: &Path, spec: &ServerSpec) -> Result<(Plan, ServerConfig)> {
    let config = spec.config();
    let zodbctl = zodbctl_path();
    let name = instance_name(dir);
    let user_line = match &spec.user {
        Some(u) => format!("user = {}\n", toml_str(u)),
        None => "# Run as this user when started as root:\n# user = \"zope\"\n".into(),
    };
    let (zeo_extra, replication) = spec.replication_lines(&config);
    let toml_text = fill(
        tpl::SERVER_TOML,
        &[
            ("INSTANCE", dir.display().to_string()),
            ("ZEO_EXTRA", zeo_extra),
            ("REPLICATION", replication),
            ("ADDRESS", toml_str(&spec.address.to_string())),
            ("STORAGES", render_storages(&config)),
            ("USER", user_line),
            (
                "METRICS",
                match &spec.metrics {
                    Some(a) => format!("[metrics]\naddress = {}\n", toml_str(a)),
                    None => {
                        "# Prometheus metrics, /healthz and /readyz over HTTP (off by default):\n\
                             # [metrics]\n# address = \"127.0.0.1:8099\"\n"
                            .into()
                    }
                },
            ),
        ],
    )?;
    let toml_file = dir.join(SERVER_TOML);
    check_rendered(
        &toml_file,
        &toml_text,
        &InstanceConfig::Server(config.clone()),
    )?;

    let datafs = config
        .storages
        .values()
        .find_map(|s| match s {
            StorageConfig::File(f) => Some(super::resolve_in(dir, &f.path)),
            StorageConfig::Memory(_) => None,
        })
        .unwrap_or_else(|| dir.join("var/Data.fs"));
    let systemd_user = systemd_user_line(spec.user.as_deref());
    let vars = [
        ("INSTANCE", dir.display().to_string()),
        ("INSTANCE_SH", sh(dir)),
        ("ZODBCTL", sh(&zodbctl)),
        ("ZODBCTL_SH", sh(&zodbctl)),
        ("NAME", name.clone()),
        ("ADDRESS", spec.address.connectable().to_string()),
        ("DATAFS", sh(&datafs)),
        ("SYSTEMD_USER", systemd_user),
    ];

    let mut plan = Plan::default();
    plan.dir(dir.to_path_buf());
    for sub in ["etc", "var", "log", "bin"] {
        plan.dir(dir.join(sub));
    }
    for storage in config.storages.values() {
        if let StorageConfig::File(f) = storage {
            if let Some(b) = &f.blob_dir {
                plan.private_dir(super::resolve_in(dir, b));
            }
        }
    }
    plan.file(toml_file, toml_text);
    plan.file(
        dir.join("etc/logrotate.conf"),
        fill(tpl::SERVER_LOGROTATE, &vars)?,
    );
    plan.file(dir.join("etc/crontab"), fill(tpl::CRONTAB, &vars)?);
    plan.file(
        dir.join(format!("etc/zodbctl-{name}.service")),
        fill(tpl::SERVER_UNIT, &vars)?,
    );
    plan.script(dir.join("bin/zeoctl"), fill(tpl::ZEOCTL, &vars)?);
    plan.script(dir.join("bin/runzeo"), fill(tpl::RUNZEO, &vars)?);
    plan.script(dir.join("bin/repozo"), fill(tpl::REPOZO, &vars)?);
    plan.script(dir.join("bin/zeoup"), fill(tpl::ZEOUP, &vars)?);
    plan.script(dir.join("bin/zeo-nagios"), fill(tpl::ZEO_NAGIOS, &vars)?);
    Ok((plan, config))
}

pub fn create_server(args: &CreateServerArgs) -> Result<u8> {
    let spec = ServerSpec::from_args(args)?;
    let dir = absolute(&args.dir)?;
    check_target(&dir)?;
    let (plan, _) = plan_server(&dir, &spec)?;
    if spec.address.is_all_interfaces() {
        eprintln!(
            "zodbctl: warning: address {} listens on every network interface; ZEO has no authentication without TLS",
            spec.address
        );
    }
    plan.execute(&mut std::io::stdout().lock())?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// What `create client` needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub servers: Vec<Address>,
    pub storage: String,
    pub cache_size: ByteSize,
    /// `None`: the default program (`runwsgi -v etc/zope.ini`), left unset in client.toml
    /// so that the default readiness check (the HTTP address) applies.
    pub program: Option<CommandLine>,
    pub http: Address,
    pub user: Option<String>,
    pub sessions: Option<String>,
    /// `--python VENV` (absolute): its `bin` leads the program's PATH.
    pub python: Option<PathBuf>,
    /// `--admin USER:PASSWORD`: Zope's first user, written to `inituser`.
    pub admin: Option<(String, String)>,
    /// `read-only-fallback`: connect read-only when no writable server is reachable (the
    /// clients of a replicated cluster).
    pub read_only_fallback: bool,
}

/// `--program`, `--python` and `--admin` of `create client|cluster`, checked: the program
/// (`--program`, else the virtualenv's `bin/runwsgi -v etc/zope.ini`), the virtualenv made
/// absolute, and the first user.
type ZopeOptions = (
    Option<CommandLine>,
    Option<PathBuf>,
    Option<(String, String)>,
);

fn zope_options(
    program: Option<&str>,
    python: Option<&Path>,
    admin: Option<&str>,
) -> Result<ZopeOptions> {
    let venv = match python {
        Some(v) => {
            let v = absolute(v)?;
            let runwsgi = v.join("bin/runwsgi");
            if !v.join("bin").is_dir() {
                return Err(usage(anyhow!(
                    "--python {}: not a virtualenv (no bin/ directory)",
                    v.display()
                )));
            }
            if !runwsgi.is_file() {
                eprintln!(
                    "zodbctl: warning: {} does not exist yet; install Zope there: {}/bin/pip install 'Zope[wsgi]' ZEO",
                    runwsgi.display(),
                    v.display()
                );
            }
            Some(v)
        }
        None => None,
    };
    let program = match (program, &venv) {
        (Some(p), _) => Some(p.parse().map_err(|e| usage(anyhow!("--program: {e}")))?),
        (None, Some(v)) => Some(CommandLine(vec![
            v.join("bin/runwsgi").display().to_string(),
            "-v".into(),
            "etc/zope.ini".into(),
        ])),
        (None, None) => None,
    };
    let admin = match admin {
        Some(a) => Some(parse_admin(a)?),
        None => None,
    };
    Ok((program, venv, admin))
}

/// `USER:PASSWORD`, both non-empty (the password may contain ':').
fn parse_admin(a: &str) -> Result<(String, String)> {
    match a.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() && !u.chars().any(char::is_whitespace) => {
            Ok((u.to_owned(), p.to_owned()))
        }
        _ => Err(usage(anyhow!(
            "--admin: expected USER:PASSWORD (a user name without spaces, a non-empty password)"
        ))),
    }
}

/// Zope's `inituser` line, as mkwsgiinstance writes it without bcrypt: `USER:{SHA256}HEX`
/// (AuthEncoding's SHA256 scheme: the hex digest of the UTF-8 password).
pub fn inituser_line(user: &str, password: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(password.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{user}:{{SHA256}}{hex}\n")
}

/// The PATH a client in the virtualenv `venv` runs with: its `bin` first.
fn venv_path(venv: &Path) -> String {
    format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        venv.join("bin").display()
    )
}

impl ClientSpec {
    fn from_args(args: &CreateClientArgs) -> Result<ClientSpec> {
        let mut servers = Vec::new();
        for s in &args.servers {
            let a: Address = s.parse().map_err(|e| usage(anyhow!("--server: {e}")))?;
            // A client connects: "all interfaces" means this host.
            servers.push(a.connectable());
        }
        let (storage, _) = parse_storage_arg(&args.storage).map_err(|_| {
            usage(anyhow!(
                "--storage {}: a storage name is letters, digits, '-', '_' or '.'",
                args.storage
            ))
        })?;
        let cache_size = match &args.cache_size {
            Some(s) => s.parse().map_err(|e| usage(anyhow!("--cache-size: {e}")))?,
            None => ByteSize::mib(128),
        };
        let (program, python, admin) = zope_options(
            args.program.as_deref(),
            args.python.as_deref(),
            args.admin.as_deref(),
        )?;
        let http: Address = args
            .http
            .parse()
            .map_err(|e| usage(anyhow!("--http: {e}")))?;
        Ok(ClientSpec {
            servers,
            storage,
            cache_size,
            program,
            http,
            user: args.user.clone(),
            sessions: None,
            python,
            admin,
            read_only_fallback: false,
        })
    }

    /// The configuration `etc/client.toml` will hold.
    pub fn config(&self) -> ClientConfig {
        let mut c: ClientConfig = ClientConfig {
            zeoclient: super::ZeoClientConfig::new(self.servers.clone()),
            zope: Default::default(),
            runner: Default::default(),
            environment: Default::default(),
        };
        c.zeoclient.storage = self.storage.clone();
        c.zeoclient.cache_size = self.cache_size;
        c.zeoclient.read_only_fallback = self.read_only_fallback;
        c.zope.http_address = self.http.clone();
        c.zope.sessions = self.sessions.clone();
        c.runner.program = self.program.clone();
        c.runner.user = self.user.clone();
        if let Some(v) = &self.python {
            c.environment.insert("PATH".into(), venv_path(v));
        }
        c
    }
}

/// `etc/zope.conf`'s `<zodb_db>` sections for a client configuration (supervisor.md §5.4).
pub fn render_zodb_dbs(c: &ClientConfig) -> String {
    let z = &c.zeoclient;
    let mut out = String::new();
    let servers = |out: &mut String| {
        let _ = writeln!(out, "    # several server lines = fail-over list");
        for s in &z.servers {
            let _ = writeln!(out, "    server {}", zc(&s.to_string()));
        }
    };
    let _ = writeln!(
        out,
        "<zodb_db main>\n  mount-point /\n  # ZODB object cache, in objects"
    );
    let _ = writeln!(
        out,
        "  cache-size {}\n  <zeoclient>",
        c.zope.object_cache_size
    );
    servers(&mut out);
    let _ = writeln!(out, "    storage {}", zc(&z.storage));
    let _ = writeln!(out, "    name {}", zc(&z.name));
    let _ = writeln!(out, "    # where persistent client cache files live");
    let _ = writeln!(out, "    var {}", zc_path(&z.var));
    let _ = writeln!(out, "    # ZEO client cache, in bytes");
    let _ = writeln!(out, "    cache-size {}", zc_size(z.cache_size));
    match &z.client {
        Some(name) => {
            let _ = writeln!(out, "    client {}", zc(name));
        }
        None => {
            let _ = writeln!(
                out,
                "    # uncomment for a persistent cache file\n    # client zeo1"
            );
        }
    }
    let _ = writeln!(out, "    blob-dir {}", zc_path(&z.blob_dir));
    let _ = writeln!(
        out,
        "    # true only if this host sees the server's blob directory (same host/NFS)"
    );
    let _ = writeln!(out, "    shared-blob-dir {}", z.shared_blob_dir);
    let _ = writeln!(out, "    read-only {}", z.read_only);
    let _ = writeln!(out, "    read-only-fallback {}", z.read_only_fallback);
    let _ = writeln!(out, "  </zeoclient>\n</zodb_db>\n");
    if let Some(sessions) = &c.zope.sessions {
        let _ = writeln!(
            out,
            "# Sessions: a non-historical storage on the ZEO server, shared by every client.\n\
             <zodb_db temporary>\n  mount-point /temp_folder\n  \
             container-class Products.TemporaryFolder.TemporaryContainer\n  <zeoclient>"
        );
        servers(&mut out);
        let _ = writeln!(out, "    storage {}", zc(sessions));
        let _ = writeln!(out, "    name {}", zc(sessions));
        let _ = writeln!(out, "    var {}", zc_path(&z.var));
        let _ = writeln!(out, "    cache-size 16MB");
        let _ = writeln!(out, "    read-only false");
        let _ = writeln!(out, "  </zeoclient>\n</zodb_db>\n");
    }
    out
}

/// `etc/zope.conf` for a client configuration in `dir`.
pub fn render_zope_conf(c: &ClientConfig, dir: &Path) -> Result<String> {
    fill(
        tpl::ZOPE_CONF,
        &[
            ("INSTANCE_ZC", zc(&dir.display().to_string())),
            ("ZODB_DBS", render_zodb_dbs(c)),
        ],
    )
}

/// `etc/zope.ini` (waitress's listen lines, log files under `log/`).
pub fn render_zope_ini(c: &ClientConfig, dir: &Path) -> Result<String> {
    let listen = match &c.zope.http_address {
        Address::Unix(p) => format!("unix_socket = {}", super::resolve_in(dir, p).display()),
        Address::Tcp { host, port } if host.is_empty() => format!("host = 0.0.0.0\nport = {port}"),
        Address::Tcp { host, port } if host.contains(':') => format!("listen = [{host}]:{port}"),
        Address::Tcp { host, port } => format!("host = {host}\nport = {port}"),
    };
    fill(
        tpl::ZOPE_INI,
        &[
            ("INSTANCE", dir.display().to_string()),
            ("LISTEN", listen),
            (
                "ACCESS_LOG_PY",
                py_str(&dir.join("log/access.log").display().to_string()),
            ),
            (
                "EVENT_LOG_PY",
                py_str(&dir.join("log/event.log").display().to_string()),
            ),
        ],
    )
}

/// Plan a client instance in `dir` (absolute).
pub fn plan_client(dir: &Path, spec: &ClientSpec) -> Result<(Plan, ClientConfig)> {
    let config = spec.config();
    let zodbctl = zodbctl_path();
    let name = instance_name(dir);
    let servers = format!(
        "[{}]",
        spec.servers
            .iter()
            .map(|s| toml_str(&s.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let sessions = match &spec.sessions {
        Some(s) => format!(
            "# Shared sessions: this storage on the server is mounted at /temp_folder.\nsessions = {}\n",
            toml_str(s)
        ),
        None => String::new(),
    };
    let user_line = match &spec.user {
        Some(u) => format!("user = {}\n", toml_str(u)),
        None => "# Run as this user when started as root:\n# user = \"zope\"\n".into(),
    };
    let environment_lines = if config.environment.is_empty() {
        "\n# The program's environment, e.g. a virtualenv's bin first on its PATH:\n\
         # [environment]\n# PATH = \"/srv/venv/bin:/usr/local/bin:/usr/bin:/bin\"\n"
            .to_owned()
    } else {
        let mut t = String::from(
            "\n# The program's environment (its PATH is where the program is looked up).\n[environment]\n",
        );
        for (k, v) in &config.environment {
            let key = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                k.clone()
            } else {
                toml_str(k)
            };
            let _ = writeln!(t, "{key} = {}", toml_str(v));
        }
        t
    };
    let program_line = match &spec.program {
        Some(p) => format!("program = {}", toml_str(&p.to_string())),
        None => format!(
            "# The program defaults to {}; it is ready when http-address answers.\n# program = {}",
            toml_str(DEFAULT_CLIENT_PROGRAM),
            toml_str(DEFAULT_CLIENT_PROGRAM)
        ),
    };
    let toml_text = fill(
        tpl::CLIENT_TOML,
        &[
            ("INSTANCE", dir.display().to_string()),
            ("SERVERS", servers),
            ("STORAGE", toml_str(&spec.storage)),
            ("CACHE_SIZE", toml_str(&spec.cache_size.to_string())),
            ("HTTP_ADDRESS", toml_str(&spec.http.to_string())),
            ("SESSIONS", sessions),
            (
                "READ_ONLY_FALLBACK",
                if spec.read_only_fallback {
                    "# During a failover, read-only connections to a replica keep the site serving\n\
                     # reads; writes resume when the promoted replica opens its writable address.\n\
                     read-only-fallback = true"
                        .into()
                } else {
                    "read-only-fallback = false".into()
                },
            ),
            ("PROGRAM", program_line),
            ("USER", user_line),
            ("ENVIRONMENT", environment_lines),
        ],
    )?;
    let toml_file = dir.join(CLIENT_TOML);
    check_rendered(
        &toml_file,
        &toml_text,
        &InstanceConfig::Client(config.clone()),
    )?;
    let systemd_user = systemd_user_line(spec.user.as_deref());
    let vars = [
        ("INSTANCE", dir.display().to_string()),
        ("ZODBCTL", sh(&zodbctl)),
        ("NAME", name.clone()),
        ("SYSTEMD_USER", systemd_user),
    ];
    let mut plan = Plan::default();
    plan.dir(dir.to_path_buf());
    for sub in ["etc", "var", "var/cache", "log"] {
        plan.dir(dir.join(sub));
    }
    plan.private_dir(super::resolve_in(dir, &config.zeoclient.blob_dir));
    plan.file(toml_file, toml_text);
    plan.file(dir.join("etc/zope.conf"), render_zope_conf(&config, dir)?);
    plan.file(dir.join("etc/zope.ini"), render_zope_ini(&config, dir)?);
    plan.file(dir.join("etc/site.zcml"), tpl::SITE_ZCML.to_owned());
    if let Some((user, password)) = &spec.admin {
        // Zope adds this user (Manager) to the root user folder on its first start and then
        // deletes the file; it holds a hash, not the password.
        plan.private_file(dir.join("inituser"), inituser_line(user, password));
    }
    plan.file(
        dir.join("etc/logrotate.conf"),
        fill(tpl::CLIENT_LOGROTATE, &vars)?,
    );
    plan.file(
        dir.join(format!("etc/zodbctl-{name}.service")),
        fill(tpl::CLIENT_UNIT, &vars)?,
    );
    Ok((plan, config))
}

pub fn create_client(args: &CreateClientArgs) -> Result<u8> {
    let spec = ClientSpec::from_args(args)?;
    let dir = absolute(&args.dir)?;
    check_target(&dir)?;
    let (plan, _) = plan_client(&dir, &spec)?;
    plan.execute(&mut std::io::stdout().lock())?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// The storage name of the shared sessions storage of `create cluster --sessions`.
pub const SESSIONS_STORAGE: &str = "sessions";

/// The ports of a cluster of `create cluster`, derived from `--base-port` (docs: `create
/// cluster --help` and docs/configuration.md, "Cluster layout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPorts {
    /// The primary server's ZEO address.
    pub server: u16,
    /// The primary server's metrics endpoint: BASE-1 (or, for BASE 1, the port after the
    /// clients').
    pub metrics: u16,
    /// Client N's HTTP address: BASE+N.
    pub clients: Vec<u16>,
    /// With replicas: the primary's replication address, the port after the clients'.
    pub replication: Option<u16>,
    /// Replica K: the next four ports, in this order.
    pub replicas: Vec<ReplicaPorts>,
}

/// The ports of one standby server of a replicated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPorts {
    /// Its writable ZEO address (closed until it is promoted).
    pub address: u16,
    /// Its read-only ZEO address (its clients before promotion).
    pub read_only: u16,
    /// Its replication address (its replicas once promoted).
    pub replication: u16,
    /// Its metrics endpoint.
    pub metrics: u16,
}

impl ClusterPorts {
    pub fn new(base: u16, clients: u16, replicas: u16) -> Result<ClusterPorts> {
        let too_high = || {
            usage(anyhow!(
                "--base-port {base} with --clients {clients} and --replicas {replicas}: the cluster's ports would pass 65535"
            ))
        };
        let at = |offset: u32| -> Result<u16> {
            u16::try_from(u32::from(base) + offset).map_err(|_| too_high())
        };
        let clients_ports = (1..=u32::from(clients))
            .map(at)
            .collect::<Result<Vec<u16>>>()?;
        let mut next = u32::from(clients) + 1;
        // The port below the server's: clients take the ones above it.
        let metrics = match base.checked_sub(1) {
            Some(p) if p > 0 => p,
            _ => {
                next += 1;
                base.saturating_add(clients).saturating_add(1)
            }
        };
        let mut replication = None;
        let mut replica_ports = Vec::new();
        if replicas > 0 {
            replication = Some(at(next)?);
            next += 1;
            for _ in 0..replicas {
                replica_ports.push(ReplicaPorts {
                    address: at(next)?,
                    read_only: at(next + 1)?,
                    replication: at(next + 2)?,
                    metrics: at(next + 3)?,
                });
                next += 4;
            }
        }
        Ok(ClusterPorts {
            server: base,
            metrics,
            clients: clients_ports,
            replication,
            replicas: replica_ports,
        })
    }
}

pub fn plan_cluster(dir: &Path, args: &CreateClusterArgs) -> Result<(Plan, ClusterConfig)> {
    let (program, python, admin) = zope_options(
        args.program.as_deref(),
        args.python.as_deref(),
        args.admin.as_deref(),
    )?;
    let ports = ClusterPorts::new(args.base_port, args.clients, args.replicas)?;
    let server_address = Address::localhost(ports.server);
    let mut storages = vec![("1".to_owned(), StorageKindArg::File)];
    if args.sessions {
        storages.push((SESSIONS_STORAGE.to_owned(), StorageKindArg::Memory));
    }
    // Every server's replication address, the primary's first.
    let replication_addresses: Vec<Address> = ports
        .replication
        .into_iter()
        .chain(ports.replicas.iter().map(|r| r.replication))
        .map(Address::localhost)
        .collect();
    let peers_of = |own: &Address| -> Vec<Address> {
        replication_addresses
            .iter()
            .filter(|a| *a != own)
            .cloned()
            .collect()
    };
    let server_spec = ServerSpec {
        address: server_address.clone(),
        storages: storages.clone(),
        blobs: args.blobs,
        user: None,
        metrics: Some(format!("127.0.0.1:{}", ports.metrics)),
        replication: replication_addresses
            .first()
            .map(|listen| ServerReplication {
                listen: listen.clone(),
                peers: peers_of(listen),
                replicate_from: None,
                read_only_address: None,
            }),
    };
    let mut plan = Plan::default();
    plan.dir(dir.to_path_buf());
    let (server_plan, _) = plan_server(&dir.join("server"), &server_spec)?;
    let mut members = vec![ClusterMember {
        name: Some("server".into()),
        path: PathBuf::from("server"),
        kind: MemberKind::Server,
        start_order: Some(0),
    }];
    let mut plans = vec![server_plan];
    // The clients' servers: every writable address (the primary's first), then the
    // replicas' read-only ones.
    let mut client_servers = vec![server_address.clone()];
    for (k, rp) in ports.replicas.iter().enumerate() {
        let name = format!("replica{}", k + 1);
        let listen = Address::localhost(rp.replication);
        let spec = ServerSpec {
            address: Address::localhost(rp.address),
            storages: storages.clone(),
            blobs: args.blobs,
            user: None,
            metrics: Some(format!("127.0.0.1:{}", rp.metrics)),
            replication: Some(ServerReplication {
                peers: peers_of(&listen),
                listen,
                replicate_from: replication_addresses.first().cloned(),
                read_only_address: Some(Address::localhost(rp.read_only)),
            }),
        };
        let (p, _) = plan_server(&dir.join(&name), &spec)?;
        plans.push(p);
        members.push(ClusterMember {
            name: Some(name.clone()),
            path: PathBuf::from(&name),
            kind: MemberKind::Server,
            start_order: Some(1),
        });
        client_servers.push(Address::localhost(rp.address));
    }
    client_servers.extend(
        ports
            .replicas
            .iter()
            .map(|rp| Address::localhost(rp.read_only)),
    );
    let client_order = if ports.replicas.is_empty() { 1 } else { 2 };
    for (i, port) in ports.clients.iter().enumerate() {
        let name = format!("client{}", i + 1);
        let spec = ClientSpec {
            servers: client_servers.clone(),
            storage: "1".into(),
            cache_size: ByteSize::mib(128),
            program: program.clone(),
            http: Address::localhost(*port),
            user: None,
            sessions: args.sessions.then(|| SESSIONS_STORAGE.to_owned()),
            python: python.clone(),
            admin: admin.clone(),
            read_only_fallback: !ports.replicas.is_empty(),
        };
        let (p, _) = plan_client(&dir.join(&name), &spec)?;
        plans.push(p);
        members.push(ClusterMember {
            name: Some(name.clone()),
            path: PathBuf::from(&name),
            kind: MemberKind::Client,
            start_order: Some(client_order),
        });
    }
    let cluster = ClusterConfig { members };
    let mut members_text = String::new();
    for m in &cluster.members {
        let _ = writeln!(
            members_text,
            "[[members]]\nname = {}\npath = {}\nkind = \"{}\"\nstart-order = {}\n",
            toml_str(&m.display_name()),
            toml_path(&m.path),
            match m.kind {
                MemberKind::Server => "server",
                MemberKind::Client => "client",
            },
            m.start_order.unwrap_or(0)
        );
    }
    let text = fill(
        tpl::CLUSTER_TOML,
        &[
            ("INSTANCE", dir.display().to_string()),
            ("MEMBERS", members_text.trim_end().to_owned()),
        ],
    )?;
    let file = dir.join(CLUSTER_TOML);
    check_rendered(&file, &text, &InstanceConfig::Cluster(cluster.clone()))?;
    plan.file(file, text);
    for p in plans {
        plan.dirs.extend(p.dirs);
        plan.files.extend(p.files);
        plan.private.extend(p.private);
    }
    Ok((plan, cluster))
}

pub fn create_cluster(args: &CreateClusterArgs) -> Result<u8> {
    let dir = absolute(&args.dir)?;
    check_target(&dir)?;
    let (plan, _) = plan_cluster(&dir, args)?;
    plan.execute(&mut std::io::stdout().lock())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(zc("/a$b"), "/a$$b");
        assert_eq!(zc_path(Path::new("var")), "$INSTANCE/var");
        assert_eq!(zc_size(ByteSize::mib(128)), "128MB");
        assert_eq!(zc_size(ByteSize(1 << 40)), "1024GB");
        assert_eq!(zc_size(ByteSize(1000)), "1000");
        assert_eq!(py_str("/x/it's 100%.log"), "'/x/it\\'s 100%%.log'");
        assert!(fill("{{A}} {{B}}", &[("A", "1".into())]).is_err());
        assert_eq!(instance_name(Path::new("/srv/my zeo")), "my-zeo");
    }

    #[test]
    fn server_plan_reads_back() {
        let spec = ServerSpec {
            address: "127.0.0.1:9100".parse().unwrap(),
            storages: vec![
                ("1".into(), StorageKindArg::File),
                ("sessions".into(), StorageKindArg::Memory),
                ("catalog".into(), StorageKindArg::File),
            ],
            blobs: true,
            user: Some("zope".into()),
            metrics: None,
            replication: None,
        };
        let (plan, config) = plan_server(Path::new("/srv/zeo"), &spec).unwrap();
        assert_eq!(config.storages.len(), 3);
        let names: Vec<_> = plan.file_paths().map(|p| p.to_path_buf()).collect();
        assert!(names.contains(&PathBuf::from("/srv/zeo/etc/zodbctl-zeo.service")));
        assert!(
            plan.dirs
                .iter()
                .any(|(d, m)| d.ends_with("var/blobs-catalog") && *m == Some(0o700))
        );
    }

    #[test]
    fn client_zope_conf_has_the_stanza() {
        let mut spec = ClientSpec {
            servers: vec![
                "127.0.0.1:8100".parse().unwrap(),
                "/tmp/zeo.sock".parse().unwrap(),
            ],
            storage: "main".into(),
            cache_size: ByteSize::mib(64),
            program: None,
            http: "127.0.0.1:8081".parse().unwrap(),
            user: None,
            sessions: Some("sessions".into()),
            python: None,
            admin: None,
            read_only_fallback: false,
        };
        let (_, config) = plan_client(Path::new("/srv/c$1"), &spec).unwrap();
        let conf = render_zope_conf(&config, Path::new("/srv/c$1")).unwrap();
        assert!(conf.contains("%define INSTANCE /srv/c$$1"));
        assert!(conf.contains("    server /tmp/zeo.sock\n"));
        assert!(conf.contains("    cache-size 64MB\n"));
        assert!(conf.contains("mount-point /temp_folder"));
        spec.sessions = None;
        let ini = render_zope_ini(&spec.config(), Path::new("/srv/c")).unwrap();
        assert!(ini.contains("host = 127.0.0.1\nport = 8081"));
    }

    #[test]
    fn refuses_a_directory_with_files() {
        let tmp = tempfile::tempdir().unwrap();
        check_target(tmp.path()).unwrap();
        check_target(&tmp.path().join("new/deeper")).unwrap();
        std::fs::write(tmp.path().join("x"), "").unwrap();
        let e = check_target(tmp.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        let e = check_target(&tmp.path().join("x")).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Drift between etc/client.toml and the etc/zope.conf written from it
// ---------------------------------------------------------------------------------------------

/// Where `etc/zope.conf` no longer says what `etc/client.toml` says (someone edited one of
/// them). Zope reads only zope.conf, so these are worth a warning.
pub fn zope_conf_drift(c: &ClientConfig, dir: &Path) -> Vec<String> {
    use super::zconfig;
    let path = dir.join("etc/zope.conf");
    if !path.is_file() {
        return vec![format!(
            "{}: missing; Zope reads its database settings from it",
            path.display()
        )];
    }
    let doc = match zconfig::parse_file(&path) {
        Ok(d) => d,
        Err(e) => return vec![e.to_string()],
    };
    let mut out = Vec::new();
    let toml_name = CLIENT_TOML;
    let db = |name: &str| {
        doc.root
            .sections_of("zodb_db")
            .find(|s| s.name.as_deref() == Some(name))
    };
    let Some(main) = db("main") else {
        return vec![format!("{}: no <zodb_db main> section", path.display())];
    };
    let Some(zeo) = main.sections_of("zeoclient").next() else {
        return vec![format!(
            "{}:{}: <zodb_db main> has no <zeoclient>; {toml_name} describes a ZEO client",
            path.display(),
            main.line
        )];
    };
    let get = |s: &zconfig::Section, key: &str| {
        s.keys
            .iter()
            .find(|kv| kv.key.eq_ignore_ascii_case(key))
            .cloned()
    };
    let mut differ = |line: usize, key: &str, here: String, wanted: String| {
        if here != wanted {
            out.push(format!(
                "{}:{line}: {key}: {here:?} here, but {toml_name} says {wanted:?}",
                path.display()
            ));
        }
    };
    let z = &c.zeoclient;
    let servers: Vec<String> = zeo
        .keys
        .iter()
        .filter(|kv| kv.key.eq_ignore_ascii_case("server"))
        .map(|kv| kv.value.clone())
        .collect();
    let wanted: Vec<String> = z.servers.iter().map(|a| a.to_string()).collect();
    differ(zeo.line, "server", servers.join(" "), wanted.join(" "));
    let text = |key: &str| get(zeo, key).map(|kv| (kv.line, kv.value));
    let resolved = |p: &Path| super::resolve_in(dir, p).display().to_string();
    for (key, wanted) in [
        ("storage", Some(z.storage.clone())),
        ("name", Some(z.name.clone())),
        ("client", z.client.clone()),
        ("var", Some(resolved(&z.var))),
        ("blob-dir", Some(resolved(&z.blob_dir))),
    ] {
        let (line, here) = text(key).map_or((zeo.line, None), |(l, v)| (l, Some(v)));
        differ(
            line,
            key,
            here.unwrap_or_default(),
            wanted.unwrap_or_default(),
        );
    }
    if let Some((line, v)) = text("cache-size") {
        let here = v.parse::<ByteSize>().map(|b| b.to_string()).unwrap_or(v);
        differ(line, "cache-size", here, z.cache_size.to_string());
    }
    for (key, wanted) in [
        ("shared-blob-dir", z.shared_blob_dir),
        ("read-only", z.read_only),
        ("read-only-fallback", z.read_only_fallback),
    ] {
        let (line, here) = text(key).map_or((zeo.line, false), |(l, v)| {
            (l, super::units::parse_bool(&v).unwrap_or(false))
        });
        differ(line, key, here.to_string(), wanted.to_string());
    }
    if let Some(kv) = get(main, "cache-size") {
        differ(
            kv.line,
            "cache-size",
            kv.value,
            c.zope.object_cache_size.to_string(),
        );
    }
    let temp_storage = db("temporary")
        .and_then(|t| t.sections_of("zeoclient").next())
        .and_then(|zc| get(zc, "storage"))
        .map(|kv| kv.value);
    differ(
        main.line,
        "sessions",
        temp_storage.unwrap_or_default(),
        c.zope.sessions.clone().unwrap_or_default(),
    );
    out
}

#[cfg(test)]
mod drift_tests {
    use super::*;

    #[test]
    fn fresh_client_has_no_drift_and_edits_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let spec = ClientSpec {
            servers: vec!["127.0.0.1:8100".parse().unwrap()],
            storage: "1".into(),
            cache_size: ByteSize::mib(128),
            program: None,
            http: "127.0.0.1:8080".parse().unwrap(),
            user: None,
            sessions: Some("sessions".into()),
            python: None,
            admin: None,
            read_only_fallback: false,
        };
        let (plan, config) = plan_client(&dir, &spec).unwrap();
        plan.execute(&mut std::io::sink()).unwrap();
        assert_eq!(zope_conf_drift(&config, &dir), Vec::<String>::new());
        let mut edited = config.clone();
        edited.zeoclient.servers = vec!["127.0.0.1:8200".parse().unwrap()];
        edited.zeoclient.cache_size = ByteSize::mib(64);
        edited.zope.sessions = None;
        let drift = zope_conf_drift(&edited, &dir);
        assert_eq!(drift.len(), 3, "{drift:?}");
        assert!(drift[0].contains(
            "server: \"127.0.0.1:8100\" here, but etc/client.toml says \"127.0.0.1:8200\""
        ));
    }
}

/// The unit's user line: zodbctl drops privileges itself, so systemd must not (a hint when
/// no user is configured).
fn systemd_user_line(user: Option<&str>) -> String {
    match user {
        Some(u) => {
            format!("# zodbctl switches to the [runner] user ({u}) itself when started as root.")
        }
        None => "# User=zope".into(),
    }
}
