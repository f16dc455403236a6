//! Replication (`docs/replication.md`) end to end: `zodbctl serve` primaries and replicas on
//! 127.0.0.1, real Python ZEO 6.2 clients (`tests/python/replication_*.py`), the admin socket
//! and `zodbctl promote` / `--resync`.
//!
//! * `replica_is_byte_identical_after_mixed_workload`: stores, an undo, an OOBTree with many
//!   keys, a 3 MB record and blob revisions through the primary; the replica's Data.fs is
//!   byte-identical, `zodbctl verify` passes on it, and Python's FileStorage reads the same
//!   contents (every blob revision included) from both copies.
//! * `empty_blob_reaches_streamed_and_resynchronised_replicas`: an empty blob file exists on
//!   a replica that streamed its transaction and on one that copied the primary in full.
//! * `read_only_client_on_replica_sees_commits`: a read-only ClientStorage on the replica's
//!   read-only address gets invalidations for the primary's commits; a writable one fails
//!   there; pack through the replica is refused; promotion while the primary streams too.
//! * `failover_sync_mode_clients_carry_on`: sync mode, 3 cycles of kill -9 of the primary,
//!   `zodbctl promote` of the replica, and a new replica (`--resync` of the old primary's
//!   directory); two long-running clients (one with read_only_fallback) keep committing
//!   without a restart, and every commit they were told succeeded is in the last primary.
//! * `replica_catches_up_in_bounded_memory_and_survives_kill_9`: a replica far behind catches
//!   up with a peak RSS far below the data size, and kill -9 during its catch-up (several
//!   times) never stops it from ending byte-identical.
//! * `pack_with_replica_attached_and_down`: a pack of the primary (records and blob
//!   revisions) reaches a connected replica and one that was down during it: same Data.fs,
//!   same blob files.
//! * `divergence_and_unrelated_database_are_refused`: a former primary that committed after
//!   the failover is refused as diverged (its file untouched) until `--resync`; a Data.fs of
//!   another database is refused as unrelated.
//! * `chained_replica_follows_and_a_returning_primary_is_fenced`: a replica of a replica stays
//!   byte-identical through the promotion of its own primary; the former primary, restarted
//!   with the promoted server among its peers, learns of the newer epoch and refuses writes.
//! * `forced_promotion_fences_a_primary_that_still_runs`: `promote` refuses while the primary
//!   streams; `--force` promotes and the old primary, told of the new epoch, refuses writes.

mod support;

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Serve, Server};

const WORKLOAD: &str = include_str!("python/replication_workload.py");
const FAILOVER: &str = include_str!("python/replication_failover.py");

/// How long a replica may take to catch up with a small database.
const SYNC_WAIT: Duration = Duration::from_secs(60);

/// The last `n` bytes of a log, for failure messages.
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A port no other node of this test binary got.
fn port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    for _ in 0..50 {
        let p = support::free_port();
        if used.insert(p) {
            return p;
        }
    }
    panic!("no free port");
}

/// One server's directory and addresses: a ZEO address (closed while a replica), a
/// read-only address, a replication address and an admin socket.
struct Node {
    name: &'static str,
    dir: PathBuf,
    zeo: u16,
    ro: u16,
    repl: u16,
}

impl Node {
    fn new(root: &Path, name: &'static str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        Node {
            name,
            dir,
            zeo: port(),
            ro: port(),
            repl: port(),
        }
    }

    fn datafs(&self) -> PathBuf {
        self.dir.join("Data.fs")
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.zeo)
    }

    fn ro_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ro)
    }

    fn repl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.repl)
    }

    /// `zodbctl serve` of this node with every replication option but `--replicate-from`.
    fn serve(&self, blobs: bool, mode: &str) -> Serve {
        let s = Serve::in_dir(&self.dir)
            .file(&self.datafs())
            .address(&self.addr())
            .arg("--replicate-to")
            .arg(self.repl_addr())
            .arg("--read-only-address")
            .arg(self.ro_addr())
            .arg("--replication-mode")
            .arg(mode)
            .arg("--admin-socket")
            .arg(self.sock());
        if blobs { s.blob_dir(&self.blobs()) } else { s }
    }

    fn primary(&self, blobs: bool, mode: &str) -> Server {
        self.serve(blobs, mode).start()
    }

    /// A replica of `from` (listening on its read-only address once `start` returns).
    fn replica(&self, from: &Node, blobs: bool, mode: &str, extra: &[&str]) -> Server {
        self.serve(blobs, mode)
            .arg("--replicate-from")
            .arg(from.repl_addr())
            .args(extra)
            .start()
    }

    /// Storage "1"'s replication status, if the admin socket answers.
    fn status(&self) -> Option<Value> {
        let v = support::admin(&self.sock(), &json!({"cmd": "status"})).ok()?;
        (v["ok"] == true).then(|| v["storages"]["1"].clone())
    }

    fn status_text(&self) -> String {
        match support::admin(&self.sock(), &json!({"cmd": "status"})) {
            Ok(v) => format!("{}: {v}", self.name),
            Err(e) => format!("{}: {e}", self.name),
        }
    }
}

/// Both nodes' status and the end of their logs, for failure messages.
fn both((pn, p): (&Node, &Server), (rn, r): (&Node, &Server)) -> String {
    format!(
        "{}\n{}\n--- {} log\n{}\n--- {} log\n{}",
        pn.status_text(),
        rn.status_text(),
        pn.name,
        tail(&p.logs(), 6000),
        rn.name,
        tail(&r.logs(), 6000)
    )
}

/// Poll the two nodes' status until `ok(primary, replica)` holds; panics after `limit` with
/// both statuses and logs.
fn wait_status(
    what: &str,
    (pn, p): (&Node, &Server),
    (rn, r): (&Node, &Server),
    limit: Duration,
    ok: impl Fn(&Value, &Value) -> bool,
) {
    let start = Instant::now();
    loop {
        if let (Some(ps), Some(rs)) = (pn.status(), rn.status())
            && ok(&ps, &rs)
        {
            return;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}\n{}", both((pn, p), (rn, r)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replica holds everything the primary holds and streams.
fn caught_up(p: &Value, r: &Value) -> bool {
    p["end"].as_u64().is_some()
        && p["end"] == r["end"]
        && r["phase"] == "streaming"
        && r["role"] == "replica"
}

fn wait_in_sync(pn: &Node, p: &Server, rn: &Node, r: &Server, limit: Duration) {
    wait_status("replica in sync", (pn, p), (rn, r), limit, caught_up);
}

/// The first difference between two files, like `cmp`; None when byte-identical.
fn cmp(a: &Path, b: &Path) -> Option<String> {
    let (mut fa, mut fb) = match (File::open(a), File::open(b)) {
        (Ok(fa), Ok(fb)) => (fa, fb),
        (ra, rb) => return Some(format!("open: {:?} {:?}", ra.err(), rb.err())),
    };
    let (la, lb) = (
        fa.metadata().map_or(0, |m| m.len()),
        fb.metadata().map_or(0, |m| m.len()),
    );
    let mut offset = 0u64;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(format!(
                "{} {} differ: byte {} (sizes {la} and {lb})",
                a.display(),
                b.display(),
                offset + i as u64 + 1
            ));
        }
        if na != nb {
            return Some(format!(
                "EOF on {} after byte {} (sizes {la} and {lb})",
                if na < nb { a.display() } else { b.display() },
                offset + n as u64
            ));
        }
        if n == 0 {
            return None;
        }
        offset += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

/// Wait until the replica is in sync and its Data.fs is byte-identical to the primary's
/// (a resynchronisation swaps the file in at its end: equal ends alone are not enough).
fn wait_identical(pn: &Node, p: &Server, rn: &Node, r: &Server, limit: Duration) {
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        wait_in_sync(pn, p, rn, r, left.max(Duration::from_secs(1)));
        let diff = cmp(&pn.datafs(), &rn.datafs());
        if diff.is_none() {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "the replica's Data.fs is not the primary's: {}\n{}",
                diff.unwrap_or_default(),
                both((pn, p), (rn, r))
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Python script of ours, which must succeed within `limit`; its standard output.
fn python(script: &str, args: &[&str], limit: Duration, servers: &[&Server]) -> String {
    let mut cmd = support::python_command(script, args);
    cmd.stdin(Stdio::null());
    let out = support::output_within(&mut cmd, limit);
    if !out.status.success() {
        let logs: String = servers
            .iter()
            .map(|s| format!("\n--- server log\n{}", tail(&s.logs(), 5000)))
            .collect();
        panic!(
            "python {:?} failed ({}):\n{}{logs}",
            &args[..args.len().min(3)],
            out.status,
            support::output_text(&out)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `zodbctl ARGS`, whatever its status.
fn zodbctl(args: &[&str]) -> Output {
    let mut cmd = support::zodbctl();
    cmd.args(args).stdin(Stdio::null());
    support::output_within(&mut cmd, Duration::from_secs(60))
}

/// `zodbctl promote --socket` of `node` (retried while the replica has not yet noticed that
/// its primary is gone, bounded); the last output.
fn promote(node: &Node, server: &Server) -> Output {
    let sock = node.sock();
    let start = Instant::now();
    loop {
        let out = zodbctl(&["promote", "--socket", support::path_str(&sock)]);
        if out.status.success() || start.elapsed() > Duration::from_secs(20) {
            assert!(
                out.status.success(),
                "zodbctl promote of {} failed: {}\n{}\n--- log\n{}",
                node.name,
                support::output_text(&out),
                node.status_text(),
                tail(&server.logs(), 6000)
            );
            return out;
        }
        eprintln!(
            "promote of {} refused for now: {}",
            node.name,
            support::output_text(&out).trim()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Wait until the replica no longer sees its (killed) primary.
fn wait_disconnected(node: &Node, server: &Server) {
    let ok = support::wait_until(Duration::from_secs(30), || {
        node.status().is_some_and(|s| s["connected"] == false)
    });
    assert!(
        ok,
        "{} still connected to its dead primary: {}\n{}",
        node.name,
        node.status_text(),
        tail(&server.logs(), 4000)
    );
}

/// The first line of a script's output that is a JSON object.
fn json_line(out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("no JSON in the output:\n{out}"))
}

#[test]
fn replica_is_byte_identical_after_mixed_workload() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let mut p = a.primary(true, "async");
    let mut r = b.replica(&a, true, "async", &[]);
    let client_view = json_line(&python(
        WORKLOAD,
        &["workload", &a.addr()],
        Duration::from_secs(120),
        &[&p, &r],
    ));
    wait_in_sync(&a, &p, &b, &r, SYNC_WAIT);
    if let Some(diff) = cmp(&a.datafs(), &b.datafs()) {
        panic!(
            "not byte-identical: {diff}\n--- replica log\n{}",
            tail(&r.logs(), 6000)
        );
    }
    // The primary sees its replica acknowledge everything.
    wait_status(
        "the primary sees the replica's acknowledgement",
        (&a, &p),
        (&b, &r),
        Duration::from_secs(20),
        |ps, _| {
            ps["replicas"]
                .as_array()
                .and_then(|l| l.first())
                .is_some_and(|x| x["acked"] == ps["end"] && x["in_sync"] == true)
        },
    );
    let rs = b.status().expect("replica status");
    assert_eq!(rs["role"], "replica", "{rs}");
    assert_eq!(rs["lag_bytes"], 0, "{rs}");
    r.stop();
    p.stop();
    assert_eq!(cmp(&a.datafs(), &b.datafs()), None);
    let out = zodbctl(&["verify", support::path_str(&b.datafs())]);
    assert!(
        out.status.success(),
        "zodbctl verify of the replica's copy: {}",
        support::output_text(&out)
    );
    let describe = |n: &Node| {
        json_line(&python(
            WORKLOAD,
            &[
                "describe",
                support::path_str(&n.datafs()),
                support::path_str(&n.blobs()),
            ],
            Duration::from_secs(90),
            &[],
        ))
    };
    let (dp, dr) = (describe(&a), describe(&b));
    for (k, v) in client_view.as_object().expect("object") {
        assert_eq!(
            &dp[k], v,
            "the primary's {k} differs from what the client saw"
        );
        assert_eq!(
            &dr[k], v,
            "the replica's {k} differs from what the client saw"
        );
    }
    assert_eq!(dp["tids"], dr["tids"], "different transactions");
    // Every blob revision of the primary (an empty first revision included) is on the
    // replica, with the same content.
    let revisions = |d: &Value| -> Vec<String> {
        d["blob_revisions"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (rp, rr) = (revisions(&dp), revisions(&dr));
    let missing: Vec<&String> = rp.iter().filter(|x| !rr.contains(x)).collect();
    assert!(
        missing.is_empty(),
        "blob revisions (oid@tid=sha256 of the file) of the primary that the replica's blob \
         directory lacks: {missing:?} (e3b0c442... is the sha256 of an empty file); the replica \
         has {rr:?}"
    );
    assert!(rp.len() >= 8, "expected 8 blob revisions: {rp:?}");
    assert_eq!(
        dp, dr,
        "Python reads different contents from the two copies"
    );
}

#[test]
fn empty_blob_reaches_streamed_and_resynchronised_replicas() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        Node::new(root.path(), "a"),
        Node::new(root.path(), "b"),
        Node::new(root.path(), "c"),
    );
    let p = a.primary(true, "async");
    let r = b.replica(&a, true, "async", &[]);
    wait_in_sync(&a, &p, &b, &r, SYNC_WAIT);
    python(
        WORKLOAD,
        &["emptyblob", &a.addr()],
        Duration::from_secs(60),
        &[&p, &r],
    );
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    // A replica that starts afterwards gets a full copy of the file and blob directory.
    let fresh = c.replica(&a, true, "async", &[]);
    wait_identical(&a, &p, &c, &fresh, SYNC_WAIT);
    let primary = blob_files(&a.blobs());
    assert_eq!(primary.len(), 2, "{:?}", primary.keys());
    let lacks = |n: &Node| -> Vec<String> {
        let have = blob_files(&n.blobs());
        primary
            .keys()
            .filter(|k| !have.contains_key(*k))
            .map(|k| format!("{k} ({} bytes)", primary[k].len()))
            .collect()
    };
    let (streamed, copied) = (lacks(&b), lacks(&c));
    assert!(
        streamed.is_empty() && copied.is_empty(),
        "blob files of the primary missing on the streamed replica: {streamed:?}; on the \
         fully resynchronised replica: {copied:?}"
    );
    wait_same_blobs(&a, &b, &r);
    wait_same_blobs(&a, &c, &fresh);
}

#[test]
fn read_only_client_on_replica_sees_commits() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let p = a.primary(false, "async");
    let r = b.replica(&a, false, "async", &[]);
    // The replica's writable address is closed until it is promoted.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", b.zeo)).is_err(),
        "a replica listens on its writable address"
    );
    let out = python(
        WORKLOAD,
        &["readonly", &a.addr(), &b.ro_addr()],
        Duration::from_secs(90),
        &[&p, &r],
    );
    eprintln!("{}", out.trim());
    assert!(out.contains("ok invalidated to 3"), "{out}");
    assert!(out.contains("ok pack refused"), "{out}");
    assert!(
        out.contains("ok writable client refused") || out.contains("ok writable commit refused"),
        "{out}"
    );
    // zodbctl pack through the replica's address is refused too, and changes nothing.
    wait_in_sync(&a, &p, &b, &r, SYNC_WAIT);
    let before = std::fs::read(b.datafs()).expect("replica Data.fs");
    let out = zodbctl(&["pack", &b.ro_addr()]);
    eprintln!(
        "zodbctl pack on the replica: {}",
        support::output_text(&out)
    );
    assert!(
        !out.status.success(),
        "zodbctl pack through the replica succeeded: {}",
        support::output_text(&out)
    );
    assert!(
        std::fs::read(b.datafs()).expect("replica Data.fs") == before,
        "the replica's file changed"
    );
    // Promotion while the primary is alive and streaming is refused (without --force).
    let out = zodbctl(&["promote", "--socket", support::path_str(&b.sock())]);
    assert!(
        !out.status.success(),
        "promote while the primary streams succeeded: {}",
        support::output_text(&out)
    );
    assert_eq!(b.status().expect("status")["role"], "replica");
    r.assert_no_panic("end");
    p.assert_no_panic("end");
}

/// Lines `ack NAME VALUE TID` a writer printed so far.
fn ack_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ack "))
        .count()
}

struct Writer {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// A writer still running when the test fails is killed (it would commit for minutes).
impl Drop for Writer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Writer {
    fn report(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let errs: Vec<&str> = out.lines().filter(|l| !l.starts_with("ack ")).collect();
        format!(
            "{}: {} acks; other lines (last 20): {:?}\n--- stderr\n{}",
            self.out.display(),
            ack_count(&self.out),
            &errs[errs.len().saturating_sub(20)..],
            tail(
                &std::fs::read_to_string(&self.err).unwrap_or_default(),
                3000
            )
        )
    }
}

/// The servers' log tails, for failure messages.
fn server_logs(servers: &[&Server]) -> String {
    servers
        .iter()
        .map(|s| format!("\n--- server log\n{}", tail(&s.logs(), 5000)))
        .collect()
}

/// Wait until every writer has `more` acknowledged commits beyond `from`; panics (with the
/// writers' output and the server's log) if a writer exits or `limit` passes.
fn wait_acks(
    writers: &mut [Writer],
    from: &[usize],
    more: usize,
    limit: Duration,
    logs: &[&Server],
) {
    let start = Instant::now();
    loop {
        let mut all = true;
        for (i, w) in writers.iter_mut().enumerate() {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "writer {i} exited ({status}): {}{}",
                    w.report(),
                    server_logs(logs)
                );
            }
            all &= ack_count(&w.out) >= from[i] + more;
        }
        if all {
            return;
        }
        if start.elapsed() > limit {
            let reports: Vec<String> = writers.iter().map(Writer::report).collect();
            panic!(
                "writers did not commit {more} more within {limit:?}:\n{}{}",
                reports.join("\n"),
                server_logs(logs)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failover_sync_mode_clients_carry_on() {
    const CYCLES: usize = 3;
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = [Node::new(root.path(), "a"), Node::new(root.path(), "b")];
    let mut servers: [Option<Server>; 2] = [None, None];
    servers[0] = Some(nodes[0].primary(false, "sync"));
    servers[1] = Some(nodes[1].replica(&nodes[0], false, "sync", &[]));
    {
        let (p, r) = (servers[0].as_ref().unwrap(), servers[1].as_ref().unwrap());
        wait_in_sync(&nodes[0], p, &nodes[1], r, SYNC_WAIT);
        python(
            FAILOVER,
            &["setup", &nodes[0].addr(), "fallback", "plain"],
            Duration::from_secs(60),
            &[p, r],
        );
    }
    let stop_file = root.path().join("stop");
    let (a, b) = (&nodes[0], &nodes[1]);
    let specs: [(&str, &str, Vec<String>); 2] = [
        (
            "fallback",
            "1",
            vec![a.addr(), b.addr(), a.ro_addr(), b.ro_addr()],
        ),
        ("plain", "0", vec![a.addr(), b.addr()]),
    ];
    let mut writers: Vec<Writer> = specs
        .iter()
        .map(|(name, fallback, addrs)| {
            let out = root.path().join(format!("writer-{name}.out"));
            let err = root.path().join(format!("writer-{name}.err"));
            let mut args = vec![
                "write",
                name,
                fallback,
                "600",
                support::path_str(&stop_file),
            ];
            args.extend(addrs.iter().map(String::as_str));
            let child = support::python_command(FAILOVER, &args)
                .stdin(Stdio::null())
                .stdout(File::create(&out).expect("writer out"))
                .stderr(File::create(&err).expect("writer err"))
                .spawn()
                .expect("spawn a writer");
            Writer { child, out, err }
        })
        .collect();
    let mut primary = 0;
    let mut failover_times = Vec::new();
    for cycle in 0..CYCLES {
        let replica = 1 - primary;
        let counts: Vec<usize> = writers.iter().map(|w| ack_count(&w.out)).collect();
        wait_acks(
            &mut writers,
            &counts,
            10,
            Duration::from_secs(60),
            &servers.iter().flatten().collect::<Vec<_>>(),
        );
        {
            let (p, r) = (
                servers[primary].as_ref().unwrap(),
                servers[replica].as_ref().unwrap(),
            );
            wait_status(
                "replica streaming before the kill",
                (&nodes[primary], p),
                (&nodes[replica], r),
                Duration::from_secs(30),
                |_, rs| rs["phase"] == "streaming" && rs["connected"] == true,
            );
        }
        let mut dead = servers[primary].take().unwrap();
        dead.kill();
        let killed = Instant::now();
        let at_kill: Vec<usize> = writers.iter().map(|w| ack_count(&w.out)).collect();
        eprintln!(
            "cycle {cycle}: killed {} at acks {at_kill:?}",
            nodes[primary].name
        );
        {
            let r = servers[replica].as_ref().unwrap();
            wait_disconnected(&nodes[replica], r);
            let out = promote(&nodes[replica], r);
            eprintln!("cycle {cycle}: {}", support::output_text(&out).trim());
            let st = nodes[replica].status().expect("status after promote");
            assert_eq!(st["role"], "primary", "{st}");
        }
        wait_acks(
            &mut writers,
            &at_kill,
            5,
            Duration::from_secs(60),
            &servers.iter().flatten().collect::<Vec<_>>(),
        );
        failover_times.push(killed.elapsed());
        eprintln!(
            "cycle {cycle}: both writers committed on {} {:?} after the kill",
            nodes[replica].name,
            killed.elapsed()
        );
        if cycle + 1 < CYCLES {
            // The old primary's directory becomes a replica of the new primary.
            let fresh = nodes[primary].replica(&nodes[replica], false, "sync", &["--resync"]);
            let p = servers[replica].as_ref().unwrap();
            wait_status(
                "the new replica in sync",
                (&nodes[replica], p),
                (&nodes[primary], &fresh),
                Duration::from_secs(60),
                |_, rs| rs["in_sync"] == true,
            );
            servers[primary] = Some(fresh);
        }
        primary = replica;
    }
    std::fs::write(&stop_file, b"stop").expect("stop file");
    for w in &mut writers {
        support::wait_child(&mut w.child, Duration::from_secs(150));
        let out = std::fs::read_to_string(&w.out).unwrap_or_default();
        assert!(
            out.contains("\ndone "),
            "writer did not finish: {}",
            w.report()
        );
    }
    for w in &writers {
        let out = std::fs::read_to_string(&w.out).unwrap_or_default();
        let mut kinds = std::collections::BTreeMap::new();
        for l in out.lines().filter(|l| l.starts_with("err ")) {
            *kinds
                .entry(l.split_whitespace().nth(2).unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
        let done = out.lines().find(|l| l.starts_with("done ")).unwrap_or("");
        eprintln!("writer: {done} (acks, errors); retried errors by type: {kinds:?}");
        // Sync mode: no new primary is ever behind what a client has seen.
        let err = std::fs::read_to_string(&w.err).unwrap_or_default();
        assert!(
            !err.contains("newer than server"),
            "a client found the new primary behind its cache: {}",
            w.report()
        );
    }
    eprintln!("failover times: {failover_times:?}");
    let mut last = servers[primary].take().unwrap();
    last.stop();
    let files: Vec<String> = writers
        .iter()
        .map(|w| w.out.display().to_string())
        .collect();
    let datafs = nodes[primary].datafs();
    let mut args = vec!["check", support::path_str(&datafs)];
    args.extend(files.iter().map(String::as_str));
    let out = python(FAILOVER, &args, Duration::from_secs(90), &[&last]);
    eprintln!("{}", out.trim());
}

/// Peak resident set (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load(node: &Node, mb: u64, servers: &[&Server]) {
    let out = python(
        WORKLOAD,
        &["load", &node.addr(), &mb.to_string(), "4"],
        Duration::from_secs(240),
        servers,
    );
    eprintln!("{}", out.trim());
}

#[test]
fn replica_catches_up_in_bounded_memory_and_survives_kill_9() {
    const FIRST_MB: u64 = 160;
    const SECOND_MB: u64 = 100;
    const PEAK_LIMIT: u64 = 200 << 20;
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let p = a.primary(false, "async");
    let mut r = b.replica(&a, false, "async", &[]);
    load(&a, 4, &[&p, &r]);
    wait_in_sync(&a, &p, &b, &r, SYNC_WAIT);
    r.kill();
    load(&a, FIRST_MB, &[&p]);
    let behind = a.status().expect("primary status")["end"]
        .as_u64()
        .unwrap_or(0);
    let r_end = std::fs::metadata(b.datafs()).map_or(0, |m| m.len());
    eprintln!("replica at {r_end}, primary at {behind}");
    assert!(behind > r_end + (FIRST_MB << 20) * 9 / 10);
    // Catch up, watching its peak RSS.
    let started = Instant::now();
    let mut r = b.replica(&a, false, "async", &[]);
    let mut peak = 0;
    let limit = Duration::from_secs(180);
    loop {
        peak = peak.max(peak_rss(r.pid()).unwrap_or(0));
        if let (Some(ps), Some(rs)) = (a.status(), b.status())
            && caught_up(&ps, &rs)
        {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "no catch-up within {limit:?}: {}\n--- replica log\n{}",
            b.status_text(),
            tail(&r.logs(), 6000)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peak = peak.max(peak_rss(r.pid()).unwrap_or(0));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "caught up {} MB in {secs:.1} s ({:.1} MB/s), replica peak RSS {} MB",
        (behind - r_end) >> 20,
        (behind - r_end) as f64 / 1048576.0 / secs,
        peak >> 20
    );
    assert!(
        peak < PEAK_LIMIT,
        "replica peak RSS {} MB while catching up {} MB",
        peak >> 20,
        (behind - r_end) >> 20
    );
    assert_eq!(cmp(&a.datafs(), &b.datafs()), None);

    // Round two: kill -9 during the catch-up, several times.
    r.kill();
    load(&a, SECOND_MB, &[&p]);
    let target = a.status().expect("primary status")["end"]
        .as_u64()
        .unwrap_or(0);
    let mut kills = 0;
    for round in 0..4 {
        let from = std::fs::metadata(b.datafs()).map_or(0, |m| m.len());
        let mut r = b.replica(&a, false, "async", &[]);
        // Let it make some progress, then kill it mid-way (unless it already caught up).
        let progressed = support::wait_until(Duration::from_secs(60), || {
            b.status()
                .and_then(|s| s["end"].as_u64())
                .is_some_and(|e| e > from + (4 << 20) || e >= target)
        });
        assert!(
            progressed,
            "round {round}: no progress from byte {from}: {}\n{}",
            b.status_text(),
            tail(&r.logs(), 6000)
        );
        let end = b.status().and_then(|s| s["end"].as_u64()).unwrap_or(0);
        if end >= target {
            eprintln!("round {round}: caught up before the kill");
            break;
        }
        r.kill();
        kills += 1;
        eprintln!("round {round}: killed the replica at about byte {end} of {target}");
    }
    let r = b.replica(&a, false, "async", &[]);
    wait_identical(&a, &p, &b, &r, Duration::from_secs(120));
    eprintln!("{kills} kills during the catch-up; byte-identical at the end");
    assert!(kills >= 1, "the replica caught up before any kill");
    r.assert_no_panic("end");
    p.assert_no_panic("end");
}

#[test]
fn pack_with_replica_attached_and_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let p = a.primary(true, "async");
    let mut r = b.replica(&a, true, "async", &[]);
    for (what, rounds) in [("garbage", "15"), ("blobs", "4")] {
        python(
            WORKLOAD,
            &[what, &a.addr(), rounds],
            Duration::from_secs(90),
            &[&p, &r],
        );
    }
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    wait_same_blobs(&a, &b, &r);
    let before = std::fs::metadata(a.datafs()).expect("Data.fs").len();
    let blobs_before = blob_files(&a.blobs()).len();
    let out = zodbctl(&["pack", &a.addr()]);
    assert!(
        out.status.success(),
        "zodbctl pack: {}\n{}",
        support::output_text(&out),
        tail(&p.logs(), 4000)
    );
    let after = std::fs::metadata(a.datafs()).expect("Data.fs").len();
    assert!(
        after < before,
        "the pack removed nothing: {before} -> {after}"
    );
    let blobs_after = blob_files(&a.blobs()).len();
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    wait_same_blobs(&a, &b, &r);
    eprintln!(
        "attached replica identical after the pack ({before} -> {after} bytes, \
         {blobs_before} -> {blobs_after} blob files)"
    );
    // The replica is down while the primary commits and packs again.
    r.stop();
    for (what, rounds) in [("garbage", "10"), ("blobs", "3")] {
        python(
            WORKLOAD,
            &[what, &a.addr(), rounds],
            Duration::from_secs(90),
            &[&p],
        );
    }
    let out = zodbctl(&["pack", &a.addr()]);
    assert!(out.status.success(), "{}", support::output_text(&out));
    let r = b.replica(&a, true, "async", &[]);
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    wait_same_blobs(&a, &b, &r);
    // And it streams again afterwards.
    python(
        WORKLOAD,
        &["blobs", &a.addr(), "2"],
        Duration::from_secs(90),
        &[&p, &r],
    );
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    wait_same_blobs(&a, &b, &r);
    r.assert_no_panic("end");
    p.assert_no_panic("end");
}

/// The `.blob` files under a blob directory (relative path → content).
fn blob_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if e.file_name() != "tmp" {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "blob") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Wait (bounded) until the replica's blob files are the primary's, same paths and bytes.
fn wait_same_blobs(pn: &Node, rn: &Node, r: &Server) {
    let same = support::wait_until(Duration::from_secs(15), || {
        blob_files(&pn.blobs()) == blob_files(&rn.blobs())
    });
    if !same {
        let (bp, br) = (blob_files(&pn.blobs()), blob_files(&rn.blobs()));
        let only_p: Vec<&String> = bp.keys().filter(|k| !br.contains_key(*k)).collect();
        let only_r: Vec<&String> = br.keys().filter(|k| !bp.contains_key(*k)).collect();
        let differ: Vec<&String> = bp
            .iter()
            .filter(|(k, v)| br.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k)
            .collect();
        panic!(
            "blob directories differ: only on the primary {only_p:?}, only on the replica \
             {only_r:?}, different content {differ:?}\n--- replica log\n{}",
            tail(&r.logs(), 5000)
        );
    }
}

/// Wait until `node` (a replica) reports a refusal; its status.
fn wait_refused(node: &Node, server: &Server) -> Value {
    let mut last = Value::Null;
    let ok = support::wait_until(Duration::from_secs(30), || {
        last = node.status().unwrap_or(Value::Null);
        last["phase"] == "refused"
    });
    assert!(
        ok,
        "{} was not refused: {last}\n--- log\n{}",
        node.name,
        tail(&server.logs(), 6000)
    );
    last
}

#[test]
fn divergence_and_unrelated_database_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let mut p = a.primary(false, "async");
    let r = b.replica(&a, false, "async", &[]);
    python(
        WORKLOAD,
        &["garbage", &a.addr(), "3"],
        Duration::from_secs(90),
        &[&p, &r],
    );
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    p.kill();
    wait_disconnected(&b, &r);
    promote(&b, &r);
    python(
        WORKLOAD,
        &["garbage", &b.addr(), "1"],
        Duration::from_secs(90),
        &[&r],
    );
    // The old primary, alone on its file, goes on writing.
    let mut alone = Serve::in_dir(&a.dir)
        .file(&a.datafs())
        .address(&a.addr())
        .arg("--admin-socket")
        .arg(a.dir.join("alone.sock"))
        .start();
    python(
        WORKLOAD,
        &["garbage", &a.addr(), "2"],
        Duration::from_secs(90),
        &[&alone],
    );
    alone.stop();
    let diverged = std::fs::read(a.datafs()).expect("old primary's Data.fs");
    // As a replica of the new primary: refused as diverged, its file untouched.
    let mut old = a.replica(&b, false, "async", &[]);
    let st = wait_refused(&a, &old);
    let error = st["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("diverged"), "{st}");
    eprintln!("diverged former primary: {}", st["error"]);
    assert!(old.log().contains("diverged"), "{}", old.log());
    assert!(
        r.log().contains("diverged"),
        "the primary's log: {}",
        r.log()
    );
    assert!(std::fs::read(a.datafs()).expect("Data.fs") == diverged);
    // Promotion of a refused replica is refused too (without --force).
    let out = zodbctl(&["promote", "--socket", support::path_str(&a.sock())]);
    assert!(!out.status.success(), "{}", support::output_text(&out));
    assert!(std::fs::read(a.datafs()).expect("Data.fs") == diverged);
    old.stop();
    // With --resync it becomes a copy.
    let old = a.replica(&b, false, "async", &["--resync"]);
    wait_identical(&b, &r, &a, &old, SYNC_WAIT);
    old.assert_no_panic("after the resync");

    // A database created separately (Python's FileStorage, no replication state).
    let c = Node::new(root.path(), "c");
    support::make_datafs(&c.datafs(), "1", None);
    let unrelated = std::fs::read(c.datafs()).expect("unrelated Data.fs");
    let other = c.replica(&b, false, "async", &[]);
    let st = wait_refused(&c, &other);
    let error = st["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("unrelated") || error.contains("not a copy"),
        "{st}"
    );
    eprintln!("unrelated Data.fs: {}", st["error"]);
    assert!(std::fs::read(c.datafs()).expect("Data.fs") == unrelated);
    // `zodbctl resync` on the running refused replica discards its copy.
    let out = zodbctl(&["resync", "--socket", support::path_str(&c.sock())]);
    assert!(
        out.status.success(),
        "zodbctl resync: {}",
        support::output_text(&out)
    );
    wait_identical(&b, &r, &c, &other, SYNC_WAIT);
    // Another zodbctl database (its own replication state).
    let d = Node::new(root.path(), "d");
    let mut own = d.primary(false, "async");
    python(
        WORKLOAD,
        &["garbage", &d.addr(), "1"],
        Duration::from_secs(90),
        &[&own],
    );
    own.stop();
    let other_db = std::fs::read(d.datafs()).expect("Data.fs");
    let other = d.replica(&b, false, "async", &[]);
    let st = wait_refused(&d, &other);
    assert!(
        st["error"]
            .as_str()
            .is_some_and(|e| e.contains("unrelated")),
        "{st}"
    );
    assert!(std::fs::read(d.datafs()).expect("Data.fs") == other_db);
    r.assert_no_panic("end");
}

/// A writable registration on `addr` (a short script): true when it succeeds.
fn can_register_writable(addr: &str) -> bool {
    let script = r#"
import sys
from ZEO.ClientStorage import ClientStorage
host, port = sys.argv[1].rsplit(":", 1)
try:
    st = ClientStorage((host, int(port)), wait_timeout=5)
    print("writable" if not st.isReadOnly() else "read-only")
    st.close()
except Exception as e:
    print("refused: %s: %s" % (type(e).__name__, e))
"#;
    let out = support::output_within(
        &mut support::python_command(script, &[addr]),
        Duration::from_secs(60),
    );
    String::from_utf8_lossy(&out.stdout).trim() == "writable"
}

#[test]
fn chained_replica_follows_and_a_returning_primary_is_fenced() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        Node::new(root.path(), "a"),
        Node::new(root.path(), "b"),
        Node::new(root.path(), "c"),
    );
    let mut p = a.primary(false, "async");
    let r1 = b.replica(&a, false, "async", &["--peer", &a.repl_addr()]);
    // A replica of the replica.
    let r2 = c.replica(&b, false, "async", &[]);
    python(
        WORKLOAD,
        &["garbage", &a.addr(), "2"],
        Duration::from_secs(90),
        &[&p, &r1, &r2],
    );
    wait_identical(&a, &p, &b, &r1, SYNC_WAIT);
    wait_identical(&a, &p, &c, &r2, SYNC_WAIT);

    // The primary is lost; its replica is promoted; the chained replica keeps following it.
    p.kill();
    wait_disconnected(&b, &r1);
    promote(&b, &r1);
    assert!(can_register_writable(&b.addr()), "{}", b.status_text());
    python(
        WORKLOAD,
        &["garbage", &b.addr(), "1"],
        Duration::from_secs(90),
        &[&r1, &r2],
    );
    wait_identical(&b, &r1, &c, &r2, SYNC_WAIT);
    assert_eq!(b.status().expect("status")["epoch"], 2);

    // The former primary comes back as a primary, with the promoted server among its
    // peers: it learns of epoch 2 before accepting anyone, and refuses writes.
    let before = std::fs::read(a.datafs()).expect("Data.fs");
    let back = a
        .serve(false, "async")
        .arg("--peer")
        .arg(b.repl_addr())
        .start();
    let fenced = support::wait_until(Duration::from_secs(30), || {
        a.status().is_some_and(|s| s["role"] == "fenced")
    });
    assert!(fenced, "{}\n{}", a.status_text(), tail(&back.logs(), 4000));
    let st = a.status().expect("status");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or_default()
            .contains("newer epoch"),
        "{st}"
    );
    assert!(!can_register_writable(&a.addr()), "{}", a.status_text());
    assert!(std::fs::read(a.datafs()).expect("Data.fs") == before);
    // The new primary goes on taking writes, and its chained replica follows.
    python(
        WORKLOAD,
        &["garbage", &b.addr(), "1"],
        Duration::from_secs(90),
        &[&r1, &r2],
    );
    wait_identical(&b, &r1, &c, &r2, SYNC_WAIT);
    for s in [&back, &r1, &r2] {
        s.assert_no_panic("chaining and fencing");
    }
}

#[test]
fn forced_promotion_fences_a_primary_that_still_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Node::new(root.path(), "a"), Node::new(root.path(), "b"));
    let p = a.primary(false, "async");
    let r = b.replica(&a, false, "async", &[]);
    python(
        WORKLOAD,
        &["garbage", &a.addr(), "1"],
        Duration::from_secs(90),
        &[&p, &r],
    );
    wait_identical(&a, &p, &b, &r, SYNC_WAIT);
    // Without --force: refused, the primary is alive.
    let sock = b.sock();
    let out = zodbctl(&["promote", "--socket", support::path_str(&sock)]);
    assert!(!out.status.success(), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("alive"),
        "{}",
        support::output_text(&out)
    );
    // With --force: the replica is the primary, and it tells the old one, which fences.
    let out = zodbctl(&["promote", "--force", "--socket", support::path_str(&sock)]);
    assert!(out.status.success(), "{}", support::output_text(&out));
    let fenced = support::wait_until(Duration::from_secs(20), || {
        a.status().is_some_and(|s| s["role"] == "fenced")
    });
    assert!(fenced, "{}\n{}", a.status_text(), tail(&p.logs(), 4000));
    assert!(!can_register_writable(&a.addr()), "{}", a.status_text());
    assert!(can_register_writable(&b.addr()), "{}", b.status_text());
    for s in [&p, &r] {
        s.assert_no_panic("forced promotion");
    }
}
