//! `zodbctl -i DIR serve` serves the instance that `-i` names, as every command does, and a
//! real Python client commits to it; SIGTERM stops it with status 0.

mod support;

#[test]
fn serve_uses_the_instance_named_by_dash_i() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("zeo");
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    support::zodbctl_cmd()
        .args(["create", "server"])
        .arg(&dir)
        .args(["--address", &address])
        .assert()
        .success();

    let mut server = support::Serve::in_dir(top.path()).instance(&dir).start();
    assert_eq!(server.addr(), address);
    support::run_python(
        "import sys, ZEO, transaction\n\
         db = ZEO.DB(('127.0.0.1', int(sys.argv[1])), wait_timeout=20)\n\
         with db.transaction() as c: c.root()['answer'] = 42\n\
         db.close()",
        &[&port.to_string()],
    );
    server.stop();

    // What the client committed is in the instance's own Data.fs, which Python reads.
    let out = support::run_python(
        "import sys, ZODB\n\
         db = ZODB.DB(sys.argv[1], read_only=True)\n\
         print(db.open().root()['answer'])",
        &[dir.join("var/Data.fs").to_str().expect("utf-8 path")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}
