//! Health and metrics (issue 11): `zodbctl check --nagios` against ZEO 6.2's own `zeo-nagios`
//! on zodbctl and runzeo; `/metrics` read by Python's `prometheus_client` parser while
//! Python clients load and commit; `/readyz` while a storage is still being indexed; and bad
//! input on the metrics port.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn zeo_nagios() -> PathBuf {
    support::python().with_file_name("zeo-nagios")
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run")
}

fn ours(args: &[&str]) -> Output {
    run(support::zodbctl().arg("check").arg("--nagios").args(args))
}

fn theirs(args: &[&str]) -> Output {
    run(Command::new(zeo_nagios()).args(args))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The perfdata names of a Nagios plugin's output (`name=value` items after `|`).
fn perf_names(out: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, line) in out.lines().enumerate() {
        let data = if i == 0 {
            match line.split_once('|') {
                Some((_, d)) => d,
                None => continue,
            }
        } else {
            line.trim_start_matches('|').trim()
        };
        for item in data.split_whitespace() {
            if let Some((n, _)) = item.split_once('=') {
                names.push(n.to_owned());
            }
        }
    }
    names
}

/// Same output and exit status from both plugins for `args`.
fn same(args: &[&str], what: &str) -> String {
    let (a, b) = (ours(args), theirs(args));
    assert_eq!(
        a.status.code(),
        b.status.code(),
        "{what}: exit codes differ\nzodbctl: {}\nzeo-nagios: {}",
        support::output_text(&a),
        support::output_text(&b)
    );
    stdout(&a)
}

/// Commit one object with Python ZODB through the server (creating the root on the way).
fn python_commit(addr: &str) {
    support::run_python(
        "import sys, ZEO, transaction\n\
         h, p = sys.argv[1].rsplit(':', 1)\n\
         db = ZEO.DB((h, int(p)), wait_timeout=30)\n\
         c = db.open(); r = c.root(); r['n'] = r.get('n', 0) + 1\n\
         transaction.commit(); db.close()\n",
        &[addr],
    );
}

fn nagios_scenarios(server: &mut support::Server, dir: &Path, what: &str) {
    let addr = server.addr();
    // Empty storage: a warning, with the same message.
    let out = same(&[&addr], &format!("{what}: empty"));
    assert_eq!(out.trim_end(), "Empty storage '1'", "{what}");
    assert_eq!(ours(&[&addr]).status.code(), Some(1));

    python_commit(&addr);
    let out = same(&[&addr], &format!("{what}: running"));
    assert_eq!(out.trim_end(), "OK", "{what}");
    assert_eq!(ours(&[&addr]).status.code(), Some(0));

    // -m: the same perfdata names; -s: the same rate names on the second run.
    let a = stdout(&ours(&[&addr, "-m"]));
    let b = stdout(&theirs(&[&addr, "-m"]));
    assert_eq!(perf_names(&a), perf_names(&b), "{what}: -m\n{a}\n{b}");
    assert_eq!(perf_names(&a), ["active_txns", "connections", "waiting"]);
    let (sa, sb) = (dir.join("ours.json"), dir.join("theirs.json"));
    let (sa, sb) = (support::path_str(&sa), support::path_str(&sb));
    for round in 0..2 {
        let a = ours(&[&addr, "-m", "-s", sa, "-u", "seconds"]);
        let b = theirs(&[&addr, "-m", "-s", sb, "-u", "seconds"]);
        assert_eq!(a.status.code(), b.status.code(), "{what}: -s round {round}");
        let (na, nb) = (perf_names(&stdout(&a)), perf_names(&stdout(&b)));
        assert_eq!(
            na,
            nb,
            "{what}: -s round {round}\n{}\n{}",
            stdout(&a),
            stdout(&b)
        );
        if round == 1 {
            assert!(na.contains(&"commits".to_owned()), "{na:?}");
        }
        // The status files' mtimes must differ from now for a rate.
        std::thread::sleep(Duration::from_millis(50));
    }

    // A storage the server does not serve: critical for both (zeo-nagios cannot even
    // connect to such an address).
    let unknown = format!("{addr}:nosuch");
    same(&[&unknown], &format!("{what}: unknown storage"));
    let o = ours(&[&unknown]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o).trim_end(), "Unknown storage 'nosuch'");

    // The named storage that exists answers as the whole server does.
    assert_eq!(ours(&[&format!("{addr}:1")]).status.code(), Some(0));

    // zeoup's form, read-only and with a probe commit.
    let o = run(support::zodbctl().args(["check", &addr, "--write"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: check --write\n{}",
        support::output_text(&o)
    );
    assert!(stdout(&o).contains("probe committed"), "{}", stdout(&o));
    let o = run(support::zodbctl().args(["check", &unknown]));
    assert_eq!(o.status.code(), Some(2), "{}", support::output_text(&o));

    // Stopped: the same "Can't connect [Errno 111] Connection refused".
    server.kill();
    let out = same(&[&addr], &format!("{what}: stopped"));
    assert!(
        out.starts_with("Can't connect [Errno 111]"),
        "{what}: {out}"
    );
    assert_eq!(out, stdout(&theirs(&[&addr])), "{what}: stopped");
    assert_eq!(ours(&[&addr]).status.code(), Some(2));
}

#[test]
fn check_nagios_agrees_with_zeo_nagios_on_zodbctl_and_runzeo() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("ours.fs");
    let mut server = support::Serve::in_dir(dir.path()).file(&fs).start();
    nagios_scenarios(&mut server, dir.path(), "zodbctl");

    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("theirs.fs");
    let mut server = support::RunZeo::in_dir(dir.path()).file(&fs).start();
    nagios_scenarios(&mut server, dir.path(), "runzeo");
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

const PROM_SCRIPT: &str = r#"
import sys, json, urllib.request, ZEO, transaction
from prometheus_client.parser import text_string_to_metric_families
h, p = sys.argv[1].rsplit(':', 1)
addr, port, n = (h, int(p)), sys.argv[2], int(sys.argv[3])

def scrape():
    text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get('storage', '1') == '1' and 'le' not in s.labels:
                out[s.name] = s.value
    return out

db = ZEO.DB(addr, wait_timeout=30)
c = db.open(); root = c.root()
root['x'] = 0; transaction.commit()
before = scrape()
for i in range(n):
    root['x'] = i + 1
    transaction.commit()
c.close()
# Cold loads: a new connection with an empty cache reads the root from the server.
db.close()
db = ZEO.DB(addr, wait_timeout=30)
db.open().root()['x']
after = scrape()
db.close()
print(json.dumps({'before': before, 'after': after}))
"#;

fn metrics_server(dir: &Path, fs: &Path) -> (support::Server, u16) {
    let port = support::free_port();
    let server = support::Serve::in_dir(dir)
        .file(fs)
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .start();
    (server, port)
}

#[test]
fn metrics_parse_and_count_python_clients() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    let (mut server, port) = metrics_server(dir.path(), &fs);
    let n = 7;
    let out = support::python_stdout(
        PROM_SCRIPT,
        &[&server.addr(), &port.to_string(), &n.to_string()],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("script JSON");
    let d = |name: &str| {
        v["after"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
            - v["before"][name].as_f64().unwrap_or(0.0)
    };
    assert_eq!(d("zeo_commits_total"), n as f64, "{v}");
    assert_eq!(d("zeo_commit_duration_seconds_count"), n as f64, "{v}");
    assert_eq!(d("zeo_commit_lock_hold_seconds_count"), n as f64, "{v}");
    assert!(d("zeo_stores_total") >= n as f64, "{v}");
    assert!(d("zeo_loads_total") >= 1.0, "{v}");
    assert!(d("zeo_received_bytes_total") > 0.0, "{v}");
    assert!(
        v["after"]["zodb_storage_size_bytes"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(v["after"]["zeo_up"], 1.0, "{v}");
    assert!(
        v["after"]["process_resident_memory_bytes"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{v}"
    );
    assert!(
        v["after"]["process_open_fds"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // The histograms' totals agree with the commit counter since the start.
    assert_eq!(
        v["after"]["zeo_commit_duration_seconds_count"],
        v["after"]["zeo_commits_total"]
    );
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);
    server.assert_healthy("after the scrapes");
}

#[test]
fn readyz_fails_while_a_storage_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("big.fs");
    support::make_datafs(&fs, "40", None);
    let _ = std::fs::remove_file(dir.path().join("big.fs.index"));
    let port = support::free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = support::zodbctl()
        .args(["serve", "-a", "127.0.0.1:0", "-f", support::path_str(&fs)])
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_not_ready = false;
    let mut ready = false;
    while Instant::now() < deadline {
        // Not listening yet (the thread starts first thing, but the process must start).
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            match http_get(port, "/readyz").0 {
                503 => saw_not_ready = true,
                200 => {
                    ready = true;
                    break;
                }
                other => panic!("/readyz answered {other}"),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        saw_not_ready,
        "never saw /readyz fail while indexing:\n{log}"
    );
    assert!(ready, "/readyz never passed:\n{log}");
}

#[test]
fn bad_input_on_the_metrics_port_leaves_zeo_serving() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    let (mut server, port) = metrics_server(dir.path(), &fs);
    let addr = server.addr();
    let zeo_ok = |step: &str| {
        let o = run(support::zodbctl().args(["check", &addr, "--timeout", "10s"]));
        // Empty storage: a warning, but the server answered every step.
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{step}: {}",
            support::output_text(&o)
        );
    };
    // A slow client holding a half-sent request, taken first and kept to the end.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    // Malformed requests.
    for junk in [
        &b"\x00\x01\x02\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"BREW /metrics HTCPCP/1.0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 4"), "{junk:?}: {reply}");
    }
    // A huge header.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let _ = s.write_all(&req);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    zeo_ok("after malformed requests");
    // Many parallel scrapes: each gets the page or a quick 503, none hangs.
    let scrapers: Vec<_> = (0..48)
        .map(|_| std::thread::spawn(move || http_get(port, "/metrics").0))
        .collect();
    zeo_ok("during parallel scrapes");
    for t in scrapers {
        let code = t.join().unwrap();
        assert!(code == 200 || code == 503, "{code}");
    }
    assert_eq!(http_get(port, "/metrics").0, 200);
    drop(slow);
    zeo_ok("at the end");
    server.assert_healthy("after bad input on the metrics port");
    server.assert_no_panic("after bad input on the metrics port");
}

#[test]
fn instance_check_and_status_figures() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("zeo");
    let zport = support::free_port();
    let mport = support::free_port();
    let o = run(support::zodbctl().args([
        "create",
        "server",
        support::path_str(&inst),
        "--address",
        &format!("127.0.0.1:{zport}"),
        "--metrics",
        &format!("127.0.0.1:{mport}"),
    ]));
    assert!(o.status.success(), "{}", support::output_text(&o));
    assert!(inst.join("bin/zeoup").exists() && inst.join("bin/zeo-nagios").exists());
    let toml = std::fs::read_to_string(inst.join("etc/zeo.toml")).unwrap();
    assert!(
        toml.contains(&format!("[metrics]\naddress = \"127.0.0.1:{mport}\"")),
        "{toml}"
    );

    // Not started: the manager is reported down, the server unreachable.
    let o = support::run_in(&inst, &["check"]);
    assert_eq!(o.status.code(), Some(2), "{}", support::output_text(&o));
    assert!(
        stdout(&o).contains("daemon manager not running"),
        "{}",
        stdout(&o)
    );

    let o = support::run_in(&inst, &["start"]);
    assert!(o.status.success(), "{}", support::output_text(&o));
    let result = std::panic::catch_unwind(|| {
        python_commit(&format!("127.0.0.1:{zport}"));
        std::fs::write(
            inst.join("var/Data.fs.pack.json"),
            format!(
                r#"{{"finished": {}}}"#,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    - 7200
            ),
        )
        .unwrap();
        // The thresholds at 0 keep the verdict independent of the host's free space (CI's
        // disk has been below the 10 % default); the disk line is still printed.
        let o = support::run_in(&inst, &["check", "--warn-disk", "0", "--crit-disk", "0"]);
        let text = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{}", support::output_text(&o));
        for want in [
            "program: running",
            "server: 127.0.0.1",
            "storage 1: last transaction",
            "disk 1:",
            "pack 1: last pack finished 2.0 h ago",
            "backup 1: no backup recorded",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
        let o = support::run_in(
            &inst,
            &[
                "check",
                "--json",
                "--warn-pack-age",
                "1h",
                "--warn-disk",
                "0",
                "--crit-disk",
                "0",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", support::output_text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["status"], "WARNING");
        // zeoup and zeo-nagios wrappers.
        let o = run(&mut Command::new(inst.join("bin/zeo-nagios")));
        assert_eq!(stdout(&o).trim_end(), "OK", "{}", support::output_text(&o));
        let o = run(&mut Command::new(inst.join("bin/zeoup")));
        assert_eq!(o.status.code(), Some(0), "{}", support::output_text(&o));
        // status: the server's figures.
        let o = support::run_in(&inst, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            v["server"]["storages"]["1"]["size"].as_u64().unwrap() > 0,
            "{v}"
        );
        assert!(
            v["server"]["storages"]["1"]["last_commit_age"]
                .as_f64()
                .is_some(),
            "{v}"
        );
        assert!(v["server"]["connections"].is_u64(), "{v}");
        let o = support::run_in(&inst, &["status", "-l"]);
        assert!(
            stdout(&o).contains("server: connections="),
            "{}",
            stdout(&o)
        );
        // The Prometheus endpoint from the configuration.
        assert_eq!(http_get(mport, "/readyz").0, 200);
    });
    let o = support::run_in(&inst, &["stop"]);
    assert!(o.status.success(), "{}", support::output_text(&o));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A stand-in for a server's admin socket: answers every `{"cmd": "status"}` with
/// `{"ok": true, "storages": …}` from `answer`, until the test ends.
fn fake_admin_socket(
    path: &Path,
    answer: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
) -> std::thread::JoinHandle<()> {
    use std::io::BufRead;
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut line = String::new();
            if std::io::BufReader::new(&s).read_line(&mut line).is_err() {
                continue;
            }
            let req: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
            assert_eq!(req["cmd"], "status", "{req}");
            let storages = answer.lock().unwrap().clone();
            let reply = serde_json::json!({"ok": true, "storages": storages});
            let _ = writeln!(s, "{reply}");
        }
    })
}

#[test]
fn check_judges_replication_from_the_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("zeo");
    let o = run(support::zodbctl().args([
        "create",
        "server",
        support::path_str(&inst),
        "--address",
        &format!("127.0.0.1:{}", support::free_port()),
    ]));
    assert!(o.status.success(), "{}", support::output_text(&o));
    std::fs::create_dir_all(inst.join("var")).unwrap();
    let replica = serde_json::json!({
        "role": "replica", "epoch": 1, "database": "d1", "end": 4096,
        "last_transaction": "03e5f0a1b2c3d4e5", "mode": "async", "on_timeout": "degrade",
        "degraded": false, "replicas": [],
        "primary": "127.0.0.1:8101", "connected": true, "phase": "streaming", "error": null,
        "lag_bytes": 2048, "lag_transactions": 3, "lag_seconds": 45.0, "in_sync": false,
        "last_heard_seconds": 0.4, "resyncs": 0
    });
    let answer = std::sync::Arc::new(std::sync::Mutex::new(
        serde_json::json!({"1": replica.clone()}),
    ));
    let _server = fake_admin_socket(&inst.join("var/zeo-admin.sock"), answer.clone());
    let verdict = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["check", "--json", "--warn-disk", "0", "--crit-disk", "0"];
        all.extend_from_slice(args);
        let o = support::run_in(&inst, &all);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", support::output_text(&o)));
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "replication 1")
            .cloned()
            .unwrap_or_else(|| panic!("no replication verdict: {v}"))
    };
    // Lagging 45 s: over the 30 s default, under 60 s.
    let v = verdict(&[]);
    assert_eq!(v["status"], "WARNING", "{v}");
    assert_eq!(
        v["message"],
        "replica of 127.0.0.1:8101, streaming, not in sync, lag 2.0 KiB / 3 txn / 45.0 s, epoch 1"
    );
    assert_eq!(v["value"]["warn_lag_seconds"], 30.0, "{v}");
    assert_eq!(v["value"]["status"]["lag_seconds"], 45.0, "{v}");
    assert_eq!(verdict(&["--warn-lag", "1m"])["status"], "OK");
    assert_eq!(verdict(&["--crit-lag", "40s"])["status"], "CRITICAL");
    // Refused by its primary.
    {
        let mut a = answer.lock().unwrap();
        a["1"]["phase"] = "refused".into();
        a["1"]["connected"] = false.into();
        a["1"]["error"] = "diverged: this replica has transactions the primary never had".into();
    }
    let v = verdict(&[]);
    assert_eq!(v["status"], "CRITICAL", "{v}");
    assert_eq!(
        v["message"],
        "primary 127.0.0.1:8101 refused this replica: diverged: this replica has transactions the primary never had"
    );
    // Text output: one line per replicated storage.
    let o = support::run_in(&inst, &["check", "--warn-disk", "0", "--crit-disk", "0"]);
    let text = stdout(&o);
    assert!(
        text.contains("CRITICAL zeo: replication 1: primary 127.0.0.1:8101 refused this replica"),
        "{text}"
    );
    // A sync primary without a replica in sync.
    *answer.lock().unwrap() = serde_json::json!({"1": {
        "role": "primary", "epoch": 2, "mode": "sync", "on_timeout": "degrade",
        "degraded": true, "replicas": []
    }});
    let v = verdict(&[]);
    assert_eq!(v["status"], "WARNING", "{v}");
    assert_eq!(
        v["message"],
        "sync replication degraded: no replica in sync (primary (sync, degraded), no replica connected, epoch 2)"
    );
    // The limits are checked.
    let o = support::run_in(&inst, &["check", "--warn-lag", "5m", "--crit-lag", "1m"]);
    assert_eq!(o.status.code(), Some(2), "{}", support::output_text(&o));
    assert!(support::output_text(&o).contains("--crit-lag"));
}
