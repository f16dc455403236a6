//! Which Data.fs a maintenance command works on: the PATH given, or the FileStorages of
//! the server instance found through `-i`, `-C` or `$ZODBCTL_INSTANCE` (so that a crontab
//! line can be `zodbctl -i /srv/zeo verify`).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use crate::cli::GlobalArgs;
use crate::error::usage;
use crate::instance::{self, StorageConfig};

/// One file to work on: the storage's name in the configuration (`None` for a PATH given
/// on the command line) and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: Option<String>,
    pub path: PathBuf,
}

/// The files named by `path`, or else by the instance's configuration (all its
/// FileStorages, or the one called `storage`).
pub fn targets(g: &GlobalArgs, path: Option<&Path>, storage: Option<&str>) -> Result<Vec<Target>> {
    if let Some(p) = path {
        return Ok(vec![Target {
            name: None,
            path: p.to_path_buf(),
        }]);
    }
    let inst =
        instance::locate(g).map_err(|e| usage(anyhow!("{e}; or give the Data.fs as PATH")))?;
    let Some(server) = inst.server() else {
        return Err(usage(anyhow!(
            "{} is a {} instance; give the Data.fs as PATH, or use -i with a server instance",
            inst.file.display(),
            inst.config.kind_name()
        )));
    };
    let mut server = server.clone();
    server.resolve_paths(&inst.dir);
    let files: Vec<Target> = server
        .storages
        .iter()
        .filter_map(|(name, s)| match s {
            StorageConfig::File(f) => Some(Target {
                name: Some(name.clone()),
                path: f.path.clone(),
            }),
            StorageConfig::Memory(_) => None,
        })
        .collect();
    let names = || {
        files
            .iter()
            .filter_map(|t| t.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match storage {
        Some(wanted) => match files.iter().find(|t| t.name.as_deref() == Some(wanted)) {
            Some(t) => Ok(vec![t.clone()]),
            None => Err(usage(anyhow!(
                "{} has no file storage named {wanted:?} (it has: {})",
                inst.file.display(),
                names()
            ))),
        },
        None if files.is_empty() => Err(usage(anyhow!(
            "{} has no file storage",
            inst.file.display()
        ))),
        None => Ok(files),
    }
}
