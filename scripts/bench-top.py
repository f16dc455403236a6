#!/usr/bin/env python3
"""Cost of `zodbctl top` itself: CPU at the default refresh, RSS, and start-up time to the
first frame, on a 5-member cluster (2 servers served by zodbctl, 3 clients) on this machine.

    cargo build --release
    python3 scripts/bench-top.py [--zodbctl target/release/zodbctl] [--seconds 60] [--runs 7]

The dashboard runs in a pseudo-terminal (120x40). Start-up is measured from the spawn of the
process to the moment its output holds the first frame with data: the last member's name and
its state, i.e. the first snapshot drawn (not an empty frame). CPU is utime+stime of the `top`
process (all its threads) from /proc over `--seconds`, after a 3 s warm-up; RSS is VmRSS at
the end and VmHWM (peak). Everything listens on 127.0.0.1; the cluster is stopped at the end.
Standard library only.
"""

import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cluster(zodbctl, top):
    members = []
    for i in (1, 2):
        name = f"server{i}"
        subprocess.run(
            [zodbctl, "create", "server", os.path.join(top, name),
             "--address", f"127.0.0.1:{free_port()}"],
            check=True, stdout=subprocess.DEVNULL)
        members.append((name, "server"))
    for i in (1, 2, 3):
        name = f"client{i}"
        d = os.path.join(top, name, "etc")
        os.makedirs(d)
        with open(os.path.join(d, "client.toml"), "w") as f:
            f.write(
                f'[zeoclient]\nservers = ["127.0.0.1:{free_port()}"]\n'
                '[runner]\nprogram = "sleep 3600"\ntranscript = "log/transcript.log"\n'
                'stop-timeout = 5\n')
        members.append((name, "client"))
    with open(os.path.join(top, "cluster.toml"), "w") as f:
        for name, kind in members:
            f.write(f'[[members]]\npath = "{name}"\nkind = "{kind}"\n\n')
    return members


class Pty:
    """`zodbctl -i DIR top` in a 120x40 pseudo-terminal, its output drained on a thread."""

    def __init__(self, argv):
        self.start = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:
            os.environ["TERM"] = "xterm-256color"
            os.execv(argv[0], argv)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.pid, self.fd = pid, fd
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.seen = {}
        self.closed = False
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while True:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.5)
                if not r:
                    if self.closed:
                        return
                    continue
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            with self.lock:
                self.buf += data
                # Only the most recent output matters for "is it drawn yet".
                if len(self.buf) > 1 << 20:
                    del self.buf[: len(self.buf) - (1 << 19)]
                for k in list(self.wanted):
                    if k not in self.seen and all(w in self.buf for w in self.wanted[k]):
                        self.seen[k] = now

    wanted = {}

    def wait(self, key, words, limit=10.0):
        self.wanted = dict(self.wanted, **{key: [w.encode() for w in words]})
        deadline = time.time() + limit
        while time.time() < deadline:
            with self.lock:
                if key not in self.seen and all(w in self.buf for w in self.wanted[key]):
                    self.seen[key] = time.perf_counter()
                if key in self.seen:
                    return self.seen[key] - self.start
            time.sleep(0.001)
        raise SystemExit(f"timed out waiting for {words!r}")

    def quit(self):
        os.write(self.fd, b"q")
        for _ in range(500):
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.closed = True


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zodbctl", default="target/release/zodbctl")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    zodbctl = os.path.abspath(args.zodbctl)
    top = tempfile.mkdtemp(prefix="bench-top-")
    try:
        members = make_cluster(zodbctl, top)
        subprocess.run([zodbctl, "-i", top, "start"], check=True, stdout=subprocess.DEVNULL)
        argv = [zodbctl, "-i", top, "top"]
        last = members[-1][0]

        startups = []
        for _ in range(args.runs):
            p = Pty(argv)
            startups.append(p.wait("first", [last, "running", "Storages of"]) * 1000)
            p.quit()

        p = Pty(argv)
        p.wait("first", [last, "running"])
        time.sleep(3.0)
        t0, c0 = time.perf_counter(), ticks(p.pid)
        time.sleep(args.seconds)
        t1, c1 = time.perf_counter(), ticks(p.pid)
        rss, hwm = status_kb(p.pid, "VmRSS"), status_kb(p.pid, "VmHWM")
        p.quit()
        cpu = (c1 - c0) / CLK_TCK / (t1 - t0) * 100.0

        print(f"members: {len(members)} ({', '.join(m for m, _ in members)}), refresh 1 s")
        print(f"start-up to first frame with data: median {statistics.median(startups):.1f} ms, "
              f"min {min(startups):.1f}, max {max(startups):.1f} ({args.runs} runs)")
        print(f"CPU of top over {args.seconds:.0f} s: {cpu:.2f} % of one core "
              f"({c1 - c0} ticks of 1/{CLK_TCK} s)")
        print(f"RSS: {rss / 1024:.1f} MiB at the end, peak {hwm / 1024:.1f} MiB")
    finally:
        subprocess.run([zodbctl, "-i", top, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
