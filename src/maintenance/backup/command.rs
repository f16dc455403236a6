//! The command edge of `zodbctl backup` and `zodbctl restore`: which files (a path, or the
//! instance's storages with its `[backup]` settings), progress bars, the one-line summary or
//! `--json`, and the last-backup record.
//!
//! The record of the last successful backup, for `zodbctl check` and monitoring, is written
//! after every successful backup (also an "unchanged" one) to `<repository>/last-backup.json`
//! and, for an instance's storage, beside its Data.fs as `<Data.fs>.backup.json` too, where
//! `zodbctl check` and `top` look for it ([`crate::metrics::records`]; format:
//! [`super::ops::Record`], described in `docs/backup.md`).

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::BackupError;
use super::copy::GZIP_LEVEL;
use super::ops::{
    self, BackupKind, BackupOptions, Output, Progress, Record, RestoreKind, RestoreOptions,
};
use crate::cli::{BackupArgs, GlobalArgs, RestoreArgs};
use crate::error::{EXIT_FAILURE, usage};
use crate::instance::{self, BackupConfig, StorageConfig};
use crate::metrics::records;

/// A progress bar on standard error when it is a terminal; nothing otherwise.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        if !io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:28} {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(what.to_owned());
    }
    fn set(&self, done: u64) {
        self.0.set_position(done);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn lift(e: BackupError) -> anyhow::Error {
    match e {
        BackupError::Input(_) => usage(e),
        e => anyhow::Error::new(e),
    }
}

/// One storage to work on.
struct Job {
    storage: Option<String>,
    source: PathBuf,
    repository: PathBuf,
    blob_dir: Option<PathBuf>,
    /// Where the instance keeps the record too.
    record: Option<PathBuf>,
    settings: BackupConfig,
}

/// The instance's file storages (all, or `--storage`), with their repositories.
fn instance_jobs(
    g: &GlobalArgs,
    storage: Option<&str>,
    repository: Option<&Path>,
) -> Result<Vec<Job>> {
    let inst = instance::locate(g).map_err(|e| {
        usage(anyhow!(
            "{e}; or give the file and repository (-f PATH -r DIR)"
        ))
    })?;
    let Some(server) = inst.server() else {
        return Err(usage(anyhow!(
            "{} is a {} instance; backups are of server instances (or use -f PATH -r DIR)",
            inst.file.display(),
            inst.config.kind_name()
        )));
    };
    let mut server = server.clone();
    server.resolve_paths(&inst.dir);
    let mut jobs = Vec::new();
    for (name, s) in &server.storages {
        let StorageConfig::File(f) = s else { continue };
        if storage.is_some_and(|w| w != name) {
            continue;
        }
        jobs.push(Job {
            storage: Some(name.clone()),
            source: f.path.clone(),
            repository: server.backup.repository.join(name),
            blob_dir: f.blob_dir.clone().filter(|_| server.backup.blobs),
            record: Some(records::record_path(&f.path, records::Kind::Backup)),
            settings: server.backup.clone(),
        });
    }
    if jobs.is_empty() {
        return Err(usage(anyhow!(
            "{} has no file storage{}",
            inst.file.display(),
            storage.map_or(String::new(), |s| format!(" named {s:?}"))
        )));
    }
    if let Some(repo) = repository {
        if jobs.len() > 1 {
            return Err(usage(anyhow!(
                "{} has several file storages; with -r, choose one with --storage",
                inst.file.display()
            )));
        }
        jobs[0].repository = repo.to_path_buf();
    } else {
        for j in &jobs {
            std::fs::create_dir_all(&j.repository)
                .with_context(|| format!("cannot create {}", j.repository.display()))?;
        }
    }
    Ok(jobs)
}

pub fn backup(g: &GlobalArgs, args: &BackupArgs) -> Result<u8> {
    backup_with(g, args, &Bar::new(), None)
}

/// Where `backup` writes its lines: `None` for standard output and error, else a callback
/// (the dashboard, `zodbctl top`, which passes its own [`Progress`] too).
pub type Lines<'a> = Option<&'a (dyn Fn(String) + Sync)>;

fn out(lines: Lines, line: String) {
    match lines {
        Some(f) => f(line),
        None => println!("{line}"),
    }
}

fn err(lines: Lines, line: String) {
    match lines {
        Some(f) => f(line),
        None => eprintln!("{line}"),
    }
}

/// `zodbctl backup`, its progress to `progress` and its lines to `lines`.
pub fn backup_with(
    g: &GlobalArgs,
    args: &BackupArgs,
    progress: &dyn Progress,
    lines: Lines,
) -> Result<u8> {
    let jobs = match (&args.file, &args.repository) {
        (Some(file), Some(repo)) => vec![Job {
            storage: None,
            source: file.clone(),
            repository: repo.clone(),
            blob_dir: None,
            record: None,
            // Plain repozo semantics: only what the options say.
            settings: BackupConfig {
                repository: repo.clone(),
                keep: 0,
                gzip: false,
                blobs: false,
                quick: false,
            },
        }],
        (None, Some(repo)) if args.verify => vec![Job {
            storage: None,
            source: PathBuf::new(),
            repository: repo.clone(),
            blob_dir: None,
            record: None,
            settings: BackupConfig::default(),
        }],
        _ => instance_jobs(g, args.storage.as_deref(), args.repository.as_deref())?,
    };
    if args.verify {
        return verify(&jobs, args, progress, lines);
    }
    for job in &jobs {
        let gzip = if args.gzip {
            true
        } else if args.no_gzip {
            false
        } else {
            job.settings.gzip
        };
        let blob_dir = if args.no_blobs {
            None
        } else {
            args.blob_dir.clone().or_else(|| job.blob_dir.clone())
        };
        let keep = args
            .keep
            .or((job.settings.keep > 0).then_some(job.settings.keep))
            .filter(|n| *n > 0);
        let opts = BackupOptions {
            source: &job.source,
            repository: &job.repository,
            full: args.full,
            quick: args.quick || job.settings.quick,
            gzip: gzip.then_some(GZIP_LEVEL),
            kill_old_on_full: args.kill_old_on_full,
            keep,
            blob_dir: blob_dir.as_deref(),
        };
        let report = ops::backup(&opts, progress).map_err(lift)?;
        let record = Record::of(&report, job.storage.as_deref());
        record
            .write(&job.repository.join(ops::RECORD))
            .map_err(lift)?;
        if let Some(p) = &job.record {
            record.write(p).map_err(lift)?;
        }
        for name in &report.leftovers {
            err(
                lines,
                format!(
                    "{}: removed {name}, left by an interrupted backup",
                    job.repository.display()
                ),
            );
        }
        for m in &report.missing_blobs {
            err(
                lines,
                format!(
                    "warning: {}: a blob record's file is missing from the blob directory: {m}",
                    job.source.display()
                ),
            );
        }
        if args.json {
            out(lines, serde_json::to_string(&report)?);
            continue;
        }
        if let Some(r) = &report.reason {
            err(lines, format!("{}: full backup: {r}", job.source.display()));
        }
        let blobs = report.blobs.as_ref().map_or(String::new(), |b| {
            format!(
                "; {} blob files ({} copied, {} linked)",
                b.files, b.copied, b.linked
            )
        });
        let removed = if report.removed.is_empty() {
            String::new()
        } else {
            format!("; removed {} old files", report.removed.len())
        };
        let summary = match report.kind {
            BackupKind::Unchanged => format!(
                "{}: no changes since the last backup in {}, nothing to do{removed}",
                job.source.display(),
                job.repository.display()
            ),
            kind => format!(
                "{}: {} backup {}: {} ({} written) in {:.2} s, {}/s{blobs}{removed}",
                job.source.display(),
                if kind == BackupKind::Full {
                    "full"
                } else {
                    "incremental"
                },
                job.repository
                    .join(report.file.as_deref().unwrap_or_default())
                    .display(),
                BinaryBytes(report.bytes),
                BinaryBytes(report.written),
                report.seconds,
                BinaryBytes((report.bytes as f64 / report.seconds.max(1e-6)) as u64),
            ),
        };
        out(lines, summary);
    }
    Ok(0)
}

fn verify(jobs: &[Job], args: &BackupArgs, bar: &dyn Progress, lines: Lines) -> Result<u8> {
    let mut status = 0;
    for job in jobs {
        let problems = ops::verify(&job.repository, args.quick, bar).map_err(lift)?;
        if args.json {
            out(
                lines,
                serde_json::json!({
                    "repository": job.repository,
                    "ok": problems.is_empty(),
                    "problems": problems,
                })
                .to_string(),
            );
        } else {
            for p in &problems {
                err(lines, p.to_string());
            }
        }
        if !problems.is_empty() {
            status = EXIT_FAILURE;
        }
    }
    Ok(status)
}

pub fn restore(g: &GlobalArgs, args: &RestoreArgs) -> Result<u8> {
    let to_instance = args.output.is_none();
    let job = if to_instance || args.repository.is_none() {
        let jobs = instance_jobs(g, args.storage.as_deref(), args.repository.as_deref())?;
        if jobs.len() > 1 {
            return Err(usage(anyhow!(
                "the instance has several file storages; choose one with --storage"
            )));
        }
        jobs.into_iter().next()
    } else {
        None
    };
    let repository = args
        .repository
        .clone()
        .or_else(|| job.as_ref().map(|j| j.repository.clone()))
        .ok_or_else(|| usage(anyhow!("give the repository with -r DIR")))?;
    let output_path = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => job.as_ref().map(|j| j.source.clone()),
    };
    let blob_dir = if args.no_blobs {
        None
    } else {
        args.blob_dir.clone().or_else(|| {
            job.as_ref()
                .filter(|_| to_instance)
                .and_then(|j| j.blob_dir.clone())
        })
    };
    let bar = Bar::new();
    let opts = RestoreOptions {
        repository: &repository,
        output: match &output_path {
            Some(p) => Output::File(p),
            None => Output::Stdout,
        },
        date: args.date.as_deref(),
        verify: args.verify,
        blob_dir: blob_dir.as_deref(),
        incremental: !args.full,
        lock: to_instance,
    };
    let report = ops::restore(&opts, &bar).map_err(lift)?;
    if output_path.is_none() {
        return Ok(0);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(0);
    }
    if let Some(r) = &report.reason {
        eprintln!("{r}");
    }
    for name in &report.uncommitted {
        eprintln!(
            "warning: {}: left out {name}, which its .dat does not describe (a backup was \
             interrupted; the next backup removes it)",
            repository.display()
        );
    }
    let out = output_path.as_deref().unwrap_or(Path::new("-")).display();
    let blobs = report.blobs.as_ref().map_or(String::new(), |b| {
        format!(
            "; {} blob files restored, {} already there",
            b.files, b.kept
        )
    });
    let what = match report.kind {
        RestoreKind::Full => format!("restored {} files", report.chain.len()),
        RestoreKind::Incremental => format!(
            "appended {} of {} files ({} already in place)",
            report.files_written.len(),
            report.chain.len(),
            BinaryBytes(report.bytes_reused)
        ),
        RestoreKind::Unchanged => "already up to date".to_owned(),
    };
    println!(
        "{out}: {what}: {} written, {} in all, in {:.2} s, {}/s{}{blobs}",
        BinaryBytes(report.bytes_written),
        BinaryBytes(report.size),
        report.seconds,
        BinaryBytes((report.bytes_written as f64 / report.seconds.max(1e-6)) as u64),
        if report.verified { ", verified" } else { "" },
    );
    Ok(0)
}
