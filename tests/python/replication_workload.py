"""Python side of tests/replication.rs: real ZEO 6.2 clients working through a primary
`zodbctl serve`, read-only clients on its replica, and ZODB's own FileStorage reading the
replica's copy.

usage (ADDR is HOST:PORT):
  replication_workload.py workload ADDR
      a mixed workload through ADDR (blobs on): stores, an undo of an earlier transaction,
      an OOBTree with many keys, a 3 MB record, two blobs with several revisions; prints
      the client's view of the database as one JSON line (`describe`'s format)
  replication_workload.py describe DATA_FS BLOB_DIR
      open DATA_FS read-only with Python's FileStorage: the same JSON, plus every blob
      revision's digest and every transaction id in the file
  replication_workload.py readonly PRIMARY REPLICA_RO
      a read-only ClientStorage on the replica's read-only address sees a commit made on
      the primary (its cached object is invalidated); a writable ClientStorage there fails;
      pack through the replica is refused. Prints `ok ...` lines
  replication_workload.py load ADDR MB RECORD_MB
      commit MB megabytes of incompressible records of RECORD_MB each (two per transaction)
  replication_workload.py garbage ADDR ROUNDS
      rewrite a set of objects ROUNDS times and drop some (garbage for a pack)
  replication_workload.py blobs ADDR ROUNDS
      the same with blobs (through a blob cache), never empty
  replication_workload.py emptyblob ADDR
      commit an empty blob, then a one-byte blob
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

TREE_KEYS = 6000
BIG = 3 * 1024 * 1024 + 17


def parse(addr):
    host, port = addr.rsplit(":", 1)
    return (host, int(port))


def client(addr, blobs=False, **kw):
    import ZEO
    kw.setdefault("wait_timeout", 30)
    if blobs:
        kw["blob_dir"] = tempfile.mkdtemp(prefix="repl-blob-cache-")
        kw["shared_blob_dir"] = False
    return ZEO.client(parse(addr), **kw)


def det_bytes(seed, size):
    out = bytearray()
    h = seed.encode()
    while len(out) < size:
        h = hashlib.sha256(h).digest()
        out += h * 8
    return bytes(out[:size])


def sha(b):
    return hashlib.sha256(b).hexdigest()


def view(root):
    """What the tests compare: the root's contents as plain data."""
    out = {}
    out["items"] = {k: dict(root[k]) for k in sorted(root.keys()) if k.startswith("item")}
    out["undone"] = root["undone"]["v"]
    tree = root["tree"]
    out["tree_len"] = len(tree)
    h = hashlib.sha256()
    for k, v in tree.items():
        h.update(("%s=%r;" % (k, v)).encode())
    out["tree"] = h.hexdigest()
    out["big"] = sha(root["big"]["data"])
    out["big_len"] = len(root["big"]["data"])
    blobs = {}
    for name in ("blob1", "blob2"):
        with root[name].open("r") as f:
            blobs[name] = sha(f.read())
    out["blobs"] = blobs
    return out


def workload(addr):
    db = ZODB.DB(client(addr, blobs=True))
    conn = db.open()
    root = conn.root()
    for i in range(15):
        root["item%d" % i] = PersistentMapping({"n": i, "text": "value %d" % i})
        transaction.commit()
    for i in range(0, 15, 3):
        root["item%d" % i]["n"] = i * 100
        transaction.commit()
    # An undo of an earlier transaction (not the last one).
    root["undone"] = PersistentMapping({"v": "before"})
    transaction.commit()
    root["undone"]["v"] = "after"
    transaction.get().note("to undo")
    transaction.commit()
    info = db.undoInfo(0, 5)
    to_undo = info[0]["id"]
    root["item1"]["text"] = "changed after the undone transaction"
    transaction.commit()
    db.undo(to_undo)
    transaction.commit()
    # A BTree with many keys, over several transactions, then some deletions.
    root["tree"] = OOBTree()
    transaction.commit()
    tree = root["tree"]
    for start in range(0, TREE_KEYS, 1500):
        for k in range(start, min(start + 1500, TREE_KEYS)):
            tree["key%06d" % k] = "v%d" % (k * 7)
        transaction.commit()
    for k in range(0, TREE_KEYS, 10):
        del tree["key%06d" % k]
    transaction.commit()
    # A large record.
    root["big"] = PersistentMapping({"data": det_bytes("big", BIG)})
    transaction.commit()
    # Blobs, several revisions each.
    for name in ("blob1", "blob2"):
        root[name] = Blob()
        transaction.commit()
        for rev in range(3):
            with root[name].open("w") as f:
                f.write(det_bytes("%s-%d" % (name, rev), 50000 + rev * 70001))
            transaction.commit()
    conn.close()
    # A fresh connection's view: what the primary now serves.
    conn = db.open()
    transaction.begin()
    v = view(conn.root())
    assert v["undone"] == "before", v["undone"]
    assert v["tree_len"] == TREE_KEYS - TREE_KEYS // 10, v["tree_len"]
    print(json.dumps(v, sort_keys=True), flush=True)
    conn.close()
    db.close()


def describe(path, blob_dir):
    from ZODB.FileStorage import FileStorage
    from ZODB.POSException import POSKeyError
    # A copy of the blob directory: opening a blob storage may touch it.
    tmp = tempfile.mkdtemp(prefix="repl-describe-")
    blobs = os.path.join(tmp, "blobs")
    shutil.copytree(blob_dir, blobs)
    fs = FileStorage(path, read_only=True, blob_dir=blobs)
    tids = []
    revisions = []
    for txn in fs.iterator():
        tids.append(txn.tid.hex())
        for rec in txn:
            try:
                fn = fs.loadBlob(rec.oid, rec.tid)
            except (POSKeyError, KeyError):
                continue
            with open(fn, "rb") as f:
                revisions.append("%s@%s=%s" % (rec.oid.hex(), rec.tid.hex(), sha(f.read())))
    db = ZODB.DB(fs)
    conn = db.open()
    v = view(conn.root())
    v["tids"] = tids
    v["blob_revisions"] = revisions
    print(json.dumps(v, sort_keys=True), flush=True)
    conn.close()
    db.close()
    shutil.rmtree(tmp, ignore_errors=True)


def readonly(primary, replica_ro):
    from ZODB.POSException import ReadOnlyError
    from ZEO.Exceptions import ClientDisconnected
    wdb = ZODB.DB(client(primary))
    with wdb.transaction() as c:
        c.root()["watched"] = PersistentMapping({"v": 1})
    rodb = ZODB.DB(client(replica_ro, read_only=True))
    rconn = rodb.open()
    # Wait for the first value to reach the replica, and load it into the client's cache.
    deadline = time.monotonic() + 30
    while True:
        rconn.sync()
        obj = rconn.root().get("watched")
        if obj is not None and obj["v"] == 1:
            break
        assert time.monotonic() < deadline, "the replica never showed the first value"
        time.sleep(0.05)
    print("ok replica serves the first value", flush=True)
    for value in (2, 3):
        with wdb.transaction() as c:
            c.root()["watched"]["v"] = value
        start = time.monotonic()
        while True:
            rconn.sync()
            if obj["v"] == value:  # the same (cached) object, invalidated
                break
            assert time.monotonic() - start < 30, "no invalidation for value %d" % value
            time.sleep(0.02)
        print("ok invalidated to %d after %.3fs" % (value, time.monotonic() - start), flush=True)
    # Writes through the replica: a writable registration there is refused.
    try:
        st = client(replica_ro, wait_timeout=8)
    except (ClientDisconnected, ReadOnlyError) as e:
        print("ok writable client refused at connect: %s" % type(e).__name__, flush=True)
    except Exception as e:  # any failure to open counts; say which
        print("ok writable client refused at connect (other): %s: %s"
              % (type(e).__name__, e), flush=True)
    else:
        try:
            db = ZODB.DB(st)
            with db.transaction() as c:
                c.root()["through_replica"] = 1
        except ReadOnlyError as e:
            print("ok writable commit refused: %s" % type(e).__name__, flush=True)
        else:
            raise AssertionError("a commit through the replica's read-only address succeeded")
    # Pack through the replica, bypassing the client's own read-only check.
    storage = rodb.storage
    try:
        storage._call("pack", time.time(), True)
    except Exception as e:
        print("ok pack refused: %s: %s" % (type(e).__name__, str(e)[:200]), flush=True)
    else:
        raise AssertionError("pack through the replica succeeded")
    rconn.close()
    rodb.close()
    wdb.close()


def load(addr, mb, record_mb):
    db = ZODB.DB(client(addr, wait_timeout=60))
    conn = db.open()
    root = conn.root()
    size = int(float(record_mb) * 1024 * 1024)
    total = int(float(mb) * 1024 * 1024)
    n = 0
    done = 0
    while done < total:
        for _ in range(2):
            root["load%d" % (n % 64)] = PersistentMapping({"data": os.urandom(size), "n": n})
            n += 1
            done += size
        transaction.commit()
        conn.cacheMinimize()
    print("loaded %d records, %d bytes" % (n, done), flush=True)
    conn.close()
    db.close()


def garbage(addr, rounds):
    db = ZODB.DB(client(addr))
    conn = db.open()
    root = conn.root()
    for r in range(int(rounds)):
        for i in range(20):
            root["g%d" % i] = PersistentMapping({"r": r, "pad": det_bytes("g%d-%d" % (i, r), 4000)})
        transaction.commit()
    for i in range(0, 20, 2):
        del root["g%d" % i]
    transaction.commit()
    print("garbage done", flush=True)
    conn.close()
    db.close()


def blobs(addr, rounds):
    """Blob revisions (never empty) that a pack makes garbage: a blob per key, rewritten
    ROUNDS times, and half of them dropped."""
    db = ZODB.DB(client(addr, blobs=True))
    conn = db.open()
    root = conn.root()
    for r in range(int(rounds)):
        for i in range(4):
            name = "b%d" % i
            if name not in root:
                root[name] = Blob(det_bytes("%s-first" % name, 1000 + i))
            else:
                with root[name].open("w") as f:
                    f.write(det_bytes("%s-%d" % (name, r), 20000 + 3001 * r + i))
        transaction.commit()
    for i in range(0, 4, 2):
        del root["b%d" % i]
    transaction.commit()
    print("blobs done", flush=True)
    conn.close()
    db.close()


def emptyblob(addr):
    """An empty blob and a one-byte blob, each in its own transaction."""
    db = ZODB.DB(client(addr, blobs=True))
    with db.transaction() as conn:
        conn.root()["empty"] = Blob()
    with db.transaction() as conn:
        conn.root()["one"] = Blob(b"x")
    print("emptyblob done", flush=True)
    db.close()


if __name__ == "__main__":
    {
        "workload": workload,
        "describe": describe,
        "readonly": readonly,
        "load": load,
        "garbage": garbage,
        "blobs": blobs,
        "emptyblob": emptyblob,
    }[sys.argv[1]](*sys.argv[2:])
