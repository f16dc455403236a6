//! `zodbctl dump` against Python's fsdump (ZODB 6.4): the same lines on healthy files and on
//! single-field damaged ones, the same warnings on standard error, and where fsdump dies
//! with a traceback, the same lines before it and exit status 1. `dump --verbose` likewise
//! against fsdump's `Dumper`.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use support::damage::{
    damaged_variants, make_base, python_json_by_path, write_variants, zodbctl_on_each,
};

/// fsdump's output and warnings for each file, in one process: JSON lines
/// `{"path", "out", "log", "crash"}`. The warnings reach stderr through Python's last-resort
/// handler, whose format is the bare message, as this handler's.
const FSDUMP_MANY: &str = r#"
import io, json, logging, sys
from ZODB.FileStorage.fsdump import fsdump, Dumper
log = io.StringIO()
logging.basicConfig(level=logging.WARNING, format='%(message)s', stream=log)
verbose = sys.argv[1] == 'verbose'
for path in sys.argv[2:]:
    out = io.StringIO()
    log.seek(0); log.truncate()
    crash = None
    try:
        if verbose:
            d = Dumper(path, dest=out)
            d.dump()
            d.file.close()
        else:
            fsdump(path, file=out)
    except Exception as e:
        crash = repr(e)
    print(json.dumps({"path": path, "out": out.getvalue(), "log": log.getvalue(), "crash": crash}))
"#;

fn python_dumps(paths: &[PathBuf], verbose: bool) -> BTreeMap<String, serde_json::Value> {
    let mode = if verbose { "verbose" } else { "plain" };
    python_json_by_path(FSDUMP_MANY, &[mode], paths)
}

#[test]
fn dump_prints_what_fsdump_prints_on_healthy_and_damaged_files() {
    compare_on_damaged_files(false);
}

#[test]
fn dump_verbose_prints_what_fsdumps_dumper_prints() {
    compare_on_damaged_files(true);
}

fn compare_on_damaged_files(verbose: bool) {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    // fsdump refuses files without the magic at open; checked below.
    let variants: Vec<_> = damaged_variants(&base)
        .into_iter()
        .filter(|(_, bytes)| bytes.len() >= 4 && &bytes[..4] == b"FS30")
        .collect();
    let mut paths = vec![dir.path().join("base.fs")];
    paths.extend(write_variants(dir.path(), &variants));
    let want = python_dumps(&paths, verbose);
    let args: &[&str] = if verbose { &["dump", "-v"] } else { &["dump"] };
    let results = zodbctl_on_each(args, &paths);
    let mut failures = Vec::new();
    let mut crashes = 0;
    for (p, out) in &results {
        let key = p.to_str().unwrap();
        let py = &want[key];
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let py_out = py["out"].as_str().unwrap();
        if py["crash"].is_null() {
            if out.status.code() != Some(0)
                || stdout != py_out
                || stderr != py["log"].as_str().unwrap()
            {
                failures.push(format!(
                    "{key}: exit {:?}\n--- ours\n{stdout}{stderr}--- fsdump\n{py_out}{}",
                    out.status.code(),
                    py["log"].as_str().unwrap()
                ));
            }
        } else {
            crashes += 1;
            if out.status.code() != Some(1)
                || stdout != py_out
                || !stderr.contains("zodbctl: error:")
            {
                failures.push(format!(
                    "{key}: fsdump crashed ({}); ours exit {:?}\n--- ours\n{stdout}{stderr}--- fsdump\n{py_out}",
                    py["crash"],
                    out.status.code()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        crashes > 0 && crashes < paths.len() / 2,
        "{crashes} crashes"
    );
}

#[test]
fn dump_matches_the_fsdump_command_on_a_realistic_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    support::make_datafs(&path, "0.3", Some(&dir.path().join("blobs")));
    let py = support::python_module("ZODB.FileStorage.fsdump", [&path]);
    assert!(py.status.success());
    let ours = support::zodbctl().arg("dump").arg(&path).output().unwrap();
    assert_eq!(ours.status.code(), Some(0));
    assert!(ours.stdout == py.stdout, "dump differs from fsdump");
    assert!(ours.stderr.is_empty());

    let py = support::run_python(
        "import sys\nfrom ZODB.FileStorage.fsdump import Dumper\nDumper(sys.argv[1]).dump()",
        &[path.to_str().unwrap()],
    );
    let ours = support::zodbctl()
        .args(["dump", "--verbose"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(ours.status.code(), Some(0));
    assert!(
        ours.stdout == py.stdout,
        "dump --verbose differs from Dumper"
    );
}

#[test]
fn dump_refuses_what_is_not_a_filestorage() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.fs", &b""[..]), ("magic.fs", &b"FS21...."[..])] {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        let out = support::zodbctl().arg("dump").arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty());
    }
}
