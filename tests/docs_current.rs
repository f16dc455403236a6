//! The checked-in man pages and completions must match the CLI definitions.

use std::path::Path;

#[test]
fn man_pages_and_completions_are_current() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = zodbctl::docs::render().expect("render docs");
    let mut stale = Vec::new();
    for (rel, contents) in &files {
        match std::fs::read(top.join(rel)) {
            Ok(on_disk) if &on_disk == contents => {}
            _ => stale.push(rel.clone()),
        }
    }
    let pages: Vec<_> = std::fs::read_dir(top.join("man"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| format!("man/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    for page in pages {
        if !files.iter().any(|(rel, _)| *rel == page) {
            stale.push(format!("{page} (no longer generated)"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {stale:?}\nregenerate with: cargo run -q -- generate-docs"
    );
}

/// The help says which Python tools zodbctl replaces; each claim must name a command that
/// exists (issue: `--help` once claimed zeopack, repozo and zeoup before they were built).
#[test]
fn the_tools_the_help_claims_to_replace_have_commands() {
    use clap::CommandFactory;
    let cmd = zodbctl::cli::Cli::command();
    let about = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    for (tool, commands) in [
        ("mkzeoinstance", &["create"][..]),
        ("runzeo", &["serve"]),
        ("zeoctl", &["start", "stop", "status"]),
        ("zeopack", &["pack"]),
        ("repozo", &["backup", "restore"]),
        ("zeoup", &["check"]),
    ] {
        if !about.contains(tool) {
            continue;
        }
        for name in commands {
            assert!(
                cmd.find_subcommand(name).is_some(),
                "the help claims to replace {tool}, but there is no `zodbctl {name}`"
            );
        }
    }
    assert!(
        about.contains("replaces"),
        "the help names what it replaces: {about}"
    );
}
