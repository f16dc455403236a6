//! `zodbctl create server|client|cluster`: the layout, and that real ZODB reads the client's
//! zope.conf (and opens a database through it against a real ZEO server).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use zodbctl::instance::{self, Address, InstanceConfig, StorageConfig};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Reads the `<zodb_db>` sections of a zope.conf with ZODB's own ZConfig schema (extended,
/// as Zope's zopeschema.xml does, by `mount-point` and `container-class`) and prints what
/// ZODB sees, as JSON. With a third argument, also opens the main database through
/// `ZODB.config.databaseFromString` and commits a value.
const READ_ZOPE_CONF: &str = r#"
import sys, json, io
import ZConfig, ZODB.config

text = open(sys.argv[1]).read()
# zope.conf's other directives belong to Zope's schema (Zope is not installed here): keep the
# %define lines and the <zodb_db> sections.
keep, depth = [], 0
for line in text.splitlines():
    s = line.strip()
    if s.startswith('%define'):
        keep.append(line)
    elif s.startswith('<zodb_db'):
        depth += 1; keep.append(line)
    elif s.startswith('</zodb_db>'):
        depth -= 1; keep.append(line)
    elif depth:
        keep.append(line)
section = '\n'.join(keep) + '\n'
schema = ZConfig.loadSchemaFile(io.StringIO('''
<schema>
  <import package="ZODB"/>
  <sectiontype name="zodb_db" extends="zodb" implements="ZODB.database">
    <multikey name="mount-point" attribute="mount_points" required="yes"/>
    <key name="container-class"/>
  </sectiontype>
  <multisection type="ZODB.database" name="*" attribute="databases"/>
</schema>'''))
conf, _ = ZConfig.loadConfigFile(schema, io.StringIO(section))
out = []
for db in conf.databases:
    c = db.config
    s = c.storage.config
    out.append(dict(
        name=db.name, mount_points=c.mount_points, container_class=c.container_class,
        cache_size=c.cache_size, storage_type=type(c.storage).__name__,
        servers=[a.address if isinstance(a.address, str) else [a.address[0], a.address[1]]
                 for a in s.server],
        storage=s.storage, zname=s.name, zcache_size=s.cache_size, client=s.client,
        var=s.var, blob_dir=s.blob_dir, shared_blob_dir=s.shared_blob_dir,
        read_only=s.read_only, read_only_fallback=s.read_only_fallback))

if len(sys.argv) > 2:
    # Open the main database for real: the plain ZODB <zodb> section (Zope's mount keys
    # removed) against the ZEO server given on the command line.
    import ZEO, transaction
    addr, stop = ZEO.server(path=sys.argv[2], port=int(sys.argv[3]), blob_dir=sys.argv[4])
    try:
        main = section.split('<zodb_db main>')[1].split('</zodb_db>')[0]
        main = '\n'.join(l for l in main.splitlines()
                         if not l.strip().startswith(('mount-point', 'container-class')))
        defines = '\n'.join(l for l in section.splitlines() if l.strip().startswith('%define'))
        db = ZODB.config.databaseFromString(defines + '\n<zodb>\n' + main + '\n</zodb>\n')
        conn = db.open()
        conn.root()['created_by'] = 'zodbctl'
        transaction.commit()
        conn.close()
        st = db.storage
        out.append(dict(opened=type(st).__name__, is_connected=st.is_connected(),
                        cache_size=st._cache.maxsize))
        db.close()
    finally:
        stop()
print(json.dumps(out))
"#;

fn read_zope_conf(path: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = support::run_python(READ_ZOPE_CONF, &args);
    serde_json::from_slice(&out.stdout).expect("json from python")
}

fn addr_json(a: &Address) -> Value {
    match a {
        Address::Tcp { host, port } => serde_json::json!([host, port]),
        Address::Unix(p) => serde_json::json!(p.to_str().unwrap()),
    }
}

#[test]
fn create_server_lays_out_an_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zeo");
    let out = support::zodbctl_cmd()
        .args(["create", "server"])
        .arg(&dir)
        .args(["--address", "127.0.0.1:9100", "--blobs", "--user", "zope"])
        .args([
            "--storage",
            "1",
            "--storage",
            "sessions=memory",
            "--storage",
            "catalog",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains(&format!("Created directory {}\n", dir.display())));
    assert!(stdout.contains(&format!(
        "Changed mode for {}/bin/zeoctl to 755",
        dir.display()
    )));
    assert!(stdout.ends_with("All done.\n"), "{stdout}");

    for f in [
        "etc/zeo.toml",
        "etc/logrotate.conf",
        "etc/crontab",
        "etc/zodbctl-zeo.service",
        "bin/zeoctl",
        "bin/runzeo",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for d in ["var", "log", "var/blobs", "var/blobs-catalog"] {
        assert!(dir.join(d).is_dir(), "{d}");
    }
    assert_eq!(mode(&dir.join("bin/zeoctl")), 0o755);
    assert_eq!(mode(&dir.join("bin/runzeo")), 0o755);
    assert_eq!(mode(&dir.join("var/blobs")), 0o700);
    for script in ["bin/zeoctl", "bin/runzeo"] {
        let ok = std::process::Command::new("sh")
            .arg("-n")
            .arg(dir.join(script))
            .status()
            .unwrap();
        assert!(ok.success(), "{script} is not valid sh");
    }
    let logrotate = std::fs::read_to_string(dir.join("etc/logrotate.conf")).unwrap();
    assert!(logrotate.contains(&format!("{}/log/*.log {{", dir.display())));
    assert!(logrotate.contains("logreopen"));
    let unit = std::fs::read_to_string(dir.join("etc/zodbctl-zeo.service")).unwrap();
    assert!(unit.contains("start --foreground"));

    let inst = instance::locate_in_dir(&dir).unwrap();
    let InstanceConfig::Server(c) = &inst.config else {
        panic!("not a server: {:?}", inst.config)
    };
    assert_eq!(c.zeo.address.to_string(), "127.0.0.1:9100");
    assert_eq!(c.runner.user.as_deref(), Some("zope"));
    assert_eq!(c.storages.len(), 3);
    assert!(matches!(&c.storages["sessions"], StorageConfig::Memory(_)));
    match &c.storages["1"] {
        StorageConfig::File(f) => {
            assert_eq!(inst.resolve(&f.path), dir.join("var/Data.fs"));
            assert_eq!(f.blob_dir.as_deref(), Some(Path::new("var/blobs")));
        }
        other => panic!("{other:?}"),
    }

    // `show` prints the effective configuration; it parses back as the same configuration
    // with the defaults filled in.
    let shown = support::zodbctl_cmd()
        .arg("-i")
        .arg(&dir)
        .arg("show")
        .assert()
        .success();
    let text = String::from_utf8_lossy(&shown.get_output().stdout).into_owned();
    assert!(text.contains("program = "), "{text}");
    assert!(text.contains("serve -C"), "{text}");
    let again = instance::parse_toml(Path::new("shown.toml"), &text).unwrap();
    let InstanceConfig::Server(s) = again else {
        panic!()
    };
    assert_eq!(s.storages, c.storages);
    assert_eq!(s.zeo, c.zeo);
}

#[test]
fn client_zope_conf_is_read_by_zodb_with_the_same_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("client");
    support::zodbctl_cmd()
        .args(["create", "client"])
        .arg(&dir)
        .args([
            "--server",
            "127.0.0.1:8100",
            "--server",
            "/run/zeo/zeo.sock",
        ])
        .args([
            "--storage",
            "main",
            "--cache-size",
            "64MB",
            "--http",
            "127.0.0.1:8088",
        ])
        .assert()
        .success();
    for f in [
        "etc/client.toml",
        "etc/zope.conf",
        "etc/zope.ini",
        "etc/site.zcml",
        "etc/logrotate.conf",
        "etc/zodbctl-client.service",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let ini = std::fs::read_to_string(dir.join("etc/zope.ini")).unwrap();
    assert!(ini.contains("host = 127.0.0.1\nport = 8088"), "{ini}");

    let inst = instance::locate_in_dir(&dir).unwrap();
    let c = inst.client().expect("a client").clone();
    let got = read_zope_conf(&dir.join("etc/zope.conf"), &[]);
    assert_eq!(got.len(), 1, "{got:?}");
    let db = &got[0];
    let z = &c.zeoclient;
    assert_eq!(db["name"], "main");
    assert_eq!(db["mount_points"], serde_json::json!(["/"]));
    assert_eq!(db["storage_type"], "ZEOClient");
    assert_eq!(db["cache_size"], c.zope.object_cache_size);
    let servers: Vec<Value> = z.servers.iter().map(addr_json).collect();
    assert_eq!(db["servers"], Value::Array(servers));
    assert_eq!(db["storage"], z.storage.as_str());
    assert_eq!(db["zname"], z.name.as_str());
    assert_eq!(db["zcache_size"], z.cache_size.bytes());
    assert_eq!(db["client"], Value::Null);
    assert_eq!(db["var"], inst.resolve(&z.var).to_str().unwrap());
    assert_eq!(db["blob_dir"], inst.resolve(&z.blob_dir).to_str().unwrap());
    assert_eq!(db["shared_blob_dir"], z.shared_blob_dir);
    assert_eq!(db["read_only"], z.read_only);
    assert_eq!(db["read_only_fallback"], z.read_only_fallback);
    assert_eq!(z.storage, "main");
    assert_eq!(z.cache_size.bytes(), 64 << 20);
}

#[test]
fn client_zope_conf_opens_a_database_on_a_real_zeo_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("client");
    let port = support::free_port();
    support::zodbctl_cmd()
        .args(["create", "client"])
        .arg(&dir)
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .assert()
        .success();
    let datafs = tmp.path().join("Data.fs");
    let blobs = tmp.path().join("blobs");
    let got = read_zope_conf(
        &dir.join("etc/zope.conf"),
        &[
            datafs.to_str().unwrap(),
            &port.to_string(),
            blobs.to_str().unwrap(),
        ],
    );
    let opened = got.last().unwrap();
    assert_eq!(opened["opened"], "ClientStorage", "{got:?}");
    assert_eq!(opened["is_connected"], true);
    assert_eq!(opened["cache_size"], 128u64 << 20);
}

#[test]
fn create_cluster_with_shared_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = 18200u16;
    support::zodbctl_cmd()
        .args(["create", "cluster"])
        .arg(&dir)
        .args(["--clients", "3", "--sessions", "--blobs", "--base-port"])
        .arg(base.to_string())
        .assert()
        .success();
    let cluster = instance::locate_in_dir(&dir).unwrap();
    let c = cluster.cluster().expect("a cluster");
    let order: Vec<String> = c.start_order().iter().map(|m| m.display_name()).collect();
    assert_eq!(order, ["server", "client1", "client2", "client3"]);

    let members = cluster.members().unwrap();
    let server = members[0].1.server().expect("server first").clone();
    assert_eq!(server.zeo.address, Address::localhost(base));
    assert!(matches!(
        server.storages["sessions"],
        StorageConfig::Memory(_)
    ));
    assert!(matches!(&server.storages["1"], StorageConfig::File(f) if f.blob_dir.is_some()));

    for (i, (member, inst)) in members.iter().enumerate().skip(1) {
        let client = inst.client().expect("a client");
        assert_eq!(client.zeoclient.servers, vec![server.zeo.address.clone()]);
        assert_eq!(
            client.zope.http_address,
            Address::localhost(base + i as u16)
        );
        assert_eq!(client.zope.sessions.as_deref(), Some("sessions"));
        let dbs = read_zope_conf(&inst.dir.join("etc/zope.conf"), &[]);
        assert_eq!(dbs.len(), 2, "{}: {dbs:?}", member.display_name());
        let temp = &dbs[1];
        assert_eq!(temp["mount_points"], serde_json::json!(["/temp_folder"]));
        assert_eq!(
            temp["container_class"],
            "Products.TemporaryFolder.TemporaryContainer"
        );
        assert_eq!(temp["storage"], "sessions");
        assert_eq!(temp["servers"], serde_json::json!([["127.0.0.1", base]]));
    }
    support::zodbctl_cmd()
        .arg("-i")
        .arg(&dir)
        .arg("show")
        .assert()
        .success()
        .stdout(predicates::str::contains("kind = \"server\""));
}

/// Snapshot of every path under `dir`.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn one_line_usage_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn refuses_a_target_with_files_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("busy");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let before = tree(tmp.path());
    for kind in [
        vec!["create", "server"],
        vec!["create", "client", "--server", "127.0.0.1:8100"],
        vec!["create", "cluster", "--clients", "2"],
    ] {
        let out = support::zodbctl()
            .args(&kind[..2])
            .arg(&dir)
            .args(&kind[2..])
            .output()
            .unwrap();
        let err = one_line_usage_error(&out);
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("already has files"), "{err}");
        assert_eq!(tree(tmp.path()), before, "{kind:?} wrote something");
    }
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    for (args, needle) in [
        (
            vec!["create", "server", "DIR", "--address", "nonsense"],
            "--address: bad address \"nonsense\"",
        ),
        (
            vec!["create", "server", "DIR", "--address", "host:99999"],
            "between 0 and 65535",
        ),
        (
            vec!["create", "server", "DIR", "--storage", "x=zrs"],
            "unknown type \"zrs\"",
        ),
        (
            vec!["create", "client", "DIR", "--server", "bad"],
            "--server: bad address",
        ),
        (
            vec![
                "create",
                "client",
                "DIR",
                "--server",
                "1",
                "--cache-size",
                "lots",
            ],
            "--cache-size: bad size",
        ),
        (
            vec![
                "create",
                "cluster",
                "DIR",
                "--clients",
                "9",
                "--base-port",
                "65530",
            ],
            "65535",
        ),
    ] {
        let out = support::zodbctl()
            .args(args.iter().map(|a| {
                if *a == "DIR" {
                    dir.to_str().unwrap()
                } else {
                    a
                }
            }))
            .output()
            .unwrap();
        let err = one_line_usage_error(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} created the directory");
    }
}

#[test]
fn show_warns_when_zope_conf_and_client_toml_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("client");
    support::zodbctl_cmd()
        .args(["create", "client", "--server", "127.0.0.1:8100"])
        .arg(&dir)
        .assert()
        .success();
    support::zodbctl_cmd()
        .arg("-i")
        .arg(&dir)
        .arg("show")
        .assert()
        .success()
        .stderr("");
    let conf = dir.join("etc/zope.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("server 127.0.0.1:8100", "server 127.0.0.1:8200"),
    )
    .unwrap();
    support::zodbctl_cmd()
        .arg("-i")
        .arg(&dir)
        .arg("show")
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "server: \"127.0.0.1:8200\" here, but etc/client.toml says \"127.0.0.1:8100\"",
        ));
}

#[test]
fn a_cluster_member_of_the_wrong_kind_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    support::zodbctl_cmd()
        .args(["create", "cluster", "--clients", "1"])
        .arg(&dir)
        .assert()
        .success();
    let file = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("kind = \"server\"", "kind = \"client\"", 1),
    )
    .unwrap();
    let out = support::run_in(&dir, &["show"]);
    let err = one_line_usage_error(&out);
    assert!(
        err.contains("members.server: kind = \"client\", but"),
        "{err}"
    );
    assert!(err.contains("is a server instance"), "{err}");
}

/// Every file under `dir` with its content, `dir` itself written as DIR.
fn contents(dir: &Path) -> Vec<(String, String)> {
    let d = dir.display().to_string();
    tree(dir)
        .into_iter()
        .filter(|p| Path::new(p).is_file())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            (p.replace(&d, "DIR"), text.replace(&d, "DIR"))
        })
        .collect()
}

#[test]
fn create_cluster_with_a_replica() {
    use zodbctl::instance::{OnTimeout, ReadyCheck, ReplicationMode, Seconds};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = 18300u16;
    support::zodbctl_cmd()
        .args(["create", "cluster"])
        .arg(&dir)
        .args(["--replicas", "1", "--sessions", "--base-port"])
        .arg(base.to_string())
        .assert()
        .success();
    let cluster = instance::locate_in_dir(&dir).unwrap();
    let c = cluster.cluster().expect("a cluster");
    let order: Vec<String> = c.start_order().iter().map(|m| m.display_name()).collect();
    assert_eq!(order, ["server", "replica1", "client1"]);
    let members = cluster.members().unwrap();
    let local = Address::localhost;

    // The primary: P = base + clients + 1 is its replication address.
    let (_, primary_inst) = &members[0];
    assert!(
        primary_inst.notices.is_empty(),
        "{:?}",
        primary_inst.notices
    );
    let primary = primary_inst.server().unwrap();
    assert_eq!(primary.zeo.address, local(base));
    assert_eq!(primary.zeo.read_only_address, None);
    assert_eq!(
        primary.metrics.as_ref().unwrap().address,
        format!("127.0.0.1:{}", base - 1)
    );
    let r = &primary.replication;
    assert_eq!(r.address, Some(local(base + 2)));
    assert_eq!(r.mode, ReplicationMode::Sync);
    assert_eq!(r.on_timeout, OnTimeout::Degrade);
    assert_eq!(r.sync_timeout, Seconds::secs(2));
    assert_eq!(r.peers, [local(base + 5)]);
    assert!(matches!(&primary.storages["1"], StorageConfig::File(f) if f.replicate_from.is_none()));
    assert_eq!(primary.ready_check(), ReadyCheck::Address(local(base)));

    // The replica: the next four ports.
    let (_, replica_inst) = &members[1];
    assert!(
        replica_inst.notices.is_empty(),
        "{:?}",
        replica_inst.notices
    );
    let replica = replica_inst.server().unwrap();
    assert_eq!(replica.zeo.address, local(base + 3));
    assert_eq!(replica.zeo.read_only_address, Some(local(base + 4)));
    assert_eq!(replica.replication.address, Some(local(base + 5)));
    assert_eq!(replica.replication.peers, [local(base + 2)]);
    assert_eq!(
        replica.metrics.as_ref().unwrap().address,
        format!("127.0.0.1:{}", base + 6)
    );
    assert!(
        matches!(&replica.storages["1"], StorageConfig::File(f) if f.replicate_from == Some(local(base + 2)))
    );
    assert!(matches!(
        replica.storages["sessions"],
        StorageConfig::Memory(_)
    ));
    // The supervisor waits for its read-only listener: the main one opens on promotion.
    assert_eq!(replica.ready_check(), ReadyCheck::Address(local(base + 4)));
    let text = std::fs::read_to_string(replica_inst.dir.join("etc/zeo.toml")).unwrap();
    assert!(
        text.contains("replicate-from = \"127.0.0.1:18302\""),
        "{text}"
    );
    assert!(
        text.contains("read-only-address = \"127.0.0.1:18304\""),
        "{text}"
    );
    assert!(
        text.contains("Not replicated (memory storages never are)"),
        "{text}"
    );

    // The client: every writable address, then the read-only ones, with the fallback.
    let (_, client_inst) = &members[2];
    let client = client_inst.client().unwrap();
    assert_eq!(
        client.zeoclient.servers,
        [local(base), local(base + 3), local(base + 4)]
    );
    assert!(client.zeoclient.read_only_fallback);
    assert_eq!(client.zope.http_address, local(base + 1));
    let conf = std::fs::read_to_string(client_inst.dir.join("etc/zope.conf")).unwrap();
    assert!(conf.contains("    server 127.0.0.1:18304\n"), "{conf}");
    assert!(conf.contains("    read-only-fallback true\n"), "{conf}");

    // `show` accepts every member and the cluster, without a note or warning.
    for d in [
        dir.clone(),
        dir.join("server"),
        dir.join("replica1"),
        dir.join("client1"),
    ] {
        let out = support::zodbctl_cmd()
            .arg("-i")
            .arg(&d)
            .arg("show")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", d.display());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{}", d.display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        if d.ends_with("replica1") {
            assert!(
                stdout.contains("replicate-from = \"127.0.0.1:18302\""),
                "{stdout}"
            );
            assert!(stdout.contains("admin-socket = "), "{stdout}");
            assert!(stdout.contains("mode = \"sync\""), "{stdout}");
            assert!(
                stdout.contains("[runner.ready-check]\naddress = \"127.0.0.1:18304\""),
                "{stdout}"
            );
        }
    }
}

#[test]
fn replicas_zero_is_the_layout_of_before() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    support::zodbctl_cmd()
        .args(["create", "cluster"])
        .arg(&a)
        .args(["--sessions", "--clients", "2"])
        .assert()
        .success();
    support::zodbctl_cmd()
        .args(["create", "cluster"])
        .arg(&b)
        .args(["--sessions", "--clients", "2", "--replicas", "0"])
        .assert()
        .success();
    let (ca, cb) = (contents(&a), contents(&b));
    let names = |c: &[(String, String)]| c.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ca), names(&cb));
    for ((p, ta), (_, tb)) in ca.iter().zip(&cb) {
        // Only the systemd unit names differ (they carry the directory name).
        if !p.contains(".service") {
            assert_eq!(ta, tb, "{p}");
        }
    }
    let server = std::fs::read_to_string(b.join("server/etc/zeo.toml")).unwrap();
    for absent in [
        "[replication]",
        "read-only-address",
        "replicate-from",
        "Not replicated",
    ] {
        assert!(!server.contains(absent), "{absent} in {server}");
    }
    // The [zeo] table as it always was.
    assert!(
        server.contains("# threads = 2\n\n[storages.1]\n"),
        "{server}"
    );
    assert!(
        server.ends_with("[metrics]\naddress = \"127.0.0.1:8099\"\n\n"),
        "{server:?}"
    );
    let client = std::fs::read_to_string(b.join("client1/etc/client.toml")).unwrap();
    assert!(
        client.contains("read-only = false\nread-only-fallback = false\n\n[zope]"),
        "{client}"
    );
    let cluster = std::fs::read_to_string(b.join("cluster.toml")).unwrap();
    assert!(!cluster.contains("replica"), "{cluster}");
}
