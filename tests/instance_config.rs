//! Configuration files: a zeo.conf written by the real zope.mkzeoinstance imports without
//! loss (checked against what ZEO's own ZConfig schema reads from it), zeo.conf → TOML →
//! model round trips, and bad input gives a one-line error naming the place, exit status 2.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use zodbctl::instance::{self, Address, InstanceConfig, ServerConfig, StorageConfig};

/// Loads a zeo.conf with ZEO's zeoctl schema (the stricter of the two that read it) and
/// prints every value as JSON.
const READ_ZEO_CONF: &str = r#"
import sys, os, json
import ZConfig, ZEO
schema = ZConfig.loadSchema(os.path.join(os.path.dirname(ZEO.__file__), 'zeoctl.xml'))
conf, _ = ZConfig.loadConfig(schema, sys.argv[1])
z = conf.zeo
addr = z.address.address
r = conf.runner
handlers = conf.eventlog.handler_factories if conf.eventlog else []
print(json.dumps(dict(
    address=addr if isinstance(addr, str) else [addr[0], addr[1]],
    read_only=z.read_only, invalidation_queue_size=z.invalidation_queue_size,
    invalidation_age=z.invalidation_age, transaction_timeout=z.transaction_timeout,
    pid_filename=z.pid_filename, msgpack=z.msgpack,
    storages=[dict(name=s.name, path=s.config.path, blob_dir=s.config.blob_dir,
                   read_only=s.config.read_only, pack_gc=s.config.pack_gc,
                   pack_keep_old=s.config.pack_keep_old) for s in conf.storages],
    eventlog_level=conf.eventlog.level if conf.eventlog else None,
    eventlog_paths=[h.section.path for h in handlers],
    runner=dict(program=r.program, socket_name=r.socket_name, daemon=r.daemon,
                directory=r.directory, backoff_limit=r.backoff_limit, forever=r.forever,
                exit_codes=r.exit_codes, start_timeout=r.start_timeout,
                stop_timeout=r.stop_timeout, user=r.user, umask=r.umask, logfile=r.logfile,
                transcript=r.transcript, start_test_program=r.start_test_program),
)))
"#;

fn mkzeoinstance(home: &Path, args: &[&str]) {
    let exe = support::python().parent().unwrap().join("mkzeoinstance");
    let out = std::process::Command::new(exe)
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkzeoinstance: {out:?}");
}

fn python_view(conf: &Path) -> Value {
    let out = support::run_python(READ_ZEO_CONF, &[conf.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn import(conf: &Path, out: &Path) -> String {
    let res = support::zodbctl_cmd()
        .arg("import")
        .arg(conf)
        .arg("-o")
        .arg(out)
        .assert()
        .success();
    String::from_utf8_lossy(&res.get_output().stderr).into_owned()
}

fn server(path: &Path) -> (ServerConfig, instance::Instance) {
    let inst = instance::load(path).unwrap_or_else(|e| panic!("{e}"));
    match &inst.config {
        InstanceConfig::Server(s) => (s.clone(), inst),
        other => panic!("{other:?}"),
    }
}

fn opt_path(p: &Option<PathBuf>) -> Value {
    match p {
        Some(p) => Value::from(p.to_str().unwrap()),
        None => Value::Null,
    }
}

/// Every value ZEO reads from the file is in the model, or was reported as a note.
fn assert_same_as_python(py: &Value, c: &ServerConfig, notes: &str) {
    let addr = match &c.zeo.address {
        Address::Tcp { host, port } => serde_json::json!([host, port]),
        Address::Unix(p) => Value::from(p.to_str().unwrap()),
    };
    assert_eq!(py["address"], addr);
    assert_eq!(py["read_only"], c.zeo.read_only);
    assert_eq!(py["invalidation_queue_size"], c.zeo.invalidation_queue_size);
    assert_eq!(py["invalidation_age"], Value::Null);
    assert_eq!(c.zeo.invalidation_age, None);
    assert_eq!(py["transaction_timeout"], Value::Null);
    assert_eq!(c.zeo.transaction_timeout, None);
    assert_eq!(py["msgpack"], Value::Null);
    assert!(!c.zeo.msgpack);

    let storages = py["storages"].as_array().unwrap();
    assert_eq!(storages.len(), c.storages.len());
    for s in storages {
        let name = s["name"].as_str().unwrap_or("1");
        let StorageConfig::File(f) = &c.storages[name] else {
            panic!("storage {name} is not a file storage")
        };
        assert_eq!(s["path"], f.path.to_str().unwrap());
        assert_eq!(s["blob_dir"], opt_path(&f.blob_dir));
        assert_eq!(s["read_only"].as_bool().unwrap_or(false), f.read_only);
        assert_eq!(s["pack_gc"], f.pack_gc);
        assert_eq!(s["pack_keep_old"], f.pack_keep_old);
    }

    assert_eq!(py["eventlog_level"], c.eventlog.level.python_level());
    assert_eq!(
        py["eventlog_paths"],
        serde_json::json!([c.eventlog.path.to_str().unwrap()])
    );

    let r = &py["runner"];
    let program: Vec<&str> = r["program"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    match &c.runner.program {
        // mkzeoinstance's bin/runzeo is replaced by zodbctl's own server, with a note.
        None => {
            assert!(program[0].ends_with("/bin/runzeo"), "{program:?}");
            assert!(
                notes.contains(": program: runzeo on this configuration"),
                "{notes}"
            );
        }
        Some(p) => assert_eq!(p.words(), &program[..]),
    }
    assert_eq!(r["socket_name"], c.runner.socket.to_str().unwrap());
    assert_eq!(r["daemon"], c.runner.daemon);
    assert_eq!(r["directory"], opt_path(&c.runner.directory));
    assert_eq!(r["backoff_limit"], c.runner.backoff_limit);
    assert_eq!(r["forever"], c.runner.forever);
    assert_eq!(r["exit_codes"], serde_json::json!(c.runner.exit_codes.0));
    assert_eq!(
        r["start_timeout"],
        c.runner.start_timeout.duration().as_secs()
    );
    assert_eq!(
        r["stop_timeout"],
        c.runner.stop_timeout.duration().as_secs()
    );
    assert_eq!(r["user"], Value::Null);
    assert_eq!(c.runner.user, None);
    assert_eq!(r["umask"], c.runner.umask.0);
    assert_eq!(r["logfile"], opt_path(&c.runner.logfile));
    assert_eq!(r["start_test_program"], Value::Null);
    // zdaemon's transcript default is /dev/null; zodbctl keeps one in log/ (a deliberate
    // change: the program's output is worth keeping).
    assert_eq!(r["transcript"], Value::Null);
}

#[test]
fn mkzeoinstance_zeo_conf_imports_without_loss() {
    for (name, args) in [
        ("blobs", vec!["127.0.0.1:8100", "-b"]),
        ("bare-port", vec!["8100"]),
        ("blob-path", vec!["localhost:9999", "-b", "/srv/blobs"]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join(name);
        mkzeoinstance(&home, &args);
        let conf = home.join("etc/zeo.conf");
        let py = python_view(&conf);

        let toml_file = home.join("etc/zeo.toml");
        let notes = import(&conf, &toml_file);
        // The legacy zdaemon keys mkzeoinstance writes are reported by name and line.
        for key in ["python", "zdrun", "default-to-interactive", "program"] {
            assert!(
                notes.contains(&format!("{}:", conf.display()))
                    && notes.contains(&format!(": {key}: ")),
                "{name}: {key} not reported:\n{notes}"
            );
        }
        let (from_toml, inst) = server(&toml_file);
        assert_same_as_python(&py, &from_toml, &notes);
        assert_eq!(inst.dir, home);

        // Round trip: zeo.conf → model directly, and zeo.conf → TOML → model, agree.
        let (from_conf, _) = server(&conf);
        assert_eq!(from_conf, from_toml, "{name}");
    }
}

#[test]
fn handwritten_zeo_conf_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(
        etc.join("storages.conf"),
        "<blobstorage main>\n  blob-dir $INSTANCE/var/blobs\n  <filestorage>\n    path $INSTANCE/var/main.fs\n    pack-keep-old false\n  </filestorage>\n</blobstorage>\n",
    )
    .unwrap();
    let conf = etc.join("zeo.conf");
    std::fs::write(
        &conf,
        format!(
            "# a hand-written configuration\n\
             %define INSTANCE {home}\n\
             %define PORT 8199\n\
             <zeo>\n  address [::1]:$PORT\n  read-only on\n  invalidation-queue-size 500\n  \
             invalidation-age 3600\n  transaction-timeout 30\n  msgpack true\n  \
             pid-filename ${{INSTANCE}}/var/zeo.pid\n  <ssl>\n    certificate $INSTANCE/etc/server.pem\n    \
             authenticate $INSTANCE/etc/clients.pem\n  </ssl>\n</zeo>\n\
             %include storages.conf\n\
             <filestorage catalog>\n  path $INSTANCE/var/catalog.fs\n  read-only yes\n</filestorage>\n\
             <mappingstorage temp>\n</mappingstorage>\n\
             <eventlog>\n  level warning\n  <logfile>\n    path STDERR\n    level error\n  </logfile>\n</eventlog>\n\
             <runner>\n  program /usr/bin/env FOO=$$HOME zodbctl serve\n  socket-name $INSTANCE/var/sock\n  \
             forever on\n  exit-codes 0,2,3\n  umask 027\n  user zope\n  transcript $INSTANCE/log/t.log\n  \
             stop-timeout 20\n  start-test-program /bin/true\n</runner>\n\
             <environment>\n  TZ UTC\n  Mixed_Case a b c\n</environment>\n",
            home = tmp.path().display()
        ),
    )
    .unwrap();
    let toml_file = tmp.path().join("imported.toml");
    import(&conf, &toml_file);
    let (from_conf, _) = server(&conf);
    let (from_toml, _) = server(&toml_file);
    assert_eq!(from_conf, from_toml);

    let c = from_conf;
    let home = tmp.path();
    assert_eq!(
        c.zeo.address,
        Address::Tcp {
            host: "::1".into(),
            port: 8199
        }
    );
    assert!(c.zeo.read_only && c.zeo.msgpack);
    assert_eq!(c.zeo.invalidation_queue_size, 500);
    assert_eq!(c.zeo.transaction_timeout.unwrap().duration().as_secs(), 30);
    assert_eq!(
        c.zeo.tls.as_ref().unwrap().authenticate,
        home.join("etc/clients.pem")
    );
    let StorageConfig::File(main) = &c.storages["main"] else {
        panic!()
    };
    assert_eq!(
        main.blob_dir.as_deref(),
        Some(home.join("var/blobs").as_path())
    );
    assert!(!main.pack_keep_old);
    assert!(matches!(&c.storages["catalog"], StorageConfig::File(f) if f.read_only));
    assert!(matches!(&c.storages["temp"], StorageConfig::Memory(_)));
    assert_eq!(c.eventlog.path, Path::new("STDERR"));
    assert_eq!(c.eventlog.level, instance::LogLevel::Error);
    assert_eq!(c.runner.program.as_ref().unwrap().words()[1], "FOO=$HOME");
    assert_eq!(c.runner.exit_codes.0, [0, 2, 3]);
    assert_eq!(c.runner.umask.0, 0o27);
    assert_eq!(c.environment["Mixed_Case"], "a b c");
}

#[test]
fn environment_substitution_and_show_on_a_zeo_conf() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address $(ZEO_TEST_ADDR)\n</zeo>\n<filestorage>\n  path $(ZEO_TEST_DIR)/Data.fs\n</filestorage>\n",
    )
    .unwrap();
    support::zodbctl_cmd()
        .env("ZEO_TEST_ADDR", "127.0.0.1:8765")
        .env("ZEO_TEST_DIR", "/srv/data")
        .arg("-C")
        .arg(&conf)
        .arg("show")
        .assert()
        .success()
        .stdout(predicates::str::contains("address = \"127.0.0.1:8765\""))
        .stdout(predicates::str::contains("path = \"/srv/data/Data.fs\""));
    let out = support::zodbctl()
        .env_remove("ZEO_TEST_ADDR")
        .env("ZEO_TEST_DIR", "/srv/data")
        .arg("-C")
        .arg(&conf)
        .arg("show")
        .output()
        .unwrap();
    let err = one_line_usage_error(&out);
    assert!(
        err.contains(&format!(
            "{}:2: address: environment variable ZEO_TEST_ADDR is not set",
            conf.display()
        )),
        "{err}"
    );
}

fn one_line_usage_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn bad_configurations_give_one_line_naming_the_place() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "etc/zeo.toml",
            "[zeo]\naddress = \"127.0.0.1:8100\"\nread-only = \n",
            "etc/zeo.toml:3",
        ),
        (
            "etc/zeo.toml",
            "[zeo]\naddress = \"127.0.0.1:8100\"\n\n[runner]\nbackof-limit = 3\n",
            "etc/zeo.toml:5: runner.backof-limit: unknown field `backof-limit`, expected one of",
        ),
        (
            "etc/zeo.toml",
            "[zeo]\naddress = \"localhost\"\n",
            "etc/zeo.toml:2: zeo.address: bad address \"localhost\"",
        ),
        (
            "etc/zeo.toml",
            "[storages.s]\ntype = \"tape\"\npath = \"x\"\n",
            "etc/zeo.toml:2: storages.s.type: unknown variant `tape`, expected `file` or `memory`",
        ),
        (
            "etc/client.toml",
            "[zeoclient]\nservers = [\"127.0.0.1:99999\"]\n",
            "etc/client.toml:2: zeoclient.servers: bad address",
        ),
        (
            "etc/zeo.conf",
            "<zeo>\n  address 8100\n  monitor-address 8101\n  frobnicate yes\n</zeo>\n",
            "etc/zeo.conf:4: frobnicate: not a known key in <zeo> (allowed: address,",
        ),
        (
            "etc/zeo.conf",
            "<zeo>\n  address 8100\n</zeo>\n<relstorage 1>\n</relstorage>\n",
            "etc/zeo.conf:4: <relstorage 1>: section type <relstorage> is not supported",
        ),
    ];
    for (file, text, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let out = support::run_in(tmp.path(), &["show"]);
        let err = one_line_usage_error(&out);
        let expected = format!("{}/{expected}", tmp.path().display());
        assert!(
            err.contains(&expected),
            "{file}:\n{err}\nexpected: {expected}"
        );
        // Nothing was written next to the bad file.
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }
}

#[test]
fn import_never_overwrites_and_reports_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 8100\n</zeo>\n<filestorage 1>\n  path /x/Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let out_file = tmp.path().join("zeo.toml");
    std::fs::write(&out_file, "# mine\n").unwrap();
    let out = support::zodbctl()
        .arg("import")
        .arg(&conf)
        .arg("-o")
        .arg(&out_file)
        .output()
        .unwrap();
    let err = one_line_usage_error(&out);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "# mine\n");

    std::fs::write(&conf, "<zeo>\n  address 8100\n</zeo>\n<filestorage 1>\n  path $UNDEFINED/Data.fs\n</filestorage>\n").unwrap();
    let new_file = tmp.path().join("new.toml");
    let out = support::zodbctl()
        .arg("import")
        .arg(&conf)
        .arg("-o")
        .arg(&new_file)
        .output()
        .unwrap();
    let err = one_line_usage_error(&out);
    assert!(err.contains(":5: path: $UNDEFINED is not defined"), "{err}");
    assert!(!new_file.exists());
}

#[test]
fn no_instance_here_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = support::zodbctl()
        .current_dir(tmp.path())
        .env_remove("ZODBCTL_INSTANCE")
        .arg("show")
        .output()
        .unwrap();
    let err = one_line_usage_error(&out);
    assert!(err.contains("not an instance"), "{err}");
    // $ZODBCTL_INSTANCE selects the instance.
    support::zodbctl_cmd()
        .args(["create", "server"])
        .arg(tmp.path().join("zeo"))
        .assert()
        .success();
    support::zodbctl_cmd()
        .current_dir(tmp.path())
        .env("ZODBCTL_INSTANCE", tmp.path().join("zeo"))
        .arg("show")
        .assert()
        .success()
        .stdout(predicates::str::contains("address = \"127.0.0.1:8100\""));
}
