//! `serve` and `bench`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tracing::info;

use crate::cli::{BenchArgs, GlobalArgs, ServeArgs};
use crate::error::usage;

use super::backend::Backend;
use super::config::{
    ListenAddr, OnTimeout, ReplicationConfig, ReplicationMode, ServerConfig, StorageConfig,
    StorageKind, parse_address,
};
use super::file_backend::FileBackend;
use super::log::LogTarget;
use super::memory_backend::MemoryBackend;
use super::server::{self, Exit};
use super::shards::{self, Shards};
use super::shared::StorageState;
use super::wire::Encoding;

/// Default life of a superseded revision in a memory storage.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(300);

pub fn serve(g: &GlobalArgs, args: &ServeArgs) -> Result<u8> {
    let config = build_config(g, args)?;
    // Certificates and key (a wrong passphrase above all) are read now, so that mistakes
    // are usage errors reported before anything listens.
    let tls = config
        .tls
        .as_ref()
        .map(super::tls::acceptor)
        .transpose()
        .map_err(usage)?;
    let replication_tls = replication_connector(&config).map_err(usage)?;
    if let Some(dir) = config.log_file.as_ref().and_then(|p| p.parent()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = match &config.log_file {
        Some(p) => LogTarget::file(p)
            .with_context(|| format!("opening the log file {}", p.display()))
            .map_err(usage)?,
        None => LogTarget::stderr(),
    };
    let dispatch = log.dispatch(config.log_level.as_deref());
    let _log_guard = tracing::dispatcher::set_default(&dispatch);
    // The accept loop's thread is the first shard (see `shards`).
    let runtime = shards::runtime(&dispatch).context("starting the async runtime")?;
    // The metrics endpoint comes up first: `/readyz` says "not ready" while storages open.
    let exposed = match &config.metrics {
        Some(addr) => {
            let ex = crate::metrics::Exposed::new();
            crate::metrics::start(addr, Arc::clone(&ex)).map_err(|e| usage(anyhow!(e)))?;
            Some(ex)
        }
        None => None,
    };
    let storages = open_storages(&config)?;
    if let Some(ex) = &exposed {
        ex.set_storages(storages.clone());
    }
    if let Some(pid_file) = &config.pid_file {
        if let Some(dir) = pid_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
    }
    let result = runtime.block_on(async {
        let threads = config.threads.unwrap_or_else(shards::default_count);
        let shards = Shards::start(threads, &dispatch)?;
        server::run(config.clone(), storages, log, shards, tls, replication_tls).await
    });
    if let Some(pid_file) = &config.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    match result? {
        Exit::Terminated => Ok(0),
        Exit::Restart => Ok(1),
    }
}

/// The TLS connector of the outgoing replication links (a replica to its primary, the epoch
/// probes to `[replication] peers`): with `[zeo.tls]`, they connect with the server's
/// certificate and verify the other server's against `authenticate`. A server without
/// `authenticate` cannot verify it: an error when it has such links to make, else no
/// connector (it only accepts).
fn replication_connector(config: &ServerConfig) -> Result<Option<tokio_rustls::TlsConnector>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    // Unix-socket links stay plain.
    let tcp = |a: &str| !a.contains('/');
    let outgoing = config.replication.peers.iter().any(|p| tcp(p))
        || config.storages.iter().any(|s| {
            matches!(
                &s.kind,
                StorageKind::File {
                    replicate_from: Some(from),
                    ..
                } if tcp(from)
            )
        });
    if tls.authenticate.is_none() && !outgoing {
        return Ok(None);
    }
    super::tls::connector(tls).map(Some)
}

fn build_config(g: &GlobalArgs, args: &ServeArgs) -> Result<ServerConfig> {
    // runzeo's way (-a/-f) when given; otherwise the configuration: -C, else the instance
    // that -i, $ZODBCTL_INSTANCE or the current directory names, like every other command.
    let runzeo_style = g.config.is_none() && (args.address.is_some() || args.filename.is_some());
    let mut config = match &g.config {
        Some(path) => config_from_instance(crate::instance::load(path).map_err(usage)?)?,
        None if !runzeo_style => {
            config_from_instance(crate::instance::locate(g).map_err(|e| {
                usage(anyhow!(
                    "{e}; or serve a file as runzeo does: -a ADDR -f PATH"
                ))
            })?)?
        }
        None => {
            let address = args.address.as_deref().ok_or_else(|| {
                usage(anyhow!(
                    "-f/--filename needs -a/--address (or use -C/--config FILE)"
                ))
            })?;
            let mut c = ServerConfig::new(parse_address(address).map_err(|e| usage(anyhow!(e)))?);
            if let Some(path) = &args.filename {
                c.storages.push(StorageConfig {
                    name: "1".into(),
                    kind: StorageKind::File {
                        path: path.clone(),
                        blob_dir: args.blob_dir.clone(),
                        read_only: false,
                        pack_gc: true,
                        pack_keep_old: true,
                        replicate_from: None,
                    },
                });
            } else if args.blob_dir.is_some() {
                return Err(usage(anyhow!("--blob-dir needs -f/--filename")));
            }
            // runzeo has no flag for msgpack; it reads ZEO_MSGPACK instead.
            if std::env::var("ZEO_MSGPACK").is_ok_and(|v| !v.is_empty()) {
                c.encoding = Encoding::Msgpack;
            }
            c
        }
    };
    // Command-line flags override the file.
    if let (false, Some(a)) = (runzeo_style, &args.address) {
        config.address = parse_address(a).map_err(|e| usage(anyhow!(e)))?;
    }
    for name in &args.memory {
        config.storages.push(StorageConfig {
            name: name.clone(),
            kind: StorageKind::Memory {
                history: DEFAULT_HISTORY,
                snapshot: None,
                checkpoint: Duration::ZERO,
            },
        });
    }
    if config.storages.is_empty() {
        return Err(usage(anyhow!(
            "no storage to serve: give -f/--filename PATH, --memory NAME or a configuration"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &config.storages {
        if !seen.insert(s.name.as_str()) {
            return Err(usage(anyhow!("storage name {:?} is used twice", s.name)));
        }
    }
    if args.timeout.is_some() {
        config.transaction_timeout = args.timeout;
    }
    if args.pid_file.is_some() {
        config.pid_file = args.pid_file.clone();
    }
    if args.read_only {
        config.read_only = true;
    }
    if args.msgpack {
        config.encoding = Encoding::Msgpack;
    }
    if let Some(n) = args.threads {
        config.threads = Some(n as usize);
    }
    if args.log_file.is_some() {
        config.log_file = args.log_file.clone();
    }
    if args.metrics.is_some() {
        config.metrics = args.metrics.clone();
    }
    apply_replication_flags(&mut config, args)?;
    Ok(config)
}

/// `--replicate-from`, `--replicate-to`, `--read-only-address`, `--replication-mode`,
/// `--admin-socket` and `--resync` over the configuration, then the checks the
/// configuration file gets too.
fn apply_replication_flags(config: &mut ServerConfig, args: &ServeArgs) -> Result<()> {
    let flag_address =
        |flag: &str, a: &str| parse_address(a).map_err(|e| usage(anyhow!("{flag}: {e}")));
    if let Some(from) = &args.replicate_from {
        match flag_address("--replicate-from", from)? {
            ListenAddr::Tcp { host, .. } if host.is_empty() => {
                return Err(usage(anyhow!(
                    "--replicate-from {from}: give the primary's replication address as HOST:PORT or a Unix socket path"
                )));
            }
            _ => {}
        }
        let mut any = false;
        for s in &mut config.storages {
            if let StorageKind::File { replicate_from, .. } = &mut s.kind {
                *replicate_from = Some(from.trim().to_string());
                any = true;
            }
        }
        if !any {
            return Err(usage(anyhow!(
                "--replicate-from: no file storage to replicate (memory storages are not replicated)"
            )));
        }
    }
    if let Some(to) = &args.replicate_to {
        config.replication.listen = Some(flag_address("--replicate-to", to)?);
    }
    if let Some(ro) = &args.read_only_address {
        config.read_only_address = Some(flag_address("--read-only-address", ro)?);
    }
    if let Some(mode) = args.replication_mode {
        config.replication.mode = match mode {
            crate::cli::ReplicationModeArg::Async => ReplicationMode::Async,
            crate::cli::ReplicationModeArg::Sync => ReplicationMode::Sync,
        };
    }
    if let Some(sock) = &args.admin_socket {
        config.admin_socket = Some(sock.clone());
    }
    if args.resync {
        config.replication.resync = true;
    }
    config.replication.peers.extend(args.peers.iter().cloned());
    if config.read_only_address.as_ref() == Some(&config.address) {
        return Err(usage(anyhow!(
            "the read-only address {} is the server's address too; give it one of its own",
            config.address
        )));
    }
    if config.replication.mode == ReplicationMode::Sync && config.replication.listen.is_none() {
        return Err(usage(anyhow!(
            "sync replication needs a replication address: --replicate-to ADDR or [replication] address"
        )));
    }
    if let Some(l) = &config.replication.listen {
        if *l == config.address || config.read_only_address.as_ref() == Some(l) {
            return Err(usage(anyhow!(
                "the replication address {l} is already a ZEO listener of this server; give it one of its own"
            )));
        }
    }
    Ok(())
}

/// An instance address as the server listens on it (Unix paths resolved).
fn listen_addr(inst: &crate::instance::Instance, a: &crate::instance::Address) -> ListenAddr {
    match a {
        crate::instance::Address::Tcp { host, port } => ListenAddr::Tcp {
            host: host.clone(),
            port: *port,
        },
        crate::instance::Address::Unix(p) => ListenAddr::Unix(inst.resolve(p)),
    }
}

/// An instance address to connect to, as text (Unix paths resolved).
fn connect_addr(inst: &crate::instance::Instance, a: &crate::instance::Address) -> String {
    listen_addr(inst, a).to_string()
}

/// A server configuration from the instance's TOML or a ZConfig zeo.conf; relative paths are
/// relative to the instance directory.
fn config_from_instance(inst: crate::instance::Instance) -> Result<ServerConfig> {
    use crate::instance::StorageConfig as Stor;
    let path = inst.file.as_path();
    for n in &inst.notices {
        eprintln!("zodbctl: {n}");
    }
    let Some(sc) = inst.server() else {
        return Err(usage(anyhow!(
            "{} is a {} configuration, not a server's",
            path.display(),
            inst.config.kind_name()
        )));
    };
    let z = &sc.zeo;
    let mut c = ServerConfig::new(listen_addr(&inst, &z.address));
    c.read_only_address = z.read_only_address.as_ref().map(|a| listen_addr(&inst, a));
    c.admin_socket = Some(inst.resolve(&z.admin_socket));
    let r = &sc.replication;
    c.replication = ReplicationConfig {
        listen: r.address.as_ref().map(|a| listen_addr(&inst, a)),
        mode: match r.mode {
            crate::instance::ReplicationMode::Async => ReplicationMode::Async,
            crate::instance::ReplicationMode::Sync => ReplicationMode::Sync,
        },
        sync_timeout: r.sync_timeout.duration(),
        on_timeout: match r.on_timeout {
            crate::instance::OnTimeout::Degrade => OnTimeout::Degrade,
            crate::instance::OnTimeout::Block => OnTimeout::Block,
        },
        keep_alive: r.keep_alive_delay.duration(),
        peers: r.peers.iter().map(|a| connect_addr(&inst, a)).collect(),
        resync: false,
    };
    c.read_only = z.read_only;
    c.invalidation_queue_size = z.invalidation_queue_size as usize;
    c.invalidation_age = z.invalidation_age.map(|s| s.as_secs_f64());
    c.transaction_timeout = z.transaction_timeout.map(|s| s.duration());
    if z.msgpack {
        c.encoding = Encoding::Msgpack;
    }
    c.pid_file = Some(inst.resolve(&z.pid_file));
    c.max_frame = usize::try_from(z.max_frame_size.bytes()).unwrap_or(usize::MAX);
    c.threads = z.threads.map(|n| n as usize);
    c.tls = z.tls.as_ref().map(|t| super::config::TlsConfig {
        certificate: inst.resolve(&t.certificate),
        key: t.key.as_ref().map(|k| inst.resolve(k)),
        key_password_file: t.key_password_file.as_ref().map(|k| inst.resolve(k)),
        authenticate: Some(inst.resolve(&t.authenticate)),
    });
    c.log_file = match sc.eventlog.stream() {
        Some(_) => None,
        None => Some(inst.resolve(&sc.eventlog.path)),
    };
    c.log_level = Some(sc.eventlog.level.tracing_directive().to_string());
    c.metrics = sc.metrics.as_ref().map(|m| m.address.clone());
    for (name, st) in &sc.storages {
        let kind = match st {
            Stor::File(f) => StorageKind::File {
                path: inst.resolve(&f.path),
                blob_dir: f.blob_dir.as_ref().map(|b| inst.resolve(b)),
                read_only: f.read_only,
                pack_gc: f.pack_gc,
                pack_keep_old: f.pack_keep_old,
                replicate_from: f.replicate_from.as_ref().map(|a| connect_addr(&inst, a)),
            },
            Stor::Memory(m) => StorageKind::Memory {
                history: m.history_seconds.duration(),
                snapshot: m.path.as_ref().map(|p| inst.resolve(p)),
                checkpoint: m.checkpoint_seconds.duration(),
            },
        };
        c.storages.push(StorageConfig {
            name: name.clone(),
            kind,
        });
    }
    Ok(c)
}

fn open_storages(config: &ServerConfig) -> Result<Vec<(String, Arc<StorageState>)>> {
    let pid = std::process::id();
    let mut out = Vec::new();
    for s in &config.storages {
        let mut replication = None;
        let backend: Arc<dyn Backend> = match &s.kind {
            StorageKind::Memory {
                history,
                snapshot,
                checkpoint,
            } => {
                info!(target: "ZEO.runzeo", "({pid}) opening storage '{}' using MemoryStorage", s.name);
                Arc::new(MemoryBackend::open(
                    crate::storage::memory::MemoryStorage::new(&s.name, *history),
                    config.read_only,
                    snapshot.clone(),
                    *checkpoint,
                ))
            }
            StorageKind::File {
                path,
                blob_dir,
                read_only,
                pack_gc,
                pack_keep_old,
                replicate_from,
            } => {
                info!(target: "ZEO.runzeo", "({pid}) opening storage '{}' using FileStorage", s.name);
                let mut opts = crate::storage::OpenOptions::new();
                opts = opts.read_only(*read_only);
                if let Some(b) = blob_dir {
                    opts = opts.blob_dir(b);
                }
                let fs = opts
                    .open(path)
                    .with_context(|| format!("opening storage '{}'", s.name))?;
                if replicate_from.is_some() || config.replication.listen.is_some() {
                    replication = Some(
                        crate::replication::Replication::open(
                            &s.name,
                            fs.clone(),
                            &config.replication,
                            replicate_from.as_deref(),
                        )
                        .with_context(|| format!("storage '{}'", s.name))?,
                    );
                }
                Arc::new(FileBackend::new(fs).with_pack_options(*pack_gc, *pack_keep_old))
            }
        };
        let state = Arc::new(StorageState::new(
            &s.name,
            backend,
            config.invalidation_queue_size,
        ));
        if let Some(r) = replication {
            let _ = state.replication.set(r);
        }
        out.push((s.name.clone(), state));
    }
    Ok(out)
}

pub fn bench(_g: &GlobalArgs, args: &BenchArgs) -> Result<u8> {
    super::bench::run(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config_of(args: &[&str]) -> Result<ServerConfig> {
        let cli = crate::cli::Cli::parse_from(["zodbctl"].iter().chain(args.iter()).copied());
        let crate::cli::Command::Serve(serve) = &cli.command else {
            panic!("not serve")
        };
        build_config(&cli.global, serve)
    }

    #[test]
    fn replication_flags() {
        let c = config_of(&[
            "serve",
            "-a",
            "127.0.0.1:8103",
            "-f",
            "/srv/Data.fs",
            "--replicate-from",
            "127.0.0.1:8102",
            "--replicate-to",
            "127.0.0.1:8105",
            "--read-only-address",
            "127.0.0.1:8104",
            "--replication-mode",
            "sync",
            "--admin-socket",
            "/run/admin.sock",
            "--resync",
        ])
        .unwrap();
        let StorageKind::File { replicate_from, .. } = &c.storages[0].kind else {
            panic!()
        };
        assert_eq!(replicate_from.as_deref(), Some("127.0.0.1:8102"));
        assert_eq!(
            c.read_only_address,
            Some(parse_address("127.0.0.1:8104").unwrap())
        );
        assert_eq!(
            c.replication.listen,
            Some(parse_address("127.0.0.1:8105").unwrap())
        );
        assert_eq!(c.replication.mode, ReplicationMode::Sync);
        assert_eq!(
            c.admin_socket.as_deref(),
            Some(std::path::Path::new("/run/admin.sock"))
        );
        assert!(c.replication.resync);
        assert_eq!(c.replication.sync_timeout, Duration::from_secs(2));
        assert_eq!(c.replication.keep_alive, Duration::from_secs(5));

        let plain = config_of(&["serve", "-a", "127.0.0.1:8103", "-f", "/srv/Data.fs"]).unwrap();
        assert!(plain.admin_socket.is_none() && plain.replication.listen.is_none());
        assert_eq!(plain.replication.mode, ReplicationMode::Async);

        for (extra, needle) in [
            (vec!["--replication-mode", "sync"], "--replicate-to"),
            (
                vec!["--read-only-address", "127.0.0.1:8103"],
                "read-only address",
            ),
            (vec!["--replicate-from", "8102"], "HOST:PORT"),
            (
                vec!["--replicate-to", "127.0.0.1:8103"],
                "already a ZEO listener",
            ),
        ] {
            let mut args = vec!["serve", "-a", "127.0.0.1:8103", "-f", "/srv/Data.fs"];
            args.extend(extra);
            let e = config_of(&args).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{e:#}");
            assert_eq!(crate::error::exit_code(&e), 2);
        }
    }

    #[test]
    fn replication_from_the_instance() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        let file = tmp.path().join("etc/zeo.toml");
        std::fs::write(
            &file,
            "[zeo]\naddress = \"127.0.0.1:8103\"\nread-only-address = \"127.0.0.1:8104\"\n\
             [replication]\naddress = \"var/repl.sock\"\nmode = \"sync\"\non-timeout = \"block\"\n\
             sync-timeout = 1.5\nkeep-alive-delay = 7\npeers = [\"127.0.0.1:8102\"]\n\
             [storages.1]\npath = \"var/Data.fs\"\nreplicate-from = \"127.0.0.1:8102\"\n\
             [storages.s]\ntype = \"memory\"\n",
        )
        .unwrap();
        let c = config_of(&["-C", file.to_str().unwrap(), "serve"]).unwrap();
        let dir = std::path::absolute(tmp.path()).unwrap();
        assert_eq!(c.admin_socket, Some(dir.join("var/zeo-admin.sock")));
        assert_eq!(
            c.read_only_address,
            Some(parse_address("127.0.0.1:8104").unwrap())
        );
        assert_eq!(
            c.replication.listen,
            Some(ListenAddr::Unix(dir.join("var/repl.sock")))
        );
        assert_eq!(c.replication.mode, ReplicationMode::Sync);
        assert_eq!(c.replication.on_timeout, OnTimeout::Block);
        assert_eq!(c.replication.sync_timeout, Duration::from_millis(1500));
        assert_eq!(c.replication.keep_alive, Duration::from_secs(7));
        assert_eq!(c.replication.peers, ["127.0.0.1:8102"]);
        assert!(!c.replication.resync);
        for s in &c.storages {
            match &s.kind {
                StorageKind::File { replicate_from, .. } => {
                    assert_eq!(replicate_from.as_deref(), Some("127.0.0.1:8102"))
                }
                StorageKind::Memory { .. } => assert_eq!(s.name, "s"),
            }
        }
        // --replicate-from applies to every file storage of the configuration.
        let c = config_of(&[
            "-C",
            file.to_str().unwrap(),
            "serve",
            "--replicate-from",
            "/run/primary.sock",
        ])
        .unwrap();
        let StorageKind::File { replicate_from, .. } = &c.storages[0].kind else {
            panic!()
        };
        assert_eq!(replicate_from.as_deref(), Some("/run/primary.sock"));
    }
}
