#!/usr/bin/env python3
"""ZEO server figures: `zodbctl serve` side by side with runzeo from the same venv.

    cargo build --release
    target/pyenv/bin/python scripts/bench-zeo.py [--size-mb 100] [--servers runzeo,zodbctl]
    target/pyenv/bin/python scripts/bench-zeo.py --quick    # a check of the script only

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
and noisy). Server CPU per operation: the server process's CPU, read before and after
each phase, divided by the phase's operations (a commit counts as one operation, whatever
its size), reported as the total and split into user and system (the kernel's share): the
total from its threads' /proc/PID/task/TID/schedstat (nanoseconds; utime+stime from
/proc/PID/stat if a thread exited meanwhile), the split in the proportion of utime and
stime (clock ticks). Client CPU per operation, split the same way: the Python drivers' own
getrusage over their measured loop, and bench's own getrusage over the phase (from its
--json report). Every phase is bounded by its count and by --max-seconds.

--quick: 1 round, a 20 MB Data.fs and about 1/5 of the counts, to check the script in a
few minutes (explicit options still win).
Results: a table on stdout and workdir/results.json.
"""

import argparse
import json
import os
import pickle
import random
import resource
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
    # getrusage counts microseconds; os.times() only clock ticks (10 ms).
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
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
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print("done %d %.6f %.6f %.6f" % (ops, elapsed, cpu1.ru_utime - cpu0.ru_utime,
                                      cpu1.ru_stime - cpu0.ru_stime), flush=True)
    st.close()


# --------------------------------------------------------------------------------------
# The orchestrator.


def cpu_seconds(pid):
    """A CPU sample of a process: (utime, stime) from /proc/PID/stat in seconds, and the
    on-CPU nanoseconds of each live thread from /proc/PID/task/TID/schedstat."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()
    threads = {}
    base = "/proc/%d/task" % pid
    try:
        tids = os.listdir(base)
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open("%s/%s/schedstat" % (base, tid)) as f:
                threads[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread has just exited: cpu_diff notices
    return int(rest[11]) / TICK, int(rest[12]) / TICK, threads


def cpu_diff(a, b):
    """(user, system, total) CPU seconds between two samples of one process.

    utime and stime come in clock ticks (10 ms), too coarse for a phase of 0.1 s; the
    threads' schedstat counts nanoseconds. So the total is the threads' schedstat
    difference (threads started in between count from zero) when every thread of the first
    sample is still there, else (a thread exited, its time gone from the sum) the ticks'.
    The split is the ticks' proportion of user and system time applied to that total, as
    the kernel itself scales utime/stime; NaN when the phase spans no whole tick."""
    user, sys_ = b[0] - a[0], b[1] - a[1]
    ticks = user + sys_
    if b[2] and set(a[2]) <= set(b[2]):
        total = sum(ns - a[2].get(tid, 0) for tid, ns in b[2].items()) / 1e9
    else:
        total = ticks
    if ticks > 0:
        return total * user / ticks, total * sys_ / ticks, total
    return float("nan"), float("nan"), total


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
    def __init__(self, kind, zodbctl, datafs, log, metrics=False):
        self.kind = kind
        self.port = free_port()
        self.metrics_port = None
        addr = "127.0.0.1:%d" % self.port
        if kind == "runzeo":
            cmd = [os.path.join(BIN, "runzeo"), "-a", addr, "-f", datafs]
        else:
            cmd = [zodbctl, "serve", "-a", addr, "-f", datafs]
            if metrics:
                self.metrics_port = free_port()
                cmd += ["--metrics", "127.0.0.1:%d" % self.metrics_port]
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
    """Run one driver per share; returns (ops, seconds, server (user, sys, total) cpu
    seconds, the drivers' own (user, sys, total) cpu seconds)."""
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
    client = (0.0, 0.0, 0.0)
    for p in procs:
        line = p.stdout.readline().split()
        if not line or line[0] != "done":
            sys.exit("driver failed (%s): %r" % (mode, line))
        ops += int(line[1])
        u, s = float(line[3]), float(line[4])
        client = (client[0] + u, client[1] + s, client[2] + u + s)
    seconds = time.perf_counter() - t0
    cpu1 = server.cpu()
    for p in procs:
        p.wait(60)
    return ops, seconds, cpu_diff(cpu0, cpu1), client


def bench_phase(server, zodbctl, phase, objects, per_txn, max_seconds):
    """Run `zodbctl bench`; returns (its report of `phase`, server (user, sys, total) cpu
    seconds in it). The report carries bench's own CPU in the phase (client_user_s, client_sys_s).

    bench creates its objects before a read phase (unmeasured by bench), so the server's CPU
    is sampled every few milliseconds while bench runs, and the phase's share is the CPU
    used in its last `seconds` before bench exits (the measured phase is the last one; what
    follows it is closing the connections).
    """
    cmd = [zodbctl, "bench", "127.0.0.1:%d" % server.port, "--json", "-c", "4", "--pipeline", "16",
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
    # A bench that predates the client CPU fields: report zeros rather than fail.
    rep.setdefault("client_user_s", 0.0)
    rep.setdefault("client_sys_s", 0.0)
    cpu_start = before[-1] if before else samples[0][1] if samples else cpu_end
    return rep, cpu_diff(cpu_start, cpu_end)


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


def phase_result(ops, seconds, rate, server, client):
    """One phase's figures; server and client are (user, sys, total) CPU seconds."""
    n = max(ops, 1)
    return {"ops": ops, "seconds": seconds, "ops_per_s": rate,
            "cpu_s": server[2],
            "cpu_us_per_op": server[2] / n * 1e6,
            "cpu_user_us_per_op": server[0] / n * 1e6,
            "cpu_sys_us_per_op": server[1] / n * 1e6,
            "client_cpu_us_per_op": client[2] / n * 1e6,
            "client_user_us_per_op": client[0] / n * 1e6,
            "client_sys_us_per_op": client[1] / n * 1e6}


def show(kind, name, r):
    print("  %-6s %-15s %7d ops %9.1f ops/s  server CPU %8.1f us/op (user %.1f, sys %.1f)"
          "  client CPU %7.1f us/op (user %.1f, sys %.1f)"
          % (kind, name, r["ops"], r["ops_per_s"], r["cpu_us_per_op"], r["cpu_user_us_per_op"],
             r["cpu_sys_us_per_op"], r["client_cpu_us_per_op"], r["client_user_us_per_op"],
             r["client_sys_us_per_op"]), flush=True)


def scrape_cost(server, n):
    """Server CPU per GET /metrics, over `n` sequential scrapes."""
    import urllib.request
    url = "http://127.0.0.1:%d/metrics" % server.metrics_port
    size = len(urllib.request.urlopen(url, timeout=10).read())
    cpu0 = server.cpu()
    t0 = time.perf_counter()
    for _ in range(n):
        urllib.request.urlopen(url, timeout=10).read()
    secs = time.perf_counter() - t0
    cpu = cpu_diff(cpu0, server.cpu())
    return phase_result(n, secs, n / secs, cpu, (0.0, 0.0, 0.0)) | {"bytes": size}


def run_server(kind, o, src, load_shares, zodbctl):
    d = os.path.join(o.datadir, "zeo-bench-%d-%s" % (os.getpid(), kind))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    datafs = os.path.join(d, "Data.fs")
    shutil.copyfile(src, datafs)
    shutil.copyfile(src + ".index", datafs + ".index")
    res = {}
    # --baseline: the same runs against another zodbctl build (e.g. before a change).
    binary = o.baseline if kind == "baseline" else zodbctl
    server = Server(kind, binary, datafs, os.path.join(o.workdir, "server-%s.log" % kind),
                    metrics=o.metrics and kind == "zodbctl")
    try:
        time.sleep(1)
        res["idle_rss_mb"] = server.rss()
        res["start_cpu_s"] = sum(server.cpu()[:2])
        split = lambda n: [n // o.clients + (1 if i < n % o.clients else 0)
                           for i in range(o.clients)]
        for name, mode, shares in [
            ("py_cold_load", "load", load_shares),
            ("py_commit1", "commit1", split(o.commits)),
            ("py_commit100", "commit100", split(o.big_commits)),
        ]:
            ops, secs, cpu, client = python_phase(server, mode, shares, o.max_seconds)
            res[name] = phase_result(ops, secs, ops / secs, cpu, client)
            show(kind, name, res[name])
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
                u, s = rep["client_user_s"], rep["client_sys_s"]
                res[name] = phase_result(ops, rep["seconds"], rate, cpu, (u, s, u + s))
                res[name].update(p50_ms=rep["p50_ms"], p99_ms=rep["p99_ms"],
                                 errors=rep["errors"])
                show(kind, name, res[name])
        if server.metrics_port:
            res["scrape"] = scrape_cost(server, o.scrapes)
            show(kind, "scrape", res["scrape"])
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
    p.add_argument("--baseline", metavar="ZODBCTL",
                   help="another zodbctl binary, served as the server kind 'baseline' "
                        "(e.g. --servers baseline,zodbctl to measure a change's cost)")
    p.add_argument("--metrics", action="store_true",
                   help="serve the zodbctl kind with its Prometheus endpoint on, and "
                        "measure the server CPU of a scrape")
    p.add_argument("--scrapes", type=int, default=500, help="scrapes timed with --metrics")
    p.add_argument("--workdir", default=os.path.join(ROOT, "target", "bench-zeo"))
    p.add_argument("--datadir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    # Defaults are (full run, --quick); options given explicitly win over both.
    sizes = {"size_mb": (100, 20), "loads": (20000, 4000), "commits": (2000, 400),
             "big_commits": (200, 40), "bench_objects": (200000, 40000),
             "bench_commits": (5000, 1000), "max_seconds": (60, 20), "rounds": (1, 1)}
    p.add_argument("--quick", action="store_true",
                   help="a check of the script, not a measurement: 1 round, a 20 MB "
                        "Data.fs and about 1/5 of the counts (each still overridable)")
    p.add_argument("--size-mb", type=float, help="default 100 (--quick: 20)")
    p.add_argument("--clients", type=int, default=2, help="Python driver processes")
    p.add_argument("--loads", type=int, help="default 20000 (--quick: 4000)")
    p.add_argument("--commits", type=int, help="default 2000 (--quick: 400)")
    p.add_argument("--big-commits", type=int, help="default 200 (--quick: 40)")
    p.add_argument("--bench-objects", type=int, help="default 200000 (--quick: 40000)")
    p.add_argument("--bench-commits", type=int, help="default 5000 (--quick: 1000)")
    p.add_argument("--max-seconds", type=int, help="default 60 (--quick: 20)")
    p.add_argument("--rounds", type=int,
                   help="repeat, alternating which server goes first; medians are reported "
                        "(default 1)")
    o = p.parse_args()
    for key, (full, quick) in sizes.items():
        if getattr(o, key) is None:
            setattr(o, key, quick if o.quick else full)
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
            vals = sorted(r[key] for r in runs if r[key] == r[key])  # NaN: no figure
            if not vals:
                out[key] = float("nan")
                continue
            out[key] = vals[len(vals) // 2] if len(vals) % 2 else (
                vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
        else:
            out[key] = v
    return out


def report_baseline(s):
    """zodbctl against --baseline: server CPU per operation and what the change costs."""
    b, z = s["baseline"], s["zodbctl"]
    print()
    print("| server CPU µs/op | baseline | this build | cost |")
    print("|---|---|---|---|")
    for key in ["py_cold_load", "py_commit1", "py_commit100", "bench_cold_load",
                "bench_commit1", "bench_commit100"]:
        if key in b and key in z:
            x, y = b[key]["cpu_us_per_op"], z[key]["cpu_us_per_op"]
            print("| %s | %.1f | %.1f | %+.1f %% |" % (key, x, y, (y / x - 1) * 100 if x else 0))
    if "scrape" in z:
        sc = z["scrape"]
        print("| GET /metrics (%d bytes), server CPU µs | | %.1f (%.1f + %.1f) | |"
              % (sc["bytes"], sc["cpu_us_per_op"], sc["cpu_user_us_per_op"],
                 sc["cpu_sys_us_per_op"]))


def report(results):
    s = results["servers"]
    if "baseline" in s and "zodbctl" in s:
        report_baseline(s)
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
        if better_low is None:
            # Not an advantage of either server: what the clients themselves spent.
            print("| %s | %s | %s | |" % (label, fmt(key, z, a), fmt(key, r, b)))
            return
        ratio = (b / a if better_low else a / b) if a and b else float("nan")
        print("| %s | %s | %s | %.1f× |" % (label, fmt(key, z, a), fmt(key, r, b), ratio))

    plain = lambda fmt: lambda key, s, v: fmt % v

    def split(prefix):
        # total (user + sys), the split showing how much of it is the kernel's.
        def fmt(key, s, v):
            d = s[key]
            return "%.1f (%.1f + %.1f)" % (v, d[prefix + "user_us_per_op"],
                                           d[prefix + "sys_us_per_op"])
        return fmt

    print("(CPU µs/op: total (user + sys); client CPU: the Python drivers' or bench's own)")
    for who, rows in [("Python clients", [("py_cold_load", "cold load"),
                                          ("py_commit1", "1-object commit"),
                                          ("py_commit100", "100-object commit")]),
                      ("zodbctl bench", [("bench_cold_load", "cold load"),
                                         ("bench_commit1", "1-object commit"),
                                         ("bench_commit100", "100-object commit")])]:
        for key, label in rows:
            row("%s: %s, server CPU µs/op" % (who, label), key, "cpu_us_per_op",
                split("cpu_"), True)
            row("%s: %s, ops/s" % (who, label), key, "ops_per_s", plain("%.0f"), False)
            row("%s: %s, client CPU µs/op" % (who, label), key, "client_cpu_us_per_op",
                split("client_"), None)
    print("| idle RSS after start, MB | %.1f | %.1f | %.1f× |"
          % (z["idle_rss_mb"], r["idle_rss_mb"], r["idle_rss_mb"] / z["idle_rss_mb"]))
    print("| RSS after the runs, MB | %.1f | %.1f | %.1f× |"
          % (z["rss_after_mb"], r["rss_after_mb"], r["rss_after_mb"] / z["rss_after_mb"]))


if __name__ == "__main__":
    main()
