//! The pinned Python environment that the interop tests rely on is there and importable.

mod support;

#[test]
fn pinned_python_packages_import() {
    let out = support::run_python(
        "import ZODB, ZEO, zdaemon, msgpack, importlib.metadata as m; \
         print(m.version('ZODB'), m.version('ZEO'), m.version('zdaemon'))",
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6.4 6.2 5.2.1");
}
