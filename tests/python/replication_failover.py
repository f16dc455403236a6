"""Python side of tests/replication.rs's failover test: ZEO 6.2 clients that commit in a loop
while the test kills the primary and promotes the replica, and the check of the last
primary's file against everything they were told was committed.

usage (ADDR is HOST:PORT):
  replication_failover.py setup ADDR NAME...
      root[NAME] = a PersistentMapping {"v": 0} for each writer
  replication_failover.py write NAME FALLBACK MAX_SECONDS STOP_FILE ADDR...
      one ClientStorage listing every ADDR (FALLBACK 1: read_only_fallback=True), a large
      wait_timeout; loops: increment root[NAME]["v"] and commit. Each acknowledged commit
      prints `ack NAME VALUE TID_HEX`; a failed one (ClientDisconnected during the outage,
      ReadOnlyError while on a replica's read-only address, ...) prints `err NAME TYPE ...`,
      aborts, waits a little and retries: the process is never restarted. Stops when
      STOP_FILE exists or after MAX_SECONDS.
  replication_failover.py check DATA_FS ACKFILE...
      with the server stopped: every acknowledged (NAME, VALUE, TID) is in the file with
      that value, each writer's final value is its largest acknowledged one, and fstest
      passes
"""
import os
import sys
import time

import transaction
import ZODB
from persistent.mapping import PersistentMapping


def parse(addr):
    host, port = addr.rsplit(":", 1)
    return (host, int(port))


def setup(addr, *names):
    import ZEO
    db = ZODB.DB(ZEO.client(parse(addr), wait_timeout=30))
    with db.transaction() as conn:
        for name in names:
            conn.root()[name] = PersistentMapping({"v": 0})
    db.close()
    print("setup done", flush=True)


def write(name, fallback, max_seconds, stop_file, *addrs):
    from ZEO.ClientStorage import ClientStorage
    end = time.monotonic() + float(max_seconds)
    storage = ClientStorage(
        [parse(a) for a in addrs],
        wait_timeout=120,
        read_only_fallback=fallback == "1",
    )
    acks = errors = 0
    # Opening the database loads the root. A read_only_fallback client may register on a
    # read-only address first and upgrade to the writable one a moment later, which closes
    # the first connection with that load in flight (ClientDisconnected: Closed): an
    # application retries, and so does this writer (bounded).
    for attempt in range(20):
        try:
            db = ZODB.DB(storage)
            break
        except Exception as e:
            errors += 1
            print("err", name, type(e).__name__, "opening:", str(e)[:160], flush=True)
            time.sleep(0.5)
    else:
        raise SystemExit("cannot open the database")
    conn = db.open()
    while time.monotonic() < end and not os.path.exists(stop_file):
        try:
            transaction.begin()
            obj = conn.root()[name]
            obj["v"] = obj["v"] + 1
            transaction.commit()
            acks += 1
            print("ack", name, obj["v"], obj._p_serial.hex(), flush=True)
            time.sleep(0.01)
        except Exception as e:
            errors += 1
            try:
                transaction.abort()
            except Exception:
                pass
            msg = str(e).replace("\n", " ")[:160]
            print("err", name, type(e).__name__, msg, flush=True)
            time.sleep(0.1)
    print("done", name, acks, errors, flush=True)
    os._exit(0)  # do not wait for a server that may be gone


def check(path, *ackfiles):
    from ZODB.FileStorage import FileStorage
    from ZODB.scripts import fstest

    fstest.check(path)
    acks = {}
    for f in ackfiles:
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 4 and parts[0] == "ack":
                    _, name, value, tid = parts
                    acks.setdefault(name, []).append((int(value), bytes.fromhex(tid)))
    assert acks, "no acknowledged commits to check"
    fs = FileStorage(path, read_only=True)
    db = ZODB.DB(fs)
    conn = db.open()
    root = conn.root()
    total = 0
    for name, entries in sorted(acks.items()):
        obj = root[name]
        values = [v for v, _ in entries]
        assert len(set(values)) == len(values), "%s: a value was acknowledged twice" % name
        for value, tid in entries:
            try:
                state = conn.oldstate(obj, tid)
            except Exception as e:
                raise AssertionError(
                    "%s: acknowledged commit %s (value %d) is missing from the file: %s"
                    % (name, tid.hex(), value, e))
            data = state.get("data", state.get("_container"))
            assert data["v"] == value, (name, tid.hex(), data, value)
            total += 1
        assert obj["v"] == max(values), (name, obj["v"], max(values))
    db.close()
    print("checked %d acknowledged commits of %d writers" % (total, len(acks)), flush=True)


if __name__ == "__main__":
    {"setup": setup, "write": write, "check": check}[sys.argv[1]](*sys.argv[2:])
