#!/usr/bin/env python3
"""Pack benchmark: zodbctl's pack against Python's FileStorage.pack, side by side, on the
same generated Data.fs (about --garbage of it unreachable or superseded).

    target/pyenv/bin/python scripts/bench-pack.py [--size-mb 1000] [--garbage 0.5]
        [--tmpfs /dev/shm] [--disk target/bench-pack] [--zodbctl target/release/zodbctl]
        [--skip-online]

Steps (each bounded; nothing runs in `cargo test`):

1. generate (once, cached in --disk) a Data.fs with tools/make_datafs.py, the generator the
   tests use (same CLI as tests/support::make_datafs);
2. for the tmpfs directory, then the disk directory: copy the file there, read it once
   (page cache warm), pack a copy with `zodbctl pack FILE --at T --json` and another copy
   with Python's `FileStorage.pack(T, referencesf)`; wall time, peak RSS (wait4's
   ru_maxrss of each process), bytes before and after; zodbctl syncs the packed file and
   its index before the rename (Python does not sync at all);
3. online (tmpfs): `zodbctl serve` on a copy, three Python ZEO clients committing and
   loading (tests/python/pack_online.py) while ClientStorage.pack runs: commit p99 during
   the pack against the idle p99;
4. prints a Markdown table (the figures in docs/benchmarks.md come from it).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_measured(cmd, **kw):
    """Run cmd; (wall seconds, peak RSS MiB, stdout)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, **kw)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.time() - t0
    if status != 0:
        sys.exit("failed (%s): %s\n%s" % (status, " ".join(cmd), out.decode(errors="replace")))
    return wall, ru.ru_maxrss / 1024.0, out.decode(errors="replace")


def warm(path):
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def fresh_copy(src, dst):
    for suffix in ("", ".index", ".old", ".pack", ".pack.json", ".lock", ".tmp"):
        if os.path.exists(dst + suffix):
            os.remove(dst + suffix)
    shutil.copyfile(src, dst)
    if os.path.exists(src + ".index"):
        shutil.copyfile(src + ".index", dst + ".index")
    warm(dst)


PY_PACK = """
import sys, ZODB.FileStorage, ZODB.serialize
st = ZODB.FileStorage.FileStorage(sys.argv[1])
st.pack(float(sys.argv[2]), ZODB.serialize.referencesf)
st.close()
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=1000)
    ap.add_argument("--garbage", type=float, default=0.5)
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--disk", default=os.path.join(ROOT, "target", "bench-pack"))
    ap.add_argument("--zodbctl", default=os.path.join(ROOT, "target", "release", "zodbctl"))
    ap.add_argument("--skip-online", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.disk, exist_ok=True)
    base = os.path.join(a.disk, "base-%g-%g.fs" % (a.size_mb, a.garbage))
    if not os.path.exists(base):
        t0 = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_datafs.py"), base,
                        "--size-mb", str(a.size_mb), "--garbage", str(a.garbage)], check=True)
        print("generated %s in %.0fs" % (base, time.time() - t0), flush=True)
    size = os.path.getsize(base)
    # The pack time: just after the last transaction (everything is pre-pack).
    t = time.time() + 1
    rows = []
    for label, d in (("tmpfs", a.tmpfs), ("disk", a.disk)):
        work = os.path.join(d, "bench-pack-%d" % os.getpid())
        os.makedirs(work, exist_ok=True)
        try:
            ours = os.path.join(work, "ours.fs")
            fresh_copy(base, ours)
            wall, rss, out = run_measured([a.zodbctl, "pack", ours, "--at", repr(t),
                                           "--no-keep-old", "--json"])
            rep = json.loads(out)[0]
            theirs = os.path.join(work, "python.fs")
            fresh_copy(base, theirs)
            pwall, prss, _ = run_measured([sys.executable, "-c", PY_PACK, theirs, repr(t)])
            after_ours = os.path.getsize(ours)
            after_py = os.path.getsize(theirs)
            rows.append((label, wall, rss, pwall, prss, rep, after_ours, after_py))
            print("%s: zodbctl %.2fs %.0f MiB | python %.2fs %.0f MiB | %d -> %d (python %d)"
                  " | index %.3fs, lock %.4fs" % (
                      label, wall, rss, pwall, prss, size, after_ours, after_py,
                      rep["index_write_seconds"], rep["commit_lock_seconds"]), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    online = None
    if not a.skip_online:
        work = os.path.join(a.tmpfs, "bench-pack-online-%d" % os.getpid())
        os.makedirs(work, exist_ok=True)
        try:
            fs = os.path.join(work, "Data.fs")
            fresh_copy(base, fs)
            port = free_port()
            srv = subprocess.Popen([a.zodbctl, "serve", "-a", "127.0.0.1:%d" % port, "-f", fs],
                                   stdout=subprocess.DEVNULL, stderr=open(
                                       os.path.join(work, "serve.log"), "w"))
            try:
                for _ in range(600):
                    try:
                        socket.create_connection(("127.0.0.1", port), 1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                out = subprocess.run(
                    [sys.executable, os.path.join(ROOT, "tests", "python", "pack_online.py"),
                     "127.0.0.1", str(port), "3", "5", "2"],
                    check=True, capture_output=True, text=True, timeout=3600).stdout
                online = dict(kv.split("=") for kv in out.split())
                print("online: %s" % out.strip(), flush=True)
            finally:
                srv.terminate()
                srv.wait(60)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("Data.fs: %.0f MB generated with --garbage %g" % (size / 1e6, a.garbage))
    print()
    print("| where | zodbctl pack | Python FileStorage.pack | speed-up | zodbctl peak RSS |"
          " Python peak RSS | size after (zodbctl / Python) | index write |")
    print("|---|---|---|---|---|---|---|---|")
    for label, wall, rss, pwall, prss, rep, ao, ap_ in rows:
        print("| %s | %.2f s | %.2f s | %.1f× | %.0f MiB | %.0f MiB | %.0f / %.0f MB | %.3f s |" % (
            label, wall, pwall, pwall / wall, rss, prss, ao / 1e6, ap_ / 1e6,
            rep["index_write_seconds"]))
    if online:
        print()
        print("Online pack (tmpfs, 3 Python clients committing and loading): commit p99 idle "
              "%s ms, during the pack %s ms (%.1f×); pack %s s through the server." % (
                  online["idle_p99_ms"], online["pack_p99_ms"],
                  float(online["pack_p99_ms"]) / max(float(online["idle_p99_ms"]), 1e-9),
                  online["pack_seconds"]))


if __name__ == "__main__":
    main()
