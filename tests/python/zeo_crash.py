"""Python side of tests/zeo_crash.rs: real ZEO clients that commit continuously through
`zodbctl serve` (which the test kills with SIGKILL), and the after-the-fact check of the
Data.fs with Python's FileStorage and fstest.

usage:
  zeo_crash.py setup HOST PORT WRITERS
      create root['c<i>'] (an OOBTree per writer) for i in 0..WRITERS
  zeo_crash.py write HOST PORT I ROUND MAX_TXNS MAX_SECONDS
      writer I: commit transactions into root['c<I>'] until MAX_TXNS, MAX_SECONDS or the first
      error (the server dying); after each acknowledged commit print
      `ack I KEY TID_HEX COUNT DIGEST` (flushed), where the transaction stored COUNT new objects
      under keys KEY, KEY.1, ..., each holding DIGEST
  zeo_crash.py check DATA_FS ACKFILE...
      with the server stopped: every acknowledged transaction is in the file with all its
      objects, every transaction in the file is whole, and fstest passes
"""
import hashlib
import os
import sys
import time

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping


def client(host, port):
    import ZEO
    # A short wait_timeout: once the server is gone, a writer fails fast instead of waiting.
    return ZEO.client((host, int(port)), wait_timeout=5)


def setup(host, port, writers):
    db = ZODB.DB(client(host, port))
    with db.transaction() as conn:
        for i in range(int(writers)):
            conn.root()["c%d" % i] = OOBTree()
    db.close()
    print("setup done", flush=True)


def payload(i, rnd, n, k):
    """Deterministic, varied sizes (some records span pages)."""
    size = (n * 7919 + k * 104729 + i * 31) % 12000
    seed = ("%d-%d-%d-%d" % (i, rnd, n, k)).encode()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def write(host, port, i, rnd, max_txns, max_seconds):
    i, rnd, max_txns = int(i), int(rnd), int(max_txns)
    end = time.monotonic() + float(max_seconds)
    db = ZODB.DB(client(host, port))
    conn = db.open()
    tree = conn.root()["c%d" % i]
    n = 0
    try:
        while n < max_txns and time.monotonic() < end:
            key = "r%d-n%d" % (rnd, n)
            # Every fifth transaction is large: many objects in one commit.
            count = 25 if n % 5 == 4 else 1
            digest = None
            children = []
            for k in range(count):
                data = payload(i, rnd, n, k)
                digest = hashlib.sha256(key.encode()).hexdigest()[:16]
                child = PersistentMapping({"key": key, "data": data, "digest": digest})
                tree[key if k == 0 else "%s.%d" % (key, k)] = child
                children.append(child)
            transaction.get().note("writer %d %s" % (i, key))
            transaction.commit()
            tid = children[0]._p_serial
            print("ack", i, key, tid.hex(), count, digest, flush=True)
            n += 1
    except Exception as e:  # the server was killed: stop writing
        print("stopped %s: %s" % (type(e).__name__, e), flush=True)
        try:
            transaction.abort()
        except Exception:
            pass
    os._exit(0)  # do not wait for the dead server at close


def check(path, *ackfiles):
    from ZODB.FileStorage import FileStorage
    from ZODB.scripts import fstest

    fstest.check(path)  # raises FormatError on any damage or partial transaction

    acks = []
    for f in ackfiles:
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] == "ack":
                    _, i, key, tid, count, digest = parts
                    acks.append((int(i), key, bytes.fromhex(tid), int(count), digest))
    assert acks, "no acknowledged transactions to check"

    fs = FileStorage(path, read_only=True)
    # Every transaction in the file is whole: all its records load, and each writer
    # transaction's objects are all there.
    tids = {}
    for txn in fs.iterator():
        assert txn.status in (" ", "p"), (txn.tid.hex(), txn.status)
        oids = [rec.oid for rec in txn]
        for oid in oids:
            fs.loadSerial(oid, txn.tid)
        tids[txn.tid] = txn
    db = ZODB.DB(fs)
    conn = db.open()
    root = conn.root()
    for (i, key, tid, count, digest) in acks:
        assert tid in tids, "acknowledged transaction %s (writer %d, %s) is missing" % (
            tid.hex(), i, key)
        tree = root["c%d" % i]
        for k in range(count):
            name = key if k == 0 else "%s.%d" % (key, k)
            obj = tree.get(name)
            assert obj is not None, "object %s of acknowledged %s is missing" % (name, tid.hex())
            assert obj["digest"] == digest and obj["key"] == key, name
            assert obj._p_serial == tid, (name, obj._p_serial.hex(), tid.hex())
            rnd, n = (int(x) for x in key[1:].split("-n"))
            assert obj["data"] == payload(i, rnd, n, k), "wrong data in %s" % name
    # Objects of transactions that committed without an acknowledgement (in flight at the
    # kill) must be whole too.
    present = 0
    for i in range(len(root)):
        tree = root.get("c%d" % i)
        if tree is None:
            continue
        for name, obj in tree.items():
            key = name.split(".")[0]
            assert obj["key"] == key and obj["digest"] == hashlib.sha256(
                key.encode()).hexdigest()[:16], name
            present += 1
    db.close()
    print("checked %d acknowledged transactions, %d transactions in the file, %d objects"
          % (len(acks), len(tids), present), flush=True)


if __name__ == "__main__":
    {"setup": setup, "write": write, "check": check}[sys.argv[1]](*sys.argv[2:])
