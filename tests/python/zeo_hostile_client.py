"""A well-behaved ZEO client for tests/zeo_hostile.rs: a real ZEO.ClientStorage under a
ZODB.DB that keeps committing and loading while the test abuses the server.

usage: zeo_hostile_client.py HOST PORT STOPFILE MAX_SECONDS

Prints `big <oid hex>` once (a ~1 MB object the abusive clients load), then `ok N` after every
round: one commit of a counter, then loads that must reach the server (the client cache is
cleared first). Stops when STOPFILE exists or after MAX_SECONDS, prints `done N` and exits 0.
Any error ends it with a traceback and a non-zero status, which the test reports.
"""
import os
import sys
import time

import transaction
import ZEO
import ZODB
from persistent.mapping import PersistentMapping

host, port, stopfile, max_seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
end = time.monotonic() + max_seconds

storage = ZEO.client((host, port), wait_timeout=20)
db = ZODB.DB(storage)
conn = db.open()
root = conn.root()
with transaction.manager:
    root["big"] = PersistentMapping({"b": b"x" * (1 << 20)})
    root["n"] = 0
big_oid = root["big"]._p_oid
print("big", big_oid.hex(), flush=True)

n = 0
while time.monotonic() < end and not os.path.exists(stopfile):
    transaction.begin()
    root["n"] += 1
    transaction.commit()
    serial = root._p_serial
    # Loads that must go to the server: the cache is emptied, and loadSerial never uses it.
    storage._cache.clear()
    data, tid = storage.load(root._p_oid)
    assert tid == serial, (tid, serial)
    assert storage.loadSerial(root._p_oid, serial) == data
    if n % 10 == 0:
        data, _ = storage.load(big_oid)
        assert len(data) > (1 << 20), len(data)
    n += 1
    print("ok", n, flush=True)
    time.sleep(0.01)

assert root["n"] == n, (root["n"], n)
conn.close()
db.close()
print("done", n, flush=True)
