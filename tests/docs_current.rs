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
