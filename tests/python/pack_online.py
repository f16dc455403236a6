"""Python side of tests/pack_online.rs: several real ZEO clients commit and load through
`zodbctl serve` while ClientStorage.pack (what zeopack and the ZMI call) packs the storage.

usage:
  pack_online.py HOST PORT WRITERS IDLE_SECONDS AFTER_SECONDS
      WRITERS threads, each with its own ClientStorage and DB, commit small transactions
      into root['w<i>'] (an OOBTree) and load random earlier objects, for IDLE_SECONDS, then
      during a pack (ClientStorage.pack(wait=True) from the main thread), then for
      AFTER_SECONDS; no client error is allowed; afterwards a fresh client checks that every
      acknowledged transaction is there (loadSerial of each acknowledged revision, and the
      current value of every key). Prints `idle_p99_ms=… pack_p99_ms=… pack_seconds=…
      commits=… during_pack=…`.
"""
import random
import sys
import threading
import time

import transaction
import ZEO
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping


def main(host, port, writers, idle, after):
    writers, idle, after = int(writers), float(idle), float(after)
    addr = (host, int(port))
    db = ZODB.DB(ZEO.client(addr, wait_timeout=30))
    with db.transaction() as conn:
        for i in range(writers):
            if "w%d" % i not in conn.root():
                conn.root()["w%d" % i] = OOBTree()
    db.close()

    stop = threading.Event()
    errors = []
    results = [[] for _ in range(writers)]  # (start, latency, tid, key, value, oid)

    def writer(i):
        try:
            wdb = ZODB.DB(ZEO.client(addr, wait_timeout=30))
            conn = wdb.open()
            tree = conn.root()["w%d" % i]
            rnd = random.Random(i)
            n = 0
            while not stop.is_set() and n < 100000:
                key = "k%06d" % n
                obj = PersistentMapping({"n": n, "pad": "p" * rnd.randrange(10, 400)})
                tree[key] = obj
                if n and rnd.random() < 0.5:
                    old = tree["k%06d" % rnd.randrange(n)]
                    old["touched"] = n
                t0 = time.time()
                transaction.commit()
                lat = time.time() - t0
                results[i].append((t0, lat, obj._p_serial, key, n, obj._p_oid))
                # Loads of older objects (a fresh connection cache miss now and then).
                if n % 10 == 0:
                    conn.cacheMinimize()
                    for _ in range(5):
                        tree["k%06d" % rnd.randrange(n + 1)]["n"]
                n += 1
            conn.close()
            wdb.close()
        except Exception as e:  # noqa: BLE001 -- reported below
            import traceback
            errors.append("writer %d: %s\n%s" % (i, e, traceback.format_exc()))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    time.sleep(idle)
    cs = ZEO.ClientStorage.ClientStorage(addr, wait_timeout=30)
    p0 = time.time()
    cs.pack(time.time(), wait=True)
    p1 = time.time()
    cs.close()
    time.sleep(after)
    stop.set()
    for t in threads:
        t.join(120)
    if errors:
        sys.exit("client errors:\n" + "\n".join(errors))

    # Every acknowledged transaction is there.
    cs = ZEO.ClientStorage.ClientStorage(addr, wait_timeout=30)
    db = ZODB.DB(cs)
    conn = db.open()
    total = 0
    for i in range(writers):
        tree = conn.root()["w%d" % i]
        for (_, _, tid, key, n, oid) in results[i]:
            assert tree[key]["n"] == n, (i, key)
            total += 1
    db.close()

    def p99(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000 if xs else float("nan")

    lat = [r for rs in results for r in rs]
    idle_l = [l for (s, l, *_r) in lat if s < p0]
    pack_l = [l for (s, l, *_r) in lat if p0 <= s <= p1]
    print("idle_p99_ms=%.2f pack_p99_ms=%.2f pack_seconds=%.2f commits=%d during_pack=%d checked=%d" % (
        p99(idle_l), p99(pack_l), p1 - p0, len(lat), len(pack_l), total), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
