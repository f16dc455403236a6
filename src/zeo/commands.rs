//! `serve` and `bench`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tracing::info;

use crate::cli::{BenchArgs, GlobalArgs, ServeArgs};
use crate::error::usage;

use super::backend::Backend;
use super::config::{ServerConfig, StorageConfig, StorageKind, parse_address};
use super::log::LogTarget;
use super::memory_backend::MemoryBackend;
use super::server::{self, Exit};
use super::shared::StorageState;
use super::wire::Encoding;

/// Default life of a superseded revision in a memory storage.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(300);

pub fn serve(g: &GlobalArgs, args: &ServeArgs) -> Result<u8> {
    let config = build_config(g, args)?;
    let log = match &config.log_file {
        Some(p) => LogTarget::file(p)
            .with_context(|| format!("opening the log file {}", p.display()))
            .map_err(usage)?,
        None => LogTarget::stderr(),
    };
    let dispatch = log.dispatch();
    let _log_guard = tracing::dispatcher::set_default(&dispatch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || {
            // The guard lives as long as the thread: runtime threads log through the server's
            // subscriber for their whole life.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let storages = open_storages(&config)?;
    if let Some(pid_file) = &config.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
    }
    let result = runtime.block_on(server::run(config.clone(), storages, log));
    if let Some(pid_file) = &config.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    match result? {
        Exit::Terminated => Ok(0),
        Exit::Restart => Ok(1),
    }
}

fn build_config(g: &GlobalArgs, args: &ServeArgs) -> Result<ServerConfig> {
    let mut config = match &g.config {
        Some(path) => config_from_file(path)?,
        None => {
            let address = args.address.as_deref().ok_or_else(|| {
                usage(anyhow!(
                    "serve needs -a/--address and -f/--filename, or -C/--config FILE"
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
    if let (Some(_), Some(a)) = (&g.config, &args.address) {
        config.address = parse_address(a).map_err(|e| usage(anyhow!(e)))?;
    }
    for name in &args.memory {
        config.storages.push(StorageConfig {
            name: name.clone(),
            kind: StorageKind::Memory {
                history: DEFAULT_HISTORY,
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
    if let Some(t) = args.timeout {
        config.transaction_timeout = Some(Duration::from_secs(t));
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
    if args.log_file.is_some() {
        config.log_file = args.log_file.clone();
    }
    Ok(config)
}

fn config_from_file(path: &Path) -> Result<ServerConfig> {
    Err(usage(anyhow!(
        "{}: reading server configuration files needs the instance configuration module",
        path.display()
    )))
}

fn open_storages(config: &ServerConfig) -> Result<Vec<(String, Arc<StorageState>)>> {
    let pid = std::process::id();
    let mut out = Vec::new();
    for s in &config.storages {
        let backend: Arc<dyn Backend> = match &s.kind {
            StorageKind::Memory { history } => {
                info!(target: "ZEO.runzeo", "({pid}) opening storage '{}' using MemoryStorage", s.name);
                Arc::new(MemoryBackend::new(
                    crate::storage::memory::MemoryStorage::new(&s.name, *history),
                    config.read_only,
                ))
            }
            StorageKind::File { path, .. } => {
                info!(target: "ZEO.runzeo", "({pid}) opening storage '{}' using FileStorage", s.name);
                bail!(
                    "{}: the FileStorage engine is not part of this build yet",
                    path.display()
                );
            }
        };
        out.push((
            s.name.clone(),
            Arc::new(StorageState::new(
                &s.name,
                backend,
                config.invalidation_queue_size,
            )),
        ));
    }
    Ok(out)
}

pub fn bench(_g: &GlobalArgs, args: &BenchArgs) -> Result<u8> {
    super::bench::run(args)
}
