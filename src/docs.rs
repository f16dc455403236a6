//! Man pages and shell completions, generated from the clap definitions in `cli`.
//!
//! The generated files are checked in (`man/`, `completions/`) so that packagers need no
//! build step; `tests/docs_current.rs` fails when they are stale. Regenerate with
//! `cargo run -q -- generate-docs`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Every generated file, as (path relative to the checkout, contents).
pub fn render() -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut cmd = Cli::command();
    cmd.build();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "zodbctl", &mut buf);
        let name = match shell {
            Shell::Bash => "completions/zodbctl.bash",
            Shell::Zsh => "completions/_zodbctl",
            _ => "completions/zodbctl.fish",
        };
        files.push((name.to_owned(), buf));
    }
    render_man(&cmd, "zodbctl", &mut files)?;
    Ok(files)
}

/// One page for the command and one per (nested) subcommand: zodbctl-create-server.1, ...
fn render_man(cmd: &clap::Command, page: &str, files: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(page.to_owned()))
        .render(&mut buf)
        .context("rendering a man page")?;
    files.push((format!("man/{page}.1"), buf));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render_man(sub, &format!("{page}-{}", sub.get_name()), files)?;
    }
    Ok(())
}

/// Write every generated file below `top`, removing stale man pages.
pub fn generate(top: &Path) -> Result<()> {
    let files = render()?;
    let man = top.join("man");
    if man.is_dir() {
        for entry in fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "1") {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    for (rel, contents) in files {
        let path = top.join(&rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {rel}");
    }
    Ok(())
}
