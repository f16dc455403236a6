//! `zodbctl verify [PATH] [-v]`: fstest, with fstest's output and exit status.
//!
//! Without PATH, every FileStorage of the server instance is checked in turn (the exit
//! status is the worst); since those files may be in use, an error that looks like a
//! commit in progress (an incomplete or checkpoint-status last transaction) is checked
//! again for up to two seconds before it is reported. With PATH the file is taken as is,
//! as fstest does.
//!
//! Success prints nothing (with `-v`, fstest's per-transaction lines and `no errors
//! detected` without a newline) and exits 0; the first damage found is printed on standard
//! error, exactly as fstest words it, and exits 1. A progress bar is drawn on standard error
//! for large files when it is a terminal, and cleared before anything else is printed there.
//! `--deep` adds the checks of [`super::deep`] once fstest's have passed; their findings
//! go to standard error, each prefixed with the file name, and any error exits 1.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::deep::{self, Findings, MAX_REPORTED, Severity};
use super::fstest::{self, CheckError, Options};
use super::target;
use crate::cli::{GlobalArgs, VerifyArgs};
use crate::error::{EXIT_FAILURE, usage};

/// Files smaller than this check in well under a second; no bar for them.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

pub fn run(g: &GlobalArgs, args: &VerifyArgs) -> Result<u8> {
    let targets = target::targets(g, args.path.as_deref(), args.storage.as_deref())?;
    // Files of an instance may be live: a commit in progress looks like a damaged last
    // transaction for a moment, so that case is checked again before it is reported.
    let live = args.path.is_none();
    let mut status = 0;
    for (i, t) in targets.iter().enumerate() {
        if i > 0 && args.verbose > 0 {
            // fstest ends with "no errors detected" and no newline; keep files apart.
            println!();
        }
        status = status.max(verify_file(&t.path, args, live)?);
    }
    Ok(status)
}

/// Times a trailing-transaction error is checked again on a live file, and the pause.
const LIVE_RETRIES: u32 = 10;
const LIVE_PAUSE: Duration = Duration::from_millis(200);

fn verify_file(path: &Path, args: &VerifyArgs, live: bool) -> Result<u8> {
    let mut tries = 0;
    loop {
        match verify_once(path, args, live && tries < LIVE_RETRIES)? {
            Outcome::Done(code) => return Ok(code),
            Outcome::Busy => {
                tries += 1;
                std::thread::sleep(LIVE_PAUSE);
            }
        }
    }
}

enum Outcome {
    Done(u8),
    /// A trailing-transaction error on a live file, not reported yet.
    Busy,
}

fn verify_once(path: &Path, args: &VerifyArgs, may_retry: bool) -> Result<Outcome> {
    let label = path.display().to_string();
    let file = File::open(path)
        .with_context(|| format!("cannot open {label}"))
        .map_err(usage)?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot stat {label}"))?
        .len();

    let stdout = io::stdout();
    // A bar and per-transaction lines on the same terminal would garble each other.
    let verbose_on_tty = args.verbose > 0 && stdout.is_terminal();
    let bar = if size >= PROGRESS_MIN_BYTES && io::stderr().is_terminal() && !verbose_on_tty {
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "verifying {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    // Verbose lines are held back while a retry is still possible, so they print once.
    let mut held = Vec::new();
    let mut out: Box<dyn Write> = if may_retry {
        Box::new(&mut held)
    } else {
        Box::new(BufWriter::new(stdout.lock()))
    };
    let result = fstest::check(
        &file,
        &mut out,
        Options {
            label: &label,
            verbosity: args.verbose,
            progress: &mut |pos| bar.set_position(pos),
        },
    );
    bar.finish_and_clear();
    if may_retry && matches!(&result, Err(CheckError::Format(e)) if e.trailing) {
        return Ok(Outcome::Busy);
    }
    if may_retry {
        drop(out);
        out = Box::new(BufWriter::new(stdout.lock()));
        out.write_all(&held)?;
    }
    let result = match result {
        Ok(summary) if args.deep => {
            let bar = if bar.is_hidden() {
                bar
            } else {
                let deep_bar =
                    ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
                deep_bar.set_style(bar.style());
                deep_bar
            };
            let index = crate::storage::indexfile::index_path(path);
            let findings = deep::check(&file, Some(&index), &mut |pos| bar.set_position(pos));
            bar.finish_and_clear();
            match findings {
                Ok(findings) => {
                    out.flush()?;
                    if report_deep(&label, &findings) {
                        return Ok(Outcome::Done(EXIT_FAILURE));
                    }
                    Ok(summary)
                }
                Err(e) => Err(CheckError::Io(e)),
            }
        }
        other => other,
    };
    match result {
        Ok(_) => {
            if args.verbose > 0 {
                out.write_all(b"no errors detected")?;
            }
            out.flush()?;
            Ok(Outcome::Done(0))
        }
        Err(CheckError::Format(e)) => {
            out.flush()?;
            eprintln!("{e}");
            Ok(Outcome::Done(EXIT_FAILURE))
        }
        Err(CheckError::Io(e)) => {
            let _ = out.flush();
            Err(e).with_context(|| format!("reading {label}"))
        }
    }
}

/// Print the deep checks' findings on standard error; true when any is an error.
fn report_deep(label: &str, f: &Findings) -> bool {
    for p in &f.problems {
        match p.severity {
            Severity::Error => eprintln!("{label}: {}", p.message),
            Severity::Warning => eprintln!("{label}: warning: {}", p.message),
        }
    }
    let total = f.errors + f.warnings;
    if total > MAX_REPORTED {
        eprintln!("{label}: ... and {} more", total - MAX_REPORTED);
    }
    if f.errors > 0 {
        eprintln!(
            "{label}: {} error(s), {} warning(s) found by the deep checks",
            f.errors, f.warnings
        );
    }
    f.errors > 0
}
