//! `create`, `import`, `show`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::ClusterConfig;
use super::{InstanceConfig, Notice, locate, zeoconf};
use crate::cli::{
    CreateClientArgs, CreateClusterArgs, CreateServerArgs, GlobalArgs, ImportArgs, ShowArgs,
};
use crate::error::usage;

pub fn create_server(_g: &GlobalArgs, args: &CreateServerArgs) -> Result<u8> {
    super::scaffold::create_server(args)
}

pub fn create_client(_g: &GlobalArgs, args: &CreateClientArgs) -> Result<u8> {
    super::scaffold::create_client(args)
}

pub fn create_cluster(_g: &GlobalArgs, args: &CreateClusterArgs) -> Result<u8> {
    super::scaffold::create_cluster(args)
}

/// Print notices on standard error as one line per file (for routine commands such as
/// `start` or `status`): which settings are read but not acted on. `show` and `import` give
/// the details.
pub fn report_notices(notices: &[Notice]) {
    let mut files: Vec<&Path> = notices.iter().map(|n| n.file.as_path()).collect();
    files.dedup();
    for file in files {
        let keys: Vec<&str> = notices
            .iter()
            .filter(|n| n.file == file)
            .map(|n| n.key.as_str())
            .collect();
        eprintln!(
            "zodbctl: note: {}: {} setting(s) to review ({}); `zodbctl show` explains each",
            file.display(),
            keys.len(),
            keys.join(", ")
        );
    }
}

/// Print every notice, one per line, with its line number and explanation.
pub fn report_notices_in_full(notices: &[Notice]) {
    for n in notices {
        eprintln!("zodbctl: note: {n}");
    }
}

/// `zodbctl import zeo.conf [-o FILE]`: the TOML equivalent of a zeo.conf.
pub fn import(_g: &GlobalArgs, args: &ImportArgs) -> Result<u8> {
    // Refuse before reading anything, so a refused import prints only the refusal.
    if let Some(out) = &args.output {
        if out.exists() {
            return Err(usage(anyhow::anyhow!(
                "{}: already exists; not overwriting it",
                out.display()
            )));
        }
    }
    let (config, notices) = zeoconf::server_from_zconfig(&args.zeo_conf).map_err(usage)?;
    report_notices_in_full(&notices);
    let body = toml::to_string(&config).context("writing the configuration as TOML")?;
    let mut text = format!(
        "# zodbctl server configuration, imported from {} by `zodbctl import`.\n\
         # Relative paths are relative to the instance directory (the parent of etc/).\n\n",
        args.zeo_conf.display()
    );
    text.push_str(&body);
    match &args.output {
        None => {
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to standard output")?;
        }
        Some(out) => {
            write_new_file(out, &text)?;
            eprintln!("Wrote file {}", out.display());
        }
    }
    Ok(0)
}

/// Create `path` with `text`; an existing file is never replaced (exit status 2).
fn write_new_file(path: &Path, text: &str) -> Result<()> {
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(usage(anyhow::anyhow!(
                "{}: already exists; not overwriting it",
                path.display()
            )));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    };
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `zodbctl show`: the effective configuration, defaults filled in, as TOML.
pub fn show(g: &GlobalArgs, _args: &ShowArgs) -> Result<u8> {
    let inst = locate(g).map_err(usage)?;
    report_notices_in_full(&inst.notices);
    let file = std::path::absolute(&inst.file).unwrap_or_else(|_| inst.file.clone());
    let body = match &inst.config {
        InstanceConfig::Server(s) => {
            let mut s = s.clone();
            let zodbctl = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("zodbctl"));
            s.runner.program = Some(s.program(&zodbctl, &file));
            if s.runner.start_test_program.is_none() {
                s.runner.ready_check = Some(s.ready_check());
            }
            if s.runner.directory.is_none() {
                s.runner.directory = Some(inst.dir.clone());
            }
            s.runner
                .logfile
                .get_or_insert_with(|| s.runner.transcript.clone());
            toml::to_string(&s)?
        }
        InstanceConfig::Client(c) => {
            for d in super::scaffold::zope_conf_drift(c, &inst.dir) {
                eprintln!("zodbctl: warning: {d}");
            }
            let mut c = c.clone();
            if c.runner.program.is_none() && c.runner.start_test_program.is_none() {
                c.runner.ready_check = Some(c.ready_check());
            }
            c.runner.program = Some(c.program());
            if c.runner.directory.is_none() {
                c.runner.directory = Some(inst.dir.clone());
            }
            c.runner
                .logfile
                .get_or_insert_with(|| c.runner.transcript.clone());
            toml::to_string(&c)?
        }
        InstanceConfig::Cluster(c) => {
            // A member that does not load would stop `start` later: say so now.
            for (m, member) in inst.members().map_err(usage)? {
                report_notices_in_full(&member.notices);
                if let Some(client) = member.client() {
                    for d in super::scaffold::zope_conf_drift(client, &member.dir) {
                        eprintln!("zodbctl: warning: {}: {d}", m.display_name());
                    }
                }
            }
            let order = c.start_order();
            let members = order
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut m = (*m).clone();
                    m.name = Some(m.display_name());
                    m.start_order = Some(m.start_order.unwrap_or(i as u32));
                    m
                })
                .collect();
            toml::to_string(&ClusterConfig { members })?
        }
    };
    let kind = inst.config.kind_name();
    println!(
        "# Effective {kind} configuration of {}\n# Relative paths are relative to {}\n",
        file.display(),
        inst.dir.display()
    );
    print!("{body}");
    Ok(0)
}
