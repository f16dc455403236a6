#!/usr/bin/env python3
"""Replication figures for `zodbctl serve` (docs/replication.md): commit latency without
replication, with an async and with a sync replica; a replica's catch-up throughput next to
`cp` of the same file; failover time.

    cargo build --release
    target/pyenv/bin/python scripts/bench-replication.py
    target/pyenv/bin/python scripts/bench-replication.py --quick      # a check of the script
    target/pyenv/bin/python scripts/bench-replication.py --zodbctl target/debug/zodbctl --quick

Run it with the test venv's Python (tests/requirements.txt: ZODB 6.4, ZEO 6.2; `cargo test
--test python_env` creates it). zodbctl is target/release/zodbctl when it exists (else
target/debug/zodbctl), or --zodbctl. Every server listens on 127.0.0.1 (ports picked free),
in --workdir (default target/bench-replication, emptied first; the Data.fs files live
there, on the real disk: fsync counts). Every server this script starts is killed when it
exits (normally, on an exception, on SIGINT/SIGTERM).

(a) latency: one ZEO client commits --commits small transactions (one PersistentMapping
    changed each), each timed around transaction.commit(); p50/p99/mean and commits/s, for
    a primary alone ("none"), a primary with one replica in --replication-mode async and in
    sync. Same run, same machine, one after the other. Each phase is bounded by
    --max-seconds.
(b) catch-up: a primary gets --catchup-mb MB of incompressible --record-mb records while no
    replica runs; then a replica starts on an empty directory (a full copy) and the time
    until its admin-socket status shows the primary's end is measured: MB/s. Then the replica
    is stopped, the primary takes as much again, and the replica restarts and catches up by
    streaming the new transactions (the path of a replica that was down): MB/s. Next to it, `cp` of the
    same Data.fs with the page cache warm (the file read once before), without and with an
    fsync of the copy: MB/s, and the ratio replica/cp.
(c) failover: sync mode, --cycles cycles: a client with read_only_fallback (listing both
    servers' writable and read-only addresses) commits in a loop in a subprocess; the
    primary is killed with SIGKILL; the replica is promoted with `zodbctl promote --socket`
    as soon as its status shows the link down; the time from the kill to the client's first
    acknowledged commit is the failover time (median, min, max), with the promote step's own
    time. The old primary's directory comes back as a replica (--resync) for the next cycle.

--quick: --commits 200, --catchup-mb 40, --cycles 2. Results: a table on stdout and
workdir/results.json.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PROCS = []


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.wait(timeout=10)
            except Exception:
                pass


def on_signal(signum, frame):
    cleanup()
    sys.exit(128 + signum)


def free_port():
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        used = getattr(free_port, "used", set())
        if port not in used:
            used.add(port)
            free_port.used = used
            return port
    raise RuntimeError("no free port")


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def admin(sock, req, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return json.loads(buf)
    finally:
        s.close()


def wait_for(what, limit, f, interval=0.05):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            v = f()
        except Exception:
            v = None
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError("timed out after %ss: %s" % (limit, what))


class Node:
    def __init__(self, opts, workdir, name):
        self.opts = opts
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.zeo, self.ro, self.repl = free_port(), free_port(), free_port()
        self.sock = os.path.join(self.dir, "admin.sock")
        self.proc = None
        self.starts = 0

    @property
    def datafs(self):
        return os.path.join(self.dir, "Data.fs")

    def addr(self):
        return ("127.0.0.1", self.zeo)

    def ro_addr(self):
        return ("127.0.0.1", self.ro)

    def start(self, mode=None, replicate_from=None, extra=()):
        cmd = [self.opts.zodbctl, "serve", "-f", self.datafs, "-a", "127.0.0.1:%d" % self.zeo]
        if mode:
            cmd += ["--replicate-to", "127.0.0.1:%d" % self.repl,
                    "--read-only-address", "127.0.0.1:%d" % self.ro,
                    "--replication-mode", mode, "--admin-socket", self.sock]
        if replicate_from:
            cmd += ["--replicate-from", "127.0.0.1:%d" % replicate_from.repl]
        cmd += list(extra)
        self.starts += 1
        log = open(os.path.join(self.dir, "serve-%d.log" % self.starts), "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        PROCS.append(self.proc)
        port = self.ro if replicate_from else self.zeo
        wait_for("%s listening" % self.name, 60,
                 lambda: self.proc.poll() is None and accepts(port) or self.dead())
        return self

    def dead(self):
        if self.proc.poll() is not None:
            raise SystemExit("%s exited with %s; see %s" % (self.name, self.proc.returncode, self.dir))
        return False

    def status(self):
        return admin(self.sock, {"cmd": "status"})["storages"]["1"]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def in_sync(primary, replica):
    ps, rs = primary.status(), replica.status()
    return ps["end"] == rs["end"] and rs["phase"] == "streaming"


def client(addrs, **kw):
    from ZEO.ClientStorage import ClientStorage
    import ZODB
    kw.setdefault("wait_timeout", 60)
    return ZODB.DB(ClientStorage(addrs, **kw))


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_latency(opts, workdir):
    import transaction
    from persistent.mapping import PersistentMapping
    rows = []
    for mode in ("none", "async", "sync"):
        base = os.path.join(workdir, "latency-" + mode)
        os.makedirs(base)
        p = Node(opts, base, "primary").start(mode=None if mode == "none" else mode)
        r = None
        if mode != "none":
            r = Node(opts, base, "replica").start(mode=mode, replicate_from=p)
            wait_for("replica streaming", 60, lambda: r.status()["phase"] == "streaming")
        db = client(p.addr())
        conn = db.open()
        conn.root()["counter"] = PersistentMapping({"v": 0})
        transaction.commit()
        times = []
        deadline = time.monotonic() + opts.max_seconds
        start = time.monotonic()
        for _ in range(opts.commits):
            if time.monotonic() > deadline:
                break
            conn.root()["counter"]["v"] += 1
            t = time.perf_counter()
            transaction.commit()
            times.append(time.perf_counter() - t)
        elapsed = time.monotonic() - start
        db.close()
        if r:
            wait_for("replica in sync", 60, lambda: in_sync(p, r))
            r.stop()
        p.stop()
        rows.append({
            "mode": mode,
            "commits": len(times),
            "p50_ms": percentile(times, 0.5) * 1e3,
            "p99_ms": percentile(times, 0.99) * 1e3,
            "mean_ms": statistics.mean(times) * 1e3,
            "commits_per_s": len(times) / elapsed,
        })
        print("latency %-5s: %s" % (mode, rows[-1]), file=sys.stderr, flush=True)
    return rows


def fill(addr, mb, record_mb):
    import transaction
    from persistent.mapping import PersistentMapping
    db = client(addr)
    conn = db.open()
    root = conn.root()
    size = int(record_mb * 1024 * 1024)
    n = done = 0
    while done < mb * 1024 * 1024:
        root["r%d" % (n % 64)] = PersistentMapping({"data": os.urandom(size)})
        n += 1
        done += size
        if n % 2 == 0:
            transaction.commit()
            conn.cacheMinimize()
    transaction.commit()
    db.close()


def bench_catchup(opts, workdir):
    base = os.path.join(workdir, "catchup")
    os.makedirs(base)
    p = Node(opts, base, "primary").start(mode="async")
    t = time.monotonic()
    fill(p.addr(), opts.catchup_mb, opts.record_mb)
    print("filled %d MB in %.1f s" % (opts.catchup_mb, time.monotonic() - t), file=sys.stderr)
    end = p.status()["end"]
    size_mb = end / 1048576
    # cp with the page cache warm.
    with open(p.datafs, "rb") as f:
        while f.read(1 << 24):
            pass
    copy = os.path.join(base, "copy.fs")
    t = time.monotonic()
    subprocess.run(["cp", p.datafs, copy], check=True)
    cp_s = time.monotonic() - t
    os.unlink(copy)
    t = time.monotonic()
    subprocess.run(["cp", p.datafs, copy], check=True)
    fd = os.open(copy, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    cp_sync_s = time.monotonic() - t
    os.unlink(copy)
    # The replica, from an empty directory.
    t = time.monotonic()
    r = Node(opts, base, "replica").start(mode="async", replicate_from=p)
    wait_for("replica caught up", opts.max_seconds * 10,
             lambda: r.status()["end"] == end and r.status()["phase"] == "streaming",
             interval=0.02)
    replica_s = time.monotonic() - t
    # Streaming catch-up: the replica stopped while the primary takes as much again; it
    # restarts, proves its position and receives the new transactions (no full copy).
    r.stop()
    fill(p.addr(), opts.catchup_mb, opts.record_mb)
    end2 = p.status()["end"]
    stream_mb = (end2 - end) / 1048576
    t = time.monotonic()
    r.start(mode="async", replicate_from=p)
    wait_for("replica caught up (streaming)", opts.max_seconds * 10,
             lambda: r.status()["end"] == end2 and r.status()["phase"] == "streaming",
             interval=0.02)
    stream_s = time.monotonic() - t
    r.stop()
    p.stop()
    row = {
        "stream_mb": stream_mb,
        "stream_s": stream_s,
        "stream_mb_s": stream_mb / stream_s,
        "stream_ratio_vs_cp": (stream_mb / stream_s) / (size_mb / cp_s),
        "stream_ratio_vs_cp_fsync": (stream_mb / stream_s) / (size_mb / cp_sync_s),
        "mb": size_mb,
        "replica_s": replica_s,
        "replica_mb_s": size_mb / replica_s,
        "cp_s": cp_s,
        "cp_mb_s": size_mb / cp_s,
        "cp_fsync_s": cp_sync_s,
        "cp_fsync_mb_s": size_mb / cp_sync_s,
        "ratio_vs_cp": (size_mb / replica_s) / (size_mb / cp_s),
        "ratio_vs_cp_fsync": (size_mb / replica_s) / (size_mb / cp_sync_s),
    }
    print("catch-up: %s" % row, file=sys.stderr, flush=True)
    return row


def writer_main(addrs, out):
    """--writer: commit in a loop with read_only_fallback, printing `ack DONE BEGAN` lines (unix times)."""
    import transaction
    from persistent.mapping import PersistentMapping
    from ZEO.ClientStorage import ClientStorage
    import ZODB
    storage = ClientStorage(addrs, read_only_fallback=True, wait_timeout=120)
    # A read_only_fallback client may register on a read-only address first and upgrade to
    # the writable one a moment later, closing the first connection with the root's load in
    # flight (ClientDisconnected: Closed): retry, as an application would.
    for attempt in range(20):
        try:
            db = ZODB.DB(storage)
            break
        except Exception:
            time.sleep(0.5)
    else:
        raise SystemExit("cannot open the database")
    conn = db.open()
    with open(out, "a", buffering=1) as f:
        if "w" not in conn.root():
            conn.root()["w"] = PersistentMapping({"v": 0})
            transaction.commit()
        while True:
            try:
                began = time.time()
                transaction.begin()
                conn.root()["w"]["v"] += 1
                transaction.commit()
                # When the commit began too: one acknowledged by the old primary just before
                # the kill must not count as the first on the new one.
                f.write("ack %.6f %.6f\n" % (time.time(), began))
                time.sleep(0.005)
            except Exception as e:
                transaction.abort()
                f.write("err %.6f %s\n" % (time.time(), type(e).__name__))
                time.sleep(0.02)


def first_ack_after(path, t0):
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "ack" and float(parts[2]) > t0:
                    return float(parts[1])
    except OSError:
        pass
    return None


def bench_failover(opts, workdir):
    base = os.path.join(workdir, "failover")
    os.makedirs(base)
    nodes = [Node(opts, base, "a"), Node(opts, base, "b")]
    nodes[0].start(mode="sync")
    nodes[1].start(mode="sync", replicate_from=nodes[0])
    wait_for("replica streaming", 60, lambda: nodes[1].status()["phase"] == "streaming")
    addrs = ["127.0.0.1:%d" % p for n in nodes for p in (n.zeo,)] + \
        ["127.0.0.1:%d" % n.ro for n in nodes]
    acks = os.path.join(base, "writer.out")
    w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--writer", acks] + addrs,
                         stdin=subprocess.DEVNULL, start_new_session=True,
                         stderr=open(os.path.join(base, "writer.err"), "wb"))
    PROCS.append(w)
    wait_for("writer commits", 60, lambda: first_ack_after(acks, 0))
    cur = 0
    rows = []
    for cycle in range(opts.cycles):
        p, r = nodes[cur], nodes[1 - cur]
        wait_for("replica in sync", 60, lambda: r.status()["in_sync"])
        time.sleep(0.5)
        t0 = time.time()
        p.kill()
        wait_for("link down", 30, lambda: r.status()["connected"] is False, interval=0.005)
        t_down = time.time()
        t = time.time()
        out = subprocess.run([opts.zodbctl, "promote", "--socket", r.sock],
                             capture_output=True, text=True, timeout=60)
        promote_s = time.time() - t
        if out.returncode != 0:
            raise SystemExit("promote failed: %s%s" % (out.stdout, out.stderr))
        t_ack = wait_for("a commit on the new primary", 120,
                         lambda: first_ack_after(acks, t0), interval=0.01)
        if w.poll() is not None:
            raise SystemExit("the writer exited")
        rows.append({"cycle": cycle, "failover_s": t_ack - t0, "link_down_s": t_down - t0,
                     "promote_s": promote_s})
        print("failover: %s" % rows[-1], file=sys.stderr, flush=True)
        if cycle + 1 < opts.cycles:
            p.start(mode="sync", replicate_from=r, extra=["--resync"])
        cur = 1 - cur
    os.killpg(w.pid, signal.SIGKILL)
    for n in nodes:
        n.stop()
    times = [x["failover_s"] for x in rows]
    return {"cycles": rows, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times)}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--writer":
        addrs = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[3:]]
        writer_main(addrs, sys.argv[2])
        return
    release = os.path.join(ROOT, "target/release/zodbctl")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zodbctl", default=release if os.path.exists(release)
                    else os.path.join(ROOT, "target/debug/zodbctl"))
    ap.add_argument("--workdir", default=os.path.join(ROOT, "target/bench-replication"))
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--catchup-mb", type=int, default=500)
    ap.add_argument("--record-mb", type=float, default=4)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--only", default="latency,catchup,failover",
                    help="comma-separated phases to run")
    ap.add_argument("--quick", action="store_true")
    opts = ap.parse_args()
    if opts.quick:
        defaults = {"commits": 2000, "catchup_mb": 500, "cycles": 5}
        quick = {"commits": 200, "catchup_mb": 40, "cycles": 2}
        for k, v in quick.items():
            if getattr(opts, k) == defaults[k]:
                setattr(opts, k, v)
    opts.zodbctl = os.path.abspath(opts.zodbctl)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shutil.rmtree(opts.workdir, ignore_errors=True)
    os.makedirs(opts.workdir)
    print("zodbctl: %s" % opts.zodbctl, file=sys.stderr)
    only = set(opts.only.split(","))
    results = {"zodbctl": opts.zodbctl}
    if "latency" in only:
        results["latency"] = bench_latency(opts, opts.workdir)
    if "catchup" in only:
        results["catchup"] = bench_catchup(opts, opts.workdir)
    if "failover" in only:
        results["failover"] = bench_failover(opts, opts.workdir)
    with open(os.path.join(opts.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    print("zodbctl: %s" % opts.zodbctl)
    if "latency" in results:
        print("\n(a) commit latency, %d small commits, one client" % opts.commits)
        print("%-6s %8s %9s %9s %9s %10s" % ("mode", "commits", "p50 ms", "p99 ms", "mean ms", "commits/s"))
        for r in results["latency"]:
            print("%-6s %8d %9.2f %9.2f %9.2f %10.1f" % (
                r["mode"], r["commits"], r["p50_ms"], r["p99_ms"], r["mean_ms"], r["commits_per_s"]))
    if "catchup" in results:
        c = results["catchup"]
        print("\n(b) catch-up of %.0f MB from an empty replica" % c["mb"])
        print("%-22s %9s %9s" % ("", "seconds", "MB/s"))
        print("%-22s %9.2f %9.1f" % ("replica full copy", c["replica_s"], c["replica_mb_s"]))
        print("%-22s %9.2f %9.1f   (%.0f MB of new transactions, replica restarted)" % (
            "replica streaming", c["stream_s"], c["stream_mb_s"], c["stream_mb"]))
        print("%-22s %9.2f %9.1f" % ("cp (page cache warm)", c["cp_s"], c["cp_mb_s"]))
        print("%-22s %9.2f %9.1f" % ("cp + fsync", c["cp_fsync_s"], c["cp_fsync_mb_s"]))
        print("full copy / cp: %.2f   full copy / (cp + fsync): %.2f" % (
            c["ratio_vs_cp"], c["ratio_vs_cp_fsync"]))
        print("streaming / cp: %.2f   streaming / (cp + fsync): %.2f" % (
            c["stream_ratio_vs_cp"], c["stream_ratio_vs_cp_fsync"]))
    if "failover" in results:
        f = results["failover"]
        print("\n(c) failover: kill -9 -> promote -> first commit of a read-only-fallback client")
        print("%-6s %11s %12s %10s" % ("cycle", "failover s", "link down s", "promote s"))
        for r in f["cycles"]:
            print("%-6d %11.2f %12.3f %10.3f" % (r["cycle"], r["failover_s"], r["link_down_s"], r["promote_s"]))
        print("median %.2f s (min %.2f, max %.2f)" % (f["median_s"], f["min_s"], f["max_s"]))


if __name__ == "__main__":
    main()
