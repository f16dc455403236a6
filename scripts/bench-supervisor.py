#!/usr/bin/env python3
"""Supervisor figures, zodbctl side by side with zdaemon/zeoctl from the same venv.

    cargo build --release
    target/pyenv/bin/python scripts/bench-supervisor.py [--zodbctl target/release/zodbctl]

Run it with the test venv's Python (tests/requirements.txt: zdaemon 5.2.1, ZEO 6.2); the
zdaemon/zeoctl scripts are taken from the same bin directory. Measures, for both:

* `status` latency: median (and p90) wall time of the controller command, N runs;
* manager RSS: VmRSS of the manager process supervising `sleep`;
* restart latency: SIGKILL the program (after it has run longer than backoff-limit, so no
  back-off applies) and poll the control socket until a new pid shows; median of N.

Everything runs in a temporary directory; every loop is bounded.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def raw_status(sock):
    """The status block through the control socket (zdaemon's protocol), or None."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(sock)
        s.sendall(b"status\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        s.close()
    fields = dict(
        line.split("=", 1) for line in data.decode().splitlines() if "=" in line
    )
    return fields if "application" in fields else None


def wait_for(cond, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.005)
    raise SystemExit("timed out")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed(cmd, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def restart_latency(sock, n):
    lat = []
    for _ in range(n):
        st = wait_for(lambda: (lambda s: s if s and s["application"] != "0" else None)(raw_status(sock)))
        pid = int(st["application"])
        # Past backoff-limit (1 s) since the spawn, so the manager restarts at once.
        time.sleep(1.1)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            s = raw_status(sock)
            if s and s["application"] not in ("0", str(pid)):
                break
        lat.append((time.perf_counter() - t0) * 1000)
    return statistics.median(lat), max(lat)


def bench_zodbctl(zodbctl, work, n_status, n_restart):
    inst = os.path.join(work, "zodbctl")
    os.makedirs(os.path.join(inst, "etc"))
    with open(os.path.join(inst, "etc/client.toml"), "w") as f:
        f.write(
            '[zeoclient]\nservers = ["127.0.0.1:1"]\n\n[runner]\n'
            'program = "sleep 1000"\nbackoff-limit = 1\nstop-timeout = 5\n'
        )
    ctl = [zodbctl, "-i", inst]
    subprocess.run(ctl + ["start"], check=True, stdout=subprocess.DEVNULL)
    sock = os.path.join(inst, "var/zodbctl.sock")
    try:
        status = timed(ctl + ["status"], n_status)
        manager = int(raw_status(sock)["manager"])
        rss = rss_kb(manager)
        restart = restart_latency(sock, n_restart)
    finally:
        subprocess.run(ctl + ["stop"], stdout=subprocess.DEVNULL)
    return status, rss, restart


def bench_zdaemon(work, n_status, n_restart):
    d = os.path.join(work, "zdaemon")
    os.makedirs(d)
    sock = os.path.join(d, "zdsock")
    ctl = [os.path.join(BIN, "zdaemon"), "-s", sock, "-b", "1", "-p", "sleep 1000"]
    subprocess.run(ctl + ["start"], check=True, stdout=subprocess.DEVNULL)
    try:
        status = timed(ctl + ["status"], n_status)
        manager = int(raw_status(sock)["manager"])
        rss = rss_kb(manager)
        restart = restart_latency(sock, n_restart)
    finally:
        subprocess.run(ctl + ["stop"], stdout=subprocess.DEVNULL)
    return status, rss, restart


def bench_zeoctl(work, n_status):
    """zeoctl status on a ZEO instance (loads ZEO's schema): the command administrators run."""
    d = os.path.join(work, "zeoctl")
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "zeo.conf")
    with open(conf, "w") as f:
        f.write(
            f"<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n<filestorage 1>\n"
            f"  path {d}/Data.fs\n</filestorage>\n<runner>\n"
            f"  program {os.path.join(BIN, 'runzeo')} -C {conf}\n"
            f"  socket-name {d}/zeo.zdsock\n</runner>\n"
        )
    ctl = [os.path.join(BIN, "zeoctl"), "-C", conf]
    subprocess.run(ctl + ["start"], check=True, stdout=subprocess.DEVNULL)
    try:
        return timed(ctl + ["status"], n_status)
    finally:
        subprocess.run(ctl + ["stop"], stdout=subprocess.DEVNULL)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zodbctl", default=os.path.join(ROOT, "target/release/zodbctl"))
    ap.add_argument("--status-runs", type=int, default=50)
    ap.add_argument("--restart-runs", type=int, default=10)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-sup-")
    try:
        zs, zr, zl = bench_zodbctl(a.zodbctl, work, a.status_runs, a.restart_runs)
        ds, dr, dl = bench_zdaemon(work, a.status_runs, a.restart_runs)
        ks = bench_zeoctl(work, a.status_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| measure | zodbctl | zdaemon 5.2.1 | zeoctl (ZEO 6.2) | ratio |")
    print(f"|---|---|---|---|---|")
    print(
        f"| `status` median (p90), ms | {zs[0]:.1f} ({zs[1]:.1f}) | {ds[0]:.1f} ({ds[1]:.1f}) "
        f"| {ks[0]:.1f} ({ks[1]:.1f}) | {ks[0] / zs[0]:.0f}× faster than zeoctl |"
    )
    print(
        f"| manager RSS, MB | {zr / 1024:.1f} | {dr / 1024:.1f} | (same manager) "
        f"| {dr / zr:.1f}× smaller |"
    )
    print(
        f"| restart after SIGKILL, no back-off: median (max), ms | {zl[0]:.1f} ({zl[1]:.1f}) "
        f"| {dl[0]:.1f} ({dl[1]:.1f}) | (same manager) | {dl[0] / zl[0]:.1f}× faster |"
    )


if __name__ == "__main__":
    main()
