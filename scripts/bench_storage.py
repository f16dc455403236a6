#!/usr/bin/env python3
"""The Python FileStorage side of the storage benchmark, and the ratio report.

    bench_storage.py measure DIR        # prints JSON figures for Python ZODB
    bench_storage.py report RUST.jsonl PY.jsonl # the Markdown table: medians and ratios

DIR is prepared by scripts/bench-storage.sh: Big.fs (with Python's Data.fs.index),
Big-noindex.fs (a hard link to the same file, without an index next to it) and Small.fs
(copied before each commit run). The Rust side (benches/storage.rs) measures the same
things the same way: the same oid sequence for the random loads (the same LCG), the same
record bytes for the commits, best of a few runs for the opens.
"""
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import ZODB.FileStorage
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import POSKeyError
from ZODB.utils import z64

LOADS = 50_000
COMMITS_1 = 200
COMMITS_100 = 30
OPEN_RUNS = 3
INDEX_OPEN_RUNS = 10

# A 200-byte record with a ZODB-style class pickle and a state pickle; only its size
# matters to the storage, and the Rust side writes the same bytes.
RECORD = (b'\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.'
          b'\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04'
          b'C\x88' + b'x' * 136 + b'q\x05ss.')


def lcg(seed):
    """The shared pseudo-random sequence (Knuth's MMIX LCG), 31 bits per step."""
    x = seed
    while True:
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield x >> 33


def rss_bytes():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


def best(f, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def open_ro(path):
    st = ZODB.FileStorage.FileStorage(path, read_only=True)
    st.close()


def commits(path, n_txn, n_obj):
    st = ZODB.FileStorage.FileStorage(path)
    t0 = time.perf_counter()
    for _ in range(n_txn):
        t = TransactionMetaData('bench', 'commit')
        st.tpc_begin(t)
        for _ in range(n_obj):
            st.store(st.new_oid(), z64, RECORD, '', t)
        st.tpc_vote(t)
        st.tpc_finish(t)
    elapsed = time.perf_counter() - t0
    st.close()
    return n_txn / elapsed


def measure(d):
    big = os.path.join(d, 'Big.fs')
    noindex = os.path.join(d, 'Big-noindex.fs')
    small = os.path.join(d, 'Small.fs')
    out = {'file_bytes': os.path.getsize(big)}
    # fsIndex keeps its buckets in C memory that tracemalloc does not see: measure the
    # growth of the resident set instead (the file itself is read, not mapped).
    gc.collect()
    before = rss_bytes()
    st = ZODB.FileStorage.FileStorage(big, read_only=True)
    after = rss_bytes()
    out['index_rss_bytes_per_object'] = (after - before) / len(st)

    st.close()
    del st
    open_ro(big)  # warm the page cache
    out['open_index_s'] = best(lambda: open_ro(big), INDEX_OPEN_RUNS)
    out['open_scan_s'] = best(lambda: open_ro(noindex), OPEN_RUNS)

    st = ZODB.FileStorage.FileStorage(big, read_only=True)
    out['objects'] = len(st)
    oids = sorted(st._index.keys())
    rnd = lcg(42)
    sample = [oids[next(rnd) % len(oids)] for _ in range(LOADS)]
    ok = 0
    t0 = time.perf_counter()
    for oid in sample:
        try:
            st.load(oid)
            ok += 1
        except POSKeyError:
            pass
    out['loads_per_s'] = ok / (time.perf_counter() - t0)
    st.close()

    shm = '/dev/shm/zodbctl-bench-py-%d' % os.getpid()
    os.makedirs(shm)
    for key, where, n_txn, n_obj in (
            ('commit1_per_s', d, COMMITS_1, 1),
            ('commit100_per_s', d, COMMITS_100, 100),
            # tmpfs: fsync is free, the commit path's own cost shows
            ('commit1_tmpfs_per_s', shm, COMMITS_1 * 5, 1),
            ('commit100_tmpfs_per_s', shm, COMMITS_100 * 5, 100)):
        work = os.path.join(where, 'commit-py.fs')
        for suffix in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(work + suffix):
                os.remove(work + suffix)
        shutil.copyfile(small, work)
        shutil.copyfile(small + '.index', work + '.index')
        out[key] = commits(work, n_txn, n_obj)
    shutil.rmtree(shm)

    def tool(module):
        def run():
            subprocess.run([sys.executable, '-m', module, big], check=True,
                           stdout=subprocess.DEVNULL)
        return best(run, 1)
    out['verify_s'] = tool('ZODB.scripts.fstest')
    out['dump_s'] = tool('ZODB.FileStorage.fsdump')
    return out


def medians(path):
    """The median of each figure over the JSON lines (one per round) of `path`."""
    with open(path) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}, len(rounds)


def report(rust_path, py_path):
    r, n = medians(rust_path)
    p, _ = medians(py_path)
    rows = [
        ('open with Data.fs.index', 'open_index_s', 's', True),
        ('open by full scan (no index)', 'open_scan_s', 's', True),
        ('random loads of current objects', 'loads_per_s', '/s', False),
        ('commits, 1 object each (fsync)', 'commit1_per_s', '/s', False),
        ('commits, 100 objects each (fsync)', 'commit100_per_s', '/s', False),
        ('commits, 1 object each, on tmpfs', 'commit1_tmpfs_per_s', '/s', False),
        ('commits, 100 objects each, on tmpfs', 'commit100_tmpfs_per_s', '/s', False),
        ('`zodbctl verify` / fstest, whole file', 'verify_s', 's', True),
        ('`zodbctl dump` / fsdump, whole file', 'dump_s', 's', True),
        ('index memory per object (resident set growth on open)',
         'index_rss_bytes_per_object', 'B', True),
    ]
    print('File: %.0f MB, %d objects; medians of %d alternating rounds.'
          % (r['file_bytes'] / 1048576, r['objects'], n))
    print()
    print('| measure | zodbctl | Python ZODB 6.4 | zodbctl advantage |')
    print('|---|---|---|---|')
    for name, key, unit, lower_is_better in rows:
        a, b = r[key], p[key]
        ratio = (b / a) if lower_is_better else (a / b)
        print('| %s | %s | %s | %.1f× |' % (name, fmt(a, unit), fmt(b, unit), ratio))
    print()
    print("zodbctl's own accounting of its index: %.1f bytes per object."
          % r['index_bytes_per_object'])


def fmt(v, unit):
    if unit == 's':
        return '%.3f s' % v if v >= 0.01 else '%.2f ms' % (v * 1000)
    if unit == 'B':
        return '%.1f B' % v
    return '{:,.0f}{}'.format(v, unit)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == 'measure':
        json.dump(measure(sys.argv[2]), sys.stdout)
        print()
    elif len(sys.argv) == 4 and sys.argv[1] == 'report':
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
