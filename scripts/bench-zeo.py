#!/usr/bin/env python3
"""ZEO server figures: `zodbctl serve` side by side with runzeo from the same venv.

    cargo build --release
    target/pyenv/bin/python scripts/bench-zeo.py [--size-mb 100] [--servers runzeo,zodbctl]

Run it with the test venv's Python (tests/requirements.txt: ZODB 6.4, ZEO 6.2); runzeo is
taken from the same bin directory, zodbctl from target/release (built by `cargo build
--release` first unless --no-build). Everything runs in --workdir (default
target/bench-zeo); the Data.fs copies the servers write go to --datadir (default /dev/shm,
so that fsync costs nothing and the figures are the servers' own work, "fsync aside").

Data: tools/make_datafs.py writes a realistic Data.fs once (--size-mb, cached in the
workdir). Each server gets a fresh copy (with its Data.fs.index) and is started on
127.0.0.1; then, one server at a time:

* idle RSS: VmRSS of the server process 1 s after it listens (and again after the runs);
* Python clients (--clients driver processes of this script, each a real
  ZEO.ClientStorage): cold loads (--loads distinct oids of the generated file, each loaded
  once, right after the server started: the server's caches are cold, the OS page cache is
  not), 1-object commits (--commits) and 100-object commits (--big-commits), storage-level
  two-phase commits of new PersistentMapping records;
* `zodbctl bench` (the native load generator, 4 connections, pipelined): its `add` phase
  with 1 and with 100 objects per transaction, and its `cold-read` phase (the first reads of
  objects it has just created, unmeasured, before; the server's CPU is sampled every 5 ms and
  the phase's share is what it used in the phase's last `seconds` before bench exited).

With --rounds N the whole comparison is repeated N times, alternating which server goes
first, and the table gives field-wise medians (the machine this was written on is shared
and noisy). Server CPU per operation: utime+stime of the server process from /proc/PID/stat, read
before and after each phase, divided by the phase's operations (a commit counts as one
operation, whatever its size). Every phase is bounded by its count and by --max-seconds.
Results: a table on stdout and workdir/results.json.
"""

import argparse
import json
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")
Z64 = b"\0" * 8

# --------------------------------------------------------------------------------------
# The Python client driver (run as a subprocess of this script).

RECORD_CLASS = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00."


def record(n):
    """A PersistentMapping record as ZODB writes it (class pickle + state pickle)."""
    return RECORD_CLASS + pickle.dumps({"data": {"n": n, "payload": "x" * 100}}, 3)


def driver(mode, port, arg, max_seconds):
    import ZEO
    from ZODB.Connection import TransactionMetaData

    st = ZEO.client(("127.0.0.1", int(port)), wait_timeout=30)
    if mode == "load":
        with open(arg) as f:
            oids = [bytes.fromhex(line.strip()) for line in f if line.strip()]
        count = len(oids)
    else:
        count = int(arg)
    # Warm the connection (and new-oid batch) outside the measured window.
    st.lastTransaction()
    print("ready", flush=True)
    sys.stdin.readline()
    end = time.monotonic() + float(max_seconds)
    t0 = time.perf_counter()
    ops = 0
    if mode == "load":
        for oid in oids:
            st.load(oid)
            ops += 1
            if ops % 256 == 0 and time.monotonic() > end:
                break
    else:
        per = 1 if mode == "commit1" else 100
        data = record(1)
        while ops < count and time.monotonic() < end:
            t = TransactionMetaData()
            st.tpc_begin(t)
            for _ in range(per):
                st.store(st.new_oid(), Z64, data, "", t)
            st.tpc_vote(t)
            st.tpc_finish(t)
            ops += 1
    elapsed = time.perf_counter() - t0
    print("done %d %.6f" % (ops, elapsed), flush=True)
    st.close()


# --------------------------------------------------------------------------------------
# The orchestrator.


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("server exited with %s; log %s:\n%s" % (proc.returncode, log, open(log).read()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("server did not listen within %d s; log %s" % (timeout, log))


class Server:
    def __init__(self, kind, zodbctl, datafs, log):
        self.kind = kind
        self.port = free_port()
        addr = "127.0.0.1:%d" % self.port
        if kind == "runzeo":
            cmd = [os.path.join(BIN, "runzeo"), "-a", addr, "-f", datafs]
        else:
            cmd = [zodbctl, "serve", "-a", addr, "-f", datafs]
        self.log = log
        out = open(log, "wb")
        env = dict(os.environ)
        env.pop("ZEO_MSGPACK", None)  # both servers announce pickle (Z5), the default
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        wait_port(self.port, self.proc, log)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return rss_mb(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def python_phase(server, mode, shares, max_seconds):
    """Run one driver per share; returns (ops, seconds, server cpu seconds)."""
    procs = []
    for share in shares:
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--driver", mode,
                              str(server.port), str(share), str(max_seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            sys.exit("driver failed to start (%s): %r" % (mode, line))
    cpu0 = server.cpu()
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    ops = 0
    for p in procs:
        line = p.stdout.readline().split()
        if not line or line[0] != "done":
            sys.exit("driver failed (%s): %r" % (mode, line))
        ops += int(line[1])
    seconds = time.perf_counter() - t0
    cpu1 = server.cpu()
    for p in procs:
        p.wait(60)
    return ops, seconds, cpu1 - cpu0


def bench_phase(server, zodbctl, phase, objects, per_txn, max_seconds):
    """Run `zodbctl bench`; returns (its report of `phase`, server cpu seconds in it).

    bench creates its objects before a read phase (unmeasured by bench), so the server's CPU
    is sampled every few milliseconds while bench runs, and the phase's share is the CPU
    used in its last `seconds` before bench exits (the measured phase is the last one; what
    follows it is closing the connections).
    """
    cmd = [zodbctl, "bench", "127.0.0.1:%d" % server.port, "--json", "-c", "4",
           "-n", str(objects), "--objects-per-txn", str(per_txn), "--phases", phase,
           "--max-seconds", str(max_seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    deadline = time.monotonic() + max_seconds * 3 + 60
    while proc.poll() is None and time.monotonic() < deadline:
        samples.append((time.perf_counter(), server.cpu()))
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    t_end, cpu_end = time.perf_counter(), server.cpu()
    if proc.returncode != 0:
        sys.exit("zodbctl bench failed: %s\n%s" % (out, err))
    rep = json.loads(out)["phases"][-1]
    t_start = t_end - rep["seconds"]
    before = [c for (t, c) in samples if t <= t_start]
    cpu_start = before[-1] if before else samples[0][1] if samples else cpu_end
    return rep, cpu_end - cpu_start


def make_data(o):
    os.makedirs(o.workdir, exist_ok=True)
    src = os.path.join(o.workdir, "source-%gmb.fs" % o.size_mb)
    if not os.path.exists(src):
        print("generating %s with tools/make_datafs.py ..." % src, flush=True)
        tmp = src + ".tmp"
        for suffix in ("", ".index", ".lock", ".tmp"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_datafs.py"), tmp,
                        "--size-mb", str(o.size_mb)], check=True)
        os.rename(tmp + ".index", src + ".index")
        os.rename(tmp, src)
        if os.path.exists(tmp + ".lock"):
            os.remove(tmp + ".lock")
    # The oids cold loads read: a deterministic random sample of the file's objects.
    from ZODB.FileStorage import FileStorage
    fs = FileStorage(src, read_only=True)
    oids = sorted(fs._index.keys())
    fs.close()
    random.Random(1).shuffle(oids)
    oids = oids[:o.loads]
    shares = []
    for i in range(o.clients):
        path = os.path.join(o.workdir, "oids-%d.txt" % i)
        with open(path, "w") as f:
            for oid in oids[i::o.clients]:
                f.write(oid.hex() + "\n")
        shares.append(path)
    return src, len(oids), shares


def run_server(kind, o, src, load_shares, zodbctl):
    d = os.path.join(o.datadir, "zeo-bench-%d-%s" % (os.getpid(), kind))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    datafs = os.path.join(d, "Data.fs")
    shutil.copyfile(src, datafs)
    shutil.copyfile(src + ".index", datafs + ".index")
    res = {}
    server = Server(kind, zodbctl, datafs, os.path.join(o.workdir, "server-%s.log" % kind))
    try:
        time.sleep(1)
        res["idle_rss_mb"] = server.rss()
        res["start_cpu_s"] = server.cpu()
        split = lambda n: [n // o.clients + (1 if i < n % o.clients else 0)
                           for i in range(o.clients)]
        for name, mode, shares in [
            ("py_cold_load", "load", load_shares),
            ("py_commit1", "commit1", split(o.commits)),
            ("py_commit100", "commit100", split(o.big_commits)),
        ]:
            ops, secs, cpu = python_phase(server, mode, shares, o.max_seconds)
            res[name] = {"ops": ops, "seconds": secs, "ops_per_s": ops / secs,
                         "cpu_s": cpu, "cpu_us_per_op": cpu / ops * 1e6}
            print("  %-6s %-13s %7d ops %9.1f ops/s  server CPU %8.1f us/op"
                  % (kind, name, ops, ops / secs, cpu / ops * 1e6), flush=True)
        if zodbctl:
            add1, cpu1 = bench_phase(server, zodbctl, "add", o.bench_commits, 1, o.max_seconds)
            add100, cpu100 = bench_phase(server, zodbctl, "add", o.bench_objects, 100,
                                         o.max_seconds)
            cold, cpu_cold = bench_phase(server, zodbctl, "cold-read", o.bench_objects,
                                             100, o.max_seconds)
            for name, rep, cpu, ops in [
                ("bench_commit1", add1, cpu1, add1["transactions"]),
                ("bench_commit100", add100, cpu100, add100["transactions"]),
                ("bench_cold_load", cold, cpu_cold, cold["ops"]),
            ]:
                rate = rep["ops_per_sec"] if name == "bench_cold_load" else (
                    rep["transactions"] / rep["seconds"] if rep["seconds"] else 0.0)
                res[name] = {"ops": ops, "seconds": rep["seconds"], "ops_per_s": rate,
                             "cpu_s": cpu, "cpu_us_per_op": cpu / max(ops, 1) * 1e6,
                             "p50_ms": rep["p50_ms"], "p99_ms": rep["p99_ms"],
                             "errors": rep["errors"]}
                print("  %-6s %-15s %7d ops %9.1f ops/s  server CPU %8.1f us/op"
                      % (kind, name, ops, rate, cpu / max(ops, 1) * 1e6), flush=True)
        time.sleep(1)
        res["rss_after_mb"] = server.rss()
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--driver", nargs=4, metavar=("MODE", "PORT", "ARG", "MAX_SECONDS"),
                   help=argparse.SUPPRESS)
    p.add_argument("--servers", default="runzeo,zodbctl")
    p.add_argument("--zodbctl", default=os.path.join(ROOT, "target", "release", "zodbctl"))
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--workdir", default=os.path.join(ROOT, "target", "bench-zeo"))
    p.add_argument("--datadir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    p.add_argument("--size-mb", type=float, default=100)
    p.add_argument("--clients", type=int, default=2, help="Python driver processes")
    p.add_argument("--loads", type=int, default=20000)
    p.add_argument("--commits", type=int, default=2000)
    p.add_argument("--big-commits", type=int, default=200)
    p.add_argument("--bench-objects", type=int, default=50000)
    p.add_argument("--bench-commits", type=int, default=5000)
    p.add_argument("--max-seconds", type=int, default=60)
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat, alternating which server goes first; medians are reported")
    o = p.parse_args()
    if o.driver:
        driver(*o.driver)
        return
    o.datadir = o.datadir or o.workdir
    servers = o.servers.split(",")
    if not o.no_build:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    if not os.access(o.zodbctl, os.X_OK):
        sys.exit("%s not found: run cargo build --release" % o.zodbctl)
    src, nloads, shares = make_data(o)
    print("Data.fs: %s (%d bytes); %d cold loads over %d Python clients"
          % (src, os.path.getsize(src), nloads, o.clients), flush=True)
    results = {"size_bytes": os.path.getsize(src), "args": vars(o), "rounds": []}
    for rnd in range(o.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]
        this = {}
        for kind in order:
            print("round %d, %s:" % (rnd + 1, kind), flush=True)
            this[kind] = run_server(kind, o, src, shares, o.zodbctl)
        results["rounds"].append(this)
    results["servers"] = {kind: median_of([r[kind] for r in results["rounds"]])
                          for kind in servers}
    with open(os.path.join(o.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    report(results)


def median_of(runs):
    """Field-wise median of one server's results over the rounds."""
    out = {}
    for key, v in runs[0].items():
        if isinstance(v, dict):
            out[key] = median_of([r[key] for r in runs])
        elif isinstance(v, (int, float)):
            vals = sorted(r[key] for r in runs)
            out[key] = vals[len(vals) // 2] if len(vals) % 2 else (
                vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
        else:
            out[key] = v
    return out


def report(results):
    s = results["servers"]
    if "runzeo" not in s or "zodbctl" not in s:
        return
    r, z = s["runzeo"], s["zodbctl"]
    print()
    print("medians of %d round(s)" % len(results["rounds"]))
    print("| measure | zodbctl serve | runzeo | ratio |")
    print("|---|---|---|---|")

    def row(label, key, field, fmt, better_low):
        a, b = z.get(key, {}).get(field), r.get(key, {}).get(field)
        if a is None or b is None:
            return
        ratio = (b / a if better_low else a / b) if a and b else float("nan")
        print("| %s | %s | %s | %.1f× |" % (label, fmt % a, fmt % b, ratio))

    for key, label in [("py_cold_load", "cold load"), ("py_commit1", "1-object commit"),
                       ("py_commit100", "100-object commit")]:
        row("Python clients: %s, server CPU µs/op" % label, key, "cpu_us_per_op", "%.1f", True)
        row("Python clients: %s, ops/s" % label, key, "ops_per_s", "%.0f", False)
    for key, label in [("bench_cold_load", "cold load"), ("bench_commit1", "1-object commit"),
                       ("bench_commit100", "100-object commit")]:
        row("zodbctl bench: %s, server CPU µs/op" % label, key, "cpu_us_per_op", "%.1f", True)
        row("zodbctl bench: %s, ops/s" % label, key, "ops_per_s", "%.0f", False)
    print("| idle RSS after start, MB | %.1f | %.1f | %.1f× |"
          % (z["idle_rss_mb"], r["idle_rss_mb"], r["idle_rss_mb"] / z["idle_rss_mb"]))
    print("| RSS after the runs, MB | %.1f | %.1f | %.1f× |"
          % (z["rss_after_mb"], r["rss_after_mb"], r["rss_after_mb"] / z["rss_after_mb"]))


if __name__ == "__main__":
    main()
